"""The NetCDF data model on the wire: NetCDF4 files, and CF-JSON documents.

NetCDF4: xarray encodes (CF: packing, fill values, time units and calendars as the source
had them) and netCDF4 writes a temporary file slab by slab; the file is then streamed and
removed. CF-JSON (https://cf-json.org): the same dimensions, variables and attributes as
one JSON document, with decoded values (missing values as null) and times as numbers in
the variable's `units` and `calendar`, streamed slab by slab.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import orjson

from outcrop.formats.slabs import chunks, read
from outcrop.model import Query

if TYPE_CHECKING:
    import xarray as xr

SLAB_VALUES = 2**20
BLOCK = 1 << 20
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


class NetcdfFormat:
    """`format=nc`: a NetCDF4 file, CF-encoded as the source was."""

    name = "nc"
    media_type = "application/x-netcdf"
    extension = "nc"

    def __init__(
        self, lock: Any = None, tmp_dir: Path | None = None, slab_values: int = SLAB_VALUES
    ) -> None:
        # libnetcdf is not thread-safe: the lock must be the one every reader of the
        # sources holds, so writing here never runs beside a read elsewhere.
        self.lock = lock if lock is not None else threading.RLock()
        self.tmp_dir = tmp_dir
        self.slab_values = slab_values

    def select(self, ds: xr.Dataset, query: Query) -> xr.Dataset:
        return ds

    def encode(self, ds: xr.Dataset, query: Query) -> FileStream:
        if self.tmp_dir is not None:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(suffix=".nc", prefix="subset-", dir=self.tmp_dir)
        os.close(fd)
        path = Path(name)
        try:
            self.write(ds, path)
            return FileStream.take(path)
        finally:
            path.unlink(missing_ok=True)

    def write(self, ds: xr.Dataset, path: Path) -> None:
        """Write `ds` to a NetCDF4 file, reading and writing one slab at a time."""
        from xarray.backends import NetCDF4DataStore
        from xarray.backends.common import ArrayWriter

        slabbed = in_slabs(ds, self.slab_values)
        with self.lock:
            store = NetCDF4DataStore.open(  # type: ignore[no-untyped-call]
                path, mode="w", format="NETCDF4", lock=self.lock
            )
        try:
            writer = ArrayWriter()  # type: ignore[no-untyped-call]
            with self.lock:
                slabbed.dump_to_store(store, writer=writer)
            writer.sync(  # type: ignore[no-untyped-call]
                chunkmanager_store_kwargs={"scheduler": "synchronous"}
            )
        finally:
            with self.lock:
                store.close()


def in_slabs(ds: xr.Dataset, budget: int) -> xr.Dataset:
    """`ds` with every non-index variable dask-chunked into slabs of at most `budget` values."""
    chunked: dict[str, xr.Variable] = {}
    for name, var in ds.variables.items():
        if name in ds.indexes:
            continue
        if var.ndim == 0 or var.dtype.kind in "OMm":  # xarray encodes times only in memory
            chunked[str(name)] = var.copy(data=read(var))
            continue
        sizes = chunks(var.shape, budget)
        chunked[str(name)] = var.chunk(dict(zip(var.dims, sizes, strict=True)))
    for var in chunked.values():
        if (
            "_FillValue" not in var.encoding
            and np.dtype(var.encoding.get("dtype", "f8")).kind == "f"
        ):
            var.encoding["_FillValue"] = None  # as the source: no fill value xarray invents
    data = {k: v for k, v in chunked.items() if k in ds.data_vars}
    coords = {k: v for k, v in chunked.items() if k not in ds.data_vars}
    return ds.assign(data).assign_coords(coords)


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
