"""Position searches over 100,000 images (issue 6: each answered in under 100 ms).

    .venv/bin/python bench/images_query.py [--images 100000] [--queries 200] [--database URL]

Footprints are made in code (no FITS files): square images of 0.05 to 1 degree, rotated,
all over the sky, stored through the same `ImageStore.save` that ingest uses (cells and
keywords included). Then random searches — a point, a 0.1 degree cone, a 1 degree cone,
and a point with an instrument and a keyword filter — each timed through
`ImageService.query` (SQL on the cell index plus the exact test), and a table of medians
and 95th percentiles printed against the 100 ms target.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from outcrop.db import connect
from outcrop.images.ingest import EDGE_SAMPLES, Fingerprint, Footprint, ImageRecord
from outcrop.images.search import ImageQuery, KeywordFilter
from outcrop.images.service import ImageService
from outcrop.images.store import FileImages
from outcrop.settings import load_settings

TARGET_MS = 100.0


def footprint(ra: float, dec: float, side: float, angle: float) -> Footprint:
    """A square of `side` degrees (tangent-plane approximation), `angle` rotated."""
    t = np.arange(EDGE_SAMPLES) / EDGE_SAMPLES - 0.5
    h = np.full(EDGE_SAMPLES, 0.5)
    x = np.concatenate([t, h, -t, -h]) * side
    y = np.concatenate([-h, t, h, -t]) * side
    c, s = math.cos(angle), math.sin(angle)
    xr, yr = c * x - s * y, s * x + c * y
    decs = np.clip(dec + yr, -89.999, 89.999)
    ras = (ra + xr / np.maximum(np.cos(np.radians(decs)), 1e-3)) % 360
    outline = [(float(a), float(d)) for a, d in zip(ras, decs, strict=True)]
    return Footprint(ra, dec, side * 0.75, outline[::EDGE_SAMPLES], outline)


def fill(service: ImageService, n: int, seed: int, batch: int = 2000) -> None:
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    files: list[FileImages] = []
    for k in range(n):
        ra, dec = rng.uniform(0, 360), math.degrees(math.asin(rng.uniform(-0.999, 0.999)))
        record = ImageRecord(
            hdu=0,
            extname="",
            width=1000,
            height=1000,
            footprint=footprint(ra, dec, rng.uniform(0.05, 1.0), rng.uniform(0, math.pi)),
            pixel_scale=1.0,
            start=None,
            stop=None,
            exposure=float(k % 10 * 30),
            instrument=("A", "B", "C")[k % 3],
            filter=("g", "r")[k % 2],
            telescope="T",
            header={"EXPTIME": float(k % 10 * 30), "OBJECT": f"f{k % 100}", "AIRMASS": 1.2},
        )
        print_ = Fingerprint(1, k, "")
        files.append(FileImages(f"/bench/{k}.fits", f"{k}.fits", "", print_, [record]))
        if len(files) == batch or k == n - 1:
            service.store.save_many("bench", files)
            files = []
        if (k + 1) % 10000 == 0:
            print(f"  {k + 1} images stored ({time.perf_counter() - start:.0f} s)", flush=True)


def timed(service: ImageService, queries: list[ImageQuery]) -> tuple[list[float], list[int]]:
    times, totals = [], []
    for query in queries:
        t0 = time.perf_counter()
        _, total = service.query(query)
        times.append((time.perf_counter() - t0) * 1000)
        totals.append(total)
    return times, totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--database", help="database URL (default: SQLite in a temp folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(data_dir=Path(tmp), database_url=args.database)
        service = ImageService(settings, connect(settings.db_url))
        print(f"storing {args.images} footprints in {settings.db_url.split('@')[-1]} …")
        fill(service, args.images, seed=1)
        rng = np.random.default_rng(2)
        points = [
            (rng.uniform(0, 360), math.degrees(math.asin(rng.uniform(-1, 1))))
            for _ in range(args.queries)
        ]
        exp = KeywordFilter("EXPTIME", low=60.0, high=200.0)
        kinds = {
            "point": [ImageQuery(ra=a, dec=d) for a, d in points],
            "cone 0.1 deg": [ImageQuery(ra=a, dec=d, radius=0.1) for a, d in points],
            "cone 1 deg": [ImageQuery(ra=a, dec=d, radius=1.0) for a, d in points],
            "point + instrument + EXPTIME": [
                ImageQuery(ra=a, dec=d, radius=0.5, instruments=("A",), keywords=(exp,))
                for a, d in points
            ],
        }
        timed(service, kinds["point"][:10])  # warm the page cache and imports
        print(f"\n| search ({args.images} images) | median ms | p95 ms | mean matches | target |")
        print("|---|---|---|---|---|")
        for name, queries in kinds.items():
            times, totals = timed(service, queries)
            p95 = float(np.percentile(times, 95))
            verdict = "ok" if p95 < TARGET_MS else "MISSED"
            print(
                f"| {name} | {statistics.median(times):.1f} | {p95:.1f} | "
                f"{statistics.mean(totals):.1f} | < {TARGET_MS:.0f} ms: {verdict} |"
            )
        service.store.engine.dispose()


if __name__ == "__main__":
    main()
