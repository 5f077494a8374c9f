"""`outcrop env`, `outcrop check`, `outcrop db upgrade`: what an operator runs before
starting the server (docs/deploy.md)."""

from __future__ import annotations

import os
import re
import socket
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import orjson
import typer

from outcrop.cli import ConfigOpt, DataDirOpt, app, check_exists, fail
from outcrop.errors import OutcropError
from outcrop.settings import Settings, load_settings

Problem = tuple[str, str]  # what is wrong, how to fix it
PLAIN = re.compile(r"[A-Za-z0-9_./:,@+-]*")
CONNECT_S = 3.0


# -- outcrop env ------------------------------------------------------------------------
@app.command()
def env(
    path: Annotated[Path, typer.Argument(help="File to write.")] = Path(".env"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    print_: Annotated[bool, typer.Option("--print", help="Write to stdout instead.")] = False,
) -> None:
    """Write a commented .env with every setting at its default (all commented out):
    uncomment a line to change a setting."""
    text = env_text()
    if print_:
        typer.echo(text, nl=False)
        return
    if path.exists() and not force:
        fail(f"{path} exists; give --force to overwrite it, or --print to see the text")
    _write_atomically(path, text)
    typer.echo(f"wrote {path} ({len(Settings.model_fields)} settings)")


def env_text() -> str:
    """Every setting as `# description` and `# OUTCROP_NAME=default` lines."""
    out = [
        "# Outcrop settings, each at its default (written by `outcrop env`).",
        "# Uncomment a line to change it. Environment variables OUTCROP_* win over this file,",
        "# and this file over outcrop.toml. docs/configuration.md explains each setting.",
        "",
    ]
    for name, info in Settings.model_fields.items():
        out += textwrap.wrap(
            info.description or name, 86, initial_indent="# ", subsequent_indent="# "
        )
        default = info.get_default(call_default_factory=True)
        out.append(f"# OUTCROP_{name.upper()}={env_value(name, default)}")
        out.append("")
    return "\n".join(out)


def env_value(name: str, value: Any) -> str:
    """A default as a .env value that pydantic-settings reads back to the same default."""
    if value is None:
        return ""  # unset
    if name == "routes":
        text = ",".join(value)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, list | dict):
        text = orjson.dumps(value, default=str).decode()
    else:
        text = str(value)
    return text if PLAIN.fullmatch(text) else "'" + text.replace("'", "") + "'"


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=".env.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    Path(tmp).replace(path)


# -- outcrop check ----------------------------------------------------------------------
@app.command()
def check(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Check settings, the database schema, the data folder and the services configured
    (PostgreSQL, Redis, Dask); each problem is printed with its fix. Exit status 1 if any."""
    try:
        check_exists([], config)
        settings = load_settings(config, data_dir=data_dir)
    except OutcropError as exc:
        _report(
            [
                (
                    exc.message,
                    "fix the setting in the environment, .env or outcrop.toml "
                    "(`outcrop env --print` lists them all)",
                )
            ],
            0,
        )
        return
    checks: list[Callable[[Settings], list[Problem]]] = [
        check_data_dir,
        check_paths,
        check_database,
        check_queue,
        check_dask,
    ]
    problems = [p for each in checks for p in each(settings)]
    _report(problems, len(checks))


def _report(problems: list[Problem], checked: int) -> None:
    for what, fix in problems:
        typer.echo(f"problem: {what}\n    fix: {fix}")
    if problems:
        raise typer.Exit(1)
    typer.echo(f"ok: settings and {checked} checks passed")


def check_data_dir(settings: Settings) -> list[Problem]:
    folder = settings.data_dir
    if not folder.is_dir():
        return [
            (
                f"the data folder {folder} does not exist",
                f"create it: mkdir -p {folder} (owned by the user the server runs as), "
                "or set OUTCROP_DATA_DIR",
            )
        ]
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return [
            (
                f"the data folder {folder} is not writable ({exc.strerror})",
                f"chown it to the user the server runs as (chown USER {folder}), "
                "or set OUTCROP_DATA_DIR to a folder it can write",
            )
        ]
    return []


def check_paths(settings: Settings) -> list[Problem]:
    return [
        (
            f"served path {path} does not exist or cannot be read",
            "fix OUTCROP_PATHS / `paths` in outcrop.toml, or the folder's permissions",
        )
        for path in settings.paths
        if not os.access(path, os.R_OK)
    ]


def check_database(settings: Settings) -> list[Problem]:
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from outcrop.db import HEAD, current_revision

    url = make_url(settings.db_url)
    shown = url.render_as_string(hide_password=True)
    upgrade = "run `outcrop db upgrade` (with the same settings)"
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").exists():
        return [(f"there is no catalog database yet at {url.database}", upgrade)]
    args = {"connect_timeout": int(CONNECT_S)} if url.get_backend_name() == "postgresql" else {}
    try:
        engine = create_engine(url, connect_args=args)
        with engine.connect():
            pass
    except (SQLAlchemyError, ImportError) as exc:
        return [
            (
                f"cannot connect to the database {shown}: {_first_line(exc)}",
                "start the database server, or fix OUTCROP_DATABASE_URL (user, host, "
                "port, database name; `pip install 'outcrop[postgres]'` for PostgreSQL)",
            )
        ]
    revision = current_revision(engine)
    engine.dispose()
    if revision != HEAD:
        return [
            (
                f"the database {shown} is at schema revision {revision or 'none'}, "
                f"this version needs {HEAD}",
                upgrade,
            )
        ]
    return []


def check_queue(settings: Settings) -> list[Problem]:
    if not settings.queue_url:
        return []
    return _reachable("Redis (OUTCROP_QUEUE_URL)", settings.queue_url, 6379)


def check_dask(settings: Settings) -> list[Problem]:
    if not settings.dask_scheduler:
        return []
    return _reachable("the Dask scheduler (OUTCROP_DASK_SCHEDULER)", settings.dask_scheduler, 8786)


def _reachable(what: str, url: str, default_port: int) -> list[Problem]:
    """A TCP connection to the host and port of `url` (enough to tell it listens)."""
    parts = urlsplit(url if "://" in url else f"tcp://{url}")
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    try:
        with socket.create_connection((host, port), timeout=CONNECT_S):
            return []
    except OSError as exc:
        return [
            (
                f"cannot reach {what} at {host}:{port}: {exc.strerror or exc}",
                f"start it, or fix the address (and its firewall) so this machine "
                f"can connect to {host}:{port}",
            )
        ]


def _first_line(exc: BaseException) -> str:
    return (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [""])[0]


# -- outcrop db upgrade -----------------------------------------------------------------
db_app = typer.Typer(help="The catalog database.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Migrate the catalog database to the newest schema (Alembic head); prints the
    revision. Run it once after installing a new version, before (re)starting."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from outcrop.db import connect, current_revision

    try:
        check_exists([], config)
        settings = load_settings(config, data_dir=data_dir)
        url = settings.db_url
        before = None
        if not url.startswith("sqlite:///") or Path(url.removeprefix("sqlite:///")).exists():
            probe = create_engine(url)
            before = current_revision(probe)
            probe.dispose()
        engine = connect(url)
        after = current_revision(engine)
        engine.dispose()
    except OutcropError as exc:
        fail(exc.message)
        return
    except SQLAlchemyError as exc:
        fail(f"cannot migrate the database: {_first_line(exc)}")
        return
    shown = make_url(url).render_as_string(hide_password=True)
    change = "already at" if before == after else f"{before or 'empty'} →"
    typer.echo(f"{shown}: {change} revision {after}")
