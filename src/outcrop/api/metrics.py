"""`/metrics` for Prometheus: requests, latency and bytes by route, caches, and jobs.

Request metrics are labelled by route template (`/api/datasets/{ds_id:path}`), never by
raw path, and the fast paths by their prefix (`/zarr/{path}`), so the number of series
stays bounded whatever clients ask for; they are counted in `outcrop.api.counters`, the
cache counters in `outcrop.cache`. What is shared between processes (disk caches, job
records, the queue) is read when scraped.

With several worker processes, `PROMETHEUS_MULTIPROC_DIR` names a folder where every
process writes its values (prometheus-client's multiprocess mode, chosen when the
library is imported); a scrape, answered by any one worker, sums them all.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from outcrop.log import logger
from outcrop.settings import Settings

log = logger(__name__)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
DISK_CACHES = ("series", "cutouts", "chunks")  # folders of data_dir holding a DiskStore
router = APIRouter()


@router.get("/metrics", tags=["service"])
async def metrics(request: Request) -> Response:
    """Prometheus text format: requests, latency, bytes, caches, jobs (docs/operations.md)."""
    from outcrop.api.app import run_blocking

    registry: CollectorRegistry = request.app.state.metrics
    body = await run_blocking(request, generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def registry_for(
    settings: Settings, engine: Callable[[], Any], queue_depth: Callable[[], int] | None
) -> CollectorRegistry:
    """What one app's `/metrics` shows: this process's metrics (or every worker's, in
    multiprocess mode) and the shared state read at scrape time; `engine` gives the
    catalog database's engine (called at the first scrape, not before)."""
    registry = CollectorRegistry(auto_describe=False)
    folder = os.environ.get(MULTIPROC_ENV)
    if folder:
        from prometheus_client.multiprocess import MultiProcessCollector

        MultiProcessCollector(registry, path=folder)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Forward(REGISTRY))
    registry.register(SharedState(settings, engine, queue_depth))
    return registry


class _Forward(Collector):
    """The process-wide registry's metrics inside an app's own registry."""

    def __init__(self, source: CollectorRegistry) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        return iter(self.source.collect())

    def describe(self) -> list[Metric]:
        return []  # names are not checked against the app's own collectors


class SharedState(Collector):
    """Disk cache sizes, jobs by state and queue depth: state every process shares, read
    when scraped. A part that cannot be read is left out (and logged), so a scrape still
    answers while the database is down; `/readyz` says what is wrong."""

    def __init__(
        self, settings: Settings, engine: Callable[[], Any], queue_depth: Callable[[], int] | None
    ) -> None:
        self.settings, self.engine, self.queue_depth = settings, engine, queue_depth

    def describe(self) -> list[Metric]:
        return []  # no scrape (and no database query) at registration

    def collect(self) -> Iterator[Metric]:
        yield from self._guarded("disk_caches", self._disk_caches)
        yield from self._guarded("jobs", self._jobs)
        if self.queue_depth is not None:
            yield from self._guarded("queue", self._queue)

    def _guarded(self, part: str, collect: Callable[[], list[Metric]]) -> list[Metric]:
        try:
            return collect()
        except store_errors() as exc:
            log.warning("metrics_unavailable", part=part, error=str(exc))
            return []

    def _disk_caches(self) -> list[Metric]:
        used = GaugeMetricFamily(
            "outcrop_disk_cache_bytes", "Bytes used by a disk cache.", labels=["cache"]
        )
        entries = GaugeMetricFamily(
            "outcrop_disk_cache_entries", "Entries in a disk cache.", labels=["cache"]
        )
        limit = GaugeMetricFamily(
            "outcrop_disk_cache_limit_bytes", "Size limit of a disk cache.", labels=["cache"]
        )
        for name in DISK_CACHES:
            stats = disk_cache_stats(self.settings.data_dir / name)
            if stats is not None:
                used.add_metric([name], stats[0])
                entries.add_metric([name], stats[1])
                limit.add_metric([name], stats[2])
        return [used, entries, limit]

    def _jobs(self) -> list[Metric]:
        from sqlalchemy import func, select

        from outcrop.db import JobRow

        family = GaugeMetricFamily("outcrop_jobs", "Job records by state.", labels=["state"])
        counts = dict.fromkeys(("queued", "running", "finished", "failed", "cancelled"), 0)
        with self.engine().connect() as connection:
            query = select(JobRow.status, func.count()).group_by(JobRow.status)
            counts.update({status: int(n) for status, n in connection.execute(query)})
        for state, count in counts.items():
            family.add_metric([state], count)
        return [family]

    def _queue(self) -> list[Metric]:
        assert self.queue_depth is not None
        depth = GaugeMetricFamily("outcrop_job_queue_depth", "Messages waiting in the job queue.")
        depth.add_metric([], self.queue_depth())
        return [depth]


def disk_cache_stats(folder: Path) -> tuple[int, int, int] | None:
    """Bytes used, entries and size limit of the diskcache in `folder`, read from its
    SQLite index without opening (or creating) a cache; None when there is none yet."""
    index = folder / "cache.db"
    if not index.is_file():
        return None
    with sqlite3.connect(f"file:{index}?mode=ro", uri=True, timeout=5) as db:
        settings = dict(db.execute("SELECT key, value FROM Settings").fetchall())
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
    # diskcache's own `volume()`: the SQLite pages plus the sizes of the values' files.
    used = int(pages) * int(page_size) + int(settings.get("size", 0))
    return used, int(settings.get("count", 0)), int(settings.get("size_limit", 0))


def store_errors() -> tuple[type[BaseException], ...]:
    """Errors of an unreachable database or queue (Redis' when it is installed)."""
    from sqlalchemy.exc import SQLAlchemyError

    found: list[type[BaseException]] = [SQLAlchemyError, sqlite3.Error, OSError]
    try:
        from redis.exceptions import RedisError

        found.append(RedisError)
    except ImportError:
        pass
    return tuple(found)
