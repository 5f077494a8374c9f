"""`create_app()`: the Zarr and OPeNDAP fast paths, with the FastAPI application behind
them built after start-up."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import orjson
import structlog
from anyio import CapacityLimiter

from outcrop.api.errors import problem
from outcrop.api.middleware import (
    Message,
    Receive,
    Scope,
    Send,
    TrustedProxies,
    forwarded,
    handle,
    internal_problem,
    with_request_id,
)
from outcrop.api.routes import (
    Prefix,
    RouteSet,
    Site,
    install,
    install_prefixes,
    route_sets,
    selected,
)
from outcrop.catalog import Catalog
from outcrop.errors import OutcropError
from outcrop.log import logger
from outcrop.pipeline import Pipeline
from outcrop.settings import Settings, load_settings

if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from fastapi.responses import Response
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from outcrop.jobs import Stoppable

log = logger(__name__)
# Seconds after start-up at which the FastAPI application is built in the background if
# no fast-path request is being answered then (the last one answered starts it earlier).
BUILD_DELAY_S = 1.0


class OutcropApp:
    """Routes the fast-path prefixes (`/zarr/…`, `/opendap/…`) to their bare ASGI apps and
    the rest to FastAPI; every request goes through `middleware.handle` (request id,
    access line, metrics).

    The FastAPI application (importing FastAPI, building every route's models) is not
    built before the server listens: a first start answers its first Zarr or OPeNDAP
    request without waiting for it (with one CPU busy importing FastAPI, the answer would
    wait as long). It is built once, in a background thread, when the fast-path requests
    in progress are all answered, or `BUILD_DELAY_S` after start-up if none is; a request
    that needs it before then (`/healthz`, `/api/…`) builds it, or waits for the build.
    The services of the route sets (the job consumer) start in another background thread
    once it is built (a request waiting for the build does not wait for them too), and
    stop, with the pipeline, at shutdown: this app answers the ASGI lifespan itself.
    """

    def __init__(self, site: Site, chosen: list[RouteSet]) -> None:
        self.site = site
        self.chosen = tuple(chosen)
        self.prefixes = tuple(site.prefixes)
        self.trusted = TrustedProxies(site.settings.forwarded_allow_ips)
        self._api: FastAPI | None = None
        self._failed: BaseException | None = None
        self._lock = threading.Lock()  # held while building
        self._services_lock = threading.Lock()  # held while starting or stopping services
        self._scheduled = False  # a background build was started
        self._timer: threading.Timer | None = None
        self._answering = 0  # fast-path requests in progress
        self._serving = False  # lifespan startup received: services run once built
        self._stopped = False
        self._services_started = False
        self._running: list[Stoppable] = []

    @property
    def api(self) -> FastAPI:
        """The FastAPI application, built now if it is not yet (blocking)."""
        return self.build()

    def build(self) -> FastAPI:
        """Build the FastAPI application once (blocking; concurrent callers wait for the
        first), then start the route sets' services in the background if the server is
        running. A failed build is logged once and raised again to every caller."""
        api = self._api
        if api is not None:
            return api
        with self._lock:
            if self._api is not None:
                return self._api
            if self._failed is not None:
                raise RuntimeError("the HTTP application could not be built") from self._failed
            self._save_catalog()
            try:
                api = build_api(self.site, self.chosen)
            except Exception as exc:
                self._failed = exc
                log.exception("app_build_failed")
                raise
            self.prefixes = tuple(self.site.prefixes)  # `add` may register prefixes too
            self._api = api
        if self._serving:
            self._start_services_soon()
        return api

    def _save_catalog(self) -> None:
        """Write what the start's scan changed to the catalog database (`Catalog.start`);
        a failure is logged, and the write tried again at shutdown."""
        try:
            self.site.pipeline.catalog.save()
        except Exception:  # the server goes on with the catalog it has in memory
            log.exception("catalog_save_failed")

    def build_soon(self) -> None:
        """Start building in a background thread, unless built or already started."""
        if self._api is not None or self._scheduled:
            return
        self._scheduled = True
        threading.Thread(target=self._build_quietly, name="outcrop-app-build", daemon=True).start()

    def _build_if_idle(self) -> None:
        """The start-up timer: build now unless a fast-path request is being answered
        (the last one to finish starts the build)."""
        if not self._answering:
            self.build_soon()

    def _build_quietly(self) -> None:
        with contextlib.suppress(Exception):  # logged by build(); raised again to requests
            self.build()

    def _start_services_soon(self) -> None:
        """Start the services in a background thread (once; see `_start_services`)."""
        name = "outcrop-services"
        threading.Thread(target=self._start_services, name=name, daemon=True).start()

    def _start_services(self) -> None:
        """Start what the route sets run beside the server, once, unless it is stopping
        (a shutdown waits for a start in progress, then stops what it started). A service
        that fails to start is logged; the others start, and the server goes on."""
        with self._services_lock:
            if self._stopped or self._services_started:
                return
            self._services_started = True
            self._connect_database()
            for start in self.site.services:
                try:
                    service = start()
                except Exception as exc:
                    log.exception("service_start_failed", error=f"{type(exc).__name__}: {exc}")
                    continue
                if service is not None:
                    self._running.append(service)

    def _connect_database(self) -> None:
        """Connect the catalog database now, in the background (SQLAlchemy's import and
        the schema check: the build leaves both to first use), so that the first request
        needing it (jobs, images, `/readyz`, `/metrics`) does not wait for them. A failure
        is logged here, and met again, and answered, by that request."""
        from sqlalchemy.exc import SQLAlchemyError

        try:
            _ = self.site.pipeline.catalog.engine
        except (SQLAlchemyError, OSError) as exc:
            log.warning("database_unavailable", error=f"{type(exc).__name__}: {exc}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            await (await self._built())(scope, receive, send)
            return
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        prefix = self._prefix(path)
        if prefix is None and self._api is None:
            # Not a fast path known yet: the application, once built, may add one. (A
            # failed build is answered below: a 500 naming the request id.)
            with contextlib.suppress(Exception):
                await self._built()
            prefix = self._prefix(path)
        if prefix is not None:
            inner = {**scope, "path": path[len(prefix.prefix) :]}
            self._answering += 1
            try:
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
            finally:
                self._answering -= 1
            if not self._answering:
                self.build_soon()
            return
        api_scope = forwarded(scope, self.trusted)
        await handle(
            self._fastapi,
            api_scope,
            receive,
            send,
            path=scope["path"],
            level=logging.INFO,
            route=None,
            trusted=self.trusted,
        )

    def _prefix(self, path: str) -> Prefix | None:
        for prefix in self.prefixes:
            if prefix.answers(path):
                return prefix
        return None

    async def _built(self) -> FastAPI:
        if self._api is not None:
            return self._api
        return await anyio.to_thread.run_sync(self.build)

    async def _fastapi(self, scope: Scope, receive: Receive, send: Send) -> None:
        api = await self._built()
        if scope["method"] == "HEAD" and not _routes_head(api, scope):
            await head_as_get(api, scope, receive, send)
            return
        await api(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message: Message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await anyio.to_thread.run_sync(self._startup)
                except Exception as exc:
                    log.exception("startup_failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await anyio.to_thread.run_sync(self._shutdown)
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _startup(self) -> None:
        self._serving = True
        if self._api is not None:
            self._start_services_soon()  # built before the server started
        self._timer = threading.Timer(BUILD_DELAY_S, self._build_if_idle)
        self._timer.daemon = True
        self._timer.start()

    def _shutdown(self) -> None:
        """Stop the services (the job consumer puts its current job back), then close the
        pipeline; a build in progress is waited for."""
        if self._timer is not None:
            self._timer.cancel()
        with self._lock, self._services_lock:
            self._stopped = True
            running, self._running = self._running, []
        for service in reversed(running):
            service.stop()
        self._save_catalog()
        self.site.pipeline.close()


def create_app(settings: Settings | None = None, catalog: Catalog | None = None) -> OutcropApp:
    """The whole server, with the route sets `settings.routes` switches on; `catalog`
    defaults to the one in the settings' database. An unknown route set raises
    `ConfigError` here; the FastAPI application is built later (see `OutcropApp`)."""
    settings = settings or load_settings()
    chosen = selected(settings.routes, route_sets())
    catalog = catalog or Catalog(settings)
    if not catalog.loaded:
        catalog.load()
    site = Site(settings, Pipeline(settings, catalog), CapacityLimiter(settings.threads))
    install_prefixes(site, chosen)
    return OutcropApp(site, chosen)


def build_api(site: Site, chosen: tuple[RouteSet, ...]) -> FastAPI:
    """The FastAPI application of `site`: the service routes, then every chosen set's."""
    # Swagger UI served from the package (fastapi-offline), not from a CDN.
    from fastapi_offline import FastAPIOffline
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.middleware.cors import CORSMiddleware

    from outcrop.api import metrics, rest
    from outcrop.jobs import JobService

    settings, pipeline = site.settings, site.pipeline
    api = FastAPIOffline(
        static_url="/static/docs",
        title="Outcrop",
        version=_version(),
        description="Scientific data archives over Zarr, REST and more.",
    )
    site.application = api
    api.state.settings = settings
    api.state.pipeline = pipeline
    api.state.limiter = site.limiter
    api.state.jobs = JobService(settings, pipeline.catalog)
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
    api.include_router(rest.service)
    api.include_router(metrics.router)
    api.state.routes = install(site, chosen)
    api.state.metrics = metrics.registry_for(
        settings,
        lambda: pipeline.catalog.engine,
        _queue_depth(settings) if "jobs" in api.state.routes else None,
    )
    return api


def _queue_depth(settings: Settings) -> Callable[[], int]:
    def depth() -> int:
        from outcrop.jobs.queue import queue_for

        return int(queue_for(settings).huey.pending_count())

    return depth


async def outcrop_error(_: Request, exc: OutcropError) -> Response:
    from fastapi.responses import Response

    status, body = problem(exc)
    if status >= 500:
        log.error("request_error", status=status, error=exc.message, exc_info=exc)
        request_id = structlog.contextvars.get_contextvars().get("request_id", "")
        body = with_request_id(body, request_id)
    return Response(body, status_code=status, media_type="application/problem+json")


async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """Framework errors (unknown route, wrong method) as problem documents, or as the HTML
    404 page for a browser."""
    from fastapi.responses import Response

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
    from fastapi.responses import Response

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


def _routes_head(api: FastAPI, scope: Scope) -> bool:
    """A route of `api` takes HEAD for this path itself (the HAPI routes make no body for
    it), or no route has the path (its 404 is answered as it is)."""
    from starlette.routing import Match

    for route in api.router.routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return True
        if match is Match.PARTIAL:  # the path, with other methods
            return False
    return True


class _HeadAnswered(OSError):
    """Raised into a streamed GET answering a HEAD once its headers are out: what a
    server's send raises when the client has gone."""


async def head_as_get(app: Callable[..., Any], scope: Scope, receive: Receive, send: Send) -> None:
    """RFC 9110 §9.3.2: every GET route answers HEAD, with the status and headers of the GET
    and no content (FastAPI's routes take only the methods they name). The GET runs until
    its headers are out; a streamed body then stops being made, as for a client that
    hangs up (the send raises an `OSError`, as uvicorn's does, and `receive` says the
    client is gone)."""
    from starlette.requests import ClientDisconnect

    started = False
    ended = False

    async def headers_only(message: Message) -> None:
        nonlocal started, ended
        if message["type"] == "http.response.start":
            started = True
            await send(message)
        elif message["type"] == "http.response.body":
            if not ended:
                ended = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            if message.get("more_body", False):
                raise _HeadAnswered

    async def gone_once_answered() -> Message:
        if started:
            return {"type": "http.disconnect"}
        return await receive()

    inner = {**scope, "method": "GET"}  # the server's own scope says HEAD: no body is due
    try:
        await app(inner, gone_once_answered, headers_only)
    except (OSError, ClientDisconnect):  # Starlette turns our OSError into the latter
        if not ended:
            raise
    finally:  # what the router noted (the route, for the access line), as a GET would
        scope.update((key, value) for key, value in inner.items() if key != "method")
