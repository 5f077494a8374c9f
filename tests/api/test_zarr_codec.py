"""`zarr_codec = "lz4" | "zstd"`: stored zlib chunks transcoded into a codec clients decode
faster, read by xarray/zarr 3 exactly as the local file, and kept on disk."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import httpx
import numcodecs
import numpy as np
import pytest
import xarray as xr

from tests.api.test_metrics import scrape, value
from tests.api.test_zarr import assert_same_as_local, chunk_url, get_bytes, get_json, write_nc4
from tests.conftest import DATA, Server, start_server

CASES = {
    "nc4": "nc4.nc",  # zlib, shuffle, fletcher32, big-endian, holes, filters numcodecs lacks
    "packed": "packed.nc",  # int16 with scale_factor/add_offset/_FillValue, 360_day calendar
    "A1B_north_america": "A1B_north_america.nc",
    "big": "big.nc",
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, archive: Path) -> Path:
    root = tmp_path_factory.mktemp("codec-archive")
    write_nc4(root / "nc4.nc")
    shutil.copy(archive / "cmip6" / "ta_Amon_1950.nc", root / "packed.nc")
    shutil.copy(DATA / "grids" / "A1B_north_america.nc", root / "A1B_north_america.nc")
    write_big_chunks(root / "big.nc")
    return root


def write_big_chunks(path: Path) -> None:
    """Chunks of 160 KB: the disk store keeps each in a file of its own."""
    values = np.random.default_rng(3).normal(size=(12, 200, 200)).astype("f4")
    ds = xr.Dataset({"v": (("t", "y", "x"), values)})
    ds["v"].encoding = {"zlib": True, "shuffle": True, "chunksizes": (1, 200, 200)}
    ds.to_netcdf(path, engine="netcdf4")


@pytest.fixture(scope="module")
def lz4_server(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    state = tmp_path_factory.mktemp("lz4-state")
    srv = start_server([str(folder)], state, {"OUTCROP_ZARR_CODEC": "lz4"})
    yield srv
    srv.stop()


def expected_chunk(path: Path, name: str, coords: tuple[int, ...]) -> tuple[np.ndarray, Any]:
    """The chunk's values inside the array, read by h5py (HDF5's own filters), and where
    they lie in the chunk (past the array's edge a chunk holds fill values)."""
    with h5py.File(path) as f:
        var = f[name]
        region = tuple(slice(i * c, (i + 1) * c) for i, c in zip(coords, var.chunks, strict=True))
        values = var[region]
        return values, (var.chunks, tuple(slice(0, n) for n in values.shape))


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("ds_id", sorted(CASES))
def test_transcoded_datasets_equal_local_files(
    lz4_server: Server, folder: Path, ds_id: str, zarr_format: int
) -> None:
    remote = xr.open_zarr(f"{lz4_server.url}/zarr/{ds_id}", zarr_format=zarr_format)
    with xr.open_dataset(folder / CASES[ds_id]) as expected:
        assert_same_as_local(remote, expected)


@pytest.mark.parametrize(
    ("name", "coords"),
    [("edge", (1, 2, 2)), ("checked", (1, 0)), ("bigendian", (0, 0)), ("v_u8", (2, 2))],
)
def test_stored_chunks_are_declared_and_served_as_blosc_lz4(
    lz4_server: Server, folder: Path, name: str, coords: tuple[int, ...]
) -> None:
    """The metadata names Blosc lz4; the chunk decodes by hand to h5py's values."""
    base = f"{lz4_server.url}/zarr/nc4"
    v2 = get_json(f"{base}/{name}/.zarray")
    assert v2["compressor"]["id"] == "blosc" and v2["compressor"]["cname"] == "lz4"
    assert v2["filters"] is None
    v3 = get_json(f"{base}/{name}/zarr.json")
    names = [c["name"] for c in v3["codecs"]]
    assert names == ["bytes", "blosc"], names
    body = get_bytes(chunk_url(base, name, coords, 2))
    assert get_bytes(chunk_url(base, name, coords, 3)) == body  # one cached copy, both formats
    expected, (shape, inside) = expected_chunk(folder / "nc4.nc", name, coords)
    got = np.frombuffer(numcodecs.Blosc().decode(body), dtype=v2["dtype"]).reshape(shape)
    np.testing.assert_array_equal(got[inside], expected)
    with h5py.File(folder / "nc4.nc") as f:
        var = f[name]
        offset = tuple(i * c for i, c in zip(coords, var.chunks, strict=True))
        stored = var.id.read_direct_chunk(offset)[1]
    assert body != stored


def test_transcoded_chunks_are_kept_on_disk(lz4_server: Server) -> None:
    url = chunk_url(f"{lz4_server.url}/zarr/nc4", "edge", (0, 1, 1), 2)
    first = get_bytes(url)
    before = scrape(lz4_server)
    assert get_bytes(url) == first
    after = scrape(lz4_server)
    hits = value(after, "outcrop_cache_hits_total", cache="chunks")
    assert hits - value(before, "outcrop_cache_hits_total", cache="chunks") == 1
    assert value(after, "outcrop_disk_cache_entries", cache="chunks") >= 1
    assert value(after, "outcrop_disk_cache_limit_bytes", cache="chunks") == 4096 * 2**20


def test_unwritten_chunks_stay_missing_or_encoded(lz4_server: Server, folder: Path) -> None:
    base = f"{lz4_server.url}/zarr/nc4"
    for fmt in (2, 3):
        assert httpx.get(chunk_url(base, "holes", (1, 0), fmt)).status_code == 404
    # v2 can't declare the HDF5 default fill: those chunks are encoded, with the same codec
    assert get_json(f"{base}/holes_default/.zarray")["compressor"]["id"] == "blosc"
    assert httpx.get(chunk_url(base, "holes_default", (0, 0), 2)).status_code == 200


def test_changing_the_codec_on_restart_changes_metadata_and_etag(
    folder: Path, tmp_path: Path
) -> None:
    """A data folder kept across a codec change never serves the other codec's metadata."""
    seen = {}
    for codec in ("stored", "zstd", "stored"):
        srv = start_server([str(folder)], tmp_path / "state", {"OUTCROP_ZARR_CODEC": codec})
        try:
            r = httpx.get(f"{srv.url}/zarr/nc4/.zmetadata")
            assert r.status_code == 200
            meta = r.json()["metadata"]["edge/.zarray"]
            seen[codec] = (
                meta["compressor"].get("cname", meta["compressor"]["id"]),
                r.headers["etag"],
            )
            remote = xr.open_zarr(f"{srv.url}/zarr/nc4", zarr_format=2)
            with xr.open_dataset(folder / "nc4.nc") as expected:
                assert_same_as_local(remote[["edge", "checked"]], expected[["edge", "checked"]])
        finally:
            srv.stop()
    assert seen["stored"][0] == "zlib" and seen["zstd"][0] == "zstd"
    assert seen["stored"][1] != seen["zstd"][1]


def test_a_budget_smaller_than_the_variable_evicts_and_still_answers(
    folder: Path, tmp_path: Path
) -> None:
    """1 MB for 1.9 MB of chunks: files go while their paths are remembered; every read
    still returns the file's values, from the store or transcoded again."""
    env = {"OUTCROP_ZARR_CODEC": "lz4", "OUTCROP_ZARR_CACHE_MB": "1"}
    srv = start_server([str(folder)], tmp_path / "state", env)
    try:
        with xr.open_dataset(folder / "big.nc") as expected:
            for _ in range(3):
                remote = xr.open_zarr(f"{srv.url}/zarr/big", zarr_format=3)
                xr.testing.assert_identical(remote.load(), expected.load())
        kept = sum(f.stat().st_size for f in (tmp_path / "state" / "chunks").rglob("*.val"))
        assert 0 < kept <= 1.2 * 2**20
        assert "request_failed" not in srv.logs()
    finally:
        srv.stop()
