"""Selections read straight from an HDF5 file's stored chunks, decompressed in parallel.

libnetcdf and h5py decompress one chunk at a time under one lock (libnetcdf is not
thread-safe), so a whole-variable read runs at the speed of one core's zlib. Here the
chunks a slab needs are read with `pread` and decoded with numcodecs in a thread pool
(zlib releases the GIL), each worker copying its chunk's selected positions into the slab,
and the next slab's chunks are already being decoded while the caller sends this one.

The values are the stored ones (no CF decoding): what `decode_cf=False` reads.
"""

from __future__ import annotations

import itertools
import math
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from typing import Any

import numpy as np

from outcrop.errors import SourceError
from outcrop.formats import slabs as slabbing
from outcrop.formats.zarr import numcodec
from outcrop.model import StoredChunks

Slab = tuple[slice, ...]
Piece = tuple[int, slice, slice]  # chunk index, where in the slab, where in the chunk


class StoredReader:
    """Reads selections of one chunked variable from its file descriptor `fd`."""

    def __init__(self, stored: StoredChunks, fd: int, pool: Executor) -> None:
        self.stored = stored
        self.fd = fd
        self.pool = pool
        self.dtype = np.dtype(stored.dtype)
        bound = math.prod(stored.chunks) * self.dtype.itemsize + 4  # + a fletcher32 sum
        filters = list(stored.filters)
        # A shuffle applied first on write is undone while copying into the slab, one
        # byte plane at a time (numpy copies let go of the GIL; numcodecs' does not).
        self._shuffled = bool(filters) and filters[0][0] == "shuffle" and self.dtype.itemsize > 1
        if self._shuffled:
            filters = filters[1:]
        self._decoders = [_decoder(c, p, bound) for c, p in reversed(filters)]

    def slabs(
        self, index: tuple[slice, ...], budget: int, ahead: int = 1
    ) -> Iterator[np.ndarray[Any, Any]]:
        """The values of `index` (steps > 0) in C-order slabs of at most about `budget`
        values; `ahead` more slabs are decoded while the caller holds one."""
        shape, chunks = self.stored.shape, self.stored.chunks
        positions = [np.arange(*s.indices(n)) for s, n in zip(index, shape, strict=True)]
        runs = [_runs(p // c) for p, c in zip(positions, chunks, strict=True)]
        out_shape = tuple(len(p) for p in positions)
        if 0 in out_shape:
            return
        pending: deque[tuple[np.ndarray[Any, Any], list[Future[None]]]] = deque()
        todo = slabbing.slabs(out_shape, budget, source=runs)
        try:
            for slab in todo:
                pending.append(self._start(slab, positions))
                if len(pending) > ahead:
                    yield self._finish(pending.popleft())
            while pending:
                yield self._finish(pending.popleft())
        finally:  # the caller stopped early: let no worker write into a dropped slab
            for _, futures in pending:
                for future in futures:
                    future.cancel()

    def _start(
        self, slab: Slab, positions: list[np.ndarray[Any, Any]]
    ) -> tuple[np.ndarray[Any, Any], list[Future[None]]]:
        """Allocate a slab and queue the decoding of every chunk it touches."""
        out = np.empty(tuple(s.stop - s.start for s in slab), dtype=self.dtype)
        per_axis = [
            _pieces(p[s], c) for p, s, c in zip(positions, slab, self.stored.chunks, strict=True)
        ]
        futures = [
            self.pool.submit(self._fill, out, pieces) for pieces in itertools.product(*per_axis)
        ]
        return out, futures

    @staticmethod
    def _finish(item: tuple[np.ndarray[Any, Any], list[Future[None]]]) -> np.ndarray[Any, Any]:
        out, futures = item
        for future in futures:
            future.result()
        return out

    def _fill(self, out: np.ndarray[Any, Any], pieces: tuple[Piece, ...]) -> None:
        """Decode one chunk and copy its selected positions into `out`."""
        coords = tuple(p[0] for p in pieces)
        where = tuple(p[1] for p in pieces)
        what = tuple(p[2] for p in pieces)
        data = self._decoded(coords)
        if data is None:
            out[where] = np.frombuffer(self.stored.fill, dtype=self.dtype)[0]
        elif self._shuffled:
            size = self.dtype.itemsize
            planes = np.frombuffer(data, np.uint8, count=size * math.prod(self.stored.chunks))
            planes = planes.reshape(size, *self.stored.chunks)
            target = np.moveaxis(out.view(np.uint8).reshape(*out.shape, size), -1, 0)
            for k in range(size):
                target[k][where] = planes[k][what]
        else:
            out[where] = self._values(data)[what]

    def _decoded(self, coords: tuple[int, ...]) -> Any:
        """A stored chunk's bytes with every filter undone but a leading shuffle; None
        where the chunk was never written."""
        raw = self.stored.get(coords)
        if raw is None:
            return None
        data: Any = os.pread(self.fd, raw.size, raw.offset)
        if len(data) != raw.size:
            raise SourceError(f"{raw.path.name}: a stored chunk is shorter than its index says")
        for decode in self._decoders:
            data = decode(data)
        return data

    def _values(self, data: Any) -> np.ndarray[Any, Any]:
        count = math.prod(self.stored.chunks)
        return np.frombuffer(data, dtype=self.dtype, count=count).reshape(self.stored.chunks)


def _decoder(codec: str, param: int, bound: int) -> Callable[[Any], Any]:
    """How to undo one filter. zlib streams are inflated by libdeflate where it is
    installed (the `deflate` package): twice as fast as zlib and, unlike numcodecs' and
    zlib-ng's bindings, it lets go of the GIL, so the pool's threads inflate in parallel."""
    if codec == "zlib":
        try:
            import deflate
        except ImportError:
            pass
        else:
            return lambda data: deflate.zlib_decompress(data, bound)
    decode: Callable[[Any], Any] = numcodec(codec, param).decode
    return decode


def _runs(chunk_of: np.ndarray[Any, Any]) -> tuple[int, ...]:
    """Lengths of the runs of consecutive positions that fall in one chunk."""
    if not chunk_of.size:
        return ()
    cuts = np.flatnonzero(np.diff(chunk_of)) + 1
    return tuple(int(n) for n in np.diff(np.concatenate(([0], cuts, [chunk_of.size]))))


def _pieces(positions: np.ndarray[Any, Any], chunk: int) -> list[Piece]:
    """Along one axis: (chunk index, where in the slab, where in the chunk) for each chunk
    the slab's `positions` (ascending, evenly spaced) touch."""
    if positions.size == 0:
        return []
    step = int(positions[1] - positions[0]) if positions.size > 1 else 1
    owner = positions // chunk
    out = []
    start = 0
    for length in _runs(owner):
        first = int(positions[start])
        last = int(positions[start + length - 1])
        base = int(owner[start]) * chunk
        out.append(
            (
                int(owner[start]),
                slice(start, start + length),
                slice(first - base, last - base + 1, step),
            )
        )
        start += length
    return out
