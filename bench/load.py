"""HTTP load: wrk at concurrency 16 (one URL, or a Lua script cycling over every time
step), and single probing requests."""

from __future__ import annotations

import http.client
import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

WRK_THREADS, WRK_CONNS, WRK_SECONDS = 2, 16, 10
UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}
SIZES = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}

CYCLE_LUA = """\
-- each thread hands out the time steps in turn; the two threads start half-way apart
local threads = 0
function setup(thread) thread:set("id", threads); threads = threads + 1 end
function init(args) counter = (id or 0) * {offset} end
function request()
  local t = counter % {n}
  counter = counter + 1
  return wrk.format("GET", "{prefix}" .. t .. "{suffix}")
end
"""


def run_wrk(wrk: str, url: str, run_dir: Path, cycle_n: int = 0) -> dict[str, Any]:
    """`wrk -t2 -c16 -d10s --latency`; with `cycle_n`, `{t}` in the URL walks 0..cycle_n-1."""
    cmd = [wrk, f"-t{WRK_THREADS}", f"-c{WRK_CONNS}", f"-d{WRK_SECONDS}s", "--latency"]
    cmd += ["--timeout", "10s"]
    if cycle_n:
        origin, _, path = url.partition("//")[2].partition("/")
        prefix, _, suffix = ("/" + path).partition("{t}")
        script = run_dir / "cycle.lua"
        lua = CYCLE_LUA.format(
            offset=cycle_n // WRK_THREADS, n=cycle_n, prefix=prefix, suffix=suffix
        )
        script.write_text(lua)
        cmd += ["-s", str(script), f"http://{origin}"]
    else:
        cmd.append(url.replace("{t}", "0"))
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=WRK_SECONDS + 60)
    except subprocess.TimeoutExpired:
        return {"error": "wrk did not finish"}
    res = parse_wrk(r.stdout)
    if r.returncode != 0:
        res["error"] = (r.stderr or r.stdout)[-300:]
    return res


def parse_wrk(out: str) -> dict[str, Any]:
    res: dict[str, Any] = {"raw": out[-1200:]}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"(\d+) requests in ([\d.]+\w+), ([\d.]+)(\w+) read", out)
    if m:
        res["requests"] = int(m.group(1))
        secs = to_ms(m.group(2)) / 1e3
        res["mbps"] = float(m.group(3)) * SIZES.get(m.group(4), 1) / 1e6 / secs if secs else 0.0
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        res[f"p{pct}"] = to_ms(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["sock_err"] = sum(map(int, m.groups())) if m else 0
    return res


def to_ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    return float(m.group(1)) * UNITS_MS[m.group(2)] if m else float("nan")


def probe(url: str, timeout: float = 120) -> dict[str, Any]:
    """One GET: status, body, and whether Content-Length tells the truth."""
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            body = r.read()
            length = r.headers.get("Content-Length")
            return {
                "status": r.status,
                "bytes": len(body),
                "s": time.perf_counter() - t0,
                "content_length": int(length) if length else None,
                "body": body,
            }
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode(errors="replace")
        return {"status": exc.code, "bytes": 0, "error": f"HTTP {exc.code}: {detail}", "body": b""}
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        # HTTPException: e.g. a body shorter than its Content-Length (IncompleteRead)
        return {"status": None, "bytes": 0, "error": f"{type(exc).__name__}: {exc}", "body": b""}
