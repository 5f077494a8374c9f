"""Zarr v2 and v3 views of a dataset: consolidated metadata, and chunks by key.

Metadata is what xarray itself writes for the dataset (`to_zarr(compute=False)` into
memory), so CF attributes and encodings reach the client exactly as a local write would
store them. Chunks of HDF5 variables whose filters numcodecs decodes are served as stored;
every other chunk is encoded on request.

A stored zlib chunk (with or without HDF5's byte shuffle before it) goes out as a Blosc
chunk: the 24-byte header of a Blosc chunk of one block holding one zlib stream, then the
stored bytes unchanged (`frame_header`). Blosc's decoder inflates that stream as
`numcodecs.Zlib` would and undoes the shuffle itself, in C and without the GIL, where
`numcodecs.Shuffle` holds it: clients read such chunks faster, and `blosc` is a codec of
the Zarr v3 specification, which `numcodecs.zlib` and `numcodecs.shuffle` are not. Other
filter chains (fletcher32) are declared as the file's own filters.

With a codec chosen (`zarr_codec = "lz4"` or `"zstd"`), stored chunks are transcoded
instead: their bytes are decoded through the file's filters and compressed with a codec
the client decodes several times faster than zlib, and the metadata declares that codec.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from outcrop.errors import BadQuery, DatasetNotFound
from outcrop.model import CF_ENCODING_KEYS

if TYPE_CHECKING:
    import xarray as xr

    from outcrop.model import StoredChunks

ZarrFormat = Literal[2, 3]
# Raised whenever the documents or chunk bytes a view serves change for the same data:
# views saved in the data folder, and the ETags clients revalidate with, follow it.
VIEW_LAYOUT = 2
ZarrCodec = Literal["stored", "lz4", "zstd"]
BLOSC_CLEVEL = 5  # zarr-python's default Blosc level
ENCODED_CLEVEL = 1
METADATA_KEYS = {2: ".zmetadata", 3: "zarr.json"}
# A variable stored whole (NetCDF3, contiguous NetCDF4) is cut into chunks of about this
# many bytes, so one request never decodes a whole large variable.
TARGET_CHUNK_BYTES = 4 * 2**20
# A Blosc chunk (c-blosc 1 format, README_HEADER): version 2, zlib's format version 1,
# flags (bit 0 byte shuffle, bit 4 one stream per block, bits 5-7 the codec: 3 = zlib),
# typesize, decoded size, block size and whole size; then the offset of the one block
# and the size of its one stream.
BLOSC_HEADER = struct.Struct("<BBBBiiiii")
BLOSC_ZLIB_FLAGS = 0x10 | 3 << 5
BLOSC_SHUFFLE = 0x01
# c-blosc 1 refuses blocks over about 715 MB; a chunk is framed only well below that.
BLOSC_MAX_FRAMED = 2**28
_INDEX = r"(?:0|[1-9][0-9]*)"
_V2_CHUNK = re.compile(rf"{_INDEX}(?:\.{_INDEX})*")
_V3_CHUNK = re.compile(rf"c(?:/{_INDEX})*")


@dataclass(frozen=True)
class ArrayPlan:
    """How to produce the chunks of one array that are not held in memory.

    `dtype` is the layout of a chunk's bytes before `codecs` (numcodecs, applied in order)
    compress them; `stored`, when set, is where the chunks already lie in that form, or,
    with `source_codecs`, compressed by those instead (decoded and re-encoded on request).
    `char_dim` marks a fixed-width string variable served as characters (NetCDF `S1`).
    `from_file` (views mirroring a file as stored): a chunk not served as stored is the
    file's stored values of its region, compressed, rather than the dataset's, CF-encoded.
    `framed`: stored chunks are one zlib stream each, served behind a Blosc header.
    """

    name: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: np.dtype[Any]
    stored: StoredChunks | None
    codecs: tuple[Any, ...] = ()
    char_dim: bool = False
    source_codecs: tuple[Any, ...] | None = None
    from_file: bool = False  # unstored chunks: the file's values as stored, not CF-encoded
    framed: bool = False

    def nbytes(self) -> int:
        """The size of one chunk decoded."""
        return math.prod(self.chunks) * self.dtype.itemsize

    def frame_header(self, stream: int) -> bytes:
        """The Blosc header that makes a stored zlib stream of `stream` bytes a Blosc chunk.

        Blosc takes a stream exactly as long as the block it decodes to as stored, not
        compressed: such a chunk must be inflated first (`frame_stream`)."""
        nbytes, typesize = self.nbytes(), self.dtype.itemsize
        flags = BLOSC_ZLIB_FLAGS | (BLOSC_SHUFFLE if self.codecs[0].shuffle else 0)
        whole = BLOSC_HEADER.size + stream
        return BLOSC_HEADER.pack(2, 1, flags, typesize, nbytes, nbytes, whole, 20, stream)

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
    codec: ZarrCodec = "stored"
    mirror: bool = False  # built from the file as stored (`build_stored_view`)

    def parse_chunk_key(self, key: str) -> tuple[ArrayPlan, tuple[int, ...]]:
        """The array and chunk coordinates of a chunk key, or DatasetNotFound.

        v2 keys are `name/i.j.k` (`name/0` for a 0-d array); v3 keys are `name/c/i/j/k`
        (`name/c` for a 0-d array), as zarr's default chunk key encodings write them.
        """
        name, _, rest = key.rpartition("/")
        if self.zarr_format == 3:
            name, sep, tail = key.partition("/c")
            rest = "c" + tail
            if not sep:
                raise DatasetNotFound(f"no key {key!r}")
        plan = self.plans.get(name)
        pattern = _V3_CHUNK if self.zarr_format == 3 else _V2_CHUNK
        if plan is None or not pattern.fullmatch(rest):
            raise DatasetNotFound(f"no key {key!r}")
        coords = tuple(int(p) for p in re.findall(r"[0-9]+", rest))
        if self.zarr_format == 2 and not plan.shape and coords == (0,):
            coords = ()
        if len(coords) != len(plan.shape):
            raise DatasetNotFound(
                f"no key {key!r}: {name!r} has {len(plan.shape)} dimensions, "
                f"the key names {len(coords)}"
            )
        plan.region(coords)
        return plan, coords


def build_view(
    ds: xr.Dataset,
    zarr_format: ZarrFormat,
    stored: Callable[[str], StoredChunks | None],
    codec: ZarrCodec = "stored",
) -> ZarrView:
    """Write `ds`'s metadata and in-memory coordinates to a memory store and keep the bytes.

    `codec`: "stored" serves stored chunks as they are and compresses the others with
    Zstandard; "lz4" (Blosc) or "zstd" compresses every chunk with that codec.
    """
    import zarr
    from xarray.backends.common import ArrayWriter
    from xarray.backends.writers import dump_to_store, get_writable_zarr_store

    prepared, plans = _prepare(ds, zarr_format, stored, codec)
    store = zarr.storage.MemoryStore()
    # What `to_zarr(compute=False)` does, minus the dask graph of the chunk writes it
    # would return (never run here, and building it imports dask.distributed: ~0.6 s at
    # a first start). The writer stores in-memory values now and only queues dask ones.
    zstore = get_writable_zarr_store(store, mode="w", consolidated=True, zarr_format=zarr_format)
    dump_to_store(prepared, zstore, ArrayWriter())  # type: ignore[no-untyped-call]
    if _restore_time_units(store, ds, zarr_format):
        zarr.consolidate_metadata(store, zarr_format=zarr_format)
    if zarr_format == 2:
        plans = {name: _check_missing_chunks(store, plan) for name, plan in plans.items()}
    documents = {key: bytes(buf.to_bytes()) for key, buf in store._store_dict.items()}
    return ZarrView(zarr_format, documents, plans, codec)


def _prepare(
    ds: xr.Dataset,
    zarr_format: ZarrFormat,
    stored: Callable[[str], StoredChunks | None],
    codec: ZarrCodec,
) -> tuple[xr.Dataset, dict[str, ArrayPlan]]:
    out = ds.copy(deep=False)
    plans: dict[str, ArrayPlan] = {}
    for key, var in ds.variables.items():
        name = str(key)
        cf = {"_FillValue": None, **_cf_encoding(var.encoding)}
        char_dim = _is_char_array(var) and name not in var.dims
        if char_dim:
            var = _as_characters(var, name)
            out[name] = var
            cf.pop("dtype")
        if var.chunks is None:  # in memory: xarray writes it whole into the store
            out[name].encoding = cf
            continue
        plan, encoding = _plan(var, name, zarr_format, stored, char_dim, codec)
        out[name] = var.chunk(dict(zip(var.dims, plan.chunks, strict=True)))
        out[name].encoding = {**cf, **encoding}
        plans[name] = plan
    return out, plans


def _plan(
    var: xr.Variable,
    name: str,
    zarr_format: ZarrFormat,
    stored: Callable[[str], StoredChunks | None],
    char_dim: bool,
    codec: ZarrCodec,
) -> tuple[ArrayPlan, dict[str, Any]]:
    """How the chunks of a dask-backed variable are produced, and the encoding to declare."""
    from xarray.backends.zarr import encode_zarr_variable

    head = var[tuple(slice(0, 1) for _ in var.dims)]
    dtype = encode_zarr_variable(head, name=name, zarr_format=zarr_format).dtype
    raw = stored(name) if var.ndim and not char_dim else None
    if raw is not None and (
        raw.shape != var.shape or not _same_values(np.dtype(raw.dtype), dtype, zarr_format)
    ):
        raw = None
    source: tuple[Any, ...] | None = None
    framed = False
    if raw is not None:
        chunks, layout = raw.chunks, np.dtype(raw.dtype)
        if codec != "stored":
            source, codecs = file_codecs(raw), served_codecs(codec, layout.itemsize)
        else:
            codecs, framed = stored_codecs(raw)
        declared = _declare(codecs, layout, zarr_format)
        if zarr_format == 3:  # v3 keeps the fill apart from _FillValue: make it the file's
            declared["fill_value"] = np.frombuffer(raw.fill, dtype=layout)[0]
    else:
        codecs = served_codecs("zstd" if codec == "stored" else codec, dtype.itemsize)
        chunks = _encoded_chunks(var, dtype.itemsize)
        layout = dtype if zarr_format == 2 else dtype.newbyteorder("<")
        declared = _declare(codecs, layout, zarr_format)
    plan = ArrayPlan(name, var.shape, chunks, layout, raw, codecs, char_dim, source, framed=framed)
    return plan, {"chunks": chunks, **declared}


def _same_values(stored: np.dtype[Any], encoded: np.dtype[Any], zarr_format: ZarrFormat) -> bool:
    """Whether stored bytes can stand for the encoded dtype (v3 declares the byte order)."""
    if zarr_format == 2:
        return stored == encoded
    return stored.newbyteorder("<") == encoded.newbyteorder("<")


def _encoded_chunks(var: xr.Variable, itemsize: int) -> tuple[int, ...]:
    """The dask chunking, or for one whole-variable chunk, leading dims cut to size."""
    assert var.chunks is not None
    chunks = [max(c[0], 1) if c else 1 for c in var.chunks]
    if any(len(c) > 1 for c in var.chunks):
        return tuple(chunks)
    return whole_in_pieces(chunks, itemsize)


def whole_in_pieces(shape: list[int], itemsize: int) -> tuple[int, ...]:
    """Chunks for a variable held whole: leading dimensions cut to about
    TARGET_CHUNK_BYTES, so one request never decodes a whole large variable."""
    chunks = [max(n, 1) for n in shape]
    for i in range(len(chunks)):
        trailing = math.prod(chunks[i + 1 :]) * itemsize
        if chunks[i] * trailing <= TARGET_CHUNK_BYTES:
            break
        chunks[i] = max(1, TARGET_CHUNK_BYTES // max(trailing, 1))
    return tuple(chunks)


def _cf_encoding(encoding: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in encoding.items() if k in CF_ENCODING_KEYS}


def _is_char_array(var: xr.Variable) -> bool:
    """A NetCDF character array (`S1` with a string dimension) decoded to fixed-width bytes."""
    return var.dtype.kind == "S" and var.encoding.get("dtype") == np.dtype("S1")


def _as_characters(var: xr.Variable, name: str) -> xr.Variable:
    """`S1` characters along the original string dimension, as a NetCDF file stores them.

    Zarr has no character arrays; stored this way, xarray's reader joins the characters
    back and reports the same `dtype` and `char_dim_name` encoding as the local file.
    """
    from xarray.coding.strings import CharacterArrayCoder

    chars: xr.Variable = CharacterArrayCoder().encode(var, name=name)  # type: ignore[no-untyped-call]
    return chars


def served_codecs(codec: ZarrCodec, itemsize: int) -> tuple[Any, ...]:
    """The codecs chunks are compressed with when they are not served as stored."""
    if codec == "lz4":
        from numcodecs import Blosc

        shuffle = Blosc.SHUFFLE if itemsize > 1 else Blosc.NOSHUFFLE
        return (Blosc(cname="lz4", clevel=BLOSC_CLEVEL, shuffle=shuffle),)
    return (numcodec("zstd", ENCODED_CLEVEL),)


def file_codecs(raw: StoredChunks) -> tuple[Any, ...]:
    """The numcodecs codecs of a stored variable's HDF5 filters, in the order applied."""
    return tuple(numcodec(c, param) for c, param in raw.filters)


def stored_codecs(raw: StoredChunks) -> tuple[tuple[Any, ...], bool]:
    """The codecs to declare for serving `raw`'s chunks as stored, and whether they go out
    framed as Blosc chunks: zlib alone or after shuffle is Blosc-zlib with one block."""
    filters = [c for c, _ in raw.filters]
    itemsize = np.dtype(raw.dtype).itemsize
    size = math.prod(raw.chunks) * itemsize
    if filters in (["zlib"], ["shuffle", "zlib"]) and 0 < size <= BLOSC_MAX_FRAMED:
        from numcodecs import Blosc

        shuffled = filters[0] == "shuffle" and itemsize > 1
        level = raw.filters[-1][1]
        shuffle = Blosc.SHUFFLE if shuffled else Blosc.NOSHUFFLE
        return (Blosc(cname="zlib", clevel=level, shuffle=shuffle),), True
    return file_codecs(raw), False


def frame_stream(plan: ArrayPlan, stream: bytes) -> bytes:
    """A stored chunk as the Blosc chunk its plan declares: the header, then the stream;
    a stream as long as its chunk decoded (Blosc would copy it as it is) goes inflated."""
    if len(stream) == plan.nbytes():
        import zlib

        stream = zlib.decompress(stream)
    return plan.frame_header(len(stream)) + stream


def numcodec(codec: str, param: int) -> Any:
    from numcodecs import Fletcher32, Shuffle, Zlib, Zstd

    makers: dict[str, Callable[[int], Any]] = {
        "zlib": lambda p: Zlib(level=p),
        "shuffle": lambda p: Shuffle(elementsize=p),
        "fletcher32": lambda _: Fletcher32(),
        "zstd": lambda p: Zstd(level=p),
    }
    return makers[codec](param)


def _declare(
    codecs: tuple[Any, ...], layout: np.dtype[Any], zarr_format: ZarrFormat
) -> dict[str, Any]:
    """The zarr encoding that decodes bytes made by `codecs` (applied in order) from `layout`."""
    if zarr_format == 2:
        *filters, last = codecs or (None,)
        if last is not None and last.codec_id in ("zlib", "zstd", "blosc"):
            return {"compressors": [last], "filters": filters or None}
        return {"compressors": None, "filters": list(codecs) or None}
    import zarr.codecs as zc
    from zarr.codecs import numcodecs as znc

    v3: dict[str, Callable[[Any], Any]] = {
        "zlib": lambda c: znc.Zlib(level=c.level),
        "shuffle": lambda c: znc.Shuffle(elementsize=c.elementsize),
        "fletcher32": lambda c: znc.Fletcher32(),
        "zstd": lambda c: zc.ZstdCodec(level=c.level),
        "blosc": lambda c: zc.BloscCodec(
            cname=c.cname,
            clevel=c.clevel,
            shuffle="shuffle" if c.shuffle else "noshuffle",
            typesize=layout.itemsize,
        ),
    }
    endian = None if layout.itemsize == 1 else ("big" if layout.byteorder == ">" else "little")
    return {
        "serializer": zc.BytesCodec(endian=endian),
        "compressors": [v3[c.codec_id](c) for c in codecs] or None,
        "filters": None,
    }


def _restore_time_units(store: Any, ds: xr.Dataset, zarr_format: ZarrFormat) -> bool:
    """Put back time `units` that xarray rewrote in an equivalent form; True if any.

    xarray encodes in-memory times eagerly and normalises the units on the way
    ("hours since 1970-01-01 00:00:00" becomes "hours since 1970-01-01"); the numbers are
    the same under either spelling, so the file's own spelling is restored.
    """
    import zarr
    from xarray.coding.times import _cleanup_netcdf_time_units

    group = zarr.open_group(store, mode="r+", zarr_format=zarr_format, use_consolidated=False)
    changed = False
    for name, var in ds.variables.items():
        units = var.encoding.get("units")
        if not isinstance(units, str) or str(name) not in group:
            continue
        written = group[str(name)].attrs.get("units")
        if written != units and written == _cleanup_netcdf_time_units(units):
            group[str(name)].attrs["units"] = units
            changed = True
    return changed


def _check_missing_chunks(store: Any, plan: ArrayPlan) -> ArrayPlan:
    """Encode unwritten chunks when the v2 client would not fill them as the file does.

    A v2 array's `fill_value` is also its `_FillValue` (null reads as zero), so it can't
    always be set to the HDF5 fill value; if they differ, the chunks are encoded instead.
    """
    import zarr

    raw = plan.stored
    if raw is None or raw.complete():
        return plan
    array = zarr.open_array(store, path=plan.name, zarr_format=2)
    declared = np.asarray(array.fill_value or 0, dtype=plan.dtype)
    fill = np.frombuffer(raw.fill, dtype=plan.dtype)[0]
    if np.array_equal(declared, fill, equal_nan=plan.dtype.kind == "f"):
        return plan
    return ArrayPlan(plan.name, plan.shape, plan.chunks, plan.dtype, None, plan.codecs)


def encode_chunk(
    ds: xr.Dataset, plan: ArrayPlan, coords: tuple[int, ...], fmt: ZarrFormat
) -> bytes:
    """CF-encode the chunk at `coords` of `plan`'s variable and compress it as declared."""
    from xarray.backends.zarr import encode_zarr_variable

    region = plan.region(coords)
    var = ds.variables[plan.name]
    part = var[region[:-1] if plan.char_dim else region]
    if plan.char_dim:
        part = _as_characters(part, plan.name)
    encoded = encode_zarr_variable(part, name=plan.name, zarr_format=fmt)
    return compress_block(plan, encoded.values)


def compress_block(plan: ArrayPlan, values: Any) -> bytes:
    """One chunk's values in the plan's layout, padded to the chunk shape, compressed."""
    block = np.asarray(values).astype(plan.dtype, copy=False)
    if block.shape != plan.chunks:
        padded = np.zeros(plan.chunks, dtype=plan.dtype)
        padded[tuple(slice(0, n) for n in block.shape)] = block
        block = padded
    data: Any = np.ascontiguousarray(block)
    for codec in plan.codecs:
        data = codec.encode(data)
    return bytes(data)


def transcode_chunk(plan: ArrayPlan, stored: bytes) -> bytes:
    """A stored chunk's bytes decoded through the file's filters and compressed as declared."""
    data: Any = stored
    for codec in reversed(plan.source_codecs or ()):
        data = codec.decode(data)
    block: Any = np.frombuffer(data, dtype=plan.dtype)
    for codec in plan.codecs:
        block = codec.encode(block)
    return bytes(block)


def parse_format(text: str) -> ZarrFormat:
    if text in ("2", "v2"):
        return 2
    if text in ("3", "v3"):
        return 3
    raise BadQuery(f"zarr_format must be 2 or 3, not {text!r}", parameter="zarr_format")
