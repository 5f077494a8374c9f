"""The Markdown report: one section per suite (Zarr, issue 2; OPeNDAP, issue 3), each with
medians per workload, ratios against the suite's reference peer (nginx serving the same
Zarr format; xpublish-opendap) and each of Outcrop's figures against its target."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import jobs
import series
import service

import images

WRONG = "**WRONG VALUES**"


def median(xs: Iterable[float | None]) -> float | None:
    vals = [x for x in xs if x is not None and x == x]
    return statistics.median(vals) if vals else None


@dataclass(frozen=True)
class Target:
    """A target: `value` compared with `bound`, or with `bound` x the reference's value."""

    text: str
    bound: float
    at_least: bool  # True: value >= bound passes; False: value < bound passes
    of_ref: bool = False


@dataclass(frozen=True)
class Suite:
    """One issue's contenders, workloads and targets, rendered as one section."""

    key: str  # what contenders name in their `suites`
    title: str
    issue: str
    ref_col: str  # ratio column against each contender's `ref`
    ref2_col: str  # ratio column against each contender's `ref2`
    explain: str
    workloads: dict[str, str]
    targets: dict[str, Target]  # by "workload", or "workload:contender" for one contender
    outcrop: tuple[str, ...]  # the contenders measured against the targets: summary columns
    columns: tuple[str, ...]  # their headers in the summary
    comparable: frozenset[str]  # workloads whose ratio columns mean something
    extras: dict[str, str]  # workloads that one extra contender measures
    info2: str  # the summary's information row: the full read against `ref2`
    limit: str = ""  # a contender sending the same bytes as fast as can be: the client's limit
    limit_info: str = ""  # the summary's information row: the full read against `limit`

    def target(self, key: str, name: str) -> Target | None:
        return self.targets.get(f"{key}:{name}", self.targets.get(key))

    def is_outcrop(self, name: str) -> bool:
        return name in self.outcrop or name in self.extras.values()


RSS = Target("< 300 MB", 300, False)
ZARR = Suite(
    key="zarr",
    title="Zarr",
    issue="issue 2",
    ref_col="x nginx",
    ref2_col="x nginx, same bytes",
    explain="`x nginx` = value ÷ nginx's value for the same Zarr format (throughputs: higher "
    "is better; times: lower is better); `x nginx, same bytes` the same against nginx serving "
    "the copy of Outcrop's bytes (grid.nc's zlib + shuffle chunks as Blosc chunks).",
    workloads={
        "full": "full-variable read, `xarray.open_zarr(url).temp.values` (MB/s)",
        "chunk": "one chunk repeated, wrk c=16 (req/s)",
        "cycle": "chunks cycled over every time step, wrk c=16 (req/s)",
        "meta": "metadata document, wrk c=16 (req/s)",
        "subset": "small subset, open + read 10x20x40 (ms)",
        "cold": "process start → first 200 on metadata, empty data folder (s)",
        "warm": "process start → first 200 on metadata, data folder kept (s)",
        "restart": "restart over 1,000 indexed files → first 200 (s)",
        "rss_full": "server peak RSS (VmHWM, tree) after the full reads (MB)",
        "rss_stream": "server peak RSS while streaming a 5 GB NetCDF subset (MB)",
        "rss_stream_table": "server peak RSS while streaming the same subset as Arrow IPC (MB)",
    },
    targets={
        "full": Target("≥ 90% of nginx", 0.90, True, True),
        "chunk": Target("≥ 25% of nginx", 0.25, True, True),
        "cycle": Target("≥ 15% of nginx, 0 errors", 0.15, True, True),
        "meta": Target("≥ 5,000 req/s", 5000, True),
        "subset": Target("≤ 1.2 x nginx", 1.2, False, True),
        "cold": Target("< 1 s", 1.0, False),
        "warm": Target("< 1 s", 1.0, False),
        "restart": Target("< 2 s", 2.0, False),
        "rss_full": RSS,
        "rss_stream": RSS,
        "rss_stream_table": RSS,
    },
    outcrop=("outcrop-zarr2", "outcrop-zarr3", "outcrop-zarr2-lz4", "outcrop-zarr3-lz4"),
    columns=("Outcrop v2", "Outcrop v3", "Outcrop v2, lz4", "Outcrop v3, lz4"),
    comparable=frozenset({"full", "chunk", "cycle", "meta", "subset"}),
    extras={
        "restart": "outcrop-restart",
        "rss_stream": "outcrop-stream",
        "rss_stream_table": "outcrop-stream",
    },
    info2="(for information: x nginx serving the same bytes as Outcrop)",
)
XPUB_NC4 = "≥ 1.5 x xpublish-opendap (NetCDF4 file)"
DAP = Suite(
    key="dap",
    title="OPeNDAP",
    issue="issue 3",
    ref_col="x xpublish-opendap",
    ref2_col="x local read",
    explain="`x xpublish-opendap` = value ÷ xpublish-opendap's value (serving grid.nc); "
    "`x local read` = value ÷ the local read of the same file (`local-nc` or `local-nc3`). "
    "Values are checked everywhere: the CRC32 of what the client decoded against the local "
    "array, and the time step's XDR decoded with numpy. `nginx replaying …` is the client's "
    "limit: libnetcdf reading, from nginx, the very bytes Outcrop answers for grid3.nc "
    "(captured in this run); a server whose figure ties it is client-bound.",
    workloads={
        "full": 'full-variable read, `xarray.open_dataset(url, engine="netcdf4").temp.values` '
        "(MB/s)",
        "raw": "whole variable in one `GET .dods?temp`, httpx + numpy XDR decode (MB/s)",
        "chunk": "one time step `temp[0][0:359][0:719]` repeated, wrk c=16 (req/s)",
        "cycle": "time steps cycled over every step, wrk c=16 (req/s)",
        "meta": "`.dds` (DAP4: `.dmr.xml`), wrk c=16 (req/s)",
        "subset": "small subset, open + read 10x20x40 (ms)",
        "cold": "process start → first 200 on `.dds` (s)",
        "rss_full": "server peak RSS (VmHWM, tree) after the full reads (MB)",
        "rss_raw": "server peak RSS after the one-GET reads too (MB)",
    },
    targets={
        "full:outcrop-dap2-nc3": Target("≥ 3 x xpublish-opendap (NetCDF3 copy)", 3, True, True),
        "full:outcrop-dap2-nc4": Target(XPUB_NC4, 1.5, True, True),
        "full:outcrop-dap4-nc4": Target(XPUB_NC4, 1.5, True, True),
        "chunk": Target("≥ 10 x xpublish-opendap", 10, True, True),
        "rss_full": RSS,
        "rss_raw": RSS,
    },
    outcrop=("outcrop-dap2-nc4", "outcrop-dap2-nc3", "outcrop-dap4-nc4"),
    columns=("Outcrop DAP2, grid.nc", "Outcrop DAP2, grid3.nc", "Outcrop DAP4, grid.nc"),
    comparable=frozenset({"full", "raw", "chunk", "cycle", "meta", "subset"}),
    extras={},
    info2="(for information: x the local read of the same file)",
    limit="nginx-dap2-replay",
    limit_info="(for information: x the client's limit, libnetcdf reading the same bytes "
    "from nginx)",
)
SUITES = (ZARR, DAP)


@dataclass
class Row:
    value: float | None
    p50: float | None = None
    p99: float | None = None
    errors: str = ""


def fmt(x: float | None, nd: int = 1) -> str:
    if x is None:
        return "—"
    return f"{x:,.{nd}f}"


def throughput_row(key: str) -> Callable[[dict[str, Any], dict[str, Any]], Row | None]:
    """MB/s of the whole variable read by the client `key` ("full", or DAP2's "raw")."""

    def row(res: dict[str, Any], ref: dict[str, Any]) -> Row | None:
        f = res.get(key)
        if not f:
            return None
        t = median(f.get("times", []))
        mbps = f.get("nbytes", ref.get("full_bytes", 0)) / 1e6 / t if t else None
        notes = check(f, ref.get("full_crc"))
        if f.get("first_s") is not None:  # the untimed first read (reader.read_full)
            first = f"first read {f['first_s']:.2f} s, not in the median"
            notes = f"{notes}; {first}" if notes else first
        return Row(mbps, errors=notes)

    return row


def subset_row(res: dict[str, Any], ref: dict[str, Any]) -> Row | None:
    s = res.get("subset")
    if not s:
        return None
    t = median(s.get("times", []))
    return Row(t * 1e3 if t else None, errors=check(s, ref.get("subset_crc")))


def check(out: dict[str, Any], crc: int | None) -> str:
    notes = list(out.get("errors", []))
    if out.get("times") and out.get("crc") != crc:
        notes.insert(0, f"{WRONG} (CRC differs from the local array)")
        notes += [f"client stderr: {out['stderr']}"] if out.get("stderr") else []
    return "; ".join(notes)[:300]


def wrk_row(key: str) -> Callable[[dict[str, Any], dict[str, Any]], Row | None]:
    def row(res: dict[str, Any], _ref: dict[str, Any]) -> Row | None:
        e = (res.get("wrk") or {}).get(key)
        if e is None:
            return None
        runs = e.get("runs", [])
        errs = sum(r.get("non2xx", 0) + r.get("sock_err", 0) for r in runs)
        notes = [e["skipped"]] if e.get("skipped") else [str(errs)]
        notes += [e["check"]] if e.get("check") else []
        notes += [r["error"][:120] for r in runs if r.get("error")]
        return Row(
            median(r.get("rps") for r in runs),
            median(r.get("p50") for r in runs),
            median(r.get("p99") for r in runs),
            "; ".join(notes),
        )

    return row


def cold_row(res: dict[str, Any], _ref: dict[str, Any]) -> Row | None:
    starts = res.get("cold")
    if not starts:
        return None
    return Row(median(starts), errors="starts: " + ", ".join(f"{x:.2f}" for x in starts))


def warm_row(res: dict[str, Any], _ref: dict[str, Any]) -> Row | None:
    starts = res.get("warm")
    if not starts:
        return None
    return Row(median(starts), errors="starts: " + ", ".join(f"{x:.2f}" for x in starts))


def restart_row(res: dict[str, Any], _ref: dict[str, Any]) -> Row | None:
    if "index_s" not in res and not res.get("errors"):
        return None
    notes = [f"first indexing {fmt(res.get('index_s'), 1)} s", f"total={res.get('total')}"]
    if res.get("total") != 1000:
        notes.append("**catalog total is not 1000**")
    return Row(median(res.get("times", [])), errors="; ".join(notes + res.get("errors", [])))


def rss_row(key: str) -> Callable[[dict[str, Any], dict[str, Any]], Row | None]:
    """The server's peak RSS after the reads of `key` ("full", "raw")."""

    def row(res: dict[str, Any], _ref: dict[str, Any]) -> Row | None:
        m = res.get(f"mem_{key}")
        if not m:
            return None
        start = res.get("mem_start", {}).get("rss_mb")
        notes = f"RSS at start {fmt(start, 0)} MB, {m['procs']} process(es)"
        return Row(m["hwm_mb"], errors=notes)

    return row


def rss_stream_row(res: dict[str, Any], ref: dict[str, Any]) -> Row | None:
    if res.get("skipped"):
        return Row(None, errors=res["skipped"])
    return stream_row(res, res.get("request", {}))


def rss_stream_table_row(res: dict[str, Any], ref: dict[str, Any]) -> Row | None:
    if res.get("skipped") or "table" not in res:
        return None
    return stream_row(res["table"], res["request"])


def stream_row(res: dict[str, Any], req: dict[str, Any]) -> Row | None:
    """Peak RSS of a big stream, with its checks, time to first byte and decoded MB/s."""
    s, m = res.get("stream"), res.get("mem")
    if not s or not m:
        return Row(None, errors="; ".join(res.get("errors", []))) if res.get("errors") else None
    notes = list(s.get("errors", []))
    t = median(s.get("times", []))
    if s.get("times"):
        crcs = (s.get("first_crc"), s.get("last_crc"))
        count = s.get("rows", s.get("shape", [0])[0] * req["bytes"] // 4 // req["steps"])
        ok = count == req["bytes"] // 4 and crcs == (req["first_crc"], req["last_crc"])
        notes.insert(0, "values ok" if ok else "**WRONG VALUES or shape**")
        notes.append(f"{s.get('nbytes', 0) / 1e9:.2f} GB in {fmt(t, 1)} s")
        notes.append(f"{req['bytes'] / 1e6 / t:.0f} MB/s decoded")
    if s.get("first_byte_s") is not None:
        notes.append(f"first byte after {s['first_byte_s']:.1f} s")
    return Row(m["hwm_mb"], errors="; ".join(notes)[:240])


ROWS: dict[str, Callable[[dict[str, Any], dict[str, Any]], Row | None]] = {
    "full": throughput_row("full"),
    "raw": throughput_row("raw"),
    "chunk": wrk_row("chunk"),
    "cycle": wrk_row("cycle"),
    "meta": wrk_row("meta"),
    "subset": subset_row,
    "cold": cold_row,
    "warm": warm_row,
    "restart": restart_row,
    "rss_full": rss_row("full"),
    "rss_raw": rss_row("raw"),
    "rss_stream": rss_stream_row,
    "rss_stream_table": rss_stream_table_row,
}


def rows_of(
    suite: Suite, key: str, doc: dict[str, Any], contenders: list[dict[str, Any]]
) -> list[Any]:
    """(contender, label, Row, ref Row, ref2 Row) for each of the suite's that ran `key`."""
    results, ref = doc["results"], doc["ref"]
    mine = [c for c in contenders if suite.key in c["suites"]]
    by_name = {c["name"]: c for c in mine}
    names = [suite.extras[key]] if key in suite.extras else list(by_name)
    out = []
    for name in names:
        res = results.get(name)
        row = ROWS[key](res, ref) if res else None
        if row is None:
            continue
        c = by_name.get(name, {})
        refs = [results.get(c.get(k) or "") for k in ("ref", "ref2")]
        ref_rows = [ROWS[key](r, ref) if r else None for r in refs]
        out.append((name, c.get("label", "Outcrop"), row, *ref_rows))
    return out


def verdict(target: Target, key: str, row: Row, ref: Row | None) -> tuple[str, str]:
    """(x target, met) for an Outcrop row; wrong values never meet a target."""
    if row.value is None:
        return "—", "—"
    bound = target.bound
    if target.of_ref:
        if ref is None or not ref.value:
            return "—", "no reference figure"
        bound = target.bound * ref.value
    x = row.value / bound
    ok = x >= 1 if target.at_least else (x <= 1 if target.of_ref else x < 1)
    if key == "cycle" and row.errors not in ("0", ""):
        ok = False
    if WRONG in row.errors:
        ok = False
    return f"{x:.2f}", "yes" if ok else "**NO**"


UNITS = {
    "full": (0, "MB/s"),
    "raw": (0, "MB/s"),
    "subset": (1, "ms"),
    "cold": (2, "s"),
    "warm": (2, "s"),
    "restart": (2, "s"),
}


def value_text(key: str, row: Row) -> str:
    nd, unit = UNITS.get(key, (0, "MB" if key.startswith("rss") else "req/s"))
    return f"{fmt(row.value, nd)} {unit}" if row.value is not None else "—"


def escape(text: str) -> str:
    """A table cell's text: a `|` (in a server's or client's message) would split the cell."""
    return text.replace("|", "\\|")


def ratio_text(row: Row, ref: Row | None) -> str:
    if ref is None or not ref.value or row.value is None:
        return "—"
    return f"{row.value / ref.value:.2f}"


def results_table(suite: Suite, doc: dict[str, Any], contenders: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| workload | contender | median | p50 ms | p99 ms | errors / notes "
        f"| {suite.ref_col} | {suite.ref2_col} | target | x target | met |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, title in suite.workloads.items():
        for name, label, row, ref, ref2 in rows_of(suite, key, doc, contenders):
            comparable = key in suite.comparable
            ratio = ratio_text(row, ref) if comparable else "—"
            ratio2 = ratio_text(row, ref2) if comparable else "—"
            target = suite.target(key, name) if suite.is_outcrop(name) else None
            x, met = verdict(target, key, row, ref) if target else ("", "")
            lines.append(
                f"| {title} | {label} | {value_text(key, row)} | {fmt(row.p50, 2)} | "
                f"{fmt(row.p99, 2)} | {escape(row.errors) or '—'} | {ratio} | {ratio2} "
                f"| {target.text if target else ''} | {x} | {met} |"
            )
    return lines


def summary_table(suite: Suite, doc: dict[str, Any], contenders: list[dict[str, Any]]) -> list[str]:
    lines = [
        f"| target ({suite.issue}) | workload | {' | '.join(suite.columns)} |",
        "|---|---|" + "---|" * len(suite.columns),
    ]
    for key, title in suite.workloads.items():
        cells, ref2_cells, texts = {}, {}, []
        for name, _label, row, ref, ref2 in rows_of(suite, key, doc, contenders):
            target = suite.target(key, name) if suite.is_outcrop(name) else None
            if target is None:
                continue
            x, met = verdict(target, key, row, ref)
            measured = f"{met} ({value_text(key, row)}, {x}x target)"
            cells[name] = measured if row.value is not None else "not measured"
            ratio2 = ratio_text(row, ref2)
            ref2_cells[name] = ratio2 if ratio2 == "—" else f"{ratio2}x"
            texts.append(target.text)
        if not cells:
            continue
        if key in suite.extras:
            row_cells = [cells[suite.extras[key]]] + ["(same)"] * (len(suite.columns) - 1)
        else:
            row_cells = [cells.get(name, "—") for name in suite.outcrop]
        target_text = " / ".join(dict.fromkeys(texts))
        lines.append(f"| {target_text} | {title} | {' | '.join(row_cells)} |")
        if key == "full":
            info = [ref2_cells.get(name, "—") for name in suite.outcrop]
            lines.append(f"| {suite.info2} | full read | {' | '.join(info)} |")
            if suite.limit:
                lines.append(limit_row(suite, doc, contenders))
        for pairing in ("paired", "paired2"):
            if key in ("full", "subset") and any(
                (doc["results"].get(name) or {}).get(pairing) for name in suite.outcrop
            ):
                lines.append(paired_row(suite, doc, key, pairing))
    if suite is DAP:
        cells = [values_cell(doc["results"].get(name), doc["ref"]) for name in suite.outcrop]
        lines.append(
            "| correct values | full read, one GET, time step, subset: CRC32 against the "
            f"local array | {' | '.join(cells)} |"
        )
    return lines


def paired_row(suite: Suite, doc: dict[str, Any], key: str, pairing: str = "paired") -> str:
    """Outcrop ÷ nginx from reads alternating between them in one client process
    (run.Bench.paired): throughput ratio for the full read, time ratio for the subset,
    with whether the target's bound holds on that ratio. `paired` is nginx serving the
    target's reference copy (zarr-python's default codecs); `paired2`, for the contenders
    serving stored chunks, nginx serving the same bytes they do."""
    crc = doc["ref"].get("full_crc" if key == "full" else "subset_crc")
    cells = []
    for name in suite.outcrop:
        p = (doc["results"].get(name) or {}).get(pairing) or {}
        ours, ref = median(p.get(f"{key}_times", [])), median(p.get(f"ref_{key}_times", []))
        if not ours or not ref:
            cells.append(escape("; ".join(p.get("errors", []))[:120]) or "—")
            continue
        if p.get(f"{key}_crc") != crc or p.get(f"ref_{key}_crc") != crc:
            cells.append(WRONG)
            continue
        ratio = ref / ours if key == "full" else ours / ref  # as `target` compares
        target = suite.target(key, name)
        assert target is not None and target.of_ref
        met = ratio >= target.bound if target.at_least else ratio <= target.bound
        n = len(p[f"{key}_times"])
        cells.append(
            f"{'yes' if met else '**NO**'} ({ratio:.2f}x nginx; {ours * 1e3:,.0f} vs "
            f"{ref * 1e3:,.0f} ms, medians of {n})"
        )
    what = "throughput" if key == "full" else "time"
    copy = "" if pairing == "paired" else " serving the same bytes, for information:"
    title = f"(paired with nginx{copy} in one client, reads alternating; {what} ratio)"
    return f"| {title} | {'full read' if key == 'full' else 'small subset'} | {' | '.join(cells)} |"


def limit_row(suite: Suite, doc: dict[str, Any], contenders: list[dict[str, Any]]) -> str:
    """Each full read ÷ the limit's, for the columns whose client speaks its protocol: near
    1 means the client, not the server, sets the speed."""
    limit = doc["results"].get(suite.limit)
    protocol = {c["name"]: c["protocol"] for c in contenders}
    ref = ROWS["full"](limit, doc["ref"]) if limit else None
    cells = []
    for name in suite.outcrop:
        res = doc["results"].get(name)
        row = ROWS["full"](res, doc["ref"]) if res else None
        same = protocol.get(name) == protocol.get(suite.limit)
        cells.append(f"{ratio_text(row, ref)}x" if row and same else "—")
    return f"| {suite.limit_info} | full read | {' | '.join(cells)} |"


def values_cell(res: dict[str, Any] | None, ref: dict[str, Any]) -> str:
    """Whether every read of an Outcrop DAP contender returned the local file's values."""
    if not res:
        return "—"
    crcs = {"full": ref.get("full_crc"), "raw": ref.get("full_crc")}
    crcs["subset"] = ref.get("subset_crc")
    checked = [k for k in crcs if (res.get(k) or {}).get("times")]
    wrong = [k for k in checked if res[k].get("crc") != crcs[k]]
    step = ((res.get("wrk") or {}).get("chunk") or {}).get("check")
    if step:
        checked.append("time step")
        wrong += ["time step"] if WRONG in step else []
    if not checked:
        return "not measured"
    return f"**NO** ({', '.join(wrong)})" if wrong else f"yes ({', '.join(checked)})"


def details_table(doc: dict[str, Any], contenders: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| contender | other processes busy before (cores) | server CPU s per full read "
        "(DAP2: per one-GET read) | cores busy: chunk / cycle / meta | bytes per chunk "
        "(DAP: per time step) | chunks cycled |",
        "|---|---|---|---|---|---|",
    ]
    for c in contenders:
        res = doc["results"].get(c["name"])
        if not res or res.get("skipped"):
            continue
        wrk = res.get("wrk") or {}
        cores = " / ".join(
            fmt(median(r.get("srv_cores") for r in wrk.get(k, {}).get("runs", [])), 2)
            for k in ("chunk", "cycle", "meta")
        )
        probe = wrk.get("chunk", {}).get("probe", {})
        cpu = fmt((res.get("full") or {}).get("srv_cpu_s"), 1)
        if res.get("raw"):
            cpu += f" ({fmt(res['raw'].get('srv_cpu_s'), 1)})"
        lines.append(
            f"| {c['label']} | {fmt(res.get('others_busy'), 2)} | {cpu} | {cores} | "
            f"{probe.get('bytes', '—')} | {wrk.get('cycle', {}).get('n_distinct') or '—'} |"
        )
    return lines


def ran(suite: Suite, doc: dict[str, Any], contenders: list[dict[str, Any]]) -> bool:
    """Whether this run measured the suite: a contender of its own (not a local read that
    both suites share) or an extra, or, when only shared ones ran, any of them."""
    results = doc["results"]
    own = [c["name"] for c in contenders if tuple(c["suites"]) == (suite.key,)]
    if any(n in results for n in [*own, *suite.extras.values()]):
        return True
    lone = [c["name"] for c in contenders if len(c["suites"]) == 1]
    mine = [c["name"] for c in contenders if suite.key in c["suites"]]
    return not any(n in results for n in lone) and any(n in results for n in mine)


def suite_section(suite: Suite, doc: dict[str, Any], contenders: list[dict[str, Any]]) -> list[str]:
    """The suite's summary against its targets and all its results; empty if nothing ran."""
    if not ran(suite, doc, contenders):
        return []
    return [
        f"## {suite.title} ({suite.issue}): Outcrop against the targets",
        "",
        *summary_table(suite, doc, contenders),
        "",
        f"## {suite.title} ({suite.issue}): all results",
        "",
        suite.explain,
        "",
        *results_table(suite, doc, contenders),
        "",
    ]


def render(doc: dict[str, Any], contenders: list[dict[str, Any]]) -> str:
    meta, ref = doc["meta"], doc["ref"]
    shape = "x".join(map(str, ref.get("shape", []))) or "?"
    lines = [
        f"# Outcrop benchmark — {meta['date']}",
        "",
        f"Machine: {meta['machine']}. "
        + (
            f"Data: `temp({shape})` float32, {ref.get('full_bytes', 0) / 1e6:.0f} MB decoded, "
            f"chunks of one time step; on disk MB {ref.get('sizes_mb')}. wrk {meta['wrk']}. "
            if ref
            else ""
        )
        + f"Runs: {meta['options']['runs']}.",
        f"Versions: {meta['versions']}.",
        "",
        "Medians. `x target` = value ÷ the target's bound (≥ targets pass at ≥ 1, < targets "
        "below 1); for throughputs higher is better, for times lower is better.",
        "",
        *[line for suite in SUITES for line in suite_section(suite, doc, contenders)],
        *series.section(doc),
        *jobs.section(doc),
        *images.section(doc),
        *service.section(doc),
    ]
    details = details_table(doc, contenders)
    if len(details) > 2:  # a row besides the header: a grid suite ran
        lines += ["## Server details", "", *details]
    busy = [r.get("others_busy", 0) for r in doc["results"].values()]
    if max(busy, default=0) > 0.25:
        lines += [
            "",
            f"**Warning:** other processes kept up to {max(busy):.2f} of the "
            f"{meta['machine'].split()[0]} cores busy during this run; its figures are low "
            "and noisy. Re-run on a quiet machine for numbers to compare.",
        ]
    problems = [
        f"- {name}: {e}"
        for name, res in doc["results"].items()
        for e in [*res.get("errors", []), *([res["skipped"]] if res.get("skipped") else [])]
    ]
    if problems:
        lines += ["", "## Errors and skips", "", *problems]
    return "\n".join(lines) + "\n"
