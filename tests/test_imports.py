"""What a server process imports: `outcrop serve` on reader-program time series, with the
default (embedded SQLite) job queue, answers HAPI requests at full and reduced resolution
without ever importing redis, psycopg (huey tries both at import) or pandas (pyarrow
imports it on its first `pa.array` or `to_numpy`): ~60 MB of memory it never uses.

The server is the real one (`python -m outcrop serve` run by `runpy`), on a free port; it
writes the names in its `sys.modules` when it exits, after the requests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from tests.conftest import free_port
from tests.drivers.test_program import WAVE_PY, describe

SERVER = """
import atexit, json, runpy, sys
out = sys.argv[1]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv = ["outcrop", *sys.argv[2:]]
runpy.run_module("outcrop", run_name="__main__", alter_sys=True)
"""
NEVER = ("redis", "psycopg", "pandas")


def serve_and_list_modules(
    folder: Path, data_dir: Path, paths: list[str]
) -> tuple[list[str], list[bytes]]:
    """Start the server, GET each path (200 expected), stop it: its modules and the bodies."""
    port, listed = free_port(), data_dir / "modules.json"
    argv = [sys.executable, "-c", SERVER, str(listed), "serve", str(folder)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir)]
    env = {k: v for k, v in os.environ.items() if k != "OUTCROP_QUEUE_URL"}
    log = data_dir.parent / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    base, bodies = f"http://127.0.0.1:{port}", []
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        for path in paths:
            got = httpx.get(base + path, timeout=60)
            assert got.status_code == 200, got.text
            bodies.append(got.content)
    finally:
        process.send_signal(signal.SIGINT)  # uvicorn re-raises it: atexit runs (not on SIGTERM)
        process.wait(30)
    return json.loads(listed.read_text()), bodies


def test_series_server_imports_no_redis_psycopg_or_pandas(tmp_path: Path) -> None:
    folder, state = tmp_path / "served", tmp_path / "state"
    folder.mkdir()
    state.mkdir()
    command = ["python", str(WAVE_PY), "--start={start}", "--stop={stop}", "--format=arrow"]
    describe(folder, "wave", command=command, format="arrow", cadence="PT1S")
    hour = "dataset=wave&start=2021-03-01T00:00:00Z&stop=2021-03-01T01:00:00Z"
    paths = [
        f"/hapi/data?{hour}&format=csv",
        f"/hapi/data?{hour}&format=binary",
        f"/hapi/data?{hour}&format=csv&x_resolution=600&x_statistic=count",
    ]
    modules, (csv, binary, reduced) = serve_and_list_modules(folder, state, paths)

    # The requests ran the reader and the encoders: the answers hold what wave.py writes
    # (every second but those in [600, 660) of each hour), the reduced counts those of
    # the full resolution that are not the fill value, bin by bin.
    assert csv.count(b"\n") == 3540
    record = np.dtype([("t", "S24"), ("bx", "<f8"), ("by", "<f8"), ("bz", "<f8")])
    rows = np.frombuffer(binary, record)
    assert len(rows) == 3540 and rows["t"][0] == b"2021-03-01T00:00:00.000Z"
    seconds = np.char.rstrip(rows["t"].astype(str), "Z").astype("datetime64[s]") - np.datetime64(
        "2021-03-01"
    )
    bins = seconds.astype(np.int64) // 600
    expected = [
        [
            str(np.count_nonzero(rows[name][bins == b] != -1e31)).encode()
            for name in ("bx", "by", "bz")
        ]
        for b in range(6)
    ]
    assert [line.split(b",")[1:] for line in reduced.splitlines()] == expected

    imported = {name.split(".")[0] for name in modules}
    assert "outcrop" in imported and "huey" in imported  # the embedded queue ran
    assert not imported & set(NEVER), sorted(imported & set(NEVER))


def test_arrow_and_numpy_without_pa_array_or_to_numpy() -> None:
    """The conversions that replace `pa.array` and `to_numpy` keep every value: strided
    and big-endian arrays, slices, empty arrays, nulls (these go through `to_numpy`)."""
    import pyarrow as pa

    from outcrop.drivers.program.decode import numpy_of
    from outcrop.formats.hapistream import arrow_of

    values = np.arange(12, dtype=">f8").reshape(6, 2)[:, 1]  # strided, big-endian
    assert arrow_of(values).to_pylist() == values.tolist()
    assert arrow_of(np.array([-(2**40), 7], np.int64)).type == pa.int64()
    assert arrow_of(np.array([1.5, np.nan], np.float32)).to_pylist()[0] == 1.5

    sliced = pa.array([1, 2, 3, 4, 5], pa.int32()).slice(2, 2)
    assert numpy_of(sliced).tolist() == [3, 4] and numpy_of(sliced).dtype == np.int32
    assert numpy_of(pa.array([2**63], pa.uint64())).tolist() == [2**63]
    assert numpy_of(pa.array([], pa.float64())).tolist() == []
    assert np.isnan(numpy_of(pa.array([1.0, None]))).tolist() == [False, True]
