"""Parsing subset requests and selecting by coordinate value: `outcrop.query`.

Every expected selection is computed here with numpy masks and index arithmetic on the
coordinate values, independently of the code under test.
"""

from __future__ import annotations

from typing import Any

import cftime
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from xarray.backends import BackendArray
from xarray.core import indexing

from outcrop.errors import BadQuery
from outcrop.model import Query, Selector
from outcrop.query import apply, decoded_size, parse, runs

FORMATS = ("nc", "csv", "json", "arrow", "parquet")


def grid(calendar: str = "standard", times: int = 24) -> xr.Dataset:
    """Monthly data on a descending latitude and a 0..360 longitude; values = positions."""
    if calendar == "standard":
        time = pd.date_range("2000-01-01", periods=times, freq="MS").values
    else:
        time = xr.date_range(
            "2000-01-01", periods=times, freq="MS", calendar=calendar, use_cftime=True
        ).values
    lat = np.arange(88.75, -90, -2.5)
    lon = np.arange(0, 360, 3.75)
    data = np.arange(times * lat.size * lon.size, dtype="float64").reshape(times, lat.size, -1)
    ds = xr.Dataset(
        {
            "ta": (("time", "lat", "lon"), data, {"units": "K", "grid_mapping": "crs"}),
            "time_bnds": (("time", "nb"), np.stack([time, time], axis=1)),
            "crs": ((), 0, {"grid_mapping_name": "latitude_longitude"}),
            "mean": (("time",), data.mean(axis=(1, 2))),
        },
        coords={
            "time": ("time", time, {"bounds": "time_bnds"}),
            "lat": ("lat", lat, {"units": "degrees_north"}),
            "lon": ("lon", lon, {"units": "degrees_east"}),
        },
    )
    ds.time.encoding["units"] = "days since 2000-01-01"
    return ds


def run(ds: xr.Dataset, **params: str) -> xr.Dataset:
    return apply(ds, parse(list(params.items()), FORMATS))


def error(ds: xr.Dataset, **params: str) -> BadQuery:
    with pytest.raises(BadQuery) as caught:
        run(ds, **params)
    return caught.value


# -- parsing ---------------------------------------------------------------------------
def test_parse_reads_ranges_nearest_values_strides_variables_and_format() -> None:
    query = parse(
        [("var", "ta,pr"), ("lat", "-10/10"), ("time", "2000-01"), ("lon", "350/"),
         ("stride", "lon:2,lat:3"), ("format", "csv")],
        FORMATS,
    )  # fmt: skip
    assert query == Query(
        variables=("ta", "pr"),
        selectors=(
            Selector("lat", "range", start="-10", stop="10"),
            Selector("lon", "range", start="350", stop=None),
            Selector("time", "nearest", value="2000-01"),
        ),
        strides=(("lat", 3), ("lon", 2)),
        format="csv",
    )


def test_parse_defaults_to_netcdf_and_every_variable() -> None:
    assert parse([], FORMATS) == Query(format="nc")


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ([("lat", "1/2"), ("lat", "3/4")], "lat"),
        ([("format", "xlsx")], "format"),
        ([("var", "ta,,pr")], "var"),
        ([("var", "ta,ta")], "var"),
        ([("stride", "lat")], "stride"),
        ([("stride", "lat:0")], "stride"),
        ([("stride", "lat:-2")], "stride"),
        ([("stride", "lat:x")], "stride"),
        ([("stride", "lat:2,lat:3")], "stride"),
        ([("lat", "1/2/3")], "lat"),
        ([("lat", "")], "lat"),
        ([("lat", "/")], "lat"),
    ],
)
def test_malformed_parameters_are_rejected_by_name(
    params: list[tuple[str, str]], parameter: str
) -> None:
    with pytest.raises(BadQuery) as caught:
        parse(params, FORMATS)
    assert caught.value.parameter == parameter


def test_unknown_format_lists_the_allowed_ones() -> None:
    with pytest.raises(BadQuery, match="nc, csv, json, arrow, parquet"):
        parse([("format", "xlsx")], FORMATS)


# -- ranges on numeric coordinates -----------------------------------------------------
def test_range_on_descending_latitude_is_inclusive_and_keeps_the_order() -> None:
    ds = grid()
    got = run(ds, lat="-3.75/3.75")
    assert got.lat.values.tolist() == [3.75, 1.25, -1.25, -3.75]
    expected = ds.ta.values[:, (ds.lat.values >= -3.75) & (ds.lat.values <= 3.75), :]
    np.testing.assert_array_equal(got.ta.values, expected)


def test_either_end_of_a_range_may_be_open() -> None:
    ds = grid()
    assert run(ds, lat="80/").lat.values.tolist() == [88.75, 86.25, 83.75, 81.25]
    assert run(ds, lat="/-85").lat.values.tolist() == [-86.25, -88.75]


def test_start_above_stop_is_rejected() -> None:
    exc = error(grid(), lat="10/-10")
    assert exc.parameter == "lat"
    assert "start is greater than stop" in exc.message


def test_empty_selection_names_the_parameter_and_the_coordinate_range() -> None:
    exc = error(grid(), lat="89/89.5")
    assert exc.parameter == "lat"
    assert "selects nothing" in exc.message
    assert "88.75" in exc.message and "-88.75" in exc.message


def test_numbers_compare_at_the_coordinates_precision() -> None:
    x = np.arange(0, 1, 0.1, dtype="float32")
    ds = xr.Dataset({"v": ("x", np.arange(10.0))}, coords={"x": x})
    # float32(0.3) > 0.3 as float64: compared in float64 it would be left out.
    assert run(ds, x="0.1/0.3").v.values.tolist() == [1.0, 2.0, 3.0]


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(st.floats(-1000, 1000, allow_nan=False), min_size=1, max_size=40, unique=True),
    descending=st.booleans(),
    a=st.floats(-1100, 1100, allow_nan=False),
    b=st.floats(-1100, 1100, allow_nan=False),
)
def test_a_range_keeps_exactly_the_values_between_its_ends(
    values: list[float], descending: bool, a: float, b: float
) -> None:
    x = np.array(sorted(values, reverse=descending))
    ds = xr.Dataset({"v": ("x", np.arange(x.size))}, coords={"x": x})
    lo, hi = min(a, b), max(a, b)
    expected = np.flatnonzero((x >= lo) & (x <= hi))
    query = parse([("x", f"{lo!r}/{hi!r}")], FORMATS)
    if expected.size == 0:
        with pytest.raises(BadQuery):
            apply(ds, query)
        return
    np.testing.assert_array_equal(apply(ds, query).v.values, expected)


# -- longitudes ------------------------------------------------------------------------
def test_negative_longitudes_on_a_0_360_grid_cross_the_seam() -> None:
    ds = grid()
    got = run(ds, lon="-10/10")
    assert got.lon.values.tolist() == [352.5, 356.25, 0.0, 3.75, 7.5]
    columns = [list(ds.lon.values).index(v) for v in got.lon.values]
    np.testing.assert_array_equal(got.ta.values, ds.ta.values[:, :, columns])


def test_a_range_given_east_to_west_crosses_the_seam() -> None:
    assert run(grid(), lon="350/5").lon.values.tolist() == [352.5, 356.25, 0.0, 3.75]


def test_a_whole_turn_selects_every_longitude_in_grid_order() -> None:
    ds = grid()
    np.testing.assert_array_equal(run(ds, lon="-180/180").lon.values, ds.lon.values)


def test_longitudes_above_180_on_a_minus_180_180_grid() -> None:
    ds = grid().assign_coords(lon=np.arange(-180, 180, 3.75))
    ds.lon.attrs["units"] = "degrees_east"
    got = run(ds, lon="172.5/187.5").lon.values.tolist()
    assert got == [172.5, 176.25, -180.0, -176.25, -172.5]
    assert run(ds, lon="190/195").lon.values.tolist() == [-168.75, -165.0]


def test_nearest_longitude_is_found_across_the_seam() -> None:
    got = run(grid(), lon="359")
    assert got.lon.values.tolist() == [0.0]
    assert run(grid(), lon="-4").lon.values.tolist() == [356.25]


# -- times -----------------------------------------------------------------------------
@pytest.mark.parametrize("calendar", ["360_day", "noleap", "standard"])
def test_time_range_reads_dates_in_the_coordinates_calendar(calendar: str) -> None:
    ds = grid(calendar)
    got = run(ds, time="2000-02-15/2000-04")  # to the end of April
    times = pd.DatetimeIndex(got.time.values) if calendar == "standard" else got.time.values
    months = [t.month for t in times]
    assert months == [3, 4]
    np.testing.assert_array_equal(got.ta.values, ds.ta.values[2:4])


def test_a_day_of_the_360_day_calendar_is_valid() -> None:
    got = run(grid("360_day"), time="2000-02-30/2000-03-01")
    assert got.time.values.tolist() == [cftime.Datetime360Day(2000, 3, 1, has_year_zero=True)]


def test_a_date_outside_the_calendar_is_rejected_naming_the_calendar() -> None:
    exc = error(grid("noleap"), time="2000-02-29/2000-03")
    assert exc.parameter == "time"
    assert "noleap" in exc.message


def test_a_stop_day_covers_the_whole_day() -> None:
    time = pd.date_range("2000-01-01", periods=72, freq="h").values
    ds = xr.Dataset({"v": ("time", np.arange(72))}, coords={"time": time})
    assert run(ds, time="2000-01-02/2000-01-02").v.values.tolist() == list(range(24, 48))
    assert run(ds, time="2000-01-02T05/2000-01-02T06:00").v.values.tolist() == [29, 30]
    assert run(ds, time="2000-01-02T05:00:00Z/2000-01-02T05:00:00").v.values.tolist() == [29]


@pytest.mark.parametrize("calendar", ["360_day", "noleap", "standard"])
def test_nearest_time(calendar: str) -> None:
    got = run(grid(calendar), time="2001-06-20")
    first = got.time.values[0]
    if calendar == "standard":
        first = pd.Timestamp(first)
    assert got.sizes["time"] == 1
    assert (first.year, first.month, first.day) == (2001, 7, 1)


@pytest.mark.parametrize("text", ["yesterday", "2000-13-01/2001", "2000-01-01T25:00/"])
def test_malformed_times_are_rejected(text: str) -> None:
    assert error(grid(), time=text).parameter == "time"


def test_times_out_of_order_are_rejected() -> None:
    assert "later than stop" in error(grid("360_day"), time="2001/2000").message


# -- nearest, strides, variables -------------------------------------------------------
def test_nearest_point_keeps_its_dimension() -> None:
    got = run(grid(), lat="10")
    assert got.ta.dims == ("time", "lat", "lon")
    assert got.lat.values.tolist() == [11.25]  # 11.25 and 8.75 tie; the first wins


def test_malformed_number_names_the_parameter() -> None:
    exc = error(grid(), lat="north")
    assert exc.parameter == "lat" and "not a number" in exc.message


def test_stride_keeps_every_kth_point_of_the_selection() -> None:
    ds = grid()
    got = run(ds, lat="-10/10", lon="0/30", stride="lat:2,lon:3")
    lat = np.flatnonzero((ds.lat.values >= -10) & (ds.lat.values <= 10))[::2]
    lon = np.flatnonzero(ds.lon.values <= 30)[::3]
    np.testing.assert_array_equal(got.ta.values, ds.ta.values[:, lat][:, :, lon])


def test_stride_on_an_unknown_dimension_lists_the_dimensions() -> None:
    exc = error(grid(), stride="depth:2")
    assert exc.parameter == "stride" and "lat" in exc.message


def test_unknown_parameter_lists_what_is_allowed() -> None:
    exc = error(grid(), depth="0/10")
    assert exc.parameter == "depth"
    for name in ("var", "stride", "format", "time", "lat", "lon", "nb"):
        assert name in exc.message


def test_unknown_variable_lists_the_data_variables() -> None:
    exc = error(grid(), var="pr")
    assert exc.parameter == "var"
    assert "ta" in exc.message and "mean" in exc.message


def test_variables_bring_their_coordinates_and_the_cf_variables_they_name() -> None:
    got = run(grid(), var="ta", time="2000-01/2000-02")
    assert set(got.data_vars) == {"ta", "crs", "time_bnds"}
    assert set(got.coords) == {"time", "lat", "lon"}
    assert got.time_bnds.shape == (2, 2)


def test_selecting_along_a_dimension_the_variables_lack_is_rejected() -> None:
    assert error(grid(), var="mean", lat="0/10").parameter == "lat"


def test_a_dimension_without_coordinate_is_selected_by_position() -> None:
    ds = xr.Dataset({"v": (("n", "m"), np.arange(20).reshape(4, 5))})
    got = run(ds, m="1/3", n="2")
    np.testing.assert_array_equal(got.v.values, [[11, 12, 13]])


def test_decoded_size_counts_every_variable_of_the_result() -> None:
    got = run(grid(), lat="0/10", var="ta")
    expected = sum(v.size * v.dtype.itemsize for v in got.variables.values())
    assert decoded_size(got) == expected > 0


# -- the lazy result -------------------------------------------------------------------
class Recording(BackendArray):
    """An in-memory array that records the size of every read."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.shape = array.shape
        self.dtype = array.dtype
        self.reads: list[int] = []

    def __getitem__(self, key: Any) -> Any:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.BASIC, self._read
        )

    def _read(self, key: tuple[Any, ...]) -> np.ndarray:
        out = self.array[key]
        self.reads.append(int(np.size(out)))
        return np.asarray(out)


def one_chunk(ds: xr.Dataset) -> tuple[xr.Dataset, Recording]:
    """`ds` with `ta` as one dask chunk over a recording source, like a contiguous file."""
    source = Recording(ds.ta.values)
    lazy = xr.Variable(ds.ta.dims, indexing.LazilyIndexedArray(source), ds.ta.attrs)
    return ds.assign(ta=lazy.chunk(dict.fromkeys(ds.ta.dims, -1))), source


def test_a_slab_of_the_result_reads_only_that_slab_of_a_big_chunk() -> None:
    ds, source = one_chunk(grid())
    got = run(ds, var="ta", lat="-20/20", lon="-30/30", stride="time:2")
    slab = got.ta.isel(time=slice(3, 5)).values
    lat = np.flatnonzero((ds.lat.values >= -20) & (ds.lat.values <= 20))
    lon = np.r_[np.flatnonzero(ds.lon.values >= 330), np.flatnonzero(ds.lon.values <= 30)]
    np.testing.assert_array_equal(slab, grid().ta.values[6:10:2][:, lat][:, :, lon])
    assert source.reads  # read through the source, and never more than the slab's rows
    assert max(source.reads) <= 2 * lat.size * lon.size


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lat=st.tuples(st.integers(-95, 95), st.integers(-95, 95)),
    lon=st.tuples(st.integers(-200, 400), st.integers(-200, 400)),
    steps=st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4)),
    cut=st.tuples(st.integers(0, 30), st.integers(0, 30)),
)
def test_any_slice_of_any_selection_equals_numpy_indexing(
    lat: tuple[int, int], lon: tuple[int, int], steps: tuple[int, int, int], cut: tuple[int, int]
) -> None:
    base = grid()
    ds, _ = one_chunk(base)
    lat_lo, lat_hi = sorted(lat)
    rows = np.flatnonzero((base.lat.values >= lat_lo) & (base.lat.values <= lat_hi))
    lo, hi = lon[0], lon[1] + (360 if lon[1] < lon[0] else 0)
    x = base.lon.values
    if hi - lo >= 360:
        cols = np.arange(x.size)
    else:  # the points east of lo (on the 0..360 grid) up to hi, then past the seam
        start, stop = lo % 360, lo % 360 + (hi - lo)
        cols = np.r_[np.flatnonzero((x >= start) & (x <= stop)), np.flatnonzero(x + 360 <= stop)]
    stride = f"time:{steps[0]},lat:{steps[1]},lon:{steps[2]}"
    params = {"lat": f"{lat_lo}/{lat_hi}", "lon": f"{lon[0]}/{lon[1]}", "stride": stride}
    if rows.size == 0 or cols.size == 0:
        with pytest.raises(BadQuery):
            run(ds, **params)
        return
    got = run(ds, **params).ta
    expected = base.ta.values[:: steps[0]][:, rows[:: steps[1]]][:, :, cols[:: steps[2]]]
    a, b = sorted(cut)
    np.testing.assert_array_equal(got.isel(lat=slice(a, b + 1)).values, expected[:, a : b + 1])


@given(st.lists(st.integers(0, 50), max_size=30))
def test_runs_cover_the_positions_in_order(positions: list[int]) -> None:
    array = np.array(positions, dtype=int)
    pieces = runs(array)
    rebuilt = np.concatenate([np.arange(51)[s] for _, _, s in pieces]) if pieces else []
    np.testing.assert_array_equal(rebuilt, array)
    assert [a for a, _, _ in pieces] == sorted(a for a, _, _ in pieces)
    assert all(s.step > 0 for _, _, s in pieces)
