"""Slabs: the bounded pieces in which encoders read a subset, in C order.

A slab spans whole trailing dimensions, a run along one dimension, and single positions
of the dimensions before it; its size stays under a budget of values whatever the shape.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import xarray as xr

Slab = tuple[slice, ...]


def plan(shape: tuple[int, ...], budget: int) -> tuple[int, int]:
    """(axis, run): slabs take `run` positions along `axis`, one along the axes before it."""
    budget = max(1, budget)
    for axis in range(len(shape)):
        inner = math.prod(shape[axis + 1 :])
        if inner <= budget:
            return axis, max(1, min(shape[axis], budget // max(inner, 1)))
    return 0, 1  # only for shape (): one slab


def slabs(shape: tuple[int, ...], budget: int) -> Iterator[Slab]:
    """Slabs of at most `budget` values each, covering `shape` once, in C order."""
    if not shape:
        yield ()
        return
    axis, run = plan(shape, budget)
    rest = tuple(slice(0, n) for n in shape[axis + 1 :])
    for lead in np.ndindex(*shape[:axis]):
        head = tuple(slice(i, i + 1) for i in lead)
        for start in range(0, shape[axis], run):
            yield (*head, slice(start, min(start + run, shape[axis])), *rest)


def chunks(shape: tuple[int, ...], budget: int) -> tuple[int, ...]:
    """Dask chunk sizes that cut an array into the same slabs as `slabs`."""
    if not shape:
        return ()
    axis, run = plan(shape, budget)
    return tuple(1 if i < axis else run if i == axis else n for i, n in enumerate(shape))


def read(var: xr.Variable) -> np.ndarray:
    """A variable's values, computed in this thread (no dask thread pool of its own)."""
    if var.chunks is not None:  # dask: compute here, not in dask's own thread pool
        var = var.load(scheduler="synchronous")
    return np.asarray(var.values)
