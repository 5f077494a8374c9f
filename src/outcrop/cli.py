"""The `outcrop` command."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Any

import typer

from outcrop.errors import OutcropError
from outcrop.log import configure, logger
from outcrop.settings import LogLevel, Settings, load_settings

app = typer.Typer(help="Serve scientific data archives over the network.", no_args_is_help=True)
log = logger("outcrop.cli")
SETTINGS_ENV = "OUTCROP_SERVE_SETTINGS"


@app.callback()
def outcrop() -> None:
    """Outcrop: scientific data archives on the network."""


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
        configure(settings.log_level, settings.quiet)
        _run(settings)
    except OutcropError as exc:
        fail(exc.message)


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


def _normalise_root(root_path: str | None) -> str | None:
    if root_path is None:
        return None
    stripped = root_path.strip().rstrip("/")
    return stripped if not stripped or stripped.startswith("/") else f"/{stripped}"


def _run(settings: Settings) -> None:
    import uvicorn

    from outcrop.catalog import Catalog

    check_port_free(settings.host, settings.port)
    catalog = Catalog(settings)
    catalog.refresh()
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
    return dict(
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


# -- outcrop cache ---------------------------------------------------------------------
cache_app = typer.Typer(
    help="The multi-resolution cache of reduced time series (data_dir/series).",
    no_args_is_help=True,
)
app.add_typer(cache_app, name="cache")
PathsArg = Annotated[
    list[Path] | None,
    typer.Argument(
        help="Folders served (default: the catalog as last served).", show_default=False
    ),
]
ConfigOpt = Annotated[Path | None, typer.Option(help="An outcrop.toml to read.")]
DataDirOpt = Annotated[Path | None, typer.Option(help="Folder of the catalog and caches.")]


@cache_app.command("warm")
def cache_warm(
    dataset: Annotated[str, typer.Argument(help="Id of a time-series dataset.")],
    paths: PathsArg = None,
    levels: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated bin widths to build, seconds or ISO 8601 durations "
            "(default: every level holding at least 10 samples a bin)."
        ),
    ] = None,
    start: Annotated[str | None, typer.Option(help="ISO 8601 start (default: the data's).")] = None,
    stop: Annotated[str | None, typer.Option(help="ISO 8601 stop (default: the data's).")] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Build the cached levels of DATASET over a time range, with a progress bar."""
    from rich.progress import Progress

    try:
        service = _series_service(paths, config, data_dir)
        entry, series = service.series(dataset)
        info = service.info(dataset)
        pyramid = service.pyramid(entry, series, info, ())
        widths = _widths(levels)
        t0 = _time_ns(start, "start", info.start)
        t1 = _time_ns(stop, "stop", info.stop)
        with Progress() as bar:
            task = bar.add_task(f"warming {dataset}", total=None)
            pyramid.warm(
                t0, t1, widths, lambda done, total: bar.update(task, completed=done, total=total)
            )
        _print_coverage(pyramid.coverage())
        service.close()
    except OutcropError as exc:
        fail(exc.message)


@cache_app.command("stats")
def cache_stats(
    dataset: Annotated[
        str | None, typer.Argument(help="Also show this dataset's levels.", show_default=False)
    ] = None,
    paths: PathsArg = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Entries and size of the cache, and with DATASET how much of each level is built."""
    try:
        service = _series_service(paths if dataset else [], config, data_dir)
        stats = service.store().stats()
        typer.echo(f"cache: {service.settings.data_dir / 'series'}")
        typer.echo(f"entries: {stats['entries']}")
        used, limit = (stats["bytes"] or 0) / 2**20, (stats["size_limit"] or 0) / 2**20
        typer.echo(f"size: {used:.1f} MB of {limit:.0f} MB")
        if dataset:
            entry, series = service.series(dataset)
            _print_coverage(service.pyramid(entry, series, service.info(dataset), ()).coverage())
        service.close()
    except OutcropError as exc:
        fail(exc.message)


@cache_app.command("clear")
def cache_clear(
    dataset: Annotated[
        str | None, typer.Argument(help="Only this dataset's blocks.", show_default=False)
    ] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Remove every cached block, or those of DATASET (every version)."""
    from outcrop.series import cache_key

    try:
        service = _series_service([], config, data_dir)
        removed = service.store().clear(cache_key(dataset) if dataset else None)
        typer.echo(f"removed {removed} cached blocks")
        service.close()
    except OutcropError as exc:
        fail(exc.message)


def _series_service(paths: list[Path] | None, config: Path | None, data_dir: Path | None) -> Any:
    """The time series of the catalog: rescanned when folders are given, else as stored."""
    from outcrop.catalog import Catalog
    from outcrop.series import SeriesService

    check_exists(paths or [], config)
    settings = load_settings(
        config, paths=[p.resolve() for p in paths] if paths else None, data_dir=data_dir
    )
    configure("warning", settings.quiet)
    catalog = Catalog(settings)
    if settings.paths or settings.datasets:
        catalog.refresh()
    else:
        catalog.load()
    return SeriesService(settings, catalog)


def _widths(text: str | None) -> list[int] | None:
    from outcrop.reduce import parse_width

    if text is None:
        return None
    return [parse_width(part.strip(), "levels") for part in text.split(",") if part.strip()]


def _time_ns(text: str | None, name: str, default: int) -> int:
    import numpy as np

    from outcrop.errors import BadQuery

    if text is None:
        return default
    try:
        return int(np.datetime64(text.rstrip("Zz"), "ns").astype(np.int64))
    except ValueError as exc:
        raise BadQuery(f"--{name} {text!r} is not an ISO 8601 time", parameter=name) from exc


def _print_coverage(coverage: dict[int, tuple[int, int]]) -> None:
    for width, (cached, total) in coverage.items():
        typer.echo(f"level {width / 1e9:g} s: {cached} of {total} blocks cached")


# -- outcrop worker, outcrop jobs ---------------------------------------------------------
@app.command()
def worker(
    threads: Annotated[int, typer.Option(help="Jobs run at the same time.", min=1)] = 1,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    log_level: Annotated[LogLevel | None, typer.Option(help="Lowest level logged [info].")] = None,
) -> None:
    """Run jobs from the queue (OUTCROP_QUEUE_URL, else the embedded one in the data folder)
    until SIGTERM or Ctrl-C; a job running then is queued again."""
    import signal
    import threading

    from outcrop.jobs import start_consumer

    try:
        check_exists([], config)
        settings = load_settings(config, data_dir=data_dir, log_level=log_level)
        configure(settings.log_level, settings.quiet)
        consumer = start_consumer(settings, threads)
    except OutcropError as exc:
        fail(exc.message)
        return
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    log.info("worker_started", threads=threads, queue=_queue_name(settings))
    stop.wait()
    consumer.stop()
    log.info("worker_stopped")


def _queue_name(settings: Settings) -> str:
    """The queue without a password in it."""
    from urllib.parse import urlsplit

    if not settings.queue_url:
        return "embedded"
    parts = urlsplit(settings.queue_url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"


jobs_app = typer.Typer(help="Asynchronous jobs and their results.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")


@jobs_app.command("clean")
def jobs_clean(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Remove expired jobs and their zips now (consumers also do it hourly)."""
    from outcrop.catalog import Catalog
    from outcrop.jobs import JobService

    try:
        check_exists([], config)
        settings = load_settings(config, data_dir=data_dir)
        configure("warning", settings.quiet)
        catalog = Catalog(settings)
        removed = JobService(settings, catalog).clean()
        catalog.close()
    except OutcropError as exc:
        fail(exc.message)
        return
    typer.echo(f"removed {removed} expired jobs")


def main() -> None:
    app()
