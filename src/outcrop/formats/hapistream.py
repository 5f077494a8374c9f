"""HAPI data streams (HAPI 3.3 §3.7.4): CSV, binary and JSON records written from whole
`Block`s by NumPy and pyarrow, a piece of at most ROWS_PER_PIECE records at a time."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from outcrop.formats.hapi import Format, Layout, header_lines
from outcrop.formats.hapitime import format_times
from outcrop.model import Block, Parameter

# -- data streams (§3.7.4) -----------------------------------------------------------------
ROWS_PER_PIECE = 1 << 16  # records encoded at once: bounded memory, early first bytes
_CSV = pcsv.WriteOptions(include_header=False, quoting_style="none")


def encode(
    blocks: Iterator[Block], layout: Layout, fmt: Format, head: Mapping[str, Any] | None
) -> Iterator[bytes]:
    """A data response body: `head` (the info document with `format`) first when given —
    `#`-prefixed lines for csv and binary, the enclosing object for json (§3.7.2)."""
    if fmt == "json":
        yield from _json_stream(blocks, layout, head or {})
        return
    if head is not None:
        yield header_lines(head)
    piece = csv_piece if fmt == "csv" else binary_piece
    for block in blocks:
        for lo in range(0, len(block), ROWS_PER_PIECE):
            yield piece(_slice(block, lo, lo + ROWS_PER_PIECE), layout)


def _slice(block: Block, lo: int, hi: int) -> Block:
    if lo == 0 and hi >= len(block):
        return block
    return Block(block.time[lo:hi], {k: v[lo:hi] for k, v in block.values.items()})


def _columns(block: Block, p: Parameter) -> np.ndarray[Any, Any]:
    """A parameter's values as (n, columns), arrays unrolled last index fastest (§3.6.8)."""
    values = np.asarray(block.values[p.name])
    return values.reshape(len(block), -1)


def csv_piece(block: Block, layout: Layout) -> bytes:
    """CSV records (RFC 4180, §3.7.4.1): shortest round-trip numbers, NaN as `NaN`."""
    times = format_times(block.time, layout.time)
    columns: list[pa.Array] = [_fixed_strings(times, layout.time.length)]
    for p in layout.parameters:
        values = _columns(block, p)
        columns.extend(_csv_column(values[:, j], p) for j in range(values.shape[1]))
    if any(pa.types.is_large_string(c.type) for c in columns[1:]):
        return _joined_csv(columns)
    out = pa.BufferOutputStream()
    pcsv.write_csv(pa.table(columns, names=[f"c{i}" for i in range(len(columns))]), out, _CSV)
    body: bytes = out.getvalue().to_pybytes()
    return body


def _fixed_strings(data: np.ndarray[Any, Any], width: int) -> pa.Array:
    """Fixed-width ASCII values as an Arrow string array, without copying them."""
    offsets = np.arange(len(data) + 1, dtype=np.int64) * width
    return pa.LargeStringArray.from_buffers(
        len(data), pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(data))
    )


def _csv_column(values: np.ndarray[Any, Any], p: Parameter) -> pa.Array:
    if p.type == "double":
        floats = arrow_of(values.astype(np.float64, copy=False))
        if not np.isnan(values).any():
            return floats
        return pc.replace_substring(pc.cast(floats, pa.string()), "nan", "NaN")
    if p.type == "integer":
        return arrow_of(values.astype(np.int64, copy=False))
    text = pa.array(values.astype(str), type=pa.large_string())
    special = pc.match_substring_regex(text, '[,"\r\n]')
    quote, empty = _large('"'), _large("")
    quoted = pc.binary_join_element_wise(quote, pc.replace_substring(text, '"', '""'), quote, empty)
    return pc.if_else(special, quoted, text)


def arrow_of(values: np.ndarray[Any, Any]) -> pa.Array:
    """A 1-D numeric NumPy array as Arrow (copied only when strided or not in native
    byte order). Not `pa.array`, whose first call imports pandas (~45 MB more in a server
    whose datasets never need it)."""
    data = np.ascontiguousarray(values, values.dtype.newbyteorder("="))
    kind = pa.from_numpy_dtype(data.dtype)
    return pa.Array.from_buffers(kind, len(data), [None, pa.py_buffer(data)])


def _large(text: str) -> pa.Scalar:
    return pa.scalar(text, pa.large_string())


def _joined_csv(columns: list[pa.Array]) -> bytes:
    """Records joined by Arrow itself: the path for string parameters, whose quoting the
    CSV writer cannot leave to us."""
    text = [
        c if pa.types.is_large_string(c.type) else pc.cast(c, pa.large_string()) for c in columns
    ]
    lines = pc.binary_join_element_wise(*text, _large(","))
    lines = pc.binary_join_element_wise(lines, _large(""), _large("\n"))
    return b"".join(s.as_buffer().to_pybytes() for s in lines)


def binary_dtype(layout: Layout) -> np.dtype[Any]:
    """One binary record (§3.7.4.2): the time as ASCII of the declared length, doubles as
    little-endian float64, integers as little-endian int32, strings NUL-padded."""
    fields: list[tuple[Any, ...]] = [("t", f"S{layout.time.length}")]
    for i, p in enumerate(layout.parameters):
        base = {"double": "<f8", "integer": "<i4"}.get(p.type) or f"S{p.length or 1}"
        fields.append((f"c{i}", base, p.size) if p.size else (f"c{i}", base))
    return np.dtype(fields)


def binary_piece(block: Block, layout: Layout) -> bytes:
    records = np.empty(len(block), dtype=binary_dtype(layout))
    records["t"] = format_times(block.time, layout.time)
    for i, p in enumerate(layout.parameters):
        records[f"c{i}"] = _binary_values(np.asarray(block.values[p.name]), p)
    return records.tobytes()


def _binary_values(values: np.ndarray[Any, Any], p: Parameter) -> np.ndarray[Any, Any]:
    from outcrop.errors import SourceError

    if p.type == "integer":
        if len(values) and (values.min() < -(2**31) or values.max() >= 2**31):
            raise SourceError(f"parameter {p.name} has values beyond the 32-bit integers of HAPI")
        return values
    if p.type == "double":
        return values
    encoded = np.char.encode(values.astype(str), "utf-8")
    if len(encoded) and np.char.str_len(encoded).max() > (p.length or 1):
        raise SourceError(f"parameter {p.name} has values longer than its length {p.length}")
    return encoded


def _json_stream(
    blocks: Iterator[Block], layout: Layout, head: Mapping[str, Any]
) -> Iterator[bytes]:
    """The info document with `data` last, records streamed as they come (§3.7.4.3)."""
    yield orjson.dumps({**head, "format": "json"})[:-1] + b',"data":['
    first = True
    for block in blocks:
        for lo in range(0, len(block), ROWS_PER_PIECE):
            piece = json_piece(_slice(block, lo, lo + ROWS_PER_PIECE), layout)
            if piece:
                yield piece if first else b"," + piece
                first = False
    yield b"]}"


def json_piece(block: Block, layout: Layout) -> bytes:
    """JSON records, comma-separated: arrays for vectors, `null` for NaN."""
    if not len(block):
        return b""
    columns = [format_times(block.time, layout.time).astype(str).tolist()]
    columns += [np.asarray(block.values[p.name]).tolist() for p in layout.parameters]
    return orjson.dumps(list(zip(*columns, strict=True)))[1:-1]


def peek(blocks: Iterator[Block]) -> tuple[bool, Iterator[Block]]:
    """Whether a stream has any record, and the same stream (blocks read up to the first
    record), so a header can say 1201 when there is none (§3.7.6.3)."""
    seen: list[Block] = []
    for block in blocks:
        seen.append(block)
        if len(block):
            return True, _chain(seen, blocks)
    return False, iter(seen)


def _chain(seen: list[Block], rest: Iterator[Block]) -> Iterator[Block]:
    yield from seen
    yield from rest


def within(blocks: Iterator[Block], start: int, stop: int) -> Iterator[Block]:
    """The records with `start <= time < stop` (§3.7.2): reduced answers hold every bin
    overlapping the range, and a bin belongs to the request its centre falls in."""
    lo, hi = np.datetime64(start, "ns"), np.datetime64(stop, "ns")
    for block in blocks:
        first, last = np.searchsorted(block.time, [lo, hi])
        yield _slice(block, int(first), int(last))
