"""Asynchronous jobs: chained operations on catalog datasets, run by a queue, results as
one zip per job. See `service` (what routes call), `run` (one job), `queue` (backends).
"""

from __future__ import annotations

from outcrop.jobs.queue import Stoppable, start_consumer
from outcrop.jobs.request import Job, JobRequest, Progress, Status, job_id
from outcrop.jobs.service import JobService

__all__ = [
    "Job",
    "JobRequest",
    "JobService",
    "Progress",
    "Status",
    "Stoppable",
    "job_id",
    "start_consumer",
]
