"""`outcrop worker` and `outcrop jobs`: consuming the queue, cleaning results."""

from __future__ import annotations

from typing import Annotated

import typer

from outcrop.cli import ConfigOpt, DataDirOpt, app, check_exists, fail, log
from outcrop.errors import OutcropError
from outcrop.log import configure
from outcrop.settings import LogLevel, Settings, load_settings


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
        configure(settings.log_level, settings.quiet, file=settings.log_file)
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
