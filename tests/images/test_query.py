"""Position and keyword searches on an ingested collection, against a brute-force
reference computed by astropy from each file's WCS."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("astropy")

from outcrop.db import connect
from outcrop.errors import BadQuery
from outcrop.images.search import ImageQuery, parse_query
from outcrop.images.service import ImageService
from outcrop.settings import load_settings
from tests.images.fitsfiles import reference_matches, wcs_of, write_image
from tests.test_catalog import postgres_url  # noqa: F401  (a fixture)

T0 = datetime(2020, 1, 1, tzinfo=UTC)
INSTRUMENTS = ("WFC", "NIRCAM", "DECAM")
FILTERS = ("g", "r", "i")


def make_collection(folder: Path, n: int = 120, seed: int = 1) -> dict[str, Path]:
    """Images all over the sky, crowded at RA = 0 and both poles, of several sizes and
    rotations (some with SIP), each with time, instrument, filter and EXPTIME."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    centres = [(0.0, 0.0), (359.9, 1.0), (0.1, -1.0), (10.0, 89.5), (200.0, -89.5), (0.0, 90.0)]
    files = {}
    for k in range(n):
        if k < 40:
            ra0, dec0 = centres[k % len(centres)]
            ra = (ra0 + rng.normal(0, 0.7)) % 360
            dec = float(np.clip(dec0 + rng.normal(0, 0.7), -89.9, 89.9))
        else:
            ra, dec = rng.uniform(0, 360), np.degrees(np.arcsin(rng.uniform(-1, 1)))
        name = f"img{k:03d}.fits"
        files[name] = write_image(
            folder / name,
            ra,
            dec,
            shape=(int(rng.integers(10, 40)), int(rng.integers(10, 40))),
            scale_arcsec=float(rng.uniform(30, 150)),
            angle_deg=float(rng.uniform(0, 360)),
            sip=k % 5 == 0,
            keywords={
                "DATE-OBS": (T0 + timedelta(hours=int(rng.integers(0, 50)))).isoformat()[:19],
                "EXPTIME": float(10 * (k % 7)),
                "INSTRUME": INSTRUMENTS[k % 3],
                "FILTER": FILTERS[(k // 3) % 3],
                "OBJECT": f"field/{k % 4}",
            },
        )
    return files


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> tuple[ImageService, dict[str, Path]]:
    root = tmp_path_factory.mktemp("sky")
    files = make_collection(root / "files")
    settings = load_settings(data_dir=root / "state")
    service = ImageService(settings, connect(settings.db_url))
    results = service.ingest("sky", [str(root / "files")])
    assert {r.status for r in results} == {"ingested"}
    return service, files


def all_pages(service: ImageService, query: ImageQuery, size: int) -> tuple[list[str], int]:
    ids: list[str] = []
    offset = 0
    while True:
        page, total = service.query(
            ImageQuery(**{**query.__dict__, "limit": size, "offset": offset})
        )
        ids += [row.id for row in page]
        offset += size
        if offset >= total:
            return ids, total


def probe_positions(files: dict[str, Path], seed: int) -> list[tuple[float, float, float]]:
    """Positions near images (so most searches find something), plus the poles and RA 0."""
    rng = np.random.default_rng(seed)
    probes = [(0.0, 90.0, 0.0), (123.0, -90.0, 0.5), (0.0, 0.0, 0.0), (359.95, 0.5, 0.3)]
    for path in list(files.values())[::2]:
        ra, dec = wcs_of(path).wcs.crval
        probes.append(
            (
                (ra + rng.normal(0, 0.4)) % 360,
                float(np.clip(dec + rng.normal(0, 0.4), -90, 90)),
                float(rng.choice([0.0, 0.1, 0.5, 2.0])),
            )
        )
    return probes


def reference(
    files: dict[str, Path], collection: str, probes: list[tuple[float, float, float]]
) -> list[tuple[set[str], set[str]]]:
    """For each probe, the images astropy says match, and those too close to call (within
    36 arcsec of the search circle's edge)."""
    ra, dec, radius = (np.array(v) for v in zip(*probes, strict=True))
    out: list[tuple[set[str], set[str]]] = [(set(), set()) for _ in probes]
    for name, path in files.items():
        match, to_edge = reference_matches(wcs_of(path), ra, dec, radius)
        for k in range(len(probes)):
            if abs(to_edge[k] - radius[k]) < 0.01:
                out[k][1].add(f"{collection}:{name}")
            elif match[k]:
                out[k][0].add(f"{collection}:{name}")
    return out


def test_position_search_matches_astropy_on_every_image(
    collection: tuple[ImageService, dict[str, Path]],
) -> None:
    service, files = collection
    probes = probe_positions(files, seed=7)
    checked = 0
    for (ra, dec, radius), (expected, borderline) in zip(
        probes, reference(files, "sky", probes), strict=True
    ):
        found, total = all_pages(service, ImageQuery(ra=ra, dec=dec, radius=radius), 7)
        assert total == len(found) == len(set(found))
        assert set(found) - borderline == expected, (ra, dec, radius)
        checked += len(expected)
    assert checked > 30  # the probes did find images, near RA 0 and the poles too


def test_pages_are_stable_and_ordered_by_time_then_id(
    collection: tuple[ImageService, dict[str, Path]],
) -> None:
    service, _ = collection
    whole, total = service.query(ImageQuery(limit=1000))
    assert total == len(whole) == 120
    keys = [(row.start, row.id) for row in whole]
    assert keys == sorted(keys)
    paged, again = all_pages(service, ImageQuery(), 13)
    assert paged == [row.id for row in whole] and again == total
    near = ImageQuery(ra=0.0, dec=0.0, radius=3.0)
    first, n = all_pages(service, near, 1000)
    second, _ = all_pages(service, near, 4)
    assert first == second and n > 5


def test_filters_on_instrument_filter_time_and_keywords(
    collection: tuple[ImageService, dict[str, Path]],
) -> None:
    service, _ = collection
    every, _ = service.query(ImageQuery(limit=1000))
    headers = {row.id: row.header for row in every}

    def ids(**params: str) -> set[str]:
        query = parse_query([*params.items(), ("limit", "1000")])
        found, total = service.query(query)
        assert total == len(found)
        return {row.id for row in found}

    def where(test: object) -> set[str]:
        return {i for i, h in headers.items() if test(h)}  # type: ignore[operator]

    assert ids(instrument="WFC") == where(lambda h: h["INSTRUME"] == "WFC")
    assert ids(instrument="WFC,DECAM", filter="r") == where(
        lambda h: h["INSTRUME"] in ("WFC", "DECAM") and h["FILTER"] == "r"
    )
    assert ids(EXPTIME="30") == where(lambda h: h["EXPTIME"] == 30.0)
    assert ids(EXPTIME="20/40") == where(lambda h: 20 <= h["EXPTIME"] <= 40)
    assert ids(EXPTIME="/10") == where(lambda h: h["EXPTIME"] <= 10)
    assert ids(OBJECT='"field/2"') == where(lambda h: h["OBJECT"] == "field/2")
    day = "2020-01-01T10:00:00/2020-01-01T20:00:00"  # text range: ISO dates sort as text
    assert ids(**{"DATE-OBS": day}) == where(
        lambda h: "2020-01-01T10:00:00" <= h["DATE-OBS"] <= "2020-01-01T20:00:00"
    )
    start, stop = T0 + timedelta(hours=10), T0 + timedelta(hours=20)
    in_range = ids(start=start.isoformat(), stop="2020-01-01T20:00:00Z")

    def overlaps(h: dict[str, object]) -> bool:
        began = datetime.fromisoformat(str(h["DATE-OBS"])).replace(tzinfo=UTC)
        ended = began + timedelta(seconds=float(h["EXPTIME"]))  # type: ignore[arg-type]
        return began <= stop and ended >= start

    assert in_range == where(overlaps) and 0 < len(in_range) < 120
    assert ids(ra="0", dec="0", radius="3deg", FILTER="g") == ids(
        ra="0", dec="0", radius="3"
    ) & where(lambda h: h["FILTER"] == "g")


def test_summary_counts_per_instrument_and_filter(
    collection: tuple[ImageService, dict[str, Path]],
) -> None:
    service, _ = collection
    groups = service.summary("sky")
    assert sum(g["images"] for g in groups) == 120
    assert {(g["instrument"], g["filter"]) for g in groups} == {
        (i, f) for i in INSTRUMENTS for f in FILTERS
    }
    assert service.summary("other") == []


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"ra": "10", "dec": "91"}, "dec"),
        ({"ra": "10"}, "dec"),
        ({"ra": "x", "dec": "1"}, "ra"),
        ({"ra": "1", "dec": "1", "radius": "5 parsec"}, "radius"),
        ({"ra": "1", "dec": "1", "radius": "-1"}, "radius"),
        ({"radius": "1"}, "radius"),
        ({"start": "yesterday"}, "start"),
        ({"start": "2020-02-01", "stop": "2020-01-01"}, "stop"),
        ({"limit": "0"}, "limit"),
        ({"colour": "red"}, "colour"),
        ({"EXPTIME": "/"}, "EXPTIME"),
        ({"EXPTIME": "10/abc"}, "EXPTIME"),
    ],
)
def test_bad_searches_name_the_parameter(params: dict[str, str], parameter: str) -> None:
    with pytest.raises(BadQuery) as caught:
        parse_query(params.items())
    assert caught.value.parameter == parameter


def test_reingest_skips_unchanged_files_and_replaces_changed_ones(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "state")
    service = ImageService(settings, connect(settings.db_url))
    path = write_image(tmp_path / "a.fits", 50.0, 10.0)
    (tmp_path / "bad.fits").write_bytes(b"garbage")
    first = service.ingest("c", [str(tmp_path)])
    assert sorted(r.status for r in first) == ["failed", "ingested"]
    assert [r.status for r in service.ingest("c", [str(path)])] == ["unchanged"]
    write_image(path, 150.0, -10.0)  # moved elsewhere on the sky
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert [r.status for r in service.ingest("c", [str(path)])] == ["ingested"]
    assert service.query(ImageQuery(ra=50.0, dec=10.0))[1] == 0
    (row,), total = service.query(ImageQuery(ra=150.0, dec=-10.0))
    assert (row.id, total) == ("c:a.fits", 1)


def test_search_on_postgresql(postgres_url: str, tmp_path: Path) -> None:  # noqa: F811
    files = make_collection(tmp_path / "files", n=40, seed=3)
    settings = load_settings(data_dir=tmp_path / "state", database_url=postgres_url)
    engine = connect(postgres_url)
    assert engine.dialect.name == "postgresql"
    service = ImageService(settings, engine)
    assert {r.status for r in service.ingest("pg", [str(tmp_path / "files")])} == {"ingested"}
    probes = probe_positions(files, seed=5)[:8]
    for (ra, dec, radius), (expected, borderline) in zip(
        probes, reference(files, "pg", probes), strict=True
    ):
        found, _ = all_pages(service, ImageQuery(ra=ra, dec=dec, radius=radius), 5)
        assert set(found) - borderline == expected
    exp = parse_query([("EXPTIME", "20/40"), ("limit", "1000")])
    rows, total = service.query(exp)
    assert total == len(rows) and all(20 <= r.header["EXPTIME"] <= 40 for r in rows)
    engine.dispose()
