"""The native REST API: the catalog, each dataset's metadata, and subsets."""

from __future__ import annotations

import os
import threading
import zlib
from collections.abc import Callable, Iterator
from email.utils import formatdate, parsedate_to_datetime
from functools import partial
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.to_thread
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from outcrop.api.app import in_threads, run_blocking
from outcrop.api.conditional import none_match
from outcrop.catalog import Catalog, parse_page
from outcrop.errors import BadQuery
from outcrop.formats.netcdf import Cancelled
from outcrop.pipeline import Pipeline, Rendered, SubsetPlan, plan_subset, render_subset
from outcrop.settings import Settings

router = APIRouter()
# Always served, whatever route sets are on: liveness and readiness.
service = APIRouter()
DISCONNECT_POLL_S = 0.5
READY_TIMEOUT_S = 5.0


def pipeline_of(request: Request) -> Pipeline:
    pipeline: Pipeline = request.app.state.pipeline
    return pipeline


def reject_unknown(request: Request, allowed: set[str]) -> None:
    """400 for a query parameter the route does not know, naming the ones it does."""
    for name in request.query_params:
        if name not in allowed:
            raise BadQuery(
                f"unknown parameter {name!r}; allowed: {', '.join(sorted(allowed))}",
                parameter=name,
            )


def json_response(request: Request, body: dict[str, Any], etag: str | None = None) -> Response:
    headers = {}
    if etag is not None:
        headers["ETag"] = etag
        if none_match(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
    return Response(orjson.dumps(body), media_type="application/json", headers=headers)


@service.get("/healthz", tags=["service"])
async def healthz(request: Request) -> Response:
    """Liveness: 200 while the server answers, with the number of datasets served."""
    return json_response(request, {"status": "ok", "datasets": len(pipeline_of(request).catalog)})


@service.get("/readyz", tags=["service"])
async def readyz(request: Request) -> Response:
    """Readiness: 200 when the catalog database answers and the job queue is reachable,
    else 503 naming what failed (a load balancer stops sending requests meanwhile)."""
    pipeline = pipeline_of(request)
    checks = {
        "database": partial(check_catalog_database, pipeline.catalog),
        "queue": partial(check_queue, pipeline.settings),
    }
    failed: dict[str, str] = {}
    for name, check in checks.items():
        with anyio.move_on_after(READY_TIMEOUT_S) as scope:
            problem = await anyio.to_thread.run_sync(check, abandon_on_cancel=True)
        if scope.cancelled_caught:
            problem = f"no answer within {READY_TIMEOUT_S:g} s"
        if problem:
            failed[name] = problem
    body = {"status": "unavailable" if failed else "ready", "checks": checks_of(checks, failed)}
    return Response(
        orjson.dumps(body), status_code=503 if failed else 200, media_type="application/json"
    )


def checks_of(checks: dict[str, Any], failed: dict[str, str]) -> dict[str, str]:
    return {name: failed.get(name, "ok") for name in checks}


def check_catalog_database(catalog: Catalog) -> str:
    """`check_database` of the catalog's database, connected first if it is not yet (in
    the check's thread: never on the event loop); a failure to connect is the problem."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        engine = catalog.engine
    except (SQLAlchemyError, OSError) as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return check_database(engine)


def check_database(engine: Any) -> str:
    """`SELECT 1` on the catalog database; the error, or "" when it answers."""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return ""


def check_queue(settings: Settings) -> str:
    """Redis answers a PING (`queue_url`), or the embedded queue's folder is writable."""
    if settings.queue_url:
        return _ping_redis(settings.queue_url)
    folder = settings.data_dir / "jobs"
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"the job queue folder {existing} is not writable"
    return ""


def _ping_redis(url: str) -> str:
    try:
        import redis
    except ImportError:
        return "queue_url is set but the redis package is missing: pip install 'outcrop[redis]'"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, OSError) as exc:
        return f"redis at {_without_password(url)}: {exc}"
    return ""


def _without_password(url: str) -> str:
    """A URL fit for a response body: the password replaced by `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


@router.get("/api/datasets", tags=["catalog"])
async def list_datasets(
    request: Request, q: str = "", limit: str | None = None, offset: str | None = None
) -> Response:
    """A page of the catalog, ordered by id; `q` filters on id, title and description."""
    reject_unknown(request, {"q", "limit", "offset"})
    size, start = parse_page(limit, offset)
    found, total = await run_blocking(request, pipeline_of(request).catalog.search, q, size, start)
    base = str(request.base_url).rstrip("/")
    return json_response(
        request,
        {
            "total": total,
            "limit": size,
            "offset": start,
            "datasets": [{**row.__dict__, "url": f"{base}/api/datasets/{row.id}"} for row in found],
        },
    )


@router.get("/api/datasets/{ds_id:path}/data", tags=["data"])
async def dataset_data(request: Request, ds_id: str) -> Response:
    """A subset by coordinate values, streamed.

    `var=ta,pr` (default: all data variables), `<coord>=<start>/<stop>` (inclusive, either
    end may be empty) or `<coord>=<value>` (nearest point), `stride=lat:2,lon:2`, and
    `format=nc|csv|json|arrow|parquet` (NetCDF4, CSV, CF-JSON, Arrow IPC stream, Parquet).
    Times are ISO 8601 in the coordinate's calendar. docs/rest.md has the rules.
    """
    pipeline = pipeline_of(request)
    if ds_id not in pipeline.catalog and f"{ds_id}/data" in pipeline.catalog:
        return await dataset_info(request, f"{ds_id}/data")  # a dataset named `…/data`
    params = request.query_params.multi_items()
    plan: SubsetPlan = await run_blocking(request, plan_subset, pipeline, ds_id, params)
    name = ds_id.rsplit("/", 1)[-1].replace('"', "")
    headers = {
        "ETag": plan.etag,
        "Last-Modified": formatdate(plan.last_modified, usegmt=True),
        "Vary": "Accept-Encoding",
        "Content-Disposition": f'inline; filename="{name}.{plan.encoder.extension}"',
    }
    if not_modified(request, plan.etag, plan.last_modified):
        return Response(status_code=304, headers=headers)
    rendered = await render_watched(request, plan)
    if rendered is None:  # the client went away while its file was being written
        return Response(status_code=499)
    chunks = rendered.chunks
    if is_text(plan.encoder.media_type) and accepts_gzip(request.headers.get("accept-encoding")):
        chunks = gzipped(chunks)
        headers["Content-Encoding"] = "gzip"
    elif rendered.length is not None:
        headers["Content-Length"] = str(rendered.length)
    return ClosingStreamingResponse(
        in_threads(request, chunks, rendered.close),
        media_type=plan.encoder.media_type,
        headers=headers,
        on_close=rendered.close,
    )


class ClosingStreamingResponse(StreamingResponse):
    """A streamed body that releases what it holds (a temporary file) however the response
    ends, even when the client left before the body started (its iterator never ran)."""

    def __init__(self, *args: Any, on_close: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


async def render_watched(request: Request, plan: SubsetPlan) -> Rendered | None:
    """`render_subset` in the thread pool, cancelled if the client disconnects meanwhile
    (writing a NetCDF file can take minutes); None then."""
    cancel = threading.Event()

    async def watch() -> None:
        while not await request.is_disconnected():
            await anyio.sleep(DISCONNECT_POLL_S)
        cancel.set()

    async with anyio.create_task_group() as group:
        group.start_soon(watch)
        try:
            rendered: Rendered = await run_blocking(request, render_subset, plan, cancel)
        except Cancelled:
            return None
        finally:
            group.cancel_scope.cancel()
    return rendered


def gzipped(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """gzip (RFC 1952) of a stream, block by block."""
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)
    for block in chunks:
        packed = packer.compress(block)
        if packed:
            yield packed
    yield packer.flush()


def is_text(media_type: str) -> bool:
    return media_type.startswith("text/") or media_type.startswith("application/json")


def accepts_gzip(header: str | None) -> bool:
    """Whether `Accept-Encoding` allows gzip (RFC 9110 §12.5.3): named or `*`, q > 0."""
    for part in (header or "").split(","):
        coding, _, params = part.partition(";")
        if coding.strip().lower() not in ("gzip", "x-gzip", "*"):
            continue
        weight = params.strip().lower().removeprefix("q=")
        try:
            return not params.strip() or float(weight) > 0
        except ValueError:
            return False
    return False


def not_modified(request: Request, etag: str, last_modified: float) -> bool:
    """RFC 9110 §13.1.2-3: If-None-Match (weak comparison) wins over If-Modified-Since."""
    match = request.headers.get("if-none-match")
    if match is not None:
        return none_match(match, etag)
    since = request.headers.get("if-modified-since")
    if since is None:
        return False
    try:
        return int(last_modified) <= parsedate_to_datetime(since).timestamp()
    except (TypeError, ValueError):
        return False


@router.get("/api/datasets/{ds_id:path}", tags=["catalog"])
async def dataset_info(request: Request, ds_id: str) -> Response:
    """Dimensions, coordinates with their ranges, variables, attributes, version and links."""
    reject_unknown(request, set())
    pipeline = pipeline_of(request)
    entry = pipeline.entry(ds_id)
    etag = f'"{entry.version}-info"'
    if none_match(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers={"ETag": etag})
    info = await run_blocking(request, pipeline.info, ds_id)
    base = str(request.base_url).rstrip("/")
    info["links"] = {
        "self": f"{base}/api/datasets/{ds_id}",
        "data": f"{base}/api/datasets/{ds_id}/data",
        "zarr": f"{base}/zarr/{ds_id}",
        "html": f"{base}/datasets/{ds_id}",
    }
    return json_response(request, info, etag)
