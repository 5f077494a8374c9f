"""HAPI 3.3 at /hapi through a real server: hapiclient and httpx read it, and the values
are compared with the NetCDF files read directly by xarray (stored values, fills kept) and
with a NumPy binning of them; every status code is checked with its HTTP status."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import httpx
import isodate
import netCDF4
import numpy as np
import pytest
import xarray as xr
from hapiclient import hapi as hapiclient

from tests.conftest import Server, start_server
from tests.formats.test_hapi import check_info

GOES = "real/timeseries/goes-xrs/"
G13 = GOES + "sci_gxrs-l2-irrad_g13_d20170901_truncated"  # 601 samples 2 s apart, ints too
G16 = GOES + "sci_xrsf-l2-avg1m_g16_d20210101_truncated"  # a (time, quad_diode) vector
G17 = GOES + "sci_xrsf-l2-flx1s_g17_d20201016_truncated"  # 1 s, two vectors
FILLS = "fills"  # generated below: fill values, NaN, a vector, an int16
SECOND = 10**9
ABOUT_KEYS = {"HAPI", "status", "id", "title", "contact", "description", "contactID"}
ABOUT_KEYS |= {"resourceID", "citation", "serverCitation", "note", "warning", "dataTest"}


# -- the sources, read directly ----------------------------------------------------------
def write_fills(path: Path) -> None:
    """A series with the awkward features: fills in a float32, an int16 and a vector,
    NaN where a variable has no fill value, half-second steps from an odd start."""
    n = 2000
    rng = np.random.default_rng(7)
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", n)
        nc.createDimension("axis", 3)
        t = nc.createVariable("time", "i8", ("time",))
        t.units = "milliseconds since 2021-03-04 05:06:07.250"
        t[:] = np.arange(n) * 500
        flux = nc.createVariable("flux", "f4", ("time",), fill_value=np.float32(-1e31))
        flux.units = "W m-2"
        values = rng.standard_normal(n).astype(np.float32) * np.float32(1e-6)
        values[::13] = np.float32(-1e31)
        flux[:] = np.ma.masked_equal(values, np.float32(-1e31))
        counts = nc.createVariable("counts", "i2", ("time",), fill_value=np.int16(-32768))
        raw = rng.integers(-3000, 3000, n).astype(np.int16)
        raw[::17] = -32768
        counts[:] = np.ma.masked_equal(raw, -32768)
        vec = nc.createVariable("vec", "f8", ("time", "axis"), fill_value=-999.0)
        vec.units = "nT"
        field = rng.standard_normal((n, 3))
        field[::19, 1] = -999.0
        vec[:] = np.ma.masked_equal(field, -999.0)
        bare = nc.createVariable("bare", "f8", ("time",), fill_value=False)
        bare.long_name = "no fill value: NaN where missing"
        loose = rng.standard_normal(n)
        loose[::23] = np.nan
        bare[:] = loose


def source(path: Path) -> xr.Dataset:
    """The file as it stores its values (fill numbers kept), with decoded times."""
    return xr.open_dataset(path, mask_and_scale=False)


def window(ds: xr.Dataset, start: str, stop: str) -> xr.Dataset:
    times = ds.time.values
    keep = (times >= np.datetime64(start.rstrip("Z"))) & (times < np.datetime64(stop.rstrip("Z")))
    return ds.isel(time=np.flatnonzero(keep))


def hapi_times(ds: xr.Dataset, unit: str = "ms") -> list[bytes]:
    return [f"{t}Z".encode() for t in np.datetime_as_string(ds.time.values, unit=unit)]


def series_names(ds: xr.Dataset) -> list[str]:
    return [str(n) for n, v in ds.data_vars.items() if v.dims and v.dims[0] == "time"]


# -- servers -----------------------------------------------------------------------------
FAILING = r"""
import sys
import time
import numpy as np
import pyarrow as pa

args = dict(a.lstrip("-").split("=", 1) for a in sys.argv[1:])
start = np.datetime64(args["start"].rstrip("Z"), "m")
schema = pa.schema([("time", pa.timestamp("s")), ("x", pa.float64())])
with pa.ipc.new_stream(sys.stdout.buffer, schema) as out:
    for day in range(int(args["after"])):
        t = start + np.arange(1440) + day * 1440
        x = np.arange(1440, dtype=float) + day
        out.write_batch(pa.record_batch([pa.array(t.astype("datetime64[s]")), pa.array(x)], schema))
        sys.stdout.flush()
        time.sleep(0.5)  # alive when the first day is read: the response has started
sys.stderr.write("the instrument archive went away\n")
sys.exit(2)
"""


def reader_config(folder: Path) -> Path:
    """Reader programs declared in an outcrop.toml: the example `wave` readers, and one
    that fails after writing `after` days (0: before writing anything)."""
    examples = Path(__file__).resolve().parents[2] / "examples" / "readers"
    for name in ("wave.py", "wave.reader.toml", "wave_station.reader.toml"):
        (folder / name).write_bytes((examples / name).read_bytes())
    (folder / "fail.py").write_text(FAILING)
    failing = [
        f"""
[[datasets]]
id = "{name}"
source = "{folder}"

[datasets.reader]
command = ["python", "fail.py", "--start={{start}}", "--after={after}"]
format = "arrow"
start = "2020-01-01T00:00:00Z"
stop = "2021-01-01T00:00:00Z"
cadence = "PT1M"
parameters = [{{ name = "x", units = "m" }}]
"""
        for name, after in (("fails_later", 2), ("fails_at_once", 0))
    ]
    waves = [
        f'[[datasets]]\nid = "{name}"\ndriver = "program"\nsource = "{folder / name}.reader.toml"\n'
        for name in ("wave", "wave_station")
    ]
    config = folder / "outcrop.toml"
    config.write_text("\n".join(waves + failing))
    return config


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    """A server over a generated series with fills, and reader programs."""
    root = tmp_path_factory.mktemp("hapi-archive")
    write_fills(root / f"{FILLS}.nc")
    config = reader_config(tmp_path_factory.mktemp("hapi-readers"))
    srv = start_server([str(root), "--config", str(config)], tmp_path_factory.mktemp("state"))
    yield srv, root
    srv.stop()


def get(srv: Server, endpoint: str, **params: str) -> httpx.Response:
    path = f"/hapi/{endpoint}" if endpoint else "/hapi"
    return httpx.get(srv.url + path, params=params, timeout=60)


def get_ok(srv: Server, endpoint: str, **params: str) -> httpx.Response:
    response = get(srv, endpoint, **params)
    assert response.status_code == 200, response.text
    return response


def info_of(srv: Server, ds_id: str, **params: str) -> dict[str, Any]:
    doc: dict[str, Any] = get_ok(srv, "info", dataset=ds_id, **params).json()
    return doc


def client(srv: Server, ds_id: str, parameters: str, start: str, stop: str, **opts: Any) -> Any:
    """hapiclient's `hapi()`: fresh cache folder, nothing reused."""
    options = {"logging": False, "usecache": False, "cachedir": tempfile.mkdtemp(), **opts}
    data, _ = hapiclient(f"{srv.url}/hapi", ds_id, parameters, start, stop, **options)
    return data


# -- metadata endpoints ------------------------------------------------------------------
def test_catalog_lists_the_time_series(server: Server) -> None:
    response = get_ok(server, "catalog")
    assert response.headers["content-type"].startswith("application/json")
    doc = response.json()
    assert doc["HAPI"] == "3.3" and doc["status"] == {"code": 1200, "message": "OK"}
    ids = [row["id"] for row in doc["catalog"]]
    assert {G13, G16, G17, "real/timeseries/SOI_Darwin"} <= set(ids)
    assert not any(i.startswith("real/grids/") for i in ids)  # grids are not time series
    assert all(set(row) <= {"id", "title"} for row in doc["catalog"])


def test_catalog_depth_all_holds_each_info(server: Server) -> None:
    doc = get_ok(server, "catalog", depth="all").json()
    for each in doc["catalog"]:  # every time series of the archive, awkward ones too
        check_info({"HAPI": doc["HAPI"], "status": doc["status"], **each["info"]})
    row = next(r for r in doc["catalog"] if r["id"] == G16)
    full = info_of(server, G16)
    assert row["info"] == {k: v for k, v in full.items() if k not in ("HAPI", "status")}


def test_about_and_capabilities(server: Server) -> None:
    about = get_ok(server, "about").json()
    assert {"HAPI", "status", "id", "title", "contact"} <= set(about)
    assert set(about) <= ABOUT_KEYS  # the schema allows no others (but x_ ones)
    caps = get_ok(server, "capabilities").json()
    assert set(caps) <= {"HAPI", "status", "outputFormats", "catalogDepthOptions"}
    assert caps["outputFormats"] == ["csv", "binary", "json"]
    assert caps["catalogDepthOptions"] == ["dataset", "all"]


def test_landing_page_lists_the_datasets(server: Server) -> None:
    response = get_ok(server, "")
    assert response.headers["content-type"].startswith("text/html")
    assert G13 in response.text


@pytest.mark.parametrize("ds_id", [G13, G16, G17])
def test_info_describes_every_variable_of_the_file(
    server: Server, archive: Path, ds_id: str
) -> None:
    doc = info_of(server, ds_id)
    check_info(doc)
    ds = source(archive / f"{ds_id}.nc")
    names = series_names(ds)
    assert [p["name"] for p in doc["parameters"]] == ["Time", *names]
    for p in doc["parameters"][1:]:
        var = ds[p["name"]]
        assert p.get("size", []) == list(var.shape[1:])
        assert p["type"] == ("integer" if var.dtype.kind in "iu" else "double")
        assert float(p["fill"]) == float(var.attrs["_FillValue"])
    first, last = ds.time.values[[0, -1]]
    assert doc["startDate"] == f"{np.datetime_as_string(first, unit='ms')}Z"
    assert np.datetime64(doc["stopDate"].rstrip("Z")) > last


def test_info_subset_and_hapi2_names(server: Server) -> None:
    full = info_of(server, G13)
    one = get_ok(server, "info", id=G13, parameters="b_flux").json()
    assert [p["name"] for p in one["parameters"]] == ["Time", "b_flux"]
    assert one["parameters"][1] == full["parameters"][7]
    assert {k: v for k, v in one.items() if k != "parameters"} == {
        k: v for k, v in full.items() if k != "parameters"
    }


# -- data read by hapiclient, compared with the file -------------------------------------
def assert_same_as_file(data: Any, ds: xr.Dataset, names: list[str], unit: str = "ms") -> None:
    assert data["Time"].tolist() == hapi_times(ds, unit)
    for name in names:
        expected = ds[name].values.astype(np.float64)
        assert np.array_equal(data[name].astype(np.float64), expected, equal_nan=True), name


CHUNKING = [
    pytest.param({}, id="whole"),
    pytest.param({"n_chunks": 4}, id="4-chunks"),
    pytest.param({"n_chunks": 5, "parallel": True}, id="parallel"),
    pytest.param({"dt_chunk": "PT1H", "parallel": True}, id="hourly"),
]


@pytest.mark.parametrize("fmt", ["csv", "binary"])
@pytest.mark.parametrize("chunking", CHUNKING)
@pytest.mark.parametrize("ds_id", [G13, G17])
def test_hapiclient_reads_the_file_exactly(
    server: Server, archive: Path, ds_id: str, fmt: str, chunking: dict[str, Any]
) -> None:
    info = info_of(server, ds_id)
    start, stop = info["startDate"], info["stopDate"]
    data = client(server, ds_id, "", start, stop, format=fmt, **chunking)
    ds = source(archive / f"{ds_id}.nc")
    assert_same_as_file(data, ds, series_names(ds))


@pytest.mark.parametrize("fmt", ["csv", "binary"])
def test_hapiclient_reads_fills_nan_and_vectors(other: tuple[Server, Path], fmt: str) -> None:
    srv, root = other
    start, stop = "2021-03-04T05:08:00Z", "2021-03-04T05:20:00.5Z"
    data = client(srv, FILLS, "", start, stop, format=fmt, n_chunks=3)
    ds = window(source(root / f"{FILLS}.nc"), start, stop)
    assert len(ds.time) == 1441
    assert_same_as_file(data, ds, ["flux", "counts", "vec", "bare"])
    assert (data["flux"] == np.float32(-1e31)).sum() > 0 and np.isnan(data["bare"]).sum() > 0
    info = info_of(srv, FILLS)
    fills = {p["name"]: p["fill"] for p in info["parameters"]}
    assert float(fills["flux"]) == float(np.float32(-1e31))
    assert (fills["counts"], fills["vec"], fills["bare"]) == ("-32768", "-999.0", "NaN")


def test_hapiclient_subset_keeps_the_requested_columns(server: Server, archive: Path) -> None:
    start, stop = "2017-09-01T00:05:00Z", "2017-09-01T00:10:00Z"
    data = client(server, G13, "a_flux,b_counts", start, stop, format="binary")
    assert data.dtype.names == ("Time", "a_flux", "b_counts")
    ds = window(source(archive / f"{G13}.nc"), start, stop)
    assert_same_as_file(data, ds, ["a_flux", "b_counts"])


def test_time_only(server: Server, archive: Path) -> None:
    start, stop = "2017-09-01T00:05:00Z", "2017-09-01T00:10:00Z"
    body = get_ok(server, "data", dataset=G13, parameters="Time", start=start, stop=stop).content
    ds = window(source(archive / f"{G13}.nc"), start, stop)
    assert body.split(b"\n") == [*hapi_times(ds), b""]


# -- formats, headers and encodings ------------------------------------------------------
RANGE = {"start": "2020-10-16T00:00:10Z", "stop": "2020-10-16T00:00:40Z"}


def test_csv_binary_and_json_hold_the_same_records(server: Server, archive: Path) -> None:
    ds = window(source(archive / f"{G17}.nc"), RANGE["start"], RANGE["stop"])
    names = series_names(ds)
    text = get_ok(server, "data", dataset=G17, **RANGE).text
    rows = list(csv.reader(io.StringIO(text)))
    doc = get_ok(server, "data", dataset=G17, format="json", **RANGE).json()
    assert doc["format"] == "json" and len(doc["data"]) == len(rows) == len(ds.time)
    vector = ds["corrected_current_xrsb2"].values.astype(np.float64)
    before = names[: names.index("corrected_current_xrsb2")]
    index = 1 + sum(int(np.prod(ds[n].shape[1:])) for n in before)  # columns before it
    assert np.array_equal(np.array([r[index : index + 4] for r in rows], float), vector)
    where = 1 + names.index("corrected_current_xrsb2")  # JSON keeps one value per parameter
    assert np.array_equal(np.array([r[where] for r in doc["data"]], float), vector)
    assert [r[0].encode() for r in doc["data"]] == hapi_times(ds)


@pytest.mark.parametrize("fmt", ["csv", "binary"])
def test_include_header_is_the_info_with_the_format(server: Server, fmt: str) -> None:
    body = get_ok(server, "data", dataset=G17, format=fmt, include="header", **RANGE).content
    plain = get_ok(server, "data", dataset=G17, format=fmt, **RANGE).content
    lines = body.split(b"\n")
    count = next(i for i, line in enumerate(lines) if not line.startswith(b"#"))
    header = json.loads(b"".join(line[1:] for line in lines[:count]))
    assert header.pop("format") == fmt
    assert header == info_of(server, G17)
    assert b"\n".join(lines[count:]) == plain


def test_gzip_when_asked_for_text(server: Server) -> None:
    params = {"dataset": G13, "start": "2017-09-01", "stop": "2017-09-02"}
    plain = httpx.get(
        f"{server.url}/hapi/data", params=params, headers={"Accept-Encoding": "identity"}
    )
    assert "content-encoding" not in plain.headers
    with httpx.stream(
        "GET", f"{server.url}/hapi/data", params=params, headers={"Accept-Encoding": "gzip"}
    ) as packed:
        assert packed.headers["content-encoding"] == "gzip"
        raw = b"".join(packed.iter_raw())
    assert gzip.decompress(raw) == plain.content and len(raw) < len(plain.content) / 2
    binary = httpx.get(
        f"{server.url}/hapi/data",
        params={**params, "format": "binary"},
        headers={"Accept-Encoding": "gzip"},
    )
    assert "content-encoding" not in binary.headers  # doubles barely compress


def test_cors_lets_any_origin_read(server: Server) -> None:
    origin = {"Origin": "http://example.org"}
    for endpoint in (
        "catalog",
        "info?dataset=" + G13,
        "data?dataset=" + G13 + "&start=2017&stop=2018",
    ):
        response = httpx.get(f"{server.url}/hapi/{endpoint}", headers=origin)
        assert response.headers["access-control-allow-origin"] == "*", endpoint
    preflight = httpx.options(
        f"{server.url}/hapi/data", headers={**origin, "Access-Control-Request-Method": "GET"}
    )
    assert (
        preflight.status_code == 200 and "GET" in preflight.headers["access-control-allow-methods"]
    )


def test_head_gives_the_status_without_a_body(server: Server) -> None:
    good = httpx.head(
        f"{server.url}/hapi/data", params={"dataset": G13, "start": "2017", "stop": "2018"}
    )
    assert good.status_code == 200 and good.content == b""
    assert good.headers["content-type"].startswith("text/csv")
    bad = httpx.head(
        f"{server.url}/hapi/data", params={"dataset": "nope", "start": "2017", "stop": "2018"}
    )
    assert bad.status_code == 404


# -- what the HAPI verifier checks -------------------------------------------------------
def test_equivalent_requests_give_the_same_bytes(server: Server) -> None:
    """The verifier's dataAll1/dataAll2: HAPI 2 names, day-of-year times, `parameters=`."""
    first = get_ok(
        server,
        "data",
        id=G13,
        **{"time.min": "2017-09-01T00:02:00Z", "time.max": "2017-09-01T00:09:00Z"},
    )
    same = [
        get_ok(server, "data", dataset=G13, start="2017-244T00:02:00Z", stop="2017-244T00:09Z"),
        get_ok(
            server, "data", dataset=G13, start="2017-09-01T00:02", stop="2017-09-01T00:09:00.000"
        ),
        get_ok(
            server,
            "data",
            dataset=G13,
            parameters="",
            start="2017-09-01T00:02Z",
            stop="2017-09-01T00:09Z",
        ),
    ]
    assert first.content and all(r.content == first.content for r in same)


def test_one_parameter_matches_its_columns_in_all(server: Server) -> None:
    all_rows = list(
        csv.reader(io.StringIO(get_ok(server, "data", dataset=G16, start="2021", stop="2022").text))
    )
    info = info_of(server, G16)
    column = 1
    for p in info["parameters"][1:]:
        width = int(np.prod(p.get("size", [1])))
        one = get_ok(
            server, "data", dataset=G16, parameters=p["name"], start="2021", stop="2022"
        ).text
        rows = list(csv.reader(io.StringIO(one)))
        assert [r[1:] for r in rows] == [r[column : column + width] for r in all_rows], p["name"]
        assert [r[0] for r in rows] == [r[0] for r in all_rows]
        column += width
    assert column == len(all_rows[0])


def test_records_stay_within_start_and_stop(server: Server, archive: Path) -> None:
    ds = source(archive / f"{G13}.nc")
    t = ds.time.values
    start = np.datetime_as_string(t[10], unit="ns") + "Z"  # exactly a sample: included
    stop = np.datetime_as_string(t[20], unit="ns") + "Z"  # exactly a sample: excluded
    body = get_ok(server, "data", dataset=G13, parameters="a_flux", start=start, stop=stop).text
    assert [line.split(",")[0].encode() for line in body.splitlines()] == hapi_times(
        ds.isel(time=slice(10, 20))
    )


def test_a_range_without_records_is_empty_and_says_1201(server: Server, archive: Path) -> None:
    t = source(archive / f"{G13}.nc").time.values
    gap = {"start": np.datetime_as_string(t[3] + 1000, unit="ns") + "Z",
           "stop": np.datetime_as_string(t[4] - 1000, unit="ns") + "Z"}  # fmt: skip
    assert get_ok(server, "data", dataset=G13, **gap).content == b""
    body = get_ok(server, "data", dataset=G13, include="header", **gap).text
    header = json.loads("".join(line[1:] for line in body.splitlines()))
    assert header["status"]["code"] == 1201
    doc = get_ok(server, "data", dataset=G13, format="json", **gap).json()
    assert doc["status"]["code"] == 1201 and doc["data"] == []


# -- reduced data (x_resolution, x_statistic) --------------------------------------------
def reference_bins(
    t: np.ndarray, values: np.ndarray, fill: float, width: int, asked: tuple[int, int],
    valid: tuple[int, int],
) -> dict[str, Any]:  # fmt: skip
    """NumPy binning of samples at `t` (ns): bins of `width` ns aligned to 1970 that
    overlap the asked range within the dataset's `valid` one and whose centre lies in the
    asked range; fills and NaN are not samples; an empty bin holds the fill value."""
    start, stop = asked
    first = max(start, valid[0]) // width
    last = (min(stop, valid[1]) - 1) // width
    keys = np.arange(first, last + 1)
    keys = keys[(keys * width + width // 2 >= start) & (keys * width + width // 2 < stop)]
    out: dict[str, list[float]] = {"min": [], "max": [], "mean": [], "count": []}
    for k in keys:
        inside = values[(t >= k * width) & (t < (k + 1) * width)]
        good = inside[(inside != fill) & ~np.isnan(inside)]
        out["count"].append(len(good))
        for stat, f in (("min", np.min), ("max", np.max), ("mean", np.mean)):
            out[stat].append(float(f(good)) if len(good) else fill)
    return {"time": keys * width + width // 2, **{k: np.array(v) for k, v in out.items()}}


def ns_of(text: str) -> int:
    return int(np.datetime64(text.rstrip("Z"), "ns").astype(np.int64))


def reduced_records(body: bytes) -> tuple[dict[str, Any], np.ndarray]:
    """The header and the records of a binary response with `include=header`."""
    lines = body.split(b"\n")
    count = next(i for i, line in enumerate(lines) if not line.startswith(b"#"))
    header = json.loads(b"".join(line[1:] for line in lines[:count]))
    names = [p["name"] for p in header["parameters"]]
    types = {"isotime": "S24", "integer": "<i4", "double": "<f8"}
    dtype = [(p["name"], types[p["type"]]) for p in header["parameters"]]
    assert names[0] == "Time"
    return header, np.frombuffer(b"\n".join(lines[count:]), dtype)


def assert_bins(records: np.ndarray, name: str, ref: dict[str, Any]) -> None:
    times = np.datetime_as_string(ref["time"].astype("datetime64[ns]"), unit="ms")
    assert records["Time"].tolist() == [f"{t}Z".encode() for t in times]
    assert np.array_equal(records[f"{name}_count"], ref["count"])
    assert np.array_equal(records[f"{name}_min"], ref["min"])
    assert np.array_equal(records[f"{name}_max"], ref["max"])
    np.testing.assert_allclose(records[f"{name}_mean"], ref["mean"], rtol=1e-12)


@pytest.mark.parametrize("width", ["60", "PT2M", "PT45S", "47"])
def test_reduced_data_equals_a_numpy_binning(server: Server, archive: Path, width: str) -> None:
    start, stop = "2017-09-01T00:00:00Z", "2017-09-01T00:21Z"
    params = {"dataset": G13, "parameters": "a_flux,b_counts", "start": start, "stop": stop}
    params |= {"x_resolution": width, "x_statistic": "min,max,mean,count"}
    body = get_ok(server, "data", include="header", format="binary", **params).content
    header, records = reduced_records(body)
    answered = int(isodate.parse_duration(header["x_width"]).total_seconds() * SECOND)
    asked = isodate.parse_duration(width).total_seconds() if width[0] == "P" else float(width)
    assert answered <= asked * SECOND and header["timeStampLocation"] == "center"
    # The info a client reads first already says the width the bins will have.
    info = get_ok(server, "info", dataset=G13, x_resolution=width).json()
    assert info["cadence"] == header["cadence"] == header["x_width"]
    stats = ("min", "max", "mean", "count")
    names = [f"{n}_{s}" for n in ("a_flux", "b_counts") for s in stats]
    assert list(records.dtype.names) == ["Time", *names]
    ds = source(archive / f"{G13}.nc")
    t = ds.time.values.astype("datetime64[ns]").astype(np.int64)
    for name in ("a_flux", "b_counts"):
        fill = float(ds[name].attrs["_FillValue"])
        values = ds[name].values.astype(np.float64)
        asked_range, valid = (ns_of(start), ns_of(stop)), (int(t[0]), int(t[-1]) + 1)
        assert_bins(records, name, reference_bins(t, values, fill, answered, asked_range, valid))


def test_reduced_data_keeps_empty_bins_and_fills(other: tuple[Server, Path]) -> None:
    """The example reader leaves a minute without samples every hour and fills some:
    an empty bin has count 0 and the fill value; fills are no samples."""
    srv, _ = other
    start, stop = "2020-01-01T00:00:00Z", "2020-01-01T02:00:00Z"
    params = {"dataset": "wave", "parameters": "bx,bz", "start": start, "stop": stop}
    params |= {"x_resolution": "PT1M", "x_statistic": "min,max,mean,count"}
    header, records = reduced_records(
        get_ok(srv, "data", include="header", format="binary", **params).content
    )
    assert header["x_width"] == "PT1M" and len(records) == 120
    samples = wave(start, stop)
    t = np.array([ns_of(x.decode()) for x in samples["Time"]])
    for name in ("bx", "bz"):
        ref = reference_bins(
            t,
            samples[name],
            -1e31,
            60 * SECOND,
            (ns_of(start), ns_of(stop)),
            (ns_of("2000"), ns_of("2040")),
        )
        assert_bins(records, name, ref)
        assert (records[f"{name}_count"] == 0).sum() == 2  # 00:10 and 01:10
        assert (records[f"{name}_mean"][records[f"{name}_count"] == 0] == -1e31).all()


def test_reduced_info_describes_the_reduced_data(server: Server) -> None:
    params = {"parameters": "a_flux", "x_resolution": "PT1M", "x_statistic": "max,count"}
    info = info_of(server, G13, **params)
    check_info(info)
    assert [(p["name"], p["type"]) for p in info["parameters"]] == [
        ("Time", "isotime"), ("a_flux_max", "double"), ("a_flux_count", "integer")
    ]  # fmt: skip
    body = get_ok(
        server,
        "data",
        dataset=G13,
        start="2017-09-01",
        stop="2017-09-02",
        include="header",
        **params,
    ).text
    header = json.loads("".join(line[1:] for line in body.splitlines() if line.startswith("#")))
    assert header["parameters"] == info["parameters"]


def test_hapiclient_reads_reduced_data_through_the_info(server: Server) -> None:
    """hapiclient asks /info before /data: with the extension in the dataset argument it
    reads the reduced columns the info describes."""
    start, stop = "2017-09-01T00:00:00Z", "2017-09-01T00:21:00Z"
    reduced = client(
        server, G13 + "&x_resolution=60&x_statistic=mean,count", "", start, stop, format="binary"
    )
    text = get_ok(
        server,
        "data",
        dataset=G13,
        start=start,
        stop=stop,
        x_resolution="60",
        x_statistic="mean,count",
    ).text
    rows = list(csv.reader(io.StringIO(text)))
    assert reduced["Time"].tolist() == [r[0].encode() for r in rows]
    assert reduced["a_flux_mean"].tolist() == [float(r[5]) for r in rows]
    assert reduced["a_flux_count"].tolist() == [int(r[6]) for r in rows]


# -- every status code -------------------------------------------------------------------
ERRORS = [
    ("data", {"start": "2017", "stop": "2018"}, 1400, 400),
    ("data", {"dataset": G13, "start": "2017", "stop": "2018", "avg": "5s"}, 1401, 400),
    ("data", {"dataset": G13, "start": "2017", "stop": "2018", "x_nope": "1"}, 1401, 400),
    ("info", {"dataset": G13, "start": "2017"}, 1401, 400),
    ("catalog", {"dataset": G13}, 1401, 400),
    ("data", {"dataset": G13, "start": "2017-02-30", "stop": "2018"}, 1402, 400),
    ("data", {"dataset": G13, "stop": "2018"}, 1402, 400),
    ("data", {"dataset": G13, "start": "2017", "stop": "2018-001T25"}, 1403, 400),
    ("data", {"dataset": G13, "start": "2018", "stop": "2017"}, 1404, 400),
    ("data", {"dataset": G13, "start": "2017", "stop": "2017"}, 1404, 400),
    ("data", {"dataset": G13, "start": "2018", "stop": "2019"}, 1405, 400),
    ("data", {"dataset": "no/such", "start": "2017", "stop": "2018"}, 1406, 404),
    ("info", {"dataset": "no/such"}, 1406, 404),
    ("info", {"id": "real/grids/ostia_monthly"}, 1406, 404),  # a grid, not a time series
    ("info", {"dataset": G13, "parameters": "a_flux,nope"}, 1407, 404),
    (
        "data",
        {"dataset": G13, "start": "2017", "stop": "2018", "x_resolution": "0.000001"},
        1408,
        400,
    ),
    ("data", {"dataset": G13, "start": "2017", "stop": "2018", "format": "xml"}, 1409, 400),
    ("data", {"dataset": G13, "start": "2017", "stop": "2018", "include": "yes"}, 1410, 400),
    (
        "data",
        {"dataset": G13, "start": "2017", "stop": "2018", "parameters": "b_flux,a_flux"},
        1411,
        400,
    ),
    ("info", {"dataset": G13, "parameters": "a_flux,a_flux"}, 1411, 400),
    ("info", {"dataset": G13, "resolve_references": "perhaps"}, 1412, 400),
    ("catalog", {"depth": "deep"}, 1413, 400),
    ("data", {"dataset": G13, "start": "2017", "stop": "2018", "x_resolution": "soon"}, 1400, 400),
    ("data", {"dataset": G13, "start": "2017", "stop": "2018", "x_statistic": "max"}, 1400, 400),
]


@pytest.mark.parametrize(("endpoint", "params", "code", "http"), ERRORS)
def test_each_error_has_its_code_and_http_status(
    server: Server, endpoint: str, params: dict[str, str], code: int, http: int
) -> None:
    response = get(server, endpoint, **params)
    assert response.status_code == http
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"HAPI", "status"} and body["HAPI"] == "3.3"
    assert body["status"]["code"] == code
    assert body["status"]["message"].startswith(f"HAPI error {code}:")


def test_a_corrupt_file_is_1500(tmp_path_factory: pytest.TempPathFactory, archive: Path) -> None:
    """A stored chunk damaged after the catalog scan (size and time kept, so the catalog
    still trusts the file): the read fails before the status is sent."""
    root = tmp_path_factory.mktemp("broken")
    path = root / "g.nc"
    path.write_bytes((archive / f"{G17}.nc").read_bytes())
    with h5py.File(path) as f:
        chunk = f["xrsb_flux"].id.get_chunk_info(0)
    srv = start_server([str(root)], tmp_path_factory.mktemp("broken-state"))
    try:
        stat = path.stat()
        with path.open("r+b") as out:
            out.seek(chunk.byte_offset)
            out.write(bytes(range(256)) * (chunk.size // 256) + bytes(chunk.size % 256))
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        response = get(srv, "data", dataset="g", parameters="xrsb_flux", start="2020", stop="2021")
        assert response.status_code == 500, response.text
        assert response.json()["status"]["code"] == 1500
    finally:
        srv.stop()


# -- paths -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "target"),
    [
        ("/hapi/", "/hapi"),
        ("/hapi/catalog/", "/hapi/catalog"),
        (
            f"/hapi/info/?dataset={G13}&parameters=a_flux",
            f"/hapi/info?dataset={G13}&parameters=a_flux",
        ),
    ],
)
def test_a_trailing_slash_is_redirected_for_good(server: Server, path: str, target: str) -> None:
    response = httpx.get(server.url + path)
    assert response.status_code == 301
    assert response.headers["location"] == server.url + target


def test_an_unknown_endpoint_is_1400(server: Server) -> None:
    response = httpx.get(server.url + "/hapi/x_custom")
    assert response.status_code == 400 and response.json()["status"]["code"] == 1400


# -- reader programs ---------------------------------------------------------------------
def wave(start: str, stop: str, station: int = 0, gain: int = 1) -> dict[str, np.ndarray]:
    """The example reader's samples, from the formulas in its docstring."""
    first = int(np.datetime64(start.rstrip("Z"), "s").astype(np.int64))
    last = int(np.datetime64(stop.rstrip("Z"), "s").astype(np.int64))
    t = np.arange(first, last)
    t = t[(t % 3600 < 600) | (t % 3600 >= 660)]
    u = t + 1000 * station
    out = {
        "bx": (np.abs(u % 600 - 300) - 150) / 4.0,
        "by": (np.abs(u % 86400 - 43200) - 21600) / 512.0,
        "bz": (u * 7919 % 10007) / 64.0 - 78.1875,
    }
    for name, every in (("bx", 97), ("by", 89), ("bz", 1009)):
        out[name] = np.where(t % every == 0, -1e31, out[name] * gain)
    times = t.astype("datetime64[s]")
    return {"Time": np.array([f"{x}.000Z".encode() for x in times.astype(str)]), **out}


@pytest.mark.parametrize("fmt", ["csv", "binary"])
@pytest.mark.parametrize("chunking", CHUNKING)
def test_hapiclient_reads_a_reader_program(
    other: tuple[Server, Path], fmt: str, chunking: dict[str, Any]
) -> None:
    srv, _ = other
    start, stop = "2020-01-01T00:00:00Z", "2020-01-01T02:30:00Z"
    data = client(srv, "wave", "", start, stop, format=fmt, **chunking)
    expected = wave(start, stop)
    assert data["Time"].tolist() == expected["Time"].tolist()
    for name in ("bx", "by", "bz"):
        assert np.array_equal(data[name], expected[name]), name


def test_a_reader_takes_its_declared_parameters_as_x_names(other: tuple[Server, Path]) -> None:
    srv, _ = other
    params = {"start": "2020-01-01T00:09:00Z", "stop": "2020-01-01T00:12:00Z"}
    body = get_ok(
        srv,
        "data",
        dataset="wave_station",
        x_station="tromso",
        x_gain="3",
        format="binary",
        **params,
    )
    records = np.frombuffer(body.content, [("Time", "S24"), ("b", "<f8", (3,))])
    expected = wave(params["start"], params["stop"], station=1, gain=3)
    assert records["Time"].tolist() == expected["Time"].tolist()
    assert np.array_equal(records["b"], np.stack([expected[n] for n in ("bx", "by", "bz")], axis=1))
    bad = get(srv, "data", dataset="wave_station", x_station="atlantis", **params)
    assert bad.status_code == 400 and bad.json()["status"]["code"] == 1400
    assert "station" in bad.json()["status"]["message"]
    plain = get(srv, "data", dataset="wave_station", station="tromso", **params)
    assert plain.status_code == 400 and plain.json()["status"]["code"] == 1401


def test_a_reader_failing_before_any_output_is_1501(other: tuple[Server, Path]) -> None:
    srv, _ = other
    response = get(srv, "data", dataset="fails_at_once", start="2020-02-01", stop="2020-02-05")
    assert response.status_code == 500
    status = response.json()["status"]
    assert status["code"] == 1501 and "instrument archive went away" in status["message"]


@pytest.mark.parametrize("fmt", ["csv", "binary"])
def test_a_failure_mid_stream_cuts_the_connection(other: tuple[Server, Path], fmt: str) -> None:
    """HAPI 3.3 §3.7.5: the stream is aborted, never ended cleanly short."""
    srv, _ = other
    params = {"dataset": "fails_later", "start": "2020-02-01", "stop": "2020-02-05", "format": fmt}
    received = bytearray()
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("GET", f"{srv.url}/hapi/data", params=params, timeout=60) as response,
    ):
        assert response.status_code == 200
        for piece in response.iter_raw():
            received.extend(piece)
    whole_days = 2 * 1440 * (24 + 8) if fmt == "binary" else None
    assert whole_days is None or len(received) <= whole_days
    assert received  # the first day was sent before the failure
