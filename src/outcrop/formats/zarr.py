"""Zarr v2 and v3 views of a dataset: consolidated metadata, and chunks by key.

Metadata is what xarray itself writes for the dataset (`to_zarr(compute=False)` into
memory), so CF attributes and encodings reach the client exactly as a local write would
store them. Chunks of HDF5 variables whose filters numcodecs decodes are declared with
those filters and served as stored; every other chunk is encoded on request.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from outcrop.errors import BadQuery, DatasetNotFound

if TYPE_CHECKING:
    import xarray as xr

    from outcrop.model import StoredChunks

ZarrFormat = Literal[2, 3]
ENCODED_CLEVEL = 1
METADATA_KEYS = {2: ".zmetadata", 3: "zarr.json"}


@dataclass(frozen=True)
class ArrayPlan:
    """How to produce the chunks of one array that are not held in memory."""

    name: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: np.dtype[Any]
    stored: StoredChunks | None

    def grid(self) -> tuple[int, ...]:
        return tuple(-(-s // c) for s, c in zip(self.shape, self.chunks, strict=True))

    def region(self, coords: tuple[int, ...]) -> tuple[slice, ...]:
        grid = self.grid()
        if len(coords) != len(grid) or any(
            not 0 <= i < n for i, n in zip(coords, grid, strict=True)
        ):
            raise DatasetNotFound(f"no chunk {coords} in {self.name!r} (chunk grid {grid})")
        return tuple(
            slice(i * c, min((i + 1) * c, s))
            for i, c, s in zip(coords, self.chunks, self.shape, strict=True)
        )


@dataclass(frozen=True)
class ZarrView:
    """Every key a Zarr client may ask for, for one dataset version and format."""

    zarr_format: ZarrFormat
    documents: dict[str, bytes]
    plans: dict[str, ArrayPlan]

    def parse_chunk_key(self, key: str) -> tuple[ArrayPlan, tuple[int, ...]]:
        name, _, rest = key.rpartition("/")
        if self.zarr_format == 3:
            name, sep, rest = key.partition("/c")
            rest = rest.lstrip("/")
            if not sep:
                raise DatasetNotFound(f"no key {key!r}")
        plan = self.plans.get(name)
        if plan is None:
            raise DatasetNotFound(f"no key {key!r}")
        parts = re.split(r"[./]", rest) if rest else []
        if not all(p.isdigit() for p in parts):
            raise DatasetNotFound(f"no key {key!r}")
        coords = tuple(int(p) for p in parts) or (0,) * 0
        if len(coords) != len(plan.shape):
            raise DatasetNotFound(f"no key {key!r}")
        plan.region(coords)
        return plan, coords


def build_view(
    ds: xr.Dataset,
    zarr_format: ZarrFormat,
    stored: Callable[[str], StoredChunks | None],
) -> ZarrView:
    """Write `ds`'s metadata and in-memory coordinates to a memory store and keep the bytes."""
    import zarr

    prepared, plans = _prepare(ds, zarr_format, stored)
    store = zarr.storage.MemoryStore()
    prepared.to_zarr(store, mode="w", compute=False, zarr_format=zarr_format, consolidated=True)
    documents = {key: bytes(buf.to_bytes()) for key, buf in store._store_dict.items()}
    return ZarrView(zarr_format, documents, plans)


def _prepare(
    ds: xr.Dataset, zarr_format: ZarrFormat, stored: Callable[[str], StoredChunks | None]
) -> tuple[xr.Dataset, dict[str, ArrayPlan]]:
    from xarray.backends.zarr import encode_zarr_variable

    out = ds.copy(deep=False)
    plans: dict[str, ArrayPlan] = {}
    for name, var in ds.variables.items():
        cf = {"_FillValue": None, **_cf_encoding(var.encoding)}
        if var.chunks is None:  # in memory: xarray writes it whole into the store
            out[name].encoding = cf
            continue
        chunks = tuple(c[0] for c in var.chunks) if var.ndim else ()
        encoded = encode_zarr_variable(var, name=str(name), zarr_format=zarr_format)
        raw = stored(str(name)) if var.ndim else None
        if raw is not None and (raw.chunks != chunks or np.dtype(raw.dtype) != encoded.dtype):
            raw = None
        if raw is not None and np.dtype(raw.dtype).byteorder == ">":
            raw = None
        codecs = _stored_codecs(raw, zarr_format) if raw else _encoded_codecs(zarr_format)
        out[name] = var.chunk(dict(zip(var.dims, chunks, strict=True)) if var.ndim else {})
        out[name].encoding = {**cf, "chunks": chunks, **codecs}
        little = (
            encoded.dtype.newbyteorder("<") if encoded.dtype.byteorder == ">" else encoded.dtype
        )
        plans[str(name)] = ArrayPlan(str(name), var.shape, chunks, little, raw)
    return out, plans


_CF_KEYS = (
    "dtype",
    "_FillValue",
    "missing_value",
    "scale_factor",
    "add_offset",
    "units",
    "calendar",
)


def _cf_encoding(encoding: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in encoding.items() if k in _CF_KEYS}


def _stored_codecs(raw: StoredChunks, zarr_format: ZarrFormat) -> dict[str, Any]:
    import zarr.codecs as zc
    from numcodecs import Shuffle, Zlib
    from zarr.codecs.numcodecs import Shuffle as ZShuffle
    from zarr.codecs.numcodecs import Zlib as ZZlib

    size = np.dtype(raw.dtype).itemsize
    if zarr_format == 2:
        return {
            "compressors": [Zlib(level=raw.deflate_level)]
            if raw.deflate_level is not None
            else None,
            "filters": [Shuffle(elementsize=size)] if raw.shuffle else None,
        }
    byte_codecs: list[Any] = []
    if raw.shuffle:
        byte_codecs.append(ZShuffle(elementsize=size))
    if raw.deflate_level is not None:
        byte_codecs.append(ZZlib(level=raw.deflate_level))
    return {
        "serializer": zc.BytesCodec(endian="little"),
        "compressors": byte_codecs or None,
        "filters": None,
    }


def _encoded_codecs(zarr_format: ZarrFormat) -> dict[str, Any]:
    import zarr.codecs as zc
    from numcodecs import Zstd

    if zarr_format == 2:
        return {"compressors": [Zstd(level=ENCODED_CLEVEL)], "filters": None}
    return {"compressors": [zc.ZstdCodec(level=ENCODED_CLEVEL)], "filters": None}


def encode_chunk(
    ds: xr.Dataset, plan: ArrayPlan, coords: tuple[int, ...], fmt: ZarrFormat
) -> bytes:
    """CF-encode the chunk at `coords` of `plan`'s variable and compress it as declared."""
    from numcodecs import Zstd
    from xarray.backends.zarr import encode_zarr_variable

    region = plan.region(coords)
    var = ds.variables[plan.name]
    part = var[region] if var.ndim else var
    encoded = encode_zarr_variable(part, name=plan.name, zarr_format=fmt)
    block = np.asarray(encoded.values, dtype=plan.dtype)
    if block.shape != plan.chunks:
        padded = np.zeros(plan.chunks, dtype=plan.dtype)
        padded[tuple(slice(0, n) for n in block.shape)] = block
        block = padded
    if fmt == 2 and block.dtype.kind in "SU":
        block = np.ascontiguousarray(block)
    return bytes(Zstd(level=ENCODED_CLEVEL).encode(np.ascontiguousarray(block)))


def parse_format(text: str) -> ZarrFormat:
    if text in ("2", "v2"):
        return 2
    if text in ("3", "v3"):
        return 3
    raise BadQuery(f"zarr_format must be 2 or 3, not {text!r}", parameter="zarr_format")
