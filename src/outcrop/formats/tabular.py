"""Subsets as tables, one row per grid point: CSV, Arrow IPC stream and Parquet (pyarrow).

Columns: the dimension coordinates in dimension order (a dimension without a coordinate
gets a 0-based position column), then the other coordinates along those dimensions, then
the data variables. Rows run in C order, the last dimension fastest. Missing values
(NaN after CF decoding) are nulls: empty fields in CSV. Times are ISO 8601 text in CSV;
in Arrow and Parquet, standard-calendar times are timestamps and times of other calendars
(360_day, noleap, …) ISO text, with the calendar in the field metadata.

A table needs variables on the same dimensions: without `var=`, the data variables that
share the dimensions of the one with the most dimensions are written (bounds and grid
mappings are left out); with `var=`, the variables named must share dimensions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from outcrop.errors import BadQuery
from outcrop.formats.slabs import Slab, read, slabs
from outcrop.model import Query

if TYPE_CHECKING:
    import pyarrow as pa
    import xarray as xr

SLAB_CELLS = 2**19  # ~4 MB of Arrow data per batch: bounded, and as fast as larger ones
FIELD_ATTRS = ("units", "long_name", "standard_name", "calendar")


class ByteSink:
    """A write-only file for pyarrow writers; `drain()` hands over what was written."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.position = 0
        self.closed = False

    def write(self, data: Any) -> int:
        block = bytes(data)
        self.parts.append(block)
        self.position += len(block)
        return len(block)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def drain(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


def _drained(sink: ByteSink) -> Iterator[bytes]:
    data = sink.drain()
    if data:
        yield data


def table_dataset(ds: xr.Dataset, query: Query) -> xr.Dataset:
    """The variables a table can hold: all on the same dimensions."""
    if not ds.data_vars:
        raise BadQuery("the selection has no data variables to tabulate", parameter="var")
    if query.variables:
        names = list(query.variables)
    else:
        widest = max(ds.data_vars.values(), key=lambda v: v.ndim)
        names = [str(n) for n, v in ds.data_vars.items() if v.dims == widest.dims]
    dims = {n: ds[n].dims for n in names}
    if len(set(dims.values())) > 1:
        groups = "; ".join(f"{n} ({', '.join(map(str, d))})" for n, d in dims.items())
        raise BadQuery(
            f"var: format={query.format} needs variables on the same dimensions, but they "
            f"differ: {groups}; ask for one group at a time, or use format=nc or json",
            parameter="var",
        )
    return ds[names]


class Table:
    """How a dataset's points become rows: its columns, and record batches slab by slab."""

    def __init__(self, ds: xr.Dataset, iso_times: bool) -> None:
        first = next(iter(ds.data_vars.values()))
        self.ds = ds
        self.dims = tuple(str(d) for d in first.dims)
        self.shape = tuple(first.shape)
        self.iso_times = iso_times
        extra = [
            str(n)
            for n, c in ds.coords.items()
            if n not in self.dims and c.ndim and set(map(str, c.dims)) <= set(self.dims)
        ]
        self.columns = [*self.dims, *extra, *map(str, ds.data_vars)]
        self.schema: pa.Schema | None = None

    def batches(self, budget: int) -> Iterator[pa.RecordBatch]:
        per_row = max(1, len(self.columns))
        for slab in slabs(self.shape, max(1, budget // per_row)):
            yield self.batch(slab)

    def batch(self, slab: Slab) -> pa.RecordBatch:
        import pyarrow as pa

        arrays = [self.column(name, slab) for name in self.columns]
        if self.schema is None:
            self.schema = pa.schema(
                [
                    pa.field(name, a.type, metadata=self.field_metadata(name))
                    for name, a in zip(self.columns, arrays, strict=True)
                ]
            )
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def column(self, name: str, slab: Slab) -> pa.Array:
        """One column over a slab: values of the variable, repeated along other dims."""
        import pyarrow as pa

        shape = tuple(s.stop - s.start for s in slab)
        if name in self.ds.variables:
            var = self.ds.variables[name]
            key = tuple(slab[self.dims.index(str(d))] for d in var.dims)
            data = read(var[key])
            dims = tuple(str(d) for d in var.dims)
        else:  # a dimension without a coordinate: positions
            axis = self.dims.index(name)
            data = np.arange(slab[axis].start, slab[axis].stop, dtype="int64")
            dims = (name,)
        if dims != self.dims and (data.dtype.kind in "iufb" or self.native_time(data)):
            # fixed-width values: repeat them in numpy, cheaper than an Arrow take
            data, dims = spread(data, dims, self.dims, shape), self.dims
        array = self.to_arrow(data.ravel())
        if dims == self.dims:
            return array
        index = spread(np.arange(data.size).reshape(data.shape), dims, self.dims, shape)
        return array.take(pa.array(index.ravel()))

    def native_time(self, data: np.ndarray) -> bool:
        return data.dtype.kind == "M" and not self.iso_times

    def to_arrow(self, data: np.ndarray) -> pa.Array:
        import pyarrow as pa

        if data.dtype.kind == "M":
            return pa.array(iso(data)) if self.iso_times else pa.array(data, from_pandas=True)
        if data.dtype.kind == "O" and data.size and hasattr(data.flat[0], "calendar"):
            return pa.array([v.strftime("%Y-%m-%dT%H:%M:%S") for v in data])
        if data.dtype.kind == "O":
            return pa.array([v.decode() if isinstance(v, bytes) else str(v) for v in data])
        if data.dtype.kind == "S":
            return pa.array(np.char.decode(data, "utf-8", "replace"))
        if data.dtype.kind == "m":
            return pa.array(data.astype("int64"))
        return pa.array(data, from_pandas=True)

    def field_metadata(self, name: str) -> dict[str, str]:
        if name not in self.ds.variables:
            return {}
        var = self.ds.variables[name]
        found = {**var.encoding, **var.attrs}
        return {k: str(found[k]) for k in FIELD_ATTRS if k in found}


def spread(
    values: np.ndarray, dims: tuple[str, ...], along: tuple[str, ...], shape: tuple[int, ...]
) -> np.ndarray:
    """`values` (on `dims`, a subset of `along`) repeated over a block of `shape`."""
    order = [dims.index(d) for d in along if d in dims]
    lined = values.transpose(order).reshape(
        [n if d in dims else 1 for d, n in zip(along, shape, strict=True)]
    )
    return np.broadcast_to(lined, shape)


def iso(data: np.ndarray) -> list[str | None]:
    """ISO 8601 text of datetime64 values, whole seconds unless finer ones are needed."""
    valid = ~np.isnat(data)
    whole = bool(np.all(data[valid].astype("datetime64[s]") == data[valid]))
    text = np.datetime_as_string(data, unit="s" if whole else "auto")
    return [str(t) if ok else None for t, ok in zip(text, valid, strict=True)]


class TabularFormat:
    """A table of rows (coordinates first, then variables), written slab by slab."""

    name = ""
    media_type = ""
    extension = ""
    iso_times = False

    def __init__(self, slab_cells: int = SLAB_CELLS) -> None:
        self.slab_cells = slab_cells

    def select(self, ds: xr.Dataset, query: Query) -> xr.Dataset:
        return table_dataset(ds, query)

    def encode(self, ds: xr.Dataset, query: Query) -> Iterator[bytes]:
        table = Table(ds, iso_times=self.iso_times)
        sink = ByteSink()
        writer: Any = None
        for batch in table.batches(self.slab_cells):
            writer = writer or self.open_writer(sink, batch.schema)
            self.write(writer, batch)
            yield from _drained(sink)
        if writer is not None:
            writer.close()
        yield from _drained(sink)

    def open_writer(self, sink: Any, schema: Any) -> Any:
        raise NotImplementedError

    def write(self, writer: Any, batch: Any) -> None:
        writer.write_batch(batch)


class CsvFormat(TabularFormat):
    """`format=csv`: comma-separated text with a header line."""

    name = "csv"
    media_type = "text/csv; charset=utf-8"
    extension = "csv"
    iso_times = True

    def open_writer(self, sink: Any, schema: Any) -> Any:
        import pyarrow.csv as csv

        return csv.CSVWriter(sink, schema)


class ArrowFormat(TabularFormat):
    """`format=arrow`: an Arrow IPC stream, one record batch per slab."""

    name = "arrow"
    media_type = "application/vnd.apache.arrow.stream"
    extension = "arrows"

    def open_writer(self, sink: Any, schema: Any) -> Any:
        import pyarrow as pa

        return pa.ipc.new_stream(sink, schema)


class ParquetFormat(TabularFormat):
    """`format=parquet`: a Parquet file, one row group per slab."""

    name = "parquet"
    media_type = "application/vnd.apache.parquet"
    extension = "parquet"

    def open_writer(self, sink: Any, schema: Any) -> Any:
        import pyarrow.parquet as pq

        return pq.ParquetWriter(sink, schema)

    def write(self, writer: Any, batch: Any) -> None:
        import pyarrow as pa

        writer.write_table(pa.Table.from_batches([batch]))
