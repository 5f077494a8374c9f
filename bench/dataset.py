"""The benchmark data: generated once per size (fixed seed), cached under the work folder.

`temp(time, lat, lon)` float32 in a NetCDF4 file (chunks of one time step, zlib 1 +
shuffle), static Zarr v2 and v3 copies of it (zarr-python default codecs) for nginx and the
local reads, an uncompressed NetCDF3 copy for the OPeNDAP workloads, 1,000 tiny NetCDF files
for the restart workload, and on request (`--big`) a file of more than 5 GB decoded made by
copying the stored chunks of the first one.
CRC32 checksums of the decoded values go to `reference.json`, so every reader's answer
can be compared with what was written.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np

NY, NX = 360, 720
STEP_BYTES = NY * NX * 4
SEED = 20261122
VERSION = "4"
MANY_FILES = 1000
BIG_BYTES = 5.2e9  # decoded size of the big file: a 5 GB subset must fit inside
BIG_SUBSET_BYTES = 5.0e9
EPOCH = np.datetime64("2001-01-01", "D")


def steps_for(size_mb: float) -> int:
    """Time steps of a `size_mb` MB (decoded) variable: 365 for the default ~380 MB."""
    return max(12, round(size_mb * 1e6 / STEP_BYTES))


def subset_slices(nt: int) -> dict[str, tuple[int, int]]:
    """The small subset every client reads: 10 x 20 x 40 values."""
    t0 = min(100, nt - 10)
    return {"time": (t0, t0 + 10), "lat": (100, 120), "lon": (200, 240)}


def ensure(root: Path, nt: int) -> dict[str, Any]:
    """Generate the data for `nt` time steps under `root` unless it is already there."""
    ref_path = root / "reference.json"
    if ref_path.exists():
        ref: dict[str, Any] = json.loads(ref_path.read_text())
        if ref.get("version") == VERSION and ref.get("nt") == nt:
            return ref
    if root.exists():
        shutil.rmtree(root)
    (root / "nc").mkdir(parents=True)
    t0 = time.perf_counter()
    print(f"[data] writing {nt} x {NY} x {NX} float32 to {root} (once)", flush=True)
    ref = write_netcdf(root / "nc" / "grid.nc", nt)
    write_zarr_copies(root)
    ref["version"], ref["nt"], ref["gen_s"] = VERSION, nt, round(time.perf_counter() - t0, 1)
    ref["sizes_mb"] = {p: round(size_of(root / p) / 1e6, 1) for p in STORES}
    ref_path.write_text(json.dumps(ref, indent=1))
    print(f"[data] done in {ref['gen_s']} s: {ref['sizes_mb']} MB", flush=True)
    return ref


STORES = (
    "nc/grid.nc",
    "zarr2/grid.zarr",
    "zarr3/grid.zarr",
    "zarr2z/grid.zarr",
    "zarr3z/grid.zarr",
)


def field_at(rng: np.random.Generator, base: np.ndarray, lat_rad: np.ndarray, i: int) -> Any:
    """One time step: climatology + seasonal cycle + weather noise, quantised to 1/64 K."""
    season = np.float32(12 * math.sin(2 * math.pi * (i - 100) / 365)) * np.sin(lat_rad)
    noise = rng.standard_normal((NY, NX), dtype=np.float32) * np.float32(1.5)
    return (np.round((base + season.astype(np.float32) + noise) * 64) / 64).astype(np.float32)


def write_netcdf(path: Path, nt: int) -> dict[str, Any]:
    """Write grid.nc step by step (bounded memory); return the CRCs of what was written."""
    import netCDF4

    rng = np.random.default_rng(SEED)
    lat = np.linspace(-89.75, 89.75, NY)
    lon = np.linspace(-179.75, 179.75, NX)
    lat_rad = np.deg2rad(lat)[:, None]
    lon_rad = np.deg2rad(lon)[None, :]
    base = (
        273.15 + 30 * np.cos(lat_rad) ** 2 - 8 + 3 * np.sin(2 * lon_rad) * np.cos(lat_rad)
    ).astype(np.float32)
    sub = subset_slices(nt)
    full_crc, step_crcs, subset = 0, [], []
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        define_grid(nc, nt, lat, lon)
        temp = nc["temp"]
        for i in range(nt):
            step = field_at(rng, base, lat_rad, i)
            temp[i] = step
            full_crc = zlib.crc32(step, full_crc)
            step_crcs.append(zlib.crc32(step))
            if sub["time"][0] <= i < sub["time"][1]:
                subset.append(step[slice(*sub["lat"]), slice(*sub["lon"])])
    return {
        "seed": SEED,
        "shape": [nt, NY, NX],
        "full_bytes": nt * STEP_BYTES,
        "full_crc": full_crc,
        "step_crcs": step_crcs,
        "subset": sub,
        "subset_crc": zlib.crc32(np.ascontiguousarray(np.stack(subset))),
    }


def define_grid(
    nc: Any, nt: int, lat: np.ndarray, lon: np.ndarray, compressed: bool = True
) -> None:
    """Dimensions, CF coordinates and an empty `temp` with the benchmark's storage layout
    (`compressed=False`: contiguous and uncompressed, all NetCDF3 can store)."""
    nc.title, nc.Conventions = "outcrop benchmark grid", "CF-1.8"
    for name, size in (("time", nt), ("lat", NY), ("lon", NX)):
        nc.createDimension(name, size)
    t = nc.createVariable("time", "f8", ("time",))
    t.units, t.standard_name, t.calendar = "days since 2001-01-01", "time", "standard"
    t[:] = np.arange(nt, dtype="f8")
    for name, values, units, std in (
        ("lat", lat, "degrees_north", "latitude"),
        ("lon", lon, "degrees_east", "longitude"),
    ):
        v = nc.createVariable(name, "f8", (name,))
        v.units, v.standard_name = units, std
        v[:] = values
    layout = {"zlib": True, "complevel": 1, "shuffle": True, "chunksizes": (1, NY, NX)}
    temp = nc.createVariable(
        "temp", "f4", ("time", "lat", "lon"), fill_value=False, **(layout if compressed else {})
    )
    temp.units, temp.long_name, temp.standard_name = "K", "air temperature", "air_temperature"


def write_zarr_copies(root: Path) -> None:
    """Static Zarr v2 and v3 copies of grid.nc, same chunks: `zarr2/`, `zarr3/` with
    zarr-python's default codecs, and `zarr2z/`, `zarr3z/` holding what Outcrop serves for
    grid.nc: each chunk file is the chunk's bytes stored in grid.nc (zlib 1 + shuffle)
    behind the 24-byte header of a Blosc chunk of one block and one stream (c-blosc's
    README_HEADER), declared as Blosc with `cname: zlib`."""
    import h5py
    import numcodecs
    import xarray as xr
    from zarr.codecs import BloscCodec

    src = xr.open_dataset(root / "nc" / "grid.nc", chunks={})
    for v in src.variables.values():
        keep = ("units", "calendar", "dtype", "_FillValue")
        v.encoding = {k: v.encoding[k] for k in keep if k in v.encoding}
    # zarr warns that consolidated metadata is not in the v3 spec
    warnings.filterwarnings("ignore", category=UserWarning, module="zarr")
    blosc_zlib = {
        2: numcodecs.Blosc(cname="zlib", clevel=1, shuffle=numcodecs.Blosc.SHUFFLE),
        3: BloscCodec(cname="zlib", clevel=1, shuffle="shuffle", typesize=4),
    }
    for fmt, suffix in ((2, ""), (3, ""), (2, "z"), (3, "z")):
        out = root / f"zarr{fmt}{suffix}" / "grid.zarr"
        out.parent.mkdir(parents=True, exist_ok=True)
        codecs = {"compressors": [blosc_zlib[fmt]]} if suffix else {}
        encoding = {"temp": {"chunks": (1, NY, NX), **codecs}}
        src.to_zarr(out, zarr_format=fmt, consolidated=True, mode="w", encoding=encoding)
        if suffix:
            with h5py.File(root / "nc" / "grid.nc") as f:
                for i in range(f["temp"].shape[0]):
                    key = f"temp/{i}.0.0" if fmt == 2 else f"temp/c/{i}/0/0"
                    (out / key).write_bytes(
                        blosc_framed(f["temp"].id.read_direct_chunk((i, 0, 0))[1])
                    )
    src.close()


def blosc_framed(stream: bytes) -> bytes:
    """A zlib stream of a shuffled float32 time step as a Blosc chunk: version 2, zlib
    format 1, flags (shuffle, one stream per block, codec 3 = zlib), typesize 4, sizes."""
    import struct

    if len(stream) == STEP_BYTES:  # Blosc would copy it: never so for this data
        raise ValueError("a stored chunk as long as it is decoded")
    header = struct.pack(
        "<BBBBiii", 2, 1, 0x01 | 0x10 | 3 << 5, 4, STEP_BYTES, STEP_BYTES, 24 + len(stream)
    )
    return header + struct.pack("<ii", 20, len(stream)) + stream


NC3 = "nc3/grid3.nc"


def ensure_nc3(root: Path, ref: dict[str, Any]) -> Path:
    """`nc3/grid3.nc`: grid.nc's values in an uncompressed NETCDF3_64BIT file, in a folder of
    its own so a server given that folder publishes it alone (Outcrop: id `grid3`). Copied
    step by step, its CRC checked against the reference before it takes its name."""
    import netCDF4

    path = root / NC3
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    print(f"[data] writing {path} (NetCDF3 copy, once)", flush=True)
    crc = 0
    with netCDF4.Dataset(root / "nc" / "grid.nc") as src:
        nt = src.dimensions["time"].size
        with netCDF4.Dataset(tmp, "w", format="NETCDF3_64BIT_OFFSET") as dst:
            define_grid(dst, nt, src["lat"][:], src["lon"][:], compressed=False)
            for i in range(nt):
                step = np.asarray(src["temp"][i], dtype=np.float32)
                dst["temp"][i] = step
                crc = zlib.crc32(step, crc)
    if crc != ref["full_crc"]:
        tmp.unlink()
        raise RuntimeError(f"{NC3}: CRC {crc} differs from the reference {ref['full_crc']}")
    tmp.rename(path)
    return path


def size_of(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def ensure_many(root: Path) -> Path:
    """1,000 tiny NetCDF files in a folder tree (10 folders of 100), written once."""
    import netCDF4

    folder = root / "many"
    done = folder / ".complete"
    if done.exists():
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    print(f"[data] writing {MANY_FILES} tiny NetCDF files to {folder} (once)", flush=True)
    rng = np.random.default_rng(SEED)
    for i in range(MANY_FILES):
        path = folder / f"d{i // 100:02d}" / f"f{i:04d}.nc"
        path.parent.mkdir(parents=True, exist_ok=True)
        with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
            define_grid_small(nc, rng)
    done.write_text("ok\n")
    return folder


def define_grid_small(nc: Any, rng: np.random.Generator) -> None:
    for name, size in (("time", 2), ("lat", 4), ("lon", 8)):
        nc.createDimension(name, size)
        nc.createVariable(name, "f8", (name,))[:] = np.arange(size, dtype="f8")
    nc["time"].units = "days since 2001-01-01"
    nc.createVariable("temp", "f4", ("time", "lat", "lon"))[:] = rng.random((2, 4, 8))


def ensure_big(root: Path, ref: dict[str, Any]) -> dict[str, Any]:
    """big/big.nc: more than 5 GB decoded, the stored chunks of grid.nc repeated in time."""
    import h5py
    import netCDF4

    nt_src = ref["nt"]
    nt = math.ceil(BIG_BYTES / STEP_BYTES)
    path = root / "big" / "big.nc"
    info_path = root / "big.json"
    if info_path.exists() and path.exists():
        info: dict[str, Any] = json.loads(info_path.read_text())
        if info.get("nt") == nt:
            return info
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"[data] writing {path} ({nt} steps, {nt * STEP_BYTES / 1e9:.1f} GB decoded)", flush=True)
    lat = np.linspace(-89.75, 89.75, NY)
    lon = np.linspace(-179.75, 179.75, NX)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        define_grid(nc, nt, lat, lon)
    src_path = root / "nc" / "grid.nc"
    with h5py.File(src_path, "r") as src, h5py.File(path, "r+") as dst:
        for i in range(nt):
            mask, chunk = src["temp"].id.read_direct_chunk((i % nt_src, 0, 0))
            dst["temp"].id.write_direct_chunk((i, 0, 0), chunk, mask)
    info = {"nt": nt, "nt_src": nt_src, "size_mb": round(path.stat().st_size / 1e6)}
    info_path.write_text(json.dumps(info))
    return info


def big_request(nt_src: int, step_crcs: list[int]) -> dict[str, Any]:
    """The 5 GB subset of big.nc: a time range from the first step, every lat and lon."""
    n = math.ceil(BIG_SUBSET_BYTES / STEP_BYTES)
    last = EPOCH + np.timedelta64(n - 1, "D")
    return {
        "query": f"var=temp&time={EPOCH}/{last}&format=nc",
        "steps": n,
        "bytes": n * STEP_BYTES,
        "first_crc": step_crcs[0],
        "last_crc": step_crcs[(n - 1) % nt_src],
    }
