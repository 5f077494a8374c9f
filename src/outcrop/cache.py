"""Caches of bytes: a memory LRU bounded by total size, and a disk store shared by
processes. Keys carry the dataset version, so a changed dataset is never answered from a
cache.

Both count their hits, misses and (memory) evictions and size as Prometheus metrics
(`/metrics`, docs/operations.md). These are process-wide, labelled by cache name, and
cheap: a counter increment is an add under a lock (a write to a shared memory map when
`PROMETHEUS_MULTIPROC_DIR` is set), done once per lookup.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Hashable
from pathlib import Path

from prometheus_client import Counter, Gauge

HITS = Counter("outcrop_cache_hits_total", "Cache lookups answered from the cache.", ["cache"])
MISSES = Counter("outcrop_cache_misses_total", "Cache lookups not in the cache.", ["cache"])
EVICTIONS = Counter(
    "outcrop_cache_evictions_total", "Entries dropped to stay within the budget.", ["cache"]
)
# Summed over the live worker processes: each holds its own memory cache.
MEMORY_BYTES = Gauge(
    "outcrop_memory_cache_bytes", "Bytes held by the memory cache.", multiprocess_mode="livesum"
)
MEMORY_ENTRIES = Gauge(
    "outcrop_memory_cache_entries", "Entries in the memory cache.", multiprocess_mode="livesum"
)


class ByteLRU:
    """Least-recently-used bytes, at most `budget` bytes in all."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.size = 0
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._hits, self._misses = HITS.labels("memory"), MISSES.labels("memory")
        self._evictions = EVICTIONS.labels("memory")

    def get(self, key: Hashable) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
        (self._misses if value is None else self._hits).inc()
        return value

    def set(self, key: Hashable, value: bytes) -> None:
        if len(value) > self.budget:
            return
        before, count = self.size, len(self._items)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.size -= len(old)
            self._items[key] = value
            self.size += len(value)
            while self.size > self.budget:
                _, dropped = self._items.popitem(last=False)
                self.size -= len(dropped)
                self._evictions.inc()
            size, entries = self.size, len(self._items)
        MEMORY_BYTES.inc(size - before)
        MEMORY_ENTRIES.inc(entries - count)

    def __len__(self) -> int:
        return len(self._items)


class DiskStore:
    """Bytes on disk, at most about `size_bytes` in all, least recently used evicted first;
    shared safely by every process that opens the same directory (diskcache over SQLite in
    WAL mode, one connection per thread and process).

    Writes are atomic: a value below 32 KB is written inside the SQLite transaction that
    records it; a larger one is first written to a new file of its own, and only then the
    transaction commits the row naming it (replacing a key removes its old file after the
    commit). A reader therefore sees the old value or the new one, never part of one, and a
    process dying mid-write leaves at most an orphan file, never a half value.

    `statistics=True` counts hits and misses (diskcache then writes on every lookup; the
    setting is shared by every process using the directory). A lookup always records the
    access time, which least-recently-used eviction needs.
    """

    def __init__(self, directory: Path, size_bytes: int, *, statistics: bool = False) -> None:
        import diskcache

        self.directory = directory
        self._cache = diskcache.Cache(
            str(directory),
            size_limit=size_bytes,
            eviction_policy="least-recently-used",
            statistics=statistics,
            # SQLite's page cache per connection and thread: 1 MB, not diskcache's 32 MB.
            # Values are read through SQLite's mmap, so the cache only holds the index;
            # the default cost ~40 MB of resident memory in a background series build.
            # Passed on every open: diskcache stores it in the cache's own database.
            sqlite_cache_size=2**8,
        )
        # Metrics name the store by its folder: `series`, `cutouts`.
        self._hits, self._misses = HITS.labels(directory.name), MISSES.labels(directory.name)

    def get(self, key: str) -> bytes | None:
        value = self._cache.get(key, retry=True)
        found = value if isinstance(value, bytes) else None
        (self._misses if found is None else self._hits).inc()
        return found

    def get_with_file(self, key: str, count: bool = True) -> tuple[bytes, str | None] | None:
        """Like `get`, with the path of the file holding the value (None for a value kept
        inside the index): callers may read that file directly until it is gone."""
        handle = self._cache.get(key, read=True, retry=True)
        if count:
            (self._misses if handle is None else self._hits).inc()
        if handle is None:
            return None
        if isinstance(handle, bytes):  # small values live in the index itself
            return handle, None
        with handle:
            value = handle.read()
            name = getattr(handle, "name", None)
        return bytes(value), name if isinstance(name, str) else None

    def count_hit(self) -> None:
        """Count a hit answered from a value's file without a lookup (`get_with_file`)."""
        self._hits.inc()

    def set(self, key: str, value: bytes) -> None:
        self._cache.set(key, bytes(value), retry=True)

    def clear(self, prefix: str | None = None) -> int:
        """Remove every entry, or those whose key starts with `prefix` (e.g. one dataset's
        `"{id}@"`); return how many were removed."""
        if prefix is None:
            return int(self._cache.clear(retry=True))
        # Keys come in SQLite's binary order, which is code-point order for text: the
        # matches are one run, found by scanning from the first key.
        keys = itertools.takewhile(
            lambda k: not isinstance(k, str) or k < prefix or k.startswith(prefix),
            self._cache.iterkeys(),
        )
        matching = [k for k in keys if isinstance(k, str) and k.startswith(prefix)]
        return sum(bool(self._cache.delete(k, retry=True)) for k in matching)

    def stats(self) -> dict[str, int | None]:
        """Entries, bytes used (SQLite pages and value files), the size limit, and hits and
        misses since counting was enabled (None when it is not)."""
        counting = bool(self._cache.statistics)
        hits, misses = self._cache.stats(enable=counting) if counting else (None, None)
        return {
            "entries": len(self._cache),
            "bytes": int(self._cache.volume()),
            "size_limit": int(self._cache.size_limit),
            "hits": hits,
            "misses": misses,
        }

    def close(self) -> None:
        self._cache.close()

    def __enter__(self) -> DiskStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
