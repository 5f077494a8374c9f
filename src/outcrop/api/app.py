"""`create_app()`: the FastAPI application, with the Zarr fast path in front of it."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
import structlog
from anyio import CapacityLimiter
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.middleware.cors import CORSMiddleware

from outcrop.api.errors import problem
from outcrop.api.zarr import Receive, Scope, Send, ZarrApp
from outcrop.catalog import Catalog
from outcrop.errors import OutcropError
from outcrop.log import logger
from outcrop.pipeline import Pipeline
from outcrop.settings import Settings, load_settings

log = logger(__name__)
ZARR_PREFIX = "/zarr/"


class OutcropApp:
    """Routes `/zarr/…` to the bare Zarr app and the rest to FastAPI; binds a request id."""

    def __init__(self, api: FastAPI, zarr: ZarrApp) -> None:
        self.api = api
        self.zarr = zarr

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.api(scope, receive, send)
            return
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if path.startswith(ZARR_PREFIX):
            await self.zarr({**scope, "path": path[len(ZARR_PREFIX) :]}, receive, send)
            return
        await self.api(scope, receive, send)


def create_app(settings: Settings | None = None, catalog: Catalog | None = None) -> OutcropApp:
    """The whole server; `catalog` defaults to the one in the settings' database."""
    settings = settings or load_settings()
    catalog = catalog or Catalog(settings)
    if not len(catalog):
        catalog.load()
    pipeline = Pipeline(settings, catalog)
    limiter = CapacityLimiter(settings.threads)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        pipeline.close()

    api = FastAPI(
        title="Outcrop",
        version=_version(),
        lifespan=lifespan,
        root_path=settings.root_path,
        description="Scientific data archives over Zarr, REST and more.",
    )
    api.state.settings = settings
    api.state.pipeline = pipeline
    api.state.limiter = limiter
    api.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "HEAD", "OPTIONS"],
        allow_headers=["*"],
        expose_headers=["ETag", "Content-Length", "X-Request-ID"],
    )
    api.middleware("http")(log_requests)
    api.add_exception_handler(OutcropError, outcrop_error)  # type: ignore[arg-type]
    from outcrop.api import rest
    from outcrop.web import pages

    api.include_router(rest.router)
    api.include_router(pages.router)
    return OutcropApp(api, ZarrApp(pipeline, limiter))


async def log_requests(request: Request, call_next: Any) -> Response:
    request_id = request.headers.get("x-request-id") or os.urandom(8).hex()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    start = time.perf_counter()
    try:
        response: Response = await call_next(request)
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
    response.headers["X-Request-ID"] = request_id
    log.info(
        "request",
        request_id=request_id,
        method=request.method,
        path=request.url.path,
        status=response.status_code,
        ms=round((time.perf_counter() - start) * 1000, 2),
    )
    return response


async def outcrop_error(_: Request, exc: OutcropError) -> Response:
    status, body = problem(exc)
    return Response(body, status_code=status, media_type="application/problem+json")


async def run_blocking(request: Request, func: Any, *args: Any) -> Any:
    """The one way routes run blocking file and array work: a bounded thread pool."""
    limiter: CapacityLimiter = request.app.state.limiter
    return await anyio.to_thread.run_sync(func, *args, limiter=limiter)


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
