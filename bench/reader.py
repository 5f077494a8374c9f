"""The client side of a measurement, run in a fresh process: `python reader.py SPEC_JSON`.

Prints one JSON line with the times and the CRC32 of the values read, which the
orchestrator compares with `reference.json`. Imports happen before any clock starts.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Any


def open_ds(kind: str, url: str, zarr_format: int | None = None) -> Any:
    """Zarr through zarr-python; NetCDF files and OPeNDAP URLs (`http://` for DAP2,
    `dap4://` for DAP4) through libnetcdf, as `xarray.open_dataset(url, engine="netcdf4")`."""
    import xarray as xr

    if kind in ("zarr", "local-zarr"):
        return xr.open_zarr(url, consolidated=True, zarr_format=zarr_format)
    if kind in ("local-nc", "dap2", "dap4"):
        return xr.open_dataset(url, engine="netcdf4")
    raise ValueError(f"unknown kind {kind!r}")


def crc(values: Any) -> int:
    import numpy as np

    return zlib.crc32(np.ascontiguousarray(values, dtype=np.float32))


def read_full(spec: dict[str, Any], out: dict[str, Any]) -> None:
    """Open and read the whole variable once untimed into the median (`first_s`: the
    client's first large allocation and thread pools, a server's first touch of each
    chunk), then `reps` times, all in this one process."""
    deadline = time.perf_counter() + spec["budget_s"]
    for rep in range(spec["reps"] + 1):
        t0 = time.perf_counter()
        ds = open_ds(spec["kind"], spec["url"], spec.get("zarr_format"))
        values = ds.temp.values
        if rep:
            out["times"].append(time.perf_counter() - t0)
        else:
            out["first_s"] = time.perf_counter() - t0
        out["nbytes"], out["shape"] = int(values.nbytes), list(values.shape)
        out["crc"] = crc(values)
        ds.close()
        del values
        if time.perf_counter() > deadline:
            break


def read_paired(spec: dict[str, Any], out: dict[str, Any]) -> None:
    """The full read and the small subset from `url` and from `ref_url` alternately (in
    the order AB BA AB …), in this one process (both warmed up first, untimed), so that
    both meet the same client and the same machine speed: the ratio of their medians is
    fair even when the machine's speed drifts over the minutes between contenders."""
    sel = {k: slice(*v) for k, v in spec["subset"].items()}
    fmt = spec.get("zarr_format")
    urls = {"": spec["url"], "ref_": spec["ref_url"]}

    def full(url: str) -> tuple[float, int]:
        t0 = time.perf_counter()
        ds = open_ds(spec["kind"], url, fmt)
        values = ds.temp.values
        took = time.perf_counter() - t0
        ds.close()
        return took, crc(values)

    def subset(url: str) -> tuple[float, int]:
        t0 = time.perf_counter()
        ds = open_ds(spec["kind"], url, fmt)
        values = ds.temp.isel(sel).values
        took = time.perf_counter() - t0
        ds.close()
        return took, crc(values)

    for which, reps in ((full, spec["reps"]), (subset, spec["subset_reps"])):
        name = which.__name__
        for url in urls.values():
            which(url)  # warm-up
        for rep in range(reps):
            # ABBA: each goes first in half the pairs, so neither always meets the
            # machine just after the other's 378 MB were freed
            order = list(urls.items()) if rep % 2 == 0 else list(urls.items())[::-1]
            for prefix, url in order:
                took, check = which(url)
                out.setdefault(f"{prefix}{name}_times", []).append(took)
                out[f"{prefix}{name}_crc"] = check


def read_raw(spec: dict[str, Any], out: dict[str, Any]) -> None:
    """DAP2 without libnetcdf: one `GET URL.dods?temp` streamed by httpx into a numpy array
    (XDR decoded by `dapbody.py`), `reps` times; separates the server's speed from the
    client's."""
    import dapbody
    import httpx

    deadline = time.perf_counter() + spec["budget_s"]
    timeout = httpx.Timeout(spec["budget_s"], connect=30)
    # the Accept-Encoding libnetcdf sends, so that both clients get the same bytes
    with httpx.Client(timeout=timeout, headers={"Accept-Encoding": "deflate, gzip"}) as client:
        for _ in range(spec["reps"]):
            t0 = time.perf_counter()
            with client.stream("GET", spec["url"] + ".dods?temp") as r:
                if r.status_code != 200:
                    body = r.read()[:300].decode(errors="replace")
                    raise RuntimeError(f"HTTP {r.status_code}: {body}")
                values = dapbody.read_dap2_first_array(r.iter_bytes(1 << 20))
            out["times"].append(time.perf_counter() - t0)
            out["nbytes"], out["crc"] = int(values.nbytes), crc(values)
            del values
            if time.perf_counter() > deadline:
                break


def read_subset(spec: dict[str, Any], out: dict[str, Any]) -> None:
    """Open + read the small subset `reps` times after one warm-up (imports, connections)."""
    sel = {k: slice(*v) for k, v in spec["subset"].items()}
    deadline = time.perf_counter() + spec["budget_s"]
    ds = open_ds(spec["kind"], spec["url"], spec.get("zarr_format"))
    values = ds.temp.isel(sel).values  # warm-up
    out["read_times"] = []
    for _ in range(spec["reps"]):
        t0 = time.perf_counter()
        values = ds.temp.isel(sel).values
        out["read_times"].append(time.perf_counter() - t0)
    ds.close()
    for _ in range(spec["reps"]):
        t0 = time.perf_counter()
        ds = open_ds(spec["kind"], spec["url"], spec.get("zarr_format"))
        values = ds.temp.isel(sel).values
        ds.close()
        out["times"].append(time.perf_counter() - t0)
        if time.perf_counter() > deadline:
            break
    out["crc"] = crc(values)


def stream(spec: dict[str, Any], out: dict[str, Any]) -> None:
    """GET a (large) subset to a file, then check its first and last time steps."""
    import netCDF4

    path = Path(spec["path"])
    t0 = time.perf_counter()
    try:
        # the server may prepare a whole file before its first byte: a generous read timeout
        try:
            with urllib.request.urlopen(spec["url"], timeout=600) as r, path.open("wb") as f:
                out["status"], out["content_type"] = r.status, r.headers.get("Content-Type")
                out["first_byte_s"] = time.perf_counter() - t0
                while block := r.read(1 << 20):
                    f.write(block)
                    if time.perf_counter() - t0 > spec["budget_s"]:
                        raise TimeoutError(f"stream not done after {spec['budget_s']} s")
        except TimeoutError as exc:
            where = "mid-stream" if "first_byte_s" in out else "before the first byte"
            took = time.perf_counter() - t0
            raise TimeoutError(f"timed out {where}, after {took:.0f} s ({exc})") from exc
        out["times"].append(time.perf_counter() - t0)
        out["nbytes"] = path.stat().st_size
        with netCDF4.Dataset(path) as nc:
            temp = nc["temp"]
            temp.set_auto_mask(False)
            out["shape"] = list(temp.shape)
            out["first_crc"], out["last_crc"] = crc(temp[0]), crc(temp[-1])
    finally:
        path.unlink(missing_ok=True)


def stream_table(spec: dict[str, Any], out: dict[str, Any]) -> None:
    """GET a (large) subset as an Arrow IPC stream, keeping nothing but the row count and
    the CRC32 of the first and last `step` values of the last column."""
    import numpy as np
    import pyarrow as pa

    step, t0 = spec["step"], time.perf_counter()
    first, last = [], []
    rows = 0
    with urllib.request.urlopen(spec["url"], timeout=600) as r:
        out["status"], out["content_type"] = r.status, r.headers.get("Content-Type")
        out["first_byte_s"] = time.perf_counter() - t0
        counted = CountingReader(r)
        for batch in pa.ipc.open_stream(counted):
            values = batch.column(batch.num_columns - 1).to_numpy()
            if rows < step:
                first.append(values[: step - rows])
            last = [*last, values][-4:]  # enough batches to hold one step
            rows += batch.num_rows
            if time.perf_counter() - t0 > spec["budget_s"]:
                raise TimeoutError(f"stream not done after {spec['budget_s']} s")
    out["times"].append(time.perf_counter() - t0)
    out["nbytes"], out["rows"] = counted.nbytes, rows
    out["first_crc"] = crc(np.concatenate(first)[:step])
    out["last_crc"] = crc(np.concatenate(last)[-step:])


class CountingReader:
    """A file-like wrapper that counts the bytes read through it."""

    def __init__(self, raw: Any) -> None:
        self.raw, self.nbytes, self.closed = raw, 0, False

    def read(self, size: int = -1) -> bytes:
        data: bytes = self.raw.read(size)
        self.nbytes += len(data)
        return data


def main() -> int:
    spec = json.loads(sys.argv[1])
    import dask.array  # noqa: F401  (imported before the clock starts)
    import numpy  # noqa: F401
    import pyarrow  # noqa: F401
    import xarray  # noqa: F401
    import zarr  # noqa: F401

    if spec["kind"] == "zarr":
        import aiohttp  # noqa: F401
        import fsspec.implementations.http  # noqa: F401
    if spec["kind"] in ("dap2", "dap4", "local-nc"):
        import httpx  # noqa: F401
        import netCDF4  # noqa: F401
    out: dict[str, Any] = {"times": [], "errors": []}
    what = {
        "full": read_full,
        "paired": read_paired,
        "raw": read_raw,
        "subset": read_subset,
        "stream": stream,
        "table": stream_table,
    }[spec["what"]]
    try:
        what(spec, out)
    except urllib.error.HTTPError as exc:
        out["status"] = exc.code
        out["errors"].append(f"HTTP {exc.code}: {exc.read()[:300].decode(errors='replace')}")
    except Exception as exc:
        out["errors"].append(f"{type(exc).__name__}: {str(exc)[:300]}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
