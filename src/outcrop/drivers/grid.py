"""Gridded files through xarray: NetCDF3, NetCDF4/HDF5 (with groups), Zarr v2/v3, and
aggregations of many files along one dimension."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from outcrop.drivers import Probe, Source, stored_form
from outcrop.errors import SourceError
from outcrop.model import StoredChunks, StoredGroup, StoredVariable

if TYPE_CHECKING:
    import xarray as xr

NETCDF_SUFFIXES = frozenset({".nc", ".nc4", ".cdf", ".netcdf", ".h5", ".hdf5", ".he5", ".hdf"})
ZARR_MARKERS = ("zarr.json", ".zgroup", ".zmetadata", ".zarray")
NETCDF_LOCK = threading.RLock()
# netCDF-4 stores a variable named like a dimension it is not the coordinate of under
# this prefix (and its dimension under the plain name).
NON_COORD = "_nc4_non_coord_"
NETCDF_CHUNK_CACHE = 4 << 20
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# How netCDF-4 marks an HDF5 dataset that is only a dimension, not a variable.
NETCDF_DIM_ONLY = b"This is a netCDF dimension but not a netCDF variable"


def is_zarr(path: Path) -> bool:
    return path.is_dir() and any((path / m).exists() for m in ZARR_MARKERS)


def is_hdf5(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(8) == HDF5_SIGNATURE
    except OSError:
        return False


class GridDriver:
    """Lazy, dask-backed `xarray.Dataset`s from gridded files."""

    name = "grid"

    def can_open(self, path: Path) -> bool:
        return is_zarr(path) or (path.is_file() and path.suffix.lower() in NETCDF_SUFFIXES)

    def open(self, source: Source, stored: bool = False) -> xr.Dataset:
        """The dataset, decoded; `stored=True`: as stored (a single NetCDF/HDF5 file is
        opened undecoded, anything else is encoded as `to_netcdf` would write it)."""
        if source.aggregate is not None:
            ds = open_aggregation(source)
            return stored_form(ds) if stored else ds
        if len(source.paths) != 1:
            raise SourceError(
                f"{len(source.paths)} files but no dimension to aggregate them along; "
                'declare `aggregate = "<dimension>"` for this dataset'
            )
        path = source.paths[0]
        if stored and not is_zarr(path):
            return open_one(path, source.group, decode=False)
        ds = open_one(path, source.group)
        return stored_form(ds) if stored else ds

    def probe(self, path: Path) -> Probe:
        """Title and groups of a file, read without xarray (fast enough for big scans)."""
        from outcrop.drivers.timeseries import is_time_series

        if is_zarr(path):
            groups = tuple(zarr_groups_with_arrays(path))
            series = tuple(g for g in groups if is_time_series(path, g or None))
            return Probe(title=_zarr_title(path), groups=groups, series=series)
        return _netcdf_probe(path)


# What opening a file that is missing, unreadable or not what its name says raises:
# libnetcdf and h5py raise OSError, xarray ValueError (no engine), zarr KeyError/TypeError.
OPEN_ERRORS = (OSError, ValueError, KeyError, TypeError, IndexError, RuntimeError)


def open_one(path: Path, group: str | None = None, decode: bool = True) -> xr.Dataset:
    """One file or Zarr store; `decode=False` (NetCDF/HDF5 only): values as stored."""
    import xarray as xr

    where = f"{path.name}" + (f" group {group!r}" if group else "")
    try:
        if is_zarr(path):
            store: xr.Dataset = xr.open_zarr(
                path,
                group=group,
                chunks={},
                consolidated=is_consolidated(path),
                decode_timedelta=False,
            )
            return store
        # libnetcdf is not thread-safe: every open and every read holds the same lock.
        with NETCDF_LOCK:
            bound_chunk_cache()
            ds: xr.Dataset = xr.open_dataset(
                path,
                engine="netcdf4",
                group=group,
                chunks={},
                decode_timedelta=False,
                decode_cf=decode,
                lock=NETCDF_LOCK,
            )
            return ds
    except OPEN_ERRORS as exc:
        raise SourceError(f"cannot open {where}: {exc}") from exc


def bound_chunk_cache() -> None:
    """Files opened from now on cache at most NETCDF_CHUNK_CACHE bytes of decoded chunks
    per variable. libnetcdf's default (64 MB per variable of every open file) would let
    the open-file cache hold gigabytes; reads here take whole chunks or slabs anyway."""
    import netCDF4

    if netCDF4.get_chunk_cache()[0] != NETCDF_CHUNK_CACHE:
        netCDF4.set_chunk_cache(NETCDF_CHUNK_CACHE)


def is_consolidated(path: Path) -> bool:
    """Whether a Zarr store has consolidated metadata (v2 `.zmetadata`, v3 in `zarr.json`)."""
    if (path / ".zmetadata").is_file():
        return True
    doc = path / "zarr.json"
    try:
        return doc.is_file() and bool(json.loads(doc.read_text()).get("consolidated_metadata"))
    except (OSError, ValueError):
        return False


def open_aggregation(source: Source) -> xr.Dataset:
    """Join files along `source.aggregate`; their coordinates must be sorted and disjoint.

    The files may be listed in any order: they are joined in the order of their first
    coordinate value. Everything but the aggregated dimension must be the same in all.
    """
    import xarray as xr

    dim = source.aggregate or "time"
    parts = [open_one(p, source.group) for p in source.paths]
    try:
        paths, parts = _ordered(list(source.paths), parts, dim)
        _check_alike(paths, parts, dim)
        return xr.concat(
            parts,
            dim=dim,
            data_vars="minimal",
            coords="minimal",
            compat="override",
            join="override",
            combine_attrs="override",
        )
    except SourceError:
        for part in parts:
            part.close()
        raise
    except (ValueError, KeyError, TypeError) as exc:
        for part in parts:
            part.close()
        raise SourceError(f"cannot aggregate {len(parts)} files along {dim!r}: {exc}") from exc


def _ordered(
    paths: list[Path], parts: list[xr.Dataset], dim: str
) -> tuple[list[Path], list[xr.Dataset]]:
    """Files in coordinate order; each sorted inside, none overlapping the next."""
    for path, part in zip(paths, parts, strict=True):
        if dim not in part.dims:
            dims = ", ".join(map(str, part.dims)) or "none"
            raise SourceError(
                f"{path.name} has no dimension {dim!r} to aggregate along (its dimensions: {dims})"
            )
    if not all(dim in part.coords for part in parts):
        return paths, parts  # no coordinate values to order by: keep the files' order
    for path, part in zip(paths, parts, strict=True):
        _check_increasing(path, part[dim].values, dim)
    pairs = [(p, d) for p, d in zip(paths, parts, strict=True) if d.sizes[dim]]
    try:
        pairs.sort(key=lambda pair: pair[1][dim].values[0])
    except TypeError as exc:
        raise SourceError(f"the files' {dim!r} values cannot be compared: {exc}") from exc
    for (path_a, a), (path_b, b) in pairwise(pairs):
        last, first = a[dim].values[-1], b[dim].values[0]
        if not first > last:
            raise SourceError(
                f"{path_b.name}: {dim!r} starts at {first}, which overlaps {path_a.name} "
                f"ending at {last}; files of an aggregation must not overlap"
            )
    return [p for p, _ in pairs], [d for _, d in pairs]


def _check_increasing(path: Path, values: Any, dim: str) -> None:
    try:
        increasing = len(values) < 2 or bool(np.all(values[1:] > values[:-1]))
    except TypeError as exc:
        raise SourceError(f"{path.name}: {dim!r} values cannot be compared: {exc}") from exc
    if not increasing:
        raise SourceError(
            f"{path.name}: coordinate {dim!r} is not strictly increasing inside the file; "
            "an aggregation needs each file sorted along it"
        )


def _check_alike(paths: list[Path], parts: list[xr.Dataset], dim: str) -> None:
    """Every other dimension coordinate must equal the first file's, or data would shift."""
    first_path, first = paths[0], parts[0]
    for path, part in zip(paths[1:], parts[1:], strict=True):
        for name, index in first.indexes.items():
            if name == dim:
                continue
            other = part.indexes.get(name)
            if other is None or not index.equals(other):
                raise SourceError(
                    f"{path.name}: coordinate {name!r} differs from {first_path.name}'s; "
                    f"files of an aggregation may differ only along {dim!r}"
                )


def _netcdf_probe(path: Path) -> Probe:
    """Title, groups holding variables, and which of them are time series, of a NetCDF or
    HDF5 file, in one libnetcdf open (metadata only)."""
    import netCDF4

    from outcrop.drivers.timeseries import netcdf_is_time_series

    try:
        with NETCDF_LOCK, netCDF4.Dataset(path) as nc:
            groups = tuple(netcdf_groups_with_variables(nc))
            series = tuple(g for g in groups if netcdf_is_time_series(nc[g] if g else nc))
            return Probe(title=str(getattr(nc, "title", "")), groups=groups, series=series)
    except (OSError, IndexError, KeyError) as exc:
        raise SourceError(f"cannot open {path.name}: {exc}") from exc


def netcdf_groups_with_variables(nc: Any) -> list[str]:
    """Paths (`a/b`) of the groups of an open netCDF4 dataset that hold variables, `""`
    for the root; the root alone when none does, so every readable file is a dataset."""
    found: list[str] = []

    def walk(group: Any, where: str) -> None:
        if group.variables:
            found.append(where)
        for name, sub in group.groups.items():
            walk(sub, f"{where}/{name}" if where else name)

    walk(nc, "")
    return sorted(found) or [""]


def _zarr_title(path: Path) -> str:
    for name, key in (("zarr.json", "attributes"), (".zattrs", None)):
        doc = path / name
        if doc.is_file():
            attrs = _read_json(doc)
            attrs = attrs.get(key, {}) if key else attrs
            return str(attrs.get("title", "")) if isinstance(attrs, dict) else ""
    return ""


def _read_json(doc: Path) -> dict[str, Any]:
    try:
        value = json.loads(doc.read_text())
    except (OSError, ValueError) as exc:
        raise SourceError(f"cannot read {doc}: {exc}") from exc
    if not isinstance(value, dict):
        raise SourceError(f"{doc} is not a JSON object")
    return value


def zarr_nodes(path: Path) -> Iterator[tuple[str, str, Path]]:
    """(group path, `array` or `group`, metadata document) of every node of a Zarr store.

    Walks only folders holding a metadata document, so chunk folders are never listed.
    """
    stack = [""]
    while stack:
        rel = stack.pop()
        here = path / rel if rel else path
        for marker, kind in ((".zarray", "array"), (".zgroup", "group"), ("zarr.json", "")):
            doc = here / marker
            if not doc.is_file():
                continue
            node = kind or str(_read_json(doc).get("node_type", "group"))
            yield rel, node, doc
            if node == "group":
                subs = sorted(e.name for e in os.scandir(here) if e.is_dir() and e.name[0] != ".")
                stack.extend(f"{rel}/{s}" if rel else s for s in reversed(subs))
            break


def zarr_groups_with_arrays(path: Path) -> list[str]:
    """Groups of a Zarr store that hold arrays; `""` for the root."""
    nodes = list(zarr_nodes(path))
    parents = {rel.rpartition("/")[0] for rel, kind, _ in nodes if kind == "array"}
    groups = sorted(parents)
    return groups if groups else [""]


def stored_chunks(path: Path, group: str | None, name: str) -> StoredChunks | None:
    """The chunk index of variable `name`, or None when its bytes need re-encoding."""
    if not is_hdf5(path):
        return None
    import h5py

    with h5py.File(path, "r") as f:
        node = f[group] if group else f
        var = node.get(name)
        if not isinstance(var, h5py.Dataset):
            return None
        return _chunk_index(path, var)


def _chunk_index(path: Path, var: Any) -> StoredChunks | None:
    """Where each stored chunk of an h5py dataset lies, if numcodecs decodes them all."""
    if var.chunks is None or var.dtype.kind not in "biuf":
        return None
    filters = _filter_pipeline(var)
    if filters is None:
        return None
    index: dict[tuple[int, ...], tuple[int, int]] = {}
    chunks = var.chunks

    def note(info: Any) -> None:
        if info.filter_mask == 0:
            key = tuple(o // c for o, c in zip(info.chunk_offset, chunks, strict=True))
            index[key] = (info.byte_offset, info.size)
        else:  # a chunk stored with a filter skipped: can't be described uniformly
            raise _Mixed

    try:
        var.id.chunk_iter(note)
    except _Mixed:
        return None
    fill = np.asarray(var.fillvalue, dtype=var.dtype).tobytes()
    return StoredChunks(path, var.dtype.str, tuple(var.shape), tuple(chunks), filters, fill, index)


# netCDF-4's bookkeeping attributes, which the netCDF library never shows as attributes.
NETCDF_INTERNAL_ATTRS = frozenset(
    {
        "_Netcdf4Dimid",
        "_Netcdf4Coordinates",
        "_NCProperties",
        "_nc3_strict",
        "_IsNetcdf4",
        "_SuperblockVersion",
        "DIMENSION_LIST",
        "REFERENCE_LIST",
        "CLASS",
        "NAME",
    }
)


class _NotPlain(Exception):
    """The group holds something the stored form can't mirror as it is."""


def stored_group(path: Path, group: str | None = None) -> StoredGroup | None:
    """A NetCDF-4 group as stored, read with h5py alone (no xarray, no libnetcdf), or None
    when something in it needs xarray's decoding to be served: strings, enums, compound
    or variable-length types, non-finite attribute values, HDF5 datasets without netCDF
    dimensions, a dimension and a variable of the same name that are not one another."""
    if not is_hdf5(path):
        return None
    import h5py

    try:
        with h5py.File(path, "r") as f:
            node = f[group] if group else f
            if not isinstance(node, h5py.Group):
                return None
            variables = []
            for name in _creation_order(node):
                item = node.get(name)
                if not isinstance(item, h5py.Dataset) or _dimension_only(item):
                    continue
                variables.append(_stored_variable(path, name, item))
            return StoredGroup(_json_attrs(node.attrs), tuple(variables))
    except (_NotPlain, KeyError, TypeError, ValueError, OSError, RuntimeError):
        return None


def read_stored(path: Path, group: str | None, name: str, region: tuple[slice, ...]) -> Any:
    """The stored values of `name[region]` (no CF decoding), as h5py reads them."""
    import h5py

    with h5py.File(path, "r") as f:
        var = (f[group] if group else f)[name]
        return var[region] if region else var[()]


def _creation_order(node: Any) -> list[str]:
    """Member names in the order they were created (netCDF-4 tracks it), else by name."""
    import h5py

    names: list[str] = []
    try:
        node.id.links.iterate(lambda n: names.append(n.decode()), idx_type=h5py.h5.INDEX_CRT_ORDER)
    except (KeyError, ValueError, RuntimeError):  # order not tracked: by name
        return list(node)
    return names


def _dimension_only(var: Any) -> bool:
    name = var.attrs.get("NAME", b"")
    return isinstance(name, bytes) and name.startswith(NETCDF_DIM_ONLY)


def _stored_variable(path: Path, name: str, var: Any) -> StoredVariable:
    import h5py

    dtype = var.dtype
    if dtype.kind not in "iuf" or h5py.check_enum_dtype(dtype) is not None:
        raise _NotPlain(name)
    return StoredVariable(
        name=name,
        dims=_dimension_names(name, var),
        shape=tuple(var.shape),
        dtype=dtype.str,
        attrs=_json_attrs(var.attrs),
        fill=np.asarray(var.fillvalue, dtype=dtype).tobytes(),
        chunks=tuple(var.chunks) if var.chunks else None,
        stored=_chunk_index(path, var),
    )


def _dimension_names(name: str, var: Any) -> tuple[str, ...]:
    """netCDF dimension names: the dimension scales attached to each axis."""
    if var.ndim == 0:
        return ()
    if var.attrs.get("CLASS") == b"DIMENSION_SCALE":
        if var.ndim != 1:
            raise _NotPlain(name)
        return (name,)
    import h5py

    # DIMENSION_LIST holds, per axis, references to the scales attached to it; naming them
    # with H5Rget_name is three times faster than h5py's `var.dims` proxies.
    attached = var.attrs.get("DIMENSION_LIST")
    if attached is None or len(attached) != var.ndim:
        raise _NotPlain(name)
    names = []
    for axis in attached:
        if len(axis) != 1:
            raise _NotPlain(name)
        dim = h5py.h5r.get_name(axis[0], var.id).decode().rsplit("/", 1)[-1]
        if dim.startswith(NON_COORD):
            raise _NotPlain(name)
        names.append(dim)
    return tuple(names)


def _json_attrs(attrs: Any) -> dict[str, Any]:
    """Attributes as the netCDF library reads them (length-1 arrays as scalars, text as
    str), in JSON types (a `_FillValue` may be NaN: the Zarr view spells it as its format
    does); netCDF-4's own bookkeeping left out."""
    import h5py

    out: dict[str, Any] = {}
    for key in attrs:
        if key in NETCDF_INTERNAL_ATTRS:
            continue
        value = attrs[key]
        if isinstance(value, h5py.Empty):
            if value.dtype.kind not in "SO":
                raise _NotPlain(key)
            value = ""
        out[key] = _json_value(key, value)
    return out


def _json_value(key: str, value: Any) -> Any:
    if isinstance(value, bytes | np.bytes_):
        return value.decode("utf-8")
    if isinstance(value, str):
        return value
    array = np.asarray(value)
    if array.dtype.kind == "O":
        items = [_json_value(key, v) for v in array.ravel()]
        if not all(isinstance(v, str) for v in items):
            raise _NotPlain(key)
        return items[0] if len(items) == 1 else items
    if array.dtype.kind == "S":
        items = [v.decode("utf-8") for v in array.ravel()]
        return items[0] if len(items) == 1 else items
    if array.dtype.kind not in "iuf" or array.ndim > 1:
        raise _NotPlain(key)
    if array.dtype.kind == "f" and key != "_FillValue" and not np.isfinite(array).all():
        raise _NotPlain(key)  # NaN or infinite: JSON has no spelling xarray reads back
    return array.item() if array.size == 1 else array.tolist()


class _Mixed(Exception):
    pass


# HDF5 filter ids (H5Zpublic.h) whose output numcodecs decodes byte for byte.
_NUMCODECS_OF_H5 = {1: "zlib", 2: "shuffle", 3: "fletcher32"}


def _filter_pipeline(var: Any) -> tuple[tuple[str, int], ...] | None:
    """The filters in write order as (numcodecs id, parameter), or None if one has no twin.

    The parameter is the deflate level for zlib, the element size for shuffle, 0 otherwise.
    """
    plist = var.id.get_create_plist()
    out: list[tuple[str, int]] = []
    for i in range(plist.get_nfilters()):
        code, _flags, values, _name = plist.get_filter(i)
        codec = _NUMCODECS_OF_H5.get(code)
        if codec is None:
            return None
        param = {"zlib": int(values[0]) if values else 6, "shuffle": var.dtype.itemsize}
        if codec == "shuffle" and ("fletcher32", 0) in out and 4 % var.dtype.itemsize:
            return None  # the checksum's 4 bytes leave a partial element numcodecs refuses
        out.append((codec, param.get(codec, 0)))
    return tuple(out)
