"""Zarr v2 and v3 views that mirror a NetCDF-4 group as stored, built without xarray.

Every variable keeps its stored dtype, dimensions and attributes (`scale_factor`,
`_FillValue`, time `units` and `calendar` … as the file has them), so a Zarr client
decodes exactly what `xarray.open_dataset` decodes from the local file, and nothing is
decoded or re-encoded on the server. Chunks numcodecs can decode are served as they lie
in the file; the others (contiguous variables, other filters) are the stored values of
their region, compressed. Building one imports neither xarray, dask nor zarr: a first
start answers its first metadata request without them.

The documents follow what zarr-python writes for consolidated metadata: `.zmetadata`
with `.zgroup`, `.zattrs` and `name/.zarray` (v2), or `zarr.json` with inline
`consolidated_metadata` (v3); `_FillValue` is the array's `fill_value` in v2 and an
attribute spelled as xarray spells it in v3.
"""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

import numpy as np
import orjson

from outcrop.formats.zarr import (
    ArrayPlan,
    ZarrCodec,
    ZarrFormat,
    ZarrView,
    file_codecs,
    served_codecs,
    stored_codecs,
    whole_in_pieces,
)
from outcrop.model import StoredGroup, StoredVariable

V3_DATA_TYPES = frozenset(
    f"{kind}{bits}" for kind in ("int", "uint") for bits in (8, 16, 32, 64)
) | {"float32", "float64"}


def build_stored_view(group: StoredGroup, zarr_format: ZarrFormat, codec: ZarrCodec) -> ZarrView:
    """The Zarr view of `group`: metadata documents and a plan for every variable.

    `codec`: "stored" serves stored chunks as they are and compresses the others with
    Zstandard; "lz4" (Blosc) or "zstd" compresses every chunk with that codec.
    """
    plans = {v.name: _plan(v, zarr_format, codec) for v in group.variables}
    documents = (_v2_documents if zarr_format == 2 else _v3_documents)(group, plans)
    return ZarrView(zarr_format, documents, plans, codec, mirror=True)


def _plan(var: StoredVariable, zarr_format: ZarrFormat, codec: ZarrCodec) -> ArrayPlan:
    dtype = np.dtype(var.dtype)
    raw = var.stored
    if raw is not None and zarr_format == 2 and not raw.complete():
        # A v2 client fills unwritten chunks with `fill_value`, which is `_FillValue`
        # (null: zero); where the file reads as something else, the chunks are produced.
        declared = np.asarray(_fill_value(var) or 0, dtype=dtype)
        fill = np.frombuffer(var.fill, dtype=dtype)[0]
        if not np.array_equal(declared, fill, equal_nan=dtype.kind == "f"):
            raw = None
    if raw is not None:
        if codec != "stored":
            codecs, source = served_codecs(codec, dtype.itemsize), file_codecs(raw)
            return ArrayPlan(
                var.name, var.shape, raw.chunks, dtype, raw, codecs, source_codecs=source
            )
        codecs, framed = stored_codecs(raw)
        return ArrayPlan(var.name, var.shape, raw.chunks, dtype, raw, codecs, framed=framed)
    layout = dtype if zarr_format == 2 else dtype.newbyteorder("<")
    codecs = served_codecs("zstd" if codec == "stored" else codec, dtype.itemsize)
    chunks = var.chunks or whole_in_pieces(list(var.shape), dtype.itemsize)
    return ArrayPlan(var.name, var.shape, chunks, layout, None, codecs, from_file=True)


def _fill_value(var: StoredVariable) -> Any:
    """`_FillValue` in the variable's dtype as a Python number, or None."""
    value = var.attrs.get("_FillValue")
    if value is None:
        return None
    return np.asarray(value, dtype=np.dtype(var.dtype)).item()


def _number(value: Any) -> Any:
    """A fill value in Zarr's JSON: NaN and infinities are spelled as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def _json(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2)


# -- Zarr v2 -----------------------------------------------------------------------------
def _v2_documents(group: StoredGroup, plans: dict[str, ArrayPlan]) -> dict[str, bytes]:
    metadata: dict[str, Any] = {".zgroup": {"zarr_format": 2}, ".zattrs": group.attrs}
    for var in group.variables:
        plan = plans[var.name]
        *filters, last = plan.codecs or (None,)
        if last is not None and last.codec_id not in ("zlib", "zstd", "blosc"):
            filters, last = [*filters, last], None
        metadata[f"{var.name}/.zarray"] = {
            "shape": list(var.shape),
            "chunks": list(plan.chunks),
            "dtype": plan.dtype.str,
            "fill_value": _number(_fill_value(var)),
            "order": "C",
            "filters": [c.get_config() for c in filters] or None,
            "dimension_separator": ".",
            "compressor": None if last is None else last.get_config(),
            "zarr_format": 2,
        }
        attrs = {k: v for k, v in var.attrs.items() if k != "_FillValue"}
        metadata[f"{var.name}/.zattrs"] = {**attrs, "_ARRAY_DIMENSIONS": list(var.dims)}
    documents = {key: _json(doc) for key, doc in metadata.items()}
    consolidated = {"metadata": metadata, "zarr_consolidated_format": 1}
    documents[".zmetadata"] = orjson.dumps(consolidated)
    return documents


# -- Zarr v3 -----------------------------------------------------------------------------
def _v3_documents(group: StoredGroup, plans: dict[str, ArrayPlan]) -> dict[str, bytes]:
    arrays = {var.name: _v3_array(var, plans[var.name]) for var in group.variables}
    documents = {f"{name}/zarr.json": _json(doc) for name, doc in arrays.items()}
    root = {
        "attributes": group.attrs,
        "zarr_format": 3,
        "consolidated_metadata": {"kind": "inline", "must_understand": False, "metadata": arrays},
        "node_type": "group",
    }
    documents["zarr.json"] = _json(root)
    return documents


def _v3_array(var: StoredVariable, plan: ArrayPlan) -> dict[str, Any]:
    dtype = np.dtype(var.dtype)
    name = dtype.newbyteorder("=").name
    if name not in V3_DATA_TYPES:
        raise ValueError(f"{var.name}: no Zarr v3 data type for {dtype}")
    layout = plan.dtype
    if layout.itemsize == 1:
        serializer: dict[str, Any] = {"name": "bytes"}
    else:
        endian = "big" if layout.byteorder == ">" else "little"
        serializer = {"name": "bytes", "configuration": {"endian": endian}}
    attrs = dict(var.attrs)
    if "_FillValue" in attrs:
        attrs["_FillValue"] = _v3_fill_attr(_fill_value(var), dtype)
    return {
        "shape": list(var.shape),
        "data_type": name,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(plan.chunks)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": _number(np.frombuffer(var.fill, dtype=dtype)[0].item()),
        "codecs": [serializer, *(_v3_codec(c, layout.itemsize) for c in plan.codecs)],
        "attributes": attrs,
        "dimension_names": list(var.dims),
        "zarr_format": 3,
        "node_type": "array",
        "storage_transformers": [],
    }


def _v3_codec(codec: Any, itemsize: int) -> dict[str, Any]:
    config = codec.get_config()
    kind = config.pop("id")
    if kind == "zstd":
        return {"name": "zstd", "configuration": {"level": config["level"], "checksum": False}}
    if kind == "blosc":
        shuffle = {0: "noshuffle", 1: "shuffle", 2: "bitshuffle"}[config["shuffle"]]
        configuration = {
            "typesize": itemsize,
            "cname": config["cname"],
            "clevel": config["clevel"],
            "shuffle": shuffle,
            "blocksize": 0,
        }
        return {"name": "blosc", "configuration": configuration}
    return {"name": f"numcodecs.{kind}", "configuration": config}


def _v3_fill_attr(value: Any, dtype: np.dtype[Any]) -> Any:
    """`_FillValue` as xarray writes it in a v3 attribute: floats as the base64 of their
    little-endian double, integers as numbers."""
    if dtype.kind == "f":
        return base64.standard_b64encode(struct.pack("<d", float(value))).decode()
    return int(value)
