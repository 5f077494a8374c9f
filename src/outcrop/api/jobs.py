"""The jobs API: `/api/jobs` takes chained operations on catalog datasets or files, runs
them in the job queue, and serves each finished job's results as one zip.

docs/jobs.md has the request body, the statuses and the limits.
"""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from outcrop.api.app import run_blocking
from outcrop.api.rest import pipeline_of, reject_unknown
from outcrop.catalog import parse_page, served_roots
from outcrop.errors import BadQuery, DatasetNotFound, TooLarge
from outcrop.jobs import Job, JobRequest, JobService
from outcrop.pipeline import Pipeline
from outcrop.settings import Settings

MB = 1 << 20
REQUEST_PARTS = ("request", "data")  # `data` is isimip-files-api's name for it
MAX_REQUEST_BYTES = MB  # the JSON request itself, in a body or a part
MAX_PARTS = 20
# Names a part may have: a file name without folders, as isimip-files-api's examples
# use (`shape.zip`); operations refer to uploads by it.
PART_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_part_name(name: str) -> str:
    """A part name usable as an upload's key; `../x` and the like are refused."""
    if not PART_NAME.fullmatch(name) or ".." in name:
        raise BadQuery(
            f"upload part name {name!r} is not allowed: use 1-100 letters, digits, `.`, `_` "
            "or `-`, starting with a letter or digit, without `..` (e.g. `shape.zip`)",
            parameter=name,
        )
    return name


def parse_request_json(raw: bytes | bytearray, parameter: str) -> dict[str, Any]:
    """The job request: a JSON object, at most `MAX_REQUEST_BYTES`."""
    if len(raw) > MAX_REQUEST_BYTES:
        raise TooLarge(
            f"the job request is larger than {MAX_REQUEST_BYTES} bytes",
            size=len(raw),
            limit=MAX_REQUEST_BYTES,
            parameter=parameter,
        )
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadQuery(f"the job request is not valid JSON: {exc}", parameter=parameter) from exc
    if not isinstance(body, dict):
        raise BadQuery(
            'the job request must be a JSON object, e.g. {"datasets": [...], "operations": [...]}',
            parameter=parameter,
        )
    return body


@dataclass
class Part:
    """The multipart part being read: its headers, then its bytes."""

    disposition: bytes = b""
    header_name: bytes = b""
    header_value: bytes = b""
    name: str = ""
    data: bytearray = field(default_factory=bytearray)
    file: IO[bytes] | None = None
    size: int = 0


class UploadReader:
    """Reads a `multipart/form-data` body (RFC 7578) as it arrives: the request part into
    memory, every other part into a file under `folder` with a server-chosen name.

    The client's file name is never used. An upload longer than `limit` bytes makes
    `write` raise `TooLarge` (413) as soon as its bytes pass the limit.
    """

    def __init__(self, folder: Path, boundary: bytes, limit: int) -> None:
        self.folder = folder
        self.limit = limit
        self.request: dict[str, Any] | None = None
        self.uploads: dict[str, Path] = {}
        self.part = Part()
        self.parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._data,
                "on_part_end": self._end,
            },
        )

    def write(self, chunk: bytes) -> None:
        """Parse a piece of the body (blocking: it writes files)."""
        try:
            self.parser.write(chunk)
        except FormParserError as exc:
            raise BadQuery(f"the multipart body is malformed: {exc}", parameter="body") from exc

    def finish(self) -> dict[str, Any]:
        """The request JSON, once the whole body was written."""
        try:
            self.parser.finalize()
        except FormParserError as exc:
            raise BadQuery(f"the multipart body is malformed: {exc}", parameter="body") from exc
        if self.request is None:
            raise BadQuery(
                "a multipart job request needs a `request` (or `data`) part holding the JSON "
                "request",
                parameter="request",
            )
        return self.request

    def close(self) -> None:
        """Close the file being written, if any (on errors)."""
        if self.part.file is not None:
            self.part.file.close()

    def _begin(self) -> None:
        self.part = Part()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self.part.header_name += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self.part.header_value += data[start:end]

    def _header_end(self) -> None:
        if self.part.header_name.strip().lower() == b"content-disposition":
            self.part.disposition = self.part.header_value
        self.part.header_name = self.part.header_value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self.part.disposition)
        if b"name" not in options:
            raise BadQuery("a multipart part has no name", parameter="body")
        name = options[b"name"].decode("utf-8", "replace")
        self.part.name = name
        if name in REQUEST_PARTS:
            return
        check_part_name(name)
        if name in self.uploads:
            raise BadQuery(f"upload part {name!r} is sent twice", parameter=name)
        if len(self.uploads) >= MAX_PARTS:
            raise BadQuery(f"at most {MAX_PARTS} uploads per job", parameter=name)
        path = self.folder / uuid.uuid4().hex
        self.uploads[name] = path
        self.part.file = path.open("xb")

    def _data(self, data: bytes, start: int, end: int) -> None:
        piece = data[start:end]
        if self.part.file is None:
            if len(self.part.data) + len(piece) > MAX_REQUEST_BYTES:
                raise TooLarge(
                    f"the {self.part.name!r} part is larger than {MAX_REQUEST_BYTES} bytes",
                    size=len(self.part.data) + len(piece),
                    limit=MAX_REQUEST_BYTES,
                    parameter=self.part.name,
                )
            self.part.data += piece
            return
        self.part.size += len(piece)
        if self.part.size > self.limit:
            raise TooLarge(
                f"upload {self.part.name!r} is larger than upload_max_mb ({self.limit // MB} MB)",
                size=self.part.size,
                limit=self.limit,
                parameter=self.part.name,
            )
        self.part.file.write(piece)

    def _end(self) -> None:
        if self.part.file is not None:
            self.part.file.close()
            self.part.file = None
        elif self.part.name in REQUEST_PARTS:
            if self.request is not None:
                raise BadQuery("send one `request` (or `data`) part", parameter=self.part.name)
            self.request = parse_request_json(self.part.data, self.part.name)


def upload_folder(data_dir: Path) -> Path:
    """A fresh folder for one request's uploads under `data_dir/uploads/`."""
    folder = data_dir / "uploads" / uuid.uuid4().hex
    folder.mkdir(parents=True)
    return folder


def remove_folder(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


# --- routes ------------------------------------------------------------------------------

router = APIRouter()
OWNER_HEADER = "X-Outcrop-Client"
MAX_OWNER_LENGTH = 200


def jobs_of(request: Request) -> JobService:
    service: JobService = request.app.state.jobs
    return service


def owner_of(request: Request) -> str | None:
    """The caller's `X-Outcrop-Client` token (not authentication: it only groups a
    client's jobs for `GET /api/jobs`), or None."""
    value = request.headers.get(OWNER_HEADER)
    if value is None:
        return None
    value = value.strip()
    if not 0 < len(value) <= MAX_OWNER_LENGTH or not value.isprintable():
        raise BadQuery(
            f"{OWNER_HEADER} must be 1-{MAX_OWNER_LENGTH} printable characters",
            parameter=OWNER_HEADER,
        )
    return value


def job_document(request: Request, job: Job) -> dict[str, Any]:
    """A job as clients see it, with absolute links (they follow `root_path` and a
    trusted proxy's `X-Forwarded-*`)."""
    doc = job.document()
    doc.pop("result", None)
    url = str(request.url_for("get_job", job_id=job.id))
    result_url = None
    if job.status == "finished" and job.result:
        result_url = str(request.url_for("get_job_result", job_id=job.id))
    doc["operations"] = job.request.get("operations", [])
    doc["url"] = doc["job_url"] = url  # `job_url`, `file_url`, `file_name`: isimip-files-api
    doc["result_url"] = doc["file_url"] = result_url
    doc["file_name"] = result_name(job.id) if result_url else None
    return doc


def result_name(job_id: str) -> str:
    return f"outcrop-job-{job_id}.zip"


def job_response(request: Request, job: Job, status: int = 200) -> Response:
    body = orjson.dumps(job_document(request, job))
    return Response(body, status_code=status, media_type="application/json")


@router.post("/api/jobs", tags=["jobs"], status_code=201)
async def submit_job(request: Request) -> Response:
    """Submit a job: a JSON body `{"datasets": [...], "operations": [...], "output": {...}}`
    (or isimip-files-api's `{"paths": [...], ...}`), or `multipart/form-data` with that
    JSON in a `request` (or `data`) part and the files operations refer to in parts named
    as the operations name them. 201 with a new job; 200 with the job already made from
    the same request and files."""
    reject_unknown(request, set())
    owner = owner_of(request)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        return await submit_multipart(request, owner)
    if media_type not in ("application/json", ""):
        raise BadQuery(
            f"a job request is application/json or multipart/form-data, not {media_type!r}",
            parameter="Content-Type",
        )
    body = parse_request_json(await read_limited(request), "body")
    return await submit_parsed(request, body, {}, owner)


async def read_limited(request: Request) -> bytes:
    """The request body, refused past `MAX_REQUEST_BYTES`."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_REQUEST_BYTES:
            raise TooLarge(
                f"the job request is larger than {MAX_REQUEST_BYTES} bytes",
                size=len(body),
                limit=MAX_REQUEST_BYTES,
                parameter="body",
            )
    return bytes(body)


async def submit_multipart(request: Request, owner: str | None) -> Response:
    _, options = parse_options_header(request.headers.get("content-type"))
    if b"boundary" not in options:
        raise BadQuery("the multipart body has no boundary", parameter="Content-Type")
    settings: Settings = request.app.state.settings
    folder = await run_blocking(request, upload_folder, settings.data_dir)
    try:
        reader = UploadReader(folder, options[b"boundary"], settings.upload_max_mb * MB)
        stream = request.stream()
        try:
            async for chunk in stream:
                await run_blocking(request, reader.write, chunk)
            body = reader.finish()
        except TooLarge:
            await drain(stream, reader.limit)
            raise
        finally:
            reader.close()
        return await submit_parsed(request, body, reader.uploads, owner)
    finally:
        await run_blocking(request, remove_folder, folder)


async def drain(stream: AsyncIterator[bytes], most: int) -> None:
    """Read and drop up to `most` more bytes of a refused body, so that a client still
    sending it reads the 413 instead of a reset connection."""
    left = most
    async for chunk in stream:
        left -= len(chunk)
        if left <= 0:
            return


async def submit_parsed(
    request: Request, body: dict[str, Any], uploads: dict[str, Path], owner: str | None
) -> Response:
    if "paths" in body:
        body = await run_blocking(request, with_datasets, pipeline_of(request), body)
    parsed = JobRequest.parse(body)
    job, created = await run_blocking(request, jobs_of(request).submit, parsed, uploads, owner)
    response = job_response(request, job, 201 if created else 200)
    response.headers["Location"] = str(request.url_for("get_job", job_id=job.id))
    return response


def with_datasets(pipeline: Pipeline, body: dict[str, Any]) -> dict[str, Any]:
    """isimip-files-api's form: `paths` (files relative to a served folder) become the
    ids of the datasets those files are."""
    paths = body.get("paths")
    if "datasets" in body:
        raise BadQuery("send `datasets` or `paths`, not both", parameter="paths")
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
        raise BadQuery(
            "`paths` must be a non-empty list of file paths relative to a served folder",
            parameter="paths",
        )
    by_file = file_datasets(pipeline)
    roots = served_roots(pipeline.settings)
    rest = {k: v for k, v in body.items() if k != "paths"}
    return {**rest, "datasets": [dataset_of(path, roots, by_file) for path in paths]}


def file_datasets(pipeline: Pipeline) -> dict[Path, str]:
    """Each single-file dataset of the catalog (the file's root group) by its file."""
    found = {}
    for entry in pipeline.catalog.entries():
        if len(entry.source.paths) == 1 and not entry.source.group:
            found[entry.source.paths[0].resolve()] = entry.id
    return found


def dataset_of(path: str, roots: list[Path], by_file: dict[Path, str]) -> str:
    """The dataset id of a served file; 400 for a path that leaves the served folders."""
    rel = PurePosixPath(path)
    if rel.is_absolute() or ".." in rel.parts or "\\" in path or not path.strip():
        raise BadQuery(
            f"path {path!r} must be relative to a served folder, without `..`",
            parameter="paths",
        )
    for root in roots:
        target = (root / rel).resolve()
        if target.is_relative_to(root) and target in by_file:
            return by_file[target]
    raise DatasetNotFound(
        f"no served file {path!r}; `paths` are relative to a served folder "
        "(GET /api/datasets lists the datasets)",
        parameter="paths",
    )


@router.get("/api/jobs", tags=["jobs"])
async def list_jobs(
    request: Request, limit: str | None = None, offset: str | None = None
) -> Response:
    """A page of the jobs submitted with the caller's `X-Outcrop-Client` header, newest
    first. There are no accounts yet: the header is a token the client chooses, and a job
    id is itself the capability to see a job."""
    reject_unknown(request, {"limit", "offset"})
    owner = owner_of(request)
    if owner is None:
        raise BadQuery(
            f"GET /api/jobs lists the jobs submitted with the same {OWNER_HEADER} header; "
            "send it (any token of yours), or GET /api/jobs/{id} for one job",
            parameter=OWNER_HEADER,
        )
    size, start = parse_page(limit, offset)
    found, total = await run_blocking(request, jobs_of(request).list, owner, size, start)
    body = {
        "total": total,
        "limit": size,
        "offset": start,
        "jobs": [job_document(request, job) for job in found],
    }
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/api/jobs/{job_id}", tags=["jobs"])
async def get_job(request: Request, job_id: str) -> Response:
    """A job's status (`queued`, `running`, `finished`, `failed`, `cancelled`), progress,
    errors per dataset, `result_url` once finished, and when it expires."""
    reject_unknown(request, set())
    job = await run_blocking(request, jobs_of(request).get, job_id)
    return job_response(request, job)


@router.delete("/api/jobs/{job_id}", tags=["jobs"])
async def cancel_job(request: Request, job_id: str) -> Response:
    """Cancel a job (a running one stops at its next step) and remove its results."""
    reject_unknown(request, set())
    job = await run_blocking(request, jobs_of(request).cancel, job_id)
    return job_response(request, job)


@router.get("/api/jobs/{job_id}/result", tags=["jobs"])
async def get_job_result(request: Request, job_id: str) -> Response:
    """A finished job's zip. Single and multiple byte ranges (RFC 9110 §14) and
    `If-Range` are answered by Starlette's `FileResponse`: 206, or 416 for a range past
    the end."""
    reject_unknown(request, set())
    service = jobs_of(request)
    path = await run_blocking(request, service.result_path, job_id)
    if path is None:
        job = await run_blocking(request, service.get, job_id)
        raise DatasetNotFound(
            f"job {job_id} is {job.status}: only a finished job has a result "
            f"(GET /api/jobs/{job_id} tells its status)",
            parameter="job_id",
        )
    return FileResponse(
        path,
        media_type="application/zip",
        filename=result_name(job_id),
        content_disposition_type="attachment",
    )
