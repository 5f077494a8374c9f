"""`create_app()`: the FastAPI application, with the Zarr and OPeNDAP fast paths in front."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio.to_thread
import orjson
import structlog
from anyio import CapacityLimiter
from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware

from outcrop.api.errors import problem
from outcrop.api.middleware import (
    Receive,
    Scope,
    Send,
    TrustedProxies,
    forwarded,
    handle,
    internal_problem,
    with_request_id,
)
from outcrop.api.routes import Prefix, Site, install
from outcrop.catalog import Catalog
from outcrop.errors import OutcropError
from outcrop.log import logger
from outcrop.pipeline import Pipeline
from outcrop.settings import Settings, load_settings

log = logger(__name__)


class OutcropApp:
    """Routes the fast-path prefixes (`/zarr/…`, `/opendap/…`) to their bare ASGI apps and
    the rest to FastAPI; every request goes through `middleware.handle` (request id,
    access line, metrics)."""

    def __init__(self, api: FastAPI, prefixes: list[Prefix], settings: Settings) -> None:
        self.api = api
        self.prefixes = tuple(prefixes)
        self.trusted = TrustedProxies(settings.forwarded_allow_ips)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.api(scope, receive, send)
            return
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        for prefix in self.prefixes:
            if prefix.answers(path):
                inner = {**scope, "path": path[len(prefix.prefix) :]}
                await handle(
                    prefix.app,
                    inner,
                    receive,
                    send,
                    path=scope["path"],
                    level=prefix.level,
                    route=prefix.route,
                    trusted=self.trusted,
                )
                return
        api_scope = forwarded(scope, self.trusted)
        await handle(
            self.api,
            api_scope,
            receive,
            send,
            path=scope["path"],
            level=logging.INFO,
            route=None,
            trusted=self.trusted,
        )


def create_app(settings: Settings | None = None, catalog: Catalog | None = None) -> OutcropApp:
    """The whole server, with the route sets `settings.routes` switches on; `catalog`
    defaults to the one in the settings' database."""
    settings = settings or load_settings()
    catalog = catalog or Catalog(settings)
    if not len(catalog):
        catalog.load()
    pipeline = Pipeline(settings, catalog)
    limiter = CapacityLimiter(settings.threads)
    from outcrop.jobs import JobService, Stoppable

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        running: list[Stoppable] = [s for s in (start() for start in site.services) if s]
        yield
        for service in reversed(running):  # the job consumer puts its current job back
            await anyio.to_thread.run_sync(service.stop)
        pipeline.close()

    # Swagger UI served from the package (fastapi-offline), not from a CDN.
    api = FastAPIOffline(
        static_url="/static/docs",
        title="Outcrop",
        version=_version(),
        lifespan=lifespan,
        description="Scientific data archives over Zarr, REST and more.",
    )
    site = Site(api, settings, pipeline, limiter)
    api.state.settings = settings
    api.state.pipeline = pipeline
    api.state.limiter = limiter
    api.state.jobs = JobService(settings, catalog)
    api.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "HEAD", "OPTIONS", "POST", "DELETE"],
        allow_headers=["*"],
        expose_headers=["ETag", "Content-Length", "X-Request-ID"],
    )
    api.add_exception_handler(OutcropError, outcrop_error)  # type: ignore[arg-type]
    api.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
    api.add_exception_handler(Exception, internal_error)
    from outcrop.api import metrics, rest

    api.include_router(rest.service)
    api.include_router(metrics.router)
    api.state.routes = install(site, settings.routes)
    api.state.metrics = metrics.registry_for(
        settings, catalog.engine, _queue_depth(settings) if "jobs" in api.state.routes else None
    )
    return OutcropApp(api, site.prefixes, settings)


def _queue_depth(settings: Settings) -> Callable[[], int]:
    def depth() -> int:
        from outcrop.jobs.queue import queue_for

        return int(queue_for(settings).huey.pending_count())

    return depth


async def outcrop_error(_: Request, exc: OutcropError) -> Response:
    status, body = problem(exc)
    if status >= 500:
        log.error("request_error", status=status, error=exc.message, exc_info=exc)
        request_id = structlog.contextvars.get_contextvars().get("request_id", "")
        body = with_request_id(body, request_id)
    return Response(body, status_code=status, media_type="application/problem+json")


async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """Framework errors (unknown route, wrong method) as problem documents, or as the HTML
    404 page for a browser."""
    from outcrop.web import pages

    if exc.status_code == 404 and pages.wants_html(request):
        return pages.not_found(request, f"There is no page at {request.url.path}.")
    body = orjson.dumps(
        {
            "type": "about:blank",
            "title": exc.detail,
            "status": exc.status_code,
            "detail": exc.detail,
        }
    )
    return Response(
        body,
        status_code=exc.status_code,
        media_type="application/problem+json",
        headers=exc.headers,
    )


async def internal_error(_: Request, exc: Exception) -> Response:
    """A bug: a 500 problem document naming the request id. Starlette raises the exception
    again after this response, and `middleware.handle` logs it with its traceback."""
    request_id = structlog.contextvars.get_contextvars().get("request_id", "")
    status, body = internal_problem(request_id)
    return Response(body, status_code=status, media_type="application/problem+json")


async def run_blocking(request: Request, func: Any, *args: Any) -> Any:
    """The one way routes run blocking file and array work: a bounded thread pool."""
    limiter: CapacityLimiter = request.app.state.limiter
    return await anyio.to_thread.run_sync(func, *args, limiter=limiter)


async def in_threads(
    request: Request, chunks: Iterator[bytes], close: Callable[[], Any] | None = None
) -> AsyncIterator[bytes]:
    """A streamed body, each piece made in the bounded thread pool. An error raised after
    the status was sent is logged and propagates, which cuts the connection (the client
    sees a broken body, never a short one that looks whole); `close` (default: the
    source's own) runs in the pool however the stream ends, e.g. to stop a reader."""
    try:
        while True:
            chunk = await run_blocking(request, next, chunks, None)
            if chunk is None:
                return
            yield chunk
    except Exception:
        log.exception("stream_failed", path=request.url.path)
        raise
    finally:
        done = close if close is not None else partial(close_source, chunks)
        with anyio.CancelScope(shield=True):
            await run_blocking(request, done)


def close_source(items: Iterator[Any]) -> None:
    """Close a generator (or anything with `close`), e.g. one that runs a reader program."""
    close: Any = getattr(items, "close", None)
    if close is not None:
        close()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("outcrop")
    except PackageNotFoundError:
        return "0+unknown"


def app_from_environment() -> OutcropApp:
    """Factory for `uvicorn --factory` worker processes: settings come from the environment."""
    from outcrop.log import configure

    settings = Settings.model_validate_json(os.environ["OUTCROP_SERVE_SETTINGS"])
    configure(settings.log_level, settings.quiet)
    return create_app(settings)
