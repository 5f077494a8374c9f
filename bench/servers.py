"""Server processes: started on a free 127.0.0.1 port in their own process group, measured
through /proc, and always stopped by their process group id."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
STARTED: list[subprocess.Popen[Any]] = []
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

XPUBLISH_REQS = [
    "xpublish==0.5.2",
    "xpublish-zarr==0.1.0",
    "xpublish-opendap==0.2.0",
    "xarray==2026.9.0",
    "zarr==3.1.6",
    "netCDF4==1.7.5.1.post1",
    "dask[array]",
    "uvicorn",
]
# xpublish-opendap's dependencies coards and opendap-protocol: built from their sources, as
# in the reference tool (shared/tools/peers-bench)
XPUBLISH_PIP_ARGS = ["--no-binary=coards,opendap-protocol"]
PYDAP_REQS = ["pydap[server,netcdf]==3.5.9"]

XPUBLISH_SERVE = """\
import sys

import xarray as xr
import xpublish

path, port = sys.argv[1], int(sys.argv[2])
ds = xr.open_dataset(path, chunks={})
xpublish.Rest({"grid": ds}).serve(host="127.0.0.1", port=port, log_level="warning",
                                  access_log=False)
"""

NGINX_CONF = """\
worker_processes {workers};
daemon off;
master_process on;
pid {run}/nginx-{port}.pid;
error_log {run}/nginx-{port}.err warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on; tcp_nopush on; tcp_nodelay on;
    keepalive_requests 1000000;
    open_file_cache max=2000 inactive=60s;
    types {{ application/json json; }}
    default_type application/octet-stream;
    client_body_temp_path {run}/nginx-tmp/body;
    proxy_temp_path {run}/nginx-tmp/proxy;
    fastcgi_temp_path {run}/nginx-tmp/fastcgi;
    uwsgi_temp_path {run}/nginx-tmp/uwsgi;
    scgi_temp_path {run}/nginx-tmp/scgi;
{site}}}
"""
STATIC_SITE = """\
    server {{
        listen {host}:{port};
        root {root};
        location / {{ }}
    }}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def which(cmd: str) -> str | None:
    for d in [*os.environ.get("PATH", "").split(":"), "/usr/sbin", "/usr/bin"]:
        p = Path(d) / cmd
        if d and p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


def ensure_tools(logs: Path) -> dict[str, str | None]:
    """nginx and wrk: installed with apt-get when missing and running as root."""
    missing = [t for t in ("nginx", "wrk") if not which(t)]
    if missing and os.geteuid() == 0 and which("apt-get"):
        pkgs = ["nginx-light" if t == "nginx" else t for t in missing]
        print(f"[setup] apt-get install -y {' '.join(pkgs)}", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        with (logs / "apt.log").open("w") as log:
            for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *pkgs]):
                subprocess.run(cmd, env=env, stdout=log, stderr=log, timeout=600, check=False)
    found = {t: which(t) for t in ("nginx", "wrk")}
    for tool, path in found.items():
        if path is None:
            print(f"[setup] {tool} is missing (install it, or run as root): skipping what needs it")
    return found


def ensure_venv(
    venv: Path, reqs: list[str], logs: Path, pip_args: Sequence[str] = ()
) -> Path | None:
    """A venv of its own for a peer server (never the project's), reinstalled when its pins
    change; None (and a message) when pip fails, so the run goes on without that peer."""
    py = venv / "bin" / "python"
    marker = venv / ".bench-reqs"
    want = json.dumps([reqs, list(pip_args)])
    if py.exists() and marker.exists() and marker.read_text() == want:
        return py
    log_path = logs / f"pip-{venv.name}.log"
    print(f"[setup] installing {venv.name} (once; log {log_path})", flush=True)
    try:
        if not py.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        with log_path.open("w") as log:
            cmd = [str(py), "-m", "pip", "install", "-q", *pip_args, *reqs]
            subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, timeout=900)
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"[setup] cannot install {venv.name} ({exc}): skipping what needs it", flush=True)
        return None
    marker.write_text(want)
    return py


def pydap_argv(py: Path, folder: Path, port: int) -> list[str]:
    """pydap's own server (its CLI: gunicorn, one sync worker) over every file of `folder`."""
    return [str(py.parent / "pydap"), "--data", str(folder), "--bind", HOST, "--port", str(port)]


class Server:
    """One server process (and its children) in its own session."""

    def __init__(self, argv: Sequence[str], url: str, log_path: Path, env: dict[str, str]):
        self.argv, self.url, self.log_path = list(argv), url, log_path
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        self.proc: subprocess.Popen[bytes] | None = None
        self.t0 = 0.0

    def start(self, cwd: Path) -> None:
        self.log = self.log_path.open("w")
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
            cwd=str(cwd),
        )
        STARTED.append(self.proc)

    def wait_ready(self, path: str, timeout: float = 300.0) -> float:
        """Seconds from process start to the first 200 on `url + path`."""
        assert self.proc is not None
        deadline = self.t0 + timeout
        first_error: float | None = None
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited rc={self.proc.returncode}, see {self.log_path}: {self.tail()}"
                )
            try:
                with urllib.request.urlopen(self.url + path, timeout=60) as r:
                    r.read()
                    return time.perf_counter() - self.t0
            except urllib.error.HTTPError as exc:
                # listening but failing: give it 30 s to come right, not the whole timeout,
                # asking twice a second so that its log stays readable
                first_error = first_error or time.perf_counter()
                if time.perf_counter() - first_error > 30:
                    said = exc.read()[:200].decode(errors="replace")
                    raise RuntimeError(
                        f"{self.url + path} keeps answering {exc.code}: {said}"
                    ) from exc
                time.sleep(0.5)
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.01)
        raise RuntimeError(f"no 200 on {self.url + path} after {timeout:.0f} s")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self) -> str:
        self.log.flush()
        lines = self.log_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(lines[-3:])[-400:]

    def pids(self) -> list[int]:
        """The server process and all its descendants."""
        if self.proc is None:
            return []
        children: dict[int, list[int]] = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(d.name))
        out, todo = [], [self.proc.pid]
        while todo:
            p = todo.pop()
            out.append(p)
            todo.extend(children.get(p, []))
        return out

    def cpu(self) -> float:
        """CPU seconds (user + system) used so far by the live processes of the tree."""
        total = 0.0
        for p in self.pids():
            try:
                f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(f[11]) + int(f[12])) / CLOCK_TICKS
            except (OSError, IndexError, ValueError):
                continue
        return total

    def memory(self) -> dict[str, Any]:
        """VmRSS and VmHWM in MB: summed over the process tree, and the largest process."""
        per: list[dict[str, float]] = []
        for p in self.pids():
            try:
                text = Path(f"/proc/{p}/status").read_text()
            except OSError:
                continue
            found = re.findall(r"^(VmRSS|VmHWM):\s+(\d+)", text, re.M)
            per.append({k: int(v) / 1024 for k, v in found})
        return {
            "rss_mb": sum(m.get("VmRSS", 0) for m in per),
            "hwm_mb": sum(m.get("VmHWM", 0) for m in per),
            "hwm_max_mb": max((m.get("VmHWM", 0) for m in per), default=0),
            "procs": len(per),
        }

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL after 15 s."""
        if self.proc is None:
            return
        stop_group(self.proc)
        self.log.close()


def stop_group(proc: subprocess.Popen[Any], grace: float = 15.0) -> None:
    if proc.poll() is None:
        signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            signal_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=grace)
    # workers left behind in the same group
    signal_group(proc.pid, signal.SIGKILL)
    if proc in STARTED:
        STARTED.remove(proc)


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_all() -> None:
    for proc in list(STARTED):
        stop_group(proc, grace=5.0)


def nginx_argv(nginx: str, port: int, run: Path, site: str, workers: str = "1") -> list[str]:
    """nginx, one worker (or `workers`, e.g. "auto"), serving `site` (its server block:
    `static_site`, or the DAP2 replay's) with the settings every nginx contender shares."""
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (run / "nginx-tmp" / sub).mkdir(parents=True, exist_ok=True)
    conf = run / f"nginx-{port}.conf"
    conf.write_text(NGINX_CONF.format(run=run, port=port, site=site, workers=workers))
    return [nginx, "-p", str(run), "-e", str(run / f"nginx-{port}.err"), "-c", str(conf)]


def static_site(port: int, root: Path) -> str:
    """A server block sending the files under `root` at their paths."""
    return STATIC_SITE.format(host=HOST, port=port, root=root)
