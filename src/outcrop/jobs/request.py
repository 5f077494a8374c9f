"""What a job asks for, its content-addressed id, and the view of its record."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import orjson

from outcrop.errors import BadQuery

if TYPE_CHECKING:
    from outcrop.db import JobRow

Status = Literal["queued", "running", "finished", "failed", "cancelled"]
OutputFormat = Literal["netcdf", "csv"]
FORMATS: tuple[OutputFormat, ...] = ("netcdf", "csv")
SUFFIX: dict[str, str] = {"netcdf": ".nc", "csv": ".csv"}
ID_LENGTH = 32  # hex digits of sha256 kept: 128 bits


@dataclass(frozen=True)
class JobRequest:
    """Datasets (catalog ids), the raw operation list, and the output format."""

    datasets: tuple[str, ...]
    operations: tuple[Any, ...] = ()
    format: OutputFormat = "netcdf"

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> JobRequest:
        """A request from its JSON form `{"datasets": [...], "operations": [...],
        "output": {"format": "netcdf"|"csv"}}`, normalised: datasets without repeats, in
        order of id (the outputs do not depend on their order); operations as given."""
        unknown = set(raw) - {"datasets", "operations", "output"}
        if unknown:
            raise BadQuery(
                f"unknown job field(s) {', '.join(sorted(unknown))}; a job has `datasets`, "
                "`operations` and `output`",
                parameter=sorted(unknown)[0],
            )
        return cls(
            _datasets(raw.get("datasets")),
            _operations(raw.get("operations")),
            _format(raw.get("output")),
        )

    def document(self) -> dict[str, Any]:
        """The JSON form, as stored and hashed."""
        return {
            "datasets": list(self.datasets),
            "operations": list(self.operations),
            "output": {"format": self.format},
        }


def _datasets(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise BadQuery(
            "`datasets` must be a non-empty list of dataset ids (GET /api/datasets lists them)",
            parameter="datasets",
        )
    return tuple(sorted(set(value)))


def _operations(value: Any) -> tuple[Any, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise BadQuery(
            "`operations` must be a list of objects, each with an `operation` name",
            parameter="operations",
        )
    return tuple(value)


def _format(value: Any) -> OutputFormat:
    if value is None:
        return "netcdf"
    fmt = value.get("format", "netcdf") if isinstance(value, dict) else None
    if isinstance(fmt, str) and fmt.lower() in FORMATS:
        return "csv" if fmt.lower() == "csv" else "netcdf"
    raise BadQuery(
        f'`output` must be an object like {{"format": "netcdf"}}; formats are {", ".join(FORMATS)}',
        parameter="output",
    )


def canonical(value: Any) -> bytes:
    """JSON with sorted keys and no spaces: equal requests give equal bytes."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def job_id(request: JobRequest, upload_digests: Mapping[str, str], owner: str | None = None) -> str:
    """sha256 of the canonical request, the uploads' names and sha256, and the owner (two
    users asking the same thing get separate jobs), as 32 hex digits."""
    h = hashlib.sha256(canonical(request.document()))
    h.update(canonical(sorted(upload_digests.items())))
    h.update(canonical(owner))
    return h.hexdigest()[:ID_LENGTH]


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    step: str


@dataclass(frozen=True)
class Job:
    """What a client sees of a job; `result` is the zip's file name once finished."""

    id: str
    status: Status
    progress: Progress
    request: dict[str, Any]
    owner: str | None = None
    errors: dict[str, str] = field(default_factory=dict)
    error: str = ""
    created: datetime | None = None
    started: datetime | None = None
    finished: datetime | None = None
    expires: datetime | None = None
    result: str | None = None

    @classmethod
    def of(cls, row: JobRow) -> Job:
        status: Status = row.status  # type: ignore[assignment]
        return cls(
            id=row.id,
            status=status,
            progress=Progress(row.done, row.total, row.step),
            request=dict(row.request),
            owner=row.owner,
            errors={str(k): str(v) for k, v in (row.errors or {}).items()},
            error=row.error,
            created=utc(row.created),
            started=utc(row.started),
            finished=utc(row.finished),
            expires=utc(row.expires),
            result=row.result or None,
        )

    def document(self) -> dict[str, Any]:
        """The JSON form a route returns."""
        return {
            "id": self.id,
            "status": self.status,
            "progress": {
                "done": self.progress.done,
                "total": self.progress.total,
                "step": self.progress.step,
            },
            "request": self.request,
            "errors": self.errors,
            "error": self.error,
            "created": _iso(self.created),
            "started": _iso(self.started),
            "finished": _iso(self.finished),
            "expires": _iso(self.expires),
            "result": self.result,
        }


def utc(when: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; every time stored is UTC."""
    if when is None or when.tzinfo is not None:
        return when
    return when.replace(tzinfo=UTC)


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat().replace("+00:00", "Z")
