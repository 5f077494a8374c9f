"""DAP4 (OPeNDAP 4.0): the `dap4.ce` constraint, the DMR and the chunked data response.

References: DAP4 Volume 1 (data model, serialized representation, chunking, constraints)
and Volume 2 (web services, error response), https://github.com/OPENDAP/dap4-specification.
Where the clients depart from the text, the clients win: libnetcdf 4.9 (ncdump) and 4.10
(the netCDF4 wheel), pydap 3.5.

- Types are native (Vol. 1 §Atomic Types): every integer width and both float widths go
  as they are stored; char arrays (`S1`, with their string-length dimension) are `Char`
  arrays, which libnetcdf reads as NC_CHAR; NC_STRING (str objects) and fixed-width
  strings are `String`; bool is `UInt8`; float16 is widened to `Float32`.
- Data are little-endian whatever the source ("receiver makes it right", flag 0x04 in the
  chunk headers). pydap reads string counts as little-endian whatever the flag.
- A data response is a DMR chunk (the constrained DMR and CRLF, whose last byte libnetcdf
  drops), then data chunks of at most `CHUNK_SIZE` bytes, the last flagged END. Values
  follow in DMR order. With checksums, each variable's values are followed by the CRC-32
  (zlib's) of their serialized bytes, string counts included, and the DMR carries the same
  sums as `_DAP4_Checksum_CRC32` attributes (see `dap`).
- Flag 0x08 of the first chunk says there are *no* checksums, as libnetcdf 4.9 and
  netCDF-Java read it (libnetcdf 4.9 reads values at the wrong offsets otherwise); the
  current text of Vol. 1 §7 gives it the opposite meaning, which no client tested reads.
- Constrained DMRs (Vol. 1 §Constrained DMR Objects): a variable whose every dimension is
  whole, or sliced by a dimension constraint (`/lat=[0:9]`), keeps its shared dimensions,
  redeclared with their constrained sizes; any other slice gives that variable anonymous
  dimensions (`<Dim size="10"/>`) on every axis, not only the sliced one: pydap puts the
  sizes of anonymous dimensions before those of named ones, whatever their order.
"""

from __future__ import annotations

import math
import re
import struct
import zlib
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from outcrop.errors import BadQuery, SourceError, TooLarge
from outcrop.formats.dap import Constraint, Hyperslab, Projection, Values

if TYPE_CHECKING:
    import xarray as xr

NAMESPACE = "http://xml.opendap.org/ns/DAP/4.0#"
CHUNK_SIZE = 1 << 20  # data bytes per chunk: bounded memory, few headers (limit 2**24 - 1)
CHECKSUM_ATTRIBUTE = "_DAP4_Checksum_CRC32"
PARAMETER = "dap4.ce"

# Chunk header flags (Vol. 1 §DAP4 Chunked Data Representation).
END, LITTLE_ENDIAN, NO_CHECKSUMS = 0x01, 0x04, 0x08  # 0x02 (ERROR) is never sent
MAX_CHUNK = (1 << 24) - 1

# numpy kind + item size -> DAP4 type; see `atomic_type` for the rest.
NUMERIC = {
    "i1": "Int8",
    "u1": "UInt8",
    "i2": "Int16",
    "u2": "UInt16",
    "i4": "Int32",
    "u4": "UInt32",
    "i8": "Int64",
    "u8": "UInt64",
    "f4": "Float32",
    "f8": "Float64",
}


# --------------------------------------------------------------------------- types


def atomic_type(dtype: np.dtype[Any]) -> str | None:
    """The DAP4 type a stored dtype is served as, or None when DAP4 has none (complex,
    structured, datetime: not in a stored dataset opened with `decode_cf=False`)."""
    if dtype.kind == "b":
        return "UInt8"
    if dtype.kind == "f" and dtype.itemsize == 2:
        return "Float32"
    if dtype.kind == "S" and dtype.itemsize == 1:
        return "Char"
    if dtype.kind in "SUO":
        return "String"
    return NUMERIC.get(f"{dtype.kind}{dtype.itemsize}")


def wire_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """The little-endian dtype a fixed-size variable's values are sent in."""
    if dtype.kind in "bS":
        return np.dtype("u1")
    if dtype.kind == "f" and dtype.itemsize == 2:
        return np.dtype("<f4")
    return np.dtype(dtype.newbyteorder("<"))


def servable(ds: xr.Dataset) -> list[Hashable]:
    """The variables a DAP4 response can hold, in dataset order."""
    return [k for k, v in ds.variables.items() if atomic_type(v.dtype) is not None]


# --------------------------------------------------------------------------- constraint


@dataclass(frozen=True)
class Dap4Projection(Projection):
    """A projection that also says how the constrained DMR declares its dimensions.

    Attributes:
        shared: every slab is its dimension's whole extent or the slab a dimension
            constraint gave it, so the DMR names the shared dimensions; otherwise the
            variable gets anonymous dimensions.
    """

    shared: bool = True


@dataclass(frozen=True)
class Clause:
    """One `;`-separated clause: a variable projection or a dimension constraint."""

    name: str
    slices: tuple[str, ...]
    dimension: bool


CLAUSE = re.compile(r"(?P<name>(?:\\.|[^\\\[=])+)(?P<eq>=)?(?P<slices>(?:\[[^\]]*\])*)$", re.S)
SLICES = re.compile(r"\[([^\]]*)\]")
SLAB = re.compile(r"\s*(?P<start>\d+)\s*(?::\s*(?:(?P<stride>\d*)\s*:\s*)?(?P<stop>\d*)\s*)?")


def parse_constraint(ce: str, ds: xr.Dataset) -> Constraint:
    """Parse a decoded `dap4.ce` (Vol. 1 §Constraints) against a stored dataset.

    Supported: projections `/temp[0:1:9][0:359][]` (names with or without the leading
    `/`, backslash escapes), slices `[i]`, `[a:b]`, `[a:s:b]` (inclusive stop), `[a:]`,
    `[a:s:]` and `[]`, several clauses separated by `;`, dimension constraints
    `/lat=[0:9]` applied to every variable that does not slice that dimension itself. An
    empty CE, or one with only dimension constraints, projects every variable. Filters,
    structure fields and disjoint slices (`[0:2,5:7]`) are refused with BadQuery.

    Returns:
        `Dap4Projection`s in dataset order (the order of the DMR and the data).
    """
    clauses = [parse_clause(text) for text in split_clauses(ce)]
    dimension_slabs = dimension_constraints([c for c in clauses if c.dimension], ds)
    projected = [c for c in clauses if not c.dimension]
    names = {str(k): k for k in servable(ds)}
    chosen: dict[str, Dap4Projection] = {}
    for clause in projected or [Clause(n, (), False) for n in names]:
        found = variable_projection(clause, ds, names, dimension_slabs)
        previous = chosen.setdefault(found.name, found)
        if previous != found:
            raise BadQuery(
                f"dap4.ce constrains variable '{found.name}' twice, differently; "
                "each variable may appear once",
                parameter=PARAMETER,
            )
    order = {name: i for i, name in enumerate(names)}
    return tuple(sorted(chosen.values(), key=lambda p: order[p.name]))


def split_clauses(ce: str) -> list[str]:
    """The clauses of a CE, split on `;` not escaped by a backslash; empty ones dropped."""
    parts = re.split(r"(?<!\\);", ce)
    return [p.strip() for p in parts if p.strip()]


def parse_clause(text: str) -> Clause:
    """`/name[..][..]` or `/dim=[..]`; anything else (filters, fields) is refused."""
    match = CLAUSE.match(text)
    if match is None:
        raise BadQuery(
            f"dap4.ce clause '{text}' is not understood: expected /variable[start:stride:stop]"
            "… or /dimension=[start:stride:stop] (filters '|' and fields '{…}' are not "
            "supported)",
            parameter=PARAMETER,
        )
    raw = match["name"].strip()
    name = re.sub(r"\\(.)", r"\1", raw[1:] if raw.startswith("/") else raw, flags=re.S)
    slices = tuple(SLICES.findall(match["slices"]))
    if match["eq"] and len(slices) != 1:
        raise BadQuery(
            f"dap4.ce dimension constraint '{text}' needs exactly one slice, as in /lat=[0:9]",
            parameter=PARAMETER,
        )
    return Clause(name, slices, bool(match["eq"]))


def dimension_constraints(clauses: Sequence[Clause], ds: xr.Dataset) -> dict[str, Hyperslab]:
    """`/lat=[0:9]` clauses as {dimension: slab}."""
    sizes = {str(k): int(v) for k, v in ds.sizes.items()}
    found: dict[str, Hyperslab] = {}
    for clause in clauses:
        if clause.name not in sizes:
            known = ", ".join(sizes) or "none"
            raise BadQuery(
                f"dap4.ce constrains dimension '{clause.name}', which this dataset does not "
                f"have (dimensions: {known})",
                parameter=PARAMETER,
            )
        size = sizes[clause.name]
        slab = parse_slab(clause.slices[0], size, f"dimension '{clause.name}'")
        found[clause.name] = slab or Hyperslab.whole(size)
    return found


def variable_projection(
    clause: Clause,
    ds: xr.Dataset,
    names: Mapping[str, Hashable],
    dimension_slabs: Mapping[str, Hyperslab],
) -> Dap4Projection:
    """The projection of one variable clause, its dimension constraints applied."""
    if clause.name not in names:
        raise BadQuery(unknown_variable(clause.name, ds), parameter=PARAMETER)
    var = ds.variables[names[clause.name]]
    dims = [str(d) for d in var.dims]
    slices = clause.slices
    if not dims and slices in ((), ("",), ("0",)):
        return Dap4Projection(clause.name, ())
    if slices and len(slices) != len(dims):
        raise BadQuery(
            f"dap4.ce gives {len(slices)} slice(s) for variable '{clause.name}', which has "
            f"{len(dims)} dimension(s) ({', '.join(dims) or 'a scalar: use [] or [0]'})",
            parameter=PARAMETER,
        )
    shared = [
        dimension_slabs.get(d, Hyperslab.whole(n)) for d, n in zip(dims, var.shape, strict=True)
    ]
    slabs = list(shared)
    for axis, text in enumerate(slices):
        where = f"dimension '{dims[axis]}' of variable '{clause.name}'"
        slabs[axis] = parse_slab(text, var.shape[axis], where) or shared[axis]
    return Dap4Projection(clause.name, tuple(slabs), shared=slabs == shared)


def parse_slab(text: str, size: int, where: str) -> Hyperslab | None:
    """`i`, `a:b`, `a:s:b`, `a:` or `a:s:` as a Hyperslab within `size`; `` as None."""
    if not text.strip():
        return None
    match = SLAB.fullmatch(text)
    if match is None or match["stride"] == "":
        problem = "disjoint slices are not supported" if "," in text else "it is malformed"
        raise BadQuery(
            f"dap4.ce slice [{text}] for {where}: {problem}; use [i], [start:stop], "
            "[start:stride:stop], [start:] or [start:stride:] with indexes from 0",
            parameter=PARAMETER,
        )
    start = int(match["start"])
    stop = match["stop"] if match["stop"] is not None else match["start"]
    stride = int(match["stride"] or 1)
    last = int(stop) if stop else size - 1  # `a:` and `a:s:` run to the end
    check_slab(text, start, stride, last, size, where)
    return Hyperslab(start, stride, last)


def check_slab(text: str, start: int, stride: int, stop: int, size: int, where: str) -> None:
    if stride < 1:
        problem = "the stride must be at least 1"
    elif not size:
        problem = "the dimension is empty: use []"
    elif start > stop:
        problem = f"the start {start} is after the stop {stop}"
    elif stop >= size:
        problem = f"the last index is {size - 1}"
    else:
        return
    raise BadQuery(f"dap4.ce slice [{text}] for {where}: {problem}", parameter=PARAMETER)


def unknown_variable(name: str, ds: xr.Dataset) -> str:
    if "/" in name:
        return (
            f"dap4.ce names '{name}': groups are served as datasets of their own; "
            "open the group's dataset and name the variable without its group"
        )
    if any(c in name for c in "|{}"):
        return (
            f"dap4.ce clause '{name}' uses filters ('|') or structure fields ('{{…}}'), "
            "which are not supported: name variables, with index slices"
        )
    names = ", ".join(str(k) for k in servable(ds)) or "none"
    return f"dap4.ce names variable '{name}', which this dataset does not have (variables: {names})"


# --------------------------------------------------------------------------- DMR


def dmr(
    ds: xr.Dataset,
    name: str,
    constraint: Constraint,
    checksums: Mapping[str, int] | None = None,
) -> str:
    """The DMR XML document (Vol. 1 §DMR Declarations) of the constrained dataset.

    Args:
        ds: the stored dataset.
        name: the `<Dataset name=…>`.
        constraint: from `parse_constraint`; empty means every variable, whole.
        checksums: {variable: CRC-32} from `crc32s`, added as `_DAP4_Checksum_CRC32`
            attributes (a DMR-only response asked with `dap4.checksum=true`).
    """
    projections = resolve(ds, constraint)
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<Dataset xmlns="{NAMESPACE}" name={quote(name)} dapVersion="4.0" dmrVersion="1.0">',
    ]
    lines += [
        f"  <Dimension name={quote(d)} size={quote(str(n))}/>"
        for d, n in shared_dimensions(ds, projections).items()
    ]
    sums = checksums or {}
    for p in projections:
        lines += variable_lines(ds, p, sums.get(p.name))
    lines += attribute_lines(ds.attrs, "  ", None)
    lines.append("</Dataset>")
    return "\n".join(lines) + "\n"


def resolve(ds: xr.Dataset, constraint: Constraint) -> list[Projection]:
    """The projections to serve: the constraint's, or every variable whole."""
    if not constraint:
        return [
            Dap4Projection(str(k), tuple(Hyperslab.whole(n) for n in ds.variables[k].shape))
            for k in servable(ds)
        ]
    for p in constraint:
        if p.name not in ds.variables or atomic_type(ds.variables[p.name].dtype) is None:
            raise BadQuery(unknown_variable(p.name, ds), parameter=PARAMETER)
    return list(constraint)


def is_shared(ds: xr.Dataset, p: Projection) -> bool:
    """Whether the DMR gives `p` its shared dimensions (see `Dap4Projection`)."""
    if isinstance(p, Dap4Projection):
        return p.shared
    shape = ds.variables[p.name].shape
    return all(s == Hyperslab.whole(n) for s, n in zip(p.slabs, shape, strict=True))


def shared_dimensions(ds: xr.Dataset, projections: Sequence[Projection]) -> dict[str, int]:
    """{dimension: constrained size} of the shared dimensions the projections use, in the
    dataset's dimension order."""
    used: dict[str, int] = {}
    for p in projections:
        if is_shared(ds, p):
            for d, slab in zip(ds.variables[p.name].dims, p.slabs, strict=True):
                used[str(d)] = slab.count
    return {str(d): used[str(d)] for d in ds.sizes if str(d) in used}


def variable_lines(ds: xr.Dataset, p: Projection, checksum: int | None) -> list[str]:
    var = ds.variables[p.name]
    kind = atomic_type(var.dtype)
    shared = is_shared(ds, p)
    lines = [f"  <{kind} name={quote(p.name)}>"]
    for d, slab in zip(var.dims, p.slabs, strict=True):
        dim = f"name={quote(fqn(str(d)))}" if shared else f"size={quote(str(slab.count))}"
        lines.append(f"    <Dim {dim}/>")
    lines += attribute_lines(var.attrs, "    ", var.dtype)
    if checksum is not None:
        lines.append(attribute_xml(CHECKSUM_ATTRIBUTE, "UInt32", [str(checksum)], "    "))
    lines.append(f"  </{kind}>")
    return lines


def fqn(name: str) -> str:
    """A root-group name as a fully qualified name (Vol. 1 §Fully Qualified Names), with
    `\\` and `/` escaped but not `.`: without structures it is unambiguous, libnetcdf
    reads it either way, and pydap does not unescape (`/x\\.y` is a dimension it cannot
    find)."""
    return "/" + re.sub(r"([\\/])", r"\\\1", name)


# --------------------------------------------------------------------------- attributes


def attribute_lines(attrs: Mapping[Any, Any], indent: str, var: np.dtype[Any] | None) -> list[str]:
    """`<Attribute>` elements; `_FillValue` and `missing_value` typed like the variable
    (libnetcdf refuses a `_FillValue` of another type)."""
    lines = []
    for key, value in attrs.items():
        typed = fill_typed(value, var) if key in ("_FillValue", "missing_value") else value
        kind, texts = attribute_values(typed)
        lines.append(attribute_xml(str(key), kind, texts, indent))
    return lines


def fill_typed(value: Any, var: np.dtype[Any] | None) -> Any:
    """A fill value in the variable's own type when it converts exactly."""
    array = np.asarray(value)
    if var is None or var.kind not in "iufb" or array.dtype.kind not in "iufb":
        return value
    with np.errstate(all="ignore"):
        cast = array.astype(wire_dtype(var))
    return cast if np.array_equal(cast, array, equal_nan=True) else value


def attribute_values(value: Any) -> tuple[str, list[str]]:
    """(DAP4 type, value texts) of an attribute value of any type."""
    if isinstance(value, str | bytes):
        return "String", [text_of(value)]
    array = np.asarray(value)
    kind = atomic_type(array.dtype)
    flat = array.reshape(-1)
    if kind in (None, "String", "Char"):
        return "String", [text_of(v) for v in flat]
    if array.dtype.kind == "f":
        return kind, [float_text(v) for v in flat]
    return kind, [str(int(v)) for v in flat]


def text_of(value: Any) -> str:
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def float_text(value: Any) -> str:
    """The shortest text of the value's exact double (a Float32 too, so that clients that
    read attributes as doubles, like pydap, get the stored float exactly)."""
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    return repr(number)


def attribute_xml(name: str, kind: str, texts: Sequence[str], indent: str) -> str:
    """One value as the `value` XML attribute, several as `<Value>` elements.

    libnetcdf reads a `value` XML attribute as it is, but mangles `<Value>` text: it
    re-escapes `&<>"'` as entities and drops backslashes (d4parser.c getValueStrings).
    """
    head = f"{indent}<Attribute name={quote(name)} type={quote(kind)}"
    if len(texts) == 1:
        return f"{head} value={quote(texts[0])}/>"
    values = "".join(f"<Value>{escape(t)}</Value>" for t in texts)
    return f"{head}>{values}</Attribute>"


# XML 1.0 cannot carry these characters at all, even as references: they become U+FFFD.
INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def escape(text: str) -> str:
    """Element text, escaped; CR as a reference so that parsers do not turn it into LF."""
    text = INVALID_XML.sub("\ufffd", text)
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    )


def quote(text: str) -> str:
    """An XML attribute value with its quotes; tabs and newlines kept as references."""
    body = escape(text).replace('"', "&quot;").replace("\n", "&#10;").replace("\t", "&#9;")
    return f'"{body}"'


# --------------------------------------------------------------------------- data


def crc32s(ds: xr.Dataset, constraint: Constraint, values: Values) -> dict[str, int]:
    """{variable: CRC-32 of its serialized values}, for `_DAP4_Checksum_CRC32` attributes.

    Reads every value of the projected variables (slab by slab): a DMR-only response with
    checksums costs a full read, as Vol. 1 §Checksums warns.
    """
    return {p.name: crc32(serialized(ds, p, values)) for p in resolve(ds, constraint)}


def crc32(pieces: Iterable[Any]) -> int:
    crc = 0
    for piece in pieces:
        crc = zlib.crc32(piece, crc)
    return crc


def dap(
    ds: xr.Dataset, name: str, constraint: Constraint, values: Values, checksums: bool
) -> Iterator[bytes]:
    """The chunked data response (Vol. 1 §Data Response): the DMR chunk, then data chunks.

    Validation happens in this call, before any byte is produced; the iterator then only
    reads values. A failure after the first byte must end the connection: an error chunk
    would be decoded as data by pydap, which does not look at the chunk flags.

    With `checksums`, each variable's CRC-32 follows its values and is also given in the
    DMR as `_DAP4_Checksum_CRC32`, although Vol. 1 §Checksums leaves it out of a data
    response: libnetcdf 4.10 looks for checksums in the data only when the DMR of the
    response holds that attribute (d4data.c NCD4_inferChecksums; the `dap4.checksum` of
    its URL is only forwarded), checks them against it, and without it reads every
    variable after the first at the wrong offset. The sums must then be known before the
    DMR: a response of at most `BUFFERED` bytes is read once and held, a larger one is
    read twice, the first time only to sum. Either happens in the first step of the
    iterator, so that a failure there still comes before the first byte.
    """
    projections = resolve(ds, constraint)
    placeholder = dict.fromkeys((p.name for p in projections), 0xFFFFFFFF) if checksums else None
    document(ds, name, projections, placeholder)  # too large?
    if not checksums:
        first = chunk(LITTLE_ENDIAN | NO_CHECKSUMS, [document(ds, name, projections, None)])
        return data_chunks(first, variables_stream(ds, projections, values))
    return checksummed(ds, name, projections, values)


BUFFERED = 16 << 20  # bytes of a checksummed response held in memory to read it only once


def document(
    ds: xr.Dataset, name: str, projections: Sequence[Projection], sums: Mapping[str, int] | None
) -> bytes:
    """The DMR chunk's content: the DMR and CRLF, which libnetcdf drops."""
    content = dmr(ds, name, tuple(projections), sums).encode("utf-8") + b"\r\n"
    if len(content) > MAX_CHUNK:
        raise TooLarge(
            f"the DMR is {len(content)} bytes; a DAP4 response can hold at most {MAX_CHUNK}",
            size=len(content),
            limit=MAX_CHUNK,
            parameter=PARAMETER,
        )
    return content


def checksummed(
    ds: xr.Dataset, name: str, projections: Sequence[Projection], values: Values
) -> Iterator[bytes]:
    """A data response with checksums, the sums in its DMR (see `dap`)."""
    stream: Iterator[Any]
    if fixed_size(ds, projections) <= BUFFERED:
        held = {p.name: list(serialized(ds, p, values)) for p in projections}
        sums = {n: crc32(pieces) for n, pieces in held.items()}
        stream = (
            piece
            for p in projections
            for piece in (*held.pop(p.name), struct.pack("<I", sums[p.name]))
        )
    else:
        sums = crc32s(ds, tuple(projections), values)
        stream = variables_stream(ds, projections, values, sums)
    first = chunk(LITTLE_ENDIAN, [document(ds, name, projections, sums)])
    yield from data_chunks(first, stream)


def fixed_size(ds: xr.Dataset, projections: Sequence[Projection]) -> float:
    """The bytes of the projections' values, or infinity when strings make it unknown."""
    total = 0
    for p in projections:
        dtype = ds.variables[p.name].dtype
        if atomic_type(dtype) == "String":
            return math.inf
        total += math.prod(p.shape) * wire_dtype(dtype).itemsize
    return total


def data_chunks(first: bytes, stream: Iterable[Any]) -> Iterator[bytes]:
    """The DMR chunk, then the stream cut into chunks of `CHUNK_SIZE`, the last one END."""
    yield first
    pending: list[memoryview] = []
    size = 0
    for piece in stream:
        view = memoryview(piece).cast("B")
        while len(view):
            take = min(len(view), CHUNK_SIZE - size)
            pending.append(view[:take])
            size += take
            view = view[take:]
            if size == CHUNK_SIZE:
                yield chunk(LITTLE_ENDIAN, pending)
                pending, size = [], 0
    yield chunk(LITTLE_ENDIAN | END, pending)


def chunk(flags: int, parts: Sequence[Any]) -> bytes:
    """One chunk: a big-endian header (flags byte, 3-byte length), then the parts."""
    length = sum(memoryview(p).nbytes for p in parts)
    return b"".join([struct.pack(">I", flags << 24 | length), *parts])


def variables_stream(
    ds: xr.Dataset,
    projections: Sequence[Projection],
    values: Values,
    sums: Mapping[str, int] | None = None,
) -> Iterator[Any]:
    """Each variable's serialized values in order, each followed by its CRC-32 when the
    sums (from a first reading) are given; a sum that differs now means the data changed
    between the readings."""
    for p in projections:
        crc = 0
        for piece in serialized(ds, p, values):
            crc = zlib.crc32(piece, crc) if sums is not None else 0
            yield piece
        if sums is not None:
            if crc != sums[p.name]:
                raise SourceError(
                    f"variable '{p.name}' changed while it was being sent; request it again"
                )
            yield struct.pack("<I", crc)


def serialized(ds: xr.Dataset, p: Projection, values: Values) -> Iterator[Any]:
    """A variable's values as bytes-like pieces (Vol. 1 §The DAP4 Serialized
    Representation): fixed-size values little-endian, strings as an 8-byte count and
    their UTF-8 bytes."""
    dtype = ds.variables[p.name].dtype
    text = atomic_type(dtype) == "String"
    for array in values.slabs(p.name, p.index()):
        if text:
            yield strings(np.asarray(array))
        else:
            yield wire_bytes(np.asarray(array), dtype)


def wire_bytes(array: np.ndarray[Any, Any], dtype: np.dtype[Any]) -> np.ndarray[Any, Any]:
    """Fixed-size values as little-endian bytes, copied only when the order or type
    differs (char arrays are reinterpreted, never converted)."""
    if dtype.kind != "S":
        array = array.astype(wire_dtype(dtype), copy=False)
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


def strings(array: np.ndarray[Any, Any]) -> bytes:
    encoded = [encode_string(v) for v in array.reshape(-1)]
    return b"".join(part for e in encoded for part in (struct.pack("<q", len(e)), e))


def encode_string(value: Any) -> bytes:
    if isinstance(value, bytes | np.bytes_):
        return bytes(value)
    return str(value).encode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------- errors


def error(message: str, code: int) -> bytes:
    """The DAP4 error response document (Vol. 2 §DAP4 Error Response)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<Error xmlns="{NAMESPACE}" httpcode={quote(str(code))}>\n'
        f"  <Message>{escape(message)}</Message>\n"
        "</Error>\n"
    ).encode()
