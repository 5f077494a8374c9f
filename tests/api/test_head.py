"""HEAD (RFC 9110 §9.3.2): every GET route answers it with the GET's status and headers and
no content; a streamed GET stops once its headers are out."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import Server

DATA = "/api/datasets/cmip6/ta_Amon_1950/data"
URLS = [
    "/",
    "/healthz",
    "/api/datasets?limit=3",
    "/api/datasets/cmip6/ta_Amon_1950",
    "/datasets/cmip6/ta_Amon_1950",
    "/api/images",
    "/docs",
    "/openapi.json",
    f"{DATA}?var=ta&format=nc&lat=0/20",  # made whole first: it has a length
    f"{DATA}?var=ta&format=csv",  # streamed
    f"{DATA}?var=ta&format=arrow",
    f"{DATA}?var=nope",  # a 400 problem
    "/api/datasets/no/such",  # a 404 problem
    "/hapi/catalog",  # a route that takes HEAD itself
    "/zarr/cmip6/ta_Amon_1950/.zmetadata",  # the fast path
]
COMPARED = ("content-type", "content-length", "etag", "last-modified", "content-disposition")


@pytest.mark.parametrize("path", URLS)
def test_head_answers_what_get_answers_without_the_body(server: Server, path: str) -> None:
    before = server.log.stat().st_size
    get = httpx.get(server.url + path)
    head = httpx.head(server.url + path, headers={"X-Request-ID": "head-check"})
    assert head.status_code == get.status_code, (path, head.text)
    assert head.content == b""
    for name in COMPARED:
        assert head.headers.get(name) == get.headers.get(name), (path, name)
    if path.startswith("/zarr/"):
        return  # the Zarr route logs its requests at debug
    added = logged_since(server, before, "head-check")
    assert '"method": "HEAD"' in added
    assert '"level": "error"' not in added, added


def logged_since(server: Server, offset: int, needle: str) -> str:
    """The server log after `offset`, once it holds `needle` (the access line is written
    when the response is done, a moment after the client has it)."""
    deadline = time.monotonic() + 10
    while True:
        with server.log.open("rb") as log:
            log.seek(offset)
            added = log.read().decode(errors="replace")
        if needle in added or time.monotonic() > deadline:
            return added
        time.sleep(0.05)


def test_every_get_route_without_parameters_takes_head(server: Server) -> None:
    paths = httpx.get(server.url + "/openapi.json").json()["paths"]
    plain = [p for p, ops in paths.items() if "get" in ops and "{" not in p]
    assert len(plain) > 10
    refused = {
        p: r.status_code for p in plain if (r := httpx.head(server.url + p)).status_code == 405
    }
    assert not refused
