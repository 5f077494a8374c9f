"""Outcrop against its peers, in one run: `make bench` or `python bench/run.py [options]`.

Generates the data once (cached under the work folder), then measures, on the same data:
for Zarr (issue 2), Outcrop serving the NetCDF4 file over Zarr v2 and v3, xpublish +
xpublish-zarr, nginx serving static Zarr copies (the limit) and local reads; for OPeNDAP
(issue 3), Outcrop serving the NetCDF4 file and an uncompressed NetCDF3 copy over DAP2 (and
DAP4), xpublish-opendap, pydap's server and local reads of both files; for time series
(issue 4, `series.py`), a year of one-second data from a reader program over HAPI. Prints a
Markdown table of medians per suite with ratios against the reference peer and the targets.
See README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import dapbody
import dataset
import jobs
import load
import replay
import report
import series
import servers
import service
from contenders import CONTENDERS, EXTRAS, SUITES, Contender
from servers import HOST, Server

import images

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DEFAULT_WORK = Path(os.environ.get("OUTCROP_BENCH_DIR", "/tmp/outcrop-bench-project"))

# Paired full reads at least: one client read varies by 2x from one read to the next.
PAIRED_FULL_READS = 7


class Bench:
    """Everything one run needs: options, folders, tools, reference checksums, results."""

    def __init__(self, cfg: argparse.Namespace) -> None:
        self.cfg = cfg
        self.work: Path = cfg.work_dir
        self.stamp = time.strftime("%Y%m%d-%H%M%S")
        self.logs = self.work / "logs" / self.stamp
        self.run_dir = self.work / "run"
        for d in (self.logs, self.run_dir, RESULTS):
            d.mkdir(parents=True, exist_ok=True)
        self.nt = dataset.steps_for(cfg.size_mb)
        self.data = self.work / f"data-{self.nt}"
        self.tools: dict[str, str | None] = {}
        self.peer_py: dict[str, Path | None] = {}  # "xpublish", "pydap": their venv's python
        self.ref: dict[str, Any] = {}
        self.replay_dir = self.work / "replay"
        self.replay_headers: dict[str, dict[str, str]] = {}  # by document: dds, das, dods
        self.replay_error: str | None = None
        self.results: dict[str, dict[str, Any]] = {}

    # -- servers -----------------------------------------------------------------------
    def server_for(
        self, c: Contender, tag: str, data: Path | None = None, keep: bool = False
    ) -> Server:
        port = servers.free_port()
        base = f"http://{HOST}:{port}"
        log_path = self.logs / f"{c.name}-{tag}.log"
        env: dict[str, str] = {}
        if c.server == "nginx":
            site = self.nginx_site(c, port)
            argv = servers.nginx_argv(self.tools["nginx"] or "nginx", port, self.run_dir, site)
        elif c.server == "xpublish":
            script = self.run_dir / "xpublish_serve.py"
            script.write_text(servers.XPUBLISH_SERVE)
            nc = str(self.data / c.source)
            argv = [str(self.peer_py["xpublish"]), str(script), nc, str(port)]
        elif c.server == "pydap":
            py = self.peer_py["pydap"]
            assert py is not None
            argv = servers.pydap_argv(py, (self.data / c.source).parent, port)
        else:
            state = self.work / "state" / (f"{c.name}-kept" if keep else f"{c.name}-{tag}")
            if not keep:
                shutil.rmtree(state, ignore_errors=True)
            argv = self.outcrop_argv(data or (self.data / c.source).parent, port, state)
            env = {"OUTCROP_MAX_RESPONSE_MB": "16384", **dict(c.env)}
        return Server(argv, base + c.path, log_path, env)

    def nginx_site(self, c: Contender, port: int) -> str:
        """nginx's server block: the static data folder, or the replayed DAP2 answers."""
        if c.name == replay.NAME:
            args = (self.replay_dir, self.logs, self.ref["subset"], self.replay_headers)
            return replay.site(HOST, port, *args)
        return servers.static_site(port, self.data)

    def outcrop_argv(self, folder: Path, port: int, state: Path) -> list[str]:
        argv = [sys.executable, "-m", "outcrop", "serve", str(folder)]
        argv += ["--host", HOST, "--port", str(port), "--data-dir", str(state)]
        return argv + self.cfg.outcrop_args.split()

    def start(self, c: Contender, res: dict[str, Any], tag: str, keep: bool = False) -> Server:
        """Start `c` and time its first 200 on the metadata; `keep` reuses Outcrop's data
        folder from the previous start (a restart), else it starts empty."""
        srv = self.server_for(c, tag, keep=keep)
        srv.start(self.run_dir)
        series = "warm" if keep else "cold"
        res.setdefault(series, []).append(srv.wait_ready(c.meta))
        note = f"port {srv.url.split(':')[2].split('/')[0]}, {series}"
        print(
            f"    [{tag}] first 200 on metadata after {res[series][-1]:.2f} s ({note})", flush=True
        )
        return srv

    # -- clients -----------------------------------------------------------------------
    def read(self, c: Contender, url: str, what: str, reps: int, budget: float) -> dict[str, Any]:
        """Run reader.py in a fresh process; its JSON answer, or the error it died with."""
        spec = {"kind": c.kind, "url": url, "what": what, "reps": reps, "budget_s": budget}
        spec["zarr_format"] = c.zarr_format
        spec["subset"] = self.ref.get("subset", {})
        return self.run_reader(spec, budget)

    def run_reader(self, spec: dict[str, Any], budget: float) -> dict[str, Any]:
        cmd = [sys.executable, str(HERE / "reader.py"), json.dumps(spec)]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=budget + 300)
        except subprocess.TimeoutExpired:
            return {"times": [], "errors": [f"reader timed out after {budget + 300:.0f} s"]}
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
        if r.returncode != 0 or not lines:
            tail = " | ".join((r.stderr or r.stdout).strip().splitlines()[-3:])
            return {"times": [], "errors": [f"reader rc={r.returncode}: {tail[:400]}"]}
        out: dict[str, Any] = json.loads(lines[-1])
        if r.stderr.strip():  # libnetcdf reports DAP failures there, and may go on
            out["stderr"] = " / ".join(r.stderr.strip().splitlines()[-2:])[:300]
        return out

    # -- workloads ---------------------------------------------------------------------
    def bench_local(self, c: Contender) -> dict[str, Any]:
        path = str(self.data / c.path)
        res: dict[str, Any] = {"errors": []}
        res["full"] = self.read(c, path, "full", self.cfg.runs, self.cfg.full_budget)
        res["subset"] = self.read(c, path, "subset", self.cfg.subset_reps, 120)
        say_full(res)
        return res

    def bench_server(self, c: Contender) -> dict[str, Any]:
        """Start 1: full read (+ RSS), subset. Start 2: wrk on a fresh process. Then starts
        for the cold-start median only."""
        res: dict[str, Any] = {"cold": [], "errors": []}
        srv = None
        try:
            srv = self.start(c, res, "s1")
            res["mem_start"] = srv.memory()
            self.full_and_subset(c, srv, res)
            if c.server == "outcrop" and c.protocol == "zarr" and c.ref:
                res["paired"] = self.paired(c, srv, c.ref)
            if c.server == "outcrop" and c.protocol == "zarr" and c.ref2:
                res["paired2"] = self.paired(c, srv, c.ref2)
            srv.stop()
            srv = None
            if self.tools.get("wrk"):
                srv = self.start(c, res, "s2")
                res["wrk"] = self.wrk_all(c, srv)
                srv.stop()
                srv = None
            while len(res["cold"]) < self.cfg.runs:
                srv = self.start(c, res, f"s{len(res['cold']) + 1}")
                srv.stop()
                srv = None
            if c.server == "outcrop" and "zarr" in c.suites:
                for i in range(self.cfg.runs + 1):  # the first fills the kept folder
                    srv = self.start(c, res, f"w{i}", keep=True)
                    srv.stop()
                    srv = None
                res["warm"] = res["warm"][1:]
        except Exception as exc:
            res["errors"].append(f"{type(exc).__name__}: {exc}")
            print(f"    ERROR {exc}", flush=True)
        finally:
            if srv is not None:
                srv.stop()
        if c.name == replay.NAME:
            res["errors"] += replay.misses(self.logs)
        return res

    def paired(self, c: Contender, srv: Server, ref_name: str) -> dict[str, Any]:
        """Full reads and small subsets from `c` and from nginx serving `ref_name`'s copy
        alternately, in one client process (reader.read_paired): the ratios no drift of the
        machine's speed between contenders can bend."""
        ref = next(r for r in CONTENDERS if r.name == ref_name)
        nginx = self.server_for(ref, "paired")
        nginx.start(self.run_dir)
        try:
            nginx.wait_ready(ref.meta)
            spec = {"kind": c.kind, "url": c.client_url(srv.url), "what": "paired"}
            spec |= {"ref_url": ref.client_url(nginx.url), "zarr_format": c.zarr_format}
            spec |= {
                "reps": max(self.cfg.runs, PAIRED_FULL_READS),
                "subset_reps": self.cfg.subset_reps,
            }
            spec |= {"subset": self.ref.get("subset", {}), "budget_s": self.cfg.full_budget}
            out = self.run_reader(spec, self.cfg.full_budget * 4)
        finally:
            nginx.stop()
        say_paired(out, ref.name)
        return out

    def full_and_subset(self, c: Contender, srv: Server, res: dict[str, Any]) -> None:
        """Full reads (+ the server's CPU and peak RSS), for DAP2 the one-GET raw reads, then
        the small subset."""
        url = c.client_url(srv.url)
        cpu0 = srv.cpu()
        res["full"] = self.read(c, url, "full", self.cfg.runs, self.cfg.full_budget)
        reads = len(res["full"]["times"]) + ("first_s" in res["full"])
        res["full"]["srv_cpu_s"] = (srv.cpu() - cpu0) / max(1, reads)
        res["mem_full"] = srv.memory()
        say_full(res)
        if not srv.alive():
            raise RuntimeError(f"server died during the full read: {srv.tail()}")
        if c.protocol == "dap2":
            cpu0 = srv.cpu()
            res["raw"] = self.read(c, url, "raw", self.cfg.runs, self.cfg.full_budget)
            res["raw"]["srv_cpu_s"] = (srv.cpu() - cpu0) / max(1, len(res["raw"]["times"]))
            res["mem_raw"] = srv.memory()
            raw = res["raw"]
            print(
                f"    one GET .dods?temp: {[round(t, 2) for t in raw['times']]} s, server VmHWM "
                f"{res['mem_raw']['hwm_mb']:.0f} MB {raw['errors'] or ''}",
                flush=True,
            )
            if not srv.alive():
                raise RuntimeError(f"server died during the raw read: {srv.tail()}")
        res["subset"] = self.read(c, url, "subset", self.cfg.subset_reps, 180)
        times = res["subset"]["times"]
        ms = f"{1e3 * sorted(times)[len(times) // 2]:.1f} ms" if times else "—"
        print(f"    subset open+read: median {ms} {res['subset']['errors'] or ''}", flush=True)

    def wrk_all(self, c: Contender, srv: Server) -> dict[str, Any]:
        out: dict[str, Any] = {}
        meta = load.probe(srv.url + c.meta)
        n_steps = time_chunks(meta.get("body", b""), self.nt)
        plan = [("chunk", c.chunk, 0), ("meta", c.meta, 0), ("cycle", c.chunk, n_steps)]
        for key, suffix, cycle in plan:
            out[key] = self.wrk_one(srv, srv.url + suffix, cycle, c.protocol)
            entry = out[key]
            rps = report.median([r.get("rps") for r in entry["runs"]])
            errors = sum(r.get("non2xx", 0) + r.get("sock_err", 0) for r in entry["runs"])
            shown = entry.get("skipped") or f"{rps or 0:.0f} req/s, {errors} errors"
            print(f"    wrk {key}: {shown}", flush=True)
            if not srv.alive():
                raise RuntimeError(f"server died under wrk: {srv.tail()}")
        return out

    def wrk_one(self, srv: Server, url: str, cycle_n: int, protocol: str) -> dict[str, Any]:
        pr = load.probe(url.replace("{t}", "0"))
        body = pr.pop("body", b"")
        entry: dict[str, Any] = {"probe": pr, "runs": [], "n_distinct": cycle_n or None}
        if protocol.startswith("dap") and "{t}" in url and pr["status"] == 200:
            entry["check"] = self.check_step(body, protocol)
        if pr["status"] != 200:
            answer = f"answered {pr['status']}" if pr["status"] else "failed"
            entry["skipped"] = f"probe {answer}: {pr.get('error', '')[:200]}"
            return entry
        for _ in range(self.cfg.runs):
            cpu0, t0 = srv.cpu(), time.perf_counter()
            run = load.run_wrk(self.tools["wrk"] or "wrk", url, self.run_dir, cycle_n)
            run["srv_cores"] = (srv.cpu() - cpu0) / (time.perf_counter() - t0)
            entry["runs"].append(run)
            if not srv.alive():
                break
        return entry

    def check_step(self, body: bytes, protocol: str) -> str:
        """Whether a DAP2 or DAP4 response to `temp[0][…][…]` holds time step 0's values."""
        try:
            if protocol == "dap4":
                values = dapbody.dap4_first_array(body, dataset.NY * dataset.NX)
            else:
                values = dapbody.dap2_first_array(body)
        except ValueError as exc:
            return f"**WRONG VALUES**: {exc}"[:200]
        if zlib.crc32(values) != self.ref["step_crcs"][0]:
            return f"**WRONG VALUES** in time step 0 ({values.size} values)"
        return "time step 0: values ok"

    def bench_restart(self) -> dict[str, Any]:
        """Index 1,000 small files once, then time restarts to the first 200 on /api/datasets."""
        folder = dataset.ensure_many(self.work)
        c = Contender("outcrop-restart", "Outcrop", "outcrop", "/api/datasets", "/api/datasets")
        res: dict[str, Any] = {"times": [], "errors": []}
        state = self.work / "state" / "restart"
        shutil.rmtree(state, ignore_errors=True)
        try:
            for i in range(self.cfg.runs + 1):
                port = servers.free_port()
                argv = self.outcrop_argv(folder, port, state)
                log_path = self.logs / f"outcrop-restart-{i}.log"
                srv = Server(argv, f"http://{HOST}:{port}{c.path}", log_path, {})
                try:
                    srv.start(self.run_dir)
                    took = srv.wait_ready("", timeout=600)
                    body = load.probe(srv.url + "?limit=1")
                    res["total"] = json.loads(body["body"] or b"{}").get("total")
                finally:
                    srv.stop()
                if i == 0:
                    res["index_s"] = took
                else:
                    res["times"].append(took)
                label = "first start, indexing" if i == 0 else "restart"
                print(
                    f"    {label}: first 200 after {took:.2f} s, total={res['total']}", flush=True
                )
        except Exception as exc:
            res["errors"].append(f"{type(exc).__name__}: {exc}")
            print(f"    ERROR {exc}", flush=True)
        return res

    def bench_stream(self) -> dict[str, Any]:
        """Peak server RSS while a 5 GB NetCDF subset streams from /api/datasets/{id}/data."""
        info = dataset.ensure_big(self.data, self.ref)
        req = dataset.big_request(info["nt_src"], self.ref["step_crcs"])
        c = Contender("outcrop-stream", "Outcrop", "outcrop", "/api/datasets", "")
        res: dict[str, Any] = {"request": req, "errors": [], "cold": []}
        srv = self.server_for(c, "big", data=self.data / "big")
        try:
            srv.start(self.run_dir)
            srv.wait_ready("", timeout=600)
            small = f"var=temp&time={dataset.EPOCH}/{dataset.EPOCH}&format=nc"
            pr = load.probe(f"{srv.url}/big/data?{small}")
            if pr["status"] != 200:
                res["skipped"] = (
                    f"GET /api/datasets/{{id}}/data answered {pr['status']} "
                    f"({pr.get('error', '')[:160]}): route not available, workload skipped"
                )
                print(f"    {res['skipped']}", flush=True)
                return res
            url = f"{srv.url}/big/data?{req['query']}"
            res["stream"] = self.stream_watched(srv, url, res)
            srv.stop()
            res["table"] = self.bench_stream_table(c, req)
        except Exception as exc:
            res["errors"].append(f"{type(exc).__name__}: {exc}")
            print(f"    ERROR {exc}", flush=True)
        finally:
            srv.stop()
        return res

    def bench_stream_table(self, c: Contender, req: dict[str, Any]) -> dict[str, Any]:
        """The same subset as an Arrow IPC stream (rows of time, lat, lon, temp), on a
        fresh server so that its peak RSS is its own."""
        res: dict[str, Any] = {"format": "arrow", "errors": []}
        srv = self.server_for(c, "big-arrow", data=self.data / "big")
        try:
            srv.start(self.run_dir)
            srv.wait_ready("", timeout=600)
            url = f"{srv.url}/big/data?{req['query'].replace('format=nc', 'format=arrow')}"
            res["stream"] = self.stream_watched(srv, url, res, what="table")
        except Exception as exc:
            res["errors"].append(f"{type(exc).__name__}: {exc}")
            print(f"    ERROR {exc}", flush=True)
        finally:
            srv.stop()
        return res

    def stream_watched(
        self, srv: Server, url: str, res: dict[str, Any], what: str = "stream"
    ) -> dict[str, Any]:
        """Run the streaming reader while sampling the server's RSS twice a second."""
        spec = {"kind": "stream", "what": what, "url": url, "budget_s": 1500}
        spec["path"], spec["step"] = str(self.work / "stream-out.nc"), dataset.NY * dataset.NX
        cmd = [sys.executable, str(HERE / "reader.py"), json.dumps(spec)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True)
        peak = 0.0
        try:
            deadline = time.perf_counter() + 1800
            while proc.poll() is None and time.perf_counter() < deadline:
                peak = max(peak, srv.memory()["rss_mb"])
                time.sleep(0.5)
            res["mem"] = {**srv.memory(), "rss_peak_sampled_mb": peak}
        finally:
            servers.stop_group(proc)
        stdout = proc.stdout.read() if proc.stdout else ""
        lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
        out: dict[str, Any] = json.loads(lines[-1]) if lines else {"errors": ["no answer"]}
        gb, hwm = out.get("nbytes", 0) / 1e9, res["mem"]["hwm_mb"]
        first = out.get("first_byte_s")
        print(
            f"    {what}: {gb:.2f} GB, {out.get('times')} s, first byte after "
            f"{first if first is None else round(first, 1)} s, server VmHWM {hwm:.0f} MB",
            flush=True,
        )
        return out

    def wait_quiet(self) -> float:
        """Wait (at most --wait-quiet s) until other processes leave the CPU mostly idle."""
        deadline = time.perf_counter() + self.cfg.wait_quiet
        others = busy_cores()
        if others > 0.3 and self.cfg.wait_quiet > 0:
            print(f"    (other processes busy: {others:.2f} cores; waiting for quiet)", flush=True)
        while others > 0.3 and time.perf_counter() < deadline:
            time.sleep(4)
            others = busy_cores()
        return others

    # -- the run -------------------------------------------------------------------------
    def setup(self) -> None:
        self.tools = servers.ensure_tools(self.logs)
        peers = {c.server for c in self.chosen()}
        if "xpublish" in peers:
            reqs, args = servers.XPUBLISH_REQS, servers.XPUBLISH_PIP_ARGS
            venv = self.work / "venv-xpublish"
            self.peer_py["xpublish"] = servers.ensure_venv(venv, reqs, self.logs, args)
        if "pydap" in peers:
            venv = self.work / "venv-pydap"
            self.peer_py["pydap"] = servers.ensure_venv(venv, servers.PYDAP_REQS, self.logs)
        if not self.chosen() and not self.extras():
            return  # the series suite alone: no grid data
        self.ref = dataset.ensure(self.data, self.nt)
        if any(c.source == dataset.NC3 or c.path == dataset.NC3 for c in self.chosen()):
            dataset.ensure_nc3(self.data, self.ref)
            self.ref["sizes_mb"][dataset.NC3] = round(
                dataset.size_of(self.data / dataset.NC3) / 1e6, 1
            )
        warm_page_cache(self.data)
        if any(c.name == replay.NAME for c in self.chosen()) and self.tools.get("nginx"):
            self.capture_replay()

    def capture_replay(self) -> None:
        """Outcrop's answers for grid3.nc saved as files, once per run so they are what this
        Outcrop sends, from a server of its own stopped right after; when that fails,
        nginx-dap2-replay is skipped with the reason."""
        source = next(c for c in CONTENDERS if c.name == replay.SOURCE)
        print(f"[setup] capturing {source.name}'s answers for {replay.NAME}", flush=True)
        shutil.rmtree(self.replay_dir, ignore_errors=True)
        srv = self.server_for(source, "capture")
        try:
            srv.start(self.run_dir)
            srv.wait_ready(source.meta)
            args = (self.replay_dir, self.ref["subset"], self.nt)
            self.replay_headers = replay.capture(srv.url, *args)
        except Exception as exc:
            self.replay_error = f"capturing Outcrop's answers failed: {type(exc).__name__}: {exc}"
            print(f"[setup] {self.replay_error}", flush=True)
        finally:
            srv.stop()

    def chosen(self) -> list[Contender]:
        names = set(self.cfg.only.split(",")) if self.cfg.only else None
        suites = SUITES if self.cfg.suite == "all" else (self.cfg.suite,)
        return [
            c
            for c in CONTENDERS
            if (names is None or c.name in names) and set(c.suites) & set(suites)
        ]

    def extras(self) -> list[str]:
        """The issue-2 extras this run measures."""
        if self.cfg.suite not in ("all", "zarr"):
            return []
        names = self.cfg.only.split(",") if self.cfg.only else list(EXTRAS)
        big = self.cfg.big
        return [n for n in EXTRAS if n in names and (big or n != "outcrop-stream")]

    def runnable(self, c: Contender) -> str | None:
        """Why `c` cannot run here, or None."""
        if c.server == "nginx" and not self.tools.get("nginx"):
            return "nginx is not installed"
        if c.name == replay.NAME and self.replay_error:
            return self.replay_error
        if c.server in ("xpublish", "pydap") and self.peer_py.get(c.server) is None:
            return f"{c.server} could not be installed"
        return None

    def run(self) -> None:
        for c in self.chosen():
            why = self.runnable(c)
            if why:
                print(f"[{c.name}] skipped: {why}", flush=True)
                self.results[c.name] = {"errors": [], "skipped": why}
                continue
            others = self.wait_quiet()
            print(f"[{c.name}] {c.label} (other processes busy: {others:.2f} cores)", flush=True)
            t0 = time.perf_counter()
            bench = self.bench_server if c.server else self.bench_local
            self.results[c.name] = {**bench(c), "others_busy": others}
            print(f"    done in {time.perf_counter() - t0:.0f} s", flush=True)
            self.save()
        if "outcrop-restart" in self.extras():
            print("[outcrop-restart] restart over 1,000 indexed files", flush=True)
            self.results["outcrop-restart"] = self.bench_restart()
        if "outcrop-stream" in self.extras():
            print("[outcrop-stream] server RSS while streaming a 5 GB subset", flush=True)
            self.results["outcrop-stream"] = self.bench_stream()
        if self.cfg.suite in ("all", "series") and series.NAME in (
            self.cfg.only or series.NAME
        ).split(","):
            others = self.wait_quiet()
            print(f"[{series.NAME}] a year of 1 s data over HAPI (busy: {others:.2f})", flush=True)
            self.results[series.NAME] = {**series.run(self), "others_busy": others}
        if self.cfg.suite in ("all", "jobs") and jobs.NAME in (self.cfg.only or jobs.NAME).split(
            ","
        ):
            print(f"[{jobs.NAME}] mask_country jobs over 20 years of monthly 0.5° data", flush=True)
            self.results[jobs.NAME] = jobs.run(self)
            self.save()
        if self.cfg.suite in ("all", "images") and images.NAME in (
            self.cfg.only or images.NAME
        ).split(","):
            print(f"[{images.NAME}] 5 arcmin cutouts from 100 images of 4k x 4k", flush=True)
            self.results[images.NAME] = images.run(self)
            self.save()
        if self.cfg.suite in ("all", "service") and service.NAME in (
            self.cfg.only or service.NAME
        ).split(","):
            print(f"[{service.NAME}] workers, nginx in front, restart under load", flush=True)
            self.results[service.NAME] = service.run(self)
            self.save()
        self.save()

    def meta(self) -> dict[str, Any]:
        return {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": machine(),
            "versions": versions(self.peer_py, self.tools),
            "options": {k: str(v) for k, v in vars(self.cfg).items()},
            "wrk": f"-t{load.WRK_THREADS} -c{load.WRK_CONNS} -d{load.WRK_SECONDS}s --latency",
        }

    def save(self) -> str:
        doc = {"meta": self.meta(), "ref": self.ref, "results": self.results}
        (RESULTS / f"{self.stamp}.json").write_text(json.dumps(doc, indent=1, default=str))
        md = report.render(doc, [c.__dict__ for c in CONTENDERS])
        (RESULTS / f"{self.stamp}.md").write_text(md)
        return md


def say_paired(out: dict[str, Any], ref: str) -> None:
    def ms(key: str) -> list[float]:
        return [round(t * 1e3) for t in out.get(key, [])]

    print(
        f"    paired with {ref}, full read ms: {ms('full_times')} vs {ms('ref_full_times')}; "
        f"subset ms: {ms('subset_times')} vs {ms('ref_subset_times')} {out['errors'] or ''}",
        flush=True,
    )


def say_full(res: dict[str, Any]) -> None:
    f = res["full"]
    mem = res.get("mem_full")
    rss = f", server VmHWM {mem['hwm_mb']:.0f} MB" if mem else ""
    first = f"first (untimed) {f['first_s']:.2f} s, then " if "first_s" in f else ""
    times = [round(t, 2) for t in f["times"]]
    print(f"    full read: {first}{times} s{rss} {f['errors'] or ''}", flush=True)


def time_chunks(meta_body: bytes, default: int) -> int:
    """How many chunks `temp` has along time, from a v2 or v3 consolidated document."""
    try:
        doc = json.loads(meta_body)
        if "metadata" in doc and "temp/.zarray" in doc["metadata"]:
            arr = doc["metadata"]["temp/.zarray"]
            shape, chunks = arr["shape"], arr["chunks"]
        else:
            arr = doc["consolidated_metadata"]["metadata"]["temp"]
            shape, chunks = arr["shape"], arr["chunk_grid"]["configuration"]["chunk_shape"]
        return int(-(-shape[0] // chunks[0]))
    except (ValueError, KeyError, TypeError):
        return default


def busy_cores(seconds: float = 1.0) -> float:
    """Cores kept busy by other processes, sampled while this benchmark runs nothing."""

    def ticks() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields[:8]) - idle, sum(fields[:8])

    busy0, total0 = ticks()
    time.sleep(seconds)
    busy1, total1 = ticks()
    return (busy1 - busy0) / max(1, total1 - total0) * (os.cpu_count() or 1)


def warm_page_cache(folder: Path) -> None:
    """Read every data file once so no contender pays for the first read from disk."""
    for f in folder.rglob("*"):
        if f.is_file() and "big" not in f.parts:
            with f.open("rb") as fh:
                while fh.read(1 << 24):
                    pass


def machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} CPU, {mem:.0f} GiB RAM, Python {sys.version.split()[0]}"


def versions(peer_py: dict[str, Path | None], tools: dict[str, str | None]) -> str:
    from importlib.metadata import PackageNotFoundError, version

    names = ["outcrop", "xarray", "zarr", "numpy", "dask", "netCDF4", "h5py", "fsspec"]
    names += ["aiohttp", "fastapi", "uvicorn"]
    found = []
    for name in names:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            continue
    peers = {"xpublish": ("xpublish", "xpublish-zarr", "xpublish-opendap"), "pydap": ("pydap",)}
    for peer, py in peer_py.items():
        if py is None:
            continue
        cmd = [str(py), "-m", "pip", "list", "--format=json"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        listed = json.loads(r.stdout or "[]")
        pins = {p["name"].lower().replace("_", "-"): p["version"] for p in listed}
        found += [f"{n} {pins[n]}" for n in peers[peer] if n in pins]
    for tool, path in tools.items():
        if path:
            r = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=30)
            found.append((r.stderr + r.stdout).strip().splitlines()[0][:40] or tool)
    return ", ".join(found)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-mb", type=float, default=378, help="decoded size of temp (MB)")
    ap.add_argument("--runs", type=int, default=3, help="full reads, wrk runs, server starts")
    ap.add_argument("--quick", action="store_true", help="1 run of each, 5 subset reads")
    ap.add_argument("--subset-reps", type=int, default=20)
    ap.add_argument("--full-budget", type=float, default=240, help="seconds for the full reads")
    names = ", ".join(
        [c.name for c in CONTENDERS] + [*EXTRAS, series.NAME, jobs.NAME, images.NAME, service.NAME]
    )
    ap.add_argument("--only", help=f"comma-separated, among: {names}")
    ap.add_argument(
        "--suite",
        choices=("all", *SUITES),
        default="all",
        help="zarr: issue 2's contenders and extras; dap: issue 3's (OPeNDAP); series: issue "
        "4's time series over HAPI; jobs: issue 5's mask_country jobs; images: issue 6's cutouts; "
        "service: issue 7's "
        "workers, nginx and restart; all: every suite",
    )
    ap.add_argument("--big", action="store_true", help="also stream a 5 GB subset (RSS)")
    ap.add_argument("--outcrop-args", default="", help="extra `outcrop serve` options")
    ap.add_argument("--work-dir", type=Path, default=DEFAULT_WORK)
    ap.add_argument(
        "--wait-quiet", type=float, default=60, help="seconds to wait for a quiet CPU per contender"
    )
    cfg = ap.parse_args(argv)
    if cfg.quick:
        cfg.runs, cfg.subset_reps = 1, 5
    known = {c.name for c in CONTENDERS} | {
        *EXTRAS,
        series.NAME,
        jobs.NAME,
        images.NAME,
        service.NAME,
    }
    unknown = set(cfg.only.split(",")) - known if cfg.only else set()
    if unknown:
        ap.error(f"--only: unknown {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    return cfg


def main() -> int:
    cfg = parse_args()
    bench = Bench(cfg)

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    t0 = time.perf_counter()
    try:
        bench.setup()
        bench.run()
    finally:
        servers.stop_all()
        md = bench.save()
    print()
    print(md)
    print(f"[done] in {time.perf_counter() - t0:.0f} s: {RESULTS}/{bench.stamp}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
