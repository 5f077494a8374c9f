#!/usr/bin/env python3
"""Example reader program: a synthetic three-component magnetometer at one sample a second.

    python wave.py --start=2020-01-01T00:00:00Z --stop=2020-01-02T00:00:00Z \
        [--parameters=bx,by,bz] [--format=arrow|csv|netcdf] [--layout=scalar|vector] \
        [--station=kiruna] [--gain=1]

It writes every whole second `t` (UTC seconds since 1970) with `start <= t < stop` to
stdout, one day per batch, so a year (31.5 million rows) streams in a few seconds with
little memory. The values are exact binary fractions, the same in wave.sh and wave.c:

    gap   no sample at all when t mod 3600 is in [600, 660)
    bx    (|u mod 600 - 300| - 150) / 4              u = t + 1000 * station index
    by    (|u mod 86400 - 43200| - 21600) / 512
    bz    ((u * 7919) mod 10007) / 64 - 78.1875
    fill  bx = -1e31 when t mod 97 == 0, by when t mod 89 == 0, bz when t mod 1009 == 0

(`mod` is the floor modulo, never negative); values other than fills are multiplied by
`gain`. `--layout=vector` writes one parameter `b` of size 3 instead (a fixed-size list in
Arrow, columns b_0, b_1, b_2 in CSV). Any failure is reported on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

FILL = -1e31
DAY = 86400
NS = 1_000_000_000
STATIONS = {"kiruna": 0, "tromso": 1, "sodankyla": 2}
NAMES = ("bx", "by", "bz")
FILL_EVERY = {"bx": 97, "by": 89, "bz": 1009}


def seconds(first: int, end: int) -> np.ndarray[Any, Any]:
    """The whole seconds in [first, end) that have a sample."""
    t = np.arange(first, end, dtype=np.int64)
    phase = t % 3600
    return t[(phase < 600) | (phase >= 660)]


def values(t: np.ndarray[Any, Any], station: str, gain: int) -> dict[str, np.ndarray[Any, Any]]:
    u = t + 1000 * STATIONS[station]
    out = {
        "bx": (np.abs(u % 600 - 300) - 150) / 4.0,
        "by": (np.abs(u % DAY - 43200) - 21600) / 512.0,
        "bz": (u * 7919 % 10007) / 64.0 - 78.1875,
    }
    for name, every in FILL_EVERY.items():
        out[name] = np.where(t % every == 0, FILL, out[name] * gain)
    return out


def parse_time(text: str) -> int:
    """ISO 8601 UTC text (`...Z`) as nanoseconds since 1970."""
    return int(np.datetime64(text.removesuffix("Z"), "ns").astype(np.int64))


def batches(args: argparse.Namespace) -> Iterator[pa.RecordBatch]:
    first = -(-parse_time(args.start) // NS)  # the first whole second >= start
    end = -(-parse_time(args.stop) // NS)
    for day in range(first, end, DAY):
        t = seconds(day, min(day + DAY, end))
        if len(t):
            yield batch(t, values(t, args.station, args.gain), args)


def batch(
    t: np.ndarray[Any, Any], vals: dict[str, np.ndarray[Any, Any]], args: argparse.Namespace
) -> pa.RecordBatch:
    columns: dict[str, pa.Array] = {"time": pa.array(t, type=pa.timestamp("s", tz="UTC"))}
    if args.layout == "vector":
        flat = np.column_stack([vals[n] for n in NAMES]).ravel()
        columns["b"] = pa.FixedSizeListArray.from_arrays(pa.array(flat), 3)
    else:
        columns.update((n, pa.array(vals[n])) for n in args.parameters)
    return pa.RecordBatch.from_pydict(columns)


def write_arrow(out: BinaryIO, args: argparse.Namespace) -> None:
    writer = None
    for rb in batches(args):
        writer = writer or pa.ipc.new_stream(out, rb.schema)
        writer.write_batch(rb)
    if writer is not None:
        writer.close()


def csv_table(rb: pa.RecordBatch) -> pa.Table:
    """ISO 8601 times, and a vector spread over `b_0`, `b_1`, `b_2`."""
    columns = {"time": pc.strftime(rb.column(0), format="%Y-%m-%dT%H:%M:%SZ")}
    for name, col in zip(rb.schema.names[1:], rb.columns[1:], strict=True):
        if pa.types.is_fixed_size_list(col.type):
            flat = col.flatten().to_numpy().reshape(len(col), -1)
            columns.update((f"{name}_{i}", pa.array(flat[:, i])) for i in range(flat.shape[1]))
        else:
            columns[name] = col
    return pa.table(columns)


def write_csv(out: BinaryIO, args: argparse.Namespace) -> None:
    options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    header = False
    for rb in batches(args):
        table = csv_table(rb)
        if not header:
            out.write((",".join(table.column_names) + "\n").encode())
            header = True
        pacsv.write_csv(table, out, options)


def write_netcdf(out: BinaryIO, args: argparse.Namespace) -> None:
    """The whole range as one NetCDF4 file (small ranges: it is built in memory)."""
    import xarray as xr

    rbs = list(batches(args))
    t = np.concatenate([np.asarray(rb.column(0).cast(pa.int64())) for rb in rbs] or [[]])
    ds = xr.Dataset(coords={"time": t.astype("datetime64[s]").astype("datetime64[ns]")})
    for name in rbs[0].schema.names[1:] if rbs else ():
        data = np.concatenate([np.asarray(_flat(rb.column(name))) for rb in rbs])
        dims = ("time", "component") if args.layout == "vector" else ("time",)
        ds[name] = (dims, data.reshape(len(t), -1) if args.layout == "vector" else data)
        ds[name].encoding["_FillValue"] = FILL
    ds["time"].encoding.update(units="seconds since 1970-01-01", dtype="int64")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "wave.nc"
        ds.to_netcdf(path, engine="netcdf4")
        with path.open("rb") as f:
            shutil.copyfileobj(f, out)


def _flat(col: pa.Array) -> pa.Array:
    return col.flatten() if pa.types.is_fixed_size_list(col.type) else col


def arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--start", required=True)
    parser.add_argument("--stop", required=True)
    parser.add_argument("--parameters", default=",".join(NAMES))
    parser.add_argument("--format", choices=("arrow", "csv", "netcdf"), default="arrow")
    parser.add_argument("--layout", choices=("scalar", "vector"), default="scalar")
    parser.add_argument("--station", choices=sorted(STATIONS), default="kiruna")
    parser.add_argument("--gain", type=int, default=1)
    args = parser.parse_args(argv)
    args.parameters = [p for p in args.parameters.split(",") if p] or list(NAMES)
    unknown = sorted(set(args.parameters) - set(NAMES))
    if unknown:
        parser.error(f"unknown parameters {', '.join(unknown)}; known: {', '.join(NAMES)}")
    return args


def main(argv: list[str]) -> int:
    args = arguments(argv)
    write = {"arrow": write_arrow, "csv": write_csv, "netcdf": write_netcdf}[args.format]
    try:
        write(sys.stdout.buffer, args)
        sys.stdout.buffer.flush()
    except BrokenPipeError:  # the server stopped reading: nothing more to do
        return 0
    except ValueError as exc:  # e.g. a start or stop that is not ISO 8601
        print(f"wave.py: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
