"""das2 requests and das2/2.2 streams (das2 ICD 2.2, "das2 Stream Format").

A request (`start_time`, `end_time`, `resolution`, `params`, `ascii`) becomes a
`SeriesRequest`; an answer's `Block`s become a stream:

- `[00]LLLLLL<stream version="2.2">…</stream>`: the stream header; `LLLLLL` is the
  length in bytes of the XML that follows, six ASCII digits (ICD §2, packet framing).
- `[01]LLLLLL<packet>…</packet>`: the packet header, one `<x>` time plane and a `<y>` per
  scalar parameter or a `<yscan nitems=…>` per vector parameter (ICD §3). It is sent
  again, redefining packet 01, when ASCII times need more digits than it declared.
- `:01:` then the values of one row, fixed width: no length field (ICD §4). ASCII
  streams use `timeN` times (milliseconds, microseconds or nanoseconds, whatever the
  times need) and `ascii26` numbers (shortest text that reads back to the same double,
  then a space, the row ending in a newline); binary streams `little_endian_real8`,
  times as microseconds since 2000-01-01 (`us2000`).
- `[xx]LLLLLL<exception type=… message=…/>`: an out-of-band exception (ICD §5):
  `NoDataInInterval` when nothing was found, `ServerError` when the source failed after
  the stream started. Before a stream starts, errors are the same exception as the
  `[00]` packet of an otherwise empty stream (`exception_document`).

Missing values (NaN, and empty bins) are sent as each plane's fill value, declared as
`yFill` (`<y>`) or `zFill` (`<yscan>`): the parameter's fill, else das2's -1e31.
Reduced answers follow das2's reducers (das2_bin_peakavgsec): the mean keeps the
parameter's name, `NAME.min` and `NAME.max` planes carry the extremes (`source`,
`operation` BIN_AVG / BIN_MIN / BIN_MAX), x is the bin centre, and `xTagWidth` and
`xCacheResolution` give the bin width.
"""

from __future__ import annotations

import calendar
import re
import shlex
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from xml.sax.saxutils import quoteattr

import numpy as np

from outcrop.errors import BadQuery, DatasetNotFound, OutcropError, SourceError, TooLarge
from outcrop.model import Block, Extra, Parameter, SeriesInfo, SeriesRequest, Statistic

DAS2_FILL = -1e31  # das2's default fill value (das2C DAS_FILL_VALUE)
US2000_NS = 946_684_800 * 10**9  # 2000-01-01T00:00Z in ns since 1970
NS_MIN, NS_MAX = -(2**63) + 1, 2**63 - 1  # the times datetime64[ns] holds (NaT excluded)
NUMBER_WIDTH = 26  # 25 characters hold the shortest text of any double, then a separator
BINARY_TYPE = "little_endian_real8"
MEDIA_BINARY = "application/vnd.das2.das2stream"
MEDIA_TEXT = "text/vnd.das2.das2stream; charset=utf-8"
REDUCED_STATISTICS: tuple[Statistic, ...] = ("mean", "min", "max")
OPERATIONS = {"mean": "BIN_AVG", "min": "BIN_MIN", "max": "BIN_MAX"}
TimeUnit = Literal["ms", "us", "ns"]
TIME_TEXT = {"ms": 23, "us": 26, "ns": 29}  # length of numpy's ISO text at that unit
TIME_STEP = {"ms": 1_000_000, "us": 1_000, "ns": 1}
TIME_NAMES = {"start": ("start_time", "time.min"), "stop": ("end_time", "time.max")}
# Parameters das2 clients add that change nothing here (keys, redirects, reader variants).
IGNORED = {"key", "redirect", "devel", "server", "dataset"}
KNOWN = {"start_time", "time.min", "end_time", "time.max", "resolution", "params", "ascii"}
KNOWN |= {"interval", "compress"} | IGNORED
TRUE = {"1", "true", "yes"}
FALSE = {"0", "false", "no", ""}
TIME_FORMS = "ISO 8601 such as 2013-10-28T00:00:00Z, 2013-10-28 00:00 or 2013-301 (day of year)"
TIME_PATTERN = re.compile(
    r"(?P<year>\d{4})"
    r"(?:-(?P<doy>\d{3})(?!\d)|[-/](?P<month>\d{1,2})(?:[-/](?P<day>\d{1,2}))?)?"
    r"(?:(?:T|\s+)(?P<hour>\d{1,2})(?::(?P<minute>\d{2})"
    r"(?::(?P<second>\d{2})(?:\.(?P<fraction>\d{1,9}))?)?)?)?"
    r"\s*Z?"
)


# -- requests ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Das2Query:
    """A parsed das2 data request: what to ask the pipeline and how to answer."""

    request: SeriesRequest
    ascii: bool


def parse_query(pairs: Sequence[tuple[str, str]], info: SeriesInfo) -> Das2Query:
    """The request a das2 client sent (das2 server query interface, `server=dataset`).

    Times are required; `resolution` is in seconds (absent, 0, or no more than the
    dataset's cadence: full resolution); `params` is the reader's parameter string
    (`parse_params`); `ascii=1` asks for text.
    """
    query = _single(pairs)
    start, stop = _range(query)
    _refuse_unsupported(query)
    width = parse_resolution(query.get("resolution", ""))
    if width is not None and info.cadence and width <= info.cadence:
        width = None  # bins no wider than the samples' spacing: the samples themselves
    names, extras = parse_params(query.get("params", ""), info)
    request = SeriesRequest(
        start=start,
        stop=stop,
        parameters=names or numeric_names(info.parameters),
        width=width,
        statistics=REDUCED_STATISTICS if width is not None else ("mean",),
        extras=extras,
    )
    return Das2Query(request, parse_flag(query.get("ascii", ""), "ascii"))


def _range(query: dict[str, str]) -> tuple[int, int]:
    start_text, stop_text = _time_text(query, "start"), _time_text(query, "stop")
    # no data lies beyond the times datetime64[ns] holds: clamp to that range
    start = min(max(parse_time(start_text, "start_time"), NS_MIN), NS_MAX)
    stop = min(max(parse_time(stop_text, "end_time"), NS_MIN), NS_MAX)
    if stop <= start:
        raise BadQuery(
            f"end_time ({stop_text}) must be after start_time ({start_text})",
            parameter="end_time",
        )
    return start, stop


def trim(request: SeriesRequest, info: SeriesInfo) -> SeriesRequest | None:
    """The request cut to the dataset's valid range, as das2 servers trim to a source's
    `validRange`; None when nothing is left (answered with NoDataInInterval)."""
    start, stop = max(request.start, info.start), min(request.stop, info.stop)
    if stop <= start:
        return None
    return replace(request, start=start, stop=stop)


def _single(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    query: dict[str, str] = {}
    for name, value in pairs:
        if name not in KNOWN:
            allowed = ", ".join(sorted(KNOWN - IGNORED))
            raise BadQuery(f"unknown parameter {name!r}; allowed: {allowed}", parameter=name)
        if name in query:
            raise BadQuery(f"parameter {name!r} is given twice; give it once", parameter=name)
        query[name] = value
    return query


def _time_text(query: dict[str, str], end: str) -> str:
    for name in TIME_NAMES[end]:
        if query.get(name, "").strip():
            return query[name]
    first = TIME_NAMES[end][0]
    raise BadQuery(f"{first} is required: a time in {TIME_FORMS}", parameter=first)


def _refuse_unsupported(query: dict[str, str]) -> None:
    if query.get("interval", "").strip():
        raise BadQuery(
            "interval is not supported: these series are not interval readers; "
            "use resolution (seconds) instead",
            parameter="interval",
        )
    if parse_flag(query.get("compress", ""), "compress"):
        raise BadQuery(
            "compress=true is not supported; leave it out (ask for gzip with "
            "Accept-Encoding instead)",
            parameter="compress",
        )


def parse_flag(text: str, parameter: str) -> bool:
    """das2 truth values: 1/true/yes, 0/false/no (or empty)."""
    value = text.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise BadQuery(f"{parameter} must be 1 or 0 (true or false), not {text!r}", parameter=parameter)


def parse_time(text: str, parameter: str) -> int:
    """UTC nanoseconds since 1970 from das2's relaxed ISO 8601 (`2013-10-28T00:00:00.000Z`,
    `2013-10-28 00:00`, `2013/10/28`, `2013-301` for a day of year, or a bare year)."""
    match = TIME_PATTERN.fullmatch(text.strip())
    try:
        if match is None:
            raise ValueError(text)
        return _nanoseconds(match.groupdict())
    except (ValueError, OverflowError):
        raise BadQuery(
            f"{parameter} {text!r} is not a time; use {TIME_FORMS}", parameter=parameter
        ) from None


def _nanoseconds(parts: dict[str, str | None]) -> int:
    def number(key: str, default: int) -> int:
        value = parts[key]
        return default if value is None else int(value)

    year = number("year", 0)
    if parts["doy"] is not None:
        doy = number("doy", 1)
        if not 1 <= doy <= 365 + calendar.isleap(year):
            raise ValueError(parts["doy"])
        day = datetime(year, 1, 1, tzinfo=UTC) + timedelta(days=doy - 1)
    else:
        day = datetime(year, number("month", 1), number("day", 1), tzinfo=UTC)
    moment = day.replace(hour=number("hour", 0), minute=number("minute", 0))
    moment = moment.replace(second=number("second", 0))
    fraction = int(((parts["fraction"] or "") + "000000000")[:9])
    seconds = int((moment - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds())
    return seconds * 10**9 + fraction


def parse_resolution(text: str) -> int | None:
    """Bin width in ns from das2's `resolution` in seconds; None (full resolution) when
    absent, 0, or finer than a nanosecond."""
    if not text.strip():
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not np.isfinite(seconds) or seconds < 0:
        raise BadQuery(
            f"resolution must be a number of seconds >= 0 (0 for full resolution), not {text!r}",
            parameter="resolution",
        )
    width = round(seconds * 1e9)
    return width if width >= 1 else None


def parse_params(
    text: str, info: SeriesInfo
) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """The das2 reader parameter string, as words separated by spaces (quotes group).

    `NAME=VALUE` sets the source's declared extra NAME; a bare word names a parameter
    (plane) to send, all numeric ones when none is named; a bare word that names no
    parameter but a boolean extra sets that extra to true.
    """
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise BadQuery(
            f"params {text!r} is not a list of words: {exc}", parameter="params"
        ) from None
    names: list[str] = []
    extras: dict[str, str] = {}
    declared = {extra.name: extra for extra in info.extras}
    for word in words:
        name, sep, value = word.partition("=")
        if sep:
            extras[_extra_name(name, declared)] = value
        elif info.parameter(word) is not None:
            names.append(_numeric(info.parameter(word)))
        elif word in declared and declared[word].type == "boolean":
            extras[word] = "true"
        else:
            raise BadQuery(_unknown_word(word, info), parameter="params")
    return tuple(dict.fromkeys(names)), tuple(extras.items())


def _extra_name(name: str, declared: dict[str, Extra]) -> str:
    if name not in declared:
        allowed = ", ".join(declared) or "none (this source declares no reader parameters)"
        raise BadQuery(
            f"params sets {name!r}, not a reader parameter of this source; allowed: {allowed}",
            parameter="params",
        )
    return name


def _numeric(parameter: Parameter | None) -> str:
    assert parameter is not None
    if parameter.type not in ("double", "integer"):
        raise BadQuery(
            f"params names {parameter.name!r}, a {parameter.type} parameter; das2 streams "
            "carry numbers only",
            parameter="params",
        )
    return parameter.name


def _unknown_word(word: str, info: SeriesInfo) -> str:
    names = ", ".join(numeric_names(info.parameters)) or "none"
    extras = ", ".join(f"{e.name}=…" for e in info.extras) or "none"
    return (
        f"params word {word!r} is neither a parameter ({names}) nor NAME=VALUE of a "
        f"reader parameter ({extras})"
    )


def numeric_names(parameters: Iterable[Parameter]) -> tuple[str, ...]:
    """The parameters das2 can carry: doubles and integers (strings and isotimes cannot)."""
    return tuple(p.name for p in parameters if p.type in ("double", "integer"))


def exception_type(exc: OutcropError) -> str:
    """das2 exception type for an error: IllegalArgument for bad requests,
    NoSuchDataSource for unknown datasets, ServerError otherwise (ICD §5)."""
    if isinstance(exc, DatasetNotFound):
        return "NoSuchDataSource"
    if isinstance(exc, BadQuery | TooLarge):
        return "IllegalArgument"
    return "ServerError"


# -- streams ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Plane:
    """One das2 plane: a column of the answer under its das2 name.

    `items` is 0 for a `<y>` plane (a scalar) and the number of values of a `<yscan>`
    (a vector, flattened in C order); `operation` is set on reduced planes.
    """

    name: str
    column: str
    items: int
    units: str
    fill: float
    source: str | None = None
    operation: str | None = None


def planes_for(
    columns: Sequence[Parameter], info: SeriesInfo, request: SeriesRequest
) -> tuple[Plane, ...]:
    """The planes for an answer's columns; reduced columns (`NAME_mean`, `NAME_min`,
    `NAME_max`) become `NAME`, `NAME.min` and `NAME.max` as das2 reducers name them."""
    reduced = {
        f"{name}_{stat}": (name, stat) for name in request.parameters for stat in request.statistics
    }
    planes = []
    for column in columns:
        base, stat = reduced.get(column.name, (column.name, None))
        origin = info.parameter(base) or column
        items = int(np.prod(column.size or origin.size)) if (column.size or origin.size) else 0
        planes.append(
            Plane(
                name=base if stat in (None, "mean") else f"{base}.{stat}",
                column=column.name,
                items=items,
                units=column.units or origin.units or "",
                fill=fill_value(column.fill or origin.fill),
                source=base if stat else None,
                operation=OPERATIONS.get(stat or "", stat.upper() if stat else None),
            )
        )
    if not planes:
        raise BadQuery(
            "no numeric parameter to send; das2 streams carry numbers", parameter="params"
        )
    return tuple(planes)


def fill_value(text: str | None) -> float:
    """A parameter's fill as a number; das2's -1e31 when it has none (or it is NaN)."""
    try:
        value = float(text) if text is not None else DAS2_FILL
    except ValueError:
        return DAS2_FILL
    return value if np.isfinite(value) else DAS2_FILL


def stream_header(title: str, summary: str, width: int | None, cadence: int | None) -> bytes:
    """The `[00]` stream header (ICD §2): title, summary and the x tag width; a reduced
    stream also gives `xCacheResolution`, the resolution it answers."""
    props: list[tuple[str, str]] = [("String:title", title)]
    if summary:
        props.append(("String:summary", summary))
    props.append(("String:xLabel", "UTC"))
    tag_width = width or cadence
    if tag_width:
        props.append(("Datum:xTagWidth", seconds_datum(tag_width)))
    if width:
        props.append(("Datum:xCacheResolution", seconds_datum(width)))
    xml = f'<stream version="2.2">\n  <properties{_attributes(props)}/>\n</stream>\n'
    return frame("[00]", xml)


def packet_header(planes: Sequence[Plane], ascii: bool, unit: TimeUnit) -> bytes:
    """The `[01]` packet header (ICD §3): an `<x>` time plane, then a `<y>` or `<yscan>`
    per plane with its fill, label and (reduced) source and operation."""
    kind = f"ascii{NUMBER_WIDTH}" if ascii else BINARY_TYPE
    x_kind = f"time{TIME_TEXT[unit] + 1}" if ascii else BINARY_TYPE
    lines = ["<packet>", f'  <x type="{x_kind}" units="us2000"></x>']
    lines += [_plane_xml(plane, kind) for plane in planes]
    lines.append("</packet>\n")
    return frame("[01]", "\n".join(lines))


def _plane_xml(plane: Plane, kind: str) -> str:
    axis = "z" if plane.items else "y"
    props = [(f"double:{axis}Fill", repr(plane.fill)), (f"String:{axis}Label", plane.name)]
    if plane.operation:
        props += [
            ("String:source", plane.source or plane.name),
            ("String:operation", plane.operation),
        ]
    inner = f"<properties{_attributes(props)}/>"
    if not plane.items:
        attrs = _attributes([("name", plane.name), ("type", kind), ("units", plane.units)])
        return f"  <y{attrs}>{inner}</y>"
    tags = ",".join(str(i) for i in range(plane.items))
    pairs = [("name", plane.name), ("type", kind), ("zUnits", plane.units), ("yUnits", "")]
    attrs = _attributes([*pairs, ("nitems", str(plane.items)), ("yTags", tags)])
    return f"  <yscan{attrs}>{inner}</yscan>"


def _attributes(pairs: Iterable[tuple[str, str]]) -> str:
    return "".join(
        f" {name}={quoteattr(value, {chr(10): '&#10;', chr(13): '&#13;'})}" for name, value in pairs
    )


def seconds_datum(ns: int) -> str:
    """A das2 Datum in seconds (`60.0 s`)."""
    return f"{ns / 1e9!r} s"


def frame(tag: str, xml: str) -> bytes:
    """A header or out-of-band packet: tag, six-digit byte length, XML (ICD §2)."""
    body = xml.encode()
    if len(body) > 999_999:
        raise TooLarge(
            f"a das2 header holds at most 999999 bytes; this one needs {len(body)} "
            "(ask for fewer or smaller parameters with params)",
            size=len(body),
            limit=999_999,
            parameter="params",
        )
    return tag.encode() + b"%06d" % len(body) + body


def exception_packet(kind: str, message: str) -> bytes:
    """An out-of-band exception inside a started stream (ICD §5: `[xx]`)."""
    return frame("[xx]", _exception_xml(kind, message))


def exception_document(kind: str, message: str) -> bytes:
    """An exception as a whole das2 response, before any stream started: the `[00]`
    packet holds the `<exception>` (what das2 servers send and das2 clients read)."""
    return frame("[00]", _exception_xml(kind, message))


def _exception_xml(kind: str, message: str) -> str:
    return f"<exception{_attributes([('type', kind), ('message', message)])} />\n"


def time_unit(times: np.ndarray[Any, Any]) -> TimeUnit:
    """The coarsest unit that writes these times exactly: milliseconds, microseconds or
    nanoseconds."""
    ns = times.astype("datetime64[ns]").view(np.int64)
    for unit in ("ms", "us"):
        if not np.any(ns % TIME_STEP[unit]):
            return unit
    return "ns"


def data_packets(block: Block, planes: Sequence[Plane], ascii: bool, unit: TimeUnit) -> bytes:
    """The `:01:` data packets of a block, one per row, built as whole arrays."""
    if ascii:
        return _ascii_rows(block, planes, unit)
    return _binary_rows(block, planes)


def _plane_values(block: Block, plane: Plane) -> np.ndarray[Any, Any]:
    """A plane's values as rows of `max(items, 1)`, missing values as the plane's fill."""
    try:
        values = np.asarray(block.values[plane.column])
    except KeyError:
        raise SourceError(f"the answer has no column {plane.column!r}") from None
    values = values.reshape(len(block), max(plane.items, 1))
    if values.dtype.kind == "f":
        values = np.where(np.isnan(values), plane.fill, values)
    elif values.dtype.kind not in "iub":
        raise SourceError(f"column {plane.column!r} holds {values.dtype}, not numbers")
    return values


def _binary_rows(block: Block, planes: Sequence[Plane]) -> bytes:
    fields: list[tuple[Any, ...]] = [("tag", "S4"), ("x", "<f8")]
    fields += [(f"p{i}", "<f8", (max(p.items, 1),)) for i, p in enumerate(planes)]
    rows = np.empty(len(block), dtype=np.dtype(fields))
    rows["tag"] = b":01:"
    ns = block.time.astype("datetime64[ns]").view(np.int64)
    rows["x"] = (ns - US2000_NS) / 1000.0
    for i, plane in enumerate(planes):
        rows[f"p{i}"] = _plane_values(block, plane)
    return rows.tobytes()


def _ascii_rows(block: Block, planes: Sequence[Plane], unit: TimeUnit) -> bytes:
    n = len(block)
    times = np.datetime_as_string(block.time.astype("datetime64[ns]"), unit=unit, casting="unsafe")
    cells = [times.astype(f"S{TIME_TEXT[unit]}").view(np.uint8).reshape(n, TIME_TEXT[unit])]
    cells += [_number_cells(_plane_values(block, plane)) for plane in planes]
    width = sum(c.shape[1] + 1 for c in cells)
    rows = np.full((n, 4 + width), ord(" "), dtype=np.uint8)
    rows[:, :4] = np.frombuffer(b":01:", dtype=np.uint8)
    col = 4
    for cell in cells:
        rows[:, col : col + cell.shape[1]] = cell
        col += cell.shape[1] + 1
    rows[:, -1] = ord("\n")
    return rows.tobytes()


def _number_cells(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Each value as the shortest text that reads back to it, right-aligned in
    `NUMBER_WIDTH - 1` characters followed by a space: (n, items * NUMBER_WIDTH - 1)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from outcrop.formats.hapistream import arrow_of  # not pa.array: it imports pandas

    n, items = values.shape
    flat = values.reshape(-1)
    text = pc.cast(arrow_of(flat if flat.dtype.kind == "f" else flat.astype(np.int64)), pa.string())
    if flat.dtype.kind == "f" and np.isinf(flat).any():
        text = pc.replace_substring(text, "inf", "Infinity")  # as Java's parseDouble reads it
    text = pc.utf8_lpad(text, NUMBER_WIDTH - 1)
    size = len(flat) * (NUMBER_WIDTH - 1)
    cells = np.frombuffer(text.buffers()[2], dtype=np.uint8, count=size)
    spaced = np.full((n, items, NUMBER_WIDTH), ord(" "), dtype=np.uint8)
    spaced[:, :, :-1] = cells.reshape(n, items, NUMBER_WIDTH - 1)
    return spaced.reshape(n, items * NUMBER_WIDTH)[:, :-1]


def encode_stream(
    head: bytes,
    planes: Sequence[Plane],
    blocks: Iterator[Block],
    ascii: bool,
    interval: str,
) -> Iterator[bytes]:
    """A whole stream: `head` (the stream header), then each block as data packets after
    the packet header; a `NoDataInInterval` exception when no row came, a `ServerError`
    exception (then the end) when the source fails mid-stream (ICD §5)."""
    yield head
    unit: TimeUnit | None = None
    rows = 0
    try:
        for block in blocks:
            if not len(block):
                continue
            parts = []
            need = time_unit(block.time) if ascii else "us"
            if unit is None or TIME_STEP[need] < TIME_STEP[unit]:
                unit = need
                parts.append(packet_header(planes, ascii, unit))
            parts.append(data_packets(block, planes, ascii, unit))
            rows += len(block)
            yield b"".join(parts)
    except OutcropError as exc:
        yield exception_packet(exception_type(exc), exc.message)
        return
    finally:
        close = getattr(blocks, "close", None)
        if close is not None:
            close()
    if not rows:
        yield exception_packet("NoDataInInterval", f"no data in {interval}")


# -- the source list and source definitions ---------------------------------------------


def source_list(rows: Iterable[tuple[str, str]]) -> bytes:
    """das2 `server=list`: one `ID|description` line per data source."""
    lines = []
    for ds_id, description in rows:
        text = " ".join(description.replace("|", "/").split())
        lines.append(f"{ds_id}|{text}" if text else ds_id)
    return "".join(f"{line}\n" for line in lines).encode()


def dsdf(ds_id: str, info: SeriesInfo) -> bytes:
    """das2 `server=dsdf`: the data source definition as the properties of a `[00]`
    stream header (what das2 servers send): description, valid and example ranges, and
    a `param_NN` per word `params` accepts."""
    props = [("name", ds_id), ("description", info.description or info.title or ds_id)]
    if info.title:
        props.append(("title", info.title))
    props.append(("validRange", f"{iso_time(info.start)} to {iso_time(info.stop)} UTC"))
    if info.sample_start is not None and info.sample_stop is not None:
        example = f"{iso_time(info.sample_start)} to {iso_time(info.sample_stop)} UTC"
        props.append(("exampleRange", example))
    props += [("das2Stream", "1"), ("qstream", "0"), ("requiresInterval", "0")]
    words = [_extra_word(extra) for extra in info.extras]
    words += [
        f"{p.name} | send {p.name}{f' ({p.units})' if p.units else ''}"
        for p in info.parameters
        if p.type in ("double", "integer")
    ]
    props += [(f"param_{i:02d}", word) for i, word in enumerate(words)]
    return frame("[00]", f"<stream>\n  <properties{_attributes(props)} />\n</stream>\n")


def _extra_word(extra: Extra) -> str:
    rules: list[str] = [extra.type]
    if extra.allowed:
        rules.append("one of " + ", ".join(extra.allowed))
    if extra.default is not None:
        rules.append(f"default {extra.default}")
    return f"{extra.name}=VALUE | {extra.description or extra.name} ({'; '.join(rules)})"


def iso_time(ns: int) -> str:
    """ISO 8601 UTC text of a time in ns since 1970, to the millisecond."""
    return str(np.datetime_as_string(np.datetime64(ns, "ns"), unit="ms"))
