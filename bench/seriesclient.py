"""The client of the time-series suite (bench/series.py) that reduces for itself, run in a
fresh process: `python bench/seriesclient.py SPEC` (JSON: base URL, dataset, span, runs).

It fetches the span at full resolution in HAPI binary, decodes it with NumPy and reduces it
to 2,000 bins itself, timing both, `runs` times; then it asks Outcrop for the same span
reduced (CSV with its header) and compares the answer with its own reduction at the width
Outcrop answered. Prints one JSON line.
"""

from __future__ import annotations

import json
import re
import sys
import time
from typing import Any

import numpy as np
from series import BINS, STATISTICS, Http, data_path, width_of

Array = np.ndarray[Any, Any]


def client_main(spec: dict[str, Any]) -> dict[str, Any]:
    """Fetch the span at full resolution in HAPI binary and reduce it with NumPy, `runs`
    times (each timed: fetch and decode, then reduce); then compare with Outcrop's answer."""
    http = Http(spec["base"])
    info = json.loads(http.ok("/hapi/info?dataset=" + spec["dataset"], keep=True)["body"])
    params = info["parameters"]
    names = [p["name"] for p in params[1:]]
    fills = {p["name"]: float(p["fill"] if p["fill"] is not None else "nan") for p in params[1:]}
    dtype = np.dtype([("t", f"S{params[0]['length']}")] + [(n, "<f8") for n in names])
    width = round(spec["span_s"] / BINS * 1e9)
    path = data_path(spec["dataset"], tuple(spec["span"]), "binary", None)
    out: dict[str, Any] = {"fetch_s": [], "reduce_s": []}
    for _ in range(spec["runs"]):
        t = cols = None  # free the previous run's arrays first
        t0 = time.perf_counter()
        t, cols, out["bytes"] = fetch_binary(http, path, dtype)
        out["fetch_s"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        reduce_all(t, cols, width, fills)
        out["reduce_s"].append(time.perf_counter() - t0)
    assert t is not None and cols is not None
    out["rows"] = len(t)
    out["probe"] = probe(http, spec, t, cols, fills)
    return out


def fetch_binary(
    http: Http, path: str, dtype: np.dtype[Any]
) -> tuple[Array, dict[str, Array], int]:
    """Times (ns) and value columns of a HAPI binary stream, decoded 8 MB at a time."""
    r = http.send(path)
    if r.status != 200:
        raise RuntimeError(f"GET {path} answered {r.status}: {r.read()[:300]!r}")
    rec, names = dtype.itemsize, [n for n in dtype.names or () if n != "t"]
    buf = bytearray(8 << 20)
    view, have, total = memoryview(buf), 0, 0
    times: list[Array] = []
    cols: dict[str, list[Array]] = {n: [] for n in names}
    while True:
        k = r.readinto(view[have:])
        have, total = have + k, total + k
        if k and have < len(buf):
            continue
        whole = have // rec * rec
        recs = np.frombuffer(buf, dtype, count=whole // rec)
        times.append(iso_ns(recs["t"]))
        for n in names:
            cols[n].append(recs[n].copy())
        del recs
        view[: have - whole] = view[whole:have]
        have -= whole
        if not k:
            break
    if have:
        raise RuntimeError(f"binary stream ends inside a record ({have} bytes left)")
    return np.concatenate(times), {n: np.concatenate(c) for n, c in cols.items()}, total


def iso_ns(t: Array) -> Array:
    """`yyyy-mm-ddThh:mm:ss[.f…]Z` (fixed width) as int64 ns, by digit arithmetic."""
    n, width = len(t), t.dtype.itemsize
    d = np.frombuffer(np.ascontiguousarray(t).tobytes(), np.uint8).reshape(n, width)

    def num(a: int, b: int) -> Array:
        out = np.zeros(n, np.int64)
        for i in range(a, b):
            out = out * 10 + (d[:, i].astype(np.int64) - 48)
        return out

    y, m, day = num(0, 4), num(5, 7), num(8, 10)
    y = y - (m <= 2)  # days from civil (H. Hinnant), for years after 0
    era, mp = y // 400, (m + 9) % 12
    yoe = y - era * 400
    doe = yoe * 365 + yoe // 4 - yoe // 100 + (153 * mp + 2) // 5 + day - 1
    days = era * 146097 + doe - 719468
    secs = num(11, 13) * 3600 + num(14, 16) * 60 + num(17, 19)
    digits = max(0, bytes(t[0]).find(b"Z") - 20) if n else 0  # after `ss.`, before `Z`
    frac = num(20, 20 + digits) * 10 ** (9 - digits) if digits else 0
    ns: Array = (days * 86400 + secs) * 10**9 + frac
    return ns


def reduce_all(
    t: Array, cols: dict[str, Array], width: int, fills: Any
) -> dict[str, dict[str, Array]]:
    """Per parameter: bins `[k*w, (k+1)*w)` from 1970 holding samples, their index `k`,
    count of valid values (not fill, not NaN), min, max and mean."""
    k = t // width
    edges = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    out = {}
    for name, v in cols.items():
        valid = ~np.isnan(v) & (v != fills[name])
        count = np.add.reduceat(valid.astype(np.int64), edges)
        total = np.add.reduceat(np.where(valid, v, 0.0), edges)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = total / count
        out[name] = {
            "k": k[edges],
            "count": count,
            "min": np.minimum.reduceat(np.where(valid, v, np.inf), edges),
            "max": np.maximum.reduceat(np.where(valid, v, -np.inf), edges),
            "mean": mean,
        }
    return out


def probe(http: Http, spec: dict[str, Any], t: Any, cols: Any, fills: Any) -> str:
    """Outcrop's warm answer (CSV with its header) against this client's own reduction at
    the width Outcrop answered, on the bins lying wholly inside the span."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    path = data_path(spec["dataset"], tuple(spec["span"]), "csv", width_of(spec["span_s"]), True)
    body = http.ok(path, keep=True)["body"]
    head_end = 0
    while body.startswith(b"#", head_end):
        head_end = body.index(b"\n", head_end) + 1
    head = json.loads(b"".join(ln[1:] for ln in body[:head_end].splitlines()))
    key = "x_width" if "x_width" in head else "x_resolution"  # x_width: the width answered
    width = duration_ns(head[key])
    names = [p["name"] for p in head["parameters"]]
    opts = pcsv.ReadOptions(column_names=names)
    table = pcsv.read_csv(
        pa.py_buffer(body[head_end:]),
        read_options=opts,
        convert_options=pcsv.ConvertOptions(column_types={names[0]: pa.string()}),
    )
    centre = iso_ns(np.array(table.column(0).to_pylist(), dtype="S"))
    said, width = width, int(np.diff(centre).min()) if len(centre) > 1 else width
    k = centre // width
    start, stop = (iso_ns(np.array([s], dtype="S"))[0] for s in spec["span"])
    inside = (k * width >= start) & ((k + 1) * width <= stop)
    mine = reduce_all(t[(t >= start) & (t < stop)], cols_in(t, cols, start, stop), width, fills)
    found = differences(table, names, k, inside, mine, fills, width)
    if said != width:  # the header must say the width answered ("or finer")
        said_text = f"{key} {said / 1e9:g} s, bins {width / 1e9:g} s apart"
        found = f"**WRONG HEADER**: {said_text}; {found}"
    return found


def cols_in(t: Any, cols: dict[str, Any], start: int, stop: int) -> dict[str, Any]:
    keep = (t >= start) & (t < stop)
    return {n: v[keep] for n, v in cols.items()}


def differences(
    table: Any, names: list[str], k: Any, inside: Any, mine: Any, fills: Any, width: int
) -> str:
    stats = STATISTICS.split(",")
    problems, compared = [], int(inside.sum())
    whole = len(np.unique(next(iter(mine.values()))["k"]))
    for p, got in mine.items():
        idx = np.clip(np.searchsorted(got["k"], k[inside]), 0, len(got["k"]) - 1)
        found = got["k"][idx] == k[inside]
        for stat in stats:
            col = f"{p}_{stat}" if len(stats) > 1 else p
            if col not in names:
                problems.append(f"no column {col}")
                continue
            server = table.column(col).to_numpy(zero_copy_only=False)[inside]
            empty = ~found | (got["count"][idx] == 0)
            expect = np.where(empty, fills[p], got[stat][idx])
            bad = ~np.isclose(server, expect, rtol=1e-9, atol=0, equal_nan=True)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                problems.append(
                    f"{col}: {int(bad.sum())} of {compared} bins differ "
                    f"(bin {int(k[inside][i])}: {float(server[i])!r} vs {float(expect[i])!r})"
                )
    if compared < whole - 2:  # the client's bins with samples, wholly inside the span
        problems.append(f"only {compared} whole bins answered, {whole} expected")
    w = f"width {width / 1e9:g} s"
    if problems:
        return "**WRONG VALUES**: " + "; ".join(problems)[:300] + f" ({w})"
    return f"values ok ({compared} whole bins of {len(k)} compared, {w})"


def duration_ns(text: str) -> int:
    """An ISO 8601 duration `PnDTnHnMn.nS` (what Outcrop's header says) in ns."""
    m = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:([\d.]+)S)?)?", text)
    if m is None:
        raise ValueError(f"not a duration: {text!r}")
    d, h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    return round(((d * 24 + h) * 60 + mi) * 60e9 + s * 1e9)


if __name__ == "__main__":
    print(json.dumps(client_main(json.loads(sys.argv[1]))), flush=True)
