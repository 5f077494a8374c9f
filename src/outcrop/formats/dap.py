"""What DAP2 (`formats/dap2.py`) and DAP4 (`formats/dap4.py`) share: the constraint model
and the source of values.

A DAP dataset is the *stored* form of a dataset (`xarray.Dataset` opened with
`decode_cf=False`, or encoded as `to_netcdf` would): packed integers, `_FillValue`,
`scale_factor`, time `units` and `calendar` stay attributes, so each client decodes them
as it decodes the local file. Formats read only metadata from that dataset; values come
from a `Values` source, slab by slab, so no response holds a whole variable in memory.

A constraint is a tuple of `Projection`s, each one variable (or one member of a DAP2
Grid) with one `Hyperslab` per dimension. An empty tuple means the whole dataset.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from outcrop.errors import BadQuery

if TYPE_CHECKING:
    import xarray as xr


@dataclass(frozen=True)
class Hyperslab:
    """`[start:stride:stop]` along one dimension; `stop` is inclusive, as DAP writes it."""

    start: int
    stride: int
    stop: int

    @property
    def count(self) -> int:
        return (self.stop - self.start) // self.stride + 1

    def as_slice(self) -> slice:
        return slice(self.start, self.stop + 1, self.stride)

    @classmethod
    def whole(cls, size: int) -> Hyperslab:
        """Every position of a dimension of `size` (size 0 gives count 0)."""
        return cls(0, 1, size - 1)


@dataclass(frozen=True)
class Projection:
    """One requested variable.

    Attributes:
        name: the variable's name in the dataset.
        member: for a DAP2 Grid request `temp.lat`, the member asked for (`"lat"`), or
            `name` itself for `temp.temp` (the array without its maps); None means the
            whole variable (a Grid with its maps, or an Array).
        slabs: one hyperslab per dimension of the variable, in its dimension order.
    """

    name: str
    slabs: tuple[Hyperslab, ...]
    member: str | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(s.count for s in self.slabs)

    def index(self) -> tuple[slice, ...]:
        return tuple(s.as_slice() for s in self.slabs)


Constraint = tuple[Projection, ...]


class Values(Protocol):
    """Where a DAP response's values come from (the pipeline provides it)."""

    def slabs(self, name: str, index: tuple[slice, ...]) -> Iterator[np.ndarray[Any, Any]]:
        """The values of `ds[name][index]` (stored form, the variable's own dtype), as
        arrays whose flattened concatenation is the selection in C order; each holds a
        bounded number of values. Blocking (disk reads, decompression)."""
        ...


def whole(ds: xr.Dataset, name: str) -> Projection:
    """The whole of variable `name`."""
    var = ds.variables[name]
    return Projection(name, tuple(Hyperslab.whole(n) for n in var.shape))


def hyperslabs(
    name: str,
    dims: Sequence[tuple[str, int]],
    given: Sequence[tuple[int, int, int | None]],
    parameter: str,
) -> tuple[Hyperslab, ...]:
    """Check a constraint's `[start:stride:stop]` list against a variable's dimensions.

    Args:
        name: the variable, as the error messages name it.
        dims: (name, size) of each dimension the client sees.
        given: (start, stride, stop) per dimension, stop inclusive or None for "to the
            end"; an empty list means every position of every dimension.
        parameter: the query parameter the constraint came in, for the error.

    Raises:
        BadQuery: wrong number of hyperslabs, a start or stop outside the dimension, a
            stop before its start, or a stride below 1; the message names the dimension
            and what it allows.
    """
    if not given:
        return tuple(Hyperslab.whole(size) for _, size in dims)
    if len(given) != len(dims):
        shape = "".join(f"[{dim} = {size}]" for dim, size in dims) or " (a scalar)"
        raise BadQuery(
            f"{name}{shape} has {len(dims)} dimension(s) but the constraint gives "
            f"{len(given)} hyperslab(s); give one [start:stride:stop] per dimension, or none",
            parameter=parameter,
        )
    return tuple(
        _hyperslab(name, dim, size, part, parameter)
        for (dim, size), part in zip(dims, given, strict=True)
    )


def _hyperslab(
    name: str, dim: str, size: int, part: tuple[int, int, int | None], parameter: str
) -> Hyperslab:
    start, stride, stop = part
    stop = size - 1 if stop is None else stop
    where = f"{name}: dimension {dim!r} has {size} positions (0 to {size - 1})"
    if stride < 1:
        raise BadQuery(f"{where}; the stride {stride} must be 1 or more", parameter=parameter)
    if not 0 <= start < size or not 0 <= stop < size:
        raise BadQuery(f"{where}; [{start}:{stride}:{stop}] is outside it", parameter=parameter)
    if stop < start:
        raise BadQuery(
            f"{where}; the stop {stop} is before the start {start} (the stop is inclusive)",
            parameter=parameter,
        )
    return Hyperslab(start, stride, stop)
