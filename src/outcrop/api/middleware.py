"""Plain ASGI pieces that wrap every request: the request id, the access log line, the
request metrics, errors nobody handled, and `X-Forwarded-*` from a trusted proxy.

They are bare ASGI (not Starlette's `BaseHTTPMiddleware`) because the Zarr route answers
thousands of requests a second and must not pay for a second task per request.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
import structlog

from outcrop.api.counters import observe
from outcrop.api.errors import problem
from outcrop.errors import OutcropError
from outcrop.log import enabled, logger

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logger("outcrop.access")
REQUEST_ID = b"x-request-id"
MAX_ID_LENGTH = 200


def request_id_of(scope: Scope) -> str:
    """The caller's `X-Request-ID` when it is a short printable token, else a fresh one."""
    for key, value in scope["headers"]:
        if key == REQUEST_ID:
            text = bytes(value).decode("latin-1").strip()
            if 0 < len(text) <= MAX_ID_LENGTH and text.isprintable():
                return text
            break
    # An identifier, not a secret: no system call per request (`random` is seeded from
    # the OS at start and again in every forked worker).
    return f"{random.getrandbits(64):016x}"


async def handle(
    app: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    path: str,
    level: int,
    route: str | None,
    trusted: TrustedProxies,
) -> None:
    """Run `app` with a request id bound for the logs and sent back in `X-Request-ID`, then
    count the request in the metrics and write its access line.

    An exception that escapes `app` is logged once, with its traceback and the request id;
    if no response has started, the client gets a 500 problem document naming the request
    id instead of a dropped connection. `path` is the path the client asked for; `route`
    the name it is counted under (None: the FastAPI route template that answered); `level`
    the level of the access line (the Zarr route logs its requests at debug; a 5xx is
    always logged at error).
    """
    request_id = request_id_of(scope)
    tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
    header = (b"x-request-id", request_id.encode("latin-1"))
    status = sent = 0
    root = scope.get("root_path", "")
    start = time.perf_counter()

    async def send_with_id(message: Message) -> None:
        nonlocal status, sent
        if message["type"] == "http.response.start":
            status = message["status"]
            message["headers"] = [*message.get("headers", ()), header]
        elif message["type"] == "http.response.body":
            sent += len(message.get("body", b""))
        await send(message)

    try:
        await app(scope, receive, send_with_id)
    except Exception:
        log.exception("request_failed", method=scope["method"], path=path)
        if not status:
            status = 500
            await _internal_error(send_with_id, request_id)
    finally:
        seconds = time.perf_counter() - start
        name = route or route_of(scope, root)
        observe(name, scope["method"], status, seconds, sent)
        if status >= 500:
            level = logging.ERROR
        if enabled(level):
            log.log(
                level,
                "request",
                method=scope["method"],
                path=path,
                route=name,
                status=status,
                bytes=sent,
                ms=round(seconds * 1000, 2),
                client=client_address(scope, trusted),
            )
        structlog.contextvars.reset_contextvars(**tokens)


def route_of(scope: Scope, root: str) -> str:
    """The template of the route that answered (`/api/datasets/{ds_id:path}`), from what the
    router left in the scope: the FastAPI route; a mount's prefix (`/static/{path}`); the
    path of a plain route without parameters (`/openapi.json`). `unmatched` when no route
    answered (a 404 for an unknown path), `other` for a plain route with parameters."""
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str):
        return path
    if "endpoint" not in scope:
        return "unmatched"
    if "app_root_path" in scope:  # a Mount: it extends the root path by its prefix
        return f"{scope['root_path'][len(root) :]}/{{path}}"
    return "other" if scope.get("path_params") else str(scope["path"])


def internal_problem(request_id: str) -> tuple[int, bytes]:
    """The 500 problem document of a bug, with the request id that finds its traceback in
    the server log."""
    error = OutcropError(f"internal error; the server log has the details (request {request_id})")
    status, body = problem(error)
    return status, with_request_id(body, request_id)


def with_request_id(body: bytes, request_id: str) -> bytes:
    """A problem document with the extension member `request_id` (RFC 9457 §3.2)."""
    return body[:-1] + b',"request_id":' + orjson.dumps(request_id) + b"}"


async def _internal_error(send: Send, request_id: str) -> None:
    status, body = internal_problem(request_id)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class TrustedProxies:
    """Which direct peers may set `X-Forwarded-*`: `*`, or addresses and networks."""

    def __init__(self, spec: str) -> None:
        items = [s.strip() for s in spec.split(",") if s.strip()]
        self.everyone = "*" in items
        self.networks = [ipaddress.ip_network(s, strict=False) for s in items if s != "*"]

    def __contains__(self, host: str | None) -> bool:
        if self.everyone or host is None:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in net for net in self.networks)


def forwarded(scope: Scope, trusted: TrustedProxies) -> Scope:
    """The scope as the client saw it, from a trusted proxy's `X-Forwarded-Proto`, `-Host`
    and `-For` (the de-facto headers nginx sets; MDN "X-Forwarded-*")."""
    client = scope.get("client")
    if client is not None and client[0] not in trusted:
        return scope
    headers = {
        bytes(k).decode("latin-1"): bytes(v).decode("latin-1")
        for k, v in scope["headers"]
        if k.startswith(b"x-forwarded-")
    }
    if not headers:
        return scope
    scope = dict(scope)
    proto = _first(headers.get("x-forwarded-proto"))
    if proto in ("http", "https"):
        scope["scheme"] = proto
    host = _first(headers.get("x-forwarded-host"))
    if host:
        rest = [(k, v) for k, v in scope["headers"] if k != b"host"]
        scope["headers"] = [(b"host", host.encode("latin-1")), *rest]
    hop = _forwarded_for(headers.get("x-forwarded-for", ""), trusted)
    if hop is not None:
        scope["client"] = (hop, 0)
    return scope


def client_address(scope: Scope, trusted: TrustedProxies) -> str | None:
    """The client's address: the peer's, or the one a trusted proxy forwarded for."""
    client = scope.get("client")
    peer: str | None = client[0] if client is not None else None
    if peer is not None and peer not in trusted:
        return peer
    for key, value in scope["headers"]:
        if key == b"x-forwarded-for":
            return _forwarded_for(bytes(value).decode("latin-1"), trusted) or peer
    return peer


def _forwarded_for(header: str, trusted: TrustedProxies) -> str | None:
    """The first hop from the right that is not a trusted proxy (or the leftmost one):
    the hops left of it could have been written by anybody."""
    chain = [h.strip() for h in header.split(",") if h.strip()]
    for hop in reversed(chain):
        if hop not in trusted or hop == chain[0]:
            return hop
    return None


def _first(value: str | None) -> str:
    return value.split(",")[0].strip() if value else ""
