"""`outcrop cache`: the multi-resolution cache of reduced time series."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from outcrop.cli import ConfigOpt, DataDirOpt, PathsArg, app, check_exists, fail
from outcrop.errors import OutcropError
from outcrop.log import configure
from outcrop.settings import load_settings

# -- outcrop cache ---------------------------------------------------------------------
cache_app = typer.Typer(
    help="The multi-resolution cache of reduced time series (data_dir/series).",
    no_args_is_help=True,
)
app.add_typer(cache_app, name="cache")


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
