"""The `outcrop` command."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from outcrop.errors import OutcropError
from outcrop.log import configure, logger
from outcrop.settings import LogLevel, Settings, load_settings

app = typer.Typer(help="Serve scientific data archives over the network.", no_args_is_help=True)
log = logger(__name__)


@app.callback()
def outcrop() -> None:
    """Outcrop: scientific data archives on the network."""


@app.command()
def serve(
    paths: Annotated[list[Path] | None, typer.Argument(help="Folders or files to serve.")] = None,
    config: Annotated[Path | None, typer.Option(help="An outcrop.toml to read.")] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    cache_mb: Annotated[
        int | None, typer.Option(help="Memory budget of the chunk cache, MB.")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Catalog database and caches.")] = None,
    root_path: Annotated[str | None, typer.Option(help="Path prefix behind a proxy.")] = None,
    log_level: Annotated[LogLevel | None, typer.Option(help="Lowest level logged.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="Log nothing.")] = False,
) -> None:
    """Serve every NetCDF/HDF5/Zarr dataset under PATHS (and those declared in the config)."""
    settings = load_settings(
        config,
        paths=[p.resolve() for p in paths] if paths else None,
        host=host,
        port=port,
        cache_mb=cache_mb,
        workers=workers,
        data_dir=data_dir,
        root_path=root_path,
        log_level=log_level,
        quiet=quiet or None,
    )
    configure(settings.log_level, settings.quiet)
    try:
        _run(settings)
    except OutcropError as exc:
        log.error("cannot_start", error=exc.message)
        raise typer.Exit(2) from exc


def _run(settings: Settings) -> None:
    import uvicorn

    from outcrop.catalog import Catalog

    catalog = Catalog(settings)
    catalog.refresh()
    log.info("catalog_ready", datasets=len(catalog), data_dir=str(settings.data_dir))
    common: dict[str, Any] = dict(
        host=settings.host,
        port=settings.port,
        root_path=settings.root_path,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        access_log=False,
        log_level="warning" if not settings.quiet else "critical",
        server_header=False,
    )
    if settings.workers > 1:
        catalog.close()
        os.environ["OUTCROP_SERVE_SETTINGS"] = settings.model_dump_json()
        uvicorn.run(
            "outcrop.api.app:app_from_environment", factory=True, workers=settings.workers, **common
        )
        return
    from outcrop.api import create_app

    uvicorn.run(create_app(settings, catalog), **common)


def main() -> None:
    app()
