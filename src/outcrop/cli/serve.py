"""`outcrop serve`: the server in the foreground (uvicorn, one or more processes)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Any

import typer

from outcrop.cli import app, check_exists, fail, log
from outcrop.errors import OutcropError
from outcrop.log import configure
from outcrop.settings import LogLevel, Settings, load_settings

SETTINGS_ENV = "OUTCROP_SERVE_SETTINGS"


@app.command()
def serve(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Folders or files to serve.", show_default=False),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="An outcrop.toml to read."),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on [127.0.0.1].")] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on [8765].", min=0, max=65535)
    ] = None,
    cache_mb: Annotated[
        int | None, typer.Option(help="Memory budget of the chunk cache, MB [256].", min=0)
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes [1].", min=1)] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Folder of the catalog database and caches.")
    ] = None,
    root_path: Annotated[
        str | None, typer.Option(help="Path prefix behind a reverse proxy, e.g. /outcrop.")
    ] = None,
    log_level: Annotated[LogLevel | None, typer.Option(help="Lowest level logged [info].")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="Log nothing.")] = False,
) -> None:
    """Serve every NetCDF/HDF5/Zarr dataset under PATHS (and those declared in the config).

    Logs are JSON lines on stderr. Settings not given here come from OUTCROP_* variables,
    .env and outcrop.toml (docs/configuration.md).
    """
    try:
        check_exists(paths or [], config)
        settings = load_settings(
            config,
            paths=[p.resolve() for p in paths] if paths else None,
            host=host,
            port=port,
            cache_mb=cache_mb,
            workers=workers,
            data_dir=data_dir,
            root_path=_normalise_root(root_path),
            log_level=log_level,
            quiet=quiet or None,
        )
        configure(settings.log_level, settings.quiet, file=settings.log_file)
        _run(settings)
    except OutcropError as exc:
        fail(exc.message)


def _normalise_root(root_path: str | None) -> str | None:
    if root_path is None:
        return None
    stripped = root_path.strip().rstrip("/")
    return stripped if not stripped or stripped.startswith("/") else f"/{stripped}"


def _run(settings: Settings) -> None:
    import uvicorn

    from outcrop.api.routes import route_sets, selected
    from outcrop.catalog import Catalog

    selected(settings.routes, route_sets())  # a bad OUTCROP_ROUTES fails before any worker
    check_port_free(settings.host, settings.port)
    catalog = Catalog(settings)
    if settings.workers > 1:
        catalog.refresh()  # the workers read the catalog from the database
    else:
        catalog.start()  # what changed is written after the first answer
    log.info("catalog_ready", datasets=len(catalog), data_dir=str(settings.data_dir))
    options = uvicorn_options(settings)
    log.info("serving", url=_url(settings), workers=settings.workers)
    if settings.workers > 1:
        catalog.close()
        os.environ[SETTINGS_ENV] = settings.model_dump_json()
        uvicorn.run(
            "outcrop.api.app:app_from_environment",
            factory=True,
            workers=settings.workers,
            **options,
        )
        return
    from outcrop.api import create_app

    uvicorn.run(create_app(settings, catalog), **options)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Uvicorn's settings: our own logging and `X-Forwarded-*` handling, not its."""
    from outcrop.cli.protocol import CoalescingHttpToolsProtocol

    return dict(
        http=CoalescingHttpToolsProtocol,
        host=settings.host,
        port=settings.port,
        root_path=settings.root_path,
        # The app applies X-Forwarded-* itself (api/middleware.py), for links and logs.
        proxy_headers=False,
        log_config=None,
        access_log=False,
        log_level="critical" if settings.quiet else max(settings.log_level, "warning", key=_rank),
        server_header=False,
        ws="none",  # no websocket routes; skips importing a websockets stack at start
    )


def _rank(level: str) -> int:
    from outcrop.log import LEVELS

    return LEVELS[level]


def check_port_free(host: str, port: int) -> None:
    """Fail with a clear message when another process already listens on host:port."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OutcropError(f"cannot resolve --host {host!r}: {exc.strerror}") from exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise OutcropError(
                f"cannot listen on {host}:{port}: {exc.strerror}; "
                "another process may use it — choose another --port"
            ) from exc


def _url(settings: Settings) -> str:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"http://{host}:{settings.port}{settings.root_path}/"
