"""Gridded files through xarray: NetCDF3, NetCDF4/HDF5 (with groups), Zarr v2/v3, and
aggregations of many files along one dimension."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from outcrop.drivers import Probe, Source
from outcrop.errors import SourceError
from outcrop.model import StoredChunks

if TYPE_CHECKING:
    import xarray as xr

NETCDF_SUFFIXES = frozenset({".nc", ".nc4", ".cdf", ".netcdf", ".h5", ".hdf5", ".he5", ".hdf"})
ZARR_MARKERS = ("zarr.json", ".zgroup", ".zmetadata", ".zarray")
NETCDF_LOCK = threading.RLock()
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# HDF5 filter ids (H5Zpublic.h) that numcodecs decodes byte for byte.
H5_DEFLATE, H5_SHUFFLE = 1, 2


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

    def open(self, source: Source) -> xr.Dataset:
        if source.aggregate is not None or len(source.paths) > 1:
            return open_aggregation(source)
        return open_one(source.paths[0], source.group)

    def probe(self, path: Path) -> Probe:
        """Title and groups of a file, read without xarray (fast enough for big scans)."""
        if is_zarr(path):
            return Probe(title=_zarr_title(path))
        if not is_hdf5(path):
            return Probe(title=_netcdf_title(path))
        return Probe(title=_netcdf_title(path), groups=tuple(hdf5_groups_with_variables(path)))


def open_one(path: Path, group: str | None = None) -> xr.Dataset:
    import xarray as xr

    try:
        if is_zarr(path):
            store: xr.Dataset = xr.open_zarr(path, group=group, chunks={}, decode_timedelta=False)
            return store
        # libnetcdf is not thread-safe: every open and every read holds the same lock.
        with NETCDF_LOCK:
            ds: xr.Dataset = xr.open_dataset(
                path,
                engine="netcdf4",
                group=group,
                chunks={},
                decode_timedelta=False,
                lock=NETCDF_LOCK,
            )
            return ds
    except (OSError, ValueError, KeyError) as exc:
        raise SourceError(f"cannot open {path.name}: {exc}") from exc


def open_aggregation(source: Source) -> xr.Dataset:
    """Join files along `source.aggregate`; their coordinates must be sorted and disjoint."""
    import xarray as xr

    dim = source.aggregate or "time"
    parts = [open_one(p, source.group) for p in source.paths]
    for path, part in zip(source.paths, parts, strict=True):
        if dim not in part.dims:
            raise SourceError(f"{path.name} has no dimension {dim!r} to aggregate along")
    order = sorted(range(len(parts)), key=lambda i: _first_value(parts[i], dim))
    parts = [parts[i] for i in order]
    _check_disjoint([source.paths[i] for i in order], parts, dim)
    try:
        return xr.concat(
            parts,
            dim=dim,
            data_vars="minimal",
            coords="minimal",
            compat="override",
            join="override",
            combine_attrs="override",
        )
    except (ValueError, KeyError) as exc:
        raise SourceError(f"cannot aggregate along {dim!r}: {exc}") from exc


def _first_value(ds: xr.Dataset, dim: str) -> Any:
    return ds[dim].values[0] if dim in ds.coords and ds.sizes[dim] else 0


def _check_disjoint(paths: list[Path], parts: list[xr.Dataset], dim: str) -> None:
    if dim not in parts[0].coords:
        return
    previous: Any = None
    for path, part in zip(paths, parts, strict=True):
        values = part[dim].values
        if len(values) > 1 and not bool(np.all(values[1:] > values[:-1])):
            raise SourceError(f"{path.name}: coordinate {dim!r} is not strictly increasing")
        if previous is not None and len(values) and not values[0] > previous[1]:
            raise SourceError(
                f"{path.name}: {dim!r} starts at {values[0]}, which overlaps {previous[0].name} "
                f"ending at {previous[1]}; files of an aggregation must not overlap"
            )
        if len(values):
            previous = (path, values[-1])


def _netcdf_title(path: Path) -> str:
    import netCDF4

    try:
        with NETCDF_LOCK, netCDF4.Dataset(path) as nc:
            return str(getattr(nc, "title", ""))
    except OSError as exc:
        raise SourceError(f"cannot open {path.name}: {exc}") from exc


def _zarr_title(path: Path) -> str:
    for name, key in (("zarr.json", "attributes"), (".zattrs", None)):
        doc = path / name
        if doc.is_file():
            attrs = json.loads(doc.read_text())
            attrs = attrs.get(key, {}) if key else attrs
            return str(attrs.get("title", ""))
    return ""


def hdf5_groups_with_variables(path: Path) -> list[str]:
    import h5py

    found: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Group) and any(isinstance(v, h5py.Dataset) for v in obj.values()):
            found.append(name)

    try:
        with h5py.File(path, "r") as f:
            f.visititems(visit)
    except OSError as exc:
        raise SourceError(f"cannot read groups of {path.name}: {exc}") from exc
    return sorted(found)


def stored_chunks(path: Path, group: str | None, name: str) -> StoredChunks | None:
    """The chunk index of variable `name`, or None when its bytes need re-encoding."""
    if not is_hdf5(path):
        return None
    import h5py

    with h5py.File(path, "r") as f:
        node = f[group] if group else f
        var = node.get(name)
        if not isinstance(var, h5py.Dataset) or var.chunks is None:
            return None
        pipeline = _filter_pipeline(var)
        if pipeline is None or var.dtype.kind not in "biuf":
            return None
        shuffle, level = pipeline
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
        return StoredChunks(path, var.dtype.str, tuple(chunks), shuffle, level, index)


class _Mixed(Exception):
    pass


def _filter_pipeline(var: Any) -> tuple[bool, int | None] | None:
    """(shuffle, deflate level) when the filters are only shuffle then deflate, else None."""
    plist = var.id.get_create_plist()
    filters = [plist.get_filter(i) for i in range(plist.get_nfilters())]
    ids = [f[0] for f in filters]
    if ids not in ([], [H5_DEFLATE], [H5_SHUFFLE, H5_DEFLATE], [H5_SHUFFLE]):
        return None
    level = next((int(f[2][0]) for f in filters if f[0] == H5_DEFLATE), None)
    return H5_SHUFFLE in ids, level
