"""The access log: one JSON line per request naming its route, status, bytes, duration and
client (after a trusted proxy's `X-Forwarded-For`); client errors at info without a
traceback, internal errors at error with one, and their request id in the problem body."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import DATA, Server, start_server

DATASET = "timeseries/SOI_Darwin"


def lines_of(server: Server, request_id: str, count: int = 1) -> list[dict[str, Any]]:
    """The log lines of one request (the access line is written after the response)."""
    deadline = time.monotonic() + 30
    while True:
        found = [
            line
            for line in map(json.loads, server.logs().splitlines())
            if line.get("request_id") == request_id
        ]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def access_line(server: Server, request_id: str) -> dict[str, Any]:
    [line] = [line for line in lines_of(server, request_id) if line["event"] == "request"]
    return line


def small_server(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Server:
    served = tmp_path / "served" / "timeseries"
    served.mkdir(parents=True)
    shutil.copy(DATA / "timeseries" / "SOI_Darwin.nc", served)
    return start_server([str(served.parent), *args], tmp_path / "state", env)


def test_access_line_names_route_status_bytes_duration_and_client(server: Server) -> None:
    response = httpx.get(
        f"{server.url}/api/datasets/real/{DATASET}", headers={"X-Request-ID": "access-1"}
    )
    assert response.status_code == 200
    line = access_line(server, "access-1")
    assert line["level"] == "info"
    assert line["method"] == "GET"
    assert line["path"] == f"/api/datasets/real/{DATASET}"
    assert line["route"] == "/api/datasets/{ds_id:path}"
    assert line["status"] == 200
    assert line["bytes"] == len(response.content)
    assert line["ms"] >= 0
    assert line["client"] == "127.0.0.1"


def test_client_is_the_forwarded_address_from_a_trusted_proxy(server: Server) -> None:
    # The test's own address, 127.0.0.1, is a trusted proxy by default.
    headers = {"X-Request-ID": "access-xff", "X-Forwarded-For": "203.0.113.7, 127.0.0.1"}
    httpx.get(f"{server.url}/api/datasets", headers=headers)
    assert access_line(server, "access-xff")["client"] == "203.0.113.7"


def test_zarr_access_lines_carry_the_forwarded_client_and_the_prefix_route(
    tmp_path: Path,
) -> None:
    srv = small_server(tmp_path, "--log-level", "debug")
    try:
        headers = {"X-Request-ID": "zarr-xff", "X-Forwarded-For": "198.51.100.2"}
        response = httpx.get(f"{srv.url}/zarr/{DATASET}/.zmetadata", headers=headers)
        line = access_line(srv, "zarr-xff")
    finally:
        srv.stop()
    assert response.status_code == 200
    assert line["level"] == "debug"
    assert line["route"] == "/zarr/{path}"
    assert line["client"] == "198.51.100.2"
    assert line["bytes"] == len(response.content)


def test_forwarded_for_from_an_untrusted_peer_is_ignored(tmp_path: Path) -> None:
    srv = small_server(tmp_path, env={"OUTCROP_FORWARDED_ALLOW_IPS": "10.9.9.9"})
    try:
        headers = {"X-Request-ID": "spoofed", "X-Forwarded-For": "203.0.113.66"}
        httpx.get(f"{srv.url}/api/datasets", headers=headers)
        line = access_line(srv, "spoofed")
    finally:
        srv.stop()
    assert line["client"] == "127.0.0.1"


def test_client_errors_are_logged_at_info_without_a_traceback(server: Server) -> None:
    headers = {"X-Request-ID": "client-error-1"}
    missing = httpx.get(f"{server.url}/api/datasets/no/such/thing", headers=headers)
    assert missing.status_code == 404
    bad = httpx.get(f"{server.url}/api/datasets", params={"limit": "x"}, headers=headers)
    assert bad.status_code == 400
    found = lines_of(server, "client-error-1", count=2)
    assert sorted(line["status"] for line in found if line["event"] == "request") == [400, 404]
    assert {line["level"] for line in found} == {"info"}
    assert not [line for line in found if "exception" in line]


def test_an_internal_error_is_logged_once_with_its_traceback_and_id(tmp_path: Path) -> None:
    srv = small_server(tmp_path)
    try:
        victim = tmp_path / "served" / "timeseries" / "SOI_Darwin.nc"
        victim.write_bytes(b"no longer a NetCDF file" * 100)
        response = httpx.get(
            f"{srv.url}/api/datasets/{DATASET}/data", headers={"X-Request-ID": "broken-2"}
        )
        found = lines_of(srv, "broken-2", count=2)
    finally:
        srv.stop()
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["request_id"] == "broken-2"
    tracebacks = [line for line in found if "Traceback" in line.get("exception", "")]
    assert len(tracebacks) == 1, found
    assert tracebacks[0]["level"] == "error"
    assert access_line(srv, "broken-2")["level"] == "error"
