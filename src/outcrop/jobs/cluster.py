"""Jobs' array work on a Dask cluster, when `dask_scheduler` is set.

Each dataset of a job is one task: a cluster worker opens it from the catalog, applies
the operations and writes the output file, so the files of one job are processed in
parallel on as many cluster workers as there are. The job's own worker (an `outcrop
worker`, or a thread of `outcrop serve`) keeps everything else: the lease, progress,
limits, the zip. Cluster workers must therefore see the same served folders, data folder
and catalog database (one machine, or shared storage; `docs/jobs.md`).

Whole files, not array graphs, travel to the cluster: the grid driver reads libnetcdf
under a process-local lock, which cannot be pickled, and a per-file task needs no
knowledge of Dask in the operations.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from outcrop.errors import UpstreamFailed
from outcrop.log import logger
from outcrop.settings import Settings

log = logger(__name__)
EVENT_TOPIC = "outcrop-jobs"  # each file done is also logged to the cluster under this topic
CONNECT_TIMEOUT_S = 10
POLL_S = 0.05
_clients: dict[str, Any] = {}
_catalogs: dict[str, Any] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class FileTask:
    """One dataset of a job, as sent to a cluster worker (plain values: picklable)."""

    settings_json: str
    ds_id: str
    operations: list[Any]  # the job's normalised operations, parsed again on the worker
    uploads: dict[str, str]  # the client's upload name -> stored path
    target: str
    fmt: str


@dataclass(frozen=True)
class FileResult:
    ds_id: str
    error: str | None  # None: the output file was written


def client(settings: Settings) -> Any:
    """This process's client of the configured scheduler (made once, then shared)."""
    address = settings.dask_scheduler
    assert address
    with _lock:
        found = _clients.get(address)
        if found is not None and found.status == "running":
            return found
        try:
            from distributed import Client
        except ImportError as exc:  # pragma: no cover - the extra is part of `all`
            raise UpstreamFailed(
                "dask_scheduler is set but the `distributed` package is not installed; "
                "install outcrop[dask]"
            ) from exc
        try:
            made = Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)  # type: ignore[no-untyped-call]
        except (OSError, TimeoutError) as exc:
            raise UpstreamFailed(
                f"cannot reach the Dask scheduler at dask_scheduler = {address}: {exc}; "
                "start it or unset OUTCROP_DASK_SCHEDULER"
            ) from exc
        _clients[address] = made
        return made


def close_clients() -> None:
    """Disconnect from the schedulers (when the consumer stops)."""
    with _lock:
        made = list(_clients.values())
        _clients.clear()
    for dask in made:
        dask.close()


def submit(settings: Settings, tasks: Sequence[FileTask]) -> list[Any]:
    """Futures of the tasks, in order; each yields a `FileResult`."""
    dask = client(settings)
    return [
        dask.submit(run_file, task, key=f"outcrop-job-file-{os.urandom(8).hex()}", pure=False)
        for task in tasks
    ]


def wait(futures: set[Any], seconds: float) -> tuple[set[Any], set[Any]]:
    """(done, pending) as soon as one is done, or after `seconds`. (distributed's own
    `wait` needs a default client, which a server shared by several jobs must not set.)"""
    deadline = time.monotonic() + seconds
    while True:
        done = {future for future in futures if future.done()}
        if done or time.monotonic() >= deadline:
            return done, futures - done
        time.sleep(POLL_S)


def result(future: Any, ds_id: str) -> FileResult:
    """A finished task's result. A task whose workers kept dying fails that dataset; any
    other exception is a bug and fails the job, as it would without a cluster."""
    from distributed import KilledWorker

    try:
        found = future.result()
    except KilledWorker as exc:
        log.warning("job_file_crashed", dataset=ds_id, error=repr(exc))
        return FileResult(ds_id, "the Dask workers running this dataset died; try again")
    assert isinstance(found, FileResult)
    return found


def cancel(settings: Settings, futures: Sequence[Any]) -> None:
    if futures:
        client(settings).cancel(list(futures))


def run_file(task: FileTask) -> FileResult:
    """On a cluster worker: open, operate on and write one dataset."""
    import dask

    from outcrop.jobs.run import FILE_ERRORS, make_output, parse_operations

    settings = Settings.model_validate_json(task.settings_json)
    catalog = _catalog(task.settings_json, settings)
    uploads = {name: Path(path) for name, path in task.uploads.items()}
    target = Path(task.target)
    try:
        # Inside a task dask would hand the file's own graph back to the cluster, which
        # cannot pickle the driver's read lock; the task's thread computes it instead.
        with dask.config.set(scheduler="synchronous"):
            ops = parse_operations(task.operations, uploads, 10**6)
            make_output(catalog, task.ds_id, ops, uploads, target, task.fmt)
    except FILE_ERRORS as exc:
        target.unlink(missing_ok=True)
        error: str | None = getattr(exc, "message", None) or str(exc)
    else:
        error = None
    _event(task, error)
    return FileResult(task.ds_id, error)


def _catalog(key: str, settings: Settings) -> Any:
    """One catalog per cluster worker process and settings, loaded from the database."""
    from outcrop.catalog import Catalog

    with _lock:
        catalog = _catalogs.get(key)
        if catalog is None:
            catalog = _catalogs[key] = Catalog(settings)
            catalog.load()
        return catalog


def _event(task: FileTask, error: str | None) -> None:
    """Tell the cluster which worker did what (`Client.get_events(EVENT_TOPIC)`)."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return
    worker.log_event(
        EVENT_TOPIC,
        {"dataset": task.ds_id, "pid": os.getpid(), "worker": worker.address, "error": error},
    )
