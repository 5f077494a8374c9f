"""Slabs: bounded pieces that cover an array once, in C order."""

from __future__ import annotations

import itertools
import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from outcrop.formats.slabs import chunks, cuts, layout, slabs, slabs_of


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


@given(
    length=st.integers(1, 60),
    most=st.integers(1, 20),
    unit=st.integers(1, 5),
    source=st.lists(st.integers(1, 9), min_size=1, max_size=30),
)
def test_cuts_are_whole_units_and_end_where_source_chunks_end_when_they_can(
    length: int, most: int, unit: int, source: list[int]
) -> None:
    ends = sorted({e for e in itertools.accumulate(source) if e < length} | {length})
    runs = [b - a for a, b in itertools.pairwise([0, *ends])]
    sizes = cuts(length, most, unit, runs)
    assert sum(sizes) == length
    assert all(s % unit == 0 for s in sizes[:-1])
    assert all(s <= max(unit, most // unit * unit) for s in sizes)
    start = 0
    for size in sizes[:-1]:
        stop = start + size
        reachable = range(start + unit, start + max(unit, most // unit * unit) + 1, unit)
        if stop not in ends:  # only when no source end was a whole number of units away
            assert not any(c in ends for c in reachable)
        start = stop


def test_a_layout_reads_each_source_chunk_for_one_slab_only() -> None:
    # 12 steps from a source chunked by 3 steps, starting 1 step into a chunk; 6 fit
    pieces = layout((12, 4, 5), budget=120, source=[(2, 3, 3, 3, 1), None, None])
    assert pieces == ((5, 6, 1), (4,), (5,))
    assert [s[0] for s in slabs_of(pieces)] == [slice(0, 5), slice(5, 11), slice(11, 12)]


def test_a_layout_keeps_whole_output_chunks() -> None:
    assert layout((10, 4, 5), budget=120, unit=(4, 4, 5)) == ((4, 4, 2), (4,), (5,))
