"""Grid datasets as time series: the variables along a dataset's one time dimension.

A dataset is a time series when exactly one of its dimensions has a CF time coordinate
decoded to `datetime64` (a standard calendar), its times increase, and at least one
numeric data variable has that dimension first (and nowhere else). Further dimensions
make the parameter a vector (`size`, at most MAX_VECTOR values per sample), e.g. GOES
`corrected_current_xrsb2(time, quad_diode)`; a climate grid `ta(time, plev, lat, lon)` is
not a time series.

Values are sent as the file stores them, with the file's fill value where data is
missing: an integer variable (no packing) stays an integer parameter, everything else is
a double. Bounds variables (`time_bnds`) are not parameters.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from outcrop.errors import BadQuery
from outcrop.model import Block, Parameter, SeriesInfo

if TYPE_CHECKING:
    import xarray as xr

ROWS_PER_BLOCK = 1 << 20  # samples read at once: bounded memory for long series
STANDARD_CALENDARS = frozenset({"standard", "gregorian", "proleptic_gregorian"})
MAX_VECTOR = 1024  # values per sample beyond which a variable is a grid, not a vector


def time_dimension(ds: xr.Dataset) -> str | None:
    """The one dimension whose coordinate holds `datetime64` times, or None."""
    found = [
        dim
        for dim in ds.dims
        if dim in ds.coords and np.issubdtype(ds[dim].dtype, np.datetime64) and ds[dim].ndim == 1
    ]
    return str(found[0]) if len(found) == 1 else None


def series_variables(ds: xr.Dataset, dim: str) -> list[str]:
    """Numeric data variables with `dim` first and only there; bounds excluded."""
    bounds = {str(v.attrs["bounds"]) for v in ds.variables.values() if "bounds" in v.attrs}
    names = []
    for name, var in ds.data_vars.items():
        if str(name) in bounds or not var.dims or var.dims[0] != dim or dim in var.dims[1:]:
            continue
        if var.dtype.kind in "fiub" and int(np.prod(var.shape[1:])) <= MAX_VECTOR:
            names.append(str(name))
    return names


def grid_series(ds: xr.Dataset, title: str = "") -> GridSeries | None:
    """The dataset as a time series, or None when it is not one (see the module doc)."""
    dim = time_dimension(ds)
    if dim is None:
        return None
    names = series_variables(ds, dim)
    times = ds[dim].values.astype("datetime64[ns]")
    if (
        not names
        or not len(times)
        or np.isnat(times).any()
        or (np.diff(times).astype(int) <= 0).any()
    ):
        return None
    return GridSeries(ds, dim, names, times, title)


def is_time_series(path: Path, group: str | None = None) -> bool:
    """Whether a Zarr store (group) is a time series, for a catalog scan."""
    from outcrop.drivers.grid import open_one
    from outcrop.errors import SourceError

    try:
        ds = open_one(path, group)
    except SourceError:
        return False
    try:
        return grid_series(ds) is not None
    finally:
        ds.close()


def netcdf_is_time_series(group: Any) -> bool:
    """The same test on an open netCDF4 group, from metadata only (fast for scans)."""
    times = [
        name
        for name, var in group.variables.items()
        if var.dimensions == (name,)
        and " since " in str(getattr(var, "units", ""))
        and str(getattr(var, "calendar", "standard")).lower() in STANDARD_CALENDARS
    ]
    if len(times) != 1:
        return False
    dim = times[0]
    skip = {dim}
    for var in group.variables.values():  # bounds and auxiliary coordinates are no data
        skip.update(str(getattr(var, "bounds", "")).split())
        skip.update(str(getattr(var, "coordinates", "")).split())
    for name, var in group.variables.items():
        dims = var.dimensions
        if name in skip or not dims or dims[0] != dim or dim in dims[1:]:
            continue
        if np.dtype(var.dtype).kind in "fiub" and int(np.prod(var.shape[1:])) <= MAX_VECTOR:
            return True
    return False


class GridSeries:
    """A time series read from a (lazy) grid dataset, a million samples at a time."""

    def __init__(
        self,
        ds: xr.Dataset,
        dim: str,
        names: list[str],
        times: np.ndarray[Any, Any],
        title: str,
        info: SeriesInfo | None = None,
    ) -> None:
        self.ds = ds
        self.dim = dim
        self.names = names
        self.times = times
        self._info = info or _info(ds, dim, names, times, title)

    def reopened(self, ds: xr.Dataset) -> GridSeries:
        """The same series over `ds`, the same dataset opened again: nothing recomputed."""
        return GridSeries(ds, self.dim, self.names, self.times, "", self._info)

    def info(self) -> SeriesInfo:
        return self._info

    def read(
        self,
        start: int,
        stop: int,
        parameters: Sequence[str],
        width: int | None = None,
        extras: Mapping[str, str] | None = None,
    ) -> Iterator[Block]:
        if extras:
            name = next(iter(extras))
            raise BadQuery(f"this dataset takes no parameter {name!r}", parameter=name)
        wanted = [self._info.parameter(n) for n in parameters]
        if any(p is None for p in wanted):
            raise BadQuery(f"unknown parameters in {list(parameters)}", parameter="parameters")
        ns = self.times.view("int64")
        first, last = np.searchsorted(ns, [start, stop], side="left")
        return self._blocks(int(first), int(last), [p for p in wanted if p is not None])

    def _blocks(self, first: int, last: int, wanted: list[Parameter]) -> Iterator[Block]:
        for lo in range(first, last, ROWS_PER_BLOCK):
            hi = min(lo + ROWS_PER_BLOCK, last)
            window = {self.dim: slice(lo, hi)}
            values = {p.name: _stored(self.ds[p.name].isel(window).values, p) for p in wanted}
            yield Block(self.times[lo:hi], values)


def _info(
    ds: xr.Dataset, dim: str, names: list[str], times: np.ndarray[Any, Any], title: str
) -> SeriesInfo:
    ns = times.view("int64")
    steps = np.diff(ns)
    cadence = int(np.median(steps)) if len(steps) else None
    last_step = cadence or 1
    return SeriesInfo(
        parameters=tuple(_parameter(ds[n]) for n in names),
        start=int(ns[0]),
        stop=int(ns[-1]) + 1,
        sample_start=int(ns[0]),
        sample_stop=int(ns[min(len(ns) - 1, 1000)]) + last_step if len(ns) > 1 else int(ns[0]) + 1,
        cadence=cadence,
        title=title or str(ds.attrs.get("title", "")),
        description=str(ds.attrs.get("summary", ds.attrs.get("comment", ""))),
    )


def _parameter(var: xr.DataArray) -> Parameter:
    enc = var.encoding
    stored = np.dtype(enc.get("dtype", var.dtype))
    packed = "scale_factor" in enc or "add_offset" in enc
    integer = stored.kind in "iub" and not packed
    fill = _fill_of(var)
    return Parameter(
        name=str(var.name),
        type="integer" if integer else "double",
        units=_text(var.attrs.get("units")),
        fill=None if fill is None else _fill_text(fill, integer),
        size=tuple(int(n) for n in var.shape[1:]),
        description=str(var.attrs.get("long_name", var.attrs.get("description", ""))),
    )


def _fill_of(var: xr.DataArray) -> Any:
    for key in ("_FillValue", "missing_value"):
        value = var.encoding.get(key, var.attrs.get(key))
        if value is not None:
            return np.ravel(value)[0]
    return "NaN" if var.dtype.kind == "f" else None


def _fill_text(value: Any, integer: bool) -> str:
    if isinstance(value, str):
        return value
    return str(int(value)) if integer else repr(float(value))


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _stored(data: np.ndarray[Any, Any], p: Parameter) -> np.ndarray[Any, Any]:
    """Decoded values back to what the file holds where data is missing: its fill value."""
    if p.type == "integer":
        if data.dtype.kind == "f":
            fill = int(p.fill) if p.fill is not None else 0
            return np.where(np.isnan(data), fill, data).astype(np.int64)
        return data.astype(np.int64, copy=False)
    out = data.astype(np.float64, copy=False)
    if p.fill not in (None, "NaN") and data.dtype.kind == "f":
        out = np.where(np.isnan(out), float(p.fill), out)
    return out
