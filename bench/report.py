"""The Markdown report: medians per workload, ratios against nginx serving the same Zarr
format, and each of Outcrop's figures against its target in issue 2."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

OUTCROP = ("outcrop-zarr2", "outcrop-zarr3")


def median(xs: Iterable[float | None]) -> float | None:
    vals = [x for x in xs if x is not None and x == x]
    return statistics.median(vals) if vals else None


@dataclass(frozen=True)
class Target:
    """A target of issue 2: `value` compared with `bound`, or with `bound` x nginx's value."""

    text: str
    bound: float
    at_least: bool  # True: value >= bound passes; False: value < bound passes
    of_nginx: bool = False


TARGETS = {
    "full": Target("≥ 90% of nginx", 0.90, True, True),
    "chunk": Target("≥ 25% of nginx", 0.25, True, True),
    "cycle": Target("≥ 15% of nginx, 0 errors", 0.15, True, True),
    "meta": Target("≥ 5,000 req/s", 5000, True),
    "subset": Target("≤ 1.2 x nginx", 1.2, False, True),
    "cold": Target("< 1 s", 1.0, False),
    "warm": Target("< 1 s", 1.0, False),
    "restart": Target("< 2 s", 2.0, False),
    "rss_full": Target("< 300 MB", 300, False),
    "rss_stream": Target("< 300 MB", 300, False),
    "rss_stream_table": Target("< 300 MB", 300, False),
}

WORKLOADS = {
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
}


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


def full_row(res: dict[str, Any], ref: dict[str, Any]) -> Row | None:
    f = res.get("full")
    if not f:
        return None
    t = median(f.get("times", []))
    mbps = f.get("nbytes", ref.get("full_bytes", 0)) / 1e6 / t if t else None
    return Row(mbps, errors=check(f, ref.get("full_crc")))


def subset_row(res: dict[str, Any], ref: dict[str, Any]) -> Row | None:
    s = res.get("subset")
    if not s:
        return None
    t = median(s.get("times", []))
    return Row(t * 1e3 if t else None, errors=check(s, ref.get("subset_crc")))


def check(out: dict[str, Any], crc: int | None) -> str:
    notes = list(out.get("errors", []))
    if out.get("times") and out.get("crc") != crc:
        notes.insert(0, "**WRONG VALUES** (CRC differs from the local array)")
    return "; ".join(notes)[:200]


def wrk_row(key: str) -> Callable[[dict[str, Any], dict[str, Any]], Row | None]:
    def row(res: dict[str, Any], _ref: dict[str, Any]) -> Row | None:
        e = (res.get("wrk") or {}).get(key)
        if e is None:
            return None
        runs = e.get("runs", [])
        errs = sum(r.get("non2xx", 0) + r.get("sock_err", 0) for r in runs)
        notes = [e["skipped"]] if e.get("skipped") else [str(errs)]
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


def rss_full_row(res: dict[str, Any], _ref: dict[str, Any]) -> Row | None:
    m = res.get("mem_full")
    if not m:
        return None
    start = res.get("mem_start", {}).get("rss_mb")
    return Row(m["hwm_mb"], errors=f"RSS at start {fmt(start, 0)} MB, {m['procs']} process(es)")


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
    "full": full_row,
    "chunk": wrk_row("chunk"),
    "cycle": wrk_row("cycle"),
    "meta": wrk_row("meta"),
    "subset": subset_row,
    "cold": cold_row,
    "warm": warm_row,
    "restart": restart_row,
    "rss_full": rss_full_row,
    "rss_stream": rss_stream_row,
    "rss_stream_table": rss_stream_table_row,
}


def rows_of(key: str, doc: dict[str, Any], contenders: list[dict[str, Any]]) -> list[Any]:
    """(contender, label, Row, nginx Row, same-bytes nginx Row) for each that ran `key`."""
    results, ref = doc["results"], doc["ref"]
    labels = {c["name"]: c["label"] for c in contenders}
    refs = {c["name"]: c.get("ref") for c in contenders}
    same = {c["name"]: c.get("same_bytes") for c in contenders}
    names = {
        "restart": ["outcrop-restart"],
        "rss_stream": ["outcrop-stream"],
        "rss_stream_table": ["outcrop-stream"],
    }.get(key, [c["name"] for c in contenders])
    out = []
    for name in names:
        res = results.get(name)
        row = ROWS[key](res, ref) if res else None
        if row is None:
            continue
        nginx_res = results.get(refs.get(name) or "")
        nginx = ROWS[key](nginx_res, ref) if nginx_res else None
        same_res = results.get(same.get(name) or "")
        same_row = ROWS[key](same_res, ref) if same_res else None
        label = labels.get(name, "Outcrop")
        out.append((name, label, row, nginx, same_row))
    return out


def verdict(key: str, row: Row, nginx: Row | None) -> tuple[str, str]:
    """(x target, met) for an Outcrop row."""
    t = TARGETS[key]
    if row.value is None:
        return "—", "—"
    bound = t.bound
    if t.of_nginx:
        if nginx is None or not nginx.value:
            return "—", "no nginx figure"
        bound = t.bound * nginx.value
    x = row.value / bound
    ok = x >= 1 if t.at_least else (x <= 1 if t.of_nginx else x < 1)
    if key == "cycle" and row.errors not in ("0", ""):
        ok = False
    return f"{x:.2f}", "yes" if ok else "**NO**"


UNITS = {
    "full": (0, "MB/s"),
    "subset": (1, "ms"),
    "cold": (2, "s"),
    "warm": (2, "s"),
    "restart": (2, "s"),
}


def value_text(key: str, row: Row) -> str:
    nd, unit = UNITS.get(key, (0, "MB" if key.startswith("rss") else "req/s"))
    return f"{fmt(row.value, nd)} {unit}" if row.value is not None else "—"


def ratio_text(row: Row, ref: Row | None) -> str:
    if ref is None or not ref.value or row.value is None:
        return "—"
    return f"{row.value / ref.value:.2f}"


def results_table(doc: dict[str, Any], contenders: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| workload | contender | median | p50 ms | p99 ms | errors / notes | x nginx "
        "| x nginx, same bytes | target | x target | met |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, title in WORKLOADS.items():
        for name, label, row, nginx, same in rows_of(key, doc, contenders):
            comparable = key in ("full", "chunk", "cycle", "meta", "subset")
            ratio = ratio_text(row, nginx) if comparable else "—"
            same_ratio = ratio_text(row, same) if comparable else "—"
            is_outcrop = name in OUTCROP or name in ("outcrop-restart", "outcrop-stream")
            target = TARGETS[key].text if is_outcrop else ""
            x, met = verdict(key, row, nginx) if is_outcrop else ("", "")
            lines.append(
                f"| {title} | {label} | {value_text(key, row)} | {fmt(row.p50, 2)} | "
                f"{fmt(row.p99, 2)} | {row.errors or '—'} | {ratio} | {same_ratio} | {target} "
                f"| {x} | {met} |"
            )
    return lines


def summary_table(doc: dict[str, Any], contenders: list[dict[str, Any]]) -> list[str]:
    lines = ["| target (issue 2) | workload | Outcrop v2 | Outcrop v3 |", "|---|---|---|---|"]
    for key, title in WORKLOADS.items():
        cells, same_cells = {}, {}
        for name, _label, row, nginx, same in rows_of(key, doc, contenders):
            if name in OUTCROP or name.startswith("outcrop-"):
                x, met = verdict(key, row, nginx)
                measured = f"{met} ({value_text(key, row)}, {x}x target)"
                cells[name] = measured if row.value is not None else "not measured"
                same_cells[name] = f"{ratio_text(row, same)}x"
        if not cells:
            continue
        both = cells.get("outcrop-restart") or cells.get("outcrop-stream")
        v2, v3 = (
            (both, "(same)") if both else (cells.get(OUTCROP[0], "—"), cells.get(OUTCROP[1], "—"))
        )
        lines.append(f"| {TARGETS[key].text} | {title} | {v2} | {v3} |")
        if key == "full":
            lines.append(
                "| (for information: x nginx serving the same zlib+shuffle bytes) | full read | "
                f"{same_cells.get(OUTCROP[0], '—')} | {same_cells.get(OUTCROP[1], '—')} |"
            )
    return lines


def details_table(doc: dict[str, Any], contenders: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| contender | other processes busy before (cores) | server CPU s per full read "
        "| cores busy: chunk / cycle / meta | bytes per chunk | chunks cycled |",
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
        lines.append(
            f"| {c['label']} | {fmt(res.get('others_busy'), 2)} | "
            f"{fmt((res.get('full') or {}).get('srv_cpu_s'), 1)} | {cores} | "
            f"{probe.get('bytes', '—')} | {wrk.get('cycle', {}).get('n_distinct') or '—'} |"
        )
    return lines


def render(doc: dict[str, Any], contenders: list[dict[str, Any]]) -> str:
    meta, ref = doc["meta"], doc["ref"]
    shape = "x".join(map(str, ref.get("shape", []))) or "?"
    lines = [
        f"# Outcrop benchmark — {meta['date']}",
        "",
        f"Machine: {meta['machine']}. Data: `temp({shape})` float32, "
        f"{ref.get('full_bytes', 0) / 1e6:.0f} MB decoded, chunks of one time step; "
        f"on disk MB {ref.get('sizes_mb')}. wrk {meta['wrk']}. Runs: {meta['options']['runs']}.",
        f"Versions: {meta['versions']}.",
        "",
        "Medians. `x nginx` = value ÷ nginx's value for the same Zarr format (throughputs: "
        "higher is better; times: lower is better). `x target` = value ÷ the target's bound "
        "(≥ targets pass at ≥ 1, < targets below 1).",
        "",
        "## Outcrop against the targets",
        "",
        *summary_table(doc, contenders),
        "",
        "## All results",
        "",
        *results_table(doc, contenders),
        "",
        "## Server details",
        "",
        *details_table(doc, contenders),
    ]
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
