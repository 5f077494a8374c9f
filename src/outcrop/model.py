"""Value types shared by server and client. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

SelectorKind = Literal["range", "nearest"]


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
    """The stored chunks of one HDF5 variable, when numcodecs can decode them as they are."""

    path: Path
    dtype: str
    chunks: tuple[int, ...]
    shuffle: bool
    deflate_level: int | None
    index: dict[tuple[int, ...], tuple[int, int]]

    def get(self, coords: tuple[int, ...]) -> RawChunk | None:
        hit = self.index.get(coords)
        return None if hit is None else RawChunk(self.path, hit[0], hit[1])
