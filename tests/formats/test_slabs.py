"""Slabs: bounded pieces that cover an array once, in C order."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from outcrop.formats.slabs import chunks, slabs


@given(
    shape=st.lists(st.integers(1, 7), min_size=0, max_size=4).map(tuple),
    budget=st.integers(1, 400),
)
def test_slabs_cover_every_value_once_in_c_order_within_the_budget(
    shape: tuple[int, ...], budget: int
) -> None:
    values = np.arange(math.prod(shape)).reshape(shape)
    seen = [values[slab].ravel() for slab in slabs(shape, budget)]
    np.testing.assert_array_equal(np.concatenate(seen), values.ravel())
    assert all(part.size <= budget for part in seen)


@given(
    shape=st.lists(st.integers(1, 9), min_size=1, max_size=4).map(tuple),
    budget=st.integers(1, 500),
)
def test_chunks_cut_along_the_same_lines_as_slabs(shape: tuple[int, ...], budget: int) -> None:
    sizes = chunks(shape, budget)
    first = next(iter(slabs(shape, budget)))
    assert tuple(s.stop - s.start for s in first) == sizes
    assert math.prod(sizes) <= budget
