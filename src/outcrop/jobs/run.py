"""Running one job: each dataset opened, operated on and written to a work folder, then
one zip (outputs, `README.txt`, `errors.json`) written under a temporary name and renamed
into place only when complete, so no half-written zip is ever served.

A dataset that fails is recorded in `errors.json` and the job goes on; the job fails only
when every dataset failed, or when a limit of the whole job (run time, output size) is
passed. A failed or cancelled job leaves no files behind.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import uuid
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from outcrop.catalog import Catalog
from outcrop.dbfile import now
from outcrop.errors import OutcropError
from outcrop.jobs.request import SUFFIX
from outcrop.log import logger
from outcrop.settings import Settings

if TYPE_CHECKING:
    from outcrop.db import JobRow
    from outcrop.jobs.store import JobStore
    from outcrop.operations import Operation

log = logger(__name__)
COPY = "copied unchanged"
CLUSTER_POLL_S = 1.0  # how often a job on the Dask cluster checks its lease and limits
# What a dataset's work may raise that fails that dataset only, not the job.
FILE_ERRORS = (OutcropError, OSError, ValueError, KeyError, TypeError, IndexError)


class JobFailed(OutcropError):
    """The whole job failed (a limit passed, or every dataset failed)."""


class JobStopped(Exception):
    """The job must stop now: cancelled, its lease lost, or the consumer shutting down."""


def jobs_dir(settings: Settings) -> Path:
    """Where job zips, uploads and work folders go: shared by every node and worker."""
    return settings.jobs_dir or settings.data_dir / "jobs"


def upload_dir(settings: Settings) -> Path:
    """Uploads kept by content (sha256), for every worker to read."""
    return jobs_dir(settings) / "uploads"


def zip_name(job_id: str) -> str:
    return f"{job_id}.zip"


def worker_name() -> str:
    """Who holds a lease: host, process and thread."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def parse_operations(
    raw: Sequence[Any], uploads: Mapping[str, Path], limit: int
) -> tuple[Operation, ...]:
    from outcrop import operations  # xarray and shapely: imported when a job needs them

    if not raw:
        return ()
    return operations.parse_operations(list(raw), uploads, limit)


class Lease:
    """Renews the job's heartbeat from a thread every third of `job_lease_s`; `lost` once
    the record says another worker, or nobody, runs it (re-queued or cancelled)."""

    def __init__(self, store: JobStore, job_id: str, worker: str, seconds: float) -> None:
        self.store, self.job_id, self.worker = store, job_id, worker
        self.interval = seconds / 3
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{job_id}", daemon=True)

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            if not self.store.beat(self.job_id, self.worker):
                self.lost = True
                return


@dataclass
class Attempt:
    """One run of one job by this worker: where its files go and what it has made."""

    row: JobRow
    worker: str
    work: Path
    ops: tuple[Any, ...]
    started: float = field(default_factory=time.monotonic)
    outputs: dict[str, Path] = field(default_factory=dict)  # dataset id -> output file
    errors: dict[str, str] = field(default_factory=dict)
    size: int = 0


class Runner:
    """Runs jobs by id: the function the queue's task calls."""

    def __init__(self, settings: Settings, catalog: Catalog, stopping: threading.Event) -> None:
        from outcrop.jobs.store import JobStore  # SQLAlchemy: not imported with the routes

        self.settings = settings
        self.catalog = catalog
        self.store = JobStore(catalog.engine)
        self.stopping = stopping

    def run(self, job_id: str) -> None:
        worker = worker_name()
        if not self.store.claim(job_id, worker):
            return  # not queued any more: done, cancelled, or another worker has it
        row = self.store.row(job_id)
        assert row is not None
        work = jobs_dir(self.settings) / "work" / f"{job_id}-{uuid.uuid4().hex[:8]}"
        # Every line logged while it runs carries the job's id.
        with structlog.contextvars.bound_contextvars(job_id=job_id):
            log.info("job_started", job=job_id, worker=worker, attempt=row.attempts)
            try:
                with Lease(self.store, job_id, worker, self.settings.job_lease_s) as lease:
                    self._attempt(row, worker, work, lease)
            finally:
                shutil.rmtree(work, ignore_errors=True)

    def _attempt(self, row: JobRow, worker: str, work: Path, lease: Lease) -> None:
        attempt = Attempt(row, worker, work, ())
        try:
            attempt.ops = parse_operations(row.request["operations"], self._uploads(row), 10**6)
            work.mkdir(parents=True, exist_ok=True)
            if self.settings.dask_scheduler:
                self._on_cluster(attempt, lease)
            else:
                for index, ds_id in enumerate(row.request["datasets"]):
                    self._check(attempt, lease)
                    self._one(attempt, index, ds_id)
            self._check(attempt, lease)
            self._finish(attempt, lease)
        except JobStopped as stop:
            self._stopped(row, worker, str(stop))
        except OutcropError as exc:
            self._fail(row, worker, exc.message, attempt.errors)
        except Exception as exc:  # a bug: the job fails with a message, the log has more
            log.exception("job_crashed", job=row.id)
            self._fail(row, worker, f"internal error ({type(exc).__name__}); see the log", {})

    def _check(self, attempt: Attempt, lease: Lease) -> None:
        if lease.lost:
            raise JobStopped("lost")
        if self.stopping.is_set():
            raise JobStopped("shutdown")
        elapsed = time.monotonic() - attempt.started
        if elapsed > self.settings.job_timeout_s:
            raise JobFailed(
                f"the job ran longer than job_timeout_s = {self.settings.job_timeout_s:g} s; "
                "ask for fewer datasets or a smaller selection",
                parameter="datasets",
            )

    def _one(self, attempt: Attempt, index: int, ds_id: str) -> None:
        """Open, operate on and write one dataset; its failure is recorded, not raised."""
        fmt = attempt.row.request["output"]["format"]
        self._progress(attempt, done=index, step=f"{ds_id}: working")
        target = self._target(attempt, ds_id)
        try:
            make_output(self.catalog, ds_id, attempt.ops, self._uploads(attempt.row), target, fmt)
        except FILE_ERRORS as exc:
            target.unlink(missing_ok=True)
            self._file_done(attempt, ds_id, target, getattr(exc, "message", None) or str(exc))
        else:
            self._file_done(attempt, ds_id, target, None)
        self._progress(attempt, done=index + 1, step=f"{ds_id}: done", errors=attempt.errors)
        if self.settings.job_file_delay_s:
            self.stopping.wait(self.settings.job_file_delay_s)

    def _target(self, attempt: Attempt, ds_id: str) -> Path:
        target = attempt.work / f"{ds_id}{SUFFIX[attempt.row.request['output']['format']]}"
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def _file_done(self, attempt: Attempt, ds_id: str, target: Path, error: str | None) -> None:
        if error is not None:
            attempt.errors[ds_id] = self.scrub(error)
            log.warning("job_file_failed", job=attempt.row.id, dataset=ds_id, error=error)
        else:
            attempt.outputs[ds_id] = target
            self._count(attempt, target)

    def _on_cluster(self, attempt: Attempt, lease: Lease) -> None:
        """Every dataset as one task on the Dask cluster, all at once; results are taken
        as they come, checking the lease, cancellation and limits in between."""
        from outcrop.jobs import cluster

        row = attempt.row
        fmt = row.request["output"]["format"]
        datasets: list[str] = row.request["datasets"]
        uploads = {name: str(path) for name, path in self._uploads(row).items()}
        settings_json = self.settings.model_dump_json()
        targets = {ds_id: self._target(attempt, ds_id) for ds_id in datasets}
        tasks = [
            cluster.FileTask(
                settings_json, ds_id, row.request["operations"], uploads, str(targets[ds_id]), fmt
            )
            for ds_id in datasets
        ]
        self._progress(attempt, done=0, step=f"{len(tasks)} datasets sent to the Dask cluster")
        futures = cluster.submit(self.settings, tasks)
        owner = dict(zip(futures, datasets, strict=True))
        pending = set(futures)
        try:
            while pending:
                self._check(attempt, lease)
                done, pending = cluster.wait(pending, CLUSTER_POLL_S)
                for future in done:
                    result = cluster.result(future, owner[future])
                    self._file_done(attempt, result.ds_id, targets[result.ds_id], result.error)
                if done:
                    finished = len(futures) - len(pending)
                    self._progress(
                        attempt,
                        done=finished,
                        step=f"{finished} of {len(futures)} datasets done on the Dask cluster",
                        errors=attempt.errors,
                    )
        finally:
            cluster.cancel(self.settings, list(pending))

    def _count(self, attempt: Attempt, target: Path) -> None:
        attempt.size += target.stat().st_size
        limit = self.settings.job_max_output_mb * 2**20
        if attempt.size > limit:
            raise JobFailed(
                f"the job's outputs pass job_max_output_mb = {self.settings.job_max_output_mb} MB "
                f"(at least {attempt.size / 2**20:.1f} MB); ask for fewer datasets or a "
                "smaller selection",
                parameter="datasets",
            )

    def _progress(self, attempt: Attempt, **values: Any) -> None:
        if not self.store.progress(attempt.row.id, attempt.worker, **values):
            raise JobStopped("lost")

    def _finish(self, attempt: Attempt, lease: Lease) -> None:
        row = attempt.row
        if not attempt.outputs:
            raise JobFailed(f"every one of the {len(attempt.errors)} datasets failed; see errors")
        self._progress(attempt, step="zipping")
        final = jobs_dir(self.settings) / zip_name(row.id)
        partial = final.with_name(f"{final.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            write_zip(partial, attempt, self.describe(attempt))
            if lease.lost:
                raise JobStopped("lost")
            partial.replace(final)
        finally:
            partial.unlink(missing_ok=True)
        ended = self.store.end(
            row.id,
            attempt.worker,
            "finished",
            self._expires(),
            result=final.name,
            step="finished",
            errors=attempt.errors,
        )
        if not ended and self._status(row.id) == "cancelled":
            final.unlink(missing_ok=True)  # cancelled while zipping
        log.info(
            "job_finished", job=row.id, outputs=len(attempt.outputs), errors=len(attempt.errors)
        )

    def describe(self, attempt: Attempt) -> list[str]:
        if not attempt.ops:
            return [COPY]
        from outcrop.operations import describe

        return [describe(op) for op in attempt.ops]

    def _stopped(self, row: JobRow, worker: str, why: str) -> None:
        """Cancelled or re-queued elsewhere: leave it. Shutting down: queue it again, this
        attempt not counted."""
        if why == "shutdown" and self.store.release(row.id, worker, row.attempts - 1):
            from outcrop.jobs.queue import enqueue

            enqueue(self.settings, row.id)
            log.info("job_requeued", job=row.id)
        else:
            log.info("job_stopped", job=row.id, reason=why)

    def _fail(self, row: JobRow, worker: str, message: str, errors: dict[str, str]) -> None:
        self.store.end(
            row.id,
            worker,
            "failed",
            self._expires(),
            error=self.scrub(message),
            step="failed",
            errors=errors,
        )
        (jobs_dir(self.settings) / zip_name(row.id)).unlink(missing_ok=True)
        log.warning("job_failed", job=row.id, error=message)

    def _status(self, job_id: str) -> str:
        row = self.store.row(job_id)
        return "" if row is None else row.status

    def _expires(self) -> Any:
        return now() + timedelta(hours=self.settings.job_expiry_hours)

    def _uploads(self, row: JobRow) -> dict[str, Path]:
        folder = upload_dir(self.settings)
        return {name: folder / digest for name, digest in (row.uploads or {}).items()}

    def scrub(self, text: str) -> str:
        """A message without server paths (served folders, the data folder)."""
        roots = [str(p) for p in self.settings.paths] + [str(self.settings.data_dir)]
        roots.append(str(jobs_dir(self.settings)))
        for root in sorted(roots, key=len, reverse=True):
            text = text.replace(root, "…")
        return text


def write_output(ds: Any, path: Path, fmt: str) -> None:
    from outcrop.operations import write_output as write

    write(ds, path, "csv" if fmt == "csv" else "netcdf")


def make_output(
    catalog: Catalog,
    ds_id: str,
    ops: Sequence[Operation],
    uploads: Mapping[str, Path],
    target: Path,
    fmt: str,
) -> None:
    """Open one dataset, apply the operations and write the output file (here, or on a
    Dask cluster worker)."""
    from outcrop.operations import apply

    ds = catalog.open(ds_id)
    if ops:
        ds = apply(ds, ops, uploads)
    write_output(ds, target, fmt)


def write_zip(path: Path, attempt: Attempt, steps: list[str]) -> None:
    """Outputs, `README.txt` (what was done to each file) and `errors.json`."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
        for output in attempt.outputs.values():
            zf.write(output, output.relative_to(attempt.work).as_posix())
        zf.writestr("README.txt", readme(attempt, steps))
        zf.writestr("errors.json", orjson.dumps(attempt.errors, option=orjson.OPT_INDENT_2))


def readme(attempt: Attempt, steps: list[str]) -> str:
    row = attempt.row
    lines = [
        f"Outcrop job {row.id}",
        f"Output format: {row.request['output']['format']}",
        "",
        "Operations, in order:",
        *(f"  {i}. {step}" for i, step in enumerate(steps, 1)),
        "",
        "Files:",
    ]
    for ds_id in row.request["datasets"]:
        if ds_id in attempt.outputs:
            name = attempt.outputs[ds_id].relative_to(attempt.work).as_posix()
            lines.append(f"  {name}: dataset {ds_id}")
        else:
            lines.append(f"  (none): dataset {ds_id} failed: {attempt.errors.get(ds_id, '')}")
    lines += ["", "errors.json lists each dataset that failed, with the reason.", ""]
    return "\n".join(lines)
