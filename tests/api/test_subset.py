"""`GET /api/datasets/{id}/data` through a real server, read by real clients (httpx,
xarray, pyarrow, outcrop.Client) and compared with the local file subset by numpy index
arithmetic."""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import xarray as xr

import outcrop
from outcrop.errors import BadQuery, TooLarge
from tests.conftest import Server, start_server
from tests.formats.test_netcdf import from_cf_json
from tests.formats.test_tabular import assert_column, iso, rows


def east(lon: np.ndarray, start: float, stop: float) -> np.ndarray:
    """Positions on a 0..360 longitude grid from start eastwards to stop (mod 360)."""
    start, stop = start % 360, stop % 360
    if start <= stop:
        return np.flatnonzero((lon >= start) & (lon <= stop))
    return np.r_[np.flatnonzero(lon >= start), np.flatnonzero(lon <= stop)]


def between(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.flatnonzero((values >= lo) & (values <= hi))


def years(values: np.ndarray, first: int, last: int) -> np.ndarray:
    found = np.array([t.year for t in values])
    return np.flatnonzero((found >= first) & (found <= last))


def ta_1950(ds: xr.Dataset) -> xr.Dataset:
    rows = between(ds.lat.values, -20, 20)[::2]
    return ds.isel(time=[2, 3, 4], lat=rows, lon=east(ds.lon.values, -30, 30))


def ta_noleap(ds: xr.Dataset) -> xr.Dataset:
    return ds.isel(time=[14], lon=between(ds.lon.values, 100, 120))


def a1b(ds: xr.Dataset) -> xr.Dataset:
    lat = int(np.argmin(np.abs(ds.latitude.values - 40)))
    keep = ["air_temperature", "latitude_longitude", "time_bnds"]
    lon = east(ds.longitude.values, -100, -80)
    return ds[keep].isel(time=years(ds.time.values, 2050, 2052), latitude=[lat], longitude=lon)


def ostia(ds: xr.Dataset) -> xr.Dataset:
    t = ds.time.values
    times = np.flatnonzero((t >= np.datetime64("2008-01-01")) & (t < np.datetime64("2008-04-01")))
    keep = [
        "surface_temperature",
        "latitude_longitude",  # its grid_mapping
        "time_bnds",  # the bounds of its coordinates
        "forecast_reference_time_bnds",
    ]
    return ds[keep].isel(
        time=times,
        latitude=between(ds.latitude.values, -2, 2),
        longitude=east(ds.longitude.values, 350, 10),
    )


Case = tuple[str, str, dict[str, str], Callable[[xr.Dataset], xr.Dataset], str]
CASES: list[Case] = [
    (
        "cmip6/ta_Amon_1950",
        "cmip6/ta_Amon_1950.nc",
        {"time": "1950-03/1950-05", "lat": "-20/20", "lon": "-30/30", "stride": "lat:2"},
        ta_1950,
        "ta",
    ),
    (
        "cmip6/ta_Amon_noleap",
        "cmip6/ta_Amon_noleap.nc",
        {"time": "1951-02-28", "lon": "100/120"},
        ta_noleap,
        "ta",
    ),
    (
        "real/grids/A1B_north_america",
        "real/grids/A1B_north_america.nc",
        {
            "var": "air_temperature",
            "time": "2050/2052",
            "latitude": "40",
            "longitude": "-100/-80",
        },
        a1b,
        "air_temperature",
    ),
    (
        "real/grids/ostia_monthly",
        "real/grids/ostia_monthly.nc",
        {
            "var": "surface_temperature",
            "time": "2008-01-01/2008-03-31",
            "latitude": "-2/2",
            "longitude": "350/10",
        },
        ostia,
        "surface_temperature",
    ),
]
IDS = [c[0] for c in CASES]


def get(server: Server, ds_id: str, **params: str) -> httpx.Response:
    return httpx.get(f"{server.url}/api/datasets/{ds_id}/data", params=params, timeout=60)


@pytest.mark.parametrize(("ds_id", "rel", "params", "expect", "var"), CASES, ids=IDS)
def test_netcdf_subset_opens_as_the_local_subset(
    server: Server,
    archive: Path,
    tmp_path: Path,
    ds_id: str,
    rel: str,
    params: dict[str, str],
    expect: Callable[[xr.Dataset], xr.Dataset],
    var: str,
) -> None:
    response = get(server, ds_id, **params, format="nc")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-netcdf"
    assert int(response.headers["content-length"]) == len(response.content)
    (tmp_path / "got.nc").write_bytes(response.content)
    with xr.open_dataset(archive / rel) as local, xr.open_dataset(tmp_path / "got.nc") as got:
        want = expect(local)
        xr.testing.assert_identical(got, want)
        for key in ("dtype", "_FillValue", "scale_factor", "add_offset", "calendar"):
            if key in want[var].encoding:
                assert got[var].encoding[key] == want[var].encoding[key], key
        assert got[var].size > 0


@pytest.mark.parametrize("fmt", ["csv", "arrow", "parquet"])
@pytest.mark.parametrize(("ds_id", "rel", "params", "expect", "var"), CASES, ids=IDS)
def test_tabular_subset_has_one_row_per_local_point(
    server: Server,
    archive: Path,
    fmt: str,
    ds_id: str,
    rel: str,
    params: dict[str, str],
    expect: Callable[[xr.Dataset], xr.Dataset],
    var: str,
) -> None:
    response = get(server, ds_id, **params, format=fmt)
    assert response.status_code == 200, response.text
    table = read_table(response.content, fmt)
    with xr.open_dataset(archive / rel) as local:
        want = rows(expect(local), var)
    dims = list(want)[:-1]
    assert table.column_names[: len(dims)] == dims
    assert table.column_names[-1] == var
    time = table.column("time")
    if fmt == "csv" or not pa.types.is_timestamp(time.type):
        assert time.to_pylist() == iso(want["time"])
    else:
        np.testing.assert_array_equal(time.to_numpy(), want["time"])
    for name in [*dims[1:], var]:
        assert_column(table, name, want[name])


def read_table(body: bytes, fmt: str) -> pa.Table:
    if fmt == "csv":
        options = pacsv.ConvertOptions(column_types={"time": pa.string()})
        return pacsv.read_csv(io.BytesIO(body), convert_options=options)
    if fmt == "arrow":
        return pa.ipc.open_stream(body).read_all()
    return pq.read_table(io.BytesIO(body))


@pytest.mark.parametrize(("ds_id", "rel", "params", "expect", "var"), CASES, ids=IDS)
def test_cf_json_subset_decodes_to_the_local_values(
    server: Server,
    archive: Path,
    ds_id: str,
    rel: str,
    params: dict[str, str],
    expect: Callable[[xr.Dataset], xr.Dataset],
    var: str,
) -> None:
    response = get(server, ds_id, **params, format="json")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    got = from_cf_json(response.content)
    with xr.open_dataset(archive / rel) as local:
        want = expect(local)
        np.testing.assert_array_equal(got.time.values, want.time.values)
        np.testing.assert_allclose(got[var].values, want[var].values.astype("float64"), rtol=1e-6)
        assert got[var].dims == want[var].dims


# -- errors ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("params", "parameter", "words"),
    [
        ({"depth": "0/10"}, "depth", ["time", "lat", "lon", "var", "stride", "format"]),
        ({"var": "pr"}, "var", ["ta"]),
        ({"lat": "south/north"}, "lat", ["not a number"]),
        ({"lat": "10/-10"}, "lat", ["greater than stop"]),
        ({"lat": "1/2/3"}, "lat", ["<start>/<stop>"]),
        ({"time": "1950-02-31/1950-03"}, "time", ["360_day"]),
        ({"time": "tomorrow"}, "time", ["ISO 8601"]),
        ({"lat": "89/90"}, "lat", ["selects nothing", "88.75"]),
        ({"stride": "lat:0"}, "stride", ["positive integer"]),
        ({"stride": "depth:2"}, "stride", ["lat"]),
        ({"format": "xlsx"}, "format", ["nc", "csv", "json", "arrow", "parquet"]),
    ],
)
def test_bad_requests_get_a_problem_naming_the_parameter(
    server: Server, params: dict[str, str], parameter: str, words: list[str]
) -> None:
    response = get(server, "cmip6/ta_Amon_1950", **params)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 400 and body["parameter"] == parameter
    for word in words:
        assert word in body["detail"]


def test_repeated_parameter_is_a_bad_request(server: Server) -> None:
    url = f"{server.url}/api/datasets/cmip6/ta_Amon_1950/data?lat=0/10&lat=20/30"
    response = httpx.get(url)
    assert response.status_code == 400 and response.json()["parameter"] == "lat"


def test_a_table_of_variables_on_different_dimensions_is_a_bad_request(server: Server) -> None:
    response = get(
        server, "real/grids/A1B_north_america", var="air_temperature,time_bnds", format="csv"
    )
    assert response.status_code == 400 and response.json()["parameter"] == "var"


def test_unknown_dataset_is_not_found(server: Server) -> None:
    response = get(server, "cmip6/nothing")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


@pytest.fixture(scope="module")
def small_server(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose responses may be at most 1 MB decoded."""
    srv = start_server(
        [str(archive)], tmp_path_factory.mktemp("small"), env={"OUTCROP_MAX_RESPONSE_MB": "1"}
    )
    yield srv
    srv.stop()


def test_a_subset_over_the_limit_is_content_too_large(small_server: Server) -> None:
    # 54 x 18 x 432 float32 = 1.6 MB decoded
    response = get(small_server, "real/grids/ostia_monthly", var="surface_temperature")
    assert response.status_code == 413
    body = response.json()
    assert body["limit"] == 2**20 and body["size"] > 54 * 18 * 432 * 4
    assert "1.6 MB" in body["detail"] and "limit of 1 MB" in body["detail"]
    smaller = get(small_server, "real/grids/ostia_monthly", time="2008-01-01/2008-12-31")
    assert smaller.status_code == 200


# -- caching and compression -------------------------------------------------------------
def test_etag_and_last_modified_give_304(server: Server) -> None:
    first = get(server, "cmip6/ta_Amon_1950", lat="0/10", format="csv")
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    url = f"{server.url}/api/datasets/cmip6/ta_Amon_1950/data"
    params = {"lat": "0/10", "format": "csv"}
    again = httpx.get(url, params=params, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    since = httpx.get(url, params=params, headers={"If-Modified-Since": modified})
    assert since.status_code == 304
    stale = httpx.get(url, params=params, headers={"If-None-Match": 'W/"other"'})
    assert stale.status_code == 200 and stale.content == first.content
    other = get(server, "cmip6/ta_Amon_1950", lat="0/20", format="csv")
    assert other.headers["etag"] != etag
    assert get(server, "cmip6/ta_Amon_1950", lat="0/10", format="nc").headers["etag"] != etag


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_text_formats_are_gzipped_when_the_client_accepts_it(server: Server, fmt: str) -> None:
    url = f"{server.url}/api/datasets/cmip6/ta_Amon_1950/data"
    params = {"lat": "0/30", "format": fmt}
    plain = httpx.get(url, params=params, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    with httpx.stream("GET", url, params=params, headers={"Accept-Encoding": "gzip"}) as packed:
        assert packed.headers["content-encoding"] == "gzip"
        raw = b"".join(packed.iter_raw())
    assert raw[:2] == b"\x1f\x8b" and len(raw) < len(plain.content)
    assert gzip.decompress(raw) == plain.content


def test_binary_formats_are_not_gzipped(server: Server) -> None:
    response = httpx.get(
        f"{server.url}/api/datasets/cmip6/ta_Amon_1950/data",
        params={"lat": "0/30", "format": "parquet"},
        headers={"Accept-Encoding": "gzip"},
    )
    assert response.status_code == 200 and "content-encoding" not in response.headers
    assert response.headers["content-type"] == "application/vnd.apache.parquet"


def test_the_info_route_is_not_taken_by_the_data_route(server: Server) -> None:
    # The info route knows no parameters: its 400 shows that it, not /data, answered.
    response = httpx.get(f"{server.url}/api/datasets/cmip6/ta_Amon_1950", params={"lat": "0"})
    assert response.status_code == 400
    assert response.json()["parameter"] == "lat"


# -- the Python client -------------------------------------------------------------------
def test_client_subset_returns_the_local_subset(server: Server, archive: Path) -> None:
    with outcrop.Client(server.url) as client:
        got = client.subset(
            "cmip6/ta_Amon_1950",
            time=("1950-03", "1950-05"),
            lat=slice(-20, 20),
            lon=(-30, 30),
            stride={"lat": 2},
        )
    assert isinstance(got, xr.Dataset)
    with xr.open_dataset(archive / "cmip6" / "ta_Amon_1950.nc") as local:
        xr.testing.assert_identical(got, ta_1950(local))


def test_client_subset_writes_other_formats_to_a_path(server: Server, tmp_path: Path) -> None:
    with outcrop.Client(server.url) as client:
        out = client.subset(
            "real/grids/ostia_monthly",
            variables=["surface_temperature"],
            format="parquet",
            path=tmp_path / "sst.parquet",
            time=np.datetime64("2008-01-16T12:00:00"),
            latitude=(None, -4),
        )
        assert out == tmp_path / "sst.parquet"
        assert pq.read_table(out).num_rows == 1 * 2 * 432
        with pytest.raises(BadQuery) as caught:
            client.subset("cmip6/ta_Amon_1950", depth=(0, 10))
        assert caught.value.parameter == "depth"
        with pytest.raises(BadQuery):
            client.subset("cmip6/ta_Amon_1950", format="csv")  # needs a path


def test_client_raises_too_large_with_size_and_limit(small_server: Server) -> None:
    with outcrop.Client(small_server.url) as client, pytest.raises(TooLarge) as caught:
        client.subset("real/grids/ostia_monthly")
    assert caught.value.limit == 2**20 and caught.value.size > caught.value.limit
