"""NetCDF4 and CF-JSON encoders: what `xarray.open_dataset` (or a CF-JSON reader) gets
back equals the local file subset with numpy index arithmetic."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import orjson
import pytest
import xarray as xr

from outcrop.drivers.grid import NETCDF_LOCK, open_one, stored_chunks
from outcrop.formats.netcdf import Cancelled, CfJsonFormat, NetcdfFormat, remove_stale
from outcrop.query import apply, parse
from tests.test_query import grid, one_chunk

FORMATS = ("nc", "json")
ENCODING_KEYS = ("dtype", "_FillValue", "scale_factor", "add_offset", "units", "calendar")


def subset(path: Path, **params: str) -> tuple[xr.Dataset, Any]:
    """The served (lazy, as the grid driver opens it) subset, and its query."""
    query = parse(list(params.items()), FORMATS)
    return apply(open_one(path), query), query


def columns_east_of(lon: np.ndarray, start: float, stop: float) -> np.ndarray:
    """Longitude positions from start across the 0/360 seam to stop (0..360 grid)."""
    return np.r_[np.flatnonzero(lon >= start % 360), np.flatnonzero(lon <= stop)]


def write(ds: xr.Dataset, query: Any, tmp_path: Path, **kwargs: Any) -> Path:
    out = tmp_path / "out.nc"
    encoder = NetcdfFormat(NETCDF_LOCK, tmp_path / "tmp", **kwargs)
    stream = encoder.encode(ds, query)
    out.write_bytes(b"".join(stream))
    assert stream.length == out.stat().st_size
    assert not list((tmp_path / "tmp").iterdir())  # the temporary file is gone
    return out


def assert_same_encoding(got: xr.Dataset, want: xr.Dataset) -> None:
    for name, var in want.variables.items():
        for key in ENCODING_KEYS:
            if key in var.encoding:
                a, b = got[name].encoding.get(key), var.encoding[key]
                assert a == b or (np.isnan(a) and np.isnan(b)), (name, key, a, b)


def test_packed_360_day_subset_round_trips_with_its_cf_encoding(
    archive: Path, tmp_path: Path
) -> None:
    path = archive / "cmip6" / "ta_Amon_1950.nc"
    ds, query = subset(path, time="1950-02-30/1950-06", lat="-30/60", lon="-45/20")
    out = write(ds, query, tmp_path, slab_values=500)  # many slabs
    with xr.open_dataset(path) as local, xr.open_dataset(out) as got:
        lat = np.flatnonzero((local.lat.values >= -30) & (local.lat.values <= 60))
        lon = columns_east_of(local.lon.values, -45, 20)
        want = local.isel(time=slice(2, 6), lat=lat, lon=lon)
        xr.testing.assert_identical(got, want)
        assert_same_encoding(got, want)


def test_fill_values_stay_missing(archive: Path, tmp_path: Path) -> None:
    path = archive / "cmip6" / "ta_Amon_1950.nc"
    ds, query = subset(path, time="1950-01-01", lat="80/90", lon="0/20")
    with xr.open_dataset(write(ds, query, tmp_path)) as got:
        assert np.isnan(got.ta.values[0, 0, :5]).all()  # written as NaN in the first step
        assert got.ta.encoding["_FillValue"] == -32767


def test_netcdf3_noleap_source_becomes_netcdf4_with_the_same_values(
    archive: Path, tmp_path: Path
) -> None:
    path = archive / "cmip6" / "ta_Amon_noleap.nc"
    ds, query = subset(path, time="1951-02-10", stride="lat:3,lon:4")
    with xr.open_dataset(path) as local, xr.open_dataset(write(ds, query, tmp_path)) as got:
        want = local.isel(time=[13], lat=slice(None, None, 3), lon=slice(None, None, 4))
        xr.testing.assert_identical(got, want)
        assert got.time.encoding["calendar"] == "noleap"


def test_real_file_with_bounds_and_scalar_coordinates(archive: Path, tmp_path: Path) -> None:
    path = archive / "real" / "grids" / "A1B_north_america.nc"
    ds, query = subset(path, var="air_temperature", time="2000/2009", latitude="30/45")
    with xr.open_dataset(path) as local, xr.open_dataset(write(ds, query, tmp_path)) as got:
        years = np.array([t.year for t in local.time.values])
        rows = np.flatnonzero((local.latitude.values >= 30) & (local.latitude.values <= 45))
        want = local[["air_temperature", "latitude_longitude", "time_bnds"]].isel(
            time=np.flatnonzero((years >= 2000) & (years <= 2009)), latitude=rows
        )
        xr.testing.assert_identical(got, want)


@pytest.mark.parametrize("lat", ["-40/40", None])
def test_writing_reads_the_source_one_slab_at_a_time(tmp_path: Path, lat: str | None) -> None:
    ds, source = one_chunk(grid())
    params = [("var", "ta")] + ([("lat", lat)] if lat else [])
    query = parse(params, FORMATS)
    out = write(apply(ds, query), query, tmp_path, slab_values=1000)
    with xr.open_dataset(out) as got:
        rows = np.flatnonzero(np.abs(grid().lat.values) <= (40 if lat else 90))
        np.testing.assert_array_equal(got.ta.values, grid().ta.values[:, rows])
    assert source.reads and max(source.reads) <= 1000


# -- CF-JSON -----------------------------------------------------------------------------
def from_cf_json(body: bytes) -> xr.Dataset:
    """A CF-JSON document as an xarray.Dataset, decoded by xarray's CF rules."""
    doc = orjson.loads(body)
    variables = {}
    for name, var in doc["variables"].items():
        data = np.array(var["data"], dtype=object)
        if var["type"] in ("float", "double"):
            data = np.where(data == None, np.nan, data).astype("float64")  # noqa: E711
        elif var["type"] != "string":
            data = data.astype("int64")
        variables[name] = xr.Variable(var["shape"], data, var["attributes"])
    ds = xr.Dataset(variables, attrs=doc["attributes"])
    assert doc["dimensions"] == {str(k): v for k, v in ds.sizes.items()}
    return xr.decode_cf(ds)


@pytest.mark.parametrize("slab_values", [10, 1 << 20])
def test_cf_json_holds_the_subset_values_and_times_in_their_calendar(
    archive: Path, slab_values: int
) -> None:
    path = archive / "cmip6" / "ta_Amon_1950.nc"
    ds, query = subset(path, time="1950-01/1950-03", lat="70/90", lon="350/10")
    body = b"".join(CfJsonFormat(slab_values).encode(ds, query))
    got = from_cf_json(body)
    with xr.open_dataset(path) as local:
        rows = np.flatnonzero(local.lat.values >= 70)
        want = local.isel(
            time=slice(0, 3), lat=rows, lon=columns_east_of(local.lon.values, 350, 10)
        )
        np.testing.assert_array_equal(got.time.values, want.time.values)
        np.testing.assert_array_equal(got.lon.values, want.lon.values)
        np.testing.assert_allclose(got.ta.values, want.ta.values.astype("float64"), rtol=1e-6)
        assert np.isnan(got.ta.values).sum() == np.isnan(want.ta.values).sum() > 0
        assert got.ta.attrs["units"] == "K" and got.attrs["Conventions"] == "CF-1.8"


def test_a_cancelled_write_raises_and_leaves_no_file(archive: Path, tmp_path: Path) -> None:
    ds, query = subset(archive / "cmip6" / "ta_Amon_1950.nc", lat="-30/60")
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        NetcdfFormat(NETCDF_LOCK, tmp_path / "tmp").encode(ds, query, cancel)
    assert not list((tmp_path / "tmp").iterdir())


def test_stale_files_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    stale = tmp_path / f"subset-{dead}-abc.nc"
    live = tmp_path / f"subset-{os.getppid()}-abc.nc"
    other = tmp_path / "notes.txt"
    for path in (stale, live, other):
        path.write_bytes(b"x")
    assert remove_stale(tmp_path) == [stale]
    assert sorted(tmp_path.iterdir()) == sorted([live, other])


def test_source_chunks_follow_the_selection(tmp_path: Path) -> None:
    ds = grid().chunk(time=5)
    got = apply(ds, parse([("time", "2000-04/2001-02"), ("stride", "lat:2")], FORMATS))
    assert got.ta.encoding["source_chunks"][0] == (2, 5, 4)  # months 3-4, 5-9, 10-13
    assert got.ta.encoding["source_chunks"][1] == (36,)


def stored_grid(path: Path, steps: int = 12) -> np.ndarray:
    """A NetCDF4 file like the archives': temp(time, lat, lon), a chunk per step, zlib 5."""
    values = np.random.default_rng(3).random((steps, 6, 8), dtype=np.float32)
    ds = xr.Dataset(
        {"temp": (("time", "lat", "lon"), values, {"units": "K"})},
        coords={"time": np.arange(float(steps)), "lat": np.arange(6.0), "lon": np.arange(8.0)},
    )
    encoding = {"temp": {"zlib": True, "complevel": 5, "shuffle": True, "chunksizes": (1, 6, 8)}}
    ds.to_netcdf(path, encoding=encoding)
    return values


def stored_chunk(path: Path, name: str, offset: tuple[int, ...]) -> bytes:
    with h5py.File(path, "r") as f:
        mask, data = f[name].id.read_direct_chunk(offset)
        assert mask == 0
        return bytes(data)


@pytest.mark.parametrize("time", ["3/7", "3/", ""])
def test_whole_stored_chunks_are_copied_as_they_are(tmp_path: Path, time: str) -> None:
    path = tmp_path / "src.nc"
    values = stored_grid(path)
    ds, query = subset(path, time=time) if time else subset(path)
    stored = lambda name: stored_chunks(path, None, name)  # noqa: E731
    out = tmp_path / "out.nc"
    out.write_bytes(
        b"".join(NetcdfFormat(NETCDF_LOCK, tmp_path / "tmp").encode(ds, query, None, stored))
    )
    first = int(time.split("/")[0]) if time else 0
    with xr.open_dataset(out) as got:
        np.testing.assert_array_equal(got.temp.values, values[first : first + got.sizes["time"]])
        assert got.temp.encoding["chunksizes"] == (1, 6, 8)
    assert stored_chunk(out, "temp", (0, 0, 0)) == stored_chunk(path, "temp", (first, 0, 0))


@pytest.mark.parametrize("params", [{"lat": "1/5"}, {"stride": "time:2"}])
def test_parts_of_stored_chunks_are_compressed_again_at_level_1(
    tmp_path: Path, params: dict[str, str]
) -> None:
    path = tmp_path / "src.nc"
    values = stored_grid(path)
    ds, query = subset(path, **params)
    stored = lambda name: stored_chunks(path, None, name)  # noqa: E731
    out = tmp_path / "out.nc"
    out.write_bytes(
        b"".join(NetcdfFormat(NETCDF_LOCK, tmp_path / "tmp").encode(ds, query, None, stored))
    )
    want = values[:, 1:6] if "lat" in params else values[::2]
    with xr.open_dataset(out) as got:
        np.testing.assert_array_equal(got.temp.values, want)
        assert got.temp.encoding["complevel"] == 1 and got.temp.encoding["shuffle"]
        assert got.temp.encoding["chunksizes"] == want.shape  # all of it fits 2**18 values
