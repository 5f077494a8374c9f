"""The sky-image suite (issue 6, `--suite images`): 5-arcmin cutouts from a collection of
100 FITS images of 4096 x 4096.

The images (int16, 1 arcsec per pixel, TAN with a small rotation, 32 MB each, 3.2 GB in
all) are written once under `<work>/images/data-<n>/` and reused. They are ingested with
`outcrop ingest images bench FOLDER` into a fresh data folder; a server is started on it,
and the image ids are read from `GET /api/images?collection=bench`.

Measured, for FITS and PNG: the median time of one cutout asked alone (concurrency 1),
cold (positions never asked before); requests per second at concurrency 8 (httpx, async),
cold, then cached (the same requests again); and the same cutouts made by a plain
astropy script in a process of its own (`fits.open` memory-mapped, `Cutout2D` on
`section`, `writeto` a BytesIO; for PNG also ZScale and Pillow). Target: Outcrop's
uncached cutout within 1.5x of the script's time. The first cutout of each run is also
compared with the script's, pixel by pixel (a sanity line, not a test).

Standalone: `python bench/images.py [--count 5] [--requests 40] [--work-dir DIR]`.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

NAME = "outcrop-images"
COLLECTION = "bench"
COUNT = 100
SIDE = 4096
SCALE_ARCSEC = 1.0
SIZE = "5arcmin"
SIZE_DEG = 5 / 60
CONCURRENCY = 8
REQUESTS = 400  # per format and series at concurrency 8; a quarter of it alone
VERSION = "1"
TARGET = ("within 1.5x of the script", 1.5)
FORMATS = ("fits", "png")

SCRIPT = """\
import io, json, sys, time
t0 = time.perf_counter()
import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import Cutout2D
from astropy.visualization import ZScaleInterval
from PIL import Image
imports = time.perf_counter() - t0
fmt, jobs = sys.argv[1], json.loads(sys.stdin.read())
times, first = [], None
for path, ra, dec in jobs:
    t = time.perf_counter()
    with fits.open(path) as hdul:
        hdu = hdul[0]
        from astropy.wcs import WCS
        wcs = WCS(hdu.header)
        cut = Cutout2D(hdu.section, SkyCoord(ra * u.deg, dec * u.deg), {size} * u.deg,
                       wcs=wcs, mode="partial")
        header = hdu.header.copy()
    header.update(cut.wcs.to_header())
    buf = io.BytesIO()
    if fmt == "fits":
        fits.PrimaryHDU(cut.data, header).writeto(buf)
    else:
        data = cut.data.astype(np.float32)
        lo, hi = ZScaleInterval().get_limits(data)
        grey = np.clip((data - lo) / (hi - lo), 0, 1)[::-1] * 255
        Image.fromarray(grey.astype(np.uint8)).save(buf, format="PNG")
    times.append(time.perf_counter() - t)
    if first is None:
        first = cut.data.astype(float).tolist() if fmt == "fits" else None
print(json.dumps({{"imports_s": imports, "times": times, "first": first}}))
"""


class Missing(RuntimeError):
    """A piece the suite needs is not there (yet): the message says which."""


# -- the images ------------------------------------------------------------------------------
def centre_of(i: int) -> tuple[float, float]:
    """Image i's centre: a grid of 10 x 10 fields 1.2 degrees apart (images are 1.14)."""
    return 150.0 + (i % 10) * 1.2 / np.cos(np.radians(20.0)), 14.0 + (i // 10) * 1.2


def header_of(i: int) -> Any:
    from astropy.wcs import WCS

    ra, dec = centre_of(i)
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(SIDE + 1) / 2, (SIDE + 1) / 2]
    s, a = SCALE_ARCSEC / 3600, np.radians(3.0 * (i % 7) - 9.0)
    w.wcs.cd = [[-s * np.cos(a), s * np.sin(a)], [s * np.sin(a), s * np.cos(a)]]
    w.wcs.radesys = "ICRS"
    header = w.to_header()
    header["DATE-OBS"] = f"2024-01-{1 + i % 28:02d}T0{i % 10}:00:00"
    header["EXPTIME"], header["FILTER"], header["INSTRUME"] = 30.0, "r", "BENCHCAM"
    return header


def ensure_images(work: Path, count: int) -> Path:
    """`count` images under `<work>/images/data-<count>/`, written once (a marker file
    says the set is complete)."""
    from astropy.io import fits

    folder = work / "images" / f"data-{count}"
    marker = folder / "complete.json"
    if marker.exists() and json.loads(marker.read_text()).get("version") == VERSION:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(6)
    sky = rng.normal(1000, 30, (SIDE, SIDE)).astype(np.int16)  # shared noise, shifted per image
    t0 = time.perf_counter()
    for i in range(count):
        data = np.roll(sky, 97 * i, axis=1) + np.int16(i)
        fits.PrimaryHDU(data, header_of(i)).writeto(folder / f"img_{i:03d}.fits")
        if i % 10 == 9:
            print(f"    wrote {i + 1} images ({time.perf_counter() - t0:.0f} s)", flush=True)
    marker.write_text(json.dumps({"version": VERSION, "count": count, "side": SIDE}))
    return folder


def warm(folder: Path) -> None:
    for f in sorted(folder.glob("*.fits")):
        with f.open("rb") as fh:
            while fh.read(1 << 24):
                pass


def positions(images: list[dict[str, Any]], n: int, seed: int) -> list[tuple[str, float, float]]:
    """n (image id, ra, dec), cycling over the images, each within 20 arcmin of its
    image's centre (so no cutout is padded); distinct for a distinct seed."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        image = images[k % len(images)]
        dra, ddec = rng.uniform(-20 / 60, 20 / 60, 2)
        ra = image["ra"] + dra / np.cos(np.radians(image["dec"]))
        out.append((image["id"], round(float(ra), 6), round(float(image["dec"] + ddec), 6)))
    return out


def cutout_path(image_id: str, ra: float, dec: float, fmt: str) -> str:
    from urllib.parse import quote

    return f"/api/images/{quote(image_id, safe=':/')}?ra={ra}&dec={dec}&size={SIZE}&format={fmt}"


# -- clients ---------------------------------------------------------------------------------
async def fire(base: str, paths: list[str], concurrency: int) -> dict[str, Any]:
    """Every path GET once by `concurrency` workers; requests/s, latencies, failures."""
    import httpx

    queue: asyncio.Queue[str] = asyncio.Queue()
    for p in paths:
        queue.put_nowait(p)
    latencies: list[float] = []
    failures: list[str] = []
    limits = httpx.Limits(max_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            path = queue.get_nowait()
            t0 = time.perf_counter()
            r = await client.get(path)
            latencies.append(time.perf_counter() - t0)
            if r.status_code != 200:
                failures.append(f"{r.status_code} {path}: {r.text[:160]}")

    async with httpx.AsyncClient(base_url=base, timeout=300, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        took = time.perf_counter() - t0
    return {
        "n": len(paths),
        "s": took,
        "rps": len(paths) / took,
        "p50_s": statistics.median(latencies),
        "failed": len(failures),
        "failures": failures[:3],
    }


def script_run(bench: Any, fmt: str, jobs: list[tuple[str, float, float]]) -> dict[str, Any]:
    path = bench.run_dir / "cutout_script.py"
    path.write_text(SCRIPT.format(size=SIZE_DEG))
    cmd = [sys.executable, str(path), fmt]
    r = subprocess.run(
        cmd, input=json.dumps(jobs), capture_output=True, text=True, timeout=1800, check=False
    )
    if r.returncode != 0:
        raise RuntimeError(f"the script failed: {r.stderr.strip()[-400:]}")
    out: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


# -- the suite -------------------------------------------------------------------------------
def run(bench: Any) -> dict[str, Any]:
    """Every measurement; errors are kept and the run goes on where it can."""
    count = int(getattr(bench.cfg, "images", COUNT) or COUNT)
    n = int(
        getattr(bench.cfg, "image_requests", 0) or (REQUESTS // 4 if bench.cfg.quick else REQUESTS)
    )
    res: dict[str, Any] = {"errors": [], "count": count, "requests": n, "outcrop": {}, "script": {}}
    srv = None
    try:
        folder = ensure_images(bench.work, count)
        res["data"] = {"count": count, "side": SIDE, "scale_arcsec": SCALE_ARCSEC}
        res["data"]["size_mb"] = round(sum(f.stat().st_size for f in folder.glob("*.fits")) / 1e6)
        state = bench.work / "state" / "images"
        shutil.rmtree(state, ignore_errors=True)
        res["ingest_s"] = ingest(folder, state)
        warm(folder)
        res["others_busy"] = bench.wait_quiet()
        srv = start(bench, state)
        images = list_images(srv.url, count)
        by_id = {im["id"]: str(folder / Path(im["path"]).name) for im in images}
        for k, fmt in enumerate(FORMATS):
            res["outcrop"][fmt] = measure(srv.url, images, fmt, n, seed=10 * k)
            jobs = [(by_id[i], ra, dec) for i, ra, dec in positions(images, n // 4, 10 * k + 5)]
            res["script"][fmt] = script_run(bench, fmt, jobs)
            say(fmt, res)
        res["check"] = check_first(srv.url, images, by_id, bench)
        print(f"    check: {res['check']}", flush=True)
    except Missing as exc:
        res["errors"].append(f"missing: {exc}")
        print(f"    MISSING: {exc}", flush=True)
    except Exception as exc:
        res["errors"].append(f"{type(exc).__name__}: {str(exc)[:300]}")
        print(f"    ERROR {exc}", flush=True)
    finally:
        if srv is not None:
            res["mem"] = srv.memory()
            srv.stop()
    return res


def ingest(folder: Path, state: Path) -> float:
    cmd = [sys.executable, "-m", "outcrop", "ingest", "images", COLLECTION, str(folder)]
    cmd += ["--data-dir", str(state)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, check=False)
    if r.returncode != 0:
        raise Missing(f"`outcrop ingest images` failed (rc {r.returncode}): {r.stderr[-300:]}")
    return time.perf_counter() - t0


def start(bench: Any, state: Path) -> Any:
    import servers

    empty = bench.work / "images" / "served"  # the images are in the catalog, not served
    empty.mkdir(parents=True, exist_ok=True)
    port = servers.free_port()
    argv = bench.outcrop_argv(empty, port, state)
    log = bench.logs / "outcrop-images.log"
    srv = servers.Server(argv, f"http://{servers.HOST}:{port}", log, {})
    srv.start(bench.run_dir)
    srv.wait_ready("/api/images?limit=1", timeout=300)
    return srv


def list_images(base: str, count: int) -> list[dict[str, Any]]:
    import httpx

    r = httpx.get(f"{base}/api/images", params={"collection": COLLECTION, "limit": 1000})
    if r.status_code != 200:
        raise Missing(f"GET /api/images answered {r.status_code}: {r.text[:200]}")
    images: list[dict[str, Any]] = r.json()["images"]
    if len(images) != count:
        raise Missing(f"{len(images)} images listed in {COLLECTION}, {count} expected")
    return images


def measure(base: str, images: list[dict[str, Any]], fmt: str, n: int, seed: int) -> dict[str, Any]:
    """Alone (cold, a quarter of n), then n cold at concurrency 8, then the same again."""
    alone = [cutout_path(*p, fmt) for p in positions(images, n // 4, seed + 5)]
    cold = [cutout_path(*p, fmt) for p in positions(images, n, seed)]
    out = {"alone": asyncio.run(fire(base, alone, 1))}
    out["cold"] = asyncio.run(fire(base, cold, CONCURRENCY))
    out["cached"] = asyncio.run(fire(base, cold, CONCURRENCY))
    return out


def check_first(base: str, images: list[dict[str, Any]], by_id: dict[str, str], bench: Any) -> str:
    """One new FITS cutout from Outcrop against the script's, pixel by pixel."""
    import httpx
    from astropy.io import fits

    image_id, ra, dec = positions(images, 1, 999)[0]
    r = httpx.get(base + cutout_path(image_id, ra, dec, "fits"), timeout=120)
    if r.status_code != 200:
        return f"**FAILED**: {r.status_code} {r.text[:200]}"
    got = fits.getdata(io.BytesIO(r.content)).astype(float)
    want = np.array(script_run(bench, "fits", [(by_id[image_id], ra, dec)])["first"])
    if got.shape != want.shape or not np.array_equal(got, want):
        return f"**WRONG VALUES**: shape {got.shape} against the script's {want.shape}"
    return f"values ok ({got.shape[1]} x {got.shape[0]} pixels)"


def say(fmt: str, res: dict[str, Any]) -> None:
    o, s = res["outcrop"][fmt], res["script"][fmt]
    print(
        f"    {fmt}: alone {1e3 * o['alone']['p50_s']:.1f} ms (script "
        f"{1e3 * statistics.median(s['times']):.1f} ms); c={CONCURRENCY} cold "
        f"{o['cold']['rps']:.1f} req/s, cached {o['cached']['rps']:.1f} req/s; failed "
        f"{o['alone']['failed'] + o['cold']['failed'] + o['cached']['failed']}",
        flush=True,
    )


# -- the report ------------------------------------------------------------------------------
def figures(res: dict[str, Any], fmt: str) -> tuple[float | None, float | None]:
    """(Outcrop alone, the script) median seconds per cutout."""
    o, s = res["outcrop"].get(fmt), res["script"].get(fmt)
    mine = o["alone"]["p50_s"] if o else None
    theirs = statistics.median(s["times"]) if s and s.get("times") else None
    return mine, theirs


def section(doc: dict[str, Any]) -> list[str]:
    """The suite's Markdown: the target per format, then every figure."""
    res = doc["results"].get(NAME)
    if not res:
        return []
    missing = [e for e in res["errors"] if e.startswith("missing:")]
    if missing:
        return ["## Sky images (issue 6)", "", f"**Not measured**, {missing[0]}", ""]
    lines = ["| target (issue 6) | workload | measured |", "|---|---|---|"]
    for fmt in FORMATS:
        mine, theirs = figures(res, fmt)
        if mine is None or theirs is None:
            lines.append(f"| uncached {TARGET[0]} | {SIZE} {fmt} | not measured |")
            continue
        ratio = mine / theirs
        met = "yes" if ratio <= TARGET[1] else "**NO**"
        shown = f"{met} ({1e3 * mine:.1f} ms against {1e3 * theirs:.1f} ms: {ratio:.2f}x)"
        lines.append(f"| uncached {TARGET[0]} | {SIZE} {fmt}, one at a time | {shown} |")
    lines.append(f"| correct values | a FITS cutout = the script's | {res.get('check', '—')} |")
    table = ["| workload | value | notes |", "|---|---|---|"]
    for fmt in FORMATS:
        o = res["outcrop"].get(fmt)
        if not o:
            continue
        for key, label in (("cold", "cold"), ("cached", "cached")):
            f = o[key]
            notes = f"{f['n']} requests in {f['s']:.1f} s, median latency "
            notes += f"{1e3 * f['p50_s']:.1f} ms, {f['failed']} failed"
            row = f"{fmt}, concurrency {CONCURRENCY}, {label}"
            table.append(f"| {row} | {f['rps']:.1f} req/s | {notes} |")
        mine, theirs = figures(res, fmt)
        table.append(f"| {fmt}, one at a time, cold (Outcrop) | {1e3 * (mine or 0):.1f} ms | — |")
        imports = res["script"][fmt].get("imports_s", 0)
        table.append(
            f"| {fmt}, the astropy script | {1e3 * (theirs or 0):.1f} ms | per cutout, in "
            f"one process (its imports, {imports:.2f} s, not counted) |"
        )
    mem = res.get("mem")
    if mem:
        table.append(f"| server peak RSS (VmHWM) | {mem['hwm_mb']:.0f} MB | — |")
    data = res.get("data", {})
    intro = (
        f"{data.get('count', '?')} images of {SIDE} x {SIDE} int16 ({data.get('size_mb', '?')} "
        f"MB), {SCALE_ARCSEC:g} arcsec per pixel; {SIZE} cutouts ({int(300 / SCALE_ARCSEC)} "
        f"pixels a side) at random positions on them; ingest took {res.get('ingest_s', 0):.1f} s. "
        "Cold: positions never asked before; cached: the same requests again. The script "
        "makes the same kind of cutout with astropy (memory-mapped open, Cutout2D on the "
        "section, writeto BytesIO; PNG: ZScale and Pillow)."
    )
    return ["## Sky images (issue 6): Outcrop against the target", "", intro, "", *lines, "",
            "## Sky images (issue 6): all results", "", *table, ""]  # fmt: skip


# -- standalone ------------------------------------------------------------------------------
def main() -> int:
    import run

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=COUNT, help="images in the collection")
    ap.add_argument("--requests", type=int, default=REQUESTS, help="requests per series")
    ap.add_argument("--work-dir", type=Path, default=run.DEFAULT_WORK)
    ap.add_argument("--wait-quiet", type=float, default=60)
    args = ap.parse_args()
    cfg = run.parse_args(["--work-dir", str(args.work_dir), "--wait-quiet", str(args.wait_quiet)])
    cfg.images, cfg.image_requests = args.count, args.requests
    bench = run.Bench(cfg)
    doc = {"meta": bench.meta(), "ref": {}, "results": {NAME: run_suite(bench)}}
    out = "\n".join(section(doc))
    (run.RESULTS / f"{bench.stamp}-images.json").write_text(json.dumps(doc, indent=1, default=str))
    (run.RESULTS / f"{bench.stamp}-images.md").write_text(out)
    print(out)
    return 0


def run_suite(bench: Any) -> dict[str, Any]:
    import servers

    try:
        return run(bench)
    finally:
        servers.stop_all()


if __name__ == "__main__":
    sys.exit(main())
