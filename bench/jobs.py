"""The jobs suite (issue 5, `--suite jobs`): `mask_country` jobs over 20 years of monthly
0.5° data (240 x 360 x 720 float32, one NetCDF4 file), through `POST /api/jobs`.

Measures, against the issue's target: the throughput of a batch of distinct jobs (100, or
20 with `--quick`), submitted at once, on the embedded queue (1 and 2 consumer threads, and
2 server processes) and on Redis (1 and 2 `outcrop worker` processes), with the scaling from
one worker to two; one job's time from POST to its zip downloaded against a plain xarray
script doing the same masking in a process of its own (overhead < 20%); whether the job's
output equals the script's; the server's (and workers') peak RSS. See README.md.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

NAME = "outcrop-jobs"
NT, NY, NX = 240, 360, 720  # 20 years of months on a 0.5° grid
SEED = 20261205
VERSION = "1"
VAR, FILE = "tas", "tas_monthly.nc"
JOBS, JOBS_QUICK = 100, 20
SINGLE, WARMUP = "DEU", "FRA"  # the single job's country, and the unmeasured first job's
NATURAL_EARTH = (
    Path(__file__).resolve().parent.parent
    / "src/outcrop/data/naturalearth_lowres/naturalearth_lowres.shp"
)
NAMED_CODES = {"Kosovo": "XKX", "France": "FRA", "Norway": "NOR"}  # docs/jobs-operations.md
REDIS = "redis://127.0.0.1:6379"
REDIS_DBS = (15, 14, 13, 12, 11)  # the first empty one is used, flushed before and after
OVERHEAD = ("< 20%", 0.20)
CLIENT = {"X-Outcrop-Client": "outcrop-bench"}


@dataclass(frozen=True)
class Setup:
    """One way of running the jobs: embedded threads x server processes, or Redis workers."""

    key: str
    label: str
    threads: int = 1  # OUTCROP_JOB_WORKERS of each server process (embedded)
    procs: int = 1  # `outcrop serve --workers`
    redis: int = 0  # `outcrop worker` processes; 0: the embedded queue


SETUPS = (
    Setup("embedded-1", "embedded (SQLite), 1 consumer thread"),
    Setup("embedded-2", "embedded (SQLite), 2 consumer threads", threads=2),
    Setup("embedded-2p", "embedded (SQLite), `--workers 2` x 1 thread", procs=2),
    Setup("redis-1", "Redis, 1 `outcrop worker`", redis=1),
    Setup("redis-2", "Redis, 2 `outcrop worker`s", redis=2),
)
SCALING = (  # (label, two workers, one worker)
    ("embedded: 2 threads ÷ 1 thread", "embedded-2", "embedded-1"),
    ("embedded: 2 processes ÷ 1 thread", "embedded-2p", "embedded-1"),
    ("Redis: 2 workers ÷ 1 worker", "redis-2", "redis-1"),
)

SCRIPT = """\
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import shapefile
import shapely
import xarray as xr
from shapely.geometry import shape

src, code, out, shp = sys.argv[1:5]
t1 = time.perf_counter()
with shapefile.Reader(shp) as reader:
    geom = next(
        shape(item.shape.__geo_interface__)
        for item in reader.iterShapeRecords()
        if item.record["iso_a3"] == code
    )
geom = shapely.make_valid(geom)
shapely.prepare(geom)
ds = xr.open_dataset(src)
lon, lat = np.meshgrid(ds.lon.values, ds.lat.values)
inside = xr.DataArray(shapely.contains_xy(geom, lon, lat), dims=("lat", "lon"))
tas = ds.tas.where(inside)
keep = {k: v for k, v in ds.tas.encoding.items() if k in ("dtype", "_FillValue")}
encoding = {"tas": {**keep, "zlib": True, "complevel": 4, "shuffle": True}}
ds.assign(tas=tas).to_netcdf(out, engine="netcdf4", format="NETCDF4", encoding=encoding)
print(json.dumps({"import_s": t1 - t0, "work_s": time.perf_counter() - t1}))
"""


class Missing(RuntimeError):
    """A piece the suite needs is not there (yet): the message says which."""


# -- the data ------------------------------------------------------------------------------
def ensure_data(work: Path) -> dict[str, Any]:
    """`<work>/jobs/serve/tas_monthly.nc` (once, fixed seed) and the countries that hold at
    least one cell centre of its grid, in `<work>/jobs/reference.json`."""
    root = work / "jobs"
    ref_path = root / "reference.json"
    if ref_path.exists():
        ref: dict[str, Any] = json.loads(ref_path.read_text())
        if ref.get("version") == VERSION:
            return ref
    shutil.rmtree(root, ignore_errors=True)
    (root / "serve").mkdir(parents=True)
    t0 = time.perf_counter()
    print(f"    [data] writing {NT} x {NY} x {NX} float32 `{VAR}` (once)", flush=True)
    write_data(root / "serve" / FILE)
    ref = {"version": VERSION, "seed": SEED, "shape": [NT, NY, NX]}
    ref["countries"] = countries_on_grid()
    ref["gen_s"] = round(time.perf_counter() - t0, 1)
    ref["size_mb"] = round((root / "serve" / FILE).stat().st_size / 1e6, 1)
    ref_path.write_text(json.dumps(ref, indent=1))
    print(f"    [data] done in {ref['gen_s']} s, {ref['size_mb']} MB", flush=True)
    return ref


def grid() -> tuple[np.ndarray, np.ndarray]:
    """Cell centres: latitude north to south (as ISIMIP files), longitude -179.75..179.75."""
    return np.linspace(89.75, -89.75, NY), np.linspace(-179.75, 179.75, NX)


def write_data(path: Path) -> None:
    """Monthly means: climatology + seasonal cycle + noise, quantised to 1/64 K, zlib 4 +
    shuffle in chunks of one month, CF coordinates, written month by month."""
    import netCDF4

    rng = np.random.default_rng(SEED)
    lat, lon = grid()
    lat_r, lon_r = np.deg2rad(lat)[:, None], np.deg2rad(lon)[None, :]
    base = 273.15 + 30 * np.cos(lat_r) ** 2 - 8 + 3 * np.sin(2 * lon_r) * np.cos(lat_r)
    months = np.arange("2001-01", "2021-01", dtype="datetime64[M]")
    days = (months.astype("datetime64[D]") - np.datetime64("2001-01-01")).astype(float) + 14
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        for name, size in (("time", NT), ("lat", NY), ("lon", NX)):
            nc.createDimension(name, size)
        coord(nc, "time", days, units="days since 2001-01-01 00:00:00", calendar="standard")
        coord(nc, "lat", lat, units="degrees_north", standard_name="latitude")
        coord(nc, "lon", lon, units="degrees_east", standard_name="longitude")
        tas = nc.createVariable(
            VAR, "f4", ("time", "lat", "lon"), zlib=True, complevel=4, shuffle=True,
            chunksizes=(1, NY, NX), fill_value=np.float32(1e20),
        )  # fmt: skip
        tas.setncatts({"units": "K", "standard_name": "air_temperature"})
        for i in range(NT):
            season = 12 * np.sin(2 * np.pi * (i - 3) / 12) * np.sin(lat_r)
            noise = rng.standard_normal((NY, NX)) * 1.5
            tas[i] = np.round((base + season + noise) * 64).astype(np.float32) / 64


def coord(nc: Any, name: str, values: np.ndarray, **attrs: str) -> None:
    var = nc.createVariable(name, "f8", (name,))
    var[:] = values
    var.setncatts({**attrs, "axis": {"time": "T", "lat": "Y", "lon": "X"}[name]})


def countries_on_grid() -> dict[str, int]:
    """Natural Earth codes (the rule of docs/jobs-operations.md) with the number of cell
    centres strictly inside, for those holding at least one, read with pyshp + shapely."""
    import shapefile
    import shapely
    from shapely.geometry import shape

    lat, lon = grid()
    x, y = np.meshgrid(lon, lat)
    found = {}
    with shapefile.Reader(str(NATURAL_EARTH)) as reader:
        for item in reader.iterShapeRecords():
            iso, name = item.record["iso_a3"], item.record["name"]
            code = iso.upper() if len(iso) == 3 and iso.isalpha() else NAMED_CODES.get(name)
            geom = shapely.make_valid(shape(item.shape.__geo_interface__))
            cells = int(shapely.contains_xy(geom, x, y).sum())
            if code and cells:
                found[code] = cells
    return dict(sorted(found.items()))


def warm(path: Path) -> None:
    with path.open("rb") as fh:
        while fh.read(1 << 24):
            pass


# -- servers and workers --------------------------------------------------------------------
class Deployment:
    """`outcrop serve` on the data folder (fresh data folder), and its `outcrop worker`s
    for Redis; memory sampled five times a second while it runs."""

    def __init__(self, bench: Any, setup: Setup, queue: str | None, tag: str) -> None:
        import servers

        self.bench, self.setup, self.queue, self.tag = bench, setup, queue, tag
        self.folder = bench.work / "jobs" / "serve"
        self.state = bench.work / "state" / f"jobs-{tag}"
        shutil.rmtree(self.state, ignore_errors=True)
        port = servers.free_port()
        self.base = f"http://{servers.HOST}:{port}"
        argv = bench.outcrop_argv(self.folder, port, self.state)
        argv += ["--workers", str(setup.procs)] if setup.procs > 1 else []
        env = {"OUTCROP_QUEUE_URL": queue} if queue else {}
        env["OUTCROP_JOB_WORKERS"] = str(setup.threads)
        self.srv = servers.Server(argv, self.base, bench.logs / f"{NAME}-{tag}.log", env)
        self.workers: list[Any] = []
        self.peak = {"server_mb": 0.0, "workers_mb": 0.0}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def start(self) -> str:
        """Start the server, wait for the catalog to list the file, then start the workers
        and wait until each consumes; the dataset's id."""
        self.srv.start(self.bench.run_dir)
        self.srv.wait_ready("/api/datasets", timeout=120)
        ds_id = self.dataset_id()
        for i in range(self.setup.redis):
            self.workers.append(self.worker(i))
        for w in self.workers:
            wait_log(w, "job_consumer_started", 60)
        self._thread.start()
        return ds_id

    def dataset_id(self) -> str:
        import httpx

        body = httpx.get(self.base + "/api/datasets", timeout=60).json()
        ids = [d["id"] for d in body.get("datasets", [])]
        if len(ids) != 1:
            raise Missing(f"/api/datasets should list the one file {FILE}, lists {ids}")
        return str(ids[0])

    def worker(self, i: int) -> Any:
        import servers

        argv = [sys.executable, "-m", "outcrop", "worker", "--data-dir", str(self.state)]
        env = {
            "OUTCROP_QUEUE_URL": self.queue or "",
            "OUTCROP_PATHS": json.dumps([str(self.folder)]),
        }
        log_path = self.bench.logs / f"{NAME}-{self.tag}-worker{i}.log"
        w = servers.Server(argv, self.base, log_path, env)
        w.start(self.bench.run_dir)
        return w

    def _sample(self) -> None:
        while not self._done.wait(0.2):
            self.peak["server_mb"] = max(self.peak["server_mb"], self.srv.memory()["rss_mb"])
            rss = sum(w.memory()["rss_mb"] for w in self.workers)
            self.peak["workers_mb"] = max(self.peak["workers_mb"], rss)

    def stop(self) -> dict[str, Any]:
        """Stop everything; the memory figures (MB): VmHWM of the server's largest process
        and of its tree, the sampled peaks, and the workers' largest VmHWM."""
        self._done.set()
        mem = self.srv.memory()
        out = {"hwm_mb": mem["hwm_max_mb"], "hwm_tree_mb": mem["hwm_mb"], **self.peak}
        out["worker_hwm_mb"] = max((w.memory()["hwm_max_mb"] for w in self.workers), default=0)
        died = [w.log_path.name for w in self.workers if not w.alive()]
        if not self.srv.alive():
            rc = self.srv.proc.returncode if self.srv.proc else None
            died.append(f"server (rc {rc}; log: {self.srv.tail()[-200:]})")
        for w in self.workers:
            w.stop()
        self.srv.stop()
        shutil.rmtree(self.state, ignore_errors=True)
        return {**out, "died": died} if died else out


def wait_log(w: Any, marker: str, timeout: float) -> None:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if not w.alive():
            raise RuntimeError(f"a worker exited: {w.tail()}")
        if marker in w.log_path.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise RuntimeError(f"no {marker} in {w.log_path} after {timeout:.0f} s")


class Redis:
    """A Redis database of its own: the first empty one of REDIS_DBS, flushed before and
    after (huey's keys are named by the queue, so a shared database would share jobs)."""

    def __init__(self) -> None:
        import redis

        self.client: Any = None
        for db in REDIS_DBS:
            try:
                client = redis.Redis.from_url(f"{REDIS}/{db}", socket_timeout=5)
                if client.dbsize() == 0:
                    self.client, self.url = client, f"{REDIS}/{db}"
                    break
            except redis.RedisError as exc:
                raise Missing(f"Redis at {REDIS} is not reachable: {exc}") from exc
        if self.client is None:
            raise Missing(f"Redis databases {REDIS_DBS} all hold keys: none free to use")

    def flush(self) -> None:
        self.client.flushdb()


# -- the client -----------------------------------------------------------------------------
def stamp(text: str) -> float:
    """A job document's time (ISO 8601, `Z`) as a Unix time."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def submit(client: Any, ds_id: str, code: str) -> dict[str, Any]:
    body = {"datasets": [ds_id], "operations": [{"operation": "mask_country", "country": code}]}
    body["output"] = {"format": "netcdf"}
    r = client.post("/api/jobs", json=body)
    if r.status_code not in (200, 201):
        raise RuntimeError(f"POST /api/jobs ({code}) answered {r.status_code}: {r.text[:300]}")
    doc: dict[str, Any] = r.json()
    return doc


def wait_all(client: Any, ids: list[str], timeout: float, every: float) -> list[dict[str, Any]]:
    """Poll `GET /api/jobs/{id}` for the oldest job not yet ended, every `every` s, until
    every job has ended (finished, failed or cancelled)."""
    docs: dict[str, dict[str, Any]] = {}
    deadline = time.perf_counter() + timeout
    pending = list(ids)
    while pending:
        r = client.get(f"/api/jobs/{pending[0]}")
        if r.status_code != 200:
            raise RuntimeError(f"GET /api/jobs/{pending[0]} answered {r.status_code}: {r.text}")
        doc = r.json()
        if doc["status"] in ("finished", "failed", "cancelled"):
            docs[pending.pop(0)] = doc
            continue
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{len(pending)} of {len(ids)} jobs not done after {timeout:.0f} s")
        time.sleep(every)
    return [docs[i] for i in ids]


def download(client: Any, doc: dict[str, Any], path: Path) -> int:
    n = 0
    with client.stream("GET", f"/api/jobs/{doc['id']}/result") as r, path.open("wb") as out:
        if r.status_code != 200:
            raise RuntimeError(f"GET …/result answered {r.status_code}")
        for part in r.iter_bytes(1 << 20):
            n += out.write(part)
    return n


# -- the suite ------------------------------------------------------------------------------
def run(bench: Any) -> dict[str, Any]:
    """Every measurement of the suite; errors are kept and the run goes on where it can."""
    res: dict[str, Any] = {"errors": [], "batch": {}, "busy": {}, "runs": bench.cfg.runs}
    state: dict[str, Any] = {"count": JOBS_QUICK if bench.cfg.quick else JOBS}
    steps = (prepare, single_job, script, probe, batches)
    for step in steps:
        print(f"  [jobs] {step.__name__}", flush=True)
        try:
            step(bench, res, state)
        except Missing as exc:
            res["errors"].append(f"missing: {exc}")
            print(f"    MISSING: {exc}", flush=True)
            break
        except Exception as exc:
            res["errors"].append(f"{step.__name__}: {type(exc).__name__}: {str(exc)[:300]}")
            print(f"    ERROR in {step.__name__}: {exc}", flush=True)
    res["others_busy"] = max(res["busy"].values(), default=0.0)
    return res


def prepare(bench: Any, res: dict[str, Any], state: dict[str, Any]) -> None:
    ref = ensure_data(bench.work)
    codes = [c for c in ref["countries"] if c not in (SINGLE, WARMUP)]
    if len(codes) < state["count"]:
        raise Missing(f"only {len(codes)} countries hold a cell; {state['count']} needed")
    state["codes"] = codes[: state["count"]]
    state["path"] = bench.work / "jobs" / "serve" / FILE
    res["data"] = {k: ref[k] for k in ("shape", "size_mb", "seed")} | {"jobs": state["count"]}
    res["data"]["cells"] = [ref["countries"][c] for c in state["codes"]]
    warm(state["path"])


def single_reps(bench: Any) -> int:
    return 3 if bench.cfg.quick else 5


def single_job(bench: Any, res: dict[str, Any], state: dict[str, Any]) -> None:
    """One embedded server (1 consumer thread): an unmeasured first job, then `reps` times
    DEU from POST to the zip downloaded, the job DELETEd between runs (same id, run anew)."""
    import httpx

    res["busy"]["single"] = bench.wait_quiet()
    dep = Deployment(bench, SETUPS[0], None, "single")
    runs: list[dict[str, Any]] = []
    try:
        ds_id = dep.start()
        with httpx.Client(base_url=dep.base, timeout=300, headers=CLIENT) as client:
            res["single_first"] = one_job(client, ds_id, WARMUP, bench.work / "jobs" / "w.zip")
            zpath = bench.work / "jobs" / "outcrop.zip"
            for i in range(single_reps(bench)):
                if runs:
                    client.delete(f"/api/jobs/{runs[-1]['id']}").raise_for_status()
                runs.append(one_job(client, ds_id, SINGLE, zpath))
                print(f"    single job {i}: {runs[-1]['s']:.2f} s", flush=True)
        state["zip"], state["ds_id"] = zpath, ds_id
    finally:
        res["single"] = runs
        res["single_mem"] = dep.stop()


def one_job(client: Any, ds_id: str, code: str, zpath: Path) -> dict[str, Any]:
    """POST → finished (polled every 50 ms) → zip downloaded; seconds of each phase."""
    t0w, t0 = time.time(), time.perf_counter()
    doc = submit(client, ds_id, code)
    posted = time.perf_counter() - t0
    doc = wait_all(client, [doc["id"]], 600, 0.05)[0]
    if doc["status"] != "finished":
        raise RuntimeError(f"job {code} {doc['status']}: {doc.get('error')} {doc.get('errors')}")
    seen = time.perf_counter() - t0
    size = download(client, doc, zpath)
    out = {"id": doc["id"], "s": time.perf_counter() - t0, "post_s": posted, "seen_s": seen}
    out["queued_s"] = stamp(doc["started"]) - t0w
    out["run_s"] = stamp(doc["finished"]) - stamp(doc["started"])
    return out | {"download_s": out["s"] - seen, "zip_bytes": size}


def script(bench: Any, res: dict[str, Any], state: dict[str, Any]) -> None:
    """The plain xarray script for DEU in a fresh process each time: wall time (interpreter
    start and imports included), and its own import and work times."""
    res["busy"]["script"] = bench.wait_quiet()
    path = bench.run_dir / "mask_script.py"
    path.write_text(SCRIPT)
    out = bench.work / "jobs" / "script.nc"
    runs = []
    for i in range(single_reps(bench)):
        cmd = [sys.executable, str(path), str(state["path"]), SINGLE, str(out), str(NATURAL_EARTH)]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
        took = time.perf_counter() - t0
        if r.returncode != 0:
            raise RuntimeError(f"the script failed: {r.stderr.strip()[-400:]}")
        runs.append({"s": took, **json.loads(r.stdout.strip().splitlines()[-1])})
        print(f"    script {i}: {took:.2f} s (work {runs[-1]['work_s']:.2f} s)", flush=True)
    res["script"] = runs
    state["script_nc"] = out


def probe(bench: Any, res: dict[str, Any], state: dict[str, Any]) -> None:
    """The job's NetCDF (from its zip) against the script's: coordinates equal, the same
    cells missing, the values allclose."""
    import xarray as xr

    if "zip" not in state or "script_nc" not in state:
        res["probe"] = "not measured: no job or no script output"
        return
    member = f"{state['ds_id']}.nc"
    unpacked = bench.work / "jobs" / "outcrop.nc"
    with zipfile.ZipFile(state["zip"]) as zf:
        unpacked.write_bytes(zf.read(member))
    with xr.open_dataset(unpacked) as got, xr.open_dataset(state["script_nc"]) as want:
        res["probe"] = compare(got[VAR].values, want[VAR].values, got, want)
    print(f"    probe: {res['probe']}", flush=True)


def compare(got: np.ndarray, want: np.ndarray, a: Any, b: Any) -> str:
    if got.shape != want.shape:
        return f"**WRONG VALUES**: shape {got.shape}, the script's {want.shape}"
    for name in ("time", "lat", "lon"):
        if not np.array_equal(a[name].values, b[name].values):
            return f"**WRONG VALUES**: coordinate {name} differs"
    nan_got, nan_want = np.isnan(got), np.isnan(want)
    if not np.array_equal(nan_got, nan_want):
        return f"**WRONG VALUES**: {int((nan_got != nan_want).sum())} cells missing in one only"
    if not np.allclose(got, want, equal_nan=True):
        return "**WRONG VALUES**: values differ"
    kept = int((~nan_got[0]).sum())
    return f"values ok ({kept} cells kept of {NY * NX}, {NT} steps)"


def batches(bench: Any, res: dict[str, Any], state: dict[str, Any]) -> None:
    """Each setup: a fresh deployment, every job POSTed at once, polled until all ended."""
    redis: Redis | None = None
    for setup in SETUPS:
        if setup.redis and redis is None:
            try:
                redis = Redis()
            except Missing as exc:
                res["batch"][setup.key] = {"skipped": str(exc)}
                continue
        if redis is not None:
            redis.flush()
        res["busy"][setup.key] = bench.wait_quiet()
        try:
            got = res["batch"][setup.key] = batch(bench, setup, redis, state)
            if got.get("error"):
                res["errors"].append(f"batch {setup.key}: {got['error']}")
        finally:
            if redis is not None:
                redis.flush()


def batch(bench: Any, setup: Setup, redis: Redis | None, state: dict[str, Any]) -> dict[str, Any]:
    import httpx

    dep = Deployment(bench, setup, redis.url if redis and setup.redis else None, setup.key)
    out: dict[str, Any] = {"jobs": len(state["codes"])}
    try:
        measure(dep, out, state)
    except (RuntimeError, OSError, httpx.HTTPError) as exc:
        out["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        print(f"    ERROR {setup.key}: {exc}", flush=True)
        return out
    finally:
        out["mem"] = dep.stop()
        if out["mem"].get("died"):
            out["error"] = f"{out.get('error', '')}; died: {', '.join(out['mem']['died'])}"
    print(
        f"    {setup.key}: {out['jobs']} jobs in {out['makespan_s']:.1f} s = "
        f"{out['per_min']:.1f} jobs/min, job run median {out['run_s']:.2f} s, "
        f"{out['failed']} failed, server VmHWM {out['mem']['hwm_mb']:.0f} MB",
        flush=True,
    )
    return out


def measure(dep: Deployment, out: dict[str, Any], state: dict[str, Any]) -> None:
    """Every job POSTed at once, polled until all ended: the figures into `out`."""
    import httpx

    ds_id = dep.start()
    cpu0 = dep.srv.cpu() + sum(w.cpu() for w in dep.workers)
    with httpx.Client(base_url=dep.base, timeout=300, headers=CLIENT) as client:
        t0w, t0 = time.time(), time.perf_counter()
        ids = [submit(client, ds_id, code)["id"] for code in state["codes"]]
        out["submit_s"] = time.perf_counter() - t0
        docs = wait_all(client, ids, 120 + 60 * len(ids), 0.5)
        out["seen_s"] = time.perf_counter() - t0
    cpu = dep.srv.cpu() + sum(w.cpu() for w in dep.workers) - cpu0
    out |= summarise(docs, t0w)
    out["cores"] = cpu / out["seen_s"]


def summarise(docs: list[dict[str, Any]], t0w: float) -> dict[str, Any]:
    done = [d for d in docs if d["status"] == "finished"]
    failed = [f"{d['id'][:8]} {d['status']}: {d.get('error') or d.get('errors')}" for d in docs]
    failed = [f for d, f in zip(docs, failed, strict=True) if d["status"] != "finished"]
    if not done:
        raise RuntimeError(f"no job finished: {failed[:3]}")
    end = max(stamp(d["finished"]) for d in done)
    runs = [stamp(d["finished"]) - stamp(d["started"]) for d in done]
    out = {"makespan_s": end - t0w, "run_s": statistics.median(runs), "failed": len(failed)}
    out["per_min"] = len(done) / out["makespan_s"] * 60
    out["first_start_s"] = min(stamp(d["started"]) for d in done) - t0w
    return out | {"failures": failed[:5]}


# -- the report -----------------------------------------------------------------------------
def med(xs: list[float] | None) -> float | None:
    return statistics.median(xs) if xs else None


def fmt_list(xs: list[float]) -> str:
    return ", ".join(f"{x:.2f}" for x in xs)


def single_figures(res: dict[str, Any]) -> tuple[float | None, float | None]:
    """(Outcrop's single job, the script), median seconds."""
    job, scr = res.get("single") or [], res.get("script") or []
    return med([r["s"] for r in job]), med([r["s"] for r in scr])


def overhead_cell(res: dict[str, Any]) -> tuple[str, str, str]:
    """(value, x target, met) for the single job's overhead over the script."""
    mine, theirs = single_figures(res)
    if mine is None or not theirs:
        return "—", "—", "—"
    over = mine / theirs - 1
    x = over / OVERHEAD[1]
    return f"{100 * over:+.0f}%", f"{x:.2f}", "yes" if over < OVERHEAD[1] else "**NO**"


def batch_rows(res: dict[str, Any]) -> list[list[str]]:
    rows = []
    for setup in SETUPS:
        b = res["batch"].get(setup.key)
        if not b:
            continue
        if b.get("skipped") or "per_min" not in b:
            why = b.get("skipped") or f"**FAILED**: {b.get('error', '')}"
            rows.append([f"{b.get('jobs', '')} jobs, {setup.label}", "—", why])
            continue
        mem = b["mem"]
        notes = f"{b['makespan_s']:.1f} s from the first POST to the last `finished` "
        notes += f"(POSTs took {b['submit_s']:.2f} s; first job started after "
        notes += f"{b['first_start_s']:.2f} s); one job runs {b['run_s']:.2f} s (median, "
        notes += f"started → finished); {b['cores']:.2f} cores busy; server VmHWM "
        notes += f"{mem['hwm_mb']:.0f} MB"
        if setup.redis:
            notes += f", workers' {mem['worker_hwm_mb']:.0f} MB each at most"
        if setup.procs > 1:
            notes += f" per process, {mem['hwm_tree_mb']:.0f} MB for the tree"
        notes += f"; others busy {res['busy'].get(setup.key, 0):.2f} cores"
        if b["failed"]:
            notes += f"; **{b['failed']} FAILED**: {'; '.join(b['failures'])}"
        if mem.get("died"):
            notes += f"; **died**: {', '.join(mem['died'])}"
        rows.append([f"{b['jobs']} jobs, {setup.label}", f"{b['per_min']:.1f} jobs/min", notes])
    for label, two, one in SCALING:
        a, b = res["batch"].get(two, {}), res["batch"].get(one, {})
        if a.get("per_min") and b.get("per_min"):
            rows.append([f"scaling, {label}", f"{a['per_min'] / b['per_min']:.2f} x", "—"])
    return rows


def single_rows(res: dict[str, Any]) -> list[list[str]]:
    rows = []
    job, scr = res.get("single") or [], res.get("script") or []
    if job:
        first = res.get("single_first", {})
        notes = f"{len(job)} runs: {fmt_list([r['s'] for r in job])} s; of which "
        notes += f"queued {med([r['queued_s'] for r in job]):.2f} s, running "
        notes += f"{med([r['run_s'] for r in job]):.2f} s, seen finished "
        notes += f"{med([r['seen_s'] - r['queued_s'] - r['run_s'] for r in job]):.2f} s later, "
        notes += f"download {med([r['download_s'] for r in job]):.3f} s "
        notes += f"({job[0]['zip_bytes'] / 1e6:.1f} MB zip); the server's first job "
        notes += f"({WARMUP}, not counted) {first.get('s', 0):.2f} s"
        rows.append(
            [
                f"one job ({SINGLE}), POST → zip downloaded",
                f"{med([r['s'] for r in job]):.2f} s",
                notes,
            ]
        )
    if scr:
        notes = f"{len(scr)} runs: {fmt_list([r['s'] for r in scr])} s; of which "
        notes += f"interpreter start + imports {med([r['import_s'] for r in scr]):.2f} s (in "
        notes += f"the script), work {med([r['work_s'] for r in scr]):.2f} s"
        rows.append(
            [
                "the same with a plain xarray script, a process of its own",
                f"{med([r['s'] for r in scr]):.2f} s",
                notes,
            ]
        )
    if job and scr:
        work = med([r["work_s"] for r in scr]) or 1.0
        value, x, met = overhead_cell(res)
        notes = "against the script's work alone (no start, no imports): "
        notes += f"{100 * ((med([r['s'] for r in job]) or 0) / work - 1):+.0f}%"
        rows.append(["Outcrop's overhead = job ÷ script - 1", value, notes, OVERHEAD[0], x, met])
    if res.get("probe"):
        rows.append(["job output = the script's output", "", res["probe"]])
    mem = res.get("single_mem")
    if mem:
        rows.append(["server peak RSS, single jobs (VmHWM)", f"{mem['hwm_mb']:.0f} MB", "—"])
    return rows


def section(doc: dict[str, Any]) -> list[str]:
    """The suite's Markdown: the target, then every figure."""
    res = doc["results"].get(NAME)
    if not res:
        return []
    missing = [e for e in res["errors"] if e.startswith("missing:")]
    if missing:
        return ["## Jobs (issue 5)", "", f"**Not measured**, {missing[0]}", ""]
    value, x, met = overhead_cell(res)
    mine, theirs = single_figures(res)
    probe_ok = res.get("probe", "").startswith("values ok")
    shown = f"{met} ({value}: {mine or 0:.2f} s against {theirs or 0:.2f} s, {x}x target)"
    if mine is None or theirs is None:
        shown = "not measured: no job finished" if mine is None else "not measured: no script"
    lines = ["| target (issue 5) | workload | measured |", "|---|---|---|"]
    work = "one `mask_country` job against a plain xarray script"
    lines.append(f"| overhead {OVERHEAD[0]} | {work} | {shown} |")
    probe = "yes" if probe_ok else f"**NO** {res.get('probe', 'not measured')}"
    lines.append(f"| correct values | the job's NetCDF = the script's | {probe} |")
    for label, two, one in SCALING:
        a, b = res["batch"].get(two, {}), res["batch"].get(one, {})
        if a.get("per_min") and b.get("per_min"):
            rates = f"{b['per_min']:.1f} → {a['per_min']:.1f} jobs/min"
            ratio = a["per_min"] / b["per_min"]
            lines.append(f"| scaling (reported) | {label} | {ratio:.2f} x ({rates}) |")
    table = ["| workload | median | notes | target | x target | met |", "|---|---|---|---|---|---|"]
    for row in batch_rows(res) + single_rows(res):
        cells = [*row, *[""] * (6 - len(row))]
        cells[2] = cells[2].replace("|", "\\|") or "—"
        table.append("| " + " | ".join(cells) + " |")
    data = res.get("data", {})
    intro = INTRO.format(jobs=data.get("jobs", "?"), size=data.get("size_mb", "?"))
    return ["## Jobs (issue 5): Outcrop against the target", "", intro, "", *lines, "",
            "## Jobs (issue 5): all results", "", *table, ""]  # fmt: skip


INTRO = (
    f"`{VAR}({NT}, {NY}, {NX})` float32, 20 years of months on a 0.5° grid, one NetCDF4 file "
    "({size} MB, zlib 4 + shuffle, chunks of one month). Batches: {jobs} `mask_country` jobs "
    "(distinct countries, NetCDF output) POSTed at once to a fresh server, timed from the "
    "first POST to the last job's `finished` stamp. One job: DEU from POST to the zip "
    "downloaded, on a server that has run one job before, against a script that opens the "
    "file with xarray, masks it with shapely `contains_xy` on the Natural Earth polygon read "
    "with pyshp and writes it with the same compression, run as a process of its own."
)
