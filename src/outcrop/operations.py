"""Job operations (select, cutout, mask, mean) on lazy `xarray.Dataset`s, and job outputs.

Operations follow isimip-files-api v2 (docs/operations.md there) in names and meaning,
with Outcrop's argument order: `bbox` is `[west, east, south, north]` and `point` is
`[lon, lat]`. docs/jobs-operations.md is the user's version of these rules:

- `select_bbox`: the cells whose centre lies in the box, as a list of series along a new
  dimension `cell` (lat and lon become coordinates of `cell`); good for CSV.
- `cutout_bbox`: the smallest index rectangle holding those cells, as a grid; cells of the
  rectangle outside the box (curvilinear grids only) are NaN. A box crossing the grid's
  seam comes out contiguous, west part first; coordinate values stay as stored.
- `select_point`: the nearest cell's series (grid dimensions dropped); `cutout_point`: the
  nearest cell as a 1x1 grid.
- `mask_*`: the grid unchanged, cells outside the region NaN (see `outcrop.regions`).
- `select_time`: time steps in [start, stop], inclusive, ISO 8601 in the data's calendar;
  a coarser stop covers its whole period (as `outcrop.query`).
- `compute_mean`: per time step, the mean over the grid weighted by cos(latitude),
  skipping NaN (masked) cells; the grid dimensions go away.

West > east means the box crosses the antimeridian. Boxes and points are inclusive.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import xarray as xr

from outcrop import query, regions
from outcrop.errors import BadQuery
from outcrop.model import Query, Selector

UPLOAD_KEYS = {"mask_polygon": "shape", "mask_mask": "mask"}
ARGUMENTS: dict[str, tuple[str, ...]] = {
    "select_bbox": ("bbox",),
    "mask_bbox": ("bbox",),
    "cutout_bbox": ("bbox",),
    "select_point": ("point",),
    "cutout_point": ("point",),
    "mask_country": ("country",),
    "mask_landonly": (),
    "mask_polygon": ("shape",),
    "mask_mask": ("mask", "var"),
    "select_time": ("time",),
    "compute_mean": (),
}
GRIDLESS = ("select_point", "compute_mean")
KEPT_ENCODING = (
    *("dtype", "_FillValue", "missing_value", "scale_factor", "add_offset", "units", "calendar"),
)


@dataclass(frozen=True)
class Operation:
    """One validated operation; `upload` is the client's name for an uploaded part."""

    name: str
    bbox: tuple[float, float, float, float] | None = None
    point: tuple[float, float] | None = None
    country: str | None = None
    upload: str | None = None
    var: str | None = None
    time: tuple[str, str] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The normalised JSON form (stable, for job ids and records)."""
        out: dict[str, Any] = {"operation": self.name}
        for key in ARGUMENTS[self.name]:
            value = self.upload if key == UPLOAD_KEYS.get(self.name) else getattr(self, key)
            out[key] = list(value) if isinstance(value, tuple) else value
        return out


# -- parsing ---------------------------------------------------------------------------
def parse_operations(
    raw: list[dict[str, Any]], uploads: Mapping[str, Path], max_operations: int = 16
) -> tuple[Operation, ...]:
    """Validate a job's operations before it is queued; `BadQuery` names the first problem."""
    if not isinstance(raw, list) or not raw:
        raise BadQuery(
            "operations must be a non-empty list of objects like "
            '{"operation": "mask_country", "country": "DEU"}',
            parameter="operations",
        )
    if len(raw) > max_operations:
        raise BadQuery(
            f"{len(raw)} operations given; at most {max_operations} are allowed",
            parameter="operations",
        )
    ops = tuple(_parse_one(i, item, uploads) for i, item in enumerate(raw))
    _check_chain(ops)
    return ops


def _parse_one(i: int, item: Any, uploads: Mapping[str, Path]) -> Operation:
    where = f"operations[{i}]"
    if not isinstance(item, dict) or not isinstance(item.get("operation"), str):
        raise BadQuery(
            f"{where} must be an object with a string 'operation'", parameter=f"{where}.operation"
        )
    name = item["operation"]
    if name not in ARGUMENTS:
        raise BadQuery(
            f"{where}: unknown operation {name!r}; allowed: {', '.join(ARGUMENTS)}",
            parameter=f"{where}.operation",
        )
    expected = ARGUMENTS[name]
    for key in item:
        if key != "operation" and key not in expected:
            allowed = ", ".join(expected) or "none"
            raise BadQuery(
                f"{where} ({name}): unknown argument {key!r}; allowed: {allowed}",
                parameter=f"{where}.{key}",
            )
    for key in expected:
        if key not in item:
            raise BadQuery(f"{where} ({name}): {key!r} is missing", parameter=f"{where}.{key}")
    return PARSERS[name](_Context(where, name, uploads), item)


@dataclass(frozen=True)
class _Context:
    where: str
    name: str
    uploads: Mapping[str, Path]

    def fail(self, key: str, problem: str) -> BadQuery:
        return BadQuery(f"{self.where} ({self.name}): {problem}", parameter=f"{self.where}.{key}")


def _numbers(ctx: _Context, key: str, value: Any, count: int, form: str) -> list[float]:
    ok = isinstance(value, list) and len(value) == count
    ok = ok and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    if not ok or not all(np.isfinite(v) for v in value):
        raise ctx.fail(key, f"{key} must be {form} (numbers), got {value!r}")
    return [float(v) for v in value]


def _check_lon(ctx: _Context, key: str, label: str, value: float) -> None:
    if not -180.0 <= value <= 360.0:
        raise ctx.fail(key, f"{label} {value} is out of range; allowed: -180 to 360")


def _check_lat(ctx: _Context, key: str, label: str, value: float) -> None:
    if not -90.0 <= value <= 90.0:
        raise ctx.fail(key, f"{label} {value} is out of range; allowed: -90 to 90")


def _parse_bbox(ctx: _Context, item: dict[str, Any]) -> Operation:
    west, east, south, north = _numbers(ctx, "bbox", item["bbox"], 4, "[west, east, south, north]")
    for label, value in (("west", west), ("east", east)):
        _check_lon(ctx, "bbox", label, value)
    for label, value in (("south", south), ("north", north)):
        _check_lat(ctx, "bbox", label, value)
    if south > north:
        raise ctx.fail(
            "bbox", f"south {south} is north of north {north}; give [west, east, south, north]"
        )
    if abs(east - west) > 360.0:
        raise ctx.fail("bbox", f"west {west} and east {east} are more than 360 degrees apart")
    return Operation(ctx.name, bbox=(west, east, south, north))


def _parse_point(ctx: _Context, item: dict[str, Any]) -> Operation:
    lon, lat = _numbers(ctx, "point", item["point"], 2, "[lon, lat]")
    _check_lon(ctx, "point", "longitude", lon)
    _check_lat(ctx, "point", "latitude", lat)
    return Operation(ctx.name, point=(lon, lat))


def _parse_country(ctx: _Context, item: dict[str, Any]) -> Operation:
    code = item["country"]
    if not isinstance(code, str):
        raise ctx.fail("country", f"country must be a string, got {code!r}")
    try:
        regions.country(code)
    except BadQuery as error:
        raise ctx.fail("country", error.message) from error
    return Operation(ctx.name, country=code.upper())


def _parse_nothing(ctx: _Context, item: dict[str, Any]) -> Operation:
    return Operation(ctx.name)


def _upload(ctx: _Context, item: dict[str, Any], key: str) -> tuple[str, Path]:
    name = item[key]
    if not isinstance(name, str) or name not in ctx.uploads:
        given = ", ".join(sorted(ctx.uploads)) or "none"
        raise ctx.fail(
            key,
            f"{key} {name!r} names no uploaded part; send it as a multipart part of that "
            f"name (uploaded: {given})",
        )
    return name, ctx.uploads[name]


def _parse_polygon(ctx: _Context, item: dict[str, Any]) -> Operation:
    name, path = _upload(ctx, item, "shape")
    try:
        regions.read_shape(path)
    except BadQuery as error:
        raise ctx.fail("shape", f"upload {name!r}: {error.message}") from error
    return Operation(ctx.name, upload=name)


def _parse_mask(ctx: _Context, item: dict[str, Any]) -> Operation:
    name, path = _upload(ctx, item, "mask")
    var = item["var"]
    if not isinstance(var, str):
        raise ctx.fail("var", f"var must be the mask variable's name, got {var!r}")
    with _open_mask(ctx, name, path) as mask_ds:
        if var not in mask_ds.data_vars:
            found = ", ".join(map(str, mask_ds.data_vars)) or "none"
            raise ctx.fail("var", f"upload {name!r} has no variable {var!r}; it has: {found}")
    return Operation(ctx.name, upload=name, var=var)


@contextlib.contextmanager
def _open_mask(ctx: _Context, name: str, path: Path) -> Iterator[xr.Dataset]:
    try:
        ds = xr.open_dataset(path, engine="netcdf4")
    except (OSError, ValueError) as error:
        raise ctx.fail("mask", f"upload {name!r} is not a readable NetCDF file") from error
    with ds:
        yield ds


def _parse_time(ctx: _Context, item: dict[str, Any]) -> Operation:
    value = item["time"]
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
        raise ctx.fail("time", f'time must be ["start", "stop"] (ISO 8601), got {value!r}')
    try:
        first, _ = query.parse_time(f"{ctx.where}.time", value[0])
        last, _ = query.parse_time(f"{ctx.where}.time", value[1])
    except BadQuery as error:
        raise ctx.fail("time", error.message) from error
    if _time_key(first, (1, 1, 0, 0, 0)) > _time_key(last, (12, 31, 23, 59, 59)):
        raise ctx.fail("time", f"start {value[0]} is after stop {value[1]}; give the earlier first")
    return Operation(ctx.name, time=(value[0].strip(), value[1].strip()))


def _time_key(parts: dict[str, int | str], fill: tuple[int, ...]) -> tuple[int, ...]:
    names = ("month", "day", "hour", "minute", "second")
    return (int(parts["year"]), *(int(parts.get(n, f)) for n, f in zip(names, fill, strict=True)))


def _check_chain(ops: Sequence[Operation]) -> None:
    gone = None
    for i, op in enumerate(ops):
        if gone is not None and op.name != "select_time":
            raise BadQuery(
                f"operations[{i}] ({op.name}) cannot follow {gone}: no grid is left; put "
                f"{gone} after the region operations",
                parameter=f"operations[{i}]",
            )
        if op.name in GRIDLESS:
            gone = op.name


PARSERS: dict[str, Callable[[_Context, dict[str, Any]], Operation]] = {
    "select_bbox": _parse_bbox,
    "mask_bbox": _parse_bbox,
    "cutout_bbox": _parse_bbox,
    "select_point": _parse_point,
    "cutout_point": _parse_point,
    "mask_country": _parse_country,
    "mask_landonly": _parse_nothing,
    "mask_polygon": _parse_polygon,
    "mask_mask": _parse_mask,
    "select_time": _parse_time,
    "compute_mean": _parse_nothing,
}


# -- applying --------------------------------------------------------------------------
def apply(ds: xr.Dataset, ops: Sequence[Operation], uploads: Mapping[str, Path]) -> xr.Dataset:
    """`ds` after each operation in turn, lazily; `BadQuery` when one does not fit `ds`."""
    for i, op in enumerate(ops):
        try:
            ds = APPLIERS[op.name](ds, op, uploads)
        except BadQuery as error:
            raise BadQuery(
                f"operations[{i}] ({op.name}): {error.message}", parameter=f"operations[{i}]"
            ) from error
    return ds


def _grid(ds: xr.Dataset) -> tuple[xr.Dataset, regions.Grid]:
    grid = regions.find_grid(ds)
    ds = ds.set_coords([n for n in (grid.lat.name, grid.lon.name) if n in ds.data_vars])
    return ds, grid


def _nonempty(found: np.ndarray, grid: regions.Grid, what: str) -> np.ndarray:
    if not found.any():
        lat, lon = grid.centres()
        raise BadQuery(
            f"no grid cell centre lies in {what}; the grid's centres span latitude "
            f"{np.nanmin(lat):g} to {np.nanmax(lat):g}, longitude {np.nanmin(lon):g} to "
            f"{np.nanmax(lon):g}"
        )
    return found


def _select_bbox(ds: xr.Dataset, op: Operation, uploads: Mapping[str, Path]) -> xr.Dataset:
    ds, grid = _grid(ds)
    inside = _nonempty(regions.in_bbox(grid, _bbox(op)), grid, f"bbox {list(_bbox(op))}")
    picked = np.nonzero(inside)
    indexers = {d: xr.DataArray(p, dims="cell") for d, p in zip(grid.dims, picked, strict=True)}
    return ds.isel(indexers)


def _cutout_bbox(ds: xr.Dataset, op: Operation, uploads: Mapping[str, Path]) -> xr.Dataset:
    ds, grid = _grid(ds)
    bbox = _bbox(op)
    inside = _nonempty(regions.in_bbox(grid, bbox), grid, f"bbox {list(bbox)}")
    if grid.regular:
        lat_keep = regions.lat_in(grid.lat.values.astype(float), bbox)
        lon_keep = regions.lon_in(grid.lon.values.astype(float), bbox)
        lon_order = _seam_order(lon_keep, grid.lon.values.astype(float) - bbox[0])
        return ds.isel({grid.dims[0]: _span(lat_keep), grid.dims[1]: lon_order})
    spans = {d: _span(_any_along(inside, k)) for k, d in enumerate(grid.dims)}
    return _where(ds.isel(spans), grid.dims, inside[tuple(spans[d] for d in grid.dims)])


def _any_along(inside: np.ndarray, axis: int) -> np.ndarray:
    others = tuple(a for a in range(inside.ndim) if a != axis)
    found: np.ndarray = np.asarray(inside.any(axis=others))
    return found


def _span(keep: np.ndarray) -> slice:
    found = np.flatnonzero(keep)
    return slice(int(found[0]), int(found[-1]) + 1)


def _seam_order(keep: np.ndarray, offset: np.ndarray) -> slice | np.ndarray:
    """Kept positions as a slice when contiguous, else ordered eastwards from west."""
    found = np.flatnonzero(keep)
    if found[-1] - found[0] + 1 == found.size:
        return slice(int(found[0]), int(found[-1]) + 1)
    return found[np.argsort(offset[found] % 360.0, kind="stable")]


def _select_point(ds: xr.Dataset, op: Operation, uploads: Mapping[str, Path]) -> xr.Dataset:
    ds, grid = _grid(ds)
    at = regions.nearest(grid, _point(op))
    return ds.isel(dict(zip(grid.dims, at, strict=True)))


def _cutout_point(ds: xr.Dataset, op: Operation, uploads: Mapping[str, Path]) -> xr.Dataset:
    ds, grid = _grid(ds)
    at = regions.nearest(grid, _point(op))
    return ds.isel({d: slice(i, i + 1) for d, i in zip(grid.dims, at, strict=True)})


def _where(ds: xr.Dataset, dims: Sequence[str], keep: np.ndarray) -> xr.Dataset:
    """Cells outside `keep` set to NaN in every data variable on the grid."""
    mask = xr.DataArray(keep, dims=tuple(dims))
    out = ds.copy()
    for name, var in ds.data_vars.items():
        if set(dims) <= set(var.dims):
            masked = var.where(mask)
            masked.encoding = dict(var.encoding)
            out[name] = masked.transpose(*var.dims)
    return out


def _mask_region(ds: xr.Dataset, geometry: Any, what: str) -> xr.Dataset:
    ds, grid = _grid(ds)
    lat, lon = grid.centres()
    keep = _nonempty(regions.mask_at(geometry, lat, lon), grid, what)
    return _where(ds, grid.dims, keep)


def _mask_bbox(ds: xr.Dataset, op: Operation, uploads: Mapping[str, Path]) -> xr.Dataset:
    ds, grid = _grid(ds)
    keep = _nonempty(regions.in_bbox(grid, _bbox(op)), grid, f"bbox {list(_bbox(op))}")
    return _where(ds, grid.dims, keep)


def _mask_country(ds: xr.Dataset, op: Operation, uploads: Mapping[str, Path]) -> xr.Dataset:
    code = str(op.country)
    return _mask_region(ds, regions.country(code), f"country {code}")


def _mask_landonly(ds: xr.Dataset, op: Operation, uploads: Mapping[str, Path]) -> xr.Dataset:
    return _mask_region(ds, regions.land(), "land")


def _mask_polygon(ds: xr.Dataset, op: Operation, uploads: Mapping[str, Path]) -> xr.Dataset:
    name = str(op.upload)
    if name not in uploads:
        raise BadQuery(f"the upload {name!r} is missing")
    return _mask_region(ds, regions.read_shape(uploads[name]), f"the shape {name!r}")


def _mask_mask(ds: xr.Dataset, op: Operation, uploads: Mapping[str, Path]) -> xr.Dataset:
    ds, grid = _grid(ds)
    name = str(op.upload)
    if name not in uploads:
        raise BadQuery(f"the upload {name!r} is missing")
    with xr.open_dataset(uploads[name], engine="netcdf4") as mask_ds:
        if op.var not in mask_ds.data_vars:
            raise BadQuery(f"the mask upload {name!r} has no variable {op.var!r}")
        values = regions.values_on(mask_ds, str(op.var), grid)
    keep = np.isfinite(values) & (np.nan_to_num(values) != 0)
    return _where(ds, grid.dims, _nonempty(keep, grid, f"mask {name!r} {op.var}"))


def _select_time(ds: xr.Dataset, op: Operation, uploads: Mapping[str, Path]) -> xr.Dataset:
    name = _time_coordinate(ds)
    start, stop = op.time or ("", "")
    picked = query.apply(ds, Query(selectors=(Selector(name, "range", start=start, stop=stop),)))
    if picked.sizes[ds[name].dims[0]] == 0:
        first, last = ds[name].values[0], ds[name].values[-1]
        raise BadQuery(f"no time step lies in {start} to {stop}; the data run {first} to {last}")
    return picked


def _time_coordinate(ds: xr.Dataset) -> str:
    for name, coord in ds.coords.items():
        values = coord.values
        is_time = values.dtype.kind == "M" or (values.size > 0 and _is_cftime(values.flat[0]))
        if coord.ndim == 1 and name in ds.dims and is_time:
            return str(name)
    raise BadQuery("the dataset has no decoded time coordinate to select on")


def _compute_mean(ds: xr.Dataset, op: Operation, uploads: Mapping[str, Path]) -> xr.Dataset:
    ds, grid = _grid(ds)
    weights = xr.DataArray(np.cos(np.radians(grid.lat.values.astype(float))), dims=grid.lat.dims)
    dims = set(grid.dims)
    out = {}
    for name, var in ds.data_vars.items():
        if dims <= set(var.dims):
            mean = var.weighted(weights.fillna(0.0)).mean(grid.dims)
            out[name] = mean.assign_attrs(var.attrs)
        elif not dims & set(var.dims):
            out[name] = var
    kept = {n: c for n, c in ds.coords.items() if not dims & set(c.dims)}
    return xr.Dataset(out, coords=kept, attrs=ds.attrs)


def _bbox(op: Operation) -> tuple[float, float, float, float]:
    assert op.bbox is not None
    return op.bbox


def _point(op: Operation) -> tuple[float, float]:
    assert op.point is not None
    return op.point


Applier = Callable[[xr.Dataset, Operation, Mapping[str, Path]], xr.Dataset]
APPLIERS: dict[str, Applier] = {
    "select_bbox": _select_bbox,
    "mask_bbox": _mask_bbox,
    "cutout_bbox": _cutout_bbox,
    "select_point": _select_point,
    "cutout_point": _cutout_point,
    "mask_country": _mask_country,
    "mask_landonly": _mask_landonly,
    "mask_polygon": _mask_polygon,
    "mask_mask": _mask_mask,
    "select_time": _select_time,
    "compute_mean": _compute_mean,
}


# -- describing ------------------------------------------------------------------------
def describe(op: Operation) -> str:
    """One line for a person reading the job's README.txt (no server paths)."""
    if op.bbox is not None:
        west, east, south, north = op.bbox
        box = f"longitude {west:g} to {east:g}, latitude {south:g} to {north:g}"
        box += " (crossing the antimeridian)" if west > east else ""
        return {
            "select_bbox": f"select_bbox: the series of every cell centred in {box}",
            "cutout_bbox": f"cutout_bbox: the grid cut to {box}",
            "mask_bbox": f"mask_bbox: cells centred outside {box} set to missing",
        }[op.name]
    if op.point is not None:
        what = "series" if op.name == "select_point" else "1x1 grid"
        where = f"longitude {op.point[0]:g}, latitude {op.point[1]:g}"
        return f"{op.name}: the {what} of the cell nearest {where}"
    return DESCRIPTIONS[op.name](op)


DESCRIPTIONS: dict[str, Callable[[Operation], str]] = {
    "mask_country": lambda op: (
        f"mask_country: cells centred outside {op.country} (Natural Earth 1:110m) set to missing"
    ),
    "mask_landonly": lambda op: (
        "mask_landonly: cells centred outside land (Natural Earth 1:110m countries) set to missing"
    ),
    "mask_polygon": lambda op: (
        f"mask_polygon: cells centred outside the uploaded shape {op.upload!r} set to missing"
    ),
    "mask_mask": lambda op: (
        f"mask_mask: cells where {op.var} of the uploaded {op.upload!r} is 0 or missing set to "
        "missing"
    ),
    "select_time": lambda op: (
        f"select_time: time steps from {op.time[0] if op.time else ''} to "
        f"{op.time[1] if op.time else ''}, inclusive"
    ),
    "compute_mean": lambda op: (
        "compute_mean: mean over the grid per time step, weighted by cos(latitude), missing "
        "cells skipped"
    ),
}


# -- writing ---------------------------------------------------------------------------
def write_output(ds: xr.Dataset, path: Path, fmt: Literal["netcdf", "csv"]) -> None:
    """Write the result: NetCDF4 (zlib, CF encodings kept) or CSV (one row per cell and
    time step with a value; rows where every value is missing are left out)."""
    if fmt == "netcdf":
        # Written through h5py (its own HDF5), not libnetcdf: the sources are read through
        # libnetcdf under the grid driver's lock, which xarray's netCDF4 writer does not
        # take, and libnetcdf is not thread-safe ("NetCDF: HDF error", or a crash).
        ds.to_netcdf(path, engine="h5netcdf", format="NETCDF4", encoding=_encodings(ds))
    elif fmt == "csv":
        pacsv.write_csv(_table(ds), str(path))
    else:
        raise BadQuery(f"unknown output format {fmt!r}; allowed: netcdf, csv", parameter="format")


def _encodings(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    out = {}
    for name, var in ds.variables.items():
        kept = {k: v for k, v in var.encoding.items() if k in KEPT_ENCODING}
        packed = np.dtype(kept.get("dtype", var.dtype)).kind in "iu" and var.dtype.kind == "f"
        if packed and "_FillValue" not in kept and "missing_value" not in kept:
            kept = {k: v for k, v in kept.items() if k in ("units", "calendar")}
        if var.ndim > 0 and var.dtype.kind in "fiub":
            kept.update(zlib=True, complevel=4, shuffle=True, chunksizes=_chunks(var))
        out[str(name)] = kept
    return out


def _chunks(var: xr.Variable) -> tuple[int, ...]:
    """Output chunks: the source's (dask) chunks where it has them, else one step of the
    first dimension; the values arrive in those pieces, so each chunk is written once
    (libraries' default chunks would be compressed again for every piece)."""
    if var.chunks:
        return tuple(max(1, min(c[0], n)) for c, n in zip(var.chunks, var.shape, strict=True))
    return tuple(1 if i == 0 and var.ndim > 1 else max(n, 1) for i, n in enumerate(var.shape))


def _table(ds: xr.Dataset) -> pa.Table:
    names = _tabular_variables(ds)
    subset = _cftime_as_text(ds[names])
    frame = subset.to_dataframe().dropna(how="all", subset=names).reset_index()
    table = pa.Table.from_pandas(frame, preserve_index=False)
    for i, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type):
            seconds = pc.cast(table.column(i), pa.timestamp("s"), safe=False)
            text = pc.strftime(seconds, format="%Y-%m-%dT%H:%M:%S")
            table = table.set_column(i, field.name, text)
    return table


def _tabular_variables(ds: xr.Dataset) -> list[str]:
    """The data variables with the most dimensions (bounds and grid-mapping left out)."""
    references = {str(v.attrs.get(k)) for v in ds.variables.values() for k in ("bounds",)}
    references |= {str(v.attrs.get("grid_mapping")) for v in ds.variables.values()}
    names = [str(n) for n in ds.data_vars if n not in references and ds[n].ndim > 0]
    if not names:
        raise BadQuery("the result has no data variable to write as CSV", parameter="format")
    widest = max(ds[n].ndim for n in names)
    first = next(n for n in names if ds[n].ndim == widest)
    return [n for n in names if set(ds[n].dims) == set(ds[first].dims)]


def _cftime_as_text(ds: xr.Dataset) -> xr.Dataset:
    """cftime coordinates as ISO text (pyarrow has no type for other calendars)."""
    for name, coord in ds.coords.items():
        values = coord.values
        if values.dtype == object and values.size and _is_cftime(values.flat[0]):
            text = np.array([t.isoformat() for t in values.ravel()]).reshape(values.shape)
            ds = ds.assign_coords({name: (coord.dims, text)})
    return ds


def _is_cftime(value: Any) -> bool:
    return type(value).__module__.startswith("cftime")
