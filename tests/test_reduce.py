"""Reduction to epoch-aligned bins and the multi-resolution pyramid, against a per-bin NumPy
reference computed straight from generated samples."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from outcrop.cache import ByteLRU, DiskStore
from outcrop.errors import BadQuery, ConfigError
from outcrop.model import Bins, Block, Parameter, SeriesInfo
from outcrop.pyramid import BuildTask, Pyramid, decode_block, encode_block
from outcrop.reduce import (
    answer_block,
    auto_levels,
    bin_samples,
    bulk_floor,
    check_levels,
    clip,
    coarsen,
    concat,
    effective_width,
    parse_statistics,
    parse_width,
)

S = 10**9
FILL = -1e31
PARAMS = (
    Parameter("b", "double", "nT", "-1e31"),
    Parameter("n", "integer", "counts", "-1"),
    Parameter("v", "double", "km/s", None, (3,)),
)
LEVELS = (10 * S, 60 * S, 300 * S)


class ArraySeries:
    """A time series held in arrays (test data), read in blocks of uneven sizes; it records
    every read so tests can tell what a request cost."""

    def __init__(
        self, time: np.ndarray, values: dict[str, np.ndarray], start: int, stop: int
    ) -> None:
        self.time, self.values, self.start, self.stop = time, values, start, stop
        self.reads: list[tuple[int, int, tuple[str, ...]]] = []
        self.extras_seen: list[Mapping[str, str] | None] = []

    def info(self) -> SeriesInfo:
        return SeriesInfo((*PARAMS, Parameter("label", "string")), self.start, self.stop, None)

    def read(
        self,
        start: int,
        stop: int,
        parameters: Sequence[str],
        width: int | None = None,
        extras: Mapping[str, str] | None = None,
    ) -> Iterator[Block]:
        assert self.start <= start < stop <= self.stop, "read outside the valid range"
        self.reads.append((start, stop, tuple(parameters)))
        self.extras_seen.append(extras)
        i0, i1 = np.searchsorted(self.time, (start, stop))
        cuts = list(range(i0, i1, 37)) + list(range(i0 + 5, i1, 37)) + [i1]
        edges = sorted(set(cuts))
        for a, z in itertools.pairwise(edges):
            yield Block(
                self.time[a:z].view("datetime64[ns]"),
                {p: self.values[p][a:z] for p in parameters},
            )


def make_series(seed: int = 1, scale: float = 1.0) -> ArraySeries:
    """Irregular samples from 1969-12-31T23:26:40 to 1970-01-01T01:06:40 (-2000 s … 4000 s),
    mostly on whole seconds (so on bin edges), some between; a gap 500 s … 900 s; fills,
    NaN, an integer and a vector parameter. Values are multiples of 1/4, so sums are exact
    and means match NumPy to the bit."""
    rng = np.random.default_rng(seed)
    steps = rng.integers(1, 4, 3000) * S
    steps[::7] += rng.integers(0, S, len(steps[::7]))
    time = -2000 * S + np.cumsum(steps) - steps[0]
    time = time[(time < 4000 * S) & ((time < 500 * S) | (time >= 900 * S))]
    n = len(time)
    b = rng.integers(-4000, 4000, n) / 4 * scale
    b[rng.random(n) < 0.05] = FILL
    b[rng.random(n) < 0.05] = np.nan
    counts = rng.integers(0, 100, n)
    counts[rng.random(n) < 0.1] = -1
    v = rng.integers(-400, 400, (n, 3)) / 4 * scale
    v[rng.random((n, 3)) < 0.08] = np.nan
    values = {"b": b, "n": counts, "v": v, "label": np.array(["x"] * n)}
    return ArraySeries(time, values, -2000 * S, 4000 * S)


def reference(series: ArraySeries, width: int, lo: int, hi: int) -> dict[str, dict[str, Any]]:
    """Per bin and component, with a boolean mask: the obvious way."""
    first, last = lo // width, (hi - 1) // width
    out: dict[str, dict[str, Any]] = {}
    for p in PARAMS:
        values = series.values[p.name].reshape(len(series.time), -1).astype(float)
        fill = float(p.fill) if p.fill is not None else np.nan
        rows: dict[str, list[list[float]]] = {"count": [], "min": [], "max": [], "mean": []}
        for k in range(first, last + 1):
            a, z = max(k * width, lo), min((k + 1) * width, hi)
            inside = (series.time >= a) & (series.time < z)
            cells: dict[str, list[float]] = {s: [] for s in rows}
            for j in range(values.shape[1]):
                x = values[inside, j]
                x = x[~np.isnan(x) & (x != fill)]
                cells["count"].append(len(x))
                cells["min"].append(x.min() if len(x) else np.nan)
                cells["max"].append(x.max() if len(x) else np.nan)
                cells["mean"].append(x.sum() / len(x) if len(x) else np.nan)
            for s in rows:
                rows[s].append(cells[s])
        out[p.name] = {s: np.array(r).reshape(last - first + 1, *p.size) for s, r in rows.items()}
        out[p.name]["first"] = first
    return out


def assert_matches(bins: Bins, expected: dict[str, dict[str, Any]]) -> None:
    for name, ref in expected.items():
        assert bins.first == ref["first"], name
        np.testing.assert_array_equal(bins.count[name], ref["count"], err_msg=name)
        np.testing.assert_array_equal(bins.low[name], ref["min"], err_msg=name)
        np.testing.assert_array_equal(bins.high[name], ref["max"], err_msg=name)
        with np.errstate(invalid="ignore"):
            mean = bins.total[name] / bins.count[name]
        np.testing.assert_array_equal(mean, ref["mean"], err_msg=name)


@pytest.fixture
def series() -> ArraySeries:
    return make_series()


# -- bin_samples ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "width", [S, 2 * S, 7 * S, 10 * S, 60 * S, 61 * S + 1, 3600 * S, 86_400 * S]
)
@pytest.mark.parametrize(
    ("start", "stop"),
    [(-2000 * S, 4000 * S), (-1234 * S - 5, 2345 * S + 7), (-60 * S, 60 * S), (600 * S, 800 * S)],
)
def test_every_statistic_matches_numpy_per_bin(
    series: ArraySeries, width: int, start: int, stop: int
) -> None:
    bins = bin_samples(series.read(start, stop, ["b", "n", "v"]), PARAMS, width, start, stop)
    assert bins.width == width
    assert len(bins) == (stop - 1) // width - start // width + 1
    assert_matches(bins, reference(series, width, start, stop))


def test_means_of_arbitrary_floats_agree_with_numpy_to_rounding() -> None:
    series = make_series(seed=3, scale=np.pi)
    width, start, stop = 97 * S, -2000 * S, 4000 * S
    bins = bin_samples(series.read(start, stop, ["b", "n", "v"]), PARAMS, width, start, stop)
    ref = reference(series, width, start, stop)
    for name in ("b", "v"):
        with np.errstate(invalid="ignore"):
            mean = bins.total[name] / bins.count[name]
        np.testing.assert_allclose(mean, ref[name]["mean"], rtol=1e-13, atol=1e-12)


def test_samples_on_a_bin_edge_belong_to_the_bin_they_start_and_stop_is_exclusive() -> None:
    time = np.array([-10, 0, 10, 19, 20], dtype=np.int64) * S
    block = Block(time.view("datetime64[ns]"), {"x": np.array([1.0, 2.0, 3.0, 4.0, 5.0])})
    bins = bin_samples([block], [Parameter("x")], 10 * S, -10 * S, 20 * S)
    assert bins.first == -1
    assert bins.count["x"].tolist() == [1, 1, 2]  # 20 s is at stop: not counted
    assert bins.high["x"].tolist() == [1.0, 2.0, 4.0]


def test_a_bin_spread_over_many_blocks_equals_the_bin_read_at_once(series: ArraySeries) -> None:
    start, stop = -2000 * S, 4000 * S
    whole = Block(
        series.time.view("datetime64[ns]"), {p.name: series.values[p.name] for p in PARAMS}
    )
    singles = (
        Block(whole.time[i : i + 1], {k: v[i : i + 1] for k, v in whole.values.items()})
        for i in range(len(whole))
    )
    at_once = bin_samples([whole], PARAMS, 300 * S, start, stop)
    one_by_one = bin_samples(singles, PARAMS, 300 * S, start, stop)
    for name in ("b", "n", "v"):
        for field in ("count", "total", "low", "high"):
            np.testing.assert_array_equal(
                getattr(at_once, field)[name], getattr(one_by_one, field)[name]
            )


def test_bins_without_valid_samples_count_zero_and_hold_nan(series: ArraySeries) -> None:
    bins = bin_samples(series.read(480 * S, 920 * S, ["b"]), PARAMS[:1], 20 * S, 480 * S, 920 * S)
    in_gap = slice(1, 21)  # 500 s … 900 s
    assert not bins.count["b"][in_gap].any()
    assert np.isnan(bins.low["b"][in_gap]).all() and np.isnan(bins.high["b"][in_gap]).all()
    assert bins.count["b"][0] > 0


def test_only_numeric_parameters_reduce(series: ArraySeries) -> None:
    with pytest.raises(BadQuery) as caught:
        bin_samples(series.read(0, S, ["label"]), [Parameter("label", "string")], S, 0, S)
    assert caught.value.parameter == "parameters"
    assert "label" in str(caught.value)


def test_an_unreadable_fill_value_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError):
        bin_samples([], [Parameter("x", fill="missing")], S, 0, S)


# -- coarsen, concat, clip ------------------------------------------------------------------


@pytest.mark.parametrize(("fine", "coarse"), [(10 * S, 60 * S), (10 * S, 10 * S), (S, 300 * S)])
def test_coarsened_parts_equal_direct_binning(series: ArraySeries, fine: int, coarse: int) -> None:
    start, middle, stop = -1995 * S, 1000 * S, 3999 * S
    parts = [
        bin_samples(series.read(start, middle, ["b", "n", "v"]), PARAMS, fine, start, middle),
        bin_samples(series.read(middle, stop, ["b", "n", "v"]), PARAMS, fine, middle, stop),
    ]
    assert_matches(coarsen(concat(parts[::-1]), coarse), reference(series, coarse, start, stop))


def test_coarsen_needs_a_multiple_of_the_width(series: ArraySeries) -> None:
    bins = bin_samples(series.read(0, 60 * S, ["b"]), PARAMS[:1], 10 * S, 0, 60 * S)
    with pytest.raises(ValueError):
        coarsen(bins, 15 * S)


def test_concat_leaves_gaps_between_parts_empty_and_rejects_overlaps(series: ArraySeries) -> None:
    a = bin_samples(series.read(0, 100 * S, ["b"]), PARAMS[:1], 10 * S, 0, 100 * S)
    b = bin_samples(series.read(200 * S, 300 * S, ["b"]), PARAMS[:1], 10 * S, 200 * S, 300 * S)
    joined = concat([a, b])
    assert (joined.first, len(joined)) == (0, 30)
    assert not joined.count["b"][10:20].any()
    np.testing.assert_array_equal(joined.count["b"][20:], b.count["b"])
    with pytest.raises(ValueError):
        concat([a, clip(a, 5, 12)])


def test_clip_selects_bins_and_pads_outside_with_empty_ones(series: ArraySeries) -> None:
    bins = bin_samples(series.read(0, 100 * S, ["b"]), PARAMS[:1], 10 * S, 0, 100 * S)
    inner = clip(bins, 2, 4)
    np.testing.assert_array_equal(inner.count["b"], bins.count["b"][2:5])
    wider = clip(bins, -3, 12)
    assert (wider.first, len(wider)) == (-3, 16)
    assert not wider.count["b"][:3].any() and not wider.count["b"][13:].any()
    assert np.isnan(wider.low["b"][:3]).all()
    np.testing.assert_array_equal(wider.count["b"][3:13], bins.count["b"])
    tail = clip(bins, 5, 10)  # one bin past the end
    assert len(tail) == 6 and tail.count["b"][5] == 0
    np.testing.assert_array_equal(tail.count["b"][:5], bins.count["b"][5:])


# -- answers --------------------------------------------------------------------------------


def test_answer_table_has_a_row_per_bin_at_its_centre_and_fills_empty_bins(
    series: ArraySeries,
) -> None:
    width = 100 * S
    bins = bin_samples(series.read(0, 1000 * S, ["b", "n", "v"]), PARAMS, width, 0, 1000 * S)
    columns, block = answer_block(bins, PARAMS, ("min", "mean", "count"))
    names = [c.name for c in columns]
    assert names == [f"{p}_{s}" for p in "bnv" for s in ("min", "mean", "count")]
    assert block.time.dtype == np.dtype("datetime64[ns]")
    assert block.time.view(np.int64).tolist() == [k * width + width // 2 for k in range(10)]
    by_name = {c.name: c for c in columns}
    assert (by_name["b_mean"].type, by_name["b_mean"].units, by_name["b_mean"].fill) == (
        "double",
        "nT",
        "-1e31",
    )
    assert by_name["v_min"].fill == "NaN" and by_name["v_min"].size == (3,)
    assert by_name["n_count"].type == "integer" and by_name["n_count"].fill is None
    assert by_name["n_count"].units is None
    ref = reference(series, width, 0, 1000 * S)
    gap = ref["b"]["count"] == 0  # 500 s … 900 s
    assert gap.sum() == 4
    assert (block.values["b_min"][gap] == FILL).all()
    assert (block.values["n_mean"][gap] == -1.0).all()
    assert np.isnan(block.values["v_mean"][ref["v"]["count"] == 0]).all()
    np.testing.assert_array_equal(block.values["b_min"][~gap], ref["b"]["min"][~gap])
    np.testing.assert_array_equal(block.values["v_count"], ref["v"]["count"])


def test_one_statistic_keeps_the_parameter_names(series: ArraySeries) -> None:
    bins = bin_samples(
        series.read(0, 100 * S, ["b", "v"]), (PARAMS[0], PARAMS[2]), S * 10, 0, 100 * S
    )
    columns, block = answer_block(bins, (PARAMS[0], PARAMS[2]), ("max",))
    assert [c.name for c in columns] == ["b", "v"]
    assert block.values["v"].shape == (10, 3)


# -- widths and levels ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("60", 60 * S),
        ("0.5", S // 2),
        (" 1.25 ", 1_250_000_000),
        (".001", 1_000_000),
        ("PT1M", 60 * S),
        ("PT0.5S", S // 2),
        ("pt1h30m", 5400 * S),
        ("P1D", 86_400 * S),
        ("P1DT12H", 129_600 * S),
        ("P1W", 604_800 * S),
        ("PT0,25S", S // 4),
        ("0.0000000015", 2),  # to the nearest nanosecond
    ],
)
def test_parse_width_reads_seconds_and_iso_durations(text: str, ns: int) -> None:
    assert parse_width(text) == ns


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("P1M", "months"),
        ("P1Y", "months"),
        ("P1Y2DT1H", "months"),
        ("0", "positive"),
        ("0.0000000001", "positive"),
        ("-60", "seconds"),
        ("1e3", "seconds"),
        ("P", "seconds"),
        ("PT", "seconds"),
        ("P1H", "seconds"),
        ("sixty", "seconds"),
        ("", "seconds"),
        ("P100000D", "positive"),
    ],
)
def test_parse_width_rejects_what_is_not_a_fixed_positive_width(text: str, says: str) -> None:
    with pytest.raises(BadQuery) as caught:
        parse_width(text, parameter="resolution")
    assert caught.value.parameter == "resolution"
    assert says in str(caught.value) and "resolution" in str(caught.value)


def test_parse_statistics_keeps_the_standard_order_and_rejects_unknown() -> None:
    assert parse_statistics("mean, min,MIN") == ("min", "mean")
    with pytest.raises(BadQuery) as caught:
        parse_statistics("median")
    assert "min, max, mean, count" in str(caught.value)


@pytest.mark.parametrize(
    ("width", "expected"),
    [
        (5 * S, (None, 5 * S)),
        (10 * S, (10 * S, 10 * S)),
        (59 * S, (10 * S, 50 * S)),
        (60 * S, (60 * S, 60 * S)),
        (299 * S, (60 * S, 240 * S)),
        (1000 * S, (300 * S, 900 * S)),
    ],
)
def test_effective_width_is_the_coarsest_level_not_above_and_never_coarser_than_asked(
    width: int, expected: tuple[int | None, int]
) -> None:
    assert effective_width(LEVELS, width) == expected


def test_auto_levels_for_a_year_of_one_second_data() -> None:
    year = 365 * 86_400 * S
    info = SeriesInfo(PARAMS, 0, year, cadence=S)
    levels = auto_levels(info)
    assert levels[0] == S  # the cadence: zooms to an hour come from the store
    assert bulk_floor(info) == year // 2**21  # ≥ 10 samples a bin, ≤ 2 M bins
    assert next(w for w in levels if w >= bulk_floor(info)) == 20 * S
    assert all(b % a == 0 and 3 <= b // a <= 6 for a, b in itertools.pairwise(levels))
    assert levels[-1] <= year // 1000 < levels[-1] * 6
    assert all(w % S == 0 for w in levels)
    hourly = SeriesInfo(PARAMS, 0, 10 * year, cadence=3600 * S)
    assert auto_levels(hourly)[0] == 3600 * S
    assert bulk_floor(hourly) == 36_000 * S
    assert auto_levels(SeriesInfo(PARAMS, 0, 3600 * S)) == (S,)  # unknown cadence: 1 s


def test_declared_levels_must_each_divide_the_next() -> None:
    assert check_levels([300 * S, 10 * S, 60 * S]) == LEVELS
    with pytest.raises(ConfigError) as caught:
        check_levels([60 * S, 90 * S])
    assert caught.value.parameter == "levels"


def test_blocks_round_trip_through_bytes_and_garbage_is_refused(series: ArraySeries) -> None:
    bins = bin_samples(series.read(0, 1000 * S, ["b", "n", "v"]), PARAMS, 10 * S, 0, 1000 * S)
    for name in ("b", "v"):
        back = decode_block(encode_block(bins, name), name)
        assert back is not None and (back.first, back.width) == (0, 10 * S)
        for field in ("count", "total", "low", "high"):
            np.testing.assert_array_equal(getattr(back, field)[name], getattr(bins, field)[name])
    empty = clip(bins, 55, 85)  # the gap: no sample at all
    data = encode_block(empty, "v")
    assert len(data) < 64
    back = decode_block(data, "v")
    assert back is not None and back.count["v"].shape == (31, 3) and not back.count["v"].any()
    assert decode_block(b"junk", "b") is None
    assert decode_block(b"OCB0" + encode_block(bins, "b")[4:], "b") is None  # other format
    assert decode_block(encode_block(bins, "b")[:-8], "b") is None


# -- the pyramid ----------------------------------------------------------------------------


def make_pyramid(
    series: ArraySeries,
    store: Any = None,
    key: str = "demo@1",
    background: Callable[[Callable[[], None]], object] | None = None,
    eager_blocks: int = 64,
) -> Pyramid:
    store = ByteLRU(2**30) if store is None else store
    return Pyramid(key, series, store, LEVELS, 8, background, eager_blocks=eager_blocks)


def whole_bins_reference(series: ArraySeries, width: int, start: int, stop: int) -> dict:
    """Whole aligned bins over [start, stop): the pyramid's rule."""
    return reference(series, width, start // width * width, ((stop - 1) // width + 1) * width)


@pytest.mark.parametrize("width", [10 * S, 60 * S, 120 * S, 300 * S, 1500 * S, 59 * S, 7 * S])
def test_pyramid_answers_exactly_cold_and_warm_and_warm_reads_nothing(
    series: ArraySeries, width: int
) -> None:
    pyramid = make_pyramid(series)
    start, stop = -1777 * S, 3333 * S
    answered = effective_width(LEVELS, width)[1]
    cold = pyramid.reduce(start, stop, PARAMS, width)
    assert cold.width == answered
    expected = whole_bins_reference(series, answered, start, stop)
    assert_matches(cold, expected)
    reads = len(series.reads)
    assert reads > 0
    warm = pyramid.reduce(start, stop, PARAMS, width)
    assert_matches(warm, expected)
    if width >= LEVELS[0]:
        assert len(series.reads) == reads  # no series data read the second time


def test_a_request_finer_than_every_level_bins_raw_samples(series: ArraySeries) -> None:
    pyramid = make_pyramid(series)
    bins = pyramid.reduce(100 * S, 400 * S, PARAMS, 3 * S)
    assert bins.width == 3 * S
    assert_matches(bins, whole_bins_reference(series, 3 * S, 100 * S, 400 * S))
    assert series.reads == [(99 * S, 402 * S, ("b", "n", "v"))]


def test_partial_hit_reads_only_the_missing_blocks(series: ArraySeries) -> None:
    pyramid = make_pyramid(series)  # level 10 s: blocks of 8 bins, 80 s
    pyramid.reduce(0, 800 * S, PARAMS, 10 * S)
    assert series.reads == [(0, 800 * S, ("b", "n", "v"))]
    bins = pyramid.reduce(-400 * S, 1200 * S, PARAMS, 10 * S)
    assert series.reads[1:] == [
        (-400 * S, 0, ("b", "n", "v")),
        (800 * S, 1200 * S, ("b", "n", "v")),
    ]
    assert_matches(bins, whole_bins_reference(series, 10 * S, -400 * S, 1200 * S))


def test_a_short_request_stores_no_coarser_block_it_did_not_read_whole(
    series: ArraySeries,
) -> None:
    pyramid = make_pyramid(series)
    pyramid.reduce(0, 160 * S, PARAMS, 10 * S)  # 2 blocks of 10 s; 60 s block 0 is 480 s
    assert [cached for cached, _ in pyramid.coverage().values()] == [2 * 3, 0, 0]
    for width in (60 * S, 300 * S):
        bins = pyramid.reduce(-2000 * S, 4000 * S, PARAMS, width)
        assert_matches(bins, whole_bins_reference(series, width, -2000 * S, 4000 * S))


def test_a_parameter_not_yet_cached_is_read_alone(series: ArraySeries) -> None:
    pyramid = make_pyramid(series)
    pyramid.reduce(0, 800 * S, PARAMS[:1], 60 * S)
    bins = pyramid.reduce(0, 800 * S, PARAMS, 60 * S)
    assert [names for *_, names in series.reads] == [("b",), ("n", "v")]
    assert_matches(bins, whole_bins_reference(series, 60 * S, 0, 800 * S))


def test_a_short_run_builds_every_level_from_the_same_read(series: ArraySeries) -> None:
    pyramid = make_pyramid(series, eager_blocks=75)  # 75 blocks of 10 s level: 6000 s
    pyramid.reduce(-2000 * S, 4000 * S, PARAMS, 60 * S)
    assert all(cached == total for cached, total in pyramid.coverage().values())
    reads = len(series.reads)
    for width in (10 * S, 60 * S):
        bins = pyramid.reduce(-2000 * S, 4000 * S, PARAMS, width)
        assert_matches(bins, whole_bins_reference(series, width, -2000 * S, 4000 * S))
    assert len(series.reads) == reads


def test_coarser_levels_are_derived_from_cached_finer_blocks(series: ArraySeries) -> None:
    pyramid = make_pyramid(series)
    pyramid.warm(-2000 * S, 4000 * S, levels=[10 * S])
    # chunks of 240 blocks of 80 s (whole 300 s-level blocks), aligned: one cut, at 0
    assert [r[:2] for r in series.reads] == [(-2000 * S, 0), (0, 4000 * S)]
    reads = len(series.reads)
    bins = pyramid.reduce(-1000 * S, 1000 * S, PARAMS, 300 * S)
    assert len(series.reads) == reads
    assert_matches(bins, whole_bins_reference(series, 300 * S, -1000 * S, 1000 * S))


def test_a_new_version_never_sees_the_old_blocks(series: ArraySeries) -> None:
    store = ByteLRU(2**30)
    old = make_pyramid(series, store, key="demo@1")
    old.reduce(-2000 * S, 4000 * S, PARAMS, 60 * S)
    changed = make_series(seed=2)
    answer = make_pyramid(changed, store, key="demo@2").reduce(-2000 * S, 4000 * S, PARAMS, 60 * S)
    assert changed.reads
    assert_matches(answer, whole_bins_reference(changed, 60 * S, -2000 * S, 4000 * S))
    again = make_pyramid(series, store, key="demo@1").reduce(-2000 * S, 4000 * S, PARAMS, 60 * S)
    assert_matches(again, whole_bins_reference(series, 60 * S, -2000 * S, 4000 * S))


def test_a_tiny_disk_store_evicts_yet_answers_stay_exact(
    tmp_path: Path, series: ArraySeries
) -> None:
    with DiskStore(tmp_path / "tiny", 200_000) as store:
        pyramid = make_pyramid(series, store)
        for width, (start, stop) in [
            (10 * S, (-2000 * S, 4000 * S)),
            (60 * S, (-500 * S, 1500 * S)),
            (10 * S, (-2000 * S, 4000 * S)),
        ]:
            bins = pyramid.reduce(start, stop, PARAMS, width)
            assert_matches(bins, whole_bins_reference(series, width, start, stop))
        assert store.stats()["bytes"] <= 400_000  # culled towards the limit, not growing


def test_blocks_persist_on_disk_for_another_pyramid(tmp_path: Path, series: ArraySeries) -> None:
    with DiskStore(tmp_path / "cache", 2**30) as store:
        make_pyramid(series, store).reduce(-2000 * S, 4000 * S, PARAMS, 60 * S)
    reads = len(series.reads)
    with DiskStore(tmp_path / "cache", 2**30) as store:
        bins = make_pyramid(series, store).reduce(-1000 * S, 2000 * S, PARAMS, 120 * S)
    assert len(series.reads) == reads
    assert_matches(bins, whole_bins_reference(series, 120 * S, -1000 * S, 2000 * S))


def test_a_long_run_answers_at_the_asked_level_and_hands_finer_ones_to_the_background(
    series: ArraySeries,
) -> None:
    work: list[Callable[[], None]] = []
    pyramid = make_pyramid(series, background=work.append, eager_blocks=2)
    bins = pyramid.reduce(-2000 * S, 4000 * S, PARAMS, 300 * S)
    assert_matches(bins, whole_bins_reference(series, 300 * S, -2000 * S, 4000 * S))
    assert len(series.reads) == 1 and len(work) == 1
    task = work[0]
    assert isinstance(task, BuildTask)
    assert (task.start, task.stop, task.levels) == (-2000 * S, 4000 * S, (10 * S, 60 * S))
    assert task.parameters == ("b", "n", "v")
    task()
    reads = len(series.reads)
    for width in (10 * S, 60 * S):
        bins = pyramid.reduce(-2000 * S, 4000 * S, PARAMS, width)
        assert_matches(bins, whole_bins_reference(series, width, -2000 * S, 4000 * S))
    assert len(series.reads) == reads
    assert not work[1:]  # the background's own build hands nothing on


def test_extras_reach_the_series_and_the_background_task(series: ArraySeries) -> None:
    work: list[Callable[[], None]] = []
    pyramid = make_pyramid(series, background=work.append, eager_blocks=2)
    pyramid.reduce(-2000 * S, 4000 * S, PARAMS, 300 * S, {"mode": "burst"})
    work[0]()
    assert series.extras_seen and all(e == {"mode": "burst"} for e in series.extras_seen)


def test_warm_builds_every_level_with_progress_then_requests_read_nothing(
    series: ArraySeries,
) -> None:
    pyramid = make_pyramid(series, eager_blocks=1)
    seen: list[tuple[int, int]] = []
    pyramid.warm(-2000 * S, 4000 * S, progress=lambda done, total: seen.append((done, total)))
    assert seen[0][0] == 0 and seen[-1][0] == seen[-1][1] > 1
    assert [d for d, _ in seen] == list(range(len(seen)))
    reads = len(series.reads)
    coverage = pyramid.coverage()
    assert all(cached == total > 0 for cached, total in coverage.values())
    for width in LEVELS:
        bins = pyramid.reduce(-1999 * S, 3999 * S, PARAMS, width)
        assert_matches(bins, whole_bins_reference(series, width, -1999 * S, 3999 * S))
    assert len(series.reads) == reads
    pyramid.warm(-2000 * S, 4000 * S)  # already warm: nothing read again
    assert len(series.reads) == reads


def test_warm_over_part_of_the_series_serves_requests_inside_it(series: ArraySeries) -> None:
    pyramid = make_pyramid(series)
    pyramid.warm(30 * S, 1000 * S, levels=[10 * S, 60 * S])
    reads = len(series.reads)
    assert reads == 1 and series.reads[0][:2] == (0, 1440 * S)  # whole 480 s blocks
    for width in (10 * S, 60 * S):
        bins = pyramid.reduce(30 * S, 1000 * S, PARAMS, width)
        assert_matches(bins, whole_bins_reference(series, width, 30 * S, 1000 * S))
    assert len(series.reads) == reads


def test_warm_refuses_unknown_levels_and_parameters(series: ArraySeries) -> None:
    pyramid = make_pyramid(series)
    with pytest.raises(BadQuery) as caught:
        pyramid.warm(0, S, levels=[30 * S])
    assert caught.value.parameter == "levels"
    with pytest.raises(BadQuery):
        pyramid.warm(0, S, parameters=["nope"])


def test_a_request_outside_the_series_reads_nothing_and_gives_empty_bins(
    series: ArraySeries,
) -> None:
    bins = make_pyramid(series).reduce(10_000 * S, 20_000 * S, PARAMS, 60 * S)
    assert not series.reads
    assert (bins.first, len(bins)) == (166, 168)
    assert not bins.count["v"].any()


def test_a_given_info_bounds_the_reads_instead_of_the_series_own(series: ArraySeries) -> None:
    narrower = SeriesInfo(PARAMS, 0, 1000 * S)
    pyramid = Pyramid("demo@1", series, ByteLRU(2**30), LEVELS, 8, info=narrower)
    bins = pyramid.reduce(-2000 * S, 4000 * S, PARAMS, 60 * S)
    assert min(r[0] for r in series.reads) >= 0 and max(r[1] for r in series.reads) <= 1000 * S
    assert bins.count["b"][: 2000 // 60].sum() == 0 and bins.count["b"].sum() > 0


def test_start_must_precede_stop(series: ArraySeries) -> None:
    with pytest.raises(BadQuery):
        make_pyramid(series).reduce(10 * S, 10 * S, PARAMS, 60 * S)


class CadencedSeries(ArraySeries):
    """The same samples, with a nominal cadence of a second (long reads may be split)."""

    def info(self) -> SeriesInfo:
        return dataclasses.replace(super().info(), cadence=S)


def test_a_long_read_is_split_into_parallel_reads_at_bin_edges_with_the_same_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import outcrop.pyramid

    monkeypatch.setattr(outcrop.pyramid, "SPLIT_SAMPLES", 100)
    monkeypatch.setattr(outcrop.pyramid, "PARALLEL_READS", 3)
    plain = make_series()
    split = CadencedSeries(plain.time, plain.values, plain.start, plain.stop)
    bins = make_pyramid(split).reduce(-1000 * S, 3000 * S, PARAMS, 7 * S)
    assert_matches(bins, whole_bins_reference(plain, 7 * S, -1000 * S, 3000 * S))
    assert len(split.reads) == 3
    spans = sorted((a, z) for a, z, _ in split.reads)
    assert all(z == a2 for (_, z), (a2, _) in itertools.pairwise(spans))  # no gap, no overlap
    assert all(z % (7 * S) == 0 for _, z in spans[:-1])  # cut at bin edges
