"""The NetCDF data model on the wire: NetCDF4 files, and CF-JSON documents.

NetCDF4: xarray encodes (CF: packing, fill values, time units and calendars as the source
had them) and netCDF4 writes a temporary file slab by slab; the file is then streamed and
removed. CF-JSON (https://cf-json.org): the same dimensions, variables and attributes as
one JSON document, with decoded values (missing values as null) and times as numbers in
the variable's `units` and `calendar`, streamed slab by slab.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import orjson

from outcrop.formats.slabs import chunks, layout, read, source_chunks
from outcrop.model import CF_ENCODING_KEYS, Query, StoredChunks

if TYPE_CHECKING:
    import xarray as xr

SLAB_VALUES = 2**20
CHUNK_VALUES = 2**18
BLOCK = 1 << 20
TMP_PREFIX = "subset-"
NETCDF_FILTER_ORDER = ("fletcher32", "shuffle", "zlib")  # as libnetcdf applies them
COMPRESSION = {"zlib": True, "complevel": 1, "shuffle": True, "fletcher32": False}
# What the source's encoding says about values (kept); the rest (its chunks, filters,
# quantization) is the source's storage, which the output chooses for itself.
CF_ENCODING = (*CF_ENCODING_KEYS, "coordinates")
CF_TYPES = {
    "f4": "float",
    "f8": "double",
    "i1": "byte",
    "u1": "ubyte",
    "i2": "short",
    "u2": "ushort",
    "i4": "int",
    "u4": "uint",
    "i8": "int64",
    "u8": "uint64",
    "b1": "byte",
}


class FileStream:
    """The bytes of an open file, in blocks; the file is already unlinked."""

    def __init__(self, file: BinaryIO, length: int) -> None:
        self.file = file
        self.length = length

    @classmethod
    def take(cls, path: Path) -> FileStream:
        """Open `path` and remove its name: the bytes live until the stream closes."""
        file = path.open("rb")
        path.unlink()
        return cls(file, os.fstat(file.fileno()).st_size)

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        block = self.file.read(BLOCK)
        if not block:
            self.close()
            raise StopIteration
        return block

    def close(self) -> None:
        self.file.close()


def temporary_path(tmp_dir: Path | None) -> Path:
    """A new file for a subset, named after this process (see `remove_stale`)."""
    if tmp_dir is not None:
        tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(suffix=".nc", prefix=f"{TMP_PREFIX}{os.getpid()}-", dir=tmp_dir)
    os.close(fd)
    return Path(name)


def remove_stale(tmp_dir: Path) -> list[Path]:
    """Remove the subset files that processes no longer running left behind (a crash
    mid-write); those of live processes (other workers) stay. Returns what it removed."""
    removed = []
    for path in tmp_dir.glob(f"{TMP_PREFIX}*.nc"):
        pid = path.name.removeprefix(TMP_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not _running(int(pid)):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process is starting: nothing of its own is in flight
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class NetcdfFormat:
    """`format=nc`: a NetCDF4 file, CF-encoded as the source was.

    Storage: every array chunked into pieces of about `chunk_values` values (whole trailing
    dimensions, a run along the first ones: one time step of a (time, lat, lon) grid up to
    256 Ki values) and compressed with zlib level 1 + shuffle, whatever the source used —
    level 1 compresses several times faster than the higher levels for a few percent more
    bytes, and the file must be written before its first byte is sent. The file is written
    one slab at a time (a whole number of output chunks, ending where source chunks end),
    so each output chunk is compressed once and each source chunk read about once.
    """

    name = "nc"
    media_type = "application/x-netcdf"
    extension = "nc"

    def __init__(
        self,
        lock: Any = None,
        tmp_dir: Path | None = None,
        slab_values: int = SLAB_VALUES,
        chunk_values: int = CHUNK_VALUES,
    ) -> None:
        # libnetcdf is not thread-safe: the lock must be the one every reader of the
        # sources holds, so writing here never runs beside a read elsewhere.
        self.lock = lock if lock is not None else threading.RLock()
        self.tmp_dir = tmp_dir
        self.slab_values = slab_values
        self.chunk_values = chunk_values

    def select(self, ds: xr.Dataset, query: Query) -> xr.Dataset:
        return ds

    def encode(
        self,
        ds: xr.Dataset,
        query: Query,
        cancel: threading.Event | None = None,
        stored: StoredOf | None = None,
    ) -> FileStream:
        """The file's bytes, once written; `Cancelled` (and no file) if `cancel` is set.
        `stored(name)` gives the stored chunks of a source variable, if it has them."""
        path = temporary_path(self.tmp_dir)
        try:
            self.write(ds, path, cancel, stored)
            return FileStream.take(path)
        finally:
            path.unlink(missing_ok=True)

    def write(
        self,
        ds: xr.Dataset,
        path: Path,
        cancel: threading.Event | None = None,
        stored: StoredOf | None = None,
    ) -> None:
        """Write `ds` to a NetCDF4 file, reading and writing one slab at a time; variables
        made of whole stored chunks of the source get copies of those chunks."""
        from xarray.backends import NetCDF4DataStore
        from xarray.backends.common import ArrayWriter

        slabbed = in_slabs(ds, self.slab_values, min(self.chunk_values, self.slab_values))
        copies = {str(n): raw for n, v in ds.data_vars.items() if (raw := copyable(v, stored))}
        for name, raw in copies.items():
            slabbed[name].encoding.update(stored_storage(raw))
        if cancel is not None:
            slabbed = slabbed.assign(
                {k: cancellable(v, cancel) for k, v in slabbed.data_vars.items()}
            )
        with self.lock:
            store = NetCDF4DataStore.open(  # type: ignore[no-untyped-call]
                path, mode="w", format="NETCDF4", lock=self.lock
            )
        try:
            writer = ArrayWriter()  # type: ignore[no-untyped-call]
            with self.lock:
                slabbed.dump_to_store(store, writer=writer)
                for var in store.ds.variables.values():
                    # slabs hold whole chunks, which HDF5 then compresses and writes at
                    # once; libnetcdf's default 64 MB cache per variable would only grow RSS
                    var.set_var_chunk_cache(size=0)
                copies = skip_copies(writer, store.ds, copies)
            writer.sync(  # type: ignore[no-untyped-call]
                chunkmanager_store_kwargs={"scheduler": "synchronous"}
            )
        finally:
            with self.lock:
                store.close()
        if copies:
            copy_chunks(path, ds, copies, cancel)


StoredOf = Callable[[str], "StoredChunks | None"]


def copyable(var: xr.DataArray, stored: StoredOf | None) -> StoredChunks | None:
    """The source's stored chunks of `var` when the subset is exactly a block of whole
    stored chunks (or ends with the source's edge chunks), all of them written."""
    region = var.encoding.get("source_region")
    if stored is None or var.ndim == 0 or not isinstance(region, tuple) or None in region:
        return None
    raw = stored(str(var.name))
    if raw is None or len(raw.shape) != var.ndim:
        return None
    for (start, stop), size, chunk in zip(region, raw.shape, raw.chunks, strict=True):
        if start % chunk or stop > size or (stop % chunk and stop != size):
            return None
    if not all(key in raw.index for key in source_keys(region, raw.chunks)):
        return None  # a chunk never written: its fill value would have to match too
    return raw


def source_keys(
    region: tuple[tuple[int, int], ...], chunks: tuple[int, ...]
) -> Iterator[tuple[int, ...]]:
    """The coordinates of the stored chunks a region covers, in C order."""
    ranges = (range(a // c, -(-b // c)) for (a, b), c in zip(region, chunks, strict=True))
    return itertools.product(*ranges)


def stored_storage(raw: StoredChunks) -> dict[str, Any]:
    """The output encoding that stores chunks exactly as the source does."""
    filters = dict(raw.filters)
    return {
        "chunksizes": raw.chunks,
        "zlib": "zlib" in filters,
        "complevel": filters.get("zlib") or 1,
        "shuffle": "shuffle" in filters,
        "fletcher32": "fletcher32" in filters,
    }


def skip_copies(writer: Any, nc: Any, copies: dict[str, StoredChunks]) -> dict[str, StoredChunks]:
    """Take the variables whose chunks will be copied out of xarray's pending writes; only
    those defined with the source's dtype, chunks and filters are copied (the others are
    written as usual)."""
    copies = {n: raw for n, raw in copies.items() if defined_as(nc.variables[n], raw)}
    keep = [
        i for i, t in enumerate(writer.targets) if getattr(t, "variable_name", None) not in copies
    ]
    writer.sources = [writer.sources[i] for i in keep]
    writer.targets = [writer.targets[i] for i in keep]
    writer.regions = [writer.regions[i] for i in keep]
    return copies


def defined_as(var: Any, raw: StoredChunks) -> bool:
    """Whether a netCDF4 variable stores its chunks exactly as `raw` does."""
    filters = var.filters() or {}
    names = [f for f, _ in raw.filters]
    if names != [f for f in NETCDF_FILTER_ORDER if f in names]:
        return False  # stored in an order libnetcdf does not write
    return bool(
        var.dtype == np.dtype(raw.dtype)
        and var.chunking() == list(raw.chunks)
        and bool(filters.get("zlib")) == any(f == "zlib" for f, _ in raw.filters)
        and bool(filters.get("shuffle")) == any(f == "shuffle" for f, _ in raw.filters)
        and bool(filters.get("fletcher32")) == any(f == "fletcher32" for f, _ in raw.filters)
        and not any(filters.get(k) for k in ("szip", "zstd", "bzip2", "blosc"))
    )


def copy_chunks(
    path: Path, ds: xr.Dataset, copies: dict[str, StoredChunks], cancel: threading.Event | None
) -> None:
    """Write the stored chunks of the source into the closed output file (h5py direct
    chunk writes: no decoding, no compression)."""
    import h5py

    with h5py.File(path, "r+") as out:
        for name, raw in copies.items():
            region = ds[name].encoding["source_region"]
            first = tuple(a // c for (a, _), c in zip(region, raw.chunks, strict=True))
            target = out[name].id
            with open(raw.path, "rb") as source:
                for key in source_keys(region, raw.chunks):
                    if cancel is not None and cancel.is_set():
                        raise Cancelled("the request was cancelled")
                    offset, size = raw.index[key]
                    data = os.pread(source.fileno(), size, offset)
                    where = tuple(
                        (k - f) * c for k, f, c in zip(key, first, raw.chunks, strict=True)
                    )
                    target.write_direct_chunk(where, data, 0)


class Cancelled(Exception):
    """The client went away while its file was being written."""


def unless(block: np.ndarray, cancel: threading.Event) -> np.ndarray:
    """A slab as it is, unless the request was cancelled meanwhile."""
    if cancel.is_set():
        raise Cancelled("the request was cancelled")
    return block


def cancellable(var: xr.DataArray, cancel: threading.Event) -> xr.DataArray:
    if var.chunks is None:
        return var
    return var.copy(data=var.data.map_blocks(unless, cancel, dtype=var.dtype))


def in_slabs(ds: xr.Dataset, budget: int, chunk_values: int = CHUNK_VALUES) -> xr.Dataset:
    """`ds` with every non-index variable dask-chunked into slabs of about `budget` values,
    and the storage of every variable set as `NetcdfFormat` says."""
    out = ds.copy(deep=False)
    chunked: dict[str, xr.Variable] = {}
    for name, var in ds.variables.items():
        encoding = storage(var, chunk_values)
        if name in ds.indexes:
            out.variables[name].encoding = encoding
            continue
        if var.ndim == 0 or var.dtype.kind in "OMm":  # xarray encodes times only in memory
            var = var.copy(data=read(var))
        else:
            pieces = layout(var.shape, budget, encoding.get("chunksizes"), source_chunks(var))
            var = var.chunk(dict(zip(var.dims, pieces, strict=True)))
        var.encoding = encoding
        chunked[str(name)] = var
    data = {k: v for k, v in chunked.items() if k in ds.data_vars}
    coords = {k: v for k, v in chunked.items() if k not in ds.data_vars}
    return out.assign(data).assign_coords(coords)


def storage(var: xr.Variable, chunk_values: int) -> dict[str, Any]:
    """The encoding a variable is written with: its CF encoding as the source had it, and
    the output's own chunks and compression (see `NetcdfFormat`)."""
    encoding = {k: v for k, v in var.encoding.items() if k in CF_ENCODING}
    if "_FillValue" not in encoding and np.dtype(encoding.get("dtype", "f8")).kind == "f":
        encoding["_FillValue"] = None  # as the source: no fill value xarray invents
    if var.ndim == 0 or var.size == 0 or var.dtype.kind in "OSU":
        return encoding  # scalars and strings: contiguous or as libnetcdf decides
    encoding.update(COMPRESSION)
    encoding["chunksizes"] = chunks(var.shape, chunk_values)
    return encoding


class CfJsonFormat:
    """`format=json`: CF-JSON — dimensions, variables (shape, type, attributes, data)."""

    name = "json"
    media_type = "application/json"
    extension = "json"

    def __init__(self, slab_values: int = SLAB_VALUES // 4) -> None:
        self.slab_values = slab_values

    def select(self, ds: xr.Dataset, query: Query) -> xr.Dataset:
        return ds

    def encode(self, ds: xr.Dataset, query: Query) -> Iterator[bytes]:
        yield b'{"attributes":' + dumps(dict(ds.attrs))
        yield b',"dimensions":' + dumps({str(k): int(v) for k, v in ds.sizes.items()})
        yield b',"variables":{'
        for i, (name, var) in enumerate(ds.variables.items()):
            yield from self._variable(str(name), var, first=i == 0)
        yield b"}}"

    def _variable(self, name: str, var: xr.Variable, first: bool) -> Iterator[bytes]:
        attrs = dict(var.attrs)
        if var.dtype.kind == "M" or _is_cftime(var):
            var, time_attrs = encode_times(var)
            attrs.update(time_attrs)
        head = {"shape": [str(d) for d in var.dims], "type": cf_type(var.dtype)}
        yield (b"" if first else b",") + dumps(name) + b":" + dumps(head)[:-1]
        yield b',"attributes":' + dumps(attrs) + b',"data":'
        yield from nested(var, self.slab_values)
        yield b"}"


def nested(var: xr.Variable, budget: int) -> Iterator[bytes]:
    """A variable's values as nested JSON arrays, read one slab at a time."""
    if var.ndim == 0 or var.size <= budget:
        yield dumps(values(var))
        return
    row = var.size // var.shape[0]
    run = max(1, budget // max(row, 1))
    yield b"["
    for start in range(0, var.shape[0], run):
        if start:
            yield b","
        if row > budget:
            yield from nested(var[start], budget)
        else:
            yield dumps(values(var[start : start + run]))[1:-1]
    yield b"]"


def values(var: xr.Variable) -> Any:
    """Values orjson can write: numeric numpy arrays as they are, anything else as lists."""
    data = read(var)
    if data.dtype.kind == "f" and data.dtype.itemsize < 4:
        data = data.astype("float32")
    if data.ndim and data.dtype.kind in "fiub":
        return np.ascontiguousarray(data)
    return data.tolist()  # a 0-d array gives its one value


def encode_times(var: xr.Variable) -> tuple[xr.Variable, dict[str, Any]]:
    """Times as numbers in the source's units and calendar (xarray's CF time encoding)."""
    from xarray.coding.times import CFDatetimeCoder

    loaded = var.load()
    loaded = loaded.copy(deep=False)
    loaded.encoding = {k: var.encoding[k] for k in ("units", "calendar") if k in var.encoding}
    encoded = CFDatetimeCoder().encode(loaded)
    attrs = {k: encoded.attrs[k] for k in ("units", "calendar") if k in encoded.attrs}
    attrs.update({k: encoded.encoding[k] for k in ("units", "calendar") if k in encoded.encoding})
    return encoded, attrs


def cf_type(dtype: np.dtype[Any]) -> str:
    if dtype.kind in "USO":
        return "string"
    return CF_TYPES.get(f"{dtype.kind}{dtype.itemsize}", "double")


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)


def _is_cftime(var: xr.Variable) -> bool:
    if var.dtype.kind != "O" or var.size == 0:
        return False
    first = read(var[(0,) * var.ndim])
    return type(first.item() if first.ndim == 0 else first).__module__.startswith("cftime")
