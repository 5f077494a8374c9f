"""DAP2 and DAP4 data responses decoded with numpy alone, independently of any DAP
library, so the benchmark can check a server's values (and time a read without libnetcdf's
client).

DAP2: a `.dods` body is the DDS, the line `Data:`, then XDR (DAP2 §7.3.2, RFC 4506): an
array of 32-bit floats is its length twice (4-byte big-endian integers) then the values,
big-endian. For a Grid the array comes first and its maps after it, so the first array
after the separator is the variable asked for.

DAP4: a `.dap` body is chunked (DAP4 vol. 1 §9): each chunk has a 4-byte header, one byte
of flags (1 last chunk, 2 error, 4 little-endian) and a 3-byte big-endian length. The
payloads, put together, are the DMR ending in CRLF, then each variable's values in the
chunks' byte order (a fixed-size array has no count), each followed by its CRC32 when the
client asked for checksums.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import numpy as np

SEPARATOR = re.compile(rb"\nData:\r?\n")


DMR_END = re.compile(rb"</Dataset>\s*?\r\n")


def dap2_first_array(body: bytes) -> np.ndarray[Any, np.dtype[np.float32]]:
    """The first Float32 array of a whole `.dods` body, in native byte order."""
    return read_dap2_first_array([body])


def dap4_first_array(body: bytes, count: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """The first `count` Float32 values after the DMR of a whole `.dap` body."""
    payloads, little, pos = [], False, 0
    while pos + 4 <= len(body):
        flags, size = body[pos], int.from_bytes(body[pos + 1 : pos + 4], "big")
        payload = body[pos + 4 : pos + 4 + size]
        if flags & 2:
            raise ValueError(f"DAP4 error chunk: {payload[:200]!r}")
        payloads.append(payload)
        little, pos = bool(flags & 4), pos + 4 + size
        if flags & 1:
            break
    joined = b"".join(payloads)
    end = DMR_END.search(joined)
    if end is None:
        raise ValueError(f"no DMR ending in CRLF in {len(joined)} bytes: {joined[:200]!r}")
    data = joined[end.end() :]
    if len(data) < 4 * count:
        raise ValueError(f"{len(data)} bytes of data after the DMR, {4 * count} expected")
    return np.frombuffer(data, "<f4" if little else ">f4", count).astype(np.float32)


def read_dap2_first_array(blocks: Iterable[bytes]) -> np.ndarray[Any, np.dtype[np.float32]]:
    """The first Float32 array of a `.dods` body arriving in `blocks`, copied once into a
    preallocated array; the rest of the body (a Grid's maps) is read and dropped."""
    head, out, filled, count = b"", None, 0, 0
    it = iter(blocks)
    for block in it:
        if out is None:
            head += block
            found = SEPARATOR.search(head)
            if not found or len(head) < found.end() + 8:
                continue
            count, again = (int(x) for x in np.frombuffer(head, ">u4", 2, found.end()))
            if count != again:
                raise ValueError(f"XDR array lengths differ: {count} and {again}")
            out = np.empty(count, ">f4")
            block = head[found.end() + 8 :]
        take = min(len(block), 4 * count - filled)
        out.view(np.uint8)[filled : filled + take] = np.frombuffer(block, np.uint8, take)
        filled += take
        if filled == 4 * count:
            for _ in it:  # the maps, if any
                pass
            return out.astype(np.float32)
    if out is None:
        if SEPARATOR.search(head):
            raise ValueError(f"body ends right after 'Data:' ({len(head)} bytes in all)")
        raise ValueError(f"no 'Data:' separator in {len(head)} bytes: {head[:200]!r}")
    raise ValueError(f"body ends after {filled} of {4 * count} bytes of values")
