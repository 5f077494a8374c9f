"""The time-series suite (issue 4, `--suite series`): a year of one-second data (31.5
million seconds, 3 double parameters) from the example reader program, served over HAPI.

Measures, against the issue's targets: a 2,000-bin reduced request (`x_resolution`) over the
year, a day and an hour, cold (a fresh server and an empty cache) and warm (repeated);
full-resolution HAPI CSV and binary throughput (curl), next to the reader program's own
output rate; the server's peak RSS; and the time a client takes to fetch the full
resolution and reduce it itself with NumPy, whose answer is also compared with Outcrop's
(a sanity line, not a test). `seriesclient.py` is that client, run in a fresh process.
See README.md.
"""

from __future__ import annotations

import http.client
import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

NAME = "outcrop-series"
DATASET = "wave_year"
DATASET_CSV = "wave_year_csv"  # the same reader writing CSV, for the full-resolution rate
READER = Path(__file__).resolve().parent.parent / "examples" / "readers" / "wave.py"
YEAR = ("2021-01-01T00:00:00Z", "2022-01-01T00:00:00Z")
BINS = 2000
SPANS = {
    "year": (YEAR, 365 * 86400),
    "day": (("2021-06-15T00:00:00Z", "2021-06-16T00:00:00Z"), 86400),
    "hour": (("2021-06-15T12:00:00Z", "2021-06-15T13:00:00Z"), 3600),
}
FULL = {
    "10 days": (("2021-03-01T00:00:00Z", "2021-03-11T00:00:00Z"), 10 * 86400),
    "30 days": (("2021-03-01T00:00:00Z", "2021-03-31T00:00:00Z"), 30 * 86400),
    "year": SPANS["year"],
}
FORMATS = ("binary", "csv")
STATISTICS = "min,max,mean"  # what a plot of 2,000 bins asks: the envelope and the mean
ROWS_PER_HOUR = 3540  # the reader leaves out t mod 3600 in [600, 660)
TARGETS = {  # (text, bound, at least)
    "cold": ("< 2 s", 2.0, False),
    "warm": ("< 50 ms", 0.050, False),
    "full/csv": ("≥ 100 MB/s", 100.0, True),
    "full/binary": ("≥ 300 MB/s", 300.0, True),
    "rss": ("< 300 MB", 300.0, False),
}


class Missing(RuntimeError):
    """A piece the suite needs is not there (yet): the message says which."""


# -- the served folder -------------------------------------------------------------------
def prepare(work: Path) -> Path:
    """`<work>/series/`: the wave reader over the whole year, writing Arrow IPC
    (`wave_year`) and CSV (`wave_year_csv`), described as docs/readers.md says."""
    if not READER.exists():
        raise Missing(f"the example reader {READER} is missing")
    folder = work / "series"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name, fmt in ((DATASET, "arrow"), (DATASET_CSV, "csv")):
        (folder / f"{name}.reader.toml").write_text(description(fmt))
    return folder


def description(fmt: str) -> str:
    """A `.reader.toml` for 2021, the reader writing `fmt` ("arrow" or "csv")."""
    args = ["python", str(READER), "--start={start}", "--stop={stop}"]
    args += ["--parameters={parameters}", f"--format={fmt}"]
    lines = [
        f'title = "wave reader, {YEAR[0][:4]}, {fmt} (benchmark)"',
        f"command = {json.dumps(args)}",
        f'format = "{fmt}"',
        f"start = {YEAR[0]}",
        f"stop = {YEAR[1]}",
        'cadence = "PT1S"',
        "timeout = 600",
        "max_output_mb = 8192",
    ]
    for name, units in (("bx", "nT"), ("by", "nT"), ("bz", "nT")):
        lines += ["", "[[parameters]]", f'name = "{name}"', f'units = "{units}"']
        lines.append('fill = "-1e31"')
    return "\n".join(lines) + "\n"


def expected_rows(span_s: int) -> int:
    assert span_s % 3600 == 0
    return span_s // 3600 * ROWS_PER_HOUR


# -- HTTP clients ------------------------------------------------------------------------
class Http:
    """One keep-alive connection, as a plotting client holds; bodies read and dropped."""

    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.conn: http.client.HTTPConnection | None = None

    def get(self, path: str, keep: bool = False) -> dict[str, Any]:
        """status, bytes, s (to the last byte), ttfb; `body` when kept or not a 200."""
        t0 = time.perf_counter()
        r = self.send(path)
        ttfb = time.perf_counter() - t0
        buf, parts, n = bytearray(1 << 20), [], 0
        while k := r.readinto(buf):
            n += k
            if keep or r.status != 200:
                parts.append(bytes(buf[:k]))
        out: dict[str, Any] = {"status": r.status, "bytes": n, "ttfb": ttfb}
        out["s"] = time.perf_counter() - t0
        if keep or r.status != 200:
            out["body"] = b"".join(parts)
        if r.will_close:
            self.close()
        return out

    def send(self, path: str) -> http.client.HTTPResponse:
        """The response's head; a kept connection the server closed meanwhile (its idle
        timeout) is opened again, once."""
        for attempt in (0, 1):
            fresh = self.conn is None
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=900)
            try:
                self.conn.request("GET", path)
                return self.conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if fresh or attempt:
                    raise
        raise AssertionError("unreachable")

    def ok(self, path: str, keep: bool = False) -> dict[str, Any]:
        out = self.get(path, keep)
        if out["status"] != 200:
            said = out["body"][:300].decode(errors="replace")
            raise RuntimeError(f"GET {path} answered {out['status']}: {said}")
        return out

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def curl(url: str) -> dict[str, Any]:
    """A whole response read by curl into /dev/null (a C client: not the limit)."""
    fmt = "%{http_code} %{size_download} %{time_total} %{time_starttransfer}"
    cmd = ["curl", "-s", "-o", "/dev/null", "--max-time", "900", "-w", fmt, url]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=960, check=False)
    code, size, total, ttfb = r.stdout.split()
    if code != "200":
        raise RuntimeError(f"curl {url} answered {code} (rc {r.returncode})")
    return {"bytes": int(size), "s": float(total), "ttfb": float(ttfb)}


def data_path(
    ds: str, span: tuple[str, str], fmt: str, width: str | None, header: bool = False
) -> str:
    query = {"dataset": ds, "start": span[0], "stop": span[1], "format": fmt}
    if width is not None:
        query |= {"x_resolution": width, "x_statistic": STATISTICS}
    if header:
        query["include"] = "header"
    return "/hapi/data?" + urlencode(query)


def width_of(span_s: int) -> str:
    """The bin width asking for BINS bins over `span_s` seconds, in seconds."""
    return f"{span_s / BINS:.6f}".rstrip("0").rstrip(".")


# -- servers -----------------------------------------------------------------------------
class Watched:
    """An Outcrop server on the series folder, fresh data folder, its memory sampled
    five times a second for as long as it runs."""

    def __init__(self, bench: Any, folder: Path, tag: str) -> None:
        import servers

        port = servers.free_port()
        self.state = bench.work / "state" / f"series-{tag}"
        shutil.rmtree(self.state, ignore_errors=True)
        argv = bench.outcrop_argv(folder, port, self.state)
        env = {"OUTCROP_MAX_RESPONSE_MB": "16384"}
        self.base = f"http://{servers.HOST}:{port}"
        self.srv = servers.Server(argv, self.base, bench.logs / f"{NAME}-{tag}.log", env)
        self.run_dir, self.tag = bench.run_dir, tag
        self.peak_tree_mb, self.hwm_mb = 0.0, 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def start(self) -> float:
        """Start, and wait until /hapi/catalog lists the dataset: seconds to that."""
        self.srv.start(self.run_dir)
        self._thread.start()
        try:
            self.srv.wait_ready("/hapi/catalog", timeout=120)
        except RuntimeError as exc:
            raise Missing(f"no HAPI catalog: {exc}") from exc
        deadline = time.perf_counter() + 60
        while time.perf_counter() < deadline:
            body = Http(self.base).ok("/hapi/catalog", keep=True)["body"]
            if f'"{DATASET}"' in body.decode():
                return time.perf_counter() - self.srv.t0
            time.sleep(0.2)
        raise Missing(
            f"/hapi/catalog does not list {DATASET} (reader-program datasets not served?): "
            f"{body[:300]!r}; log {self.srv.log_path}"
        )

    def _sample(self) -> None:
        while not self._done.wait(0.2):
            if not self.srv.alive():
                return
            self.peak_tree_mb = max(self.peak_tree_mb, self.srv.memory()["rss_mb"])
            self.hwm_mb = max(self.hwm_mb, own_hwm(self.srv))

    def cpu(self) -> float:
        return float(self.srv.cpu())

    def wait_idle(self, timeout: float = 300) -> float:
        """Seconds until the server stops using CPU (background cache building done)."""
        t0 = time.perf_counter()
        last, quiet = self.cpu(), 0
        while quiet < 3 and time.perf_counter() - t0 < timeout:
            time.sleep(0.25)
            now = self.cpu()
            quiet = quiet + 1 if now - last < 0.01 else 0
            last = now
        return max(0.0, time.perf_counter() - t0 - 0.75)

    def stop(self, res: dict[str, Any]) -> None:
        self.hwm_mb = max(self.hwm_mb, own_hwm(self.srv))
        self._done.set()
        alive = self.srv.alive()
        self.srv.stop()
        shutil.rmtree(self.state, ignore_errors=True)  # ~190 MB of cache per year answered
        entry = {"tag": self.tag, "hwm_mb": self.hwm_mb, "peak_tree_mb": self.peak_tree_mb}
        res["servers"].append(entry if alive else {**entry, "died": True})
        if not alive:
            res["errors"].append(f"server {self.tag} died: {self.srv.tail()}")


def own_hwm(srv: Any) -> float:
    """VmHWM of the server process itself (not its reader children), MB."""
    try:
        text = Path(f"/proc/{srv.proc.pid}/status").read_text()
    except (OSError, AttributeError):
        return 0.0
    line = next((ln for ln in text.splitlines() if ln.startswith("VmHWM:")), "VmHWM: 0 kB")
    return int(line.split()[1]) / 1024


# -- the suite ---------------------------------------------------------------------------
def run(bench: Any) -> dict[str, Any]:
    """Every measurement of the suite; errors are kept, and the run goes on where it can."""
    cfg = bench.cfg
    res: dict[str, Any] = {"errors": [], "servers": [], "runs": cfg.runs, "reps": cfg.subset_reps}
    res |= {"cold": {}, "info": {}, "warm": {}, "settle": {}, "after_year": {}, "full": {}}
    res |= {"reader": {}, "client": {}, "ready": []}
    steps = (prepare_step, reader_alone, cold_and_warm, session)
    state: dict[str, Any] = {}
    for step in steps:
        name = step.__name__
        print(f"  [series] {name}", flush=True)
        try:
            step(bench, res, state)
        except Missing as exc:
            res["errors"].append(f"missing: {exc}")
            print(f"    MISSING: {exc}", flush=True)
            break
        except Exception as exc:
            res["errors"].append(f"{name}: {type(exc).__name__}: {exc}")
            print(f"    ERROR in {name}: {exc}", flush=True)
    return res


def prepare_step(bench: Any, res: dict[str, Any], state: dict[str, Any]) -> None:
    if shutil.which("curl") is None:
        raise Missing("curl is not installed (apt-get install curl)")
    state["folder"] = prepare(bench.work)
    srv = Watched(bench, state["folder"], "probe")
    try:
        res["ready"].append(srv.start())
        http = Http(srv.base)
        hour = SPANS["hour"][0]
        for fmt in FORMATS:
            http.ok(data_path(DATASET, hour, fmt, None))
            try:
                http.ok(data_path(DATASET, hour, fmt, "60"))
            except RuntimeError as exc:
                raise Missing(f"reduced HAPI requests (x_resolution) fail: {exc}") from exc
    finally:
        srv.stop(res)


def reader_alone(bench: Any, res: dict[str, Any], _state: dict[str, Any]) -> None:
    """The reader program's own output rate, read from a pipe: the limit; and its start
    (imports) alone, from a one-minute run."""
    minute = (FULL["10 days"][0][0], FULL["10 days"][0][0].replace("00:00Z", "01:00Z"))
    res["reader_start"] = [read_pipe(minute, "arrow")["s"] for _ in range(bench.cfg.runs)]
    for label, (span, _) in FULL.items():
        for fmt in ("arrow", "csv") if label != "year" else ("arrow",):  # CSV: 40 s a year
            runs = [read_pipe(span, fmt) for _ in range(bench.cfg.runs)]
            res["reader"][f"{label}/{fmt}"] = runs
            say(f"reader alone, {label}, {fmt}", runs)


def read_pipe(span: tuple[str, str], fmt: str) -> dict[str, Any]:
    argv = [sys.executable, str(READER), f"--start={span[0]}", f"--stop={span[1]}"]
    t0 = time.perf_counter()
    proc = subprocess.Popen([*argv, f"--format={fmt}"], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    buf, n = bytearray(1 << 20), 0
    while k := proc.stdout.readinto(buf):  # type: ignore[attr-defined]  # a BufferedReader
        n += k
    if proc.wait(timeout=600) != 0:
        raise RuntimeError(f"{READER.name} exited {proc.returncode}")
    return {"bytes": n, "s": time.perf_counter() - t0}


def cold_and_warm(bench: Any, res: dict[str, Any], state: dict[str, Any]) -> None:
    """Per span and format, `--runs` fresh servers: info, then the reduced request (cold),
    then, once the server is idle, `--subset-reps` repeats (warm)."""
    for span_name, (span, span_s) in SPANS.items():
        for fmt in FORMATS:
            key = f"{span_name}/{fmt}"
            for i in range(bench.cfg.runs):
                srv = Watched(bench, state["folder"], f"cold-{span_name}-{fmt}-{i}")
                try:
                    res["ready"].append(srv.start())
                    one_cold(srv, res, key, span, width_of(span_s), bench.cfg.subset_reps)
                except (RuntimeError, OSError, http.client.HTTPException) as exc:
                    failed(res, f"{key}, cold start {i}", exc)
                finally:
                    srv.stop(res)
            if res["warm"].get(key):
                print(
                    f"    {key}: cold {fmt_list(res['cold'][key])} s, warm median "
                    f"{1e3 * statistics.median(res['warm'][key]):.1f} ms, busy after "
                    f"{fmt_list(res['settle'][key])} s",
                    flush=True,
                )


def failed(res: dict[str, Any], what: str, exc: BaseException) -> None:
    """A measurement that failed: said now and under "Errors and skips"; the suite goes on."""
    res["errors"].append(f"{what}: {type(exc).__name__}: {str(exc)[:300]}")
    print(f"    ERROR {what}: {exc}", flush=True)


def one_cold(srv: Watched, res: dict[str, Any], key: str, span: Any, width: str, reps: int) -> None:
    http = Http(srv.base)
    info = http.ok("/hapi/info?" + urlencode({"dataset": DATASET}))
    first = http.ok(data_path(DATASET, span, key.split("/")[1], width))
    res["info"].setdefault(key, []).append(info["s"])
    res["cold"].setdefault(key, []).append(first["s"])
    res["settle"].setdefault(key, []).append(srv.wait_idle())
    path = data_path(DATASET, span, key.split("/")[1], width)
    res["warm"].setdefault(key, []).extend(http.ok(path)["s"] for _ in range(reps))


def session(bench: Any, res: dict[str, Any], state: dict[str, Any]) -> None:
    """One server as a user meets it: the year, then a day and an hour (first requests,
    the year's cache built), full-resolution streams, and the client reducing itself."""
    srv = Watched(bench, state["folder"], "session")
    try:
        res["ready"].append(srv.start())
        started = own_hwm(srv.srv)
        http = Http(srv.base)
        year, year_s = SPANS["year"]
        res["session_year"] = http.ok(data_path(DATASET, year, "binary", width_of(year_s)))["s"]
        res["session_settle"] = srv.wait_idle()
        hwm = res["session_hwm"] = {"start": started, "the year": own_hwm(srv.srv)}
        for span_name in ("day", "hour"):
            span, span_s = SPANS[span_name]
            got = http.ok(data_path(DATASET, span, "binary", width_of(span_s)))
            res["after_year"][span_name] = got["s"]
        full_resolution(bench, srv, res)
        hwm["full resolution"] = own_hwm(srv.srv)
        for span_name in ("year", "day"):
            res["client"][span_name] = client_run(bench, srv, span_name)
            res["errors"] += [
                f"client, {span_name}: {e}" for e in res["client"][span_name].get("errors", [])
            ]
        hwm["clients"] = own_hwm(srv.srv)
    finally:
        srv.stop(res)


def full_resolution(bench: Any, srv: Watched, res: dict[str, Any]) -> None:
    plan = [(DATASET, label, fmt) for label in FULL for fmt in FORMATS]
    plan.append((DATASET_CSV, "10 days", "binary"))
    for ds, label, fmt in plan:
        span, span_s = FULL[label]
        runs = []
        key = f"{label}/{fmt}" + (", CSV reader" if ds == DATASET_CSV else "")
        try:
            for _ in range(bench.cfg.runs):
                cpu0 = srv.cpu()
                got = curl(srv.base + data_path(ds, span, fmt, None))
                runs.append({**got, "cpu_s": srv.cpu() - cpu0, "rows": expected_rows(span_s)})
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            failed(res, f"full resolution {key}", exc)
        if runs:
            res["full"][key] = runs
            say(f"full resolution {key}", runs)


def client_run(bench: Any, srv: Watched, span_name: str) -> dict[str, Any]:
    span, span_s = SPANS[span_name]
    spec = {"base": srv.base, "dataset": DATASET, "span": span, "span_s": span_s}
    spec["runs"] = bench.cfg.runs
    cmd = [sys.executable, str(Path(__file__).with_name("seriesclient.py")), json.dumps(spec)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, check=False)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode != 0 or not lines:
        tail = " | ".join(r.stderr.strip().splitlines()[-3:])[:400]
        return {"errors": [f"client rc={r.returncode}: {tail}"]}
    out: dict[str, Any] = json.loads(lines[-1])
    print(
        f"    client itself, {span_name}: fetch {fmt_list(out['fetch_s'])} s, reduce "
        f"{fmt_list(out['reduce_s'])} s, {out['rows']:,} rows; probe: {out['probe']}",
        flush=True,
    )
    return out


def say(what: str, runs: list[dict[str, Any]]) -> None:
    rates = [r["bytes"] / 1e6 / r["s"] for r in runs]
    print(f"    {what}: {fmt_list(rates, 0)} MB/s ({runs[0]['bytes'] / 1e6:.0f} MB)", flush=True)


def fmt_list(xs: list[float], nd: int = 2) -> str:
    return ", ".join(f"{x:.{nd}f}" for x in xs)


# -- the report ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Figure:
    """One row: a median in SI units (s, MB/s, MB), shown in `unit` (`ms` for seconds x
    1e3); `client` is the client's own time (s) for the same span; `target` a TARGETS key."""

    work: str
    fmt: str
    value: float | None
    unit: str
    notes: str = ""
    client: float | None = None
    target: str = ""

    def shown(self) -> str:
        if self.value is None:
            return "—"
        scale, nd = {"ms": (1e3, 1), "s": (1, 3)}.get(self.unit, (1, 0))
        return f"{self.value * scale:,.{nd}f} {self.unit}"

    def faster(self) -> str:
        """How many times less than the client's own fetch + reduce Outcrop takes."""
        if not self.client or not self.value:
            return "—"
        ratio = self.client / self.value
        return f"{ratio:,.0f}" if ratio >= 10 else f"{ratio:.2f}"

    def verdict(self) -> tuple[str, str, str]:
        """(target, x target, met)."""
        if not self.target:
            return "", "", ""
        text, bound, at_least = TARGETS[self.target]
        if self.value is None:
            return text, "—", "—"
        x = self.value / bound
        return text, f"{x:.2f}", "yes" if (x >= 1 if at_least else x < 1) else "**NO**"


def med(xs: list[float] | None) -> float | None:
    return statistics.median(xs) if xs else None


def client_total(res: dict[str, Any], span: str) -> float | None:
    c = res.get("client", {}).get(span) or {}
    fetch, red = med(c.get("fetch_s")), med(c.get("reduce_s"))
    return fetch + red if fetch is not None and red is not None else None


def figures(res: dict[str, Any]) -> list[Figure]:
    out = []
    for span in SPANS:
        client = client_total(res, span)
        for fmt in FORMATS:
            key = f"{span}/{fmt}"
            if res["cold"].get(key):
                cold, info = med(res["cold"][key]) or 0.0, med(res["info"][key]) or 0.0
                notes = f"runs: {fmt_list(res['cold'][key])} s; after the info request, "
                notes += f"{cold + info:.2f} s in all; then the server is busy for "
                notes += f"{fmt_list(res['settle'][key], 1)} s (background cache building)"
                reader = med([r["s"] for r in res.get("reader", {}).get(f"{span}/arrow", [])])
                if reader is not None:  # the reader alone over the same span: a floor
                    notes += f"; the reader alone writes the {span} in {reader:.2f} s"
                target = "cold" if span == "year" else ""
                out.append(
                    Figure(f"{span}, 2,000 bins, cold", fmt, cold, "s", notes, client, target)
                )
            if res["warm"].get(key):
                warm = res["warm"][key]
                notes = f"{len(warm)} requests, max {1e3 * max(warm):.1f} ms"
                out.append(
                    Figure(f"{span}, 2,000 bins, warm", fmt, med(warm), "ms", notes, client, "warm")
                )
    for span, took in res.get("after_year", {}).items():
        notes = f"the first request for it, after the year ({res['session_year']:.2f} s) and "
        notes += f"{res['session_settle']:.1f} s of background cache building"
        work = f"{span}, 2,000 bins, after the year"
        out.append(Figure(work, "binary", took, "ms", notes, client_total(res, span)))
    if res.get("ready"):
        notes = f"{len(res['ready'])} starts, empty data folder; max {max(res['ready']):.2f} s"
        out.append(
            Figure(
                "server start → /hapi/catalog lists the dataset", "—", med(res["ready"]), "s", notes
            )
        )
    return out + full_figures(res) + client_figures(res) + [rss_figure(res)]


def full_figures(res: dict[str, Any]) -> list[Figure]:
    out = []
    marginal = {}  # the reader's rate between its shortest and longest runs: no start-up in it
    for fmt in ("arrow", "csv"):
        have = [
            res["reader"][k] for k in (f"{label}/{fmt}" for label in FULL) if k in res["reader"]
        ]
        short, long_ = (have[0], have[-1]) if len(have) > 1 else (None, None)
        if short and long_:
            dt = (med([r["s"] for r in long_]) or 0) - (med([r["s"] for r in short]) or 0)
            marginal[fmt] = (long_[0]["bytes"] - short[0]["bytes"]) / 1e6 / dt if dt > 0 else None
    for key, runs in res.get("full", {}).items():
        label, fmt = key.split("/")
        reader = rows_rate(res.get("reader", {}).get(f"{label}/arrow", []), runs[0]["rows"])
        rows = rows_rate(runs, runs[0]["rows"]) or 0.0
        cores = med([r["cpu_s"] / r["s"] for r in runs]) or 0.0
        notes = f"{runs[0]['bytes'] / 1e6:.0f} MB, {rows:.2f} M rows/s = "
        notes += f"{rows / (reader or rows or 1):.2f} x the reader's own rate; first byte after "
        notes += f"{1e3 * (med([r['ttfb'] for r in runs]) or 0):.0f} ms, then "
        notes += f"{med([r['bytes'] / 1e6 / (r['s'] - r['ttfb']) for r in runs]) or 0:.0f} MB/s; "
        notes += f"server {cores:.2f} cores"
        # The target is for the year; shorter spans show how the reader's own
        # start (`first byte after`) weighs on them, so they carry no target.
        target = "" if "CSV reader" in fmt or label != "year" else f"full/{fmt}"
        out.append(
            Figure(f"full resolution, {label}", fmt, rate(runs), "MB/s", notes, None, target)
        )
    start = med(res.get("reader_start"))
    for key, runs in res.get("reader", {}).items():
        label, fmt = key.split("/")
        rows = rows_rate(runs, expected_rows(FULL[label][1])) or 0.0
        notes = f"{rows:.2f} M rows/s: the limit; {marginal.get(fmt) or 0:.0f} MB/s without its "
        notes += f"start ({start or 0:.2f} s to write one minute)"
        out.append(
            Figure(
                f"the reader program alone, {label}, from a pipe", fmt, rate(runs), "MB/s", notes
            )
        )
    return out


def rate(runs: list[dict[str, Any]]) -> float | None:
    return med([r["bytes"] / 1e6 / r["s"] for r in runs])


def rows_rate(runs: list[dict[str, Any]], rows: int) -> float | None:
    return med([rows / 1e6 / r["s"] for r in runs])


def client_figures(res: dict[str, Any]) -> list[Figure]:
    out = []
    for span, c in res.get("client", {}).items():
        if not c.get("fetch_s"):
            out.append(
                Figure(f"client itself, {span}", "binary", None, "s", "; ".join(c["errors"]))
            )
            continue
        fetch, red = med(c["fetch_s"]) or 0.0, med(c["reduce_s"])
        notes = (
            f"{c['rows']:,} rows, {c['bytes'] / 1e6:.0f} MB at {c['bytes'] / 1e6 / fetch:.0f} MB/s"
        )
        out += [
            Figure(
                f"client itself, {span}: fetch full resolution + decode",
                "binary",
                fetch,
                "s",
                notes,
            ),
            Figure(f"client itself, {span}: reduce to 2,000 bins with NumPy", "—", red, "s"),
            Figure(
                f"{span}: Outcrop's warm answer = the client's own reduction",
                "csv",
                None,
                "",
                c["probe"],
            ),
        ]
    return out


def rss_figure(res: dict[str, Any]) -> Figure:
    servers = res.get("servers", [])
    if not servers:
        return Figure("server peak RSS (VmHWM)", "—", None, "MB", "", None, "rss")
    top = max(servers, key=lambda s: s["hwm_mb"])
    notes = f"the largest of {len(servers)} server processes, `{top['tag']}`; with the reader "
    notes += f"programs it runs (sampled): {max(s['peak_tree_mb'] for s in servers):.0f} MB"
    steps = res.get("session_hwm", {})
    if steps:
        notes += "; session VmHWM after " + ", ".join(f"{k} {v:.0f}" for k, v in steps.items())
    return Figure("server peak RSS (VmHWM)", "—", top["hwm_mb"], "MB", notes, None, "rss")


def section(doc: dict[str, Any]) -> list[str]:
    """The suite's Markdown: the targets, then every figure."""
    res = doc["results"].get(NAME)
    if not res:
        return []
    missing = [e for e in res["errors"] if e.startswith("missing:")]
    if missing:  # nothing measured that means anything: say what is missing
        return ["## Time series (issue 4)", "", f"**Not measured**, {missing[0]}", ""]
    found = figures(res)
    lines = ["| workload | format | median | notes | x the client | target | x target | met |"]
    lines.append("|---|---|---|---|---|---|---|---|")
    for f in found:
        notes = f.notes.replace("|", "\\|") or "—"
        cells = [f.work, f.fmt, f.shown(), notes, f.faster() if f.client else "", *f.verdict()]
        lines.append("| " + " | ".join(cells) + " |")
    return [
        "## Time series (issue 4): Outcrop against the targets",
        "",
        INTRO.format(runs=res["runs"], reps=res["reps"], rows=expected_rows(365 * 86400)),
        "",
        *targets_table(found, res),
        "",
        "## Time series (issue 4): all results",
        "",
        *lines,
        "",
    ]


INTRO = (
    f"`{DATASET}`: the example reader (`examples/readers/wave.py`, Arrow IPC) over "
    f"{YEAR[0][:4]}: {{rows:,}} samples of 3 doubles (one a second, a minute left out each "
    f"hour), through HAPI. Reduced requests ask {BINS:,} bins (`x_resolution` = span / "
    f"{BINS:,}, `x_statistic={STATISTICS}`). Cold: a fresh server with an empty data folder "
    "({runs} start(s) each, the info request first); warm: {reps} repeats after each cold one, "
    "once the server is idle. `x the client` = the time a NumPy client takes to fetch the "
    "full resolution (HAPI binary, curl-speed reads) and reduce it itself ÷ Outcrop's time."
)


def targets_table(found: list[Figure], res: dict[str, Any]) -> list[str]:
    """One row per workload with a target: binary and csv side by side (`—`: both)."""
    lines = ["| target (issue 4) | workload | binary | csv |", "|---|---|---|---|"]
    cells: dict[str, dict[str, str]] = {}
    texts: dict[str, dict[str, str]] = {}
    for f in found:
        if not f.target:
            continue
        target, x, met = f.verdict()
        faster = f", the client itself takes {f.faster()} x as long" if f.client else ""
        cells.setdefault(f.work, {})[f.fmt] = f"{met} ({f.shown()}, {x}x target{faster})"
        texts.setdefault(f.work, {})[f.fmt] = target
    for work, row in cells.items():
        said = texts[work]
        alike = len(set(said.values())) == 1
        target = ", ".join([*said.values()][:1] if alike else [f"{k} {v}" for k, v in said.items()])
        both = row.get("—")
        binary, csv = (both, "(same)") if both else (row.get("binary", "—"), row.get("csv", "—"))
        lines.append(f"| {target} | {work} | {binary} | {csv} |")
    probes = {span: c.get("probe", "") for span, c in res.get("client", {}).items()}
    if probes:
        wrong = [span for span, p in probes.items() if not p.startswith("values ok")]
        text = f"**NO** ({', '.join(wrong)}: see below)" if wrong else "yes"
        lines.append(f"| correct values | warm answer = the client's own reduction | {text} | — |")
    return lines
