"""A reader's stdout as blocks of samples: CSV and Arrow IPC streamed in batches, NetCDF
through a temporary file; vectorised, with bounded memory."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from outcrop.drivers.program.description import (
    ParameterSpec,
    Reader,
    ReaderDescription,
    parse_units,
)
from outcrop.errors import UpstreamFailed
from outcrop.model import Block

if TYPE_CHECKING:
    import pyarrow as pa
    import xarray as xr

    from outcrop.drivers.program.process import Run

CSV_BLOCK = 1 << 20  # pyarrow keeps a few blocks in flight: 4 MB blocks cost ~45 MB more, no faster
NETCDF_ROWS = 1 << 20


Chunk = tuple["np.ndarray[Any, Any]", dict[str, "np.ndarray[Any, Any]"]]
ARROW_TYPES = {"double": "float64", "integer": "int64", "string": "string", "isotime": "string"}


def csv_chunks(run: Run, reader: Reader, specs: Sequence[ParameterSpec]) -> Iterator[Chunk]:
    """CSV in blocks of a few MB: columns by header name, or without a header by position
    (time, then the parameters asked for when the command has `{parameters}`, else all)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    desc = reader.desc
    written = specs if reader.uses_parameters else desc.parameters
    types = {c: pa.type_for_alias(ARROW_TYPES[p.type]) for p in specs for c in p.columns()}
    read = pacsv.ReadOptions(
        use_threads=False,  # pyarrow's read-ahead thread must not call into our file
        block_size=CSV_BLOCK,
        skip_rows=desc.csv.skip_rows,
        column_names=None if desc.csv.header else [desc.time, *columns(written)],
    )
    convert = pacsv.ConvertOptions(
        column_types={desc.time: pa.string(), **types},
        include_columns=[desc.time, *columns(specs)],
        null_values=[""],
    )
    parse = pacsv.ParseOptions(delimiter=desc.csv.delimiter)
    for batch in pacsv.open_csv(run.stdout, read, parse, convert):
        times = times_ns(batch.column(desc.time), desc)
        yield times, {p.name: values_of(p, cells(batch, p.columns()), len(times)) for p in specs}


def columns(specs: Sequence[ParameterSpec]) -> list[str]:
    return [c for p in specs for c in p.columns()]


def cells(batch: pa.RecordBatch, names: Sequence[str]) -> list[pa.Array]:
    return [batch.column(n) for n in names]


def arrow_chunks(run: Run, reader: Reader, specs: Sequence[ParameterSpec]) -> Iterator[Chunk]:
    """An Arrow IPC stream: a time column and a column per parameter (a vector as a
    fixed-size list), batch by batch as the program writes them."""
    import pyarrow as pa

    desc = reader.desc
    with pa.ipc.open_stream(run.stdout) as stream:
        for batch in stream:
            missing = [
                n for n in (desc.time, *(p.name for p in specs)) if n not in batch.schema.names
            ]
            if missing:
                has = ", ".join(batch.schema.names)
                raise UpstreamFailed(
                    f"reader {reader.name} wrote no column {missing[0]!r} (it wrote {has})"
                )
            times = times_ns(batch.column(desc.time), desc)
            yield times, {p.name: values_of(p, cells(batch, [p.name]), len(times)) for p in specs}


def netcdf_chunks(run: Run, reader: Reader, specs: Sequence[ParameterSpec]) -> Iterator[Chunk]:
    """NetCDF: the output saved to a temporary file (deleted after), then read with xarray
    (CF-decoded; masked values come back as the parameter's fill)."""
    with tempfile.TemporaryDirectory(prefix="outcrop-reader-") as tmp:
        path = Path(tmp) / "output.nc"
        with path.open("wb") as f:
            while data := run.stdout.read(1 << 20):
                f.write(data)
        run.finish()  # a NetCDF file is complete only when the program has exited
        yield from _netcdf_file(path, reader, specs)


def _netcdf_file(path: Path, reader: Reader, specs: Sequence[ParameterSpec]) -> Iterator[Chunk]:
    import xarray as xr

    from outcrop.drivers.grid import NETCDF_LOCK  # libnetcdf is not thread-safe

    desc = reader.desc
    with NETCDF_LOCK:
        opened = xr.open_dataset(path, engine="netcdf4", decode_timedelta=False, lock=NETCDF_LOCK)
    with opened as ds:
        missing = [n for n in (desc.time, *(p.name for p in specs)) if n not in ds.variables]
        if missing:
            raise UpstreamFailed(f"reader {reader.name} wrote no variable {missing[0]!r}")
        time_var = ds[desc.time]
        if time_var.ndim != 1 or time_var.dtype.kind != "M":
            raise UpstreamFailed(
                f"reader {reader.name}: {desc.time!r} must be a 1-D time variable with CF "
                "units such as 'seconds since 1970-01-01'"
            )
        times = time_var.values.astype("datetime64[ns]").view(np.int64)
        dim = time_var.dims[0]
        for i in range(0, len(times), NETCDF_ROWS):
            rows = slice(i, i + NETCDF_ROWS)
            yield times[rows], {p.name: _netcdf_values(ds[p.name], dim, rows, p) for p in specs}


def _netcdf_values(var: xr.DataArray, dim: Any, rows: slice, spec: ParameterSpec) -> Any:
    if var.dims[:1] != (dim,):
        raise UpstreamFailed(f"{spec.name} must have {dim!r} as its first dimension")
    data = np.asarray(var.isel({dim: rows}).values)
    if data.dtype.kind == "f" and spec.type in ("double", "integer"):
        masked = np.isnan(data)  # CF decoding turns fill values into NaN: put them back
        if masked.any():
            data = np.where(masked, _missing(spec), data)
    return _shaped(spec, data.astype(NUMPY_TYPES[spec.type]), len(data))


NUMPY_TYPES = {"double": np.float64, "integer": np.int64, "string": np.str_, "isotime": np.str_}


def _shaped(spec: ParameterSpec, data: Any, n: int) -> Any:
    """`(n,)` for a scalar, `(n, *size)` for a vector; UpstreamFailed when it is neither."""
    per = math.prod(spec.size) if spec.size else 1
    if data.size != n * per:
        got = data.size // n if n else 0
        raise UpstreamFailed(f"{spec.name} has {got} values per sample, not {per}")
    return data.reshape((n, *spec.size))


def values_of(spec: ParameterSpec, arrays: Sequence[pa.Array], n: int) -> Any:
    """A parameter's rows from its column (a vector as a fixed-size list) or its columns."""
    import pyarrow as pa

    if len(arrays) == 1:
        array = arrays[0]
        while pa.types.is_fixed_size_list(array.type) or pa.types.is_list(array.type):
            array = array.flatten()
        return _shaped(spec, _numpy(spec, array), n)
    return _shaped(spec, np.column_stack([_numpy(spec, a) for a in arrays]), n)


def _numpy(spec: ParameterSpec, array: pa.Array) -> Any:
    import pyarrow.compute as pc

    array = array.cast(ARROW_TYPES[spec.type])
    if array.null_count:
        array = pc.fill_null(array, _missing(spec))
    if spec.type in ("string", "isotime"):
        return array.to_numpy(zero_copy_only=False).astype(np.str_)
    return numpy_of(array)


def numpy_of(array: pa.Array) -> Any:
    """An Arrow array as NumPy: a numeric one without nulls is viewed in place (read
    only). Not `to_numpy`, whose first call imports pandas (~45 MB more in a server whose
    datasets never need it); that is left for the others."""
    import pyarrow as pa

    kind = array.type
    numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind)
    if not numeric or array.null_count:
        return array.to_numpy(zero_copy_only=False)
    code = "f" if pa.types.is_floating(kind) else "i" if pa.types.is_signed_integer(kind) else "u"
    dtype = np.dtype(f"={code}{kind.bit_width // 8}")
    data = array.buffers()[1]
    if data is None or not len(array):
        return np.empty(0, dtype)
    return np.frombuffer(data, dtype, len(array), array.offset * dtype.itemsize)


def _missing(spec: ParameterSpec) -> Any:
    """What an empty value becomes: the fill value, else NaN (doubles) or "" (strings)."""
    if spec.fill is not None:
        return {"double": float, "integer": int}.get(spec.type, str)(spec.fill)
    if spec.type in ("string", "isotime"):
        return ""
    if spec.type == "double":
        return math.nan
    raise UpstreamFailed(f"{spec.name} has empty values and no fill value is declared")


def times_ns(array: pa.Array, desc: ReaderDescription) -> Any:
    """Times as int64 ns: Arrow timestamps, ISO 8601 text, or numbers in `time_units`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if array.null_count:
        raise UpstreamFailed(f"the time column {desc.time!r} has empty values")
    kind = array.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        return numpy_of(array.cast(pa.timestamp("ns", getattr(kind, "tz", None))).cast(pa.int64()))
    if desc.time_units is not None:
        return _numbers_ns(array, *parse_units(desc.time_units))
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise UpstreamFailed(f"the time column {desc.time!r} holds {kind}; declare time_units")
    text = pc.utf8_rtrim(array, characters="Z")
    return numpy_of(pc.cast(text, pa.timestamp("ns")).cast(pa.int64()))


def _numbers_ns(array: pa.Array, factor: int, epoch: int) -> Any:
    import pyarrow as pa

    if pa.types.is_string(array.type):
        try:
            array = array.cast(pa.int64())
        except pa.ArrowInvalid:
            array = array.cast(pa.float64())
    numbers = numpy_of(array.cast(pa.float64() if pa.types.is_floating(array.type) else pa.int64()))
    limit = (2**62) // factor
    if len(numbers) and not (np.abs(numbers).max() < limit):
        raise UpstreamFailed(f"times beyond ±{limit} units since the epoch (or NaN)")
    if numbers.dtype.kind == "i":
        return numbers * factor + epoch
    whole = np.floor(numbers)
    return (
        whole.astype(np.int64) * factor
        + np.rint((numbers - whole) * factor).astype(np.int64)
        + epoch
    )


DECODERS = {"csv": csv_chunks, "arrow": arrow_chunks, "netcdf": netcdf_chunks}


def trim(chunks: Iterator[Chunk], start: int, stop: int, name: str) -> Generator[Block, None, bool]:
    """Blocks of the samples with start <= time < stop; returns True when it stopped early
    because the output went past `stop` (the rest need not be read)."""
    last: int | None = None
    for times, values in chunks:
        if not len(times):
            continue
        if (last is not None and times[0] < last) or bool(np.any(times[1:] < times[:-1])):
            raise UpstreamFailed(f"reader {name} wrote times out of order (they must not decrease)")
        last = int(times[-1])
        lo, hi = (int(i) for i in np.searchsorted(times, (start, stop)))
        if hi > lo:
            yield Block(
                times[lo:hi].view("datetime64[ns]"), {k: v[lo:hi] for k, v in values.items()}
            )
        if last >= stop:
            return True
    return False
