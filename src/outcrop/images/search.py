"""The image search request (`GET /api/images`) parsed into an `ImageQuery`.

Parameters: `collection`, `ra`, `dec` (degrees) and `radius` (degrees, or with a unit:
`5arcmin`), `instrument` and `filter` (exact names, comma-separated for any of several),
`start` and `stop` (ISO 8601, UTC unless an offset is given: images whose exposure
overlaps that range), `limit`, `offset`, and filters on any stored header keyword — a
parameter whose name is a FITS keyword in upper case:

- `EXPTIME=60` equals (as a number when the value is one, else as text);
- `EXPTIME=30/120`, `EXPTIME=30/`, `EXPTIME=/120` an inclusive range (numbers, or text
  in code-point order — ISO dates compare correctly);
- `OBJECT="NGC 1/2"` text in double quotes is compared as it is, slash included.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from outcrop.errors import BadQuery

PARAMETERS = {
    "collection",
    "ra",
    "dec",
    "radius",
    "instrument",
    "filter",
    "start",
    "stop",
    "limit",
    "offset",
}
KEYWORD = re.compile(r"^[A-Z0-9_\-][A-Z0-9_\- .]{0,70}$")
MAX_RADIUS = 90.0  # degrees: larger cones are not what a position search is for
MAX_KEYWORD_FILTERS = 16


@dataclass(frozen=True)
class KeywordFilter:
    """`name` equal to `equals`, or within [low, high] (either may be None)."""

    name: str
    equals: str | float | None = None
    low: str | float | None = None
    high: str | float | None = None


@dataclass(frozen=True)
class ImageQuery:
    collection: str | None = None
    ra: float | None = None
    dec: float | None = None
    radius: float = 0.0
    instruments: tuple[str, ...] = ()
    filters: tuple[str, ...] = ()
    start: datetime | None = None
    stop: datetime | None = None
    keywords: tuple[KeywordFilter, ...] = field(default_factory=tuple)
    limit: int = 100
    offset: int = 0


def parse_query(items: Iterable[tuple[str, str]]) -> ImageQuery:
    """An ImageQuery from query parameters; BadQuery naming the parameter at fault."""
    from outcrop.catalog import parse_page

    params: dict[str, str] = {}
    keywords: list[KeywordFilter] = []
    for name, value in items:
        if name in PARAMETERS:
            if name in params:
                raise BadQuery(f"{name} is given twice; give it once", parameter=name)
            params[name] = value
        elif KEYWORD.match(name):
            keywords.append(parse_keyword(name, value))
        else:
            allowed = ", ".join(sorted(PARAMETERS))
            raise BadQuery(
                f"unknown parameter {name!r}; allowed: {allowed}, or a FITS keyword in "
                "upper case (e.g. EXPTIME=30/120)",
                parameter=name,
            )
    if len(keywords) > MAX_KEYWORD_FILTERS:
        raise BadQuery(f"at most {MAX_KEYWORD_FILTERS} keyword filters", parameter=keywords[0].name)
    limit, offset = parse_page(params.get("limit"), params.get("offset"))
    ra, dec, radius = parse_position(params.get("ra"), params.get("dec"), params.get("radius"))
    start, stop = parse_time(params.get("start"), "start"), parse_time(params.get("stop"), "stop")
    if start is not None and stop is not None and stop < start:
        raise BadQuery("stop is before start", parameter="stop")
    return ImageQuery(
        collection=params.get("collection") or None,
        ra=ra,
        dec=dec,
        radius=radius,
        instruments=_names(params.get("instrument")),
        filters=_names(params.get("filter")),
        start=start,
        stop=stop,
        keywords=tuple(keywords),
        limit=limit,
        offset=offset,
    )


def parse_position(
    ra: str | None, dec: str | None, radius: str | None
) -> tuple[float | None, float | None, float]:
    if ra is None and dec is None:
        if radius is not None:
            raise BadQuery("radius needs ra and dec", parameter="radius")
        return None, None, 0.0
    if ra is None or dec is None:
        missing = "ra" if ra is None else "dec"
        raise BadQuery(f"ra and dec go together; {missing} is missing", parameter=missing)
    ra_deg, dec_deg = _degrees(ra, "ra"), _degrees(dec, "dec")
    if not -90.0 <= dec_deg <= 90.0:
        raise BadQuery(f"dec must be between -90 and 90 degrees, not {dec}", parameter="dec")
    reach = 0.0 if radius is None else parse_radius(radius)
    return ra_deg % 360.0, dec_deg, reach


def parse_radius(text: str) -> float:
    """Degrees from a number (degrees) or a size with its unit (`5arcmin`, `30arcsec`)."""
    try:
        value = float(text)
    except ValueError:
        from outcrop.formats.fits import parse_size

        try:
            value = parse_size(text)
        except BadQuery as exc:
            raise BadQuery(exc.message.replace("size", "radius"), parameter="radius") from exc
    if not math.isfinite(value) or not 0.0 <= value <= MAX_RADIUS:
        raise BadQuery(
            f"radius must be between 0 and {MAX_RADIUS:g} degrees, not {text}", parameter="radius"
        )
    return value


def _degrees(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise BadQuery(f"{name} must be a number of degrees, not {text!r}", parameter=name)
    return value


def parse_time(text: str | None, name: str) -> datetime | None:
    """An ISO 8601 time, UTC unless it carries an offset."""
    if text is None or not text.strip():
        return None
    try:
        when = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError as exc:
        raise BadQuery(
            f"{name} must be an ISO 8601 time (e.g. 2002-04-13T10:00:00), not {text!r}",
            parameter=name,
        ) from exc
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def parse_keyword(name: str, value: str) -> KeywordFilter:
    if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        return KeywordFilter(name, equals=value[1:-1])
    if value.count("/") == 1:
        low, high = (part.strip() for part in value.split("/"))
        if not low and not high:
            raise BadQuery(f"{name}={value!r} bounds nothing; give low/high", parameter=name)
        lo, hi = _value(low), _value(high)
        if isinstance(lo, float) != isinstance(hi, float) and low and high:
            raise BadQuery(
                f"{name}={value!r}: both ends must be numbers, or both text", parameter=name
            )
        return KeywordFilter(name, low=lo if low else None, high=hi if high else None)
    return KeywordFilter(name, equals=_value(value.strip()))


def _value(text: str) -> str | float:
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


def _names(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    return tuple(part.strip() for part in text.split(",") if part.strip())
