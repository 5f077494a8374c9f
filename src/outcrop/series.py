"""Time series from the catalog: full resolution or reduced through the multi-resolution
cache. Every time-series protocol (HAPI, das2) asks through `Pipeline.series_*`, which
lands here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from outcrop.catalog import Catalog, Entry
from outcrop.drivers import Series, series_reader
from outcrop.errors import BadQuery, TooLarge
from outcrop.log import logger
from outcrop.model import Block, Parameter, SeriesInfo, SeriesRequest
from outcrop.settings import Settings

if TYPE_CHECKING:
    from outcrop.cache import DiskStore
    from outcrop.drivers.timeseries import GridSeries
    from outcrop.pyramid import Pyramid

log = logger(__name__)
ROWS_PER_ANSWER_BLOCK = 1 << 16  # a reduced answer is sent in blocks of this many bins
BACKGROUND_PATIENCE_S = 60  # background building waits at most this long for quiet
MAX_BINS = 10_000_000  # bins in one reduced answer: bounds memory (~100 B per bin)


@dataclass(frozen=True)
class SeriesAnswer:
    """What a time-series request gets: the columns after time, as sent; the bin width
    answered (ns, None at full resolution); the blocks, the first already computed."""

    parameters: tuple[Parameter, ...]
    width: int | None
    blocks: Iterator[Block]


class SeriesService:
    """Time-series datasets of a catalog, their infos, and answers to requests."""

    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        self.settings = settings
        self.catalog = catalog
        self._infos: dict[tuple[str, str], SeriesInfo] = {}
        # Times and info of grid series, so a request does not re-derive them (the dataset
        # itself comes from the catalog each time: it may have been closed meanwhile).
        self._grids: dict[str, tuple[str, GridSeries]] = {}
        self._store: DiskStore | None = None
        self._background: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._busy = 0  # reductions being computed for requests now
        self._idle = threading.Condition()

    def ids(self) -> list[str]:
        return sorted(e.id for e in self.catalog.entries() if e.series)

    def series(self, ds_id: str) -> tuple[Entry, Series]:
        """The dataset as a time series (blocking); BadQuery when it is not one."""
        from outcrop.drivers.timeseries import grid_series

        entry = self.catalog.get(ds_id)
        found: Series | None
        if entry.driver == "grid":
            found = None
            if entry.series:
                ds = self.catalog.open(ds_id)
                version, known = self._grids.get(entry.id, ("", None))
                if known is not None and version == entry.version:
                    found = known.reopened(ds)
                else:
                    found = grid_series(ds, entry.title)
                if found is not None:
                    self._grids[entry.id] = (entry.version, found)
        else:
            series_of = series_reader(entry.driver)
            found = series_of(entry.source) if series_of is not None else None
        if found is None:
            raise BadQuery(
                f"dataset {ds_id!r} is not a time series (no variable along a single time "
                "dimension); GET /hapi/catalog lists the time series served",
                parameter="dataset",
            )
        return entry, found

    def info(self, ds_id: str) -> SeriesInfo:
        entry = self.catalog.get(ds_id)
        key = (entry.id, entry.version)
        known = self._infos.get(key)
        if known is None:
            known = self._infos[key] = self.series(ds_id)[1].info()
        return known

    def answer(self, ds_id: str, request: SeriesRequest) -> SeriesAnswer:
        """The answer to a request (blocking until its first block is computed)."""
        if request.start >= request.stop:
            raise BadQuery("start must be before stop", parameter="start")
        entry, series = self.series(ds_id)
        info = self.info(ds_id)
        wanted = _parameters(info, request)
        # Outside its valid range a series has no data: never read or bin there.
        start, stop = max(request.start, info.start), min(request.stop, info.stop)
        if start >= stop:
            return SeriesAnswer(tuple(wanted), request.width, iter(()))
        request = dataclasses.replace(request, start=start, stop=stop)
        if request.width is None:
            blocks = series.read(
                request.start, request.stop, [p.name for p in wanted], None, dict(request.extras)
            )
            return SeriesAnswer(tuple(wanted), None, _started(blocks))
        return self._reduced(entry, series, info, wanted, request)

    def _reduced(
        self,
        entry: Entry,
        series: Series,
        info: SeriesInfo,
        wanted: list[Parameter],
        request: SeriesRequest,
    ) -> SeriesAnswer:
        from outcrop.reduce import answer_block

        assert request.width is not None
        count = -(-(request.stop - request.start) // request.width)
        if count > MAX_BINS:
            raise TooLarge(
                f"{count} bins of {request.width / 1e9:g} s; at most {MAX_BINS} bins per "
                "request: ask for a coarser resolution or a shorter time range",
                size=count,
                limit=MAX_BINS,
                parameter="resolution",
            )
        for p in wanted:
            if p.type not in ("double", "integer"):
                raise BadQuery(
                    f"parameter {p.name!r} is of type {p.type} and cannot be reduced; ask for "
                    "numeric parameters only, or for full resolution",
                    parameter="parameters",
                )
        pyramid = self.pyramid(entry, series, info, request.extras)
        with self._foreground():
            bins = pyramid.reduce(
                request.start, request.stop, wanted, request.width, dict(request.extras)
            )
        columns, block = answer_block(bins, wanted, request.statistics)
        return SeriesAnswer(columns, bins.width, _split(block))

    def pyramid(
        self, entry: Entry, series: Series, info: SeriesInfo, extras: Sequence[tuple[str, str]]
    ) -> Pyramid:
        from outcrop.pyramid import Pyramid
        from outcrop.reduce import auto_levels, check_levels

        key = cache_key(entry.id) + entry.version
        if extras:
            key += "?" + hashlib.sha256(repr(sorted(extras)).encode()).hexdigest()[:16]
        levels = check_levels(info.levels) if info.levels else auto_levels(info)
        return Pyramid(key, series, self.store(), levels, background=self.background, info=info)

    def store(self) -> DiskStore:
        from outcrop.cache import DiskStore

        with self._lock:
            if self._store is None:
                budget = self.settings.series_cache_mb * 2**20
                self._store = DiskStore(self.settings.data_dir / "series", budget)
            return self._store

    def background(self, work: Callable[[], None]) -> Any:
        """Run cache-building work on the background worker (one thread per process), once
        no request is being reduced: it must not slow the answer that asked for it."""
        with self._lock:
            if self._background is None:
                self._background = ThreadPoolExecutor(1, thread_name_prefix="series-cache")
            return self._background.submit(self._when_idle, work)

    @contextlib.contextmanager
    def _foreground(self) -> Iterator[None]:
        with self._idle:
            self._busy += 1
        try:
            yield
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()

    def _when_idle(self, work: Callable[[], None]) -> None:
        with self._idle:
            self._idle.wait_for(lambda: self._busy == 0, timeout=BACKGROUND_PATIENCE_S)
        _logged(work)

    def close(self) -> None:
        if self._background is not None:
            self._background.shutdown(wait=False, cancel_futures=True)
        if self._store is not None:
            self._store.close()


def cache_key(ds_id: str) -> str:
    """The prefix of a dataset's blocks in the store: `@` ends the (quoted) id."""
    return quote(ds_id, safe="/") + "@"


def _parameters(info: SeriesInfo, request: SeriesRequest) -> list[Parameter]:
    if not request.parameters:
        return list(info.parameters)
    wanted = []
    for name in request.parameters:
        found = info.parameter(name)
        if found is None:
            known = ", ".join(p.name for p in info.parameters)
            raise BadQuery(f"unknown parameter {name!r}; known: {known}", parameter="parameters")
        wanted.append(found)
    return wanted


def _started(blocks: Iterator[Block]) -> Iterator[Block]:
    """The blocks with the first one already read, so errors before data raise here."""
    first = next(blocks, None)
    if first is None:
        return iter(())
    return itertools.chain([first], blocks)


def _split(block: Block) -> Iterator[Block]:
    for lo in range(0, max(len(block), 1), ROWS_PER_ANSWER_BLOCK):
        hi = lo + ROWS_PER_ANSWER_BLOCK
        yield Block(block.time[lo:hi], {k: v[lo:hi] for k, v in block.values.items()})


def _logged(work: Callable[[], None]) -> None:
    try:
        work()
    except Exception:  # a background build must not die silently: log it, carry on
        log.exception("series_cache_build_failed")
