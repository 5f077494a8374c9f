"""Regions on a dataset's own grid: Natural Earth countries, land, uploaded polygons.

Rules (docs/jobs-operations.md says the same to users):

- A grid cell belongs to a region when its centre lies strictly inside the polygon
  (`shapely.contains_xy`); cells cut by the border count only by their centre.
- Longitudes are compared in -180..180: grid longitudes in 0..360 are wrapped, and parts
  of a polygon east of 180 (e.g. drawn 170..190) are moved west by 360, so a polygon
  crossing the antimeridian may be drawn either split at 180 (RFC 7946 §3.1.9) or
  running past 180.
- Countries come from the Natural Earth 1:110m countries shipped in `outcrop/data`, by
  ISO 3166-1 alpha-3 code. Records whose `iso_a3` is `-99` get a code from their name
  (`NAMED_CODES`: Kosovo → XKX, and France/Norway for Natural Earth versions that lack
  theirs). Land is the union of all countries, Antarctica included.
- Uploads: GeoJSON (Geometry, Feature or FeatureCollection of (Multi)Polygons) or a
  zipped shapefile, checked before anything is extracted (`UploadLimits`).
"""

from __future__ import annotations

import functools
import stat
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import orjson
import shapefile
import shapely
import shapely.affinity
import xarray as xr
from shapely.geometry import shape as geojson_shape
from shapely.geometry.base import BaseGeometry

from outcrop.errors import BadQuery

NATURAL_EARTH = Path(__file__).parent / "data" / "naturalearth_lowres" / "naturalearth_lowres.shp"
NAMED_CODES = {"Kosovo": "XKX", "France": "FRA", "Norway": "NOR"}
LATITUDE_UNITS = frozenset({"degrees_north", "degree_north", "degrees_n", "degree_n"})
LONGITUDE_UNITS = frozenset({"degrees_east", "degree_east", "degrees_e", "degree_e"})
LATITUDE_NAMES = ("lat", "latitude", "nav_lat")
LONGITUDE_NAMES = ("lon", "longitude", "nav_lon")
SHAPEFILE_SUFFIXES = frozenset({".shp", ".shx", ".dbf", ".prj", ".cpg"})
MASK_TOLERANCE = 1e-3  # degrees: a mask cell matches a data cell this close
WORLD = shapely.box(-180.0, -90.0, 180.0, 90.0)


@dataclass(frozen=True)
class UploadLimits:
    """What an uploaded shape may be; anything beyond is refused before extraction."""

    max_bytes: int = 32 * 1024 * 1024
    max_members: int = 8
    max_uncompressed: int = 128 * 1024 * 1024
    max_ratio: float = 100.0


# -- countries -------------------------------------------------------------------------
@functools.cache
def countries() -> dict[str, BaseGeometry]:
    """Natural Earth country geometries by ISO 3166-1 alpha-3 code."""
    with shapefile.Reader(str(NATURAL_EARTH)) as reader:
        found: dict[str, BaseGeometry] = {}
        for item in reader.iterShapeRecords():
            code = _country_code(item.record["iso_a3"], item.record["name"])
            if code is not None:
                found[code] = shapely.make_valid(geojson_shape(item.shape.__geo_interface__))
    return found


def _country_code(iso_a3: str, name: str) -> str | None:
    if len(iso_a3) == 3 and iso_a3.isalpha():
        return iso_a3.upper()
    return NAMED_CODES.get(name)


def country(code: str) -> BaseGeometry:
    """The country's geometry; `BadQuery` naming some valid codes when unknown."""
    found = countries().get(code.upper())
    if found is None:
        raise BadQuery(
            f"unknown country {code!r}; give an ISO 3166-1 alpha-3 code of a Natural Earth "
            "country, e.g. DEU, FRA, BRA, AUS"
        )
    return found


@functools.cache
def land() -> BaseGeometry:
    """All countries together (Natural Earth 1:110m, Antarctica included)."""
    return shapely.union_all(list(countries().values()))


# -- uploads ---------------------------------------------------------------------------
def read_shape(path: Path, limits: UploadLimits = UploadLimits()) -> BaseGeometry:
    """The (multi)polygon in an uploaded GeoJSON document or zipped shapefile."""
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise BadQuery(f"the upload has {size} bytes; at most {limits.max_bytes} are allowed")
    with path.open("rb") as file:
        magic = file.read(4)
    geometry = (
        _read_zipped_shapefile(path, limits) if magic == b"PK\x03\x04" else _read_geojson(path)
    )
    return _polygonal(geometry)


def _read_geojson(path: Path) -> BaseGeometry:
    try:
        document = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as error:
        raise BadQuery(
            f"the upload is neither a zipped shapefile nor JSON ({error}); send GeoJSON "
            "or a .zip holding .shp, .shx, .dbf (and .prj)"
        ) from error
    if not isinstance(document, dict):
        raise BadQuery("the GeoJSON upload must be an object (Geometry, Feature or collection)")
    return shapely.union_all([_geojson_geometry(g) for g in _geojson_geometries(document)])


def _geojson_geometries(document: dict[str, Any]) -> list[dict[str, Any]]:
    kind = document.get("type")
    if kind == "FeatureCollection":
        features = document.get("features")
        if not isinstance(features, list) or not features:
            raise BadQuery("the GeoJSON FeatureCollection has no features")
        return [g for f in features for g in _geojson_geometries(f if isinstance(f, dict) else {})]
    if kind == "Feature":
        geometry = document.get("geometry")
        return [geometry] if isinstance(geometry, dict) else []
    return [document]


def _geojson_geometry(geometry: dict[str, Any]) -> BaseGeometry:
    try:
        return geojson_shape(geometry)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as error:
        raise BadQuery(
            f"the GeoJSON upload holds an invalid geometry ({error}); give Polygon or "
            "MultiPolygon geometries with [longitude, latitude] positions"
        ) from error


def _read_zipped_shapefile(path: Path, limits: UploadLimits) -> BaseGeometry:
    try:
        with zipfile.ZipFile(path) as archive:
            members = check_zip(archive, limits)
            with tempfile.TemporaryDirectory(prefix="outcrop-shape-") as tmp:
                for member in members:
                    target = Path(tmp) / PurePosixPath(member.filename).name
                    target.write_bytes(archive.read(member))
                return _read_shapefile(next(Path(tmp).glob("*.shp")))
    except zipfile.BadZipFile as error:
        raise BadQuery(f"the upload is not a readable zip file ({error})") from error


def check_zip(archive: zipfile.ZipFile, limits: UploadLimits) -> list[zipfile.ZipInfo]:
    """The shapefile members, after refusing bombs, traversal, links and stray files."""
    members = [m for m in archive.infolist() if not m.is_dir()]
    if len(members) > limits.max_members:
        raise BadQuery(
            f"the zip holds {len(members)} files; at most {limits.max_members} are allowed "
            "(one shapefile: .shp, .shx, .dbf, .prj, .cpg)"
        )
    for member in archive.infolist():
        _check_member(member, limits)
    total = sum(m.file_size for m in members)
    if total > limits.max_uncompressed:
        raise BadQuery(
            f"the zip unpacks to {total} bytes; at most {limits.max_uncompressed} are allowed"
        )
    return _shapefile_members(members)


def _check_member(member: zipfile.ZipInfo, limits: UploadLimits) -> None:
    name = member.filename
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
        raise BadQuery(f"the zip member name {name!r} leaves the archive; use plain file names")
    if stat.S_ISLNK(member.external_attr >> 16):
        raise BadQuery(f"the zip member {name!r} is a link; only regular files are allowed")
    ratio = member.file_size / max(member.compress_size, 1)
    if ratio > limits.max_ratio:
        raise BadQuery(
            f"the zip member {name!r} expands {ratio:.0f} times; at most {limits.max_ratio:.0f} "
            "is allowed"
        )


def _shapefile_members(members: list[zipfile.ZipInfo]) -> list[zipfile.ZipInfo]:
    suffixes = [PurePosixPath(m.filename).suffix.lower() for m in members]
    stray = [
        m.filename for m, s in zip(members, suffixes, strict=True) if s not in SHAPEFILE_SUFFIXES
    ]
    if stray or suffixes.count(".shp") != 1 or ".shx" not in suffixes or ".dbf" not in suffixes:
        raise BadQuery(
            f"the zip must hold one shapefile (.shp, .shx, .dbf, optionally .prj and .cpg) "
            f"and nothing else; it holds {', '.join(m.filename for m in members) or 'nothing'}"
        )
    names = [PurePosixPath(m.filename).name for m in members]
    if len(set(names)) != len(names):
        raise BadQuery("the zip holds two files of the same name in different folders")
    return members


def _read_shapefile(path: Path) -> BaseGeometry:
    prj = path.with_suffix(".prj")
    if prj.exists() and "PROJCS" in prj.read_text(errors="replace").upper():
        raise BadQuery(
            "the shapefile is in a projected coordinate system; give it in geographic "
            "longitude/latitude (WGS84, EPSG:4326)"
        )
    try:
        with shapefile.Reader(str(path)) as reader:
            shapes = [geojson_shape(s.__geo_interface__) for s in reader.iterShapes()]
    except (shapefile.ShapefileException, ValueError, TypeError, IndexError) as error:
        raise BadQuery(f"the shapefile cannot be read ({error})") from error
    return shapely.union_all(shapes)


def _polygonal(geometry: BaseGeometry) -> BaseGeometry:
    polygons = shapely.get_parts(shapely.make_valid(geometry))
    kept = [p for p in polygons if p.geom_type in ("Polygon", "MultiPolygon") and not p.is_empty]
    if not kept:
        raise BadQuery(
            f"the upload holds no polygon ({geometry.geom_type}); give Polygon or MultiPolygon"
        )
    result = shapely.union_all(kept)
    minx, miny, maxx, maxy = result.bounds
    if miny < -90 or maxy > 90 or minx < -180 or maxx > 360:
        raise BadQuery(
            f"the shape's bounds {result.bounds} are not longitude/latitude; give longitudes "
            "in -180..360 and latitudes in -90..90 (WGS84)"
        )
    return result


# -- grids -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Grid:
    """A dataset's cell centres: regular (1-D lat and lon on two dimensions) or pointwise
    (lat and lon on the same dimensions: curvilinear 2-D, or a list of cells)."""

    lat: xr.DataArray
    lon: xr.DataArray

    @property
    def regular(self) -> bool:
        return self.lat.ndim == 1 and self.lon.ndim == 1 and self.lat.dims != self.lon.dims

    @property
    def dims(self) -> tuple[str, ...]:
        if self.regular:
            return (str(self.lat.dims[0]), str(self.lon.dims[0]))
        return tuple(str(d) for d in self.lat.dims)

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Latitude and longitude of every cell, shaped like the grid (`dims`)."""
        lat, lon = xr.broadcast(self.lat, self.lon)
        return (
            np.asarray(lat.transpose(*self.dims).values, dtype=float),
            np.asarray(lon.transpose(*self.dims).values, dtype=float),
        )


def find_grid(ds: xr.Dataset) -> Grid:
    """The latitude and longitude coordinates, by CF units/standard_name, then by name."""
    lat = _find_coordinate(ds, "latitude", LATITUDE_UNITS, LATITUDE_NAMES)
    lon = _find_coordinate(ds, "longitude", LONGITUDE_UNITS, LONGITUDE_NAMES)
    if lat is None or lon is None:
        raise BadQuery(
            "the dataset has no latitude/longitude coordinates (units degrees_north and "
            "degrees_east, or named lat/lon); region operations need them"
        )
    grid = Grid(lat=lat, lon=lon)
    if not grid.regular and set(lat.dims) != set(lon.dims):
        raise BadQuery(
            f"latitude {lat.name!r} {lat.dims} and longitude {lon.name!r} {lon.dims} do not "
            "form a grid; region operations need 1-D lat and lon, or both on the same dims"
        )
    return grid


def _find_coordinate(
    ds: xr.Dataset, standard_name: str, units: frozenset[str], names: Iterable[str]
) -> xr.DataArray | None:
    bounds = {str(v.attrs.get("bounds")) for v in ds.variables.values()}
    candidates = [ds[n] for n in [*ds.coords, *ds.data_vars] if n not in bounds]
    candidates = [c for c in candidates if c.ndim in (1, 2) and c.dtype.kind in "fiu"]
    for match in (
        lambda c: c.attrs.get("standard_name") == standard_name,
        lambda c: str(c.attrs.get("units", "")).lower() in units,
        lambda c: str(c.name).lower() in names,
    ):
        found: list[xr.DataArray] = [c for c in candidates if match(c)]
        if found:
            return found[0]
    return None


def wrap(lon: np.ndarray) -> np.ndarray:
    """Longitudes moved into -180..180 (180 itself becomes -180)."""
    return (np.asarray(lon, dtype=float) + 180.0) % 360.0 - 180.0


def unwrap_geometry(geometry: BaseGeometry) -> BaseGeometry:
    """`geometry` with any part east of 180 moved west by 360, so it lies in -180..180."""
    if geometry.bounds[2] <= 180.0:
        return geometry
    east = shapely.affinity.translate(
        shapely.intersection(geometry, shapely.box(180.0, -90.0, 540.0, 90.0)), xoff=-360.0
    )
    return shapely.union(shapely.intersection(geometry, WORLD), east)


def mask_of(geometry: BaseGeometry, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Cells whose centre lies in `geometry`: 1-D lat and lon give the (lat, lon) grid,
    equal-shaped arrays give one answer per point (curvilinear grids)."""
    lat, lon = np.asarray(lat, dtype=float), np.asarray(lon, dtype=float)
    if lat.ndim == 1 and lon.ndim == 1:
        lon2, lat2 = np.meshgrid(lon, lat)
        return mask_at(geometry, lat2, lon2)
    return mask_at(geometry, lat, lon)


def mask_at(geometry: BaseGeometry, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Point by point: is (lon, lat) strictly inside `geometry`?"""
    geometry = unwrap_geometry(geometry)
    x, y = wrap(lon).ravel(), np.asarray(lat, dtype=float).ravel()
    minx, miny, maxx, maxy = geometry.bounds
    near = (x >= minx) & (x <= maxx) & (y >= miny) & (y <= maxy)
    inside = np.zeros(x.shape, dtype=bool)
    shapely.prepare(geometry)
    inside[near] = shapely.contains_xy(geometry, x[near], y[near])
    return inside.reshape(np.shape(lat))


# -- places on a grid ------------------------------------------------------------------
def in_bbox(grid: Grid, bbox: tuple[float, float, float, float]) -> np.ndarray:
    """Cells whose centre lies in the box, inclusive; west > east crosses the antimeridian."""
    lat, lon = grid.centres()
    found: np.ndarray = lat_in(lat, bbox) & lon_in(lon, bbox)
    return found


def lat_in(lat: np.ndarray, bbox: tuple[float, float, float, float]) -> np.ndarray:
    return (lat >= bbox[2]) & (lat <= bbox[3])


def lon_in(lon: np.ndarray, bbox: tuple[float, float, float, float]) -> np.ndarray:
    west, east = bbox[0], bbox[1]
    width = east - west if east >= west else east - west + 360.0
    return (width >= 360.0) | ((lon - west) % 360.0 <= width)


def nearest(grid: Grid, point: tuple[float, float]) -> tuple[int, ...]:
    """The grid position of the cell nearest `point` (great-circle); BadQuery when the point
    is further from it than the spacing of the grid there."""
    lat, lon = grid.centres()
    distance = angle(lat, lon, point[1], point[0])
    at = np.unravel_index(int(np.nanargmin(distance)), lat.shape)
    spacing = [
        angle(lat[at], lon[at], lat[_step(at, k, lat.shape)], lon[_step(at, k, lat.shape)])
        for k in range(lat.ndim)
        if lat.shape[k] > 1
    ]
    if spacing and distance[at] > 0.75 * max(spacing):
        raise BadQuery(
            f"point {list(point)} lies outside the grid (nearest cell centre at "
            f"[{lon[at]:g}, {lat[at]:g}], {distance[at]:.3g} degrees away)"
        )
    return tuple(int(i) for i in at)


def _step(at: tuple[Any, ...], axis: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    moved = list(at)
    moved[axis] = moved[axis] + 1 if moved[axis] + 1 < shape[axis] else moved[axis] - 1
    return tuple(int(i) for i in moved)


def angle(lat1: Any, lon1: Any, lat2: Any, lon2: Any) -> Any:
    """Great-circle angle in degrees (haversine)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dlon = np.radians(np.asarray(lon2) - np.asarray(lon1))
    h = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlon / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0))))


def match_axis(axis: np.ndarray, wanted: np.ndarray, tolerance: float) -> np.ndarray | None:
    """Positions in `axis` of each wanted value, or None when one is not there."""
    order = np.argsort(axis)
    ordered = axis[order]
    right = np.clip(np.searchsorted(ordered, wanted), 0, ordered.size - 1)
    left = np.clip(right - 1, 0, ordered.size - 1)
    closer = np.abs(ordered[left] - wanted) < np.abs(ordered[right] - wanted)
    k = np.where(closer, left, right)
    if np.any(np.abs(ordered[k] - wanted) > tolerance):
        return None
    found: np.ndarray = np.asarray(order[k])
    return found


def values_on(mask_ds: xr.Dataset, var: str, grid: Grid) -> np.ndarray:
    """The mask variable's values at the dataset's cell centres (same grid, any subset)."""
    mask_grid = find_grid(mask_ds)
    mask = mask_ds[var].squeeze(drop=True)
    if set(mask.dims) != set(mask_grid.dims):
        raise BadQuery(
            f"the mask variable {var} has dimensions {mask.dims}; it must lie on the "
            f"latitude/longitude grid {mask_grid.dims} only"
        )
    lat, lon = grid.centres()
    if not mask_grid.regular:
        m_lat, m_lon = mask_grid.centres()
        if m_lat.shape != lat.shape or not (
            np.allclose(m_lat, lat, atol=MASK_TOLERANCE)
            and np.allclose(wrap(m_lon), wrap(lon), atol=MASK_TOLERANCE)
        ):
            raise BadQuery(f"the mask variable {var} is on a different grid than the dataset")
        return np.asarray(mask.transpose(*mask_grid.dims).values, dtype=float)
    return _lookup_regular(mask.transpose(*mask_grid.dims), mask_grid, lat, lon)


def _lookup_regular(
    mask: xr.DataArray, mask_grid: Grid, lat: np.ndarray, lon: np.ndarray
) -> np.ndarray:
    m_lat = mask_grid.lat.values.astype(float)
    m_lon = wrap(mask_grid.lon.values)
    i = match_axis(m_lat, lat.ravel(), MASK_TOLERANCE)
    j = match_axis(m_lon, wrap(lon.ravel()), MASK_TOLERANCE)
    if i is None or j is None:
        raise BadQuery(
            "the mask's grid is not the dataset's: some cell centres of the dataset are not "
            f"centres of the mask (within {MASK_TOLERANCE} degrees)"
        )
    values: np.ndarray = np.asarray(mask.values, dtype=float)[i, j].reshape(lat.shape)
    return values
