"""Write the demo archive: real files shipped in tests/data, plus generated files with the
awkward features of real archives. Usage: python examples/make_demo_data.py DEST"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

HERE = Path(__file__).resolve().parent
REAL = HERE.parent / "tests" / "data"
READERS = HERE / "readers"


def temperature(times: object, calendar: str, seed: int = 0) -> xr.Dataset:
    """Monthly air temperature, packed as int16, descending latitude, 0-360 longitude."""
    rng = np.random.default_rng(seed)
    time = xr.date_range(times[0], periods=times[1], freq="MS", calendar=calendar, use_cftime=True)  # type: ignore[index]
    lat = np.arange(88.75, -90, -2.5)
    lon = np.arange(0, 360, 3.75)
    data = (
        250
        + 30 * np.cos(np.deg2rad(lat))[None, :, None]
        + rng.normal(0, 2, (len(time), len(lat), len(lon)))
    )
    data[0, 0, :5] = np.nan
    ds = xr.Dataset(
        {
            "ta": (
                ("time", "lat", "lon"),
                data.astype("float32"),
                {
                    "standard_name": "air_temperature",
                    "units": "K",
                    "long_name": 'Air "temperature" \\ at 2 m',
                },
            )
        },
        coords={
            "time": ("time", time, {"standard_name": "time"}),
            "lat": ("lat", lat, {"units": "degrees_north", "standard_name": "latitude"}),
            "lon": ("lon", lon, {"units": "degrees_east", "standard_name": "longitude"}),
        },
        attrs={"title": f"Synthetic monthly air temperature ({calendar})", "Conventions": "CF-1.8"},
    )
    ds["ta"].encoding = {
        "dtype": "int16",
        "scale_factor": 0.01,
        "add_offset": 250.0,
        "_FillValue": np.int16(-32767),
        "zlib": True,
        "shuffle": True,
        "complevel": 1,
        "chunksizes": (1, len(lat), len(lon)),
    }
    ds["time"].encoding = {
        "units": "days since 1950-01-01",
        "calendar": calendar,
        "dtype": "float64",
    }
    return ds


def write_awkward_archive(root: Path) -> None:
    """Generated files: packed ints, calendars, unlimited time, yearly files, groups, Zarr."""
    (root / "cmip6").mkdir(parents=True, exist_ok=True)
    temperature(("1950-01-01", 12), "360_day").to_netcdf(
        root / "cmip6" / "ta_Amon_1950.nc", unlimited_dims=["time"]
    )
    temperature(("1950-01-01", 24), "noleap", seed=1).to_netcdf(
        root / "cmip6" / "ta_Amon_noleap.nc", format="NETCDF3_64BIT"
    )
    yearly = root / "yearly"
    yearly.mkdir(exist_ok=True)
    for i, year in enumerate(range(2000, 2003)):
        ds = temperature((f"{year}-01-01", 12), "standard", seed=10 + i)
        ds["time"].encoding["units"] = "days since 2000-01-01"
        ds.to_netcdf(yearly / f"ta_{year}.nc", unlimited_dims=["time"])
    with_groups(root / "groups.nc")
    zarr_stores(root / "stores")


def with_groups(path: Path) -> None:
    base = xr.Dataset({"x": ("n", np.arange(5.0))}, attrs={"title": "Root group"})
    base.to_netcdf(path, mode="w")
    forecast = xr.Dataset(
        {"wind": (("step", "n"), np.arange(10.0).reshape(2, 5), {"units": "m s-1"})},
        coords={"step": [0, 6]},
    )
    forecast.to_netcdf(path, mode="a", group="forecast")


def zarr_stores(folder: Path) -> None:
    folder.mkdir(exist_ok=True)
    ds = temperature(("1990-01-01", 6), "standard", seed=5)
    ds["ta"].encoding = {
        "dtype": "int16",
        "scale_factor": 0.01,
        "add_offset": 250.0,
        "_FillValue": np.int16(-32767),
    }
    ds["time"].encoding = {"units": "days since 1990-01-01", "calendar": "standard"}
    ds.chunk({"time": 1}).to_zarr(folder / "ta_v2.zarr", mode="w", zarr_format=2, consolidated=True)
    ds.chunk({"time": 2}).to_zarr(
        folder / "ta_v3.zarr", mode="w", zarr_format=3, consolidated=False
    )


def main(dest: str) -> None:
    root = Path(dest)
    root.mkdir(parents=True, exist_ok=True)
    real = root / "real"
    if REAL.is_dir() and not real.exists():
        shutil.copytree(REAL, real, ignore=shutil.ignore_patterns("*.md"))
    if not (root / "cmip6").exists():
        write_awkward_archive(root)
    readers = root / "readers"  # a reader-program time series: dataset `readers/wave`
    readers.mkdir(exist_ok=True)
    for name in ("wave.py", "wave.reader.toml"):
        shutil.copy2(READERS / name, readers / name)
    url = "http://127.0.0.1:8765"
    print(
        f"demo archive in {root}\n"
        f"  catalog (browser):  {url}/\n"
        f"  catalog (JSON):     {url}/api/datasets\n"
        f"  one dataset:        {url}/api/datasets/cmip6/ta_Amon_1950\n"
        f"  a subset as CSV:    {url}/api/datasets/cmip6/ta_Amon_1950/data"
        "?var=ta&lat=40/50&lon=0/10&time=1950-03-01&format=csv\n"
        f"  time series (HAPI): {url}/hapi/catalog\n"
        f"  a day, 2000 bins:   {url}/hapi/data?dataset=readers/wave"
        "&start=2020-01-01&stop=2020-01-02&x_resolution=43.2\n"
        f"  das2 stream:        {url}/das2/server?server=dataset&dataset=readers/wave"
        "&start_time=2020-01-01&end_time=2020-01-01T01:00&ascii=1\n"
        f"  sky images:         {url}/images/demo\n"
        f"  images at M13:      {url}/api/images?ra=250.4226&dec=36.4602\n"
        f"  a PNG cutout:       {url}/api/images/demo:m13.fits"
        "?ra=250.4226&dec=36.4602&size=2arcmin&format=png\n"
        f"  OpenAPI:            {url}/docs\n"
        f'  Python:  outcrop.open_dataset("{url}/zarr/cmip6/ta_Amon_1950")\n'
        "Starting the server (Ctrl-C stops it)...",
        flush=True,
    )


if __name__ == "__main__":
    _ = pd  # pandas comes with xarray; imported so a missing install fails here, clearly
    main(sys.argv[1])
