"""Slabs: the bounded pieces in which encoders read a subset, in C order.

A slab spans whole trailing dimensions, a run along one dimension, and single positions
of the dimensions before it; its size stays under a budget of values whatever the shape.

Where the subset says how its positions fall into the source's chunks (the encoding key
`source_chunks`, set by `query.take`: per dimension, the lengths of the runs of positions
read from one source chunk), runs end where a source chunk ends whenever one is in reach,
so that no source chunk is decompressed for two slabs when one would do. Where the output
is chunked too (NetCDF4), runs are whole multiples of its chunk, so that no output chunk
is compressed twice.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import xarray as xr

Slab = tuple[slice, ...]
Layout = tuple[tuple[int, ...], ...]  # like dask chunks: per axis, the lengths of the pieces


def plan(shape: tuple[int, ...], budget: int) -> tuple[int, int]:
    """(axis, run): slabs take `run` positions along `axis`, one along the axes before it."""
    budget = max(1, budget)
    for axis in range(len(shape)):
        inner = math.prod(shape[axis + 1 :])
        if inner <= budget:
            return axis, max(1, min(shape[axis], budget // max(inner, 1)))
    return 0, 1  # only for shape (): one slab


def chunks(shape: tuple[int, ...], budget: int) -> tuple[int, ...]:
    """A chunk shape of at most `budget` values: whole trailing axes, a run along one."""
    if not shape:
        return ()
    axis, run = plan(shape, budget)
    return tuple(1 if i < axis else run if i == axis else n for i, n in enumerate(shape))


def layout(
    shape: tuple[int, ...],
    budget: int,
    unit: tuple[int, ...] | None = None,
    source: Sequence[Sequence[int] | None] = (),
) -> Layout:
    """Slabs of at most `budget` values as dask-style chunks.

    Args:
        shape: the array's shape.
        budget: the most values a slab may hold (exceeded only to keep a whole `unit`).
        unit: the output's chunk shape (from `chunks` with a smaller budget): runs are
            whole multiples of it along the slab's axis.
        source: per axis, the lengths of the runs of positions that come from one source
            chunk, or None where unknown; runs end at such a boundary when they can.
    """
    if not shape:
        return ()
    axis, run = plan(shape, budget)
    step = unit[axis] if unit is not None else 1
    runs = source[axis] if axis < len(source) else None
    return tuple(
        (1,) * n if i < axis else cuts(n, run, step, runs) if i == axis else (n,)
        for i, n in enumerate(shape)
    )


def cuts(
    length: int, most: int, unit: int = 1, source: Sequence[int] | None = None
) -> tuple[int, ...]:
    """Lengths of consecutive pieces covering `length` positions.

    Each is at most `most` (rounded down to a multiple of `unit`, at least one `unit`) and a
    multiple of `unit` but the last, and ends where a source run ends when such an end is
    in reach, so a piece reads each source chunk it touches whole.
    """
    unit = max(1, unit)
    most = max(unit, most // unit * unit)
    ends = np.zeros(length + 1, dtype=bool)
    if source is not None:
        ends[np.cumsum(source, dtype=np.int64)[:-1]] = True
    sizes: list[int] = []
    start = 0
    while start < length:
        stop = min(length, start + most)
        if source is not None and stop < length:
            candidates = np.arange(start + unit, stop + 1, unit)
            aligned = candidates[ends[candidates]]
            stop = int(aligned[-1]) if aligned.size else stop
        sizes.append(stop - start)
        start = stop
    return tuple(sizes)


def slabs_of(pieces: Layout) -> Iterator[Slab]:
    """The slabs of a layout, in C order."""
    per_axis = []
    for sizes in pieces:
        bounds = np.cumsum((0, *sizes)).tolist()
        per_axis.append([slice(a, b) for a, b in itertools.pairwise(bounds)])
    yield from itertools.product(*per_axis)


def slabs(
    shape: tuple[int, ...], budget: int, source: Sequence[Sequence[int] | None] = ()
) -> Iterator[Slab]:
    """Slabs of at most `budget` values each, covering `shape` once, in C order."""
    return slabs_of(layout(shape, budget, source=source))


def source_chunks(var: xr.Variable) -> tuple[tuple[int, ...] | None, ...]:
    """How a subset variable's positions fall into its source's chunks (see the module)."""
    found = var.encoding.get("source_chunks")
    if not isinstance(found, tuple) or len(found) != var.ndim:
        return (None,) * var.ndim
    return found


def read(var: xr.Variable) -> np.ndarray:
    """A variable's values, computed in this thread (no dask thread pool of its own)."""
    if var.chunks is not None:  # dask: compute here, not in dask's own thread pool
        var = var.load(scheduler="synchronous")
    return np.asarray(var.values)
