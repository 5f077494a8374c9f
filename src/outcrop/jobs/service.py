"""`JobService`: what the jobs routes and the CLI call — submit, look up, cancel, clean."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import shutil
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from outcrop.catalog import Catalog
from outcrop.dbfile import now
from outcrop.errors import BadQuery, DatasetNotFound, SourceError, TooLarge
from outcrop.jobs.queue import enqueue
from outcrop.jobs.request import Job, JobRequest, job_id, utc
from outcrop.jobs.run import jobs_dir, parse_operations, upload_dir, zip_name
from outcrop.log import logger
from outcrop.settings import Settings

if TYPE_CHECKING:
    from outcrop.jobs.store import JobStore

log = logger(__name__)
REUSED = ("queued", "running", "finished")


class JobService:
    """Jobs of one deployment; `catalog` is the served one (a `Pipeline`'s `.catalog`).

    The job records are reached on first use: building the routes (before a restarted
    server's first answer) neither imports SQLAlchemy nor connects to the database."""

    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        self.settings = settings
        self.catalog = catalog

    @functools.cached_property
    def store(self) -> JobStore:
        from outcrop.jobs.store import JobStore

        return JobStore(self.catalog.engine)

    def submit(
        self, request: JobRequest, uploads: Mapping[str, Path], owner: str | None = None
    ) -> tuple[Job, bool]:
        """The job for `request` and `uploads`, and whether it was created (or re-run).

        Everything is checked first (datasets, limits, operations); an identical request
        whose job is queued, running or finished gets that job back, with False.
        """
        self._check(request, uploads)
        digests = {name: store_upload(self.settings, path) for name, path in uploads.items()}
        ops = parse_operations(
            request.operations, self._stored(digests), self.settings.job_max_operations
        )
        # Normalised operations ([5, 15] and [5.0, 15.0] alike) make the id and the record.
        request = dataclasses.replace(request, operations=tuple(op.as_dict() for op in ops))
        jid = job_id(request, digests, owner)
        row = self.store.row(jid)
        if row is not None and row.status in REUSED and not _expired(row.expires, now()):
            return Job.of(row), False
        self.store.queue(
            jid,
            {
                "owner": owner,
                "request": request.document(),
                "uploads": digests,
                "total": len(request.datasets),
            },
        )
        enqueue(self.settings, jid)
        log.info("job_queued", job=jid, datasets=len(request.datasets))
        return self._job(jid), True

    def _check(self, request: JobRequest, uploads: Mapping[str, Path]) -> None:
        count, limit = len(request.datasets), self.settings.job_max_files
        if count > limit:
            raise TooLarge(
                f"a job may name at most job_max_files = {limit} datasets, not {count}; "
                "split it into several jobs",
                size=count,
                limit=limit,
                parameter="datasets",
            )
        count, limit = len(request.operations), self.settings.job_max_operations
        if count > limit:
            raise TooLarge(
                f"a job may chain at most job_max_operations = {limit} operations, not {count}",
                size=count,
                limit=limit,
                parameter="operations",
            )
        for ds_id in request.datasets:
            self._check_dataset(ds_id)
        for name, path in uploads.items():
            self._check_upload(name, path)

    def _check_dataset(self, ds_id: str) -> None:
        try:
            self.catalog.get(ds_id)
        except (DatasetNotFound, SourceError) as exc:
            raise BadQuery(f"datasets: {exc.message}", parameter="datasets") from exc

    def _check_upload(self, name: str, path: Path) -> None:
        size, limit = path.stat().st_size, self.settings.upload_max_mb * 2**20
        if size > limit:
            raise TooLarge(
                f"upload {name!r} is {size / 2**20:.1f} MB, more than upload_max_mb = "
                f"{self.settings.upload_max_mb} MB",
                size=size,
                limit=limit,
                parameter=name,
            )

    def _stored(self, digests: Mapping[str, str]) -> dict[str, Path]:
        return {name: upload_dir(self.settings) / digest for name, digest in digests.items()}

    def _job(self, jid: str) -> Job:
        job = self.store.get(jid)
        if job is None:
            raise DatasetNotFound(f"no job {jid!r}; jobs expire, and then must be submitted again")
        return job

    def get(self, jid: str) -> Job:
        """The job; `DatasetNotFound` when there is none (or it expired and was cleaned)."""
        return self._job(jid)

    def list(self, owner: str | None, limit: int, offset: int) -> tuple[list[Job], int]:
        """A page of jobs of `owner` (every job with None), newest first, and the total."""
        return self.store.page(owner, limit, offset)

    def cancel(self, jid: str) -> Job:
        """Cancel the job and remove its outputs; a running job stops between files."""
        self._job(jid)
        self.store.cancel(jid, now() + timedelta(hours=self.settings.job_expiry_hours))
        remove_result(self.settings, jid)
        return self._job(jid)

    def result_path(self, jid: str) -> Path | None:
        """The finished job's zip, or None when it has none (yet, or any more)."""
        job = self.store.get(jid)
        if job is None or job.status != "finished" or not job.result:
            return None
        path = jobs_dir(self.settings) / job.result
        return path if path.is_file() else None

    def clean(self, when: datetime | None = None) -> int:
        """Remove jobs (records and zips) expired at `when` (default now); how many."""
        return clean_jobs(self.settings, self.store, when or now())


def clean_jobs(settings: Settings, store: JobStore, when: datetime) -> int:
    removed = 0
    for row in store.expired(when):
        if store.remove(row.id, row.expires):
            remove_result(settings, row.id)
            removed += 1
    if removed:
        log.info("jobs_cleaned", removed=removed)
    return removed


def remove_result(settings: Settings, jid: str) -> None:
    (jobs_dir(settings) / zip_name(jid)).unlink(missing_ok=True)


def _expired(expires: datetime | None, when: datetime) -> bool:
    stamp = utc(expires)
    return stamp is not None and stamp <= when


def store_upload(settings: Settings, path: Path) -> str:
    """Copy an upload to `jobs/uploads/<sha256>` (once) and return its sha256."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    name = digest.hexdigest()
    target = upload_dir(settings) / name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{name}.part")
        shutil.copyfile(path, partial)
        partial.replace(target)
    return name
