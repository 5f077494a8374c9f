"""Outbound requests say they come from Outcrop and verify TLS."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version

import pytest

import outcrop
from outcrop import http


class Recorder(BaseHTTPRequestHandler):
    """Answers 200 to any GET and keeps the User-Agent it was sent."""

    seen: list[str | None] = []

    def do_GET(self) -> None:
        Recorder.seen.append(self.headers.get("User-Agent"))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        """Quiet: the test reads `seen`, not stderr."""


@pytest.fixture
def recorder() -> Iterator[str]:
    Recorder.seen.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_requests_carry_the_outcrop_user_agent(recorder: str) -> None:
    with http.client(timeout=5) as client:
        assert client.get(f"{recorder}/healthz").status_code == 200
    assert Recorder.seen == [f"Outcrop/{version('outcrop')}"]


def test_a_caller_may_name_another_user_agent(recorder: str) -> None:
    with http.client(timeout=5, headers={"User-Agent": "probe/1"}) as client:
        client.get(recorder)
    assert Recorder.seen == ["probe/1"]


def test_tls_verification_cannot_be_switched_off() -> None:
    with pytest.raises(ValueError, match="TLS verification"):
        http.client(verify=False)


def test_the_client_sends_the_outcrop_user_agent_through_httpx_and_fsspec(recorder: str) -> None:
    outcrop.Client(recorder).http.get("/api/datasets")
    with pytest.raises(Exception):  # noqa: B017 - any failure: only the requests matter
        outcrop.open_dataset(f"{recorder}/zarr/x")  # fsspec + aiohttp ask for .zmetadata
    assert Recorder.seen and set(Recorder.seen) == {f"Outcrop/{version('outcrop')}"}
