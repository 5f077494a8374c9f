"""Large subsets through a real server: memory stays bounded, whatever the response size,
and the temporary NetCDF files are gone after the response, after a disconnect and after
a crash and restart."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import netCDF4
import numpy as np
import pytest
import xarray as xr

from tests.conftest import Server, start_server

STEPS, NY, NX = 800, 256, 256  # float32: 210 MB decoded
DECODED = STEPS * NY * NX * 4
FULL = "var=temp&time=2001-01-01/2003-12-31"
SLOW = FULL + "&lat=-89/88.5"  # not whole stored chunks: compressed again, takes seconds
WAIT_S = 120  # a deadline for things the server does in the background, not a timing


def write_grid(path: Path) -> None:
    """Noise that barely compresses: a response buffered whole would show in the RSS."""
    rng = np.random.default_rng(7)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        for name, size in (("time", STEPS), ("lat", NY), ("lon", NX)):
            nc.createDimension(name, size)
        nc.createVariable("time", "f8", ("time",))[:] = np.arange(STEPS)
        nc["time"].units = "days since 2001-01-01"
        nc.createVariable("lat", "f8", ("lat",))[:] = np.linspace(-89, 89, NY)
        nc.createVariable("lon", "f8", ("lon",))[:] = np.linspace(0, 359, NX)
        temp = nc.createVariable(
            "temp", "f4", ("time", "lat", "lon"), zlib=True, complevel=1, chunksizes=(1, NY, NX)
        )
        for start in range(0, STEPS, 100):
            temp[start : start + 100] = rng.random((100, NY, NX), dtype=np.float32)


@pytest.fixture(scope="module")
def big_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("big")
    write_grid(root / "grid.nc")
    return root


@pytest.fixture
def big_server(big_folder: Path, tmp_path: Path) -> Iterator[Server]:
    srv = start_server(
        [str(big_folder)], tmp_path / "state", env={"OUTCROP_MAX_RESPONSE_MB": "4096"}
    )
    yield srv
    srv.stop()


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the most memory the process has ever had resident."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def drain(url: str) -> int:
    """Stream a response, keeping nothing; its length in bytes."""
    size = 0
    with httpx.stream("GET", url, timeout=300) as r:
        assert r.status_code == 200, r.read()[:300]
        for block in r.iter_raw():
            size += len(block)
    return size


def subset_files(state: Path) -> list[Path]:
    return sorted((state / "tmp").glob("subset-*")) if (state / "tmp").is_dir() else []


def open_subset_files(pid: int) -> list[str]:
    """Files (deleted or not) under a `subset-` name that the process holds open."""
    found = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if "/tmp/subset-" in target:
            found.append(target)
    return found


def ask(url: str) -> None:
    """A request whose answer does not matter (the server is killed meanwhile)."""
    with contextlib.suppress(httpx.HTTPError):
        httpx.get(url, timeout=300)


def eventually(check: object, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {WAIT_S} s: {what}")
        time.sleep(0.2)


@pytest.mark.parametrize(
    ("fmt", "rows"),
    [
        ("nc", ""),  # whole stored chunks: copied as they are
        ("nc", "&lat=-89/88.5"),  # all rows but the last: decoded and compressed again
        ("arrow", ""),
    ],
)
def test_memory_stays_bounded_whatever_the_response_size(
    big_server: Server, fmt: str, rows: str
) -> None:
    pid = big_server.process.pid
    base = f"{big_server.url}/api/datasets/grid/data?format={fmt}&"
    drain(base + "var=temp&time=2001-01-01/2001-01-02&lat=0/10")  # imports, opens
    before = peak_rss_mb(pid)
    size = drain(base + FULL + rows)
    grown = peak_rss_mb(pid) - before
    print(f"{fmt}: {size >> 20} MB body, peak RSS {before:.0f} MB + {grown:.0f} MB")
    assert size > DECODED * (0.8 if fmt == "nc" else 1)  # the whole subset came
    # Buffering the response, or the decoded subset, would grow the peak by > 200 MB.
    assert grown < DECODED / 2**20 / 3, f"peak RSS grew {grown:.0f} MB for a {size >> 20} MB body"


@pytest.mark.parametrize(
    ("rows", "chunks"),
    [
        ("", (1, NY, NX)),  # the source's stored chunks, copied
        ("&lat=-89/88.5", (4, NY - 1, NX)),  # re-encoded: whole steps, up to 2**18 values
    ],
)
def test_the_netcdf_subset_holds_the_values_and_the_temporary_file_is_gone(
    big_server: Server, big_folder: Path, tmp_path: Path, rows: str, chunks: tuple[int, ...]
) -> None:
    out = tmp_path / "got.nc"
    query = f"var=temp&time=2001-01-11/2001-03-01{rows}&format=nc"
    url = f"{big_server.url}/api/datasets/grid/data?{query}"
    with httpx.stream("GET", url, timeout=300) as r, out.open("wb") as f:
        assert r.status_code == 200
        assert int(r.headers["content-length"]) > 0
        for block in r.iter_raw():
            f.write(block)
    with xr.open_dataset(big_folder / "grid.nc") as local, xr.open_dataset(out) as got:
        lat = slice(None, NY - 1 if rows else None)
        np.testing.assert_array_equal(got.temp.values, local.temp.values[10:60, lat])
        assert got.temp.encoding["chunksizes"] == chunks
        assert got.temp.encoding["complevel"] == 1 and got.temp.encoding["shuffle"]
    state = tmp_path / "state"
    assert subset_files(state) == []
    eventually(lambda: open_subset_files(big_server.process.pid) == [], "file closed")


def test_a_disconnect_mid_stream_releases_the_temporary_file(
    big_server: Server, tmp_path: Path
) -> None:
    url = f"{big_server.url}/api/datasets/grid/data?{FULL}&format=nc"
    with httpx.stream("GET", url, timeout=300) as r:
        assert r.status_code == 200
        next(r.iter_raw())  # one block, then hang up
    state = tmp_path / "state"
    eventually(lambda: subset_files(state) == [], "no temporary file left")
    eventually(lambda: open_subset_files(big_server.process.pid) == [], "file closed")
    assert drain(f"{big_server.url}/healthz") > 0  # and the server still answers


def test_a_disconnect_before_the_first_byte_releases_the_temporary_file(
    big_server: Server, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    url = f"{big_server.url}/api/datasets/grid/data?{SLOW}&format=nc"
    gives_up = httpx.Timeout(300, read=0.5)  # while the file is being written
    with pytest.raises(httpx.ReadTimeout), httpx.stream("GET", url, timeout=gives_up):
        pass
    eventually(lambda: subset_files(state) == [], "no temporary file left")
    eventually(lambda: open_subset_files(big_server.process.pid) == [], "file closed")


def test_files_left_by_a_crash_are_removed_at_the_next_start(
    big_folder: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    env = {"OUTCROP_MAX_RESPONSE_MB": "4096"}
    first = start_server([str(big_folder)], state, env=env)
    try:
        url = f"{first.url}/api/datasets/grid/data?{SLOW}&format=nc"
        waiting = threading.Thread(target=ask, args=(url,), daemon=True)
        waiting.start()  # the server starts writing the file, the client waits for it
        eventually(lambda: subset_files(state) != [], "a temporary file is being written")
        os.killpg(first.process.pid, signal.SIGKILL)  # a crash mid-write
        first.process.wait()
        waiting.join(WAIT_S)
    finally:
        first.stop()
    left = subset_files(state)
    assert left, "the crash left its temporary file"
    live = state / "tmp" / f"subset-{os.getpid()}-other-worker.nc"  # a live process's file
    live.write_bytes(b"in use")
    second = start_server([str(big_folder)], state, env=env)
    try:
        assert subset_files(state) == [live]
    finally:
        second.stop()
