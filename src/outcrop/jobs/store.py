"""Job records in the catalog database, and the lease that keeps a dead worker's job from
staying `running`: every state change is one conditional UPDATE, so two workers (or a
worker and a cancel) never both win."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from outcrop.db import JobRow, now
from outcrop.jobs.request import Job

ACTIVE = ("queued", "running")
DONE = ("finished", "failed", "cancelled")
MAX_ATTEMPTS = 3  # a job whose worker died this many times fails


class JobStore:
    """Reads and conditional updates of the `jobs` table."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    def row(self, job_id: str) -> JobRow | None:
        with self.session() as session:
            return session.get(JobRow, job_id)

    def get(self, job_id: str) -> Job | None:
        row = self.row(job_id)
        return None if row is None else Job.of(row)

    def page(self, owner: str | None, limit: int, offset: int) -> tuple[list[Job], int]:
        """Jobs of `owner` (all with None), newest first."""
        from sqlalchemy import func

        query = select(JobRow)
        if owner is not None:
            query = query.where(JobRow.owner == owner)
        with self.session() as session:
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = session.scalars(
                query.order_by(JobRow.created.desc(), JobRow.id).limit(limit).offset(offset)
            )
            return [Job.of(r) for r in rows], total

    def queue(self, job_id: str, values: dict[str, Any]) -> None:
        """Insert the job as queued, or reset an old record of it to queued."""
        fresh = {
            "status": "queued",
            "done": 0,
            "step": "queued",
            "errors": {},
            "error": "",
            "result": "",
            "started": None,
            "finished": None,
            "expires": None,
            "worker": "",
            "heartbeat": now(),
            "attempts": 0,
            **values,
        }
        with self.session() as session:
            row = session.get(JobRow, job_id)
            if row is None:
                session.add(JobRow(id=job_id, created=now(), **fresh))
            else:
                for key, value in fresh.items():
                    setattr(row, key, value)
            session.commit()

    def _update(self, job_id: str, where: dict[str, Any], **values: Any) -> bool:
        """One conditional UPDATE; True when it changed the row."""
        stmt = update(JobRow).where(JobRow.id == job_id)
        for name, wanted in where.items():
            column = getattr(JobRow, name)
            stmt = stmt.where(column.in_(wanted) if isinstance(wanted, tuple) else column == wanted)
        with self.engine.begin() as conn:
            return conn.execute(stmt.values(**values)).rowcount == 1

    def claim(self, job_id: str, worker: str) -> bool:
        """Take a queued job; False when it is not queued (done, cancelled, taken)."""
        row = self.row(job_id)
        if row is None:
            return False
        stamp = now()
        return self._update(
            job_id,
            {"status": "queued", "attempts": row.attempts},
            status="running",
            worker=worker,
            heartbeat=stamp,
            started=stamp,
            attempts=row.attempts + 1,
            step="starting",
        )

    def beat(self, job_id: str, worker: str) -> bool:
        """Renew the lease; False when the job is no longer this worker's to run."""
        return self._update(job_id, {"status": "running", "worker": worker}, heartbeat=now())

    def progress(self, job_id: str, worker: str, **values: Any) -> bool:
        return self._update(job_id, {"status": "running", "worker": worker}, **values)

    def end(self, job_id: str, worker: str, status: str, expires: datetime, **values: Any) -> bool:
        """Finish or fail the job this worker runs."""
        return self._update(
            job_id,
            {"status": "running", "worker": worker},
            status=status,
            finished=now(),
            expires=expires,
            **values,
        )

    def release(self, job_id: str, worker: str, attempts: int) -> bool:
        """Give a running job back to the queue (its worker is shutting down)."""
        return self._update(
            job_id,
            {"status": "running", "worker": worker},
            status="queued",
            worker="",
            step="queued again: its worker stopped",
            heartbeat=now(),
            attempts=attempts,
        )

    def cancel(self, job_id: str, expires: datetime) -> bool:
        stamp = now()
        return self._update(
            job_id,
            {"status": ("queued", "running", "finished", "failed")},
            status="cancelled",
            step="cancelled",
            result="",
            finished=stamp,
            expires=expires,
        )

    def stale(self, lease: timedelta, requeue_after: timedelta) -> list[JobRow]:
        """Running jobs whose lease ran out, and queued jobs waiting so long their queue
        message may have been lost (taken by a worker that died before claiming it)."""
        stamp = now()
        with self.session() as session:
            running = (JobRow.status == "running") & (JobRow.heartbeat < stamp - lease)
            waiting = (JobRow.status == "queued") & (JobRow.heartbeat < stamp - requeue_after)
            return list(session.scalars(select(JobRow).where(running | waiting)))

    def requeue(self, row: JobRow) -> bool:
        """Put a stale job back on the queue (True), unless another checker did first."""
        return self._update(
            row.id,
            {"status": row.status, "worker": row.worker, "heartbeat": row.heartbeat},
            status="queued",
            worker="",
            step="queued again: its worker stopped reporting",
            heartbeat=now(),
        )

    def expired(self, when: datetime) -> list[JobRow]:
        with self.session() as session:
            query = select(JobRow).where(JobRow.status.in_(DONE), JobRow.expires < when)
            return list(session.scalars(query))

    def remove(self, job_id: str, expires: datetime | None) -> bool:
        with self.engine.begin() as conn:
            stmt = delete(JobRow).where(JobRow.id == job_id, JobRow.expires == expires)
            return conn.execute(stmt).rowcount == 1
