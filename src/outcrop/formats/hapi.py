"""HAPI 3.3 (Heliophysics API): request parsing, time strings, JSON documents, encoders.

Requests are checked here before any data is read, each failure with the HAPI status code
the specification gives (HAPI 3.3 §4.2); `SeriesRequest` is what the pipeline then answers.
CSV, binary and JSON are written from whole `Block`s by NumPy and pyarrow, never row by row
in Python (HAPI 3.3 §3.7.4). Times are `YYYY-MM-DDThh:mm:ss.sssZ` with as many fractional
digits as the dataset's cadence needs (§3.7.6.2), the same width in every record.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import orjson

from outcrop.errors import (
    BadQuery,
    DatasetNotFound,
    Forbidden,
    OutcropError,
    TooLarge,
    UpstreamFailed,
)
from outcrop.formats import hapitime
from outcrop.formats.hapitime import TimeFormat, duration_text, time_format, time_text
from outcrop.model import STATISTICS, Parameter, SeriesInfo, SeriesRequest, Statistic

HAPI_VERSION = "3.3"
Format = Literal["csv", "binary", "json"]
FORMATS: tuple[Format, ...] = ("csv", "binary", "json")
MEDIA_TYPES: dict[str, str] = {
    "csv": "text/csv; charset=utf-8",
    "binary": "application/octet-stream",
    "json": "application/json",
}
TIME_NAME = "Time"
SECOND = 10**9
EXTENSIONS = ("x_resolution", "x_statistic")  # Outcrop's own request parameters (§3.1 `x_`)

# HAPI 3.3 §4.2 (and §8.3): status codes, their messages and the HTTP status of each.
MESSAGES: dict[int, str] = {
    1200: "OK",
    1201: "OK - no data for time range",
    1400: "Bad request - user input error",
    1401: "Bad request - unknown API parameter name",
    1402: "Bad request - syntax error in start time",
    1403: "Bad request - syntax error in stop time",
    1404: "Bad request - start equal to or after stop",
    1405: "Bad request - start < startDate and/or stop > stopDate",
    1406: "Bad request - unknown dataset id",
    1407: "Bad request - unknown dataset parameter",
    1408: "Bad request - too much time or data requested",
    1409: "Bad request - unsupported output format",
    1410: "Bad request - unsupported include value",
    1411: "Bad request - out-of-order or duplicate parameters",
    1412: "Bad request - unsupported resolve_references value",
    1413: "Bad request - unsupported depth value",
    1500: "Internal server error",
    1501: "Internal server error - upstream request error",
}
HTTP_STATUS = {1406: 404, 1407: 404, 1500: 500, 1501: 500}
# A pipeline `BadQuery` names the request parameter it is about; that picks the code.
PARAMETER_CODES = {
    "dataset": 1406,
    "parameters": 1407,
    "start": 1402,
    "stop": 1403,
    "format": 1409,
    "include": 1410,
}
SAFE_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


class HapiError(BadQuery):
    """A request HAPI rejects with a specific status code (HAPI 3.3 §4.2)."""

    def __init__(self, code: int, message: str, *, parameter: str | None = None) -> None:
        super().__init__(message, parameter=parameter)
        self.code = code


def status_of(exc: OutcropError) -> tuple[int, int]:
    """The HAPI status code and the HTTP status for an error (HAPI 3.3 §4.2)."""
    if isinstance(exc, Forbidden):
        return 1400, 403
    code = _code_of(exc)
    return code, http_status(code)


def _code_of(exc: OutcropError) -> int:
    if isinstance(exc, HapiError):
        return exc.code
    if isinstance(exc, DatasetNotFound):
        return 1407 if exc.parameter == "parameters" else 1406
    if isinstance(exc, TooLarge):
        return 1408
    if isinstance(exc, BadQuery):
        return PARAMETER_CODES.get(exc.parameter or "", 1400)
    if isinstance(exc, UpstreamFailed):
        return 1501
    return 1500


def http_status(code: int) -> int:
    return HTTP_STATUS.get(code, 200 if code < 1300 else 400)


def status(code: int, detail: str = "") -> dict[str, Any]:
    """A status object (§4.1); the message starts `HAPI error 14xx:` as the verifier wants."""
    if code < 1300:
        return {"code": code, "message": MESSAGES[code]}
    text = f"HAPI error {code}: {MESSAGES[code]}"
    return {"code": code, "message": f"{text}; {detail}" if detail else text}


def error_document(code: int, detail: str = "") -> bytes:
    """The JSON body of an error response (§4.2): the version and a status only."""
    return orjson.dumps({"HAPI": HAPI_VERSION, "status": status(code, detail)})


def quoted(name: str) -> str:
    """A request value for an error message, or a placeholder when it is not a plain token
    (§5.2: unknown values are not echoed)."""
    return repr(name) if SAFE_NAME.fullmatch(name) else "(the given value)"


def parse_time(text: str, parameter: str = "start") -> int:
    """A HAPI time (§3.7.6.1, see `hapitime.parse`) as UTC nanoseconds since 1970.
    Raises 1402 (start) or 1403 (stop)."""
    ns = hapitime.parse(text)
    if ns is None:
        code = 1403 if parameter == "stop" else 1402
        raise HapiError(
            code,
            f"{parameter} is not a HAPI time; use e.g. 2017-01-15T23:00:00Z, 2017-015Z or "
            "2017-01-15 (§3.7.6)",
            parameter=parameter,
        )
    return ns


# -- requests (§3.6.1, §3.7.1) -------------------------------------------------------------
ALIASES = {"id": "dataset", "time.min": "start", "time.max": "stop"}  # the HAPI 2 names
ALLOWED: dict[str, frozenset[str]] = {
    "about": frozenset(),
    "capabilities": frozenset(),
    "catalog": frozenset({"depth", "resolve_references"}),
    "info": frozenset({"dataset", "parameters", "resolve_references"}),
    "data": frozenset(
        {"dataset", "start", "stop", "parameters", "include", "format", "resolve_references"}
    ),
}


@dataclass(frozen=True)
class Query:
    """A HAPI request's parameters, checked for names, repeats and fixed-choice values.

    `extensions` are the `x_` parameters, checked once the dataset is known (its reader may
    declare some); `header` is `include=header`."""

    values: Mapping[str, str]
    extensions: tuple[tuple[str, str], ...] = ()

    def get(self, name: str) -> str | None:
        return self.values.get(name)

    @property
    def dataset(self) -> str:
        return self.values["dataset"]

    @property
    def format(self) -> Format:
        fmt = self.values.get("format") or "csv"
        return fmt  # type: ignore[return-value]  # checked by parse_query

    @property
    def header(self) -> bool:
        return self.values.get("include") == "header"


def parse_query(endpoint: str, items: Sequence[tuple[str, str]]) -> Query:
    """Check a request's parameter names and fixed-choice values (HAPI 3.3 §3.1: unknown
    names are errors, 1401); `x_` names are kept for `series_request`."""
    values: dict[str, str] = {}
    extensions: list[tuple[str, str]] = []
    for given, value in items:
        name = ALIASES.get(given, given) if endpoint in ("info", "data") else given
        if name in ALLOWED[endpoint]:
            if name in values:
                raise HapiError(1400, f"{name} is given twice; give it once", parameter=name)
            values[name] = value
        elif name.startswith("x_") and endpoint in ("info", "data"):
            if any(name == n for n, _ in extensions):
                raise HapiError(1400, f"{quoted(name)} is given twice", parameter=name)
            extensions.append((name, value))
        else:
            raise HapiError(1401, _unknown(given, endpoint), parameter=given)
    query = Query(values, tuple(extensions))
    _check_choices(endpoint, query)
    return query


def _unknown(name: str, endpoint: str) -> str:
    allowed = sorted(
        ALLOWED[endpoint]
        | ({"x_resolution", "x_statistic"} if endpoint in ("info", "data") else set())
    )
    takes = f"takes {', '.join(allowed)}" if allowed else "takes no parameters"
    return f"unknown request parameter {quoted(name)}; /{endpoint} {takes}"


def _check_choices(endpoint: str, query: Query) -> None:
    if endpoint in ("info", "data") and not query.get("dataset"):
        raise HapiError(1400, "dataset is required: give dataset=ID", parameter="dataset")
    fmt = query.get("format")
    if fmt is not None and fmt not in FORMATS:
        raise HapiError(1409, "format must be csv, binary or json", parameter="format")
    include = query.get("include")
    if include is not None and include != "header":
        raise HapiError(1410, "include takes only the value header", parameter="include")
    refs = query.get("resolve_references")
    if refs is not None and refs not in ("true", "false"):
        raise HapiError(
            1412, "resolve_references must be true or false", parameter="resolve_references"
        )
    depth = query.get("depth")
    if depth is not None and depth not in ("dataset", "all"):
        raise HapiError(1413, "depth must be dataset or all", parameter="depth")
    for name in ("start", "stop"):
        if endpoint == "data" and query.get(name) is None:
            raise HapiError(
                1402 if name == "start" else 1403, f"{name} is required", parameter=name
            )


def select_parameters(info: SeriesInfo, text: str | None) -> tuple[Parameter, ...]:
    """The parameters a `parameters=` list names (§3.6.1): empty means all; the time
    parameter may be named; names must exist (1407), once each and in the dataset's order
    (1411)."""
    if not text:
        return info.parameters
    names = text.split(",")
    order = {p.name: i for i, p in enumerate(info.parameters)}
    wanted = [n for n in names if n != TIME_NAME]
    for name in wanted:
        if name not in order:
            raise HapiError(
                1407,
                f"no parameter {quoted(name)} in this dataset; /info lists them",
                parameter="parameters",
            )
    ranks = [order[n] for n in wanted]
    if names.count(TIME_NAME) > 1 or len(set(ranks)) != len(ranks) or ranks != sorted(ranks):
        raise HapiError(
            1411,
            "parameters must be listed once each, in the order /info gives them",
            parameter="parameters",
        )
    if TIME_NAME in names and names[0] != TIME_NAME:
        raise HapiError(1411, f"{TIME_NAME} comes first in parameters", parameter="parameters")
    return tuple(info.parameters[r] for r in ranks)


WidthParser = Callable[[str, str], int]  # `outcrop.reduce.parse_width`, given by the caller


@dataclass(frozen=True)
class Selection:
    """What an info or data request asks of a dataset: the parameters (empty: the time
    column only), bins of at most `width` ns with their statistics (`x_resolution`,
    `x_statistic`), and the reader's own `x_NAME` parameters as `(NAME, value)`."""

    parameters: tuple[Parameter, ...]
    width: int | None = None
    statistics: tuple[Statistic, ...] = ("mean",)
    extras: tuple[tuple[str, str], ...] = ()


def select(query: Query, info: SeriesInfo, parse_width: WidthParser) -> Selection:
    """Check `parameters` and the `x_` parameters against the dataset; any `x_` name that
    neither Outcrop nor the dataset's reader declares is unknown (1401). Reduced, "all
    parameters" means all numeric ones; a string parameter named explicitly is 1400."""
    given = dict(query.extensions)
    declared = {f"x_{e.name}": e.name for e in info.extras}
    for name in given:
        if name not in EXTENSIONS and name not in declared:
            known = ", ".join(sorted([*EXTENSIONS, *declared]))
            raise HapiError(
                1401,
                f"unknown request parameter {quoted(name)}; besides the HAPI ones this "
                f"dataset takes {known}",
                parameter=name,
            )
    text, stats = given.get("x_resolution"), given.get("x_statistic")
    if stats is not None and text is None:
        raise HapiError(1400, "x_statistic needs x_resolution", parameter="x_statistic")
    parameters = select_parameters(info, query.get("parameters"))
    if text is not None and not query.get("parameters"):
        parameters = tuple(p for p in parameters if p.type in ("double", "integer"))
    if text is not None:
        _check_reducible(parameters or info.parameters)
    return Selection(
        parameters,
        None if text is None else _width(text, parse_width),
        _statistics(stats) if stats else ("mean",),
        tuple((declared[n], v) for n, v in given.items() if n in declared),
    )


def _check_reducible(parameters: Sequence[Parameter]) -> None:
    for p in parameters:
        if p.type not in ("double", "integer"):
            raise HapiError(
                1400,
                f"parameter {p.name} is of type {p.type} and has no x_resolution; leave it "
                "out of parameters, or ask at full resolution",
                parameter="x_resolution",
            )


def _width(text: str, parse_width: WidthParser) -> int:
    try:
        return parse_width(text, "x_resolution")
    except BadQuery as exc:
        raise HapiError(1400, exc.message, parameter="x_resolution") from None


def _statistics(text: str) -> tuple[Statistic, ...]:
    names = text.split(",")
    if len(set(names)) != len(names) or not set(names) <= set(STATISTICS):
        raise HapiError(
            1400,
            f"x_statistic lists each of {', '.join(STATISTICS)} at most once, comma-separated",
            parameter="x_statistic",
        )
    return tuple(s for s in STATISTICS if s in names)


@dataclass(frozen=True)
class DataPlan:
    """A checked data request: what the pipeline is asked (one parameter when only the
    time column is sent), and the range asked, which every record sent lies in."""

    request: SeriesRequest
    start: int
    stop: int
    time_only: bool = False


def data_plan(
    query: Query, info: SeriesInfo, selection: Selection, max_bytes: int | None = None
) -> DataPlan:
    """A data request, every HAPI rule checked (§3.7.1, §4.2): start and stop (1402,
    1403, 1404), the dataset's range (1405) and the size (1408, when `max_bytes`).

    A range partly outside the dataset's is answered for the overlap (hapiclient widens
    its chunks to whole days); one wholly outside is 1405, naming the dataset's range."""
    start = parse_time(query.get("start") or "", "start")
    stop = parse_time(query.get("stop") or "", "stop")
    if start >= stop:
        raise HapiError(1404, "start must be before stop", parameter="start")
    if stop <= info.start or start >= info.stop:
        fmt = time_format(info.cadence)
        first, last = time_text(info.start, fmt), time_text(info.stop, fmt, ceil=True)
        raise HapiError(1405, f"this dataset has data from {first} to {last}", parameter="start")
    request = SeriesRequest(
        start=max(start, info.start),
        stop=min(stop, info.stop),
        parameters=tuple(p.name for p in selection.parameters or info.parameters[:1]),
        width=selection.width,
        statistics=selection.statistics,
        extras=selection.extras,
    )
    if max_bytes is not None:
        check_size(info, selection, request, max_bytes)
    return DataPlan(request, start, stop, time_only=not selection.parameters)


def row_bytes(parameters: Sequence[Parameter], fmt: TimeFormat, copies: int = 1) -> int:
    """Bytes of one binary record (§3.7.4.2): the time, then each parameter's values
    (`copies` times: once per statistic)."""
    widths = {"double": 8, "integer": 4}
    return fmt.length + copies * sum(
        int(np.prod(p.size, dtype=np.int64)) * (widths.get(p.type) or p.length or 1)
        for p in parameters
    )


def check_size(
    info: SeriesInfo, selection: Selection, request: SeriesRequest, max_bytes: int
) -> None:
    """1408 when the records of the range, at the nominal cadence (or bin width), would
    pass `max_bytes` in binary; nothing is checked when neither is known."""
    step = request.width or info.cadence
    if not step:
        return
    copies = len(request.statistics) if request.width else 1
    record = row_bytes(selection.parameters, time_format(info.cadence, request.width), copies)
    size = (request.stop - request.start) // step * record
    if size > max_bytes:
        raise HapiError(
            1408,
            f"this request holds about {size // 2**20} MB, more than the {max_bytes // 2**20} "
            "MB a response may have; ask for a shorter range, fewer parameters or an "
            "x_resolution",
            parameter="stop",
        )


# -- JSON documents (§3.3 to §3.6) ----------------------------------------------------------
def about_document(server_id: str, title: str, contact: str, description: str) -> dict[str, Any]:
    return {
        "HAPI": HAPI_VERSION,
        "status": status(1200),
        "id": server_id,
        "title": title,
        "contact": contact,
        "description": description,
    }


def capabilities_document() -> dict[str, Any]:
    return {
        "HAPI": HAPI_VERSION,
        "status": status(1200),
        "outputFormats": list(FORMATS),
        "catalogDepthOptions": ["dataset", "all"],
    }


def catalog_document(entries: Sequence[tuple[str, str, dict[str, Any] | None]]) -> dict[str, Any]:
    """`(id, title, info or None)` rows; `info` (for `depth=all`) without HAPI and status."""
    rows = []
    for ds_id, title, info in entries:
        row: dict[str, Any] = {"id": ds_id}
        if title:
            row["title"] = title
        if info is not None:
            row["info"] = {k: v for k, v in info.items() if k not in ("HAPI", "status")}
        rows.append(row)
    return {"HAPI": HAPI_VERSION, "status": status(1200), "catalog": rows}


@dataclass(frozen=True)
class Layout:
    """The records of a response: the time format, and the columns after time."""

    time: TimeFormat
    parameters: tuple[Parameter, ...]


def info_document(
    info: SeriesInfo,
    layout: Layout,
    selection: Selection | None = None,
    *,
    fmt: Format | None = None,
    code: int = 1200,
    max_bytes: int | None = None,
    levels: Sequence[int] = (),
    answered: int | None = None,
) -> dict[str, Any]:
    """The `info` response (§3.6.2) for a layout; `fmt` when it heads a data stream.
    Reduced requests add `timeStampLocation: center` and Outcrop's `x_resolution` and
    `x_statistic`, and their `cadence` is `answered`, the bin width the data will have
    (the requested one or finer); `levels`, the widths the cache holds, are
    `x_resolutions`."""
    width = selection.width if selection is not None else None
    tf = layout.time
    doc: dict[str, Any] = {"HAPI": HAPI_VERSION, "status": status(code)}
    if fmt is not None:
        doc["format"] = fmt
    doc["startDate"] = time_text(info.start, tf)
    doc["stopDate"] = time_text(info.stop, tf, ceil=True)
    if info.sample_start is not None and info.sample_stop is not None:
        sample = max(info.sample_start, info.start), min(info.sample_stop, info.stop)
        if sample[0] < sample[1]:  # a sample range within the data's (the verifier asks it)
            doc["sampleStartDate"] = time_text(sample[0], tf)
            doc["sampleStopDate"] = time_text(sample[1], tf, ceil=True)
    step = (answered or width) if width else info.cadence
    if step:
        doc["cadence"] = duration_text(step)
    if step and max_bytes is not None:  # for all parameters, whatever the subset (§3.6.2)
        copies = len(selection.statistics) if selection is not None and width else 1
        records = max(1, max_bytes // row_bytes(info.parameters, tf, copies))
        doc["maxRequestDuration"] = duration_text(records * step // SECOND * SECOND)
    if selection is not None and width is not None:
        doc["timeStampLocation"] = "center"
        doc["x_resolution"] = duration_text(width)
        doc["x_statistic"] = ",".join(selection.statistics)
    if levels:
        doc["x_resolutions"] = [duration_text(w) for w in levels]
    if info.description:
        doc["description"] = info.description
    if info.title:
        doc["x_title"] = info.title
    time = {"name": TIME_NAME, "type": "isotime", "units": "UTC", "fill": None, "length": tf.length}
    doc["parameters"] = [time, *(parameter_object(p) for p in layout.parameters)]
    return doc


def parameter_object(p: Parameter) -> dict[str, Any]:
    """A parameter object (§3.6.7): `length` only for strings, `size` only for arrays,
    units `null` when the source has none (an empty string is not allowed)."""
    obj: dict[str, Any] = {"name": p.name, "type": p.type, "units": p.units or None}
    obj["fill"] = p.fill
    if p.type in ("string", "isotime"):
        obj["length"] = p.length or 1
    if p.size:
        obj["size"] = list(p.size)
    if p.description:
        obj["description"] = p.description
    return obj


def header_lines(doc: Mapping[str, Any]) -> bytes:
    """An info document to head a CSV or binary stream: every line starts `#` and the
    last ends with a newline (§3.6, §3.7.2)."""
    text = orjson.dumps(doc, option=orjson.OPT_INDENT_2)
    return b"".join(b"#" + line + b"\n" for line in text.split(b"\n"))
