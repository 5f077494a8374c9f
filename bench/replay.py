"""`nginx-dap2-replay`: nginx sending, from files, the very bytes Outcrop answers for
`grid3` (the NetCDF3 copy), so that every run shows the ceiling of libnetcdf's DAP2 client.

libnetcdf's client scans the whole `.dods` response for `Data:\\r\\n` before trying
`Data:\\n` and copies it through a growing buffer, so it reads far more slowly than a server
sends: a server whose full read ties this contender is client-bound.

nginx ignores the query string when it serves a file, and libnetcdf (4.10) asks `.dods`
more than once with different constraints: when opening, `.dds`, `.das`, `.dds`, then
`.dods?time,lat,lon`; for the full read `.dods?temp.temp`; for the subset
`.dods?temp.temp%5b100:109%5d%5b100:119%5d%5b200:239%5d`. So each query the benchmark's
clients send (those, plus the one-GET read's `?temp` and wrk's time steps) is captured
once from a running Outcrop into a file of its own, and an nginx `map` on `$args` picks the
file; any other query answers 404 and is logged, so a client that asks something else
shows up in the report instead of reading wrong bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

import contenders
import httpx

NAME = "nginx-dap2-replay"
SOURCE = "outcrop-dap2-nc3"  # the contender whose answers are replayed
DATASET = "/opendap/grid3"
ACCEPT = {"Accept-Encoding": "deflate, gzip"}  # what libnetcdf sends
MISSES = f"{NAME}-misses.log"
# wrk's time steps: one regular expression (case-insensitive, as libnetcdf writes %5b)
STEP_KEY = "~*^" + contenders.STEP.replace("{t}", "(?<step>[0-9]+)") + "$"


def queries(subset: dict[str, list[int]], n_steps: int) -> dict[str, str]:
    """File name → the exact query string it answers (as sent, percent-encoding included)."""
    brackets = "".join(f"%5b{lo}:{hi - 1}%5d" for lo, hi in subset.values())
    out = {
        "coords.dods": "time,lat,lon",  # libnetcdf, opening the dataset
        "temp.temp.dods": "temp.temp",  # libnetcdf, the whole variable
        "subset.dods": "temp.temp" + brackets,  # libnetcdf, the small subset
        "temp.dods": "temp",  # reader.py's one-GET read
    }
    for t in range(n_steps):  # wrk, one time step and every step in turn
        out[f"step-{t}.dods"] = contenders.STEP.format(t=t)
    return out


def capture(
    base: str, folder: Path, subset: dict[str, list[int]], n_steps: int
) -> dict[str, dict[str, str]]:
    """Save Outcrop's answers (`base` = its dataset URL) under `folder`: the `.dds` and
    `.das` at their own paths, each `.dods` body under `dods/`. Returns the Content-Type
    and Content-Description of each kind of document, for nginx to send the same."""
    docs = {f"{DATASET}.dds": "", f"{DATASET}.das": ""}
    docs |= {f"/dods/{name}": query for name, query in queries(subset, n_steps).items()}
    headers: dict[str, dict[str, str]] = {}
    with httpx.Client(timeout=httpx.Timeout(300, connect=30), headers=ACCEPT) as client:
        for path, query in docs.items():
            suffix = path.rsplit(".", 1)[1]
            url = f"{base}.{suffix}" + (f"?{query}" if query else "")
            headers[suffix] = save(client, url, folder / path.lstrip("/"))
    return headers


def save(client: httpx.Client, url: str, path: Path) -> dict[str, str]:
    """GET `url` into `path` as sent (no decoding), flushed to disk so that no writeback
    runs during the measurements; its replayable headers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with client.stream("GET", url) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{url} answered {r.status_code}: {r.read()[:200]!r}")
        if r.headers.get("Content-Encoding"):  # nginx would send it without the header
            raise RuntimeError(f"{url} came {r.headers['Content-Encoding']}-encoded")
        with path.open("wb") as f:
            for block in r.iter_raw(1 << 20):
                f.write(block)
            f.flush()
            os.fsync(f.fileno())
        return {k: r.headers.get(k, "") for k in ("Content-Type", "Content-Description")}


def site(
    host: str,
    port: int,
    root: Path,
    logs: Path,
    subset: dict[str, list[int]],
    headers: dict[str, dict[str, str]],
) -> str:
    """The server block (and its maps) inside nginx's `http` block: `map $args` picks the
    captured `.dods` body for the exact query (nginx compares map strings ignoring case);
    a 404 (a query never captured) is logged to `logs/MISSES`."""
    exact = "\n".join(f'        "{query}" {name};' for name, query in queries(subset, 0).items())
    dods = f"try_files /dods/$dap_body =404; {replay_headers(headers['dods'])}"
    return f"""\
    map_hash_bucket_size 128;
    map $args $dap_body {{
        default none;
{exact}
        "{STEP_KEY}" step-$step.dods;
    }}
    map $status $replay_miss {{ 404 1; default 0; }}
    log_format replay_miss '$status "$request_uri"';
    server {{
        listen {host}:{port};
        root {root};
        access_log {logs / MISSES} replay_miss if=$replay_miss;
        location = {DATASET}.dds {{ {replay_headers(headers["dds"])} }}
        location = {DATASET}.das {{ {replay_headers(headers["das"])} }}
        location = {DATASET}.dods {{ {dods} }}
    }}
"""


def replay_headers(sent: dict[str, str]) -> str:
    """nginx directives sending Outcrop's Content-Type and Content-Description."""
    return (
        f'default_type "{sent["Content-Type"]}"; '
        f'add_header Content-Description "{sent["Content-Description"]}";'
    )


def misses(logs: Path) -> list[str]:
    """The requests the replay could not answer (404), for the report."""
    path = logs / MISSES
    lines = path.read_text().splitlines() if path.exists() else []
    return [f"not captured, answered 404: {line}" for line in dict.fromkeys(lines)][:5]
