"""Source drivers, one module per kind, found through the `outcrop.drivers` entry points."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from outcrop.errors import ConfigError

if TYPE_CHECKING:
    import xarray as xr

    from outcrop.model import Block, SeriesInfo


@dataclass(frozen=True)
class Source:
    """Where a dataset's bytes are: one or more files, an optional group, an aggregation."""

    paths: tuple[Path, ...]
    group: str | None = None
    aggregate: str | None = None
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Probe:
    """What a scan records of a file, so a restart need not open it again.

    `groups` are the group paths served as datasets of their own (`id/group`); `""`, the
    root group, is among them when it holds variables or the file has no groups at all.
    `series` are those of `groups` that are time series.
    """

    title: str = ""
    groups: tuple[str, ...] = ("",)
    series: tuple[str, ...] = ()  # the groups that are time series (HAPI, das2)


class Driver(Protocol):
    """What every source driver provides."""

    name: str

    def can_open(self, path: Path) -> bool: ...

    def open(self, source: Source, stored: bool = False) -> xr.Dataset:
        """The lazy dataset; `stored=True` gives values as stored, undecoded, with the CF
        encoding (`_FillValue`, `scale_factor`, time `units` …) as attributes."""
        ...

    def probe(self, path: Path) -> Probe:
        """What a scan records of a file: its title and the groups that are datasets."""
        ...


class Series(Protocol):
    """A time series: what it holds, and its samples over a time range, streamed."""

    def info(self) -> SeriesInfo: ...

    def read(
        self,
        start: int,
        stop: int,
        parameters: Sequence[str],
        width: int | None = None,
        extras: Mapping[str, str] | None = None,
    ) -> Iterator[Block]:
        """Samples with `start <= time < stop` (ns), in time order, of `parameters` (names
        from `info()`, in that order). `width` (ns) is a hint for a source that reduces
        itself (`info().reduces`): it may return fewer samples, no sparser than `width`.
        Raises `BadQuery` naming the parameter for bad `extras`, before any work; a
        failure after the first block raises `UpstreamFailed` from the iterator."""
        ...


@cache
def drivers() -> dict[str, Driver]:
    """Every installed driver, by name; built-ins register like third-party plugins."""
    found: dict[str, Driver] = {}
    for ep in entry_points(group="outcrop.drivers"):
        found[ep.name] = ep.load()()
    if "grid" not in found:  # running from a source tree without installed metadata
        from outcrop.drivers.grid import GridDriver

        found["grid"] = GridDriver()
    return found


def driver(name: str) -> Driver:
    known = drivers()
    if name not in known:
        raise ConfigError(
            f"unknown driver {name!r}; installed drivers are {', '.join(sorted(known))}",
            parameter="driver",
        )
    return known[name]


def series_reader(name: str) -> Callable[[Source], Series | None] | None:
    """The driver's own `series(source) -> Series | None` when it reads time series itself
    (as the reader-program driver does); None otherwise: the time series of grid datasets
    are found in the opened dataset (`drivers.timeseries.grid_series`)."""
    found: Callable[[Source], Series | None] | None = getattr(driver(name), "series", None)
    return found


def stored_form(ds: xr.Dataset) -> xr.Dataset:
    """A decoded dataset in the form `to_netcdf` would store it (lazily): packed values,
    fill values and time numbers, with the CF encoding as attributes."""
    import xarray as xr
    from xarray import conventions

    variables, attrs = conventions.cf_encoder(*conventions.encode_dataset_coordinates(ds))
    out = xr.Dataset(variables, attrs=attrs)
    return out.set_coords([n for n in ds.coords if n in out.variables])
