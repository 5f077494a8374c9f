"""Job operations against references computed here with NumPy (and shapely point tests on
the Natural Earth shapefile read with pyshp), outputs read back with xarray and csv."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import shapefile
import xarray as xr
from shapely.geometry import Point
from shapely.geometry import shape as to_shape

from outcrop import operations
from outcrop.errors import BadQuery

DATA = Path(__file__).parent / "data" / "grids"
SHP = Path(operations.__file__).parent / "data" / "naturalearth_lowres" / "naturalearth_lowres.shp"
NOUPLOADS: dict[str, Path] = {}


def grid_ds(lon: np.ndarray, lat: np.ndarray) -> xr.Dataset:
    rng = np.random.default_rng(5)
    time = pd.date_range("2000-01-01", periods=4, freq="D")
    values = rng.normal(280, 10, (4, lat.size, lon.size)).astype("f4")
    return xr.Dataset(
        {"tas": (("time", "lat", "lon"), values, {"units": "K"})},
        coords={
            "time": time,
            "lat": ("lat", lat, {"units": "degrees_north"}),
            "lon": ("lon", lon, {"units": "degrees_east"}),
        },
    )


@pytest.fixture
def ds() -> xr.Dataset:
    return grid_ds(np.arange(-179.75, 180, 0.5), np.arange(-89.75, 90, 0.5))


def run(ds: xr.Dataset, raw: list[dict[str, Any]], uploads: dict[str, Path] | None = None):
    uploads = uploads or NOUPLOADS
    return operations.apply(ds, operations.parse_operations(raw, uploads), uploads)


def country_mask(iso_a3: str, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    with shapefile.Reader(str(SHP)) as reader:
        geom = next(
            to_shape(r.shape.__geo_interface__)
            for r in reader.iterShapeRecords()
            if r.record["iso_a3"] == iso_a3
        )
    minx, miny, maxx, maxy = geom.bounds
    out = np.zeros(lat2.shape, dtype=bool)
    for idx in np.ndindex(lat2.shape):
        x, y = ((float(lon2[idx]) + 180) % 360) - 180, float(lat2[idx])
        if minx <= x <= maxx and miny <= y <= maxy:
            out[idx] = geom.contains(Point(x, y))
    return out


def test_select_bbox_lists_the_cells_in_the_box(ds: xr.Dataset) -> None:
    out = run(ds, [{"operation": "select_bbox", "bbox": [5, 10, 45, 50]}])
    lon2, lat2 = np.meshgrid(ds.lon.values, ds.lat.values)
    keep = (lon2 >= 5) & (lon2 <= 10) & (lat2 >= 45) & (lat2 <= 50)
    assert out.tas.dims == ("time", "cell")
    np.testing.assert_array_equal(out.tas.values, ds.tas.values[:, keep])
    np.testing.assert_array_equal(out.lat.values, lat2[keep])


def test_cutout_bbox_across_the_antimeridian_is_contiguous(ds: xr.Dataset) -> None:
    out = run(ds, [{"operation": "cutout_bbox", "bbox": [170, -170, -20, -10]}])
    lon = ds.lon.values
    cols = np.concatenate([np.flatnonzero(lon >= 170), np.flatnonzero(lon <= -170)])
    rows = np.flatnonzero((ds.lat.values >= -20) & (ds.lat.values <= -10))
    np.testing.assert_array_equal(out.lon.values, lon[cols])
    np.testing.assert_array_equal(out.tas.values, ds.tas.values[:, rows][:, :, cols])


def test_cutout_bbox_on_a_0_360_grid_with_negative_west() -> None:
    ds = grid_ds(np.arange(0.25, 360, 0.5), np.arange(89.75, -90, -0.5))
    out = run(ds, [{"operation": "cutout_bbox", "bbox": [-10, 10, 30, 40]}])
    lon = ds.lon.values
    cols = np.concatenate([np.flatnonzero(lon >= 350), np.flatnonzero(lon <= 10)])
    rows = np.flatnonzero((ds.lat.values >= 30) & (ds.lat.values <= 40))
    assert out.lat.values[0] > out.lat.values[-1]  # descending order kept
    np.testing.assert_array_equal(out.tas.values, ds.tas.values[:, rows][:, :, cols])


def test_mask_bbox_keeps_the_grid(ds: xr.Dataset) -> None:
    out = run(ds, [{"operation": "mask_bbox", "bbox": [-10, 10, 0, 20]}])
    lon2, lat2 = np.meshgrid(ds.lon.values, ds.lat.values)
    keep = (lon2 >= -10) & (lon2 <= 10) & (lat2 >= 0) & (lat2 <= 20)
    expected = np.where(keep, ds.tas.values, np.nan)
    np.testing.assert_array_equal(out.tas.values, expected)


def test_point_operations_take_the_nearest_cell(ds: xr.Dataset) -> None:
    i = int(np.argmin(np.abs(ds.lat.values - 52.38)))
    j = int(np.argmin(np.abs(ds.lon.values - 13.06)))
    series = run(ds, [{"operation": "select_point", "point": [13.06, 52.38]}])
    assert series.tas.dims == ("time",)
    np.testing.assert_array_equal(series.tas.values, ds.tas.values[:, i, j])
    cell = run(ds, [{"operation": "cutout_point", "point": [13.06, 52.38]}])
    assert cell.tas.shape == (4, 1, 1)
    np.testing.assert_array_equal(cell.tas.values[:, 0, 0], ds.tas.values[:, i, j])


def test_point_outside_a_regional_grid_is_refused() -> None:
    ds = xr.open_dataset(DATA / "A1B_north_america.nc")
    with pytest.raises(BadQuery, match="lies outside the grid") as info:
        run(ds, [{"operation": "select_point", "point": [13, 52]}])
    assert info.value.parameter == "operations[0]"


def test_mask_country_on_a_real_0_360_grid_matches_reference() -> None:
    ds = xr.open_dataset(DATA / "A1B_north_america.nc")
    out = run(ds, [{"operation": "mask_country", "country": "usa"}])
    lon2, lat2 = np.meshgrid(ds.longitude.values, ds.latitude.values)
    keep = country_mask("USA", lat2, lon2)
    assert keep.sum() > 50
    expected = np.where(keep, ds.air_temperature.values, np.nan)
    np.testing.assert_array_equal(out.air_temperature.values, expected)


def test_mask_country_on_a_curvilinear_grid() -> None:
    j, i = np.meshgrid(np.arange(40), np.arange(30), indexing="ij")
    lat2, lon2 = 40.0 + 0.5 * j + 0.1 * i, -5.0 + 0.7 * i - 0.05 * j
    values = np.random.default_rng(1).random((2, 40, 30))
    ds = xr.Dataset(
        {"v": (("t", "y", "x"), values)},
        coords={"nav_lat": (("y", "x"), lat2), "nav_lon": (("y", "x"), lon2)},
    )
    out = run(ds, [{"operation": "mask_country", "country": "ITA"}])
    keep = country_mask("ITA", lat2, lon2)
    np.testing.assert_array_equal(out.v.values, np.where(keep, values, np.nan))


def test_compute_mean_is_cos_lat_weighted_over_the_region(ds: xr.Dataset) -> None:
    out = run(ds, [{"operation": "mask_country", "country": "AUS"}, {"operation": "compute_mean"}])
    lon2, lat2 = np.meshgrid(ds.lon.values, ds.lat.values)
    mask = country_mask("AUS", lat2, lon2)
    w = np.cos(np.radians(lat2)) * mask
    expected = np.nansum(ds.tas.values * w, axis=(1, 2)) / np.nansum(w)
    assert out.tas.dims == ("time",)
    np.testing.assert_allclose(out.tas.values, expected, rtol=1e-6)


def test_chain_cutout_then_mask_then_mean(ds: xr.Dataset) -> None:
    raw = [
        {"operation": "cutout_bbox", "bbox": [0, 30, 30, 60]},
        {"operation": "mask_country", "country": "DEU"},
        {"operation": "compute_mean"},
    ]
    out = run(ds, raw)
    lon2, lat2 = np.meshgrid(ds.lon.values, ds.lat.values)
    w = np.cos(np.radians(lat2)) * country_mask("DEU", lat2, lon2)
    expected = np.nansum(ds.tas.values * w, axis=(1, 2)) / np.nansum(w)
    np.testing.assert_allclose(out.tas.values, expected, rtol=1e-6)


def test_select_time_is_inclusive(ds: xr.Dataset) -> None:
    out = run(ds, [{"operation": "select_time", "time": ["2000-01-02", "2000-01-03"]}])
    assert list(out.time.dt.day.values) == [2, 3]
    a1b = xr.open_dataset(DATA / "A1B_north_america.nc")
    out = run(a1b, [{"operation": "select_time", "time": ["1900", "1909"]}])
    assert [t.year for t in out.time.values] == list(range(1900, 1910))


def test_mask_polygon_and_mask_mask_uploads(ds: xr.Dataset, tmp_path: Path) -> None:
    shape = tmp_path / "shape"
    shape.write_text(
        '{"type": "Polygon", "coordinates": [[[0, 0], [20, 0], [20, 10], [0, 10], [0, 0]]]}'
    )
    lon2, lat2 = np.meshgrid(ds.lon.values, ds.lat.values)
    keep = (lon2 > 0) & (lon2 < 20) & (lat2 > 0) & (lat2 < 10)
    out = run(ds, [{"operation": "mask_polygon", "shape": "myshape"}], {"myshape": shape})
    np.testing.assert_array_equal(out.tas.values, np.where(keep, ds.tas.values, np.nan))
    mask = tmp_path / "mask.nc"
    m = xr.Dataset(
        {"m_X": (("lat", "lon"), keep[::-1].astype("i1"))},
        coords={"lat": ds.lat.values[::-1], "lon": ds.lon.values % 360},
    )
    m.to_netcdf(mask)
    raw = [
        {"operation": "cutout_bbox", "bbox": [-30, 30, -30, 30]},
        {"operation": "mask_mask", "mask": "m.nc", "var": "m_X"},
    ]
    out = run(ds, raw, {"m.nc": mask})
    sub = ds.sel(lat=slice(-30, 30), lon=slice(-30, 30))
    expected = sub.tas.where((sub.lon > 0) & (sub.lon < 20) & (sub.lat > 0) & (sub.lat < 10))
    np.testing.assert_array_equal(out.tas.values, expected.transpose("time", "lat", "lon").values)


def test_outputs_read_back(ds: xr.Dataset, tmp_path: Path) -> None:
    out = run(ds, [{"operation": "mask_bbox", "bbox": [0, 1, 0, 1]}])
    operations.write_output(out, tmp_path / "o.nc", "netcdf")
    back = xr.open_dataset(tmp_path / "o.nc")
    np.testing.assert_array_equal(back.tas.values, out.tas.values)
    assert back.tas.encoding["zlib"] and back.tas.attrs["units"] == "K"
    operations.write_output(out, tmp_path / "o.csv", "csv")
    with (tmp_path / "o.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * 4 and rows[0]["time"] == "2000-01-01T00:00:00"
    first = rows[0]
    i = int(np.flatnonzero(ds.lat.values == float(first["lat"]))[0])
    j = int(np.flatnonzero(ds.lon.values == float(first["lon"]))[0])
    assert float(first["tas"]) == pytest.approx(float(ds.tas.values[0, i, j]))


def test_csv_of_a_360_day_series(tmp_path: Path) -> None:
    a1b = xr.open_dataset(DATA / "A1B_north_america.nc")
    out = run(a1b, [{"operation": "select_point", "point": [-100, 40]}])
    operations.write_output(out, tmp_path / "p.csv", "csv")
    with (tmp_path / "p.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 240 and rows[0]["time"].startswith("1860-06-01")


def test_describe_has_one_line_per_operation(tmp_path: Path) -> None:
    raw = [
        {"operation": "cutout_bbox", "bbox": [170, -170, -20, -10]},
        {"operation": "mask_country", "country": "fji"},
        {"operation": "compute_mean"},
    ]
    lines = [operations.describe(op) for op in operations.parse_operations(raw, NOUPLOADS)]
    assert "crossing the antimeridian" in lines[0] and "FJI" in lines[1]
    assert all("\n" not in line for line in lines)


BAD = [
    ([{"operation": "regrid"}], "operations[0].operation", "unknown operation 'regrid'"),
    ([{"operation": "select_bbox", "bbox": [0, 10, 50, 40]}], "operations[0].bbox", "south 50"),
    ([{"operation": "mask_bbox", "bbox": [0, 400, 0, 10]}], "operations[0].bbox", "east 400"),
    ([{"operation": "cutout_bbox", "bbox": [0, 10, -95, 10]}], "operations[0].bbox", "-90 to 90"),
    ([{"operation": "cutout_bbox", "bbox": [0, 10]}], "operations[0].bbox", "west, east"),
    ([{"operation": "select_point", "point": [0, 91]}], "operations[0].point", "latitude 91"),
    ([{"operation": "mask_country", "country": "XYZ"}], "operations[0].country", "XYZ"),
    ([{"operation": "mask_polygon", "shape": "nope"}], "operations[0].shape", "no uploaded"),
    ([{"operation": "mask_landonly", "x": 1}], "operations[0].x", "unknown argument 'x'"),
    ([{"operation": "select_time", "time": ["2001", "2000"]}], "operations[0].time", "after"),
    ([{"operation": "select_time", "time": ["soon", "2000"]}], "operations[0].time", "ISO 8601"),
    ([{"operation": "compute_mean"}, {"operation": "mask_landonly"}], "operations[1]", "no grid"),
    ([], "operations", "non-empty"),
    ([{"operation": "compute_mean"}] * 17, "operations", "at most 16"),
]


@pytest.mark.parametrize(("raw", "parameter", "message"), BAD)
def test_bad_operations_name_the_parameter(raw: list[Any], parameter: str, message: str) -> None:
    with pytest.raises(BadQuery) as info:
        operations.parse_operations(raw, NOUPLOADS)
    assert info.value.parameter == parameter
    assert message in info.value.message


def test_operation_that_does_not_fit_the_dataset(ds: xr.Dataset) -> None:
    with pytest.raises(BadQuery, match="no grid cell centre lies in country DEU"):
        run(
            xr.open_dataset(DATA / "A1B_north_america.nc"),
            [{"operation": "mask_country", "country": "DEU"}],
        )
    nogrid = xr.Dataset({"v": ("t", np.arange(3.0))})
    with pytest.raises(BadQuery, match="no latitude/longitude"):
        run(nogrid, [{"operation": "mask_landonly"}])


def test_netcdf_output_of_a_lazy_many_chunk_file_is_whole_and_keeps_one_step_chunks(
    tmp_path: Path,
) -> None:
    """The source is read lazily through libnetcdf (dask, several threads) while the
    output is written: both through libnetcdf failed with "NetCDF: HDF error"."""
    import netCDF4

    from outcrop.drivers.grid import open_one

    lat, lon = np.arange(89.75, -90, -0.5), np.arange(-179.75, 180, 0.5)
    steps = np.arange(96).astype("datetime64[M]").astype("datetime64[ns]")
    values = np.random.default_rng(3).normal(280, 10, (96, lat.size, lon.size)).astype("f4")
    source = xr.Dataset(
        {"tas": (("time", "lat", "lon"), values, {"units": "K"})},
        coords={
            "time": steps,
            "lat": ("lat", lat, {"units": "degrees_north"}),
            "lon": ("lon", lon, {"units": "degrees_east"}),
        },
    )
    path = tmp_path / "many.nc"
    source.to_netcdf(path, encoding={"tas": {"zlib": True, "chunksizes": (1, 360, 720)}})
    ops = operations.parse_operations([{"operation": "mask_bbox", "bbox": [5, 15, 45, 55]}], {})
    out = tmp_path / "out.nc"
    operations.write_output(operations.apply(open_one(path), ops, {}), out, "netcdf")
    inside = (lat[:, None] >= 45) & (lat[:, None] <= 55) & (lon >= 5) & (lon <= 15)
    expected = np.where(inside, values, np.nan)
    with netCDF4.Dataset(out) as nc:
        assert nc["tas"].chunking() == [1, 360, 720]
        np.testing.assert_array_equal(nc["tas"][:].filled(np.nan), expected)
