"""das2 server requests through a real server, the streams read with the test-side das2
reader (tests/formats/test_das2.py) and compared with the NetCDF files read directly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import xarray as xr

from tests.conftest import Server
from tests.formats.test_das2 import Stream, read_stream

GOES = "real/timeseries/goes-xrs/"
G15 = GOES + "sci_gxrs-l2-irrad_g15_d20131028_truncated"  # 601 samples, 2 s apart
G16 = GOES + "sci_xrsf-l2-avg1m_g16_d20210101_truncated"  # a (time, quad_diode) vector


def local(archive: Path, ds_id: str) -> xr.Dataset:
    """The file as it stores its values (fill numbers kept), with decoded times."""
    return xr.open_dataset(archive / f"{ds_id}.nc", mask_and_scale=False)


def get(srv: Server, **params: str) -> httpx.Response:
    return httpx.get(f"{srv.url}/das2/server", params=params, timeout=60)


def stream_of(srv: Server, **params: str) -> Stream:
    response = get(srv, **params)
    assert response.status_code == 200, response.text
    return read_stream(response.content)


def window(ds: xr.Dataset, start: str, stop: str) -> xr.Dataset:
    times = ds.time.values
    keep = (times >= np.datetime64(start)) & (times < np.datetime64(stop))
    return ds.isel(time=np.flatnonzero(keep))


def test_list_gives_each_time_series_with_its_title(server: Server, archive: Path) -> None:
    response = get(server, server="list")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    lines = dict(line.split("|", 1) for line in response.text.splitlines())
    with local(archive, G15) as ds:
        assert lines[G15] == " ".join(ds.attrs["title"].split())
    assert G16 in lines
    assert not any(key.startswith("cmip6/") for key in lines)  # grids are not time series


def test_dsdf_gives_the_valid_range_and_the_params(server: Server, archive: Path) -> None:
    response = get(server, server="dsdf", dataset=G15)
    assert response.status_code == 200
    props = read_stream(response.content).props
    with local(archive, G15) as ds:
        first = np.datetime_as_string(ds.time.values[0], unit="ms")
        numeric = [name for name, var in ds.data_vars.items() if var.dims == ("time",)]
    assert props["validRange"].startswith(f"{first} to ")
    assert props["name"] == G15 and props["das2Stream"] == "1"
    words = [v.split(" | ")[0] for k, v in sorted(props.items()) if k.startswith("param_")]
    assert words == sorted(numeric, key=numeric.index)


def test_server_id_names_the_server(server: Server) -> None:
    response = get(server, server="id")
    assert response.status_code == 200 and "Outcrop" in response.text


@pytest.mark.parametrize("ascii", ["1", "0"])
def test_a_full_resolution_stream_equals_the_file(
    server: Server, archive: Path, ascii: str
) -> None:
    start, stop = "2013-10-28T00:02", "2013-10-28T00:12:30"
    stream = stream_of(
        server, server="dataset", dataset=G15, start_time=start, end_time=stop, ascii=ascii
    )
    with local(archive, G15) as ds:
        want = window(ds, start, stop)
        assert len(want.time) > 250
        times = stream.column("x")
        if ascii == "1":  # text times are exact to the nanosecond
            np.testing.assert_array_equal(times, want.time.values)
        else:  # binary times are double microseconds since 2000
            error = np.abs((times - want.time.values).astype(np.int64))
            assert error.max() <= 1000
        for name, var in want.data_vars.items():
            if var.dims == ("time",):
                np.testing.assert_array_equal(stream.column(str(name)), var.values.astype(float))
    planes = {p.name: p for p in stream.packets[0]}
    assert planes["a_flux"].units == "W/m2"
    assert float(planes["a_flux"].props["double:yFill"]) == -99999.0


def test_a_vector_parameter_is_a_yscan_of_its_components(server: Server, archive: Path) -> None:
    stream = stream_of(
        server,
        server="dataset",
        dataset=G16,
        start_time="2021-01-01",
        end_time="2021-01-02",
        params="corrected_current_xrsb2 xrsa_flux",
    )
    assert [p.name for p in stream.packets[0][1:]] == ["corrected_current_xrsb2", "xrsa_flux"]
    yscan = stream.packets[0][1]
    assert yscan.kind == "yscan" and yscan.items == 4 and yscan.units == "A"
    with local(archive, G16) as ds:
        np.testing.assert_array_equal(
            stream.column("corrected_current_xrsb2"), ds.corrected_current_xrsb2.values
        )
        np.testing.assert_array_equal(stream.column("xrsa_flux"), ds.xrsa_flux.values)


Array = np.ndarray[Any, Any]


def binned(times: Array, values: Array, width: int, fill: float) -> tuple[Array, ...]:
    """Reference bins of `width` ns aligned to 1970: centre, mean, min, max of the values
    that are neither fill nor NaN, for every bin holding one."""
    ns = times.astype("datetime64[ns]").astype(np.int64)
    valid = (values != fill) & ~np.isnan(values)
    keys = ns[valid] // width
    found, index = np.unique(keys, return_inverse=True)
    picked = values[valid].astype(float)
    count = np.bincount(index)
    mean = np.bincount(index, picked) / count
    low = np.full(len(found), np.inf)
    high = np.full(len(found), -np.inf)
    np.minimum.at(low, index, picked)
    np.maximum.at(high, index, picked)
    centres = (found * width + width // 2).astype("datetime64[ns]")
    return centres, mean, low, high


@pytest.mark.parametrize("ascii", ["1", "0"])
def test_a_reduced_stream_matches_numpy_binning(server: Server, archive: Path, ascii: str) -> None:
    start, stop = "2013-10-28T00:00", "2013-10-28T00:20"
    stream = stream_of(
        server,
        server="dataset",
        dataset=G15,
        start_time=start,
        end_time=stop,
        resolution="60",
        ascii=ascii,
        params="a_flux b_counts",
    )
    resolution = stream.props["Datum:xCacheResolution"]
    assert resolution == stream.props["Datum:xTagWidth"] and resolution.endswith(" s")
    width = round(float(resolution.split()[0]) * 1e9)
    assert 0 < width <= 60 * 10**9  # the requested resolution or finer
    names = [p.name for p in stream.packets[0][1:]]
    assert names == [
        "a_flux",
        "a_flux.min",
        "a_flux.max",
        "b_counts",
        "b_counts.min",
        "b_counts.max",
    ]
    props = {p.name: p.props for p in stream.packets[0]}
    assert props["a_flux.max"]["String:operation"] == "BIN_MAX"
    with local(archive, G15) as ds:
        want = window(ds, start, stop)
        for name in ("a_flux", "b_counts"):
            var = want[name]
            fill = float(var.attrs["_FillValue"])
            centres, mean, low, high = binned(want.time.values, var.values, width, fill)
            got = stream.column("x")
            sent = stream.column(name) != fill
            assert sent.sum() >= 10
            np.testing.assert_array_equal(got[sent], centres)
            np.testing.assert_allclose(stream.column(name)[sent], mean, rtol=1e-12)
            np.testing.assert_array_equal(stream.column(f"{name}.min")[sent], low)
            np.testing.assert_array_equal(stream.column(f"{name}.max")[sent], high)


def test_a_range_wider_than_the_data_is_trimmed_to_it(server: Server, archive: Path) -> None:
    stream = stream_of(
        server,
        server="dataset",
        dataset=G15,
        start_time="1980",
        end_time="9999-12-31",
        resolution="300",
        params="a_flux",
    )
    with local(archive, G15) as ds:
        first, last = ds.time.values[[0, -1]]
    width = round(float(stream.props["Datum:xCacheResolution"].split()[0]) * 1e9)
    centres = stream.column("x").astype(np.int64)
    assert centres[0] // width == first.astype("datetime64[ns]").astype(np.int64) // width
    assert centres[-1] // width == last.astype("datetime64[ns]").astype(np.int64) // width


def test_the_path_form_sends_the_same_stream(server: Server, archive: Path) -> None:
    params = {"start_time": "2013-10-28T00:05", "end_time": "2013-10-28T00:06", "ascii": "1"}
    by_path = httpx.get(f"{server.url}/das2/{G15}", params=params, timeout=60)
    by_server = get(server, server="dataset", dataset=G15, **params)
    assert by_path.status_code == 200 and by_path.content == by_server.content
    assert by_path.headers["content-type"].startswith("text/vnd.das2.das2stream")
    with local(archive, G15) as ds:
        want = window(ds, "2013-10-28T00:05", "2013-10-28T00:06").time.values
    np.testing.assert_array_equal(read_stream(by_path.content).column("x"), want)


def test_text_streams_are_gzipped_when_the_client_accepts_it(server: Server) -> None:
    params = {"start_time": "2013-10-28", "end_time": "2013-10-29", "ascii": "1"}
    plain = get(server, server="dataset", dataset=G15, **params)
    packed = httpx.get(
        f"{server.url}/das2/{G15}", params=params, headers={"Accept-Encoding": "gzip"}
    )
    assert packed.headers["content-encoding"] == "gzip"
    assert packed.content == plain.content  # httpx inflates it


def test_binary_streams_have_the_das2_media_type(server: Server) -> None:
    response = get(
        server, server="dataset", dataset=G15, start_time="2013-10-28", end_time="2013-10-29"
    )
    assert response.headers["content-type"] == "application/vnd.das2.das2stream"
    assert response.content.startswith(b"[00]")


def test_a_range_without_data_is_a_no_data_exception(server: Server) -> None:
    response = get(
        server, server="dataset", dataset=G15, start_time="2001-001", end_time="2001-002"
    )
    assert response.status_code == 200
    stream = read_stream(response.content)
    assert stream.exceptions[0]["type"] == "NoDataInInterval"
    assert "2001-01-01T00:00:00.000 to 2001-01-02T00:00:00.000" in stream.exceptions[0]["message"]


@pytest.mark.parametrize(
    ("params", "status", "kind", "words"),
    [
        ({"start_time": "soon"}, 400, "IllegalArgument", "start_time 'soon' is not a time"),
        ({"end_time": "2013-10-27"}, 400, "IllegalArgument", "must be after start_time"),
        ({"resolution": "-5"}, 400, "IllegalArgument", "resolution must be a number"),
        ({"params": "nothing"}, 400, "IllegalArgument", "neither a parameter"),
        ({"dataset": "no/such/thing"}, 404, "NoSuchDataSource", "no/such/thing"),
        ({"dataset": "cmip6/ta_Amon_1950"}, 400, "IllegalArgument", "not a time series"),
        ({"server": "nonsense"}, 400, "IllegalArgument", "list, discovery, dsdf, dataset"),
        ({"dataset": ""}, 400, "IllegalArgument", "needs dataset=ID"),
        ({"colour": "red"}, 400, "IllegalArgument", "unknown parameter 'colour'"),
    ],
)
def test_errors_before_the_stream_are_das2_exceptions_with_a_status(
    server: Server, params: dict[str, str], status: int, kind: str, words: str
) -> None:
    base = {
        "server": "dataset",
        "dataset": G15,
        "start_time": "2013-10-28T00:00",
        "end_time": "2013-10-28T00:10",
    }
    response = get(server, **{**base, **params})
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/vnd.das2.das2stream")
    stream = read_stream(response.content)
    assert stream.order == ["exception"]
    assert stream.exceptions[0]["type"] == kind
    assert words in stream.exceptions[0]["message"]
