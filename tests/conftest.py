"""Shared fixtures: the awkward archive, and real servers on free 127.0.0.1 ports."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
EXAMPLES = HERE.parent / "examples"


def _demo_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("make_demo_data", EXAMPLES / "make_demo_data.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A served folder: generated awkward files plus the real files of tests/data."""
    root = tmp_path_factory.mktemp("archive")
    _demo_module().write_awkward_archive(root)
    shutil.copytree(DATA, root / "real", ignore=shutil.ignore_patterns("*.md"))
    return root


def add_route_plugin(monkeypatch: pytest.MonkeyPatch, name: str, target: str) -> None:
    """The installed `outcrop.routes` entry points plus `name = target`, as if a package
    declaring it were installed."""
    from importlib.metadata import EntryPoint, entry_points

    from outcrop.api import routes

    def with_plugin(group: str) -> list[EntryPoint]:
        return [*entry_points(group=group), EntryPoint(name, target, group)]

    monkeypatch.setattr(routes, "entry_points", with_plugin)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(args: list[str], data_dir: Path, env: dict[str, str] | None = None) -> Server:
    """`outcrop serve ARGS` on a free port, waiting for /healthz (at most 60 s)."""
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / f"server-{port}.log"
    cmd = [
        sys.executable,
        "-m",
        "outcrop",
        "serve",
        *args,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.logs()}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"server did not answer within 60 s:\n{server.logs()}")


@pytest.fixture(scope="session")
def server(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server over the archive for the whole session."""
    srv = start_server([str(archive)], tmp_path_factory.mktemp("state"))
    yield srv
    srv.stop()


def assert_served_as_stored(served: bytes, var: Any, stored: bytes) -> None:
    """A stored chunk of the h5py dataset `var` went out with its bytes unchanged: alone,
    for filter chains with fletcher32, or, for zlib alone or after shuffle, behind the
    24-byte header of a Blosc chunk, which numcodecs' Blosc decodes to what HDF5's own
    filters give (inflated here with zlib and unshuffled with numpy)."""
    import zlib

    import numpy as np
    from numcodecs import Blosc

    if var.fletcher32 or var.compression != "gzip":
        assert served == stored
        return
    assert served[24:] == stored
    plain = zlib.decompress(stored)
    size = var.dtype.itemsize
    if var.shuffle and size > 1:
        plain = np.frombuffer(plain, np.uint8).reshape(size, -1).T.tobytes()
    assert bytes(Blosc().decode(served)) == plain
