"""Plain ASGI pieces that wrap every request: the request id, the access log line, errors
nobody handled, and `X-Forwarded-*` from a trusted proxy.

They are bare ASGI (not Starlette's `BaseHTTPMiddleware`) because the Zarr route answers
thousands of requests a second and must not pay for a second task per request.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import structlog

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
    return os.urandom(8).hex()


async def handle(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send, level: int, path: str
) -> None:
    """Run `app` with a request id bound for the logs and sent back in `X-Request-ID`.

    An exception that escapes `app` is logged with the request id; if no response has
    started, the client gets a 500 problem document instead of a dropped connection.
    `level` is the level of the access line (the Zarr route logs its requests at debug);
    `path` the path it names.
    """
    request_id = request_id_of(scope)
    tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
    header = (b"x-request-id", request_id.encode("latin-1"))
    status = 0
    start = time.perf_counter()

    async def send_with_id(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            message["headers"] = [*message.get("headers", ()), header]
        await send(message)

    try:
        await app(scope, receive, send_with_id)
    except Exception:
        log.exception("request_failed", method=scope["method"], path=path)
        if not status:
            status = 500
            await _internal_error(send_with_id, request_id)
    finally:
        if enabled(level):
            log.log(
                level,
                "request",
                method=scope["method"],
                path=path,
                status=status,
                ms=round((time.perf_counter() - start) * 1000, 2),
            )
        structlog.contextvars.reset_contextvars(**tokens)


async def _internal_error(send: Send, request_id: str) -> None:
    error = OutcropError(f"internal error; the server log has the details (request {request_id})")
    status, body = problem(error)
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
    chain = [h.strip() for h in headers.get("x-forwarded-for", "").split(",") if h.strip()]
    for hop in reversed(chain):
        if hop not in trusted or hop == chain[0]:
            scope["client"] = (hop, 0)
            break
    return scope


def _first(value: str | None) -> str:
    return value.split(",")[0].strip() if value else ""
