"""The `outcrop` command: one module per family of subcommands, registered on `app`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from outcrop.errors import OutcropError
from outcrop.log import logger

app = typer.Typer(
    help="Serve scientific data archives over the network.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
log = logger("outcrop.cli")
PathsArg = Annotated[
    list[Path] | None,
    typer.Argument(
        help="Folders served (default: the catalog as last served).", show_default=False
    ),
]
ConfigOpt = Annotated[Path | None, typer.Option(help="An outcrop.toml to read.")]
DataDirOpt = Annotated[Path | None, typer.Option(help="Folder of the catalog and caches.")]


@app.callback()
def outcrop() -> None:
    """Outcrop: scientific data archives on the network."""


def fail(message: str) -> None:
    """Why the server cannot start, on stderr whatever the log settings; exit status 2."""
    typer.echo(f"outcrop: {message}", err=True)
    raise typer.Exit(2)


def check_exists(paths: list[Path], config: Path | None) -> None:
    for path in paths:
        if not path.exists():
            raise OutcropError(f"path {path} does not exist; give folders or files to serve")
    if config is not None and not config.is_file():
        raise OutcropError(f"--config {config} is not a file; give the path of an outcrop.toml")


def main() -> None:
    app()


# The subcommands register themselves on `app` (imported last: they import the names above).
from outcrop.cli import cache, images, jobs, serve, service  # noqa: E402, F401
