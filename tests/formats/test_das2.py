"""das2 requests and das2/2.2 streams, read back with an independent stream reader.

`read_stream` below is written from the das2 ICD 2.2 description (packet framing, plane
types, encodings), not from the encoder: the das2 Python client (das2py) needs the das2C
C library, which is on neither PyPI nor Debian, so it cannot be installed here.
"""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from xml.parsers import expat

import numpy as np
import pytest

from outcrop.errors import BadQuery, UpstreamFailed
from outcrop.formats import das2
from outcrop.model import Block, Extra, Parameter, SeriesInfo, SeriesRequest

US2000 = np.datetime64("2000-01-01T00:00:00", "ns")
DAY = np.datetime64("2013-10-28T00:00:00", "ns")


# -- an independent das2/2.2 stream reader ---------------------------------------------


@dataclass
class PlaneDef:
    kind: str  # x, y, yscan
    name: str
    type: str
    units: str
    items: int
    props: dict[str, str]


@dataclass
class Stream:
    props: dict[str, str] = field(default_factory=dict)
    packets: list[list[PlaneDef]] = field(default_factory=list)  # every header, in order
    rows: list[tuple[list[PlaneDef], list[Any]]] = field(default_factory=list)
    exceptions: list[dict[str, str]] = field(default_factory=list)
    order: list[str] = field(default_factory=list)  # "stream", "packet", "data", "exception"

    def column(self, name: str) -> np.ndarray[Any, Any]:
        """A plane's values over all rows; `x` gives the times as datetime64[ns]."""
        out = []
        for planes, values in self.rows:
            at = 0
            for plane in planes:
                if plane.name == name or (name == "x" and plane.kind == "x"):
                    out.append(values[at : at + plane.items])
                at += plane.items
        if name == "x":
            return np.array([v[0] for v in out], dtype="datetime64[ns]")
        array = np.array(out)
        return array[:, 0] if array.shape[1:] == (1,) else array


def read_stream(data: bytes) -> Stream:
    """Parse a das2/2.2 stream: `[NN]` + 6-digit length + XML headers, `[xx]` out-of-band
    packets, `:NN:` + fixed-width values whose layout the packet header gives."""
    stream = Stream()
    defs: dict[bytes, list[PlaneDef]] = {}
    pos = 0
    while pos < len(data):
        tag = data[pos : pos + 4]
        if tag[:1] == b"[" and tag[3:] == b"]":
            length = int(data[pos + 4 : pos + 10])
            assert data[pos + 4 : pos + 10].isdigit()
            root = parse_xml(data[pos + 10 : pos + 10 + length])
            pos += 10 + length
            if root.tag == "stream":
                stream.props = _props(root)
                stream.order.append("stream")
            elif root.tag == "packet":
                defs[tag[1:3]] = [_plane(el) for el in root]
                stream.packets.append(defs[tag[1:3]])
                stream.order.append("packet")
            elif root.tag == "exception":
                stream.exceptions.append(dict(root.attrib))
                stream.order.append("exception")
            else:
                raise AssertionError(f"unexpected header {root.tag}")
        elif tag[:1] == b":" and tag[3:] == b":":
            planes = defs[tag[1:3]]
            pos += 4
            values = []
            for plane in planes:
                for _ in range(plane.items):
                    size = _size(plane.type)
                    values.append(_decode(plane, data[pos : pos + size]))
                    pos += size
            stream.rows.append((planes, values))
            stream.order.append("data")
        else:
            raise AssertionError(f"bad packet tag {tag!r} at {pos}")
    return stream


def parse_xml(text: bytes) -> ET.Element:
    """XML without namespaces: das2 attribute names (`String:title`) carry a type prefix
    that is not a namespace, so a namespace-aware parser would refuse them."""
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate()
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.Parse(text, True)
    return builder.close()


def _props(el: ET.Element) -> dict[str, str]:
    found = el.find("properties")
    return {} if found is None else dict(found.attrib)


def _plane(el: ET.Element) -> PlaneDef:
    units = el.get("zUnits", el.get("units", "")) if el.tag == "yscan" else el.get("units", "")
    items = int(el.get("nitems", "1"))
    return PlaneDef(el.tag, el.get("name", ""), el.get("type", ""), units, items, _props(el))


def _size(kind: str) -> int:
    if kind in ("little_endian_real8", "sun_real8"):
        return 8
    if kind in ("little_endian_real4", "sun_real4"):
        return 4
    for prefix in ("ascii", "time"):
        if kind.startswith(prefix):
            return int(kind[len(prefix) :])
    raise AssertionError(f"unknown type {kind}")


def _decode(plane: PlaneDef, raw: bytes) -> Any:
    if plane.type.startswith("time"):
        return np.datetime64(raw.decode().strip().rstrip("Z"), "ns")
    if plane.type.startswith("ascii"):
        return float(raw.decode().strip())
    value = struct.unpack({"little_endian_real8": "<d", "sun_real8": ">d"}[plane.type], raw)[0]
    if plane.kind == "x" and plane.units == "us2000":
        return US2000 + np.timedelta64(round(value * 1000), "ns")
    return value


# -- fixtures --------------------------------------------------------------------------

INFO = SeriesInfo(
    parameters=(
        Parameter("flux", units="W/m2", fill="-9999.0"),
        Parameter("count", type="integer", fill="-1"),
        Parameter("current", units="A", size=(4,)),
        Parameter("label", type="string"),
    ),
    start=int(DAY.astype(np.int64)),
    stop=int((DAY + np.timedelta64(1, "D")).astype(np.int64)),
    sample_start=int(DAY.astype(np.int64)),
    sample_stop=int((DAY + np.timedelta64(1, "h")).astype(np.int64)),
    cadence=10**9,
    title="GOES XRS",
    description="X-ray fluxes",
    extras=(
        Extra("channel", allowed=("a", "b"), default="a"),
        Extra("clean", type="boolean", description="drop flagged samples"),
    ),
)
NUMERIC = [p for p in INFO.parameters if p.type != "string"]


def block(n: int, seed: int = 0, start: np.datetime64 = DAY) -> Block:
    rng = np.random.default_rng(seed)
    flux = rng.standard_normal(n) * 10.0 ** rng.integers(-300, 300, n)
    count = rng.integers(-(2**62), 2**62, n)
    current = rng.random((n, 4)) * 1e-9
    times = start + np.arange(n) * np.timedelta64(1500, "ms")
    return Block(times, {"flux": flux, "count": count, "current": current})


def full_request() -> SeriesRequest:
    return SeriesRequest(INFO.start, INFO.stop, parameters=tuple(p.name for p in NUMERIC))


def encode(blocks: list[Block] | Iterator[Block], ascii: bool, width: int | None = None) -> bytes:
    planes = das2.planes_for(NUMERIC, INFO, full_request())
    head = das2.stream_header(INFO.title, INFO.description, width, INFO.cadence)
    return b"".join(das2.encode_stream(head, planes, iter(blocks), ascii, "the interval"))


# -- streams ---------------------------------------------------------------------------


def test_ascii_stream_reads_back_every_value_exactly() -> None:
    parts = [block(500, 1), block(300, 2, DAY + np.timedelta64(1, "h"))]
    stream = read_stream(encode(parts, ascii=True))
    assert stream.order[:2] == ["stream", "packet"] and not stream.exceptions
    np.testing.assert_array_equal(stream.column("x"), np.concatenate([b.time for b in parts]))
    for name in ("flux", "current"):
        np.testing.assert_array_equal(
            stream.column(name), np.concatenate([b.values[name] for b in parts])
        )
    # integers beyond 2**53 are written as integers, digit for digit
    text = encode(parts, ascii=True).decode()
    for value in parts[0].values["count"][:20]:
        assert f" {value} " in text or f" {value}\n" in text


def test_ascii_rows_are_lines_of_one_width_and_declared_types() -> None:
    data = encode([block(50)], ascii=True)
    stream = read_stream(data)
    kinds = {p.name: p.type for p in stream.packets[0]}
    assert kinds == {"": "time24", "flux": "ascii26", "count": "ascii26", "current": "ascii26"}
    lines = [line for line in data.split(b"\n") if line.startswith(b":01:")]
    assert len(lines) == 50 and len({len(line) for line in lines}) == 1
    assert len(lines[0]) + 1 == 4 + 24 + 6 * 26  # time24, flux, count, 4 currents


def test_binary_stream_reads_back_values_and_microsecond_times() -> None:
    parts = [block(400, 3)]
    stream = read_stream(encode(parts, ascii=False))
    assert {p.type for p in stream.packets[0]} == {"little_endian_real8"}
    assert stream.packets[0][0].units == "us2000"
    np.testing.assert_array_equal(stream.column("x"), parts[0].time)
    np.testing.assert_array_equal(stream.column("flux"), parts[0].values["flux"])
    np.testing.assert_array_equal(stream.column("current"), parts[0].values["current"])
    np.testing.assert_array_equal(stream.column("count"), parts[0].values["count"].astype(float))


def test_vectors_are_yscans_and_scalars_ys_with_units_and_fill() -> None:
    stream = read_stream(encode([block(3)], ascii=False))
    planes = {p.name: p for p in stream.packets[0]}
    assert planes["current"].kind == "yscan" and planes["current"].items == 4
    assert planes["current"].units == "A"
    assert planes["flux"].kind == "y" and planes["flux"].units == "W/m2"
    assert float(planes["flux"].props["double:yFill"]) == -9999.0
    assert float(planes["count"].props["double:yFill"]) == -1.0
    assert float(planes["current"].props["double:zFill"]) == das2.DAS2_FILL


@pytest.mark.parametrize("ascii", [True, False])
def test_nan_is_sent_as_the_declared_fill(ascii: bool) -> None:
    part = block(6)
    part.values["flux"][[1, 4]] = np.nan
    part.values["current"][2, 3] = np.nan
    stream = read_stream(encode([part], ascii=ascii))
    flux = stream.column("flux")
    assert list(np.flatnonzero(flux == -9999.0)) == [1, 4]
    assert stream.column("current")[2, 3] == das2.DAS2_FILL
    np.testing.assert_array_equal(flux[[0, 2, 3, 5]], part.values["flux"][[0, 2, 3, 5]])


def test_infinities_are_written_as_java_reads_them() -> None:
    part = block(3)
    part.values["flux"][:] = [np.inf, -np.inf, 1.0]
    data = encode([part], ascii=True)
    assert b" Infinity " in data and b" -Infinity " in data
    np.testing.assert_array_equal(read_stream(data).column("flux"), [np.inf, -np.inf, 1.0])


def test_stream_header_gives_title_and_tag_width() -> None:
    stream = read_stream(encode([block(2)], ascii=True))
    assert stream.props["String:title"] == "GOES XRS"
    assert stream.props["String:summary"] == "X-ray fluxes"
    assert stream.props["Datum:xTagWidth"] == "1.0 s"
    assert "Datum:xCacheResolution" not in stream.props


def test_header_length_counts_bytes_not_characters() -> None:
    head = das2.stream_header("µ-flux ≥ 3", "", None, None)
    assert int(head[4:10]) == len(head) - 10
    assert read_stream(head).props["String:title"] == "µ-flux ≥ 3"


def test_ascii_times_widen_when_a_later_block_needs_more_digits() -> None:
    first = block(3)
    later = block(3, 5, DAY + np.timedelta64(1, "h"))
    fine = later.time + np.array([1, 1000, 7], dtype="timedelta64[ns]")
    later = Block(fine, later.values)
    stream = read_stream(encode([first, later], ascii=True))
    assert [p[0].type for p in stream.packets] == ["time24", "time30"]
    assert stream.order == ["stream", "packet", *["data"] * 3, "packet", *["data"] * 3]
    np.testing.assert_array_equal(stream.column("x"), np.concatenate([first.time, fine]))


def test_reduced_columns_become_mean_min_max_planes() -> None:
    width = 60 * 10**9
    request = SeriesRequest(
        INFO.start, INFO.stop, ("flux", "current"), width, das2.REDUCED_STATISTICS
    )
    columns = [
        Parameter(f"{name}_{stat}", units=units, size=size)
        for name, units, size in (("flux", "W/m2", ()), ("current", "A", (4,)))
        for stat in ("mean", "min", "max")
    ]
    planes = das2.planes_for(columns, INFO, request)
    assert [p.name for p in planes] == [
        *("flux", "flux.min", "flux.max", "current", "current.min", "current.max")
    ]
    times = DAY + np.arange(2) * np.timedelta64(60, "s") + np.timedelta64(30, "s")
    values = {c.name: np.full((2, *c.size), float(i)) for i, c in enumerate(columns)}
    head = das2.stream_header(INFO.title, "", width, INFO.cadence)
    data = b"".join(das2.encode_stream(head, planes, iter([Block(times, values)]), False, "x"))
    stream = read_stream(data)
    assert stream.props["Datum:xTagWidth"] == "60.0 s"
    assert stream.props["Datum:xCacheResolution"] == "60.0 s"
    props = {p.name: p.props for p in stream.packets[0]}
    assert props["flux"]["String:operation"] == "BIN_AVG"
    assert props["flux.max"]["String:operation"] == "BIN_MAX"
    assert props["current.min"]["String:source"] == "current"
    assert float(props["flux.min"]["double:yFill"]) == -9999.0  # the parameter's fill
    np.testing.assert_array_equal(stream.column("flux.max"), [2.0, 2.0])
    np.testing.assert_array_equal(stream.column("current.min"), np.full((2, 4), 4.0))


def test_no_rows_end_with_a_no_data_in_interval_exception() -> None:
    empty = Block(np.array([], dtype="datetime64[ns]"), {})
    stream = read_stream(encode([empty], ascii=True))
    assert stream.order == ["stream", "exception"]
    assert stream.exceptions[0]["type"] == "NoDataInInterval"
    assert "the interval" in stream.exceptions[0]["message"]


def test_a_failure_after_the_start_ends_the_stream_with_a_server_error() -> None:
    closed = []

    def blocks() -> Iterator[Block]:
        try:
            yield block(4)
            raise UpstreamFailed("reader exited with status 3")
        finally:
            closed.append(True)

    data = encode(blocks(), ascii=False)
    assert data.endswith(b"/>\n") and b"[xx]" in data
    stream = read_stream(data)
    assert stream.order == ["stream", "packet", *["data"] * 4, "exception"]
    assert stream.exceptions == [{"type": "ServerError", "message": "reader exited with status 3"}]
    assert closed == [True]


def test_exception_document_escapes_the_message() -> None:
    message = "start_time \"x<y\" & 'z'\nsecond line"
    doc = das2.exception_document("IllegalArgument", message)
    assert doc.startswith(b"[00]") and int(doc[4:10]) == len(doc) - 10
    stream = read_stream(doc)
    assert stream.exceptions == [{"type": "IllegalArgument", "message": message}]


# -- the list and the source definition -----------------------------------------------


def test_source_list_has_an_id_and_description_line_per_source() -> None:
    text = das2.source_list([("goes/xrs", "X-ray | fluxes\nday"), ("bare", "")]).decode()
    assert text.splitlines() == ["goes/xrs|X-ray / fluxes day", "bare"]


def test_dsdf_is_a_stream_header_with_ranges_and_params() -> None:
    stream = read_stream(das2.dsdf("goes/xrs", INFO))
    props = stream.props
    assert props["name"] == "goes/xrs" and props["description"] == "X-ray fluxes"
    assert props["validRange"] == "2013-10-28T00:00:00.000 to 2013-10-29T00:00:00.000 UTC"
    assert props["exampleRange"] == "2013-10-28T00:00:00.000 to 2013-10-28T01:00:00.000 UTC"
    params = [v for k, v in sorted(props.items()) if k.startswith("param_")]
    assert params[0].startswith("channel=VALUE | channel (string; one of a, b; default a)")
    assert params[1].startswith("clean=VALUE | drop flagged samples (boolean")
    assert [p.split(" | ")[0] for p in params[2:]] == ["flux", "count", "current"]


# -- requests --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2013-10-28T00:00:00.000Z", "2013-10-28T00:00"),
        ("2013-10-28T10:20:30.123456789Z", "2013-10-28T10:20:30.123456789"),
        ("2013-10-28T10:20", "2013-10-28T10:20"),
        ("2013-10-28 10:20:30", "2013-10-28T10:20:30"),
        ("2013-10-28", "2013-10-28"),
        ("2013/10/28 05", "2013-10-28T05:00"),
        ("2013-301", "2013-10-28"),
        ("2012-366T12:00", "2012-12-31T12:00"),
        ("2013-10", "2013-10-01"),
        ("2013", "2013-01-01"),
        ("  2013-10-28T00:00Z ", "2013-10-28"),
    ],
)
def test_times_in_das2_forms(text: str, expected: str) -> None:
    want = np.datetime64(expected, "ns").astype(np.int64)
    assert das2.parse_time(text, "start_time") == want


@pytest.mark.parametrize(
    "text",
    ["", "yesterday", "2013-13-01", "2013-02-30", "2013-366", "2013-10-28T25:00", "13-10-28"],
)
def test_bad_times_name_the_parameter_and_the_forms(text: str) -> None:
    with pytest.raises(BadQuery) as err:
        das2.parse_time(text, "end_time")
    assert err.value.parameter == "end_time"
    assert "2013-10-28T00:00:00Z" in err.value.message


def query(**params: str) -> das2.Das2Query:
    base = {"start_time": "2013-10-28T00:00", "end_time": "2013-10-28T06:00"}
    return das2.parse_query(list({**base, **params}.items()), INFO)


def test_a_plain_request_asks_for_every_numeric_parameter_at_full_resolution() -> None:
    parsed = query()
    assert parsed.request.parameters == ("flux", "count", "current")
    assert parsed.request.width is None and not parsed.ascii
    assert parsed.request.stop - parsed.request.start == 6 * 3600 * 10**9


@pytest.mark.parametrize(("text", "width"), [("60", 60 * 10**9), ("2.5", 25 * 10**8), ("0", None)])
def test_resolution_in_seconds_asks_for_mean_min_and_max_bins(text: str, width: int | None) -> None:
    parsed = query(resolution=text, ascii="1")
    assert parsed.request.width == width and parsed.ascii
    assert parsed.request.statistics == (("mean", "min", "max") if width else ("mean",))


def test_a_resolution_no_coarser_than_the_cadence_is_full_resolution() -> None:
    assert query(resolution="1").request.width is None  # INFO's cadence is 1 s
    assert query(resolution="0.2").request.statistics == ("mean",)
    assert query(resolution="1.001").request.width == 1_001_000_000


def test_times_beyond_what_nanoseconds_hold_are_clamped() -> None:
    parsed = query(start_time="1000-01-01", end_time="9999-12-31")
    assert parsed.request.start == -(2**63) + 1 and parsed.request.stop == 2**63 - 1
    assert das2.iso_time(parsed.request.stop).startswith("2262-04-11")


def test_requests_are_trimmed_to_the_valid_range() -> None:
    wide = query(start_time="2013-10-27", end_time="2300-01-01").request
    assert das2.trim(wide, INFO) == SeriesRequest(
        INFO.start, INFO.stop, wide.parameters, wide.width, wide.statistics, wide.extras
    )
    inside = query(start_time="2013-10-28T01:00", end_time="2013-10-28T02:00").request
    assert das2.trim(inside, INFO) == inside
    assert das2.trim(query(start_time="2013-10-29", end_time="2013-10-30").request, INFO) is None


def test_time_min_and_max_are_accepted_for_start_and_end_time() -> None:
    parsed = das2.parse_query(
        [("time.min", "2013-10-28"), ("time.max", "2013-10-29"), ("ascii", "true")], INFO
    )
    assert parsed.request.stop - parsed.request.start == 86400 * 10**9


@pytest.mark.parametrize(
    ("params", "parameter", "words"),
    [
        ({"end_time": "2013-10-27"}, "end_time", "must be after start_time"),
        ({"end_time": "2013-10-28T00:00"}, "end_time", "must be after"),
        ({"start_time": ""}, "start_time", "start_time is required"),
        ({"resolution": "-1"}, "resolution", "seconds >= 0"),
        ({"resolution": "fast"}, "resolution", "seconds >= 0"),
        ({"resolution": "nan"}, "resolution", "seconds >= 0"),
        ({"ascii": "maybe"}, "ascii", "1 or 0"),
        ({"interval": "10"}, "interval", "use resolution"),
        ({"compress": "true"}, "compress", "not supported"),
        ({"format": "csv"}, "format", "allowed: ascii, compress, end_time"),
    ],
)
def test_bad_requests_name_the_parameter(
    params: dict[str, str], parameter: str, words: str
) -> None:
    with pytest.raises(BadQuery) as err:
        query(**params)
    assert err.value.parameter == parameter
    assert words in err.value.message


def test_a_parameter_given_twice_is_refused() -> None:
    pairs = [("start_time", "2013-10-28"), ("start_time", "2013-10-29"), ("end_time", "2014")]
    with pytest.raises(BadQuery, match="given twice"):
        das2.parse_query(pairs, INFO)


def test_client_extras_are_ignored() -> None:
    parsed = query(key="abc", redirect="1", server="dataset", dataset="goes", compress="false")
    assert parsed.request.parameters == ("flux", "count", "current")


def test_params_set_extras_and_choose_parameters() -> None:
    parsed = query(params="current channel=b clean flux")
    assert parsed.request.parameters == ("current", "flux")
    assert parsed.request.extras == (("channel", "b"), ("clean", "true"))
    quoted = query(params="channel='b c'")
    assert quoted.request.extras == (("channel", "b c"),)
    assert quoted.request.parameters == ("flux", "count", "current")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("colour=red", "allowed: channel, clean"),
        ("nonsense", "neither a parameter (flux, count, current)"),
        ("label", "das2 streams carry numbers only"),
        ("channel='b", "not a list of words"),
    ],
)
def test_bad_params_say_what_is_allowed(text: str, words: str) -> None:
    with pytest.raises(BadQuery) as err:
        query(params=text)
    assert err.value.parameter == "params" and words in err.value.message
