"""The multi-resolution cache of a time series: levels of reduced blocks in a store.

The pyramid. Levels are bin widths, each a multiple of the one before (`auto_levels`:
nice widths about 4x apart). A request for width `w` is answered from the coarsest level
`L <= w`, at the largest multiple of `L` not above `w` ("at the requested resolution or
better", das2): every answer bin is an exact union of level bins. Level `L` is stored in
blocks of `bins_per_block` bins (block `b` holds bins `[b*n, (b+1)*n)`), one store entry
per block and parameter, keyed `{key}/{L}/{b}/{parameter}`, so a request for some
parameters reads and builds only those; `key` names the dataset version, so changed data
never meets old blocks. A block is a small header and raw little-endian arrays.

Answers are whole aligned bins: every bin overlapping `[start, stop)`, each holding all
the samples of its span within the series' valid range (das2 semantics: a bin's values do
not depend on where a request cut, and cached blocks serve any request). Edge bins may
therefore include samples just outside `[start, stop)`. `bin_samples` itself counts only
samples inside the range it is given; the pyramid gives it whole blocks.

Missing blocks are built from one `Series.read` per run of consecutive missing blocks,
or derived from the closest finer level that has all their span cached. A short run is
binned at the finest level and every level up to the asked one is derived and stored; a
long run is binned straight at the asked level and the finer levels are handed to the
`background` hook as a `BuildTask`. Nothing is read outside the series' `start`/`stop`.
A live source whose data grows must change its version, which discards every block;
rebuilding only the block that held the old `stop` is left for later.
"""

from __future__ import annotations

import itertools
import os
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from outcrop.drivers import Series
from outcrop.errors import BadQuery
from outcrop.log import logger
from outcrop.model import Bins, Parameter, SeriesInfo
from outcrop.reduce import (
    REDUCIBLE,
    SECOND,
    bin_samples,
    bulk_floor,
    check_levels,
    check_range,
    clip,
    coarsen,
    concat,
    effective_width,
    empty_bins,
    join,
    pick,
    reducible,
)

Array = np.ndarray[Any, Any]
log = logger(__name__)
PARALLEL_READS = max(1, min(4, os.cpu_count() or 1))  # spans of a long read read at once
SPLIT_SAMPLES = 4_000_000  # a read is split when it holds more samples than this

# -- block encoding -------------------------------------------------------------------------

_HEAD = struct.Struct("<4sBBqqI")  # magic, flags, vector rank, width, first bin, bins
_MAGIC = b"OCB1"
_EMPTY, _WIDE = 1, 2  # flags: no sample at all (no arrays follow); counts are int64


def encode_block(bins: Bins, name: str) -> bytes:
    """One parameter's bins as bytes: header, vector size, counts, sums, minima, maxima."""
    count = bins.count[name]
    size = count.shape[1:]
    empty = not count.any()
    wide = bool(count.max(initial=0) >= 2**32)
    head = _HEAD.pack(
        _MAGIC, empty * _EMPTY | wide * _WIDE, len(size), bins.width, bins.first, len(count)
    )
    parts = [head, np.asarray(size, "<u4").tobytes()]
    if not empty:
        parts.append(np.ascontiguousarray(count, "<i8" if wide else "<u4").tobytes())
        for field in (bins.total, bins.low, bins.high):
            parts.append(np.ascontiguousarray(field[name], "<f8").tobytes())
    return b"".join(parts)


def decode_block(data: bytes, name: str) -> Bins | None:
    """The bins `encode_block` wrote, or None when `data` is not such a block."""
    if len(data) < _HEAD.size:
        return None
    magic, flags, rank, width, first, n = _HEAD.unpack_from(data)
    if magic != _MAGIC or len(data) < _HEAD.size + 4 * rank:
        return None
    size = tuple(int(s) for s in np.frombuffer(data, "<u4", rank, _HEAD.size))
    shape, offset = (n, *size), _HEAD.size + 4 * rank
    cells = int(np.prod(shape))
    expected = offset + (0 if flags & _EMPTY else cells * (32 if flags & _WIDE else 28))
    if len(data) != expected:
        return None
    if flags & _EMPTY:
        return empty_bins((Parameter(name, size=size),), width, first, n)
    count_type = "<i8" if flags & _WIDE else "<u4"
    count = np.frombuffer(data, count_type, cells, offset).astype(np.int64).reshape(shape)
    offset += cells * np.dtype(count_type).itemsize
    rest = [
        np.frombuffer(data, "<f8", cells, offset + 8 * cells * i).reshape(shape) for i in range(3)
    ]
    return Bins(width, first, {name: count}, {name: rest[0]}, {name: rest[1]}, {name: rest[2]})


# -- the pyramid ----------------------------------------------------------------------------


class BlockStore(Protocol):
    """Where the pyramid keeps its blocks (e.g. `cache.DiskStore`)."""

    def get(self, key: str) -> bytes | None: ...

    def set(self, key: str, value: bytes) -> None: ...


@dataclass(frozen=True)
class BuildTask:
    """Work for the background: build `levels` over `[start, stop)` (ns) of `parameters`,
    the series read with `extras`."""

    pyramid: Pyramid
    start: int
    stop: int
    levels: tuple[int, ...]
    parameters: tuple[str, ...]
    extras: tuple[tuple[str, str], ...] = ()

    def __call__(self) -> None:
        extras = dict(self.extras)
        self.pyramid.warm(self.start, self.stop, self.levels, None, self.parameters, extras)


@dataclass(frozen=True)
class _Ask:
    """What one call builds: these parameters, read with these extras; `defer` lets long
    builds hand finer levels to the background."""

    params: tuple[Parameter, ...]
    extras: Mapping[str, str] | None
    defer: bool = True


Key = tuple[int, str]  # (block index, parameter name)
Span = tuple[int, int]  # [start, stop) in ns


class Pyramid:
    """A series' levels of reduced blocks in a store, built on demand (see the module doc).

    `key` names the dataset, its version and the extras the series is read with;
    `eager_blocks` is the longest run (in blocks of the finest level) built at every level
    from one read; longer runs are built at the asked level, the rest by `background`.
    `info` spares a `series.info()` call when the caller has it.
    """

    def __init__(
        self,
        key: str,
        series: Series,
        store: BlockStore,
        levels: Sequence[int],
        bins_per_block: int = 1024,
        background: Callable[[Callable[[], None]], object] | None = None,
        eager_blocks: int = 64,
        info: SeriesInfo | None = None,
    ) -> None:
        if bins_per_block < 1 or eager_blocks < 1:
            raise ValueError("bins_per_block and eager_blocks must be positive")
        self.key, self.series, self.store = key, series, store
        self.levels = check_levels(levels)
        self.per_block = bins_per_block
        self.background = background
        self.eager_blocks = eager_blocks
        self._info = info

    @property
    def info(self) -> SeriesInfo:
        if self._info is None:
            self._info = self.series.info()
        return self._info

    def reduce(
        self,
        start: int,
        stop: int,
        parameters: Sequence[Parameter],
        width: int,
        extras: Mapping[str, str] | None = None,
    ) -> Bins:
        """The bins overlapping `[start, stop)` at `effective_width(levels, width)`, whole."""
        check_range(start, stop, width)
        ask = _Ask(tuple(p for p in parameters if reducible(p)), extras)
        level, answered = effective_width(self.levels, width)
        first, last = start // answered, (stop - 1) // answered
        if level is None:
            return self._binned((first * answered, (last + 1) * answered), answered, ask)
        f = answered // level
        return coarsen(self._level_bins(level, first * f, (last + 1) * f - 1, ask), answered)

    def warm(
        self,
        start: int,
        stop: int,
        levels: Sequence[int] | None = None,
        progress: Callable[[int, int], None] | None = None,
        parameters: Sequence[str] | None = None,
        extras: Mapping[str, str] | None = None,
    ) -> None:
        """Build `levels` (default all from `bulk_floor` up; those between are built too)
        over `[start, stop)`
        widened to whole blocks of the coarsest, so that every request inside is answered
        from the store; one series read per chunk. `progress(done, total)` after each step."""
        if levels is None:
            levels = [w for w in self.levels if w >= bulk_floor(self.info)] or self.levels[-1:]
        chosen, ask = self._chosen(levels), _Ask(self._parameters(parameters), extras, False)
        lo, hi = self.levels.index(chosen[0]), self.levels.index(chosen[-1])
        unit = self.per_block * chosen[-1]
        span = self._valid((start // unit * unit, -(-stop // unit) * unit))
        top, size = self._chunking(lo)
        steps, above = _chunks(span, size), [w for w in chosen if w > self.levels[top]]
        total = len(steps) + len(above)
        report = progress or (lambda done, total: None)
        report(0, total)
        for done, chunk in enumerate(steps, 1):
            last = min(top, hi)
            if not self._complete(chunk, (chosen[0], self.levels[last]), ask):
                bins = self._binned(chunk, chosen[0], ask)
                self._store_chain(bins, lo, last, chunk, ask, beyond=False)
            report(done, total)
        for done, w in enumerate(above, len(steps) + 1):
            if covered := self._covered_blocks(w, span):
                n = self.per_block
                self._level_bins(w, covered[0] * n, covered[-1] * n + n - 1, ask)
            report(done, total)

    def coverage(self, parameters: Sequence[str] | None = None) -> dict[int, tuple[int, int]]:
        """Per level: (blocks cached, blocks in the valid range), counted per parameter."""
        params = self._parameters(parameters)
        out = {}
        for w in self.levels:
            blocks = range(*self._block_range(w, (self.info.start, self.info.stop)))
            keys = [self._key(w, b, p.name) for b in blocks for p in params]
            out[w] = (sum(self.store.get(k) is not None for k in keys), len(keys))
        return out

    # -- internals ------------------------------------------------------------------------

    def _key(self, level: int, block: int, name: str) -> str:
        return f"{self.key}/{level}/{block}/{name}"

    def _valid(self, span: Span) -> Span:
        return max(span[0], self.info.start), min(span[1], self.info.stop)

    def _block_span(self, level: int, block: int) -> Span:
        return self._valid((block * self.per_block * level, (block + 1) * self.per_block * level))

    def _block_range(self, level: int, span: Span) -> tuple[int, int]:
        size = self.per_block * level
        return span[0] // size, (span[1] - 1) // size + 1

    def _chosen(self, levels: Sequence[int] | None) -> tuple[int, ...]:
        chosen = tuple(sorted(set(self.levels if levels is None else levels)))
        if not chosen or any(w not in self.levels for w in chosen):
            known = ", ".join(f"{w / SECOND:g}" for w in self.levels)
            raise BadQuery(f"levels must be among {known} s", parameter="levels")
        return chosen

    def _parameters(self, names: Sequence[str] | None) -> tuple[Parameter, ...]:
        if names is None:
            return tuple(p for p in self.info.parameters if p.type in REDUCIBLE)
        found = [self.info.parameter(n) for n in names]
        if any(p is None for p in found):
            known = ", ".join(p.name for p in self.info.parameters)
            raise BadQuery(f"unknown parameter in {names}; known: {known}", parameter="parameters")
        return tuple(p for p in found if p is not None and reducible(p))

    def _chunking(self, lo: int) -> tuple[int, int]:
        """How warm cuts its work: the coarsest level (index) whose block spans at most
        4 * eager_blocks blocks of level `lo`, and a chunk of about that many `lo` blocks,
        whole blocks of that level (so every block up to it lies in one chunk)."""
        limit = 4 * self.eager_blocks
        top = max(
            k for k in range(lo, len(self.levels)) if self.levels[k] // self.levels[lo] <= limit
        )
        ratio = self.levels[top] // self.levels[lo]
        return top, limit // ratio * ratio * self.per_block * self.levels[lo]

    def _binned(self, span: Span, width: int, ask: _Ask) -> Bins:
        """Bins `span[0] // width … (span[1] - 1) // width` of the samples read in `span`."""
        first, last = span[0] // width, (span[1] - 1) // width
        a, z = self._valid(span)
        if a >= z or not ask.params:
            return empty_bins(ask.params, width, first, last - first + 1)
        parts = split_span((a, z), width, self.info.cadence)
        if len(parts) == 1:
            return clip(self._read_binned((a, z), width, ask), first, last)
        # A long read is cut into spans read at once: a reader program is one process on
        # one core, so two of them (or two file reads) take about half the time.
        with ThreadPoolExecutor(len(parts), thread_name_prefix="series-read") as pool:
            binned = list(pool.map(lambda part: self._read_binned(part, width, ask), parts))
        return clip(concat(binned), first, last)

    def _read_binned(self, span: Span, width: int, ask: _Ask) -> Bins:
        names = [p.name for p in ask.params]
        blocks = self.series.read(span[0], span[1], names, None, ask.extras)
        return bin_samples(blocks, ask.params, width, span[0], span[1])

    def _level_bins(self, level: int, i0: int, i1: int, ask: _Ask) -> Bins:
        """Bins `i0 … i1` of `level`, from cached blocks and ones built now."""
        wanted = range(i0 // self.per_block, i1 // self.per_block + 1)
        have = self._fetch(level, wanted, ask.params)
        missing = [b for b in wanted if any((b, p.name) not in have for p in ask.params)]
        for b0, b1 in _runs(missing):
            run = range(b0, b1 + 1)
            lacking = tuple(p for p in ask.params if any((b, p.name) not in have for b in run))
            have.update(self._build(level, b0, b1, _Ask(lacking, ask.extras, ask.defer)))
        parts = [concat([have[b, p.name] for b in wanted]) for p in ask.params]
        return clip(join(parts), i0, i1) if parts else empty_bins((), level, i0, 0)

    def _fetch(
        self, level: int, blocks: Iterable[int], params: Sequence[Parameter]
    ) -> dict[Key, Bins]:
        """The cached blocks; blocks outside the valid range are empty without a lookup."""
        n, found = self.per_block, {}
        for b in blocks:
            t0, t1 = self._block_span(level, b)
            for p in params:
                if t0 >= t1:
                    found[b, p.name] = empty_bins((p,), level, b * n, n)
                elif (data := self.store.get(self._key(level, b, p.name))) is not None:
                    block = decode_block(data, p.name)
                    if block is not None and block.first == b * n and len(block) == n:
                        found[b, p.name] = block
                    else:
                        log.warning("cache_block_unreadable", key=self._key(level, b, p.name))
        return found

    def _build(self, level: int, b0: int, b1: int, ask: _Ask) -> dict[Key, Bins]:
        """Blocks `b0 … b1` of `level`, built, stored and returned."""
        k = self.levels.index(level)
        span = self._block_span(level, b0)[0], self._block_span(level, b1)[1]
        bins, base = self._from_finer(k, b0, b1, ask.params), k
        if bins is None:
            base = self._base(k, span, ask)
            bins = self._binned(span, self.levels[base], ask)
        return self._store_chain(bins, base, k, span, ask)

    def _from_finer(self, k: int, b0: int, b1: int, params: Sequence[Parameter]) -> Bins | None:
        """Level `k`'s blocks `b0 … b1` from the closest finer level that has all the blocks
        they span cached (each level tried with one lookup first; at most 4 * eager_blocks
        lookups in all per level)."""
        for j in range(k - 1, -1, -1):
            factor = self.levels[k] // self.levels[j]
            finer = range(b0 * factor, (b1 + 1) * factor)
            if len(finer) * len(params) > 4 * self.eager_blocks:
                return None
            if len(self._fetch(self.levels[j], finer[:1], params)) < len(params):
                continue
            have = self._fetch(self.levels[j], finer, params)
            if len(have) == len(finer) * len(params):
                parts = [concat([have[b, p.name] for b in finer]) for p in params]
                return coarsen(join(parts), self.levels[k])
        return None

    def _base(self, k: int, span: Span, ask: _Ask) -> int:
        """The level to bin raw samples at: the finest when the span is short (every level
        then comes from this one read), else level `k`, finer ones left to the background."""
        if k == 0 or (span[1] - span[0]) // self.levels[0] <= self.eager_blocks * self.per_block:
            return 0
        bulk = tuple(w for w in self.levels[:k] if w >= bulk_floor(self.info))
        if ask.defer and self.background is not None and bulk:
            names = tuple(p.name for p in ask.params)
            extras = tuple(sorted((ask.extras or {}).items()))
            self.background(BuildTask(self, *span, bulk, names, extras))
        return k

    def _store_chain(
        self, bins: Bins, base: int, top: int, span: Span, ask: _Ask, beyond: bool = True
    ) -> dict[Key, Bins]:
        """Store the blocks `span` covers at level `base` and each coarser level derived
        from it up to `top` (`beyond` it while blocks are covered); return level `top`'s."""
        result: dict[Key, Bins] = {}
        for k in range(base, len(self.levels) if beyond else top + 1):
            if k > base:
                bins = coarsen(bins, self.levels[k])
            stored = self._store_covered(self.levels[k], bins, span, ask.params)
            if k == top:
                result = stored
            if k >= top and not stored:
                break
        return result

    def _store_covered(
        self, level: int, bins: Bins, span: Span, params: Sequence[Parameter]
    ) -> dict[Key, Bins]:
        """Store each block of `bins` whose valid part lies within `span`."""
        n, stored = self.per_block, {}
        for b in self._covered_blocks(level, span):
            block = clip(bins, b * n, (b + 1) * n - 1)
            for p in params:
                one = pick(block, p.name)
                self.store.set(self._key(level, b, p.name), encode_block(one, p.name))
                stored[b, p.name] = one
        return stored

    def _covered_blocks(self, level: int, span: Span) -> list[int]:
        """The blocks of `level` whose valid part is not empty and lies within `span`."""
        found = []
        for b in range(*self._block_range(level, span)):
            t0, t1 = self._block_span(level, b)
            if t0 < t1 and span[0] <= t0 and t1 <= span[1]:
                found.append(b)
        return found

    def _complete(self, span: Span, levels: tuple[int, ...], ask: _Ask) -> bool:
        """Whether every block of `levels` that `span` covers is cached."""
        for w in levels:
            blocks = self._covered_blocks(w, span)
            if len(self._fetch(w, blocks, ask.params)) < len(blocks) * len(ask.params):
                return False
        return True


def split_span(span: Span, width: int, cadence: int | None) -> list[Span]:
    """`span` cut, at multiples of `width` (so no bin is split), into PARALLEL_READS parts
    when it holds more than SPLIT_SAMPLES samples at the cadence; else `[span]`."""
    a, z = span
    if not cadence or (z - a) // cadence <= SPLIT_SAMPLES:
        return [span]
    cuts = [(a + (z - a) * k // PARALLEL_READS) // width * width for k in range(1, PARALLEL_READS)]
    edges = [a, *(c for c in cuts if a < c < z), z]
    return [(x, y) for x, y in itertools.pairwise(edges) if x < y]


def _runs(indices: Sequence[int]) -> Iterator[tuple[int, int]]:
    """Runs of consecutive integers in increasing `indices`, as (first, last)."""
    for _, group in itertools.groupby(enumerate(indices), lambda pair: pair[1] - pair[0]):
        run = [i for _, i in group]
        yield run[0], run[-1]


def _chunks(span: Span, size: int) -> list[Span]:
    """`span` cut at multiples of `size`."""
    a, z = span
    if a >= z:
        return []
    return [
        (max(a, j * size), min(z, (j + 1) * size)) for j in range(a // size, (z - 1) // size + 1)
    ]
