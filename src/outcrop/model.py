"""Value types shared by server and client. No I/O here."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np

SelectorKind = Literal["range", "nearest"]

# The encoding entries that say what stored numbers mean (CF §8.1 packing, §2.5.1 missing
# data, §4.4 time): every format that writes values keeps them; storage details it chooses.
CF_ENCODING_KEYS = (
    "dtype",
    "_FillValue",
    "missing_value",
    "scale_factor",
    "add_offset",
    "units",
    "calendar",
)


@dataclass(frozen=True)
class Selector:
    """A selection on one coordinate: an inclusive value range, or the nearest point."""

    coord: str
    kind: SelectorKind
    start: str | None = None
    stop: str | None = None
    value: str | None = None


@dataclass(frozen=True)
class Query:
    """What a request asks of one dataset, independent of the protocol that asked."""

    variables: tuple[str, ...] = ()
    selectors: tuple[Selector, ...] = ()
    strides: tuple[tuple[str, int], ...] = ()
    format: str = "nc"


@dataclass(frozen=True)
class CoordRange:
    first: Any
    last: Any
    count: int
    step: Any | None = None


@dataclass(frozen=True)
class VariableInfo:
    name: str
    dtype: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    chunks: tuple[int, ...] | None
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetSummary:
    """One row of the catalog listing."""

    id: str
    title: str
    description: str = ""
    driver: str = "grid"
    version: str = ""


@dataclass(frozen=True)
class DatasetInfo:
    """Everything `GET /api/datasets/{id}` says about a dataset."""

    id: str
    title: str
    version: str
    dims: dict[str, int]
    coords: dict[str, CoordRange]
    variables: dict[str, VariableInfo]
    attrs: dict[str, Any]
    description: str = ""
    links: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RawChunk:
    """Where one stored chunk lies in a file: read `size` bytes at `offset`."""

    path: Path
    offset: int
    size: int


@dataclass(frozen=True)
class StoredChunks:
    """The stored chunks of one HDF5 variable, when numcodecs can decode them as they are.

    `filters` are the HDF5 filters in the order they were applied on write, as numcodecs
    ids with their one parameter: `("fletcher32", 0)`, `("shuffle", itemsize)`,
    `("zlib", level)`. `fill` is the HDF5 fill value in the stored dtype: what a reader
    of the file sees where a chunk was never written.
    """

    path: Path
    dtype: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    filters: tuple[tuple[str, int], ...]
    fill: bytes
    index: dict[tuple[int, ...], tuple[int, int]]

    def get(self, coords: tuple[int, ...]) -> RawChunk | None:
        hit = self.index.get(coords)
        return None if hit is None else RawChunk(self.path, hit[0], hit[1])

    def complete(self) -> bool:
        """Whether every chunk of the variable was written."""
        grid = (-(-s // c) for s, c in zip(self.shape, self.chunks, strict=True))
        return len(self.index) == math.prod(grid)


@dataclass(frozen=True)
class StoredVariable:
    """One variable of a NetCDF-4 file as stored: its dtype, dimensions and attributes
    before any CF decoding (`_FillValue`, `scale_factor`, `units` … as written).

    `attrs` hold JSON values (netCDF-4's own bookkeeping attributes left out); `fill` is
    the HDF5 fill value in `dtype`; `stored` is the chunk index when numcodecs decodes
    the chunks as they lie, `chunks` the HDF5 chunk shape (None: contiguous or compact).
    """

    name: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str
    attrs: dict[str, Any]
    fill: bytes
    chunks: tuple[int, ...] | None
    stored: StoredChunks | None


@dataclass(frozen=True)
class StoredGroup:
    """A NetCDF-4 group as stored: what a Zarr view mirrors without decoding anything."""

    attrs: dict[str, Any]
    variables: tuple[StoredVariable, ...]


# -- time series ------------------------------------------------------------------------
# Times are UTC nanoseconds since 1970-01-01T00:00Z: `datetime64[ns]` arrays, int64 bounds.

ParameterType = Literal["double", "integer", "string", "isotime"]
Statistic = Literal["min", "max", "mean", "count"]
STATISTICS: tuple[Statistic, ...] = ("min", "max", "mean", "count")


@dataclass(frozen=True)
class Parameter:
    """One quantity of a time series besides time (HAPI 3.3 §3.6.8 parameter object).

    `size` is `()` for a scalar and e.g. `(3,)` for a vector; `fill` is the fill value as
    text (HAPI writes it as a string), None when the data has none; `length` is the width
    in bytes of a string or isotime value in fixed-width encodings.
    """

    name: str
    type: ParameterType = "double"
    units: str | None = None
    fill: str | None = None
    size: tuple[int, ...] = ()
    description: str = ""
    length: int | None = None


@dataclass(frozen=True)
class Extra:
    """A request parameter a reader program declares besides start, stop and resolution.

    Values are checked against `type` (`string`, `integer`, `double`, `boolean`), then
    `allowed` (when given), `minimum`/`maximum` (numbers) and `pattern` (strings, a full
    match) before they reach the program's argv.
    """

    name: str
    type: Literal["string", "integer", "double", "boolean"] = "string"
    default: str | None = None
    allowed: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    pattern: str | None = None
    description: str = ""


@dataclass(frozen=True)
class SeriesInfo:
    """What a time series holds: its parameters, its valid time range and how it reads.

    `start`/`stop` bound the data (nanoseconds, `stop` exclusive); `sample_start` and
    `sample_stop` are an example range a client may ask for; `cadence` is the nominal
    spacing of samples in nanoseconds (None when irregular or unknown); `reduces` says
    the source can itself reduce to a requested resolution; `levels` are the bin widths
    (ns) of the multi-resolution cache when the source declares them (else automatic).
    """

    parameters: tuple[Parameter, ...]
    start: int
    stop: int
    sample_start: int | None = None
    sample_stop: int | None = None
    cadence: int | None = None
    reduces: bool = False
    title: str = ""
    description: str = ""
    extras: tuple[Extra, ...] = ()
    levels: tuple[int, ...] = ()

    def parameter(self, name: str) -> Parameter | None:
        return next((p for p in self.parameters if p.name == name), None)


@dataclass(frozen=True)
class Block:
    """Consecutive samples of a time series, in time order.

    `time` is a `datetime64[ns]` array of n increasing UTC times; `values` maps each
    parameter name to an array of n rows (`(n,)` for a scalar, `(n, *size)` for a vector):
    float64 for doubles, int64 for integers, str for strings and isotimes. Values are as
    the source has them: a fill value stays the fill number (the parameter's `fill`), so
    full-resolution answers match the source exactly; reduction skips fills and NaN.
    """

    time: np.ndarray[Any, Any]
    values: dict[str, np.ndarray[Any, Any]]

    def __len__(self) -> int:
        return len(self.time)


@dataclass(frozen=True)
class Bins:
    """A time series reduced to fixed-width bins aligned to 1970-01-01T00:00Z.

    Bin `k` covers `[k * width, (k + 1) * width)` nanoseconds; the arrays hold the bins
    `first … first + n - 1`, each with a row per bin (`(n,)` or `(n, *size)`): the number of
    valid (not fill, not NaN) samples, their sum, minimum and maximum (NaN where count is 0).
    Sums and counts combine exactly, so a coarser level is built from a finer one.
    """

    width: int
    first: int
    count: dict[str, np.ndarray[Any, Any]]
    total: dict[str, np.ndarray[Any, Any]]
    low: dict[str, np.ndarray[Any, Any]]
    high: dict[str, np.ndarray[Any, Any]]

    def __len__(self) -> int:
        return len(next(iter(self.count.values()))) if self.count else 0


@dataclass(frozen=True)
class SeriesRequest:
    """What a time-series request asks, whatever protocol asked it (HAPI, das2, REST).

    `parameters` empty means all, in the dataset's order; `width` (nanoseconds) asks for
    bins of at most that width (None: full resolution); `statistics` are the ones each
    reduced parameter yields; `extras` are validated by the source that declares them.
    """

    start: int
    stop: int
    parameters: tuple[str, ...] = ()
    width: int | None = None
    statistics: tuple[Statistic, ...] = ("mean",)
    extras: tuple[tuple[str, str], ...] = ()
