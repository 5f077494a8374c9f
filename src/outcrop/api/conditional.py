"""Conditional and partial requests (RFC 9110 §13-14), for the routes that answer from
bytes in memory. Imports nothing from the framework: the Zarr route uses it on its fast
path, and the FastAPI routes share it.
"""

from __future__ import annotations

import re

UNSATISFIABLE = (-1, -1)
# one range; several (a comma) are answered whole
_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)-(\d*)\s*", re.ASCII | re.IGNORECASE)


def none_match(header: str | None, etag: str) -> bool:
    """`If-None-Match` names this ETag (§13.1.2: weak comparison, a list, or `*`)."""
    if header is None:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return "*" in tags or etag.removeprefix("W/") in tags


def byte_range(
    header: str | None, size: int, if_range: str | None, etag: str
) -> tuple[int, int] | None:
    """The one range `Range: bytes=…` asks of a `size`-byte body, as (start, stop).

    None answers the whole body: no header, a malformed one (§14.2: ignored), several
    ranges (allowed to be answered whole), or an `If-Range` that is not this ETag (§13.1.5:
    a date or another tag). `UNSATISFIABLE` when the range starts past the end (416).
    """
    if header is None or (if_range is not None and if_range.strip() != etag):
        return None
    match = _RANGE.fullmatch(header)
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # a suffix: the last N bytes
        length = int(last)
        return (max(size - length, 0), size) if length and size else UNSATISFIABLE
    start = int(first)
    if last and int(last) < start:
        return None  # the last byte before the first: invalid, so ignored
    if start >= size:
        return UNSATISFIABLE
    return start, min(int(last) + 1 if last else size, size)
