"""Region masks on a dataset's own grid, against a reference built here with shapely point
tests on the Natural Earth shapefile read independently (pyshp), and upload checks."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import numpy as np
import orjson
import pytest
import shapefile
import shapely
from shapely.geometry import Point
from shapely.geometry import shape as to_shape

from outcrop import regions
from outcrop.errors import BadQuery

SHP = Path(regions.__file__).parent / "data" / "naturalearth_lowres" / "naturalearth_lowres.shp"


def reference_geometry(iso_a3: str, name: str | None = None) -> shapely.Geometry:
    with shapefile.Reader(str(SHP)) as reader:
        for item in reader.iterShapeRecords():
            if item.record["iso_a3"] == iso_a3 or item.record["name"] == name:
                return to_shape(item.shape.__geo_interface__)
    raise AssertionError(iso_a3)


def reference_mask(geometry: shapely.Geometry, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    """Loop over cells: centre (lon in -180..180) strictly inside the polygon."""
    out = np.zeros(lat2.shape, dtype=bool)
    for index in np.ndindex(lat2.shape):
        lon = ((float(lon2[index]) + 180.0) % 360.0) - 180.0
        out[index] = geometry.contains(Point(lon, float(lat2[index])))
    return out


LAT = np.arange(-89.5, 90, 1.0)
LON = np.arange(-179.5, 180, 1.0)


@pytest.mark.parametrize(
    ("code", "name"),
    [("DEU", None), ("ITA", None), ("AUS", None), ("RUS", None), ("FJI", None), ("-99", "Kosovo")],
)
def test_country_mask_matches_point_in_polygon_reference(code: str, name: str | None) -> None:
    geometry = reference_geometry(code, name)
    lon2, lat2 = np.meshgrid(LON, LAT)
    expected = reference_mask(geometry, lat2, lon2)
    got = regions.mask_of(regions.country("XKX" if name else code), LAT, LON)
    assert expected.any()
    np.testing.assert_array_equal(got, expected)


def test_russia_crossing_the_antimeridian_on_a_0_360_grid_and_descending_lat() -> None:
    lat, lon = LAT[::-1], np.arange(0.5, 360, 1.0)
    lon2, lat2 = np.meshgrid(lon, lat)
    expected = reference_mask(reference_geometry("RUS"), lat2, lon2)
    got = regions.mask_of(regions.country("rus"), lat, lon)
    assert expected[:, lon > 180].any() and expected[:, lon < 180].any()
    np.testing.assert_array_equal(got, expected)


def test_curvilinear_grid_gets_one_answer_per_point() -> None:
    j, i = np.meshgrid(np.arange(40), np.arange(30), indexing="ij")
    lat2 = 40.0 + 0.5 * j + 0.1 * i
    lon2 = -5.0 + 0.7 * i - 0.05 * j
    expected = reference_mask(reference_geometry("FRA"), lat2, lon2)
    got = regions.mask_of(regions.country("FRA"), lat2, lon2)
    assert expected.sum() > 20
    np.testing.assert_array_equal(got, expected)


def test_land_is_the_union_of_countries() -> None:
    got = regions.mask_of(regions.land(), LAT, LON)
    lon2, lat2 = np.meshgrid(LON, LAT)
    either = np.zeros_like(got)
    for code in ("DEU", "AUS", "BRA"):
        either |= reference_mask(reference_geometry(code), lat2, lon2)
    assert (got >= either).all()
    assert not got[90, 150 + 180]  # 0.5 N, 150.5 E: Pacific Ocean
    assert 0.2 < got.mean() < 0.35


def test_unknown_country_names_examples() -> None:
    with pytest.raises(BadQuery, match=r"unknown country 'XXX'.*DEU"):
        regions.country("XXX")


def write_geojson(path: Path, ring: list[list[float]]) -> Path:
    doc = {
        "type": "FeatureCollection",
        "features": [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}}],
    }
    path.write_bytes(orjson.dumps(doc))
    return path


def test_geojson_polygon_running_past_180_covers_both_sides(tmp_path: Path) -> None:
    ring = [[170.0, -20.0], [190.0, -20.0], [190.0, -10.0], [170.0, -10.0], [170.0, -20.0]]
    geometry = regions.read_shape(write_geojson(tmp_path / "p.json", ring))
    got = regions.mask_of(geometry, LAT, LON)
    lon2, lat2 = np.meshgrid(LON, LAT)
    expected = (lat2 > -20) & (lat2 < -10) & ((lon2 > 170) | (lon2 < -170))
    np.testing.assert_array_equal(got, expected)


def shapefile_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def square_shapefile(tmp_path: Path) -> dict[str, bytes]:
    base = tmp_path / "square"
    with shapefile.Writer(str(base), shapeType=shapefile.POLYGON) as writer:
        writer.field("name", "C")
        writer.poly([[[10, 40], [10, 50], [20, 50], [20, 40], [10, 40]]])
        writer.record("sq")
    return {f"square{s}": base.with_suffix(s).read_bytes() for s in (".shp", ".shx", ".dbf")}


def test_zipped_shapefile_is_read(tmp_path: Path) -> None:
    upload = tmp_path / "up.zip"
    upload.write_bytes(shapefile_zip(square_shapefile(tmp_path)))
    geometry = regions.read_shape(upload)
    got = regions.mask_of(geometry, LAT, LON)
    lon2, lat2 = np.meshgrid(LON, LAT)
    np.testing.assert_array_equal(got, (lat2 > 40) & (lat2 < 50) & (lon2 > 10) & (lon2 < 20))


@pytest.mark.parametrize(
    ("rename", "message"),
    [
        ("../square.shp", "leaves the archive"),
        ("/tmp/square.shp", "leaves the archive"),
        ("C:/square.shp", "leaves the archive"),
    ],
)
def test_zip_member_traversal_is_refused(tmp_path: Path, rename: str, message: str) -> None:
    members = square_shapefile(tmp_path)
    members[rename] = members.pop("square.shp")
    upload = tmp_path / "up.zip"
    upload.write_bytes(shapefile_zip(members))
    with pytest.raises(BadQuery, match=message):
        regions.read_shape(upload)


def test_zip_link_member_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in square_shapefile(tmp_path).items():
            archive.writestr(name, data)
        link = zipfile.ZipInfo("extra.prj")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    upload = tmp_path / "up.zip"
    upload.write_bytes(buffer.getvalue())
    with pytest.raises(BadQuery, match="is a link"):
        regions.read_shape(upload)


def test_zip_bomb_is_refused_before_extraction(tmp_path: Path) -> None:
    members = square_shapefile(tmp_path)
    members["square.cpg"] = b"\0" * (20 * 1024 * 1024)
    upload = tmp_path / "up.zip"
    upload.write_bytes(shapefile_zip(members))
    assert upload.stat().st_size < 1024 * 1024
    with pytest.raises(BadQuery, match=r"expands \d+ times; at most 100"):
        regions.read_shape(upload)


def test_oversized_upload_and_too_many_members_are_refused(tmp_path: Path) -> None:
    members = square_shapefile(tmp_path)
    upload = tmp_path / "up.zip"
    upload.write_bytes(shapefile_zip(members))
    with pytest.raises(BadQuery, match="at most 100 are allowed"):
        regions.read_shape(upload, regions.UploadLimits(max_bytes=100))
    with pytest.raises(BadQuery, match="holds 3 files; at most 2"):
        regions.read_shape(upload, regions.UploadLimits(max_members=2))
    with pytest.raises(BadQuery, match="unpacks to"):
        regions.read_shape(upload, regions.UploadLimits(max_uncompressed=10))


def test_stray_files_and_non_polygons_are_refused(tmp_path: Path) -> None:
    members = square_shapefile(tmp_path) | {"run.sh": b"echo"}
    upload = tmp_path / "up.zip"
    upload.write_bytes(shapefile_zip(members))
    with pytest.raises(BadQuery, match="one shapefile"):
        regions.read_shape(upload)
    point = tmp_path / "point.json"
    point.write_bytes(orjson.dumps({"type": "Point", "coordinates": [1, 2]}))
    with pytest.raises(BadQuery, match="no polygon"):
        regions.read_shape(point)
    junk = tmp_path / "junk.json"
    junk.write_bytes(b"not json")
    with pytest.raises(BadQuery, match="neither a zipped shapefile nor JSON"):
        regions.read_shape(junk)
