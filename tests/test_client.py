"""`outcrop.Client` and `outcrop.open_dataset`: in-process through httpx's ASGI transport
for the JSON API, and against a real server for Zarr (fsspec/aiohttp need a socket)."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
import xarray as xr

import outcrop
from outcrop.api import create_app
from outcrop.catalog import Catalog
from outcrop.client import raise_for_problem
from outcrop.settings import Settings
from tests.conftest import Server


@pytest.fixture(scope="module")
def client(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[outcrop.Client]:
    settings = Settings(paths=[archive], data_dir=tmp_path_factory.mktemp("client-state"))
    catalog = Catalog(settings)
    catalog.refresh()
    transport = httpx.ASGITransport(app=create_app(settings, catalog))
    with outcrop.Client("http://outcrop.test", transport=transport) as c:
        yield c


def file_ids(archive: Path) -> set[str]:
    """Dataset ids as the docs define them: path relative to the folder, no extension."""
    found = {p for p in archive.rglob("*.nc")} | {p for p in archive.rglob("*.zarr")}
    return {p.relative_to(archive).with_suffix("").as_posix() for p in found}


def test_datasets_lists_every_file_in_id_order(client: outcrop.Client, archive: Path) -> None:
    rows = client.datasets()
    ids = [row["id"] for row in rows]
    assert file_ids(archive) - {"groups"} <= set(ids)
    assert ids == sorted(ids)
    assert len(ids) == len(set(ids))


def test_datasets_filters_by_text(client: outcrop.Client) -> None:
    rows = client.datasets(q="noleap")
    assert [row["id"] for row in rows] == ["cmip6/ta_Amon_noleap"]
    assert client.datasets(q="no-such-words-anywhere") == []


def test_info_describes_the_local_file(client: outcrop.Client, archive: Path) -> None:
    info = client.info("cmip6/ta_Amon_1950")
    with xr.open_dataset(archive / "cmip6" / "ta_Amon_1950.nc") as local:
        assert info["dims"] == {str(k): int(v) for k, v in local.sizes.items()}
        assert set(info["variables"]) == set(local.data_vars)
        assert info["variables"]["ta"]["dtype"] == str(local["ta"].dtype)
        assert info["variables"]["ta"]["shape"] == list(local["ta"].shape)
        assert info["attrs"]["title"] == local.attrs["title"]
        assert info["coords"]["lat"]["first"] == pytest.approx(float(local["lat"][0]))
        assert info["coords"]["lat"]["count"] == local.sizes["lat"]
    assert info["links"]["zarr"] == "http://outcrop.test/zarr/cmip6/ta_Amon_1950"


def test_unknown_dataset_raises_dataset_not_found_with_the_servers_message(
    client: outcrop.Client,
) -> None:
    with pytest.raises(outcrop.DatasetNotFound, match="no-such/dataset") as caught:
        client.info("no-such/dataset")
    assert isinstance(caught.value, KeyError)


def test_bad_parameter_raises_bad_query_naming_it(client: outcrop.Client) -> None:
    response = client.http.get("/api/datasets", params={"limit": "lots"})
    with pytest.raises(outcrop.BadQuery, match="limit") as caught:
        raise_for_problem(response)
    assert caught.value.parameter == "limit"


def problem_response(status: int, body: object) -> httpx.Response:
    return httpx.Response(status, json=body, request=httpx.Request("GET", "http://x/"))


def test_too_large_carries_size_and_limit() -> None:
    body = {"status": 413, "detail": "the subset is 5 GB; the limit is 2 GB", "size": 5, "limit": 2}
    with pytest.raises(outcrop.TooLarge, match="5 GB") as caught:
        raise_for_problem(problem_response(413, body))
    assert (caught.value.size, caught.value.limit) == (5, 2)


@pytest.mark.parametrize(
    ("status", "error"),
    [(403, outcrop.Forbidden), (502, outcrop.UpstreamFailed), (500, outcrop.OutcropError)],
)
def test_status_maps_to_the_matching_error(status: int, error: type[Exception]) -> None:
    with pytest.raises(error, match="what went wrong"):
        raise_for_problem(problem_response(status, {"detail": "what went wrong"}))


def test_a_non_json_error_keeps_the_body_text() -> None:
    response = httpx.Response(
        502, text="<html>Bad Gateway from nginx</html>", request=httpx.Request("GET", "http://x/")
    )
    with pytest.raises(outcrop.UpstreamFailed, match="Bad Gateway from nginx"):
        raise_for_problem(response)


def test_unreachable_server_raises_upstream_failed() -> None:
    from tests.conftest import free_port

    with (
        outcrop.Client(f"http://127.0.0.1:{free_port()}") as c,
        pytest.raises(outcrop.UpstreamFailed, match="cannot reach"),
    ):
        c.datasets()


def test_open_dataset_equals_the_local_file(server: Server, archive: Path) -> None:
    remote = outcrop.open_dataset(f"{server.url}/zarr/cmip6/ta_Amon_1950")
    assert remote["ta"].chunks is not None  # lazy until asked for
    with xr.open_dataset(archive / "cmip6" / "ta_Amon_1950.nc") as local:
        xr.testing.assert_identical(remote.load(), local.load())


def test_client_open_dataset_equals_the_local_file(server: Server, archive: Path) -> None:
    with outcrop.Client(server.url) as c:
        remote = c.open_dataset("cmip6/ta_Amon_noleap", zarr_format=3)
    with xr.open_dataset(archive / "cmip6" / "ta_Amon_noleap.nc") as local:
        np.testing.assert_array_equal(remote["ta"].values, local["ta"].values)
        assert remote["time"].values[0] == local["time"].values[0]


def test_open_dataset_of_unknown_id_raises_dataset_not_found(server: Server) -> None:
    with pytest.raises(outcrop.DatasetNotFound, match="no dataset"):
        outcrop.open_dataset(f"{server.url}/zarr/no/such/dataset")


class Recorder:
    """An HTTP proxy in front of the server that records the headers of every request."""

    def __init__(self, upstream: str) -> None:
        self.seen: list[dict[str, str]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorder.seen.append({k.lower(): v for k, v in self.headers.items()})
                reply = httpx.get(upstream + self.path)
                self.send_response(reply.status_code)
                for name in ("content-type", "content-length"):
                    if name in reply.headers:
                        self.send_header(name, reply.headers[name])
                self.end_headers()
                self.wfile.write(reply.content)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def recorder(server: Server) -> Iterator[Recorder]:
    proxy = Recorder(server.url)
    yield proxy
    proxy.close()


def test_credentials_reach_the_server_through_httpx_and_fsspec(recorder: Recorder) -> None:
    auth = ("reader", "s3cret")
    with outcrop.Client(recorder.url, auth=auth, headers={"X-Token": "t-123"}) as c:
        c.info("cmip6/ta_Amon_1950")
        api_requests = len(recorder.seen)
        ds = c.open_dataset("cmip6/ta_Amon_1950")
        ds["ta"].isel(time=0).load()
    assert api_requests >= 1
    zarr_requests = recorder.seen[api_requests:]
    basic = "Basic " + base64.b64encode(b"reader:s3cret").decode()
    for headers in recorder.seen:
        assert headers.get("authorization") == basic, headers
        assert headers.get("x-token") == "t-123", headers
    assert len(zarr_requests) >= 2
