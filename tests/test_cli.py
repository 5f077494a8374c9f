"""`outcrop serve` as people run it: real processes, real sockets."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import xarray as xr

from tests.conftest import free_port, start_server


def serve(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`outcrop serve ARGS` expected to exit by itself (it cannot start)."""
    cmd = [sys.executable, "-m", "outcrop", "serve", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def test_a_path_that_does_not_exist_exits_with_a_message(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"
    done = serve(str(missing), "--data-dir", str(tmp_path / "state"), "--port", str(free_port()))
    assert done.returncode != 0
    assert "no-such-folder" in done.stderr
    assert "does not exist" in done.stderr


@pytest.mark.parametrize("quiet", [False, True])
def test_a_port_in_use_exits_with_a_message(archive: Path, tmp_path: Path, quiet: bool) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = [str(archive), "--port", str(port), "--data-dir", str(tmp_path)]
        done = serve(*args, *(["--quiet"] if quiet else []))
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "--port" in done.stderr


@pytest.mark.parametrize(
    ("option", "value"), [("--port", "70000"), ("--workers", "0"), ("--cache-mb", "-1")]
)
def test_out_of_range_numbers_are_refused_naming_the_option(option: str, value: str) -> None:
    done = serve(option, value)
    assert done.returncode == 2
    assert option in done.stderr


def worker_processes(pid: int) -> list[int]:
    """Children of `pid` started by multiprocessing to run the app (not its helpers)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return [p for p in found if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]


def test_two_workers_answer_requests(archive: Path, tmp_path: Path) -> None:
    server = start_server([str(archive), "--workers", "2"], tmp_path)
    try:
        workers = worker_processes(server.process.pid)
        assert len(workers) == 2
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for _ in range(20):
                assert http.get("/api/datasets").json()["total"] >= 1
        remote = xr.open_zarr(f"{server.url}/zarr/cmip6/ta_Amon_1950", zarr_format=2)
        with xr.open_dataset(archive / "cmip6" / "ta_Amon_1950.nc") as local:
            np.testing.assert_array_equal(remote["ta"].values, local["ta"].values)
        assert all(Path(f"/proc/{pid}").exists() for pid in workers)
    finally:
        server.stop()


def test_data_dir_holds_the_catalog_and_cache_mb_zero_still_serves(
    archive: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    server = start_server([str(archive), "--cache-mb", "0"], state)
    try:
        assert (state / "catalog.sqlite").is_file()
        remote = xr.open_zarr(f"{server.url}/zarr/cmip6/ta_Amon_noleap", zarr_format=3)
        with xr.open_dataset(archive / "cmip6" / "ta_Amon_noleap.nc") as local:
            for _ in range(2):  # a second read is not served from a cache of size zero
                np.testing.assert_array_equal(remote["ta"].values, local["ta"].values)
    finally:
        server.stop()


def test_config_file_declares_datasets(archive: Path, tmp_path: Path) -> None:
    config = tmp_path / "outcrop.toml"
    source = archive / "cmip6" / "ta_Amon_1950.nc"
    config.write_text(
        f'[[datasets]]\nid = "declared/temperature"\nsource = "{source}"\n'
        'title = "Declared in the config"\n'
    )
    server = start_server(["--config", str(config)], tmp_path / "state")
    try:
        rows = httpx.get(f"{server.url}/api/datasets").json()["datasets"]
        assert [(r["id"], r["title"]) for r in rows] == [
            ("declared/temperature", "Declared in the config")
        ]
    finally:
        server.stop()


def test_root_path_prefixes_generated_links(archive: Path, tmp_path: Path) -> None:
    server = start_server([str(archive), "--root-path", "/outcrop"], tmp_path)
    try:
        # A proxy strips the prefix before passing the request on (docs/deploy-proxy.md).
        info = httpx.get(f"{server.url}/api/datasets/cmip6/ta_Amon_1950").json()
        assert info["links"]["zarr"] == f"{server.url}/outcrop/zarr/cmip6/ta_Amon_1950"
        page = httpx.get(f"{server.url}/").text
        assert 'href="/outcrop/datasets/cmip6/ta_Amon_1950"' in page
    finally:
        server.stop()


def log_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_quiet_writes_nothing(archive: Path, tmp_path: Path) -> None:
    server = start_server([str(archive), "--quiet"], tmp_path)
    try:
        httpx.get(f"{server.url}/api/datasets")
        httpx.get(f"{server.url}/api/datasets/no-such-dataset")
    finally:
        server.stop()
    assert server.logs() == ""


def test_log_level_warning_drops_info_lines(archive: Path, tmp_path: Path) -> None:
    server = start_server([str(archive), "--log-level", "warning"], tmp_path)
    try:
        httpx.get(f"{server.url}/api/datasets")
    finally:
        server.stop()
    lines = log_lines(server.logs())
    assert all(line["level"] in ("warning", "error", "critical") for line in lines), lines


def test_the_command_list_flows_each_description_as_one_paragraph() -> None:
    """`outcrop --help` rewraps the commands' docstrings to the terminal's width, rather
    than keeping the line breaks of the source (which left ragged half-empty lines)."""
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb"}
    cmd = [sys.executable, "-m", "outcrop", "--help"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, check=True)
    lines = {line.split()[1]: line for line in done.stdout.splitlines() if line.count("│") == 2}
    assert "the pid in DATA_DIR/outcrop.pid, JSON log lines in" in lines["start"]
    assert "embedded one in the data folder) until SIGTERM" in lines["worker"]
