"""Subset requests as `Query` values, and `apply(dataset, query)`: selection by coordinate
value, nearest points and strides.

Pure: `apply` reads the coordinates it selects on and nothing else. The result is lazy, and
every later slice of it (an encoder's slab) reads only that slab from the source, however
the source is chunked (dask does not fuse a slice of a slice, so the selection keeps its
own index arithmetic; see `SelectedArray`).

Rules (docs/rest.md says the same to users):

- `<coord>=<start>/<stop>` keeps the points whose value lies in [start, stop], inclusive at
  both ends, in the coordinate's own order, ascending or descending. Either end may be left
  out (`lat=-10/`). Numbers are compared at the coordinate's precision (`0.1` on a float32
  axis means float32(0.1)).
- Times are ISO 8601 (`2000`, `2000-03`, `2000-03-30`, `2000-03-30T12:00:00`), read in the
  coordinate's own calendar (`2000-02-30` is a day of `360_day`). A stop given to a coarser
  precision covers the whole period: `time=2000/2000-06` runs to the end of June.
- Longitudes (units `degrees_east`, standard_name `longitude`, or named lon/longitude) are
  circular: a request in -180..180 on a 0..360 grid (or the reverse) selects the same
  places, and a range crossing the grid's seam (`lon=-30/30` on 0..360, or `lon=330/30`)
  returns the points east of start first, then those west of stop: 330 … 357.5, 0 … 30.
  Coordinate values are returned as stored, never rewritten.
- `<coord>=<value>` keeps the one nearest point (circular distance on longitudes); its
  dimension stays, with length 1.
- A dimension without a coordinate variable is selected by position, 0-based, inclusive.
- `stride=lat:2,lon:2` keeps every k-th point of the selection, starting with the first.
- `var=a,b` picks data variables (default: all); the coordinates they use, and the CF
  variables they name (bounds, grid_mapping, ancillary_variables, cell_measures,
  climatology), come along.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import Collection, Iterable, Sequence
from typing import Any

import numpy as np
import xarray as xr
from xarray.backends import BackendArray
from xarray.core import indexing

from outcrop.errors import BadQuery
from outcrop.model import Query, Selector

RESERVED = ("var", "stride", "format")
CF_REFERENCES = ("bounds", "grid_mapping", "ancillary_variables", "cell_measures", "climatology")
LONGITUDE_UNITS = frozenset(
    {"degrees_east", "degree_east", "degrees_e", "degree_e", "degreese", "degreee"}
)
TIME = re.compile(
    r"^(?P<year>\d{4})(?:-(?P<month>\d{1,2})(?:-(?P<day>\d{1,2})"
    r"(?:[T ](?P<hour>\d{1,2})(?::(?P<minute>\d{2})(?::(?P<second>\d{2})"
    r"(?:\.(?P<fraction>\d{1,9}))?)?)?)?)?)?Z?$"
)
TIME_PARTS = ("year", "month", "day", "hour", "minute", "second", "fraction")
Positions = dict[str, np.ndarray]


# -- parsing ---------------------------------------------------------------------------
def parse(params: Iterable[tuple[str, str]], formats: Collection[str]) -> Query:
    """A `Query` from request parameters; names are checked against a dataset by `apply`."""
    given: dict[str, str] = {}
    for name, value in params:
        if name in given:
            raise BadQuery(
                f"parameter {name!r} is given more than once; give it once", parameter=name
            )
        given[name] = value
    fmt = given.pop("format", "nc")
    if fmt not in formats:
        raise BadQuery(f"unknown format {fmt!r}; allowed: {', '.join(formats)}", parameter="format")
    variables = parse_names(given.pop("var")) if "var" in given else ()
    strides = parse_strides(given.pop("stride")) if "stride" in given else ()
    selectors = tuple(parse_selector(name, text) for name, text in sorted(given.items()))
    return Query(variables=variables, selectors=selectors, strides=strides, format=fmt)


def parse_names(text: str) -> tuple[str, ...]:
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise BadQuery(
            f"var={text!r} has an empty name; give names separated by commas, e.g. var=ta,pr",
            parameter="var",
        )
    if len(set(names)) != len(names):
        raise BadQuery(f"var={text!r} names a variable twice", parameter="var")
    return tuple(names)


def parse_strides(text: str) -> tuple[tuple[str, int], ...]:
    """`lat:2,lon:3` → (("lat", 2), ("lon", 3)), sorted by dimension."""
    strides: dict[str, int] = {}
    for part in text.split(","):
        dim, sep, step = part.strip().partition(":")
        if not sep or not dim or not step.strip().isdigit() or int(step) < 1:
            raise BadQuery(
                f"stride={text!r}: each part must be <dimension>:<positive integer>, "
                "e.g. stride=lat:2,lon:2",
                parameter="stride",
            )
        if dim in strides:
            raise BadQuery(f"stride={text!r} gives {dim!r} twice", parameter="stride")
        strides[dim] = int(step)
    return tuple(sorted(strides.items()))


def parse_selector(name: str, text: str) -> Selector:
    """`start/stop` (either end may be empty) or a single value."""
    text = text.strip()
    if text.count("/") > 1 or text in ("", "/"):
        raise BadQuery(
            f"{name}={text!r}: give <start>/<stop> (inclusive; either end may be empty) "
            "or one value for the nearest point",
            parameter=name,
        )
    if "/" not in text:
        return Selector(coord=name, kind="nearest", value=text)
    start, stop = (part.strip() or None for part in text.split("/"))
    return Selector(coord=name, kind="range", start=start, stop=stop)


# -- applying --------------------------------------------------------------------------
def apply(ds: xr.Dataset, query: Query) -> xr.Dataset:
    """The lazy subset of `ds` that `query` asks for (no data read but coordinates)."""
    names = select_variables(ds, query.variables)
    positions: Positions = {}
    for selector in query.selectors:
        dim, picked = select(ds, selector, positions)
        positions[dim] = picked
    subset = ds[names]
    for selector in query.selectors:
        _check_applies(subset, selector.coord, _dim_of(ds, selector.coord), names)
    for dim, step in query.strides:
        if dim not in subset.dims:
            raise BadQuery(
                f"stride: {dim!r} is not a dimension of the selected variables; "
                f"allowed: {', '.join(map(str, subset.dims)) or 'none'}",
                parameter="stride",
            )
        positions[dim] = positions.get(dim, np.arange(subset.sizes[dim]))[::step]
    return take(subset, {d: p for d, p in positions.items() if d in subset.dims})


def select_variables(ds: xr.Dataset, wanted: Sequence[str]) -> list[str]:
    """The data variables asked for (default all), plus the CF variables they name."""
    allowed = [str(n) for n in ds.data_vars]
    for name in wanted:
        if name not in allowed:
            raise BadQuery(
                f"var: no data variable {name!r}; allowed: {', '.join(allowed)}", parameter="var"
            )
    names = list(wanted) or allowed
    for name in list(names):
        for ref in _cf_references(ds, name):
            if ref not in names:
                names.append(ref)
    return names


def _cf_references(ds: xr.Dataset, name: str) -> list[str]:
    """Data variables that `name` or its coordinates name in CF attributes."""
    variables = [ds[name], *(ds[c] for c in ds[name].coords)]
    found: list[str] = []
    for var in variables:
        for key in CF_REFERENCES:
            text = var.attrs.get(key, var.encoding.get(key))
            if isinstance(text, str):
                found += [t for t in text.replace(":", " ").split() if t in ds.data_vars]
    return found


def selectable(ds: xr.Dataset) -> list[str]:
    """Names a selector may use: 1-D coordinates, and dimensions without a coordinate."""
    coords = [str(n) for n, c in ds.coords.items() if c.ndim == 1]
    return coords + [str(d) for d in ds.dims if d not in ds.coords]


def _dim_of(ds: xr.Dataset, name: str) -> str:
    if name in ds.coords and ds[name].ndim == 1:
        return str(ds[name].dims[0])
    if name in ds.dims and name not in ds.coords:
        return name
    allowed = [*RESERVED, *selectable(ds)]
    raise BadQuery(f"unknown parameter {name!r}; allowed: {', '.join(allowed)}", parameter=name)


def _check_applies(subset: xr.Dataset, coord: str, dim: str, names: list[str]) -> None:
    if dim not in subset.dims:
        raise BadQuery(
            f"{coord} selects along {dim!r}, which none of the selected variables "
            f"({', '.join(names)}) has",
            parameter=coord,
        )


def select(ds: xr.Dataset, selector: Selector, positions: Positions) -> tuple[str, np.ndarray]:
    """The dimension a selector works on, and the positions along it that it keeps."""
    name = selector.coord
    dim = _dim_of(ds, name)
    current = positions.get(dim, np.arange(ds.sizes[dim]))
    coord = ds[name] if name in ds.coords else None
    values = load(coord.variable)[current] if coord is not None else current
    axis = Axis.of(name, values, coord)
    if selector.kind == "nearest":
        picked = axis.nearest(str(selector.value))
    else:
        picked = axis.within(selector.start, selector.stop)
    if picked.size == 0:
        asked = (
            selector.value
            if selector.kind == "nearest"
            else (f"{selector.start or ''}/{selector.stop or ''}")
        )
        raise BadQuery(
            f"{name}={asked} selects nothing; {name} runs {axis.describe()}",
            parameter=name,
        )
    return dim, current[picked]


class Axis:
    """The values of one coordinate, and how request text compares with them."""

    def __init__(self, name: str, values: np.ndarray, circular: bool = False) -> None:
        self.name = name
        self.values = values
        self.circular = circular

    @staticmethod
    def of(name: str, values: np.ndarray, coord: xr.DataArray | None) -> Axis:
        if values.dtype.kind == "M":
            return DatetimeAxis(name, values)
        if values.dtype.kind == "O" and values.size and _is_cftime(values.flat[0]):
            return CftimeAxis(name, values)
        if values.dtype.kind in "iuf":
            return Axis(name, values, coord is not None and is_longitude(coord))
        raise BadQuery(
            f"{name}: selecting on {values.dtype} values is not supported", parameter=name
        )

    def describe(self) -> str:
        finite = self.values[~np.isnan(self.values)] if self.values.dtype.kind == "f" else []
        if len(finite) == 0:
            return "over no values"
        return f"from {finite[0]} to {finite[-1]} ({self.values.size} values)"

    def number(self, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise BadQuery(f"{self.name}: {text!r} is not a number", parameter=self.name) from None
        if not np.isfinite(value):
            raise BadQuery(f"{self.name}: {text!r} is not a finite number", parameter=self.name)
        if self.values.dtype.kind == "f":  # compare at the coordinate's precision
            return float(self.values.dtype.type(value))
        return value

    def within(self, start: str | None, stop: str | None) -> np.ndarray:
        lo = self.number(start) if start is not None else -np.inf
        hi = self.number(stop) if stop is not None else np.inf
        values = self.values.astype("float64")
        if self.circular and start is not None and stop is not None:
            return _circular_range(values, lo, hi)
        if lo > hi:
            raise BadQuery(
                f"{self.name}={start}/{stop}: start is greater than stop; give the smaller "
                "value first (order does not depend on the coordinate's direction)",
                parameter=self.name,
            )
        return np.flatnonzero((values >= lo) & (values <= hi))

    def nearest(self, text: str) -> np.ndarray:
        target = self.number(text)
        distance = np.abs(self.values.astype("float64") - target)
        if self.circular:
            distance = np.abs((distance + 180.0) % 360.0 - 180.0)
        if np.all(np.isnan(distance)):
            return np.array([], dtype=int)
        return np.array([int(np.nanargmin(distance))])


def _circular_range(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Longitudes in [lo, hi] going east, across the grid's seam if need be."""
    if hi < lo:
        hi += 360.0
    if hi - lo >= 360.0:
        return np.flatnonzero(np.isfinite(values))
    base = -180.0 if np.nanmin(values) < 0 else 0.0
    start = (lo - base) % 360.0 + base
    stop = start + (hi - lo)
    east = np.flatnonzero((values >= start) & (values <= stop))
    west = np.flatnonzero((values + 360.0 >= start) & (values + 360.0 <= stop))
    return np.concatenate([east, west])


class DatetimeAxis(Axis):
    """numpy datetime64 values: the proleptic Gregorian calendar."""

    def bounds(self, text: str) -> tuple[Any, Any]:
        parts, precision = parse_time(self.name, text)
        iso = _iso(parts, precision)
        try:
            first = np.datetime64(iso)
        except ValueError:
            raise BadQuery(
                f"{self.name}: {text!r} is not a valid date", parameter=self.name
            ) from None
        unit = np.datetime_data(first.dtype)[0]
        return first, first + np.timedelta64(1, unit)  # type: ignore[call-overload]

    def within(self, start: str | None, stop: str | None) -> np.ndarray:
        return _time_range(self, start, stop)

    def nearest(self, text: str) -> np.ndarray:
        first, _ = self.bounds(text)
        valid = ~np.isnat(self.values)
        if not valid.any():
            return np.array([], dtype=int)
        distance = np.abs((self.values - first).astype("timedelta64[ns]").astype("float64"))
        distance[~valid] = np.inf
        return np.array([int(np.argmin(distance))])

    def describe(self) -> str:
        return f"from {self.values[0]} to {self.values[-1]} ({self.values.size} values)"


class CftimeAxis(Axis):
    """cftime values: any CF calendar (360_day, noleap, all_leap, julian, …)."""

    def bounds(self, text: str) -> tuple[Any, Any]:
        import cftime

        parts, precision = parse_time(self.name, text)
        sample = self.values.flat[0]
        values = [parts.get(p, 1 if p in ("month", "day") else 0) for p in TIME_PARTS[:6]]
        micro = int(str(parts.get("fraction", "0"))[:6].ljust(6, "0"))
        try:
            first = cftime.datetime(
                *values, micro, calendar=sample.calendar, has_year_zero=sample.has_year_zero
            )
        except ValueError:
            raise BadQuery(
                f"{self.name}: {text!r} is not a date of the {sample.calendar} calendar",
                parameter=self.name,
            ) from None
        return first, _next_period(first, precision)

    def within(self, start: str | None, stop: str | None) -> np.ndarray:
        return _time_range(self, start, stop)

    def nearest(self, text: str) -> np.ndarray:
        first, _ = self.bounds(text)
        seconds = np.array([abs((v - first).total_seconds()) for v in self.values])
        return np.array([int(np.argmin(seconds))])

    def describe(self) -> str:
        first, last = self.values[0], self.values[-1]
        return f"from {first.isoformat()} to {last.isoformat()} ({self.values.size} values)"


def _time_range(axis: DatetimeAxis | CftimeAxis, start: str | None, stop: str | None) -> np.ndarray:
    keep = np.ones(axis.values.shape, dtype=bool)
    if axis.values.dtype.kind == "M":
        keep &= ~np.isnat(axis.values)
    lo = axis.bounds(start)[0] if start is not None else None
    hi = axis.bounds(stop)[1] if stop is not None else None
    if lo is not None and hi is not None and not lo < hi:
        raise BadQuery(
            f"{axis.name}={start}/{stop}: start is later than stop; give the earlier time first",
            parameter=axis.name,
        )
    if lo is not None:
        keep &= axis.values >= lo
    if hi is not None:
        keep &= axis.values < hi
    return np.flatnonzero(keep)


def parse_time(name: str, text: str) -> tuple[dict[str, int | str], str]:
    """ISO 8601 text → its parts and its precision (the finest part given)."""
    match = TIME.match(text.strip())
    if match is None:
        raise BadQuery(
            f"{name}: {text!r} is not an ISO 8601 time; use e.g. 2000, 2000-03, 2000-03-30 "
            "or 2000-03-30T12:00:00",
            parameter=name,
        )
    parts: dict[str, int | str] = {}
    for part in TIME_PARTS:
        found = match.group(part)
        if found is not None:
            parts[part] = found if part == "fraction" else int(found)
    precision = [p for p in TIME_PARTS if p in parts][-1]
    return parts, precision


def _iso(parts: dict[str, int | str], precision: str) -> str:
    text = f"{parts['year']:04d}"
    for part, sep in (("month", "-"), ("day", "-"), ("hour", "T"), ("minute", ":")):
        if part in parts:
            text += f"{sep}{parts[part]:02d}"
    if "second" in parts:
        text += f":{parts['second']:02d}"
    if precision == "fraction":
        text += f".{parts['fraction']}"
    return text


def _next_period(first: Any, precision: str) -> Any:
    """The start of the period after the one `first` starts, in its own calendar."""
    if precision == "year":
        return first.replace(year=first.year + 1)
    if precision == "month":
        year, month = divmod(first.month, 12)
        return first.replace(year=first.year + year, month=month + 1)
    step = {
        "day": dt.timedelta(days=1),
        "hour": dt.timedelta(hours=1),
        "minute": dt.timedelta(minutes=1),
        "second": dt.timedelta(seconds=1),
        "fraction": dt.timedelta(microseconds=1),
    }[precision]
    return first + step


def _is_cftime(value: Any) -> bool:
    return type(value).__module__.startswith("cftime")


def is_longitude(coord: xr.DataArray) -> bool:
    units = str(coord.attrs.get("units", "")).lower()
    return (
        units in LONGITUDE_UNITS
        or coord.attrs.get("standard_name") == "longitude"
        or str(coord.name).lower() in ("lon", "longitude")
    )


# -- the lazy result -------------------------------------------------------------------
def take(ds: xr.Dataset, positions: Positions) -> xr.Dataset:
    """`ds` at `positions` (per dimension), lazily; later slices read only what they need,
    even where the source holds a whole variable in one chunk. Each variable's encoding
    gets `source_region` (per dimension, the source's positions as (start, stop) where
    they are contiguous) and `source_chunks` (see `chunk_runs`) when its source is chunked,
    so encoders can align their reads, or copy stored chunks as they are."""
    data: dict[str, xr.Variable] = {}
    coords: dict[str, xr.Variable] = {}
    for name, var in ds.variables.items():
        if name in ds.indexes or var.ndim == 0:
            continue
        index = tuple(positions.get(str(d), np.arange(n)) for d, n in var.sizes.items())
        lazy = indexing.LazilyIndexedArray(SelectedArray(var, index))
        encoding = {**var.encoding, "source_region": tuple(contiguous(i) for i in index)}
        if var.chunks is not None:
            encoding["source_chunks"] = tuple(
                chunk_runs(i, c) for i, c in zip(index, var.chunks, strict=True)
            )
        selected = xr.Variable(var.dims, lazy, var.attrs, encoding)
        (coords if name in ds.coords else data)[str(name)] = selected
    return (ds.isel(positions) if positions else ds).assign(data).assign_coords(coords)


def contiguous(positions: np.ndarray) -> tuple[int, int] | None:
    """(start, stop) when the positions are start, start + 1, …, stop - 1; else None."""
    if not len(positions):
        return None
    first, n = int(positions[0]), len(positions)
    if bool(np.all(positions == np.arange(first, first + n))):
        return first, first + n
    return None


def chunk_runs(positions: np.ndarray, sizes: Sequence[int]) -> tuple[int, ...]:
    """Lengths of the runs of `positions` that fall in one source chunk (of `sizes`):
    encoders cut their slabs where these end (`formats.slabs`)."""
    chunk = np.searchsorted(np.cumsum(sizes), positions, side="right")
    starts = np.flatnonzero(np.r_[True, chunk[1:] != chunk[:-1]])
    return tuple(np.diff(np.r_[starts, len(positions)]).tolist())


def runs(positions: np.ndarray) -> list[tuple[int, int, slice]]:
    """Split positions into runs of constant positive step: (out start, out stop, source slice)."""
    found: list[tuple[int, int, slice]] = []
    i, n = 0, len(positions)
    while i < n:
        j, step = i + 1, 1
        if j < n and positions[j] > positions[i]:
            step = int(positions[j] - positions[i])
            while j < n and positions[j] - positions[j - 1] == step:
                j += 1
        found.append((i, j, slice(int(positions[i]), int(positions[j - 1]) + 1, step)))
        i = j
    return found


class SelectedArray(BackendArray):
    """A variable seen through per-dimension positions; reads each slab with plain slices.

    xarray composes later slices of it lazily (`LazilyIndexedArray`), so a slab of the
    result becomes one read of the source with slices — never a whole source chunk.
    """

    def __init__(self, source: xr.Variable, index: tuple[np.ndarray, ...]) -> None:
        self.source = source
        self.index = index
        self.shape = tuple(len(i) for i in index)
        self.dtype = source.dtype

    def __getitem__(self, key: Any) -> Any:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.BASIC, self._read
        )

    def _read(self, key: tuple[Any, ...]) -> np.ndarray:
        wanted = [base[k] for base, k in zip(self.index, key, strict=True)]
        out = np.empty(tuple(len(w) for w in wanted if np.ndim(w)), dtype=self.dtype)
        for target, source in _blocks(wanted):
            region: tuple[Any, ...] = (*target, Ellipsis)  # 0-d object arrays copy values
            out[region] = load(self.source[source])
        return out


def _blocks(wanted: list[Any]) -> Iterable[tuple[tuple[slice, ...], tuple[Any, ...]]]:
    """(output region, source key) pairs covering a read, one per combination of runs."""
    per_dim: list[list[tuple[slice | None, Any]]] = []
    for w in wanted:
        if np.ndim(w) == 0:
            per_dim.append([(None, int(w))])
        else:
            per_dim.append([(slice(a, b), s) for a, b, s in runs(np.asarray(w))])
    for combo in itertools.product(*per_dim):
        target = tuple(t for t, _ in combo if t is not None)
        yield target, tuple(s for _, s in combo)


def load(var: xr.Variable) -> np.ndarray:
    """A variable's values, computed in this thread (no dask thread pool of its own)."""
    if var.chunks is not None:  # dask: compute here, not in dask's own thread pool
        var = var.load(scheduler="synchronous")
    return np.asarray(var.values)


def decoded_size(ds: xr.Dataset) -> int:
    """Bytes of the decoded values of every variable, without reading any."""
    return int(sum(v.size * v.dtype.itemsize for v in ds.variables.values()))
