"""Time-series reduction: fixed-width bins aligned to the epoch, and the resolution pyramid.

Bins. A width `w` (ns) cuts time into bins `[k*w, (k+1)*w)`, `k` counted from
1970-01-01T00:00Z (negative before it), so every request at one width reuses the same
bins. Per parameter, and per component of a vector, a bin keeps the count of valid
samples (neither the parameter's fill value, compared as a number, nor NaN), their sum,
minimum and maximum; the mean is sum / count. Counts, minima and maxima are exact; sums
are float64 added in block order, so a mean equals NumPy's to the last bit wherever
float64 adds the values exactly, and otherwise to rounding (~1e-15 of the values).
Integers are binned as float64 (exact up to 2**53).

Answers (`answer_block`). Every bin is a row, empty ones too, so a plot shows the gap;
time is the bin centre `k*w + w//2`. One statistic keeps the parameter's name; several
give `name_min`, `name_max`, `name_mean`, `name_count`. Count columns are `integer` with
no units and no fill; min, max and mean are doubles with the parameter's units, and
where a bin has no valid sample they hold the parameter's fill number (fill "NaN" and
NaN when the parameter has none).

The pyramid of cached levels built from these is in `outcrop.pyramid`.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import numpy as np

from outcrop.errors import BadQuery, ConfigError, SourceError
from outcrop.log import logger
from outcrop.model import STATISTICS, Bins, Block, Parameter, SeriesInfo, Statistic

Array = np.ndarray[Any, Any]
SECOND = 10**9
DAY = 86_400 * SECOND
MAX_WIDTH = 36_525 * DAY  # a century: bins stay far inside int64 nanoseconds
REDUCIBLE = frozenset({"double", "integer"})
log = logger(__name__)

# -- widths ---------------------------------------------------------------------------------

_SECONDS = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_NUM = r"\d+(?:[.,]\d+)?"
_DURATION = re.compile(
    rf"P(?:(?P<W>{_NUM})W|(?:(?P<D>{_NUM})D)?"
    rf"(?:T(?:(?P<H>{_NUM})H)?(?:(?P<M>{_NUM})M)?(?:(?P<S>{_NUM})S)?)?)"
)
_UNIT_SECONDS = {"W": 604_800, "D": 86_400, "H": 3_600, "M": 60, "S": 1}


def parse_width(text: str, parameter: str = "resolution") -> int:
    """A bin width in ns from seconds (`60`, `0.5`) or an ISO 8601 duration (`PT1M`,
    `PT0.5S`, `P1D`, `P1W`; ISO 8601-1:2019 §5.5.2, years and months excluded since
    their length varies). Raises `BadQuery` naming `parameter` otherwise."""
    clean = text.strip().upper()
    if _SECONDS.fullmatch(clean):
        seconds = Decimal(clean)
    else:
        seconds = _duration_seconds(clean, text, parameter)
    ns = int((seconds * SECOND).to_integral_value(ROUND_HALF_EVEN))
    if not 0 < ns <= MAX_WIDTH:
        raise BadQuery(
            f"{parameter} {text!r} is outside 1 ns to 36525 days; give a positive width",
            parameter=parameter,
        )
    return ns


def _duration_seconds(clean: str, text: str, parameter: str) -> Decimal:
    match = _DURATION.fullmatch(clean)
    if match is None or not any(match.groupdict().values()):
        date_part = clean.split("T", 1)[0]
        if clean.startswith("P") and ("Y" in date_part or "M" in date_part):
            raise BadQuery(
                f"{parameter} {text!r} uses years or months, which have no fixed length; "
                "give weeks, days, hours, minutes or seconds, e.g. P30D or PT1H",
                parameter=parameter,
            )
        raise BadQuery(
            f"{parameter} {text!r} is not a width; give seconds (60, 0.5) or an ISO 8601 "
            "duration (PT1M, PT0.5S, P1D, P1W)",
            parameter=parameter,
        )
    found = match.groupdict()
    return sum(
        (Decimal(v.replace(",", ".")) * _UNIT_SECONDS[unit] for unit, v in found.items() if v),
        Decimal(0),
    )


def parse_statistics(text: str, parameter: str = "statistics") -> tuple[Statistic, ...]:
    """Comma-separated statistics (`mean,min`), once each, in the order of STATISTICS."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in STATISTICS]
    if unknown or not names:
        raise BadQuery(
            f"{parameter} {text!r}: choose among {', '.join(STATISTICS)}", parameter=parameter
        )
    return tuple(s for s in STATISTICS if s in names)


# -- binning --------------------------------------------------------------------------------


def empty_bins(parameters: Sequence[Parameter], width: int, first: int, n: int) -> Bins:
    """`n` bins from bin `first` holding no samples."""
    shapes = {p.name: (n, *p.size) for p in parameters}
    return Bins(
        width,
        first,
        {k: np.zeros(s, np.int64) for k, s in shapes.items()},
        {k: np.zeros(s) for k, s in shapes.items()},
        {k: np.full(s, np.nan) for k, s in shapes.items()},
        {k: np.full(s, np.nan) for k, s in shapes.items()},
    )


def bin_samples(
    blocks: Iterable[Block], parameters: Sequence[Parameter], width: int, start: int, stop: int
) -> Bins:
    """Bins `start // width` to `(stop - 1) // width` of the samples with
    `start <= t < stop` in `blocks` (in time order; a bin may span several blocks)."""
    check_range(start, stop, width)
    fills = {p.name: fill_number(p) for p in parameters if reducible(p)}
    first = start // width
    out = empty_bins(parameters, width, first, (stop - 1) // width - first + 1)
    for block in blocks:
        t = np.asarray(block.time).astype("datetime64[ns]", copy=False).view(np.int64)
        i0, i1 = (int(i) for i in np.searchsorted(t, (start, stop)))
        if i0 == i1:
            continue
        index = t[i0:i1] // width - first
        heads = np.flatnonzero(np.concatenate(([True], index[1:] != index[:-1])))
        for name, fill in fills.items():
            _add(out, name, _column(block, name)[i0:i1], heads, index[heads], fill)
    return out


def fill_number(p: Parameter) -> float | int | None:
    """The parameter's fill value as a number (None when it has none)."""
    if p.fill is None or not p.fill.strip():
        return None
    try:
        return int(p.fill) if p.type == "integer" else float(p.fill)
    except ValueError:
        try:
            return float(p.fill)
        except ValueError:
            raise ConfigError(
                f"parameter {p.name}: fill {p.fill!r} is not a number", parameter="fill"
            ) from None


def reducible(p: Parameter) -> bool:
    if p.type not in REDUCIBLE:
        raise BadQuery(
            f"parameter {p.name} is of type {p.type}; only double and integer parameters "
            "can be reduced (ask without resolution, or leave it out)",
            parameter="parameters",
        )
    return True


def _column(block: Block, name: str) -> Array:
    try:
        return block.values[name]
    except KeyError:
        raise SourceError(f"the source returned no values for parameter {name}") from None


def _add(out: Bins, name: str, values: Array, heads: Array, keys: Array, fill: Any) -> None:
    """Merge one block's samples of one parameter into `out`; `heads` start the runs of
    samples sharing a bin, `keys` are those bins (increasing)."""
    bad = values == fill if fill is not None else np.zeros(values.shape, bool)
    if values.dtype.kind == "f":
        bad |= np.isnan(values)
    v = values.astype(np.float64, copy=False)
    if bad.any():
        count = np.add.reduceat(~bad, heads, axis=0, dtype=np.int64)
        total = np.add.reduceat(np.where(bad, 0.0, v), heads, axis=0)
        masked = np.where(bad, np.nan, v)
        low, high = np.fmin.reduceat(masked, heads, axis=0), np.fmax.reduceat(masked, heads, 0)
    else:
        runs = np.diff(np.append(heads, len(v)))
        count = np.broadcast_to(runs.reshape(-1, *([1] * (v.ndim - 1))), (len(heads), *v.shape[1:]))
        total = np.add.reduceat(v, heads, axis=0)
        low, high = np.minimum.reduceat(v, heads, axis=0), np.maximum.reduceat(v, heads, 0)
    # Keys are increasing and, where data has no gap, consecutive: a slice is then cheaper.
    at: Any = slice(keys[0], keys[-1] + 1) if keys[-1] - keys[0] + 1 == len(keys) else keys
    out.count[name][at] += count
    out.total[name][at] += total
    out.low[name][at] = np.fmin(out.low[name][at], low)
    out.high[name][at] = np.fmax(out.high[name][at], high)


def coarsen(bins: Bins, width: int) -> Bins:
    """The same samples in bins of `width`, a multiple of `bins.width`; the first and last
    bins take whatever part of their span `bins` covers."""
    factor, rest = divmod(width, bins.width)
    if rest or factor < 1:
        raise ValueError(f"width {width} is not a multiple of {bins.width}")
    if factor == 1:
        return bins
    first = bins.first // factor
    lead = bins.first - first * factor
    n = -(-(lead + len(bins)) // factor)
    # Whole coarse bins are folded in place; others first copied into whole ones.
    aligned = lead == 0 and len(bins) == n * factor
    full = bins if aligned else _place([bins], bins.width, first * factor, n * factor)

    def fold(a: Array, op: np.ufunc) -> Array:
        return op.reduce(a.reshape(n, factor, *a.shape[1:]), axis=1)  # type: ignore[no-any-return]

    return Bins(
        width,
        first,
        {k: fold(a, np.add) for k, a in full.count.items()},
        {k: fold(a, np.add) for k, a in full.total.items()},
        {k: fold(a, np.fmin) for k, a in full.low.items()},
        {k: fold(a, np.fmax) for k, a in full.high.items()},
    )


def concat(parts: Sequence[Bins]) -> Bins:
    """One run of bins from parts of one width and parameters, in any order; bins between
    parts are empty. Parts must not overlap."""
    ordered = sorted(parts, key=lambda b: b.first)
    for a, b in itertools.pairwise(ordered):
        if a.width != b.width or a.first + len(a) > b.first:
            raise ValueError("bins to concatenate overlap or differ in width")
    first = ordered[0].first
    return _place(ordered, ordered[0].width, first, ordered[-1].first + len(ordered[-1]) - first)


def clip(bins: Bins, first: int, last: int) -> Bins:
    """Bins `first` to `last` (inclusive); bins outside `bins` are empty."""
    lo = first - bins.first
    if lo >= 0 and last < bins.first + len(bins):
        cut = slice(lo, last - bins.first + 1)
        return Bins(bins.width, first, *({k: a[cut] for k, a in f.items()} for f in _fields(bins)))
    return _place([bins], bins.width, first, last - first + 1)


def _fields(bins: Bins) -> tuple[dict[str, Array], ...]:
    return bins.count, bins.total, bins.low, bins.high


def _place(parts: Sequence[Bins], width: int, first: int, n: int) -> Bins:
    """Bins `first … first+n-1`, copied from `parts` where they have them."""
    like = parts[0]
    out = Bins(
        width,
        first,
        {k: np.zeros((n, *a.shape[1:]), np.int64) for k, a in like.count.items()},
        {k: np.zeros((n, *a.shape[1:])) for k, a in like.total.items()},
        {k: np.full((n, *a.shape[1:]), np.nan) for k, a in like.low.items()},
        {k: np.full((n, *a.shape[1:]), np.nan) for k, a in like.high.items()},
    )
    for part in parts:
        lo, hi = max(part.first, first), min(part.first + len(part), first + n)
        if lo < hi:
            for target, source in zip(_fields(out), _fields(part), strict=True):
                for k, a in target.items():
                    a[lo - first : hi - first] = source[k][lo - part.first : hi - part.first]
    return out


def join(parts: Iterable[Bins]) -> Bins:
    """Bins of several parameters from bins of the same span holding some each."""
    merged: tuple[dict[str, Array], ...] = ({}, {}, {}, {})
    width = first = 0
    for part in parts:
        width, first = part.width, part.first
        for target, source in zip(merged, _fields(part), strict=True):
            target.update(source)
    return Bins(width, first, *merged)


def pick(bins: Bins, name: str) -> Bins:
    """The bins of one parameter."""
    return Bins(bins.width, bins.first, *({name: f[name]} for f in _fields(bins)))


# -- answers --------------------------------------------------------------------------------


def answer_block(
    bins: Bins, parameters: Sequence[Parameter], statistics: Sequence[Statistic]
) -> tuple[tuple[Parameter, ...], Block]:
    """The plot-ready table of `bins`: one row per bin (see the module doc)."""
    index = bins.first + np.arange(len(bins), dtype=np.int64)
    time = (index * bins.width + bins.width // 2).view("datetime64[ns]")
    columns: list[Parameter] = []
    values: dict[str, Array] = {}
    for p in parameters:
        for stat in statistics:
            name = p.name if len(statistics) == 1 else f"{p.name}_{stat}"
            column, data = _statistic(bins, p, stat, name)
            columns.append(column)
            values[name] = data
    return tuple(columns), Block(time, values)


def _statistic(bins: Bins, p: Parameter, stat: Statistic, name: str) -> tuple[Parameter, Array]:
    count = np.asarray(bins.count[p.name], np.int64)
    if stat == "count":
        return Parameter(name, "integer", None, None, p.size, f"count of {p.name}"), count
    number = fill_number(p)
    fill, text = (np.nan, "NaN") if number is None else (float(number), str(p.fill))
    if stat == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):
            raw = bins.total[p.name] / count
    else:
        raw = (bins.low if stat == "min" else bins.high)[p.name]
    data = np.where(count > 0, raw, fill)
    description = p.description if name == p.name else f"{stat} of {p.name}"
    return Parameter(name, "double", p.units, text, p.size, description), data


# -- levels ---------------------------------------------------------------------------------

# Nice widths, each a multiple of the one before, about 4x apart above a second (10x
# below): 1 s, 5 s, 20 s, 1 min, 5 min, 20 min, 1 h, 4 h, 1 d, 4 d, 16 d, 64 d, 256 d.
NICE_WIDTHS: tuple[int, ...] = (
    *(10**e for e in range(3, 9)),
    *(s * SECOND for s in (1, 5, 20, 60, 300, 1_200, 3_600, 14_400)),
    *(d * DAY for d in (1, 4, 16, 64, 256)),
)
SAMPLES_PER_BUILT_BIN = 10  # levels built in bulk hold >= 10 samples a bin (4 numbers)
FINEST_MAX_BINS = 1 << 21  # a bulk-built level's size bound: 2 M bins (64 MB per parameter)
COARSEST_MIN_BINS = 1_000  # the coarsest level still has ~1000 bins over the whole range


def auto_levels(info: SeriesInfo) -> tuple[int, ...]:
    """Levels for a series that declares none.

    The finest is the first nice width not below the cadence (1 s when unknown): a zoom
    to an hour of 1 s data is then answered from the store, not by running the reader
    again. Such fine levels cost about as much as the raw data, so they are built only
    for the short spans requests ask for (`bulk_floor`): the background and a default
    `warm` build the levels from the first one holding at least 10 samples a bin (and at
    most 2 M bins over the range). Levels go up ~4x at a time: a request then reads at
    most ~4x the bins it returns (2,000 bins: a few blocks) and the levels together cost
    1.33x the finest. The coarsest is the last nice width with ~1,000 bins over the range.
    """
    span = max(info.stop - info.start, 1)
    finest = next((w for w in NICE_WIDTHS if w >= (info.cadence or SECOND)), NICE_WIDTHS[-1])
    top = max(span // COARSEST_MIN_BINS, finest)
    return tuple(w for w in NICE_WIDTHS if finest <= w <= top)


def bulk_floor(info: SeriesInfo) -> int:
    """The finest width built over long spans (background, `warm` by default): at least
    10 samples a bin at the cadence, at most 2 M bins over the valid range."""
    span = max(info.stop - info.start, 1)
    return max(SAMPLES_PER_BUILT_BIN * (info.cadence or SECOND), span // FINEST_MAX_BINS)


def check_levels(levels: Iterable[int]) -> tuple[int, ...]:
    """The levels in increasing order; each must be a multiple of the one before."""
    ordered = tuple(sorted(set(levels)))
    if any(w <= 0 or w > MAX_WIDTH for w in ordered) or any(
        b % a for a, b in itertools.pairwise(ordered)
    ):
        shown = ", ".join(str(w / SECOND) for w in ordered)
        raise ConfigError(
            f"cache levels ({shown} s) must be positive and each a multiple of the one "
            "before, e.g. 60, 300, 3600",
            parameter="levels",
        )
    return ordered


def effective_width(levels: Sequence[int], width: int) -> tuple[int | None, int]:
    """The level to answer `width` from (the coarsest not above it; None when every level
    is coarser: bin raw samples) and the width answered: the largest multiple of the level
    not above `width`, never coarser than asked."""
    level = max((w for w in levels if w <= width), default=None)
    return (None, width) if level is None else (level, width // level * level)


def check_range(start: int, stop: int, width: int) -> None:
    if stop <= start:
        raise BadQuery(f"start ({start} ns) must be before stop ({stop} ns)", parameter="start")
    if not 0 < width <= MAX_WIDTH:
        raise BadQuery(
            f"bin width {width} ns must be from 1 ns to 36525 days", parameter="resolution"
        )
