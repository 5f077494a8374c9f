"""CSV, Arrow and Parquet encoders: one row per point, read back with pyarrow and compared
with the local file subset (numpy index arithmetic, np.meshgrid for the rows)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import xarray as xr

from outcrop.drivers.grid import open_one
from outcrop.errors import BadQuery
from outcrop.formats.tabular import ArrowFormat, CsvFormat, ParquetFormat
from outcrop.query import apply, parse

FORMATS = ("csv", "arrow", "parquet")


def encode(path: Path, fmt: str, slab_cells: int = 1 << 20, **params: str) -> pa.Table:
    """Serve-side subset of a file in a tabular format, read back by pyarrow."""
    query = parse([*params.items(), ("format", fmt)], FORMATS)
    encoder = {"csv": CsvFormat, "arrow": ArrowFormat, "parquet": ParquetFormat}[fmt](slab_cells)
    data = encoder.select(apply(open_one(path), query), query)
    body = b"".join(encoder.encode(data, query))
    if fmt == "csv":
        options = pacsv.ConvertOptions(column_types={"time": pa.string()})
        return pacsv.read_csv(io.BytesIO(body), convert_options=options)
    if fmt == "arrow":
        return pa.ipc.open_stream(body).read_all()
    return pq.read_table(io.BytesIO(body))


def rows(ds: xr.Dataset, name: str) -> dict[str, np.ndarray]:
    """The expected columns: every point of `name`, coordinates broadcast, C order."""
    var = ds[name]
    grids = np.meshgrid(*(ds[d].values for d in var.dims), indexing="ij")
    out = {str(d): g.ravel() for d, g in zip(var.dims, grids, strict=True)}
    out[name] = var.values.ravel()
    return out


def iso(values: np.ndarray) -> list[str]:
    if values.dtype.kind == "M":
        return [str(v)[:19] for v in values.astype("datetime64[s]")]
    return [v.strftime("%Y-%m-%dT%H:%M:%S") for v in values]


def assert_column(table: pa.Table, name: str, want: np.ndarray) -> None:
    got = table.column(name).to_numpy(zero_copy_only=False)
    if want.dtype.kind == "f":
        missing = np.isnan(want)
        assert table.column(name).null_count == missing.sum()
        got = np.asarray(got, dtype=want.dtype)
        np.testing.assert_array_equal(got[~missing], want[~missing])
    else:
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("slab_cells", [37, 1 << 20])
def test_packed_360_day_subset_as_rows(archive: Path, fmt: str, slab_cells: int) -> None:
    path = archive / "cmip6" / "ta_Amon_1950.nc"
    table = encode(path, fmt, slab_cells, time="1950-01/1950-02", lat="80/90", lon="-10/10")
    with xr.open_dataset(path) as local:
        lat = np.flatnonzero(local.lat.values >= 80)
        lon = np.r_[np.flatnonzero(local.lon.values >= 350), np.flatnonzero(local.lon.values <= 10)]
        want = rows(local.isel(time=[0, 1], lat=lat, lon=lon), "ta")
    assert table.column_names == ["time", "lat", "lon", "ta"]
    assert table.column("time").to_pylist() == iso(want["time"])
    for name in ("lat", "lon", "ta"):
        assert_column(table, name, want[name])
    assert table.column("ta").null_count > 0  # the fill values of the first step
    if fmt != "csv":
        meta = table.schema.field("time").metadata
        assert meta[b"calendar"] == b"360_day"
        assert table.schema.field("ta").metadata[b"units"] == b"K"


@pytest.mark.parametrize("fmt", FORMATS)
def test_standard_calendar_times_and_large_fill_values(archive: Path, fmt: str) -> None:
    path = archive / "real" / "grids" / "ostia_monthly.nc"
    table = encode(path, fmt, 500, time="2007-01/2007-06", latitude="-1/1", stride="longitude:40")
    with xr.open_dataset(path) as local:
        t = local.time.values
        times = np.flatnonzero((t >= np.datetime64("2007-01")) & (t < np.datetime64("2007-07")))
        lat = np.flatnonzero(np.abs(local.latitude.values) <= 1)
        sub = local.isel(time=times, latitude=lat, longitude=slice(None, None, 40))
        want = rows(sub, "surface_temperature")
        reference_time = np.repeat(
            sub.forecast_reference_time.values, lat.size * sub.longitude.size
        )
    assert table.column_names == [
        "time",
        "latitude",
        "longitude",
        "forecast_reference_time",
        "surface_temperature",
    ]
    if fmt == "csv":
        assert table.column("time").to_pylist() == iso(want["time"])
    else:
        assert pa.types.is_timestamp(table.schema.field("time").type)
        np.testing.assert_array_equal(table.column("time").to_numpy(), want["time"])
        np.testing.assert_array_equal(
            table.column("forecast_reference_time").to_numpy(), reference_time
        )
    for name in ("latitude", "longitude", "surface_temperature"):
        assert_column(table, name, want[name])
    assert table.column("surface_temperature").null_count > 0  # land, _FillValue 1e20


def test_csv_is_text_with_iso_times_and_empty_fields_for_missing_values(archive: Path) -> None:
    path = archive / "cmip6" / "ta_Amon_noleap.nc"
    params = [("time", "1950-01-01"), ("lat", "88/89"), ("lon", "0/4"), ("format", "csv")]
    query = parse(params, ("csv",))
    data = apply(open_one(path), query)
    text = b"".join(CsvFormat(1).encode(CsvFormat().select(data, query), query)).decode()
    lines = text.splitlines()
    assert lines[0] == '"time","lat","lon","ta"'
    assert lines[1] == '"1950-01-01T00:00:00",88.75,0,'  # written as NaN: an empty field
    assert len(lines) == 3


def test_default_variables_are_those_on_the_widest_dimensions(archive: Path) -> None:
    path = archive / "real" / "grids" / "A1B_north_america.nc"
    table = encode(path, "arrow", time="2000/2000")
    assert table.column_names == [
        "time",
        "latitude",
        "longitude",
        "forecast_period",
        "air_temperature",
    ]
    assert table.num_rows == 37 * 49


def test_variables_on_different_dimensions_are_rejected_naming_var(archive: Path) -> None:
    path = archive / "real" / "grids" / "A1B_north_america.nc"
    with pytest.raises(BadQuery) as caught:
        encode(path, "csv", var="air_temperature,time_bnds")
    assert caught.value.parameter == "var"
    assert "time_bnds (time, bnds)" in caught.value.message


def test_dimension_without_coordinate_becomes_a_position_column(tmp_path: Path) -> None:
    path = tmp_path / "plain.nc"
    xr.Dataset({"v": (("n", "m"), np.arange(12.0).reshape(3, 4))}).to_netcdf(path)
    table = encode(path, "parquet", 2, m="1/2")
    assert table.column_names == ["n", "m", "v"]
    assert table.column("n").to_pylist() == [0, 0, 1, 1, 2, 2]
    assert table.column("m").to_pylist() == [0, 1, 0, 1, 0, 1]  # positions in the subset
    assert table.column("v").to_pylist() == [1.0, 2.0, 5.0, 6.0, 9.0, 10.0]
