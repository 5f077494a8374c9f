"""The Zarr view without a server: keys, chunk grids, and encoded chunks read by zarr."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dask.array
import numpy as np
import pytest
import xarray as xr
import zarr
from zarr.core.buffer import default_buffer_prototype

from outcrop.errors import DatasetNotFound
from outcrop.formats import zarr as zarr_format
from outcrop.formats.zarr import ZarrView, build_view, encode_chunk


def sample() -> xr.Dataset:
    ds = xr.Dataset(
        {
            "temp": (("t", "x"), np.arange(40, dtype="f4").reshape(4, 10), {"units": "K"}),
            "count": ("x", np.arange(10, dtype="i2")),
            "level": ((), np.float64(850.0), {"units": "hPa"}),
        },
        coords={"x": np.arange(10.0)},
    )
    ds["count"].encoding = {"_FillValue": np.int16(-1), "dtype": np.dtype("i2")}
    return ds


def served_store(ds: xr.Dataset, view: ZarrView) -> zarr.storage.MemoryStore:
    """Every document and every chunk the view would serve, as one in-memory store."""
    prototype = default_buffer_prototype()
    keys = dict(view.documents)
    for plan in view.plans.values():
        for coords in np.ndindex(*plan.grid()):
            key = (
                f"{plan.name}/{'.'.join(map(str, coords)) or '0'}"
                if view.zarr_format == 2
                else f"{plan.name}/c" + "".join(f"/{i}" for i in coords)
            )
            assert view.parse_chunk_key(key) == (plan, coords)
            keys[key] = encode_chunk(ds, plan, coords, view.zarr_format)
    return zarr.storage.MemoryStore({k: prototype.buffer.from_bytes(v) for k, v in keys.items()})


@pytest.mark.parametrize("fmt", [2, 3])
def test_irregular_dask_chunks_are_served_on_a_regular_grid(fmt: int) -> None:
    ds = sample().chunk({"t": (1, 3), "x": (3, 5, 2)})
    ds["level"] = xr.Variable((), dask.array.from_array(np.float64(850.0)), {"units": "hPa"})
    view = build_view(ds, fmt, lambda name: None)  # type: ignore[arg-type]
    assert view.plans["temp"].chunks == (1, 3)
    assert view.plans["level"].chunks == ()  # a 0-d dask variable: one chunk, key 0 or c
    remote = xr.open_zarr(served_store(ds, view), zarr_format=fmt)
    xr.testing.assert_identical(remote.load(), sample())


@pytest.mark.parametrize("fmt", [2, 3])
def test_one_whole_chunk_is_cut_to_the_target_size(
    fmt: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(zarr_format, "TARGET_CHUNK_BYTES", 3 * 10 * 4)
    ds = sample().chunk({})
    view = build_view(ds, fmt, lambda name: None)  # type: ignore[arg-type]
    assert view.plans["temp"].chunks == (3, 10)
    remote = xr.open_zarr(served_store(ds, view), zarr_format=fmt)
    xr.testing.assert_identical(remote.load(), sample())


@pytest.mark.parametrize(
    ("fmt", "key", "coords"),
    [
        (2, "temp/1.2", (1, 2)),
        (2, "temp/3.9", (3, 9)),
        (3, "temp/c/1/2", (1, 2)),
    ],
)
def test_chunk_keys_parse_to_coordinates(fmt: int, key: str, coords: tuple[int, ...]) -> None:
    ds = sample().chunk({"t": 1, "x": 1})
    view = build_view(ds, fmt, lambda name: None)  # type: ignore[arg-type]
    plan, got = view.parse_chunk_key(key)
    assert plan.name == "temp" and got == coords


@pytest.mark.parametrize(
    ("fmt", "key"),
    [
        (2, "temp/1"),
        (2, "temp/1.2.3"),
        (2, "temp/1.x"),
        (2, "temp/01.2"),
        (2, "temp/1/2"),
        (2, "temp/4.0"),
        (2, "nope/0.0"),
        (3, "temp/c/1"),
        (3, "temp/c1/2"),
        (3, "temp/c/1.2"),
        (3, "temp/1/2"),
        (3, "temp/c/1/2/"),
    ],
)
def test_bad_chunk_keys_are_not_found(fmt: int, key: str) -> None:
    ds = sample().chunk({"t": 1, "x": 1})
    view = build_view(ds, fmt, lambda name: None)  # type: ignore[arg-type]
    with pytest.raises(DatasetNotFound):
        view.parse_chunk_key(key)


def test_building_a_view_does_not_import_dask_distributed(tmp_path: Path) -> None:
    """The view is written from metadata alone: no dask graph of chunk writes, whose
    construction imports dask.distributed (~0.6 s at a first start, ~30 MB)."""
    path = tmp_path / "grid.nc"
    sample().chunk({"t": 1}).to_netcdf(path, engine="netcdf4")
    script = (
        "import sys, xarray as xr\n"
        "from outcrop.formats.zarr import build_view\n"
        f"ds = xr.open_dataset({str(path)!r}, engine='netcdf4', chunks={{}})\n"
        "for fmt in (2, 3):\n"
        "    view = build_view(ds, fmt, lambda name: None)\n"
        "    assert 'temp' in view.plans, view.plans\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'distributed'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout
