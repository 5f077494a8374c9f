"""Structured logs: JSON lines on stderr, each line of a request carrying its request id."""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import structlog

from outcrop.log import configure, logger
from tests.conftest import Server, start_server


def lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def wait_for_lines(server: Server, request_id: str, count: int = 1) -> list[dict[str, object]]:
    """The log lines of one request (the access line is written after the response)."""
    deadline = time.monotonic() + 30
    while True:
        found = [line for line in lines(server.logs()) if line.get("request_id") == request_id]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_incoming_request_id_is_logged_and_returned(server: Server) -> None:
    response = httpx.get(f"{server.url}/api/datasets", headers={"X-Request-ID": "req-log-1"})
    assert response.headers["x-request-id"] == "req-log-1"
    [line] = wait_for_lines(server, "req-log-1")
    assert line["event"] == "request"
    assert line["path"] == "/api/datasets"
    assert line["status"] == 200
    assert line["level"] == "info"


def test_a_request_id_is_generated_when_none_is_sent(server: Server) -> None:
    first = httpx.get(f"{server.url}/healthz").headers["x-request-id"]
    second = httpx.get(f"{server.url}/healthz").headers["x-request-id"]
    assert first != second
    assert len(first) == 16
    assert int(first, 16) >= 0
    assert wait_for_lines(server, first)


def test_zarr_responses_carry_the_request_id(server: Server) -> None:
    url = f"{server.url}/zarr/cmip6/ta_Amon_1950/.zmetadata"
    assert httpx.get(url, headers={"X-Request-ID": "zarr-1"}).headers["x-request-id"] == "zarr-1"


def test_every_line_the_server_writes_is_json(server: Server) -> None:
    httpx.get(f"{server.url}/api/datasets/no-such-dataset")
    httpx.get(f"{server.url}/no-such-route")
    parsed = lines(server.logs())
    assert parsed
    assert all({"event", "level", "timestamp"} <= set(line) for line in parsed)


def test_an_error_inside_a_request_is_logged_with_its_request_id(
    archive: Path, tmp_path: Path
) -> None:
    served = tmp_path / "served"
    served.mkdir()
    victim = served / "victim.nc"
    shutil.copy(archive / "cmip6" / "ta_Amon_1950.nc", victim)
    server = start_server([str(served), "--log-level", "debug"], tmp_path / "state")
    try:
        victim.write_bytes(b"this is no longer a NetCDF file" * 100)
        response = httpx.get(
            f"{server.url}/api/datasets/victim", headers={"X-Request-ID": "broken-1"}
        )
        assert response.status_code >= 500
        assert response.headers["content-type"] == "application/problem+json"
        found = wait_for_lines(server, "broken-1", count=2)
    finally:
        server.stop()
    errors = [line for line in found if line["level"] == "error"]
    assert errors, found
    access = [line for line in found if line["event"] == "request"]
    assert access and access[0]["status"] == response.status_code
    # No line of the server's log mentions the failure without the request id.
    for line in lines(server.logs()):
        if line["level"] == "error":
            assert line.get("request_id") == "broken-1", line


def test_debug_level_logs_zarr_requests_with_their_id(archive: Path, tmp_path: Path) -> None:
    server = start_server([str(archive), "--log-level", "debug"], tmp_path)
    try:
        url = f"{server.url}/zarr/cmip6/ta_Amon_1950/.zmetadata"
        httpx.get(url, headers={"X-Request-ID": "zarr-debug-1"})
        [line] = wait_for_lines(server, "zarr-debug-1")
    finally:
        server.stop()
    assert line["level"] == "debug"
    assert line["path"] == "/zarr/cmip6/ta_Amon_1950/.zmetadata"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """`configure` binds stderr (here pytest's capture) globally; put everything back."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


@pytest.mark.parametrize(
    ("level", "quiet", "written"),
    [("info", False, {"info", "warning"}), ("warning", False, {"warning"}), ("info", True, set())],
)
@pytest.mark.usefixtures("restore_logging")
def test_configure_filters_by_level(
    capsys: pytest.CaptureFixture[str], level: str, quiet: bool, written: set[str]
) -> None:
    configure(level, quiet)
    log = logger("outcrop.test")
    log.debug("a_debug_line")
    log.info("an_info_line")
    log.warning("a_warning_line")
    logging.getLogger("some.library").warning("a_library_warning")
    got = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert {line["level"] for line in got} == written
    if written:
        assert "a_library_warning" in [line["event"] for line in got]


@pytest.mark.usefixtures("restore_logging")
def test_lines_go_to_the_file_too_and_to_a_new_file_after_reopen(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from outcrop.log import reopen

    path = tmp_path / "logs" / "outcrop.log"
    configure("info", file=path)
    logger("outcrop.test").info("before_rotation", n=1)
    logging.getLogger("some.library").warning("a_library_warning")
    moved = path.with_suffix(".log.1")
    path.rename(moved)
    reopen()
    logger("outcrop.test").info("after_rotation", n=2)
    on_stderr = [json.loads(line)["event"] for line in capsys.readouterr().err.splitlines()]
    assert on_stderr == ["before_rotation", "a_library_warning", "after_rotation"]
    assert [line["event"] for line in lines(moved.read_text())] == on_stderr[:2]
    assert [line["event"] for line in lines(path.read_text())] == ["after_rotation"]


@pytest.mark.usefixtures("restore_logging")
def test_file_only_logging_writes_nothing_on_stderr(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "outcrop.log"
    configure("info", file=path, stderr=False)
    logger("outcrop.test").info("only_in_the_file")
    assert capsys.readouterr().err == ""
    assert lines(path.read_text())[0]["event"] == "only_in_the_file"
