"""Settings: precedence (arguments > env > .env > outcrop.toml > defaults), where the
config file is found, clear errors, and documentation of every setting."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from pydantic import BaseModel
from typer.testing import CliRunner

import outcrop.cli
import outcrop.cli.serve
from outcrop.errors import ConfigError
from outcrop.settings import DatasetConfig, Settings, load_settings

DOCS = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """No OUTCROP_* variable from the caller's shell, and an empty working directory."""
    import os

    for name in list(os.environ):
        if name.startswith("OUTCROP_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    yield work


def write_toml(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


# -- documentation ----------------------------------------------------------------------
def doc_table(heading: str) -> dict[str, list[str]]:
    """Body rows of the first table after `heading` in docs/configuration.md, by first cell."""
    text = DOCS.read_text()
    lines = text[text.index(heading) :].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows: dict[str, list[str]] = {}
    for line in lines[first + 2 :]:  # past the header and the `|---|` line
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells
    return rows


def documented_default(model: type[BaseModel], name: str) -> str | None:
    """The default as the docs write it, for defaults that are plain values."""
    field = model.model_fields[name]
    if field.default_factory is not None:
        value: Any = field.default_factory()  # type: ignore[call-arg]
        return None if isinstance(value, Path) else _toml(value)
    return "None" if field.default is None else _toml(field.default)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}" if not value else repr(value)
    return str(value)


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_every_setting_is_documented(name: str) -> None:
    field = Settings.model_fields[name]
    assert field.description, f"Settings.{name} has no description"
    rows = {cells[1]: cells for cells in doc_table("## Settings").values()}
    env = f"`OUTCROP_{name.upper()}`"
    assert env in rows, f"{env} is missing from the settings table of {DOCS}"
    toml_key, _, _, default, meaning = rows[env]
    assert toml_key == ("—" if name == "config" else f"`{name}`")
    assert len(meaning) > 10, f"{name}: no meaning given in {DOCS}"
    expected = documented_default(Settings, name)
    if expected is not None:
        assert default == f"`{expected}`", f"{name}: documented default is stale"


@pytest.mark.parametrize("name", list(DatasetConfig.model_fields))
def test_every_dataset_key_is_documented(name: str) -> None:
    field = DatasetConfig.model_fields[name]
    assert field.description, f"DatasetConfig.{name} has no description"
    rows = doc_table("## Declared datasets")
    assert f"`{name}`" in rows, f"[[datasets]] key {name} is missing from {DOCS}"
    _, default, meaning = rows[f"`{name}`"]
    assert len(meaning) > 10
    if field.is_required():
        assert default == "(required)"
    else:
        assert default == f"`{documented_default(DatasetConfig, name)}`"


def test_docs_list_no_setting_that_does_not_exist() -> None:
    env_names = {f"`OUTCROP_{n.upper()}`" for n in Settings.model_fields}
    assert {cells[1] for cells in doc_table("## Settings").values()} == env_names
    keys = {f"`{n}`" for n in DatasetConfig.model_fields}
    assert set(doc_table("## Declared datasets")) == keys


# -- precedence ---------------------------------------------------------------------------
def test_defaults_apply_without_any_source(tmp_path: Path) -> None:
    settings = load_settings()
    assert (settings.port, settings.cache_mb, settings.open_files) == (8765, 256, 64)
    assert settings.config is None
    assert settings.data_dir == tmp_path / "xdg" / "outcrop"
    assert settings.db_url == f"sqlite:///{tmp_path / 'xdg' / 'outcrop' / 'catalog.sqlite'}"


def test_argument_beats_env_beats_dotenv_beats_toml(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_toml(
        clean_env / "outcrop.toml", "port = 1001\ncache_mb = 1\nopen_files = 1\nthreads = 1\n"
    )
    (clean_env / ".env").write_text("OUTCROP_PORT=2002\nOUTCROP_CACHE_MB=2\nOUTCROP_OPEN_FILES=2\n")
    monkeypatch.setenv("OUTCROP_PORT", "3003")
    monkeypatch.setenv("OUTCROP_CACHE_MB", "3")
    settings = load_settings(port=4004)
    assert settings.port == 4004  # argument
    assert settings.cache_mb == 3  # environment
    assert settings.open_files == 2  # .env
    assert settings.threads == 1  # outcrop.toml
    assert settings.workers == 1  # default
    assert settings.config == clean_env / "outcrop.toml"


@pytest.fixture(autouse=True)
def keep_logging() -> Iterator[None]:
    """`outcrop serve` configures logging for the process: undo it for the next tests."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.configure(**saved)
    root.handlers[:], root.level = handlers, level
    logging.captureWarnings(False)


def serve_settings(args: list[str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings `outcrop serve ARGS` would run with (the server itself not started)."""
    seen: list[Settings] = []
    monkeypatch.setattr(outcrop.cli.serve, "_run", seen.append)
    result = CliRunner().invoke(outcrop.cli.app, ["serve", *args])
    assert result.exit_code == 0, result.output
    return seen[0]


def test_cli_flag_overrides_env_which_overrides_toml(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = write_toml(
        tmp_path / "site.toml",
        'port = 1001\ncache_mb = 1\nworkers = 1\nlog_level = "error"\nhost = "127.0.0.2"\n',
    )
    monkeypatch.setenv("OUTCROP_PORT", "2002")
    monkeypatch.setenv("OUTCROP_CACHE_MB", "2")
    monkeypatch.setenv("OUTCROP_WORKERS", "2")
    settings = serve_settings(
        ["--config", str(toml), "--port", "3003", "--cache-mb", "3"], monkeypatch
    )
    assert (settings.port, settings.cache_mb) == (3003, 3)  # flag over env over toml
    assert settings.workers == 2  # env over toml
    assert (settings.log_level, settings.host) == ("error", "127.0.0.2")  # toml over default
    assert settings.config == toml


def test_config_named_by_outcrop_config_env(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_toml(clean_env / "outcrop.toml", "port = 1111\n")
    other = write_toml(tmp_path / "other.toml", "port = 2222\n")
    assert load_settings().port == 1111  # ./outcrop.toml
    (clean_env / ".env").write_text(f"OUTCROP_CONFIG={other}\n")
    assert load_settings().port == 2222  # named in .env
    third = write_toml(tmp_path / "third.toml", "port = 3333\n")
    monkeypatch.setenv("OUTCROP_CONFIG", str(third))
    assert load_settings().port == 3333  # named in the environment
    assert load_settings(config=other).port == 2222  # --config


def test_relative_paths_in_toml_are_relative_to_the_file(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    toml = write_toml(
        site / "outcrop.toml",
        'paths = ["archive", "/abs/olute"]\ndata_dir = "state"\n'
        '[[datasets]]\nid = "a/b"\nsource = "archive/yearly/*.nc"\naggregate = "time"\n',
    )
    settings = load_settings(toml)
    assert settings.paths == [site / "archive", Path("/abs/olute")]
    assert settings.data_dir == site / "state"
    assert settings.datasets[0].source == str(site / "archive" / "yearly" / "*.nc")
    assert settings.datasets[0].aggregate == "time"


def test_env_lists_are_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTCROP_PATHS", '["/a", "/b"]')
    monkeypatch.setenv("OUTCROP_DATASETS", '[{"id": "x", "source": "/data/x.nc"}]')
    settings = load_settings()
    assert settings.paths == [Path("/a"), Path("/b")]
    assert settings.datasets == [DatasetConfig(id="x", source="/data/x.nc")]


# -- errors -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("prot = 80\n", "unknown setting 'prot'; known settings are "),
        ("port = 70000\n", "port: Input should be less than or equal to 65535"),
        ('log_level = "loud"\n', "log_level: Input should be 'debug'"),
        ("port = [\n", "not valid TOML"),
        ('[[datasets]]\nid = "a"\n', "datasets.0: Value error, dataset 'a' needs a `source`"),
        ('[[datasets]]\nid = "a/../b"\nsource = "x.nc"\n', "must be `/`-separated names"),
        ('[[datasets]]\nid = "a"\nsource = "x.nc"\naggregat = "time"\n', "aggregat"),
        (
            '[[datasets]]\nid = "a"\nsource = "x"\n[[datasets]]\nid = "a"\nsource = "y"\n',
            "dataset id 'a' is declared twice",
        ),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, body: str, message: str) -> None:
    toml = write_toml(tmp_path / "outcrop.toml", body)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(toml)


def test_bad_env_value_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTCROP_OPEN_FILES", "many")
    with pytest.raises(ConfigError, match="open_files: Input should be a valid integer"):
        load_settings()
    monkeypatch.delenv("OUTCROP_OPEN_FILES")
    monkeypatch.setenv("OUTCROP_PATHS", "/not/json")
    with pytest.raises(ConfigError, match="paths"):
        load_settings()


def test_missing_config_file_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match=r"config file .*nope\.toml does not exist"):
        load_settings(tmp_path / "nope.toml")
    monkeypatch.setenv("OUTCROP_CONFIG", str(tmp_path / "gone.toml"))
    with pytest.raises(ConfigError, match=r"gone\.toml does not exist"):
        load_settings()


def test_cli_reports_a_bad_config_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = write_toml(tmp_path / "outcrop.toml", "open_files = 0\n")
    monkeypatch.setattr(outcrop.cli.serve, "_run", lambda settings: None)
    result = CliRunner().invoke(outcrop.cli.app, ["serve", "--config", str(toml)])
    assert result.exit_code == 2
    assert "open_files: Input should be greater than or equal to 1" in result.output
    assert "Traceback" not in result.output
