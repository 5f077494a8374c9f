"""The catalog database schema."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

from outcrop.db import HEAD, MIGRATIONS, connect, current_revision


def test_head_constant_is_the_newest_migration() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD


def test_new_database_is_migrated_to_head(tmp_path: Path) -> None:
    engine = connect(f"sqlite:///{tmp_path / 'catalog.sqlite'}")
    assert current_revision(engine) == HEAD
    engine.dispose()
