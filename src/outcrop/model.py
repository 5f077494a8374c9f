"""Value types shared by server and client. No I/O here."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

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
