"""Grid datasets as time series: which are, and their values against the file itself."""

from __future__ import annotations

from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr

from outcrop.drivers.grid import GridDriver, open_one
from outcrop.drivers.timeseries import grid_series
from outcrop.errors import BadQuery

GOES = Path(__file__).resolve().parents[1] / "data" / "timeseries" / "goes-xrs"
G13 = GOES / "sci_gxrs-l2-irrad_g13_d20170901_truncated.nc"
G16 = GOES / "sci_xrsf-l2-avg1m_g16_d20210101_truncated.nc"
GRIDS = Path(__file__).resolve().parents[1] / "data" / "grids"


def ns(value: str) -> int:
    return int(np.datetime64(value, "ns").astype(np.int64))


def test_goes_file_is_a_series_with_its_variables_as_parameters() -> None:
    series = grid_series(open_one(G13))
    assert series is not None
    info = series.info()
    with netCDF4.Dataset(G13) as nc:
        expected = sorted(n for n, v in nc.variables.items() if v.dimensions == ("time",))
        times = netCDF4.num2date(nc["time"][:], nc["time"].units, only_use_cftime_datetimes=False)
    assert sorted(p.name for p in info.parameters) == sorted(set(expected) - {"time"})
    first = np.datetime64(times[0].isoformat(), "ns").astype(np.int64)
    assert abs(info.start - int(first)) < 1000  # the file's times are in float seconds
    flux = info.parameter("a_flux")
    assert flux is not None and flux.units == "W/m2" and flux.fill == "-99999.0"
    counts = info.parameter("a_counts")
    assert counts is not None and counts.type == "integer" and counts.fill == "-99999"


def test_values_are_the_files_values_with_its_fill_where_missing() -> None:
    series = grid_series(open_one(G13))
    assert series is not None
    info = series.info()
    blocks = list(series.read(info.start, info.stop, ["a_flux", "a_flags"]))
    flux = np.concatenate([b.values["a_flux"] for b in blocks])
    flags = np.concatenate([b.values["a_flags"] for b in blocks])
    with netCDF4.Dataset(G13) as nc:
        nc.set_auto_mask(False)
        stored_flux = nc["a_flux"][:].astype(np.float64)
        stored_flags = nc["a_flags"][:]
    np.testing.assert_array_equal(flux, stored_flux)
    np.testing.assert_array_equal(flags, stored_flags.astype(np.int64))
    assert flags.dtype == np.int64 and flux.dtype == np.float64


def test_time_range_is_start_inclusive_stop_exclusive() -> None:
    series = grid_series(open_one(G13))
    assert series is not None
    times = xr.open_dataset(G13)["time"].values.astype("datetime64[ns]").astype(np.int64)
    start, stop = int(times[10]), int(times[20])
    got = np.concatenate([b.time for b in series.read(start, stop, ["a_flux"])])
    np.testing.assert_array_equal(got.astype(np.int64), times[10:20])


def test_a_variable_with_a_second_small_dimension_is_a_vector() -> None:
    series = grid_series(open_one(G16))
    assert series is not None
    p = series.info().parameter("corrected_current_xrsb2")
    assert p is not None and p.size == (4,)
    info = series.info()
    (block,) = series.read(info.start, info.stop, ["corrected_current_xrsb2"])
    with netCDF4.Dataset(G16) as nc:
        nc.set_auto_mask(False)
        stored = nc["corrected_current_xrsb2"][:].astype(np.float64)
    np.testing.assert_array_equal(block.values["corrected_current_xrsb2"], stored)


def test_a_climate_grid_is_not_a_time_series(tmp_path: Path) -> None:
    ds = open_one(GRIDS / "ostia_monthly.nc")
    assert grid_series(ds) is None
    assert GridDriver().probe(GRIDS / "ostia_monthly.nc").series == ()


def test_scan_marks_time_series_files() -> None:
    assert GridDriver().probe(G13).series == ("",)


def test_decreasing_times_are_not_a_series(tmp_path: Path) -> None:
    path = tmp_path / "backwards.nc"
    times = np.array(["2020-01-03", "2020-01-02", "2020-01-01"], dtype="datetime64[ns]")
    xr.Dataset({"x": ("time", [1.0, 2.0, 3.0])}, coords={"time": times}).to_netcdf(path)
    assert grid_series(open_one(path)) is None


def test_extras_are_refused_by_a_grid_series() -> None:
    series = grid_series(open_one(G13))
    assert series is not None
    info = series.info()
    with pytest.raises(BadQuery) as err:
        series.read(info.start, info.stop, ["a_flux"], extras={"station": "x"})
    assert err.value.parameter == "station"
