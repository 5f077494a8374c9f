"""Zarr over HTTP, read by xarray/zarr 3 exactly as the local file."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import xarray as xr

from tests.conftest import Server

CASES = [
    ("cmip6/ta_Amon_1950", "cmip6/ta_Amon_1950.nc"),
    ("cmip6/ta_Amon_noleap", "cmip6/ta_Amon_noleap.nc"),
    ("real/grids/A1B_north_america", "real/grids/A1B_north_america.nc"),
    ("real/grids/ostia_monthly", "real/grids/ostia_monthly.nc"),
    ("real/timeseries/SOI_Darwin", "real/timeseries/SOI_Darwin.nc"),
    ("stores/ta_v2", "stores/ta_v2.zarr"),
    ("stores/ta_v3", "stores/ta_v3.zarr"),
    ("groups/forecast", "groups.nc"),
]
ENCODING_KEYS = ("dtype", "_FillValue", "scale_factor", "add_offset", "calendar")


def local(archive: Path, rel: str) -> xr.Dataset:
    path = archive / rel
    if path.suffix == ".zarr":
        return xr.open_zarr(path)
    group = "forecast" if path.name == "groups.nc" else None
    return xr.open_dataset(path, group=group)


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize(("ds_id", "rel"), CASES)
def test_remote_dataset_equals_local_file(
    server: Server, archive: Path, ds_id: str, rel: str, zarr_format: int
) -> None:
    remote = xr.open_zarr(f"{server.url}/zarr/{ds_id}", zarr_format=zarr_format)
    with local(archive, rel) as expected:
        xr.testing.assert_identical(remote.load(), expected.load())
        for name, var in expected.variables.items():
            for key in ENCODING_KEYS:
                want, got = var.encoding.get(key), remote[name].encoding.get(key)
                if want is None:
                    continue
                if isinstance(want, float | np.floating):
                    assert np.isclose(np.float64(got), np.float64(want), equal_nan=True), (
                        name,
                        key,
                    )
                else:
                    assert np.dtype(got) == np.dtype(want) if key == "dtype" else got == want, (
                        name,
                        key,
                    )


def test_data_is_dask_backed_until_asked_for(server: Server, archive: Path) -> None:
    remote = xr.open_zarr(f"{server.url}/zarr/cmip6/ta_Amon_1950")
    assert type(remote["ta"].data).__module__.startswith("dask")
    with xr.open_dataset(archive / "cmip6/ta_Amon_1950.nc") as expected:
        np.testing.assert_array_equal(
            remote["ta"].isel(time=3).values, expected["ta"].isel(time=3).values
        )


def test_missing_chunk_is_404_and_unknown_dataset_is_404(server: Server) -> None:
    r = httpx.get(f"{server.url}/zarr/no/such/dataset/.zmetadata")
    assert r.status_code == 404
    assert "no dataset" in r.json()["detail"]
    r = httpx.get(f"{server.url}/zarr/cmip6/ta_Amon_1950/ta/999.0.0")
    assert r.status_code == 404
