"""The job queue: huey on SQLite under `data_dir/jobs` (embedded, consumed by threads of
`outcrop serve`) or on Redis (`queue_url`, consumed by `outcrop worker` processes).

Huey retries a task that raised, but not one whose process was killed: a message taken off
the queue by a worker that dies is gone. So the job record carries a lease (`worker`,
`heartbeat`); every consumer runs a checker thread that re-queues jobs whose lease ran
out, and queued jobs whose message may have been lost. Running a job twice is harmless:
a worker must first claim the queued record, which only one can do.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from outcrop.catalog import Catalog
from outcrop.dbfile import now
from outcrop.jobs.run import Runner
from outcrop.log import logger
from outcrop.settings import Settings

if TYPE_CHECKING:
    from huey import Huey

    from outcrop.jobs.store import JobStore

log = logger(__name__)
TASK = "outcrop.run_job"
QUEUE_NAME = "outcrop-jobs"
CLEAN_EVERY_S = 3600.0
REQUEUE_FACTOR = 20  # a queued job waiting this many leases gets a second message
# Backends huey tries to import whatever the queue (redis, psycopg: ~15 MB of memory in
# every server process); imported only when the settings name a Redis queue.
OPTIONAL_BACKENDS = ("redis", "psycopg", "gevent", "cysqlite")


class Stoppable(Protocol):
    def stop(self) -> None: ...


@dataclass
class Queue:
    """A huey instance with the job task registered; `runner` set where jobs are run."""

    huey: Huey
    task: Any = None
    runner: Runner | None = None

    def execute(self, job_id: str) -> None:
        if self.runner is None:
            raise RuntimeError("this process enqueues jobs but runs none")
        self.runner.run(job_id)


_queues: dict[str, Queue] = {}
_import_lock = threading.Lock()
_queues_lock = threading.Lock()


def queue_path(settings: Settings) -> Path:
    """The embedded queue: this node's own (jobs_dir may be shared by several)."""
    return settings.data_dir / "jobs" / "queue.sqlite"


def import_huey(redis: bool = False) -> None:
    """Import huey (and its consumer) without the optional backends its modules try to
    import (OPTIONAL_BACKENDS), unless one is already imported; `redis` imports redis
    and gives it to huey, even when huey was imported before without it."""
    with _import_lock:
        if "huey.consumer" not in sys.modules:
            blocked = [m for m in OPTIONAL_BACKENDS if m not in sys.modules]
            if redis:
                blocked.remove("redis")
            for name in blocked:
                sys.modules[name] = None  # type: ignore[assignment]  # import raises ImportError
            try:
                import huey.consumer  # noqa: F401
            finally:
                for name in blocked:
                    if sys.modules.get(name, False) is None:
                        del sys.modules[name]
    if redis:
        _give_redis_to_huey()


def _give_redis_to_huey() -> None:
    """huey's Redis storage names redis's classes as its module's globals (and the client
    class as a class attribute), None when huey was imported without redis: set them."""
    import huey.storage
    import redis
    import redis.exceptions

    if huey.storage.Redis is None:
        huey.storage.ConnectionPool, huey.storage.Redis = redis.ConnectionPool, redis.Redis
        huey.storage.ConnectionError = redis.exceptions.ConnectionError
        huey.storage.TimeoutError = redis.exceptions.TimeoutError
        huey.storage.RedisStorage.redis_client = redis.Redis


def make_huey(settings: Settings) -> Huey:
    import_huey(redis=bool(settings.queue_url))
    from huey import RedisHuey, SqliteHuey

    if settings.queue_url:
        return RedisHuey(QUEUE_NAME, url=settings.queue_url, results=False)
    queue_path(settings).parent.mkdir(parents=True, exist_ok=True)
    return SqliteHuey(QUEUE_NAME, filename=str(queue_path(settings)), results=False)


def queue_for(settings: Settings) -> Queue:
    """This process's queue for the settings' backend (one per backend)."""
    key = settings.queue_url or str(queue_path(settings))
    with _queues_lock:
        if key not in _queues:
            queue = Queue(make_huey(settings))
            queue.task = queue.huey.task(name=TASK, retries=0)(queue.execute)
            _queues[key] = queue
        return _queues[key]


def enqueue(settings: Settings, job_id: str) -> None:
    queue_for(settings).task(job_id)


class Checker:
    """A thread re-queueing jobs whose lease ran out, and cleaning expired jobs hourly."""

    def __init__(self, settings: Settings, store: JobStore, clean: Any) -> None:
        self.settings, self.store, self.clean = settings, store, clean
        self.stopped = threading.Event()
        self.interval = min(settings.job_lease_s / 2, 30.0)
        self._thread = threading.Thread(target=self._loop, name="job-checker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self._thread.join()

    def _loop(self) -> None:
        last_clean = 0.0
        elapsed = 0.0
        while True:
            self.check()
            if elapsed - last_clean >= CLEAN_EVERY_S or last_clean == 0.0:
                self.clean(now())
                last_clean = elapsed or 1e-9
            if self.stopped.wait(self.interval):
                return
            elapsed += self.interval

    def check(self) -> int:
        """Re-queue (or, past MAX_ATTEMPTS, fail) stale jobs; how many were re-queued."""
        from outcrop.jobs.store import MAX_ATTEMPTS

        lease = timedelta(seconds=self.settings.job_lease_s)
        requeued = 0
        for row in self.store.stale(lease, lease * REQUEUE_FACTOR):
            if row.status == "running" and row.attempts >= MAX_ATTEMPTS:
                message = f"its worker died {row.attempts} times while running it"
                expires = now() + timedelta(hours=self.settings.job_expiry_hours)
                self.store.end(row.id, row.worker, "failed", expires, error=message, step="failed")
                log.warning("job_failed", job=row.id, error=message)
            elif self.store.requeue(row):
                enqueue(self.settings, row.id)
                log.warning("job_requeued", job=row.id, worker=row.worker, status=row.status)
                requeued += 1
        return requeued


@cache
def embedded_consumer() -> type[Any]:
    """huey's consumer class without its signal handlers: the host process (uvicorn, or
    `outcrop worker`) owns the signals and calls `stop()` (made when first needed, so
    that importing this module does not import huey)."""
    import_huey()
    from huey.consumer import Consumer

    class EmbeddedConsumer(Consumer):  # type: ignore[misc]
        def _set_signal_handlers(self) -> None:
            """No handlers: see `embedded_consumer`."""

    return EmbeddedConsumer


@dataclass
class JobConsumer:
    """Worker threads running jobs, and the checker; `stop()` re-queues running jobs."""

    consumer: Any  # an `embedded_consumer()`
    checker: Checker
    runner: Runner
    catalog: Catalog
    stopped: bool = field(default=False)

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.runner.stopping.set()
        self.checker.stop()
        self.consumer.stop(graceful=True)
        self.catalog.close()
        if self.runner.settings.dask_scheduler:
            from outcrop.jobs.cluster import close_clients

            close_clients()


def start_consumer(settings: Settings, threads: int | None = None) -> Stoppable:
    """Run jobs from the settings' queue in `threads` threads (default `job_workers`) of
    this process, until `stop()`."""
    from outcrop.jobs.service import clean_jobs
    from outcrop.jobs.store import JobStore

    catalog = Catalog(settings)
    catalog.load()
    queue = queue_for(settings)
    runner = Runner(settings, catalog, threading.Event())
    queue.runner = runner
    store = JobStore(catalog.engine)
    checker = Checker(settings, store, lambda when: clean_jobs(settings, store, when))
    count = settings.job_workers if threads is None else threads
    consumer = embedded_consumer()(
        queue.huey, workers=max(count, 1), periodic=False, worker_type="thread", max_delay=1.0
    )
    consumer.start()
    checker.start()
    log.info("job_consumer_started", threads=count, backend=settings.queue_url or "sqlite")
    return JobConsumer(consumer, checker, runner, catalog)
