"""The service suite (issue 7, `--suite service`): Outcrop run by `outcrop start` (gunicorn
with uvicorn workers) on one small NetCDF4 file.

Measures metadata (`/zarr/grid/.zmetadata`) and one-chunk (`/zarr/grid/temp/0.0.0`)
requests/s with wrk at concurrency 16 for 1, 2 and 4 workers (the scaling, on however many
cores this machine has), the same through nginx (`proxy_pass` with keep-alive upstream
connections: the proxy's overhead), and `outcrop restart` under a wrk load at concurrency
32 (30 s; `--quick` 10 s) on both URLs, which must see no failed request (no non-2xx, no
socket error). Also runnable alone: `python bench/service.py [--seconds 5]`. See README.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import load
import servers
from servers import HOST

NAME = "outcrop-service"
WORKERS = (1, 2, 4)
URLS = {"metadata": "/zarr/grid/.zmetadata", "chunk": "/zarr/grid/temp/0.0.0"}
RESTART_CONNS, RESTART_S, RESTART_QUICK_S = 32, 30, 10
OUTCROP = [sys.executable, "-m", "outcrop"]
PROXY_SITE = """\
    upstream outcrop {{ server {host}:{upstream}; keepalive 64; }}
    server {{
        listen {host}:{port};
        location / {{
            proxy_pass http://outcrop;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_buffering off;
        }}
    }}
"""


def ensure_data(work: Path) -> Path:
    """`grid.nc`: temp(time 48, lat 180, lon 360) float32, zlib + shuffle, one step a chunk."""
    import numpy as np
    import xarray as xr

    folder = work / "service-data"
    path = folder / "grid.nc"
    if path.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    temp = rng.normal(280, 10, (48, 180, 360)).astype("float32")
    ds = xr.Dataset(
        {"temp": (("time", "lat", "lon"), temp, {"units": "K"})},
        coords={"lat": np.linspace(-89.5, 89.5, 180), "lon": np.linspace(0.5, 359.5, 360)},
    )
    encoding = {"temp": {"zlib": True, "shuffle": True, "chunksizes": (1, 180, 360)}}
    ds.to_netcdf(path.with_suffix(".tmp"), engine="netcdf4", encoding=encoding)
    path.with_suffix(".tmp").rename(path)
    return folder


class Service:
    """One `outcrop start` in a data folder of its own, stopped by `outcrop stop`."""

    def __init__(self, data: Path, state: Path, workers: int) -> None:
        self.data, self.state, self.workers = data, state, workers
        self.port = servers.free_port()
        self.url = f"http://{HOST}:{self.port}"

    def cmd(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        argv = [*OUTCROP, *args, "--data-dir", str(self.state)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)

    def __enter__(self) -> Service:
        shutil.rmtree(self.state, ignore_errors=True)
        bind = f"{HOST}:{self.port}"
        done = self.cmd("start", str(self.data), "--workers", str(self.workers), "--bind", bind)
        if done.returncode != 0:
            raise RuntimeError(f"outcrop start failed: {done.stderr[-600:]}")
        for path in URLS.values():
            probe = load.probe(self.url + path)
            if probe["status"] != 200:
                raise RuntimeError(f"{path}: {probe.get('error') or probe['status']}")
        return self

    def __exit__(self, *_: object) -> None:
        self.cmd("stop", "--timeout", "20")


def wrk(bench_tools: dict[str, str | None], url: str, seconds: float, conns: int) -> dict[str, Any]:
    """wrk -t2 -cCONNS -dSECONDS on one URL (load.parse_wrk's figures)."""
    cmd = [bench_tools["wrk"] or "wrk", "-t2", f"-c{conns}", f"-d{seconds:g}s", "--timeout", "10s"]
    r = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=seconds + 60)
    res = load.parse_wrk(r.stdout)
    if r.returncode != 0:
        res["error"] = (r.stderr or r.stdout)[-300:]
    return res


def through_nginx(bench: Any, svc: Service, seconds: float) -> dict[str, Any]:
    port = servers.free_port()
    site = PROXY_SITE.format(host=HOST, port=port, upstream=svc.port)
    # As deployed (docs/deploy.md): one nginx worker per core, not the peers' single one.
    argv = servers.nginx_argv(bench.tools["nginx"] or "nginx", port, bench.run_dir, site, "auto")
    proxy = servers.Server(argv, f"http://{HOST}:{port}", bench.logs / f"nginx-{port}.log", {})
    proxy.start(bench.run_dir)
    try:
        proxy.wait_ready(URLS["metadata"], timeout=30)
        return {k: wrk(bench.tools, proxy.url + p, seconds, 16) for k, p in URLS.items()}
    finally:
        proxy.stop()


def scaling(bench: Any, data: Path, seconds: float, res: dict[str, Any]) -> None:
    for n in WORKERS:
        print(f"  [service] {n} workers", flush=True)
        with Service(data, bench.work / "state" / "service", n) as svc:
            direct = {k: wrk(bench.tools, svc.url + p, seconds, 16) for k, p in URLS.items()}
            res["direct"][str(n)] = direct
            if bench.tools.get("nginx"):
                res["nginx"][str(n)] = through_nginx(bench, svc, seconds)
        say = {k: round(v["rps"]) for k, v in direct.items()}
        print(f"    direct req/s {say}; nginx {_rps(res['nginx'].get(str(n), {}))}", flush=True)


def restart(bench: Any, data: Path, seconds: float, res: dict[str, Any]) -> None:
    """wrk at concurrency 32 on each URL for `seconds`; `outcrop restart` a third in."""
    print(f"  [service] restart under {seconds:g} s of load at c={RESTART_CONNS}", flush=True)
    with Service(data, bench.work / "state" / "service-restart", 2) as svc:
        loads: dict[str, dict[str, Any]] = {}
        threads = [
            threading.Thread(
                target=lambda k=k, p=p: loads.__setitem__(
                    k, wrk(bench.tools, svc.url + p, seconds, RESTART_CONNS // 2)
                )
            )
            for k, p in URLS.items()
        ]
        for t in threads:
            t.start()
        time.sleep(seconds / 3)
        t0 = time.perf_counter()
        done = svc.cmd("restart")
        took = time.perf_counter() - t0
        for t in threads:
            t.join()
    failed = sum(v.get("non2xx", 0) + v.get("sock_err", 0) for v in loads.values())
    res["restart"] = {
        "seconds": seconds,
        "restart_s": took,
        "restart_rc": done.returncode,
        "restart_out": (done.stdout + done.stderr)[-300:],
        "requests": sum(v.get("requests", 0) for v in loads.values()),
        "failed": failed,
        "wrk": loads,
    }
    print(f"    restart took {took:.1f} s; {res['restart']['requests']} requests, "
          f"{failed} failed; {done.stdout.strip()}", flush=True)  # fmt: skip


def _rps(doc: dict[str, Any]) -> dict[str, int]:
    return {k: round(v.get("rps", 0)) for k, v in doc.items()}


def run(bench: Any) -> dict[str, Any]:
    res: dict[str, Any] = {"errors": [], "direct": {}, "nginx": {}}
    if not bench.tools.get("wrk"):
        res["errors"].append("missing: wrk is not installed")
        return res
    seconds = float(getattr(bench.cfg, "service_seconds", 0) or load.WRK_SECONDS)
    data = ensure_data(bench.work)
    for step, arg in ((scaling, seconds), (restart, _restart_s(bench))):
        try:
            step(bench, data, arg, res)
        except Exception as exc:
            res["errors"].append(f"{step.__name__}: {type(exc).__name__}: {str(exc)[:300]}")
            print(f"    ERROR in {step.__name__}: {exc}", flush=True)
    return res


def _restart_s(bench: Any) -> float:
    given = getattr(bench.cfg, "service_seconds", 0)
    if given:
        return float(given)
    return RESTART_QUICK_S if bench.cfg.quick else RESTART_S


def section(doc: dict[str, Any]) -> list[str]:
    """The suite's Markdown: requests/s by workers, direct and through nginx; the restart."""
    res = doc["results"].get(NAME)
    if not res:
        return []
    lines = ["## Service (issue 7): workers, nginx, restart", ""]
    lines += [
        "| workers | metadata req/s | chunk req/s | via nginx: metadata | via nginx: chunk |"
        " scaling (chunk, vs 1) | nginx overhead (chunk) |",
        "|---|---|---|---|---|---|---|",
    ]
    one = res["direct"].get("1", {}).get("chunk", {}).get("rps") or 0
    for n, direct in res["direct"].items():
        proxied = res["nginx"].get(n, {})
        d_meta, d_chunk = direct["metadata"]["rps"], direct["chunk"]["rps"]
        p_meta = proxied.get("metadata", {}).get("rps")
        p_chunk = proxied.get("chunk", {}).get("rps")
        scale = f"{d_chunk / one:.2f} x" if one else "—"
        over = f"{(1 - p_chunk / d_chunk) * 100:.0f}%" if p_chunk and d_chunk else "—"
        cells = [n, f"{d_meta:.0f}", f"{d_chunk:.0f}", _fmt(p_meta), _fmt(p_chunk), scale, over]
        lines.append("| " + " | ".join(cells) + " |")
    r = res.get("restart")
    if r:
        met = "met" if r["failed"] == 0 and r["restart_rc"] == 0 else "**NOT MET**"
        lines += [
            "",
            f"Restart under load (target: zero failed requests): {met}. `outcrop restart` "
            f"(returned after {r['restart_s']:.1f} s, new workers answering) a third of the "
            f"way into a {r['seconds']:g} s wrk load at concurrency {RESTART_CONNS} on both "
            f"URLs: {r['requests']} requests, {r['failed']} failed (non-2xx + socket errors).",
        ]
    lines += [*(f"- error: {e}" for e in res["errors"]), ""]
    return lines


def _fmt(value: float | None) -> str:
    return f"{value:.0f}" if value else "—"


def main() -> int:
    """Run the suite alone, e.g. `python bench/service.py --seconds 5`."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=0, help="every wrk run (default 10; 30)")
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/outcrop-bench-project"))
    cfg = ap.parse_args()
    bench = argparse.Namespace(
        cfg=argparse.Namespace(service_seconds=cfg.seconds, quick=False),
        work=cfg.work_dir,
        run_dir=cfg.work_dir / "run",
        logs=cfg.work_dir / "logs" / "service",
        tools={"wrk": shutil.which("wrk"), "nginx": servers.which("nginx")},
    )
    for d in (bench.run_dir, bench.logs):
        d.mkdir(parents=True, exist_ok=True)
    res = run(bench)
    doc = {"results": {NAME: res}}
    print("\n".join(section(doc)))
    (bench.logs / "service.json").write_text(json.dumps(doc, indent=1, default=str))
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
