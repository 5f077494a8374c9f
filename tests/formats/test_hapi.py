"""HAPI 3.3 request checks, time strings and encoders, on synthetic blocks.

Expectations are written from the specification, independently of the code: times from
NumPy's own formatter and parser, CSV read back with Python's csv module, binary with a
NumPy dtype spelled from HAPI 3.3 §3.7.4.2, JSON with the json module.
"""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

import numpy as np
import pytest

from outcrop.errors import (
    BadQuery,
    DatasetNotFound,
    Forbidden,
    SourceError,
    TooLarge,
    UpstreamFailed,
)
from outcrop.formats import hapi, hapistream, hapitime
from outcrop.model import Block, Extra, Parameter, SeriesInfo
from outcrop.reduce import parse_width

SECOND = 10**9


def ns(text: str) -> int:
    """Nanoseconds of an ISO time, by NumPy (the independent reference)."""
    return int(np.datetime64(text, "ns").astype(np.int64))


# -- time parsing (§3.7.6.1) -------------------------------------------------------------
GOOD_TIMES = [
    ("2017-01-15T23:00:00.000Z", "2017-01-15T23:00:00"),
    ("2017-01-15T23:00:00Z", "2017-01-15T23:00:00"),
    ("2017-01-15T23:00Z", "2017-01-15T23:00"),
    ("2017-01-15T23Z", "2017-01-15T23:00"),
    ("2017-01-15Z", "2017-01-15"),
    ("2017-01-15", "2017-01-15"),
    ("2017-01-15T23:00:00.000", "2017-01-15T23:00:00"),
    ("2017-01Z", "2017-01-01"),
    ("2017-01", "2017-01-01"),
    ("2017Z", "2017-01-01"),
    ("2017", "2017-01-01"),
    ("2017-015Z", "2017-01-15"),
    ("2017-015", "2017-01-15"),
    ("2017-015T23Z", "2017-01-15T23:00"),
    ("2017-015T23:30Z", "2017-01-15T23:30"),
    ("2017-015T23:30:15.25Z", "2017-01-15T23:30:15.25"),
    ("2016-366Z", "2016-12-31"),
    ("2016-060Z", "2016-02-29"),
    ("2017-060Z", "2017-03-01"),
    ("2016-02-29Z", "2016-02-29"),
    ("2017-01-15T23:59:59.123456789Z", "2017-01-15T23:59:59.123456789"),
    ("2017-01-15T23:59:59.1234567891Z", "2017-01-15T23:59:59.123456789"),
    ("2017-01-15T12:00:00.5", "2017-01-15T12:00:00.5"),
    ("2017-01-15T24Z", "2017-01-16"),
    ("2017-01-15T24:00Z", "2017-01-16"),
    ("2017-01-15T24:00:00.000Z", "2017-01-16"),
    ("2016-12-31T23:59:60Z", "2017-01-01"),
    ("1969-07-20T20:17:40Z", "1969-07-20T20:17:40"),
    ("1859-09-01T11:18Z", "1859-09-01T11:18"),
]
BAD_TIMES = [
    "",
    "now",
    "17-01-15",
    "2017-1-15",
    "2017-01-5",
    "2017-13-01",
    "2017-00-10",
    "2017-02-29",
    "2017-04-31",
    "2017-000Z",
    "2017-366Z",
    "2016-367Z",
    "2017-01-15T",
    "2017-01-15TZ",
    "2017-01T00Z",
    "2017T00Z",
    "2017-01-15 23:00",
    "2017-01-15T25Z",
    "2017-01-15T23:60Z",
    "2017-01-15T23:00:61Z",
    "2017-01-15T24:30Z",
    "2017-01-15T24:00:00.5Z",
    "2017-01-15T12:00:60Z",
    "2017-01-15T23:00:00.Z",
    "2017-01-15ZZ",
    "2017-01-15t23z",
    "2017-01-15T23:00:00+01:00",
    "2017-W03",
    "\uff12\uff10\uff11\uff17-01-15",  # full-width digits
    "2017-01-15T23:00:00.\u0663Z",  # an Arabic-Indic digit
]


@pytest.mark.parametrize(("text", "expected"), GOOD_TIMES)
def test_every_allowed_time_form_reads_as_the_same_instant(text: str, expected: str) -> None:
    assert hapi.parse_time(text) == ns(expected)


@pytest.mark.parametrize("text", BAD_TIMES)
def test_a_malformed_start_is_1402_and_a_malformed_stop_1403(text: str) -> None:
    with pytest.raises(hapi.HapiError) as start:
        hapi.parse_time(text, "start")
    with pytest.raises(hapi.HapiError) as stop:
        hapi.parse_time(text, "stop")
    assert (start.value.code, stop.value.code) == (1402, 1403)
    words = [w.strip(",()") for w in start.value.message.split()]
    assert not text or text not in words  # §5.2: a bad value is not echoed


# -- time formatting (§3.7.6.2) ----------------------------------------------------------
@pytest.mark.parametrize(("digits", "unit"), [(0, "s"), (3, "ms"), (6, "us"), (9, "ns")])
def test_times_are_formatted_like_numpy_with_a_trailing_z(digits: int, unit: str) -> None:
    rng = np.random.default_rng(digits)
    values = np.sort(rng.integers(-(2**62), 2**62, 5000))
    values[:100] = values[100] + np.arange(100)  # runs within one day
    times = values.astype("datetime64[ns]")
    fmt = hapitime.TimeFormat(digits)
    got = hapitime.format_times(times, fmt)
    expected = np.char.add(np.datetime_as_string(times, unit=unit), "Z").astype(got.dtype)
    assert got.dtype.itemsize == fmt.length
    assert (got == expected).all()


def test_formatted_times_fit_the_schema_pattern_and_the_declared_length() -> None:
    pattern = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z")
    times = np.array(["1970-01-01", "2020-02-29T23:59:59.999999999"], "datetime64[ns]")
    for digits in (0, 3, 6, 9):
        fmt = hapitime.TimeFormat(digits)
        for text in hapitime.format_times(times, fmt):
            assert pattern.fullmatch(text.decode()) and len(text) == fmt.length


def test_time_text_rounds_start_down_and_stop_up_to_the_tick() -> None:
    fmt = hapitime.TimeFormat(3)
    t = ns("2020-01-01T00:00:00.1234")
    assert hapitime.time_text(t, fmt) == "2020-01-01T00:00:00.123Z"
    assert hapitime.time_text(t, fmt, ceil=True) == "2020-01-01T00:00:00.124Z"
    assert (
        hapitime.time_text(ns("2020-01-01T00:00:01"), fmt, ceil=True) == "2020-01-01T00:00:01.000Z"
    )


@pytest.mark.parametrize(
    ("cadence", "width", "digits"),
    [
        (None, None, 3),
        (60 * SECOND, None, 3),
        (10**7, None, 3),
        (10**6, None, 6),
        (10**4, None, 6),
        (500, None, 9),
        (SECOND, 10**6, 6),  # bin centres half a millisecond from the edges
        (SECOND, 60 * SECOND, 3),
    ],
)
def test_time_digits_resolve_a_tenth_of_the_cadence_and_half_a_bin(
    cadence: int | None, width: int | None, digits: int
) -> None:
    assert hapitime.time_format(cadence, width).digits == digits


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (60 * SECOND, "PT1M"),
        (86_400 * SECOND, "P1D"),
        (90_061 * SECOND, "P1DT1H1M1S"),
        (10**6, "PT0.001S"),
        (1_500_000_000, "PT1.5S"),
        (3_600 * SECOND, "PT1H"),
        (0, "PT0S"),
    ],
)
def test_durations_are_iso_8601(value: int, text: str) -> None:
    assert hapitime.duration_text(value) == text
    if value:
        assert parse_width(text, "x") == value


# -- request parameters (§3.1, §3.6.1, §3.7.1, §4.2) ------------------------------------
def code_of(call: Any, *args: Any) -> int:
    with pytest.raises(hapi.HapiError) as caught:
        call(*args)
    return caught.value.code


def data_query(**params: str) -> hapi.Query:
    base = {"dataset": "d", "start": "2020-01-01", "stop": "2020-01-02"}
    return hapi.parse_query("data", list({**base, **params}.items()))


def test_hapi2_names_mean_the_hapi3_ones() -> None:
    query = hapi.parse_query(
        "data", [("id", "d"), ("time.min", "2020-01-01"), ("time.max", "2020-01-02")]
    )
    assert (query.dataset, query.get("start"), query.get("stop")) == (
        "d",
        "2020-01-01",
        "2020-01-02",
    )
    assert hapi.parse_query("info", [("id", "d")]).dataset == "d"


@pytest.mark.parametrize(
    ("endpoint", "items", "code"),
    [
        ("data", [("dataset", "d"), ("start", "2020"), ("stop", "2021"), ("avg", "5s")], 1401),
        ("info", [("dataset", "d"), ("start", "2020")], 1401),
        ("about", [("dataset", "d")], 1401),
        ("capabilities", [("x", "1")], 1401),
        ("catalog", [("dataset", "d")], 1401),
        ("catalog", [("x_foo", "1")], 1401),
        ("catalog", [("depth", "deep")], 1413),
        ("catalog", [("resolve_references", "maybe")], 1412),
        ("info", [("dataset", "d"), ("resolve_references", "no")], 1412),
        ("info", [], 1400),
        ("info", [("dataset", "")], 1400),
        ("info", [("dataset", "d"), ("id", "d")], 1400),
        ("data", [("dataset", "d"), ("stop", "2021")], 1402),
        ("data", [("dataset", "d"), ("start", "2020")], 1403),
        ("data", [("dataset", "d"), ("start", "2020"), ("time.min", "2020")], 1400),
        ("data", [("dataset", "d"), ("start", "2020"), ("stop", "2021"), ("format", "xml")], 1409),
        ("data", [("dataset", "d"), ("start", "2020"), ("stop", "2021"), ("include", "all")], 1410),
        (
            "data",
            [("dataset", "d"), ("start", "2020"), ("stop", "2021"), ("x_a", "1"), ("x_a", "2")],
            1400,
        ),
    ],
)
def test_request_parameters_are_checked_with_their_codes(
    endpoint: str, items: list[tuple[str, str]], code: int
) -> None:
    assert code_of(hapi.parse_query, endpoint, items) == code


def test_the_accepted_choices_pass() -> None:
    query = data_query(format="binary", include="header", resolve_references="false")
    assert (query.format, query.header) == ("binary", True)
    assert data_query().format == "csv" and not data_query().header
    assert hapi.parse_query("catalog", [("depth", "all")]).get("depth") == "all"


P = (
    Parameter("a", units="nT", fill="-1e+31"),
    Parameter("b", "integer", fill="-1"),
    Parameter("v", size=(2, 3)),
    Parameter("s", "string", length=12, fill=""),
)
INFO = SeriesInfo(
    parameters=P,
    start=ns("2020-01-01"),
    stop=ns("2020-01-02"),
    cadence=SECOND,
    extras=(Extra("gain"),),
)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        (None, ["a", "b", "v", "s"]),
        ("", ["a", "b", "v", "s"]),
        ("a", ["a"]),
        ("b,s", ["b", "s"]),
        ("Time,a,v", ["a", "v"]),
        ("Time", []),
    ],
)
def test_parameter_subsets_keep_the_dataset_order(text: str | None, names: list[str]) -> None:
    assert [p.name for p in hapi.select_parameters(INFO, text)] == names


@pytest.mark.parametrize(
    ("text", "code"),
    [("a,zz", 1407), ("A", 1407), ("a,,b", 1407), ("b,a", 1411), ("a,a", 1411), ("a,Time", 1411)],
)
def test_unknown_parameters_are_1407_and_disorder_1411(text: str, code: int) -> None:
    assert code_of(hapi.select_parameters, INFO, text) == code


def test_x_resolution_and_statistics_and_declared_extras_are_read() -> None:
    query = data_query(parameters="a,b", x_resolution="PT1M", x_statistic="max,min", x_gain="3")
    selection = hapi.select(query, INFO, parse_width)
    assert selection.width == 60 * SECOND
    assert selection.statistics == ("min", "max")
    assert selection.extras == (("gain", "3"),)
    everything = hapi.select(data_query(x_resolution="0.5"), INFO, parse_width)
    assert everything.width == SECOND // 2
    assert [p.name for p in everything.parameters] == ["a", "b", "v"]  # the numeric ones


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"x_foo": "1"}, 1401),
        ({"x_statistic": "max"}, 1400),
        ({"x_resolution": "soon"}, 1400),
        ({"x_resolution": "P1M"}, 1400),
        ({"x_resolution": "-5"}, 1400),
        ({"x_resolution": "60", "x_statistic": "median"}, 1400),
        ({"x_resolution": "60", "x_statistic": "min,min"}, 1400),
        ({"x_resolution": "60", "parameters": "a,s"}, 1400),  # strings are not reduced
    ],
)
def test_bad_extensions_are_rejected(params: dict[str, str], code: int) -> None:
    assert code_of(hapi.select, data_query(**params), INFO, parse_width) == code


def plan_of(query: hapi.Query, max_bytes: int | None = None) -> hapi.DataPlan:
    return hapi.data_plan(query, INFO, hapi.select(query, INFO, parse_width), max_bytes)


def test_a_range_partly_outside_is_answered_for_the_overlap() -> None:
    plan = plan_of(data_query(start="2019-12-31T12Z", stop="2020-01-01T06Z"))
    assert (plan.request.start, plan.request.stop) == (INFO.start, ns("2020-01-01T06:00"))
    assert plan.start == ns("2019-12-31T12:00")
    plan = plan_of(data_query(start="1000-01-01", stop="9999-12-31"))
    assert (plan.request.start, plan.request.stop) == (INFO.start, INFO.stop)


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"start": "2020-01-01T05Z", "stop": "2020-01-01T05Z"}, 1404),
        ({"start": "2020-01-01T06Z", "stop": "2020-01-01T05Z"}, 1404),
        ({"start": "2021-01-01", "stop": "2021-01-02"}, 1405),
        ({"start": "2019-01-01", "stop": "2020-01-01"}, 1405),
        ({"start": "2020-13-01"}, 1402),
        ({"stop": "tomorrow"}, 1403),
    ],
)
def test_time_range_errors(params: dict[str, str], code: int) -> None:
    assert code_of(plan_of, data_query(**params)) == code


def test_the_1405_message_names_the_dataset_range() -> None:
    with pytest.raises(hapi.HapiError) as caught:
        plan_of(data_query(start="2021-01-01", stop="2021-01-02"))
    assert "2020-01-01T00:00:00.000Z" in caught.value.message
    assert "2020-01-02T00:00:00.000Z" in caught.value.message


def test_too_much_data_is_1408_and_a_reduction_fits() -> None:
    day = data_query(parameters="a,b")
    record = 24 + 8 + 4  # time, double, integer (§3.7.4.2)
    assert plan_of(day, 86_400 * record).request.parameters == ("a", "b")
    assert code_of(plan_of, day, 86_400 * record - 1) == 1408
    reduced = data_query(parameters="a,b", x_resolution="60")
    assert plan_of(reduced, 86_400 * record // 10).request.width == 60 * SECOND


def test_time_only_asks_one_parameter_and_sends_none() -> None:
    plan = plan_of(data_query(parameters="Time"))
    assert plan.time_only and plan.request.parameters == ("a",)


# -- status codes (§4.2) -----------------------------------------------------------------
SPEC_HTTP = {1400: 400, 1401: 400, 1402: 400, 1403: 400, 1404: 400, 1405: 400, 1406: 404}
SPEC_HTTP |= {1407: 404, 1408: 400, 1409: 400, 1410: 400, 1411: 400, 1412: 400, 1413: 400}
SPEC_HTTP |= {1500: 500, 1501: 500, 1200: 200, 1201: 200}


@pytest.mark.parametrize(("code", "http"), sorted(SPEC_HTTP.items()))
def test_each_code_has_the_http_status_of_the_spec(code: int, http: int) -> None:
    assert hapi.http_status(code) == http
    body = json.loads(hapi.error_document(code, "detail"))
    assert body["HAPI"] == "3.3" and set(body) == {"HAPI", "status"}
    assert body["status"]["code"] == code
    if code >= 1400:
        assert body["status"]["message"].startswith(f"HAPI error {code}: ")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (DatasetNotFound("no such dataset"), (1406, 404)),
        (BadQuery("not a series", parameter="dataset"), (1406, 404)),
        (BadQuery("unknown", parameter="parameters"), (1407, 404)),
        (BadQuery("bad start", parameter="start"), (1402, 400)),
        (BadQuery("bad extra", parameter="gain"), (1400, 400)),
        (TooLarge("big", size=2, limit=1), (1408, 400)),
        (UpstreamFailed("reader died"), (1501, 500)),
        (SourceError("broken file"), (1500, 500)),
        (Forbidden("no"), (1400, 403)),
        (hapi.HapiError(1411, "order"), (1411, 400)),
    ],
)
def test_domain_errors_map_to_hapi_codes(error: Any, expected: tuple[int, int]) -> None:
    assert hapi.status_of(error) == expected


# -- documents (§3.3 - §3.6) -------------------------------------------------------------
INFO_KEYS = {
    "HAPI", "status", "format", "startDate", "stopDate", "sampleStartDate", "sampleStopDate",
    "cadence", "maxRequestDuration", "description", "timeStampLocation", "parameters",
}  # fmt: skip
PARAMETER_KEYS = {"name", "type", "units", "fill", "length", "size", "description", "label"}
HAPI_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z")


def check_info(doc: dict[str, Any]) -> None:
    """What the HAPI 3.3 info schema asks: known keys or `x_` ones, the required ones,
    times in the restricted form, parameters with their required attributes."""
    assert {k for k in doc if not k.startswith("x_")} <= INFO_KEYS
    assert {"HAPI", "status", "startDate", "stopDate", "parameters"} <= set(doc)
    for key in ("startDate", "stopDate", "sampleStartDate", "sampleStopDate"):
        assert key not in doc or HAPI_TIME.fullmatch(doc[key])
    time = doc["parameters"][0]
    assert time["type"] == "isotime" and time["units"] == "UTC" and time["fill"] is None
    for p in doc["parameters"]:
        assert {k for k in p if not k.startswith("x_")} <= PARAMETER_KEYS
        assert {"name", "type", "units", "fill"} <= set(p)
        assert ("length" in p) == (p["type"] in ("string", "isotime"))
        assert p["units"] != ""
        assert p["fill"] is None or isinstance(p["fill"], str)


def test_info_document_follows_the_schema_rules() -> None:
    layout = hapi.Layout(hapitime.TimeFormat(3), P)
    doc = hapi.info_document(INFO, layout, max_bytes=2**30)
    check_info(doc)
    assert doc["startDate"] == "2020-01-01T00:00:00.000Z"
    assert doc["stopDate"] == "2020-01-02T00:00:00.000Z"
    assert doc["cadence"] == "PT1S" and "format" not in doc
    assert [p["name"] for p in doc["parameters"]] == ["Time", "a", "b", "v", "s"]
    assert doc["parameters"][0]["length"] == 24
    assert doc["parameters"][3]["size"] == [2, 3] and "size" not in doc["parameters"][1]
    assert doc["parameters"][4]["length"] == 12


def test_info_for_a_reduction_says_so() -> None:
    selection = hapi.Selection(P[:1], 60 * SECOND, ("min", "max"))
    doc = hapi.info_document(INFO, hapi.Layout(hapitime.TimeFormat(3), P[:1]), selection, fmt="csv")
    check_info(doc)
    assert doc["timeStampLocation"] == "center" and doc["format"] == "csv"
    assert (doc["x_resolution"], doc["x_statistic"], doc["cadence"]) == ("PT1M", "min,max", "PT1M")


def test_capabilities_about_and_catalog() -> None:
    caps = hapi.capabilities_document()
    assert caps["outputFormats"] == ["csv", "binary", "json"]
    about = hapi.about_document("X", "T", "c@example.org", "d")
    assert {"HAPI", "status", "id", "title", "contact"} <= set(about)
    cat = hapi.catalog_document([("a/b", "A", None), ("c", "", {"HAPI": "3.3", "x": 1})])
    assert cat["catalog"] == [{"id": "a/b", "title": "A"}, {"id": "c", "info": {"x": 1}}]


def test_header_lines_each_start_with_a_hash_and_parse_back() -> None:
    doc = hapi.info_document(INFO, hapi.Layout(hapitime.TimeFormat(3), P), fmt="binary")
    text = hapi.header_lines(doc)
    lines = text.decode().split("\n")
    assert text.endswith(b"\n") and lines[-1] == ""
    assert all(line.startswith("#") for line in lines[:-1])
    assert json.loads("".join(line[1:] for line in lines[:-1])) == doc


# -- encoders (§3.7.4) -------------------------------------------------------------------
def sample_block(n: int, start: str = "2020-01-01T00:00:00") -> Block:
    rng = np.random.default_rng(n)
    time = np.datetime64(start, "ns") + np.arange(n) * np.timedelta64(1_234_567, "ns")
    a = rng.standard_normal(n) * 10.0 ** rng.integers(-300, 300, n)
    a[::7] = np.nan
    a[::11] = -1e31
    strings = np.array(["plain", 'say "hi"', "a,b", "ünï", "", "line\nbreak"])
    return Block(
        time.astype("datetime64[ns]"),
        {
            "a": a,
            "b": rng.integers(-(2**31), 2**31, n),
            "v": rng.standard_normal((n, 2, 3)),
            "s": strings[np.arange(n) % len(strings)],
        },
    )


LAYOUT = hapi.Layout(hapitime.TimeFormat(6), P)


def expected_times(block: Block, digits: int = 6) -> list[str]:
    unit = {3: "ms", 6: "us", 9: "ns"}[digits]
    return [f"{t}Z" for t in np.datetime_as_string(block.time, unit=unit)]


def test_csv_reads_back_exactly_with_the_csv_module() -> None:
    block = sample_block(500)
    text = b"".join(hapistream.encode(iter([block]), LAYOUT, "csv", None)).decode()
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert len(rows) == 500 and all(len(r) == 1 + 1 + 1 + 6 + 1 for r in rows)
    assert [r[0] for r in rows] == expected_times(block)
    a = np.array([float(r[1]) for r in rows])
    assert np.array_equal(a, block.values["a"], equal_nan=True)
    assert all(r[1] == "NaN" for i, r in enumerate(rows) if i % 7 == 0 and i % 11)
    assert [int(r[2]) for r in rows] == block.values["b"].tolist()
    v = np.array([[float(x) for x in r[3:9]] for r in rows])
    assert np.array_equal(v, block.values["v"].reshape(500, 6))  # last index fastest
    assert [r[9] for r in rows] == block.values["s"].tolist()


def test_csv_of_numbers_only_starts_with_a_digit_and_ends_with_one_newline() -> None:
    block = sample_block(70_000)  # more than one piece
    layout = hapi.Layout(hapitime.TimeFormat(3), P[:3])
    body = b"".join(hapistream.encode(iter([block]), layout, "csv", None))
    assert body[:1].isdigit() and body.endswith(b"\n") and not body.endswith(b"\n\n")
    rows = list(csv.reader(io.StringIO(body.decode(), newline="")))
    assert [r[0] for r in rows] == expected_times(block, 3)
    assert np.array_equal(np.array([float(r[1]) for r in rows]), block.values["a"], equal_nan=True)


def binary_dtype_from_spec(length: int, string_length: int) -> np.dtype[Any]:
    return np.dtype(
        [
            ("Time", f"S{length}"),
            ("a", "<f8"),
            ("b", "<i4"),
            ("v", "<f8", (2, 3)),
            ("s", f"S{string_length}"),
        ]
    )


def test_binary_reads_back_with_the_spec_dtype() -> None:
    block = sample_block(70_000)
    body = b"".join(hapistream.encode(iter([block]), LAYOUT, "binary", None))
    records = np.frombuffer(body, binary_dtype_from_spec(27, 12))
    assert len(records) == 70_000
    assert [t.decode() for t in records["Time"]] == expected_times(block)
    assert np.array_equal(records["a"], block.values["a"], equal_nan=True)
    assert np.array_equal(records["b"], block.values["b"])
    assert np.array_equal(records["v"], block.values["v"])
    texts = [s.decode("utf-8") for s in records["s"]]  # NUL padding dropped by NumPy
    assert texts == block.values["s"].tolist()


def test_binary_refuses_values_that_do_not_fit() -> None:
    block = sample_block(10)
    block.values["b"][3] = 2**31
    with pytest.raises(SourceError):
        b"".join(hapistream.encode(iter([block]), LAYOUT, "binary", None))
    block = sample_block(10)
    block.values["s"] = np.array(["far, far too long"] * 10)
    with pytest.raises(SourceError):
        b"".join(hapistream.encode(iter([block]), LAYOUT, "binary", None))


def test_header_precedes_csv_and_binary() -> None:
    block = sample_block(20)
    head = hapi.info_document(INFO, LAYOUT, fmt="binary")
    body = b"".join(hapistream.encode(iter([block]), LAYOUT, "binary", head))
    header = hapi.header_lines(head)
    assert body.startswith(header)
    records = np.frombuffer(body[len(header) :], binary_dtype_from_spec(27, 12))
    assert np.array_equal(records["b"], block.values["b"])


def test_json_holds_the_header_and_records() -> None:
    blocks = [sample_block(30), sample_block(0), sample_block(40, "2020-01-01T01:00:00")]
    head = hapi.info_document(INFO, LAYOUT, fmt="json")
    doc = json.loads(b"".join(hapistream.encode(iter(blocks), LAYOUT, "json", head)))
    assert list(doc)[-1] == "data" and doc["format"] == "json"
    assert len(doc["data"]) == 70
    first = doc["data"][0]
    block = blocks[0]
    assert first[0] == expected_times(block)[0]
    assert first[3] == block.values["v"][0].tolist()  # arrays stay arrays (§3.6.8)
    assert doc["data"][7][1] is None  # NaN
    assert doc["data"][11][1] == -1e31  # a fill value stays the number
    assert [r[4] for r in doc["data"][:30]] == block.values["s"].tolist()


def test_json_without_records_is_still_a_document() -> None:
    head = hapi.info_document(INFO, LAYOUT, fmt="json", code=1201)
    doc = json.loads(b"".join(hapistream.encode(iter([]), LAYOUT, "json", head)))
    assert doc["data"] == [] and doc["status"]["code"] == 1201


def test_within_keeps_records_of_the_range_only() -> None:
    block = sample_block(100)
    lo, hi = block.time[10].astype(np.int64), block.time[20].astype(np.int64)
    kept = list(hapistream.within(iter([block]), int(lo), int(hi)))
    assert len(kept) == 1 and (kept[0].time == block.time[10:20]).all()
    assert (kept[0].values["v"] == block.values["v"][10:20]).all()


def test_peek_tells_whether_any_record_comes() -> None:
    empty = [sample_block(0), sample_block(0)]
    found, rest = hapistream.peek(iter(empty))
    assert not found and [len(b) for b in rest] == [0, 0]
    blocks = [sample_block(0), sample_block(5), sample_block(6)]
    found, rest = hapistream.peek(iter(blocks))
    assert found and [len(b) for b in rest] == [0, 5, 6]
