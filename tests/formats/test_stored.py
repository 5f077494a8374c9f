"""Selections read from stored HDF5 chunks equal what libnetcdf reads from the same file."""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import netCDF4
import numpy as np
import pytest

from outcrop.drivers.grid import stored_chunks
from outcrop.formats.stored import StoredReader

SHAPE = (7, 13, 29)
CHUNKS = (2, 5, 8)  # edge chunks on every axis


def write(
    path: Path, endian: str, fletcher32: bool, missing: bool, shuffle: bool = True
) -> np.ndarray:
    rng = np.random.default_rng(7)
    values = rng.normal(size=SHAPE).astype("f4")
    with netCDF4.Dataset(path, "w") as nc:
        for name, size in zip("tyx", SHAPE, strict=True):
            nc.createDimension(name, size)
        var = nc.createVariable(
            "v",
            ("<" if endian == "little" else ">") + "f4",
            ("t", "y", "x"),
            zlib=True,
            complevel=3,
            shuffle=shuffle,
            fletcher32=fletcher32,
            chunksizes=CHUNKS,
            endian=endian,
            fill_value=np.float32(-9.5),
        )
        if missing:  # leave the chunks of the last two time steps unwritten
            var[:4] = values[:4]
            values[4:6] = -9.5
            var[6:] = values[6:]
        else:
            var[:] = values
    return values


SELECTIONS = [
    (slice(None), slice(None), slice(None)),
    (slice(1, 6, 2), slice(0, 13, 3), slice(2, 29, 5)),
    (slice(3, 4), slice(4, 11), slice(7, 9)),
    (slice(6, 7), slice(12, 13), slice(28, 29)),
    (slice(0, 7, 6), slice(1, 13, 11), slice(0, 29, 28)),
]


@pytest.mark.parametrize("endian", ["little", "big"])
@pytest.mark.parametrize("fletcher32", [False, True])
@pytest.mark.parametrize("missing", [False, True])
@pytest.mark.parametrize("budget", [1, 40, 10_000])
@pytest.mark.parametrize(("libdeflate", "shuffle"), [(True, True), (False, True), (True, False)])
def test_slabs_equal_libnetcdf(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    endian: str,
    fletcher32: bool,
    missing: bool,
    budget: int,
    libdeflate: bool,
    shuffle: bool,
) -> None:
    if not libdeflate:  # zlib through numcodecs, as where `deflate` is not installed
        monkeypatch.setitem(sys.modules, "deflate", None)
    path = tmp_path / "v.nc"
    write(path, endian, fletcher32, missing, shuffle)
    stored = stored_chunks(path, None, "v")
    assert stored is not None
    with netCDF4.Dataset(path) as nc:
        nc.set_auto_maskandscale(False)
        local = nc["v"][:]
    fd = os.open(path, os.O_RDONLY)
    try:
        with ThreadPoolExecutor(2) as pool:
            reader = StoredReader(stored, fd, pool)
            for index in SELECTIONS:
                expected = local[index]
                pieces = list(reader.slabs(index, budget))
                assert all(p.size <= max(budget, expected.shape[-1]) for p in pieces)
                got = np.concatenate([p.ravel() for p in pieces])
                np.testing.assert_array_equal(got, expected.ravel())
    finally:
        os.close(fd)


def test_stopping_early_cancels(tmp_path: Path) -> None:
    path = tmp_path / "v.nc"
    write(path, "little", False, False)
    stored = stored_chunks(path, None, "v")
    assert stored is not None
    fd = os.open(path, os.O_RDONLY)
    try:
        with ThreadPoolExecutor(2) as pool:
            slabs = StoredReader(stored, fd, pool).slabs((slice(None),) * 3, 40)
            first = next(slabs)
            slabs.close()
            assert first.size
    finally:
        os.close(fd)
