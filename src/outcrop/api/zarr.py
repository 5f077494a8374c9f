"""Zarr v2 and v3 over HTTP at `/zarr/{id}/{key}`, as a bare ASGI app.

This route carries most of the traffic (every chunk is a request), so it bypasses the
framework's routing and validation: a dict lookup for metadata, a cached or stored byte
range for a chunk. Both formats share one URL; the key tells which (`zarr.json`, `c/…` are
v3; `.zmetadata`, `.zarray`, dotted chunk keys are v2).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from html import escape
from typing import Any
from urllib.parse import quote

import anyio.to_thread
import orjson
from anyio import CapacityLimiter

from outcrop.api.conditional import UNSATISFIABLE, byte_range, none_match
from outcrop.api.errors import problem
from outcrop.catalog import Entry
from outcrop.errors import DatasetNotFound, OutcropError
from outcrop.formats.zarr import VIEW_LAYOUT, ZarrView
from outcrop.log import logger
from outcrop.pipeline import Pipeline, zarr_format_of

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logger(__name__)
JSON = b"application/json"
OCTETS = b"application/octet-stream"
HTML = b"text/html; charset=utf-8"
ALLOW = b"GET, HEAD, OPTIONS"


class ZarrApp:
    """Serves `/zarr/…` (the prefix already removed from `scope["path"]`)."""

    def __init__(self, pipeline: Pipeline, limiter: CapacityLimiter) -> None:
        self.pipeline = pipeline
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if await answered_method(method, send):
            return
        try:
            status, body, kind, headers = await self.answer(scope)
        except OutcropError as exc:
            status, body = problem(exc)
            kind, headers = b"application/problem+json", []
            if status >= 500:
                log.error("zarr_failed", path=scope["path"], error=exc.message)
        await respond(
            send, status, b"" if method == "HEAD" else body, kind, extra=headers, length=len(body)
        )

    async def answer(
        self, scope: Scope
    ) -> tuple[int, bytes | bytearray, bytes, list[tuple[bytes, bytes]]]:
        entry, key = self.resolve(scope["path"])
        fmt = zarr_format_of(key)
        view = self.pipeline.cached_view(entry, fmt)
        if view is None:
            view = await anyio.to_thread.run_sync(
                self.pipeline.zarr_view, entry, fmt, limiter=self.limiter
            )
        # One validator for the documents and the chunks of a view: a chunk's bytes follow
        # from the dataset version, the format and the codec, as the documents do.
        codec = "" if view.codec == "stored" else f"-{view.codec}"
        mirror = "-m" if view.mirror else ""  # the documents differ from xarray's
        etag = f'"{entry.version}-z{VIEW_LAYOUT}-{fmt}{codec}{mirror}"'
        asked = request_headers(scope)
        doc, read = None, None
        if not key:
            if not scope["path"].endswith("/"):
                # the listing's links are relative to the group's folder: send clients there
                folder = entry.id.rsplit("/", 1)[-1] + "/"
                return 308, b"", HTML, [(b"location", quote(folder).encode())]
            kind = HTML
        elif (doc := view.documents.get(key)) is not None:
            kind = JSON
        else:
            name = key.rsplit("/", 1)[-1]
            if name in (".zarray", ".zattrs", ".zgroup", "zarr.json", ".zmetadata"):
                raise DatasetNotFound(f"no key {key!r} in dataset {entry.id!r}")
            read = self.pipeline.locate_chunk(entry, view, key)
            if read is None:
                raise DatasetNotFound(f"chunk {key!r} was never written: read it as the fill value")
            kind = OCTETS
        if none_match(asked.get(b"if-none-match"), etag):
            return 304, b"", kind, [(b"etag", etag.encode())]  # nothing made or read
        if read is not None:
            body = read.data if read.data is not None else self.pipeline.read_if_cached(read)
            if body is None:
                body = await anyio.to_thread.run_sync(
                    self.pipeline.read_chunk, entry, read, limiter=self.limiter
                )
        else:
            body = doc if doc is not None else listing(entry, view)
        return partial(asked, body, kind, etag)

    def resolve(self, path: str) -> tuple[Entry, str]:
        """Split `{id}/{key}`: the longest leading part that names a dataset is the id."""
        parts = path.strip("/").split("/")
        catalog = self.pipeline.catalog
        whole = "/".join(p for p in parts if p)
        if whole in catalog:
            return catalog.get(whole), ""  # the group itself: its listing
        for cut in range(len(parts) - 1, 0, -1):
            ds_id = "/".join(parts[:cut])
            if ds_id in catalog:
                return catalog.get(ds_id), "/".join(parts[cut:])
        raise DatasetNotFound(
            f"no dataset in {path!r}; Zarr keys are /zarr/{{id}}/{{key}}, ids are listed at "
            "/api/datasets"
        )


def listing(entry: Entry, view: ZarrView) -> bytes:
    """The group's members as HTML links, for the clients that list a store instead of
    reading its consolidated metadata (`xarray.open_zarr(url, consolidated=False)`:
    zarr-python lists through fsspec, which reads the `href`s of a page); without the
    listing they saw an empty group. Only the members are links: a link to `.zmetadata`
    or `zarr.json` would be taken for a member by the other format's readers."""
    suffix = "/zarr.json" if view.zarr_format == 3 else "/.zarray"
    names = sorted(key.removesuffix(suffix) for key in view.documents if key.endswith(suffix))
    items = "".join(f'<li><a href="{escape(name)}">{escape(name)}</a></li>' for name in names)
    title = escape(f"Zarr group {entry.id}")
    page = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"</head><body><h1>{title}</h1><p>Open it with <code>xarray.open_zarr</code> on this "
        "URL. Its consolidated metadata: <code>.zmetadata</code> (Zarr v2), "
        f"<code>zarr.json</code> (v3).</p><ul>{items}</ul></body></html>"
    )
    return page.encode()


def request_headers(scope: Scope) -> dict[bytes, str]:
    """The request's headers by lower-case name (ASGI gives them so), as text."""
    return {bytes(name): bytes(value).decode("latin-1") for name, value in scope["headers"]}


def partial(
    asked: dict[bytes, str], body: bytes | bytearray, kind: bytes, etag: str
) -> tuple[int, bytes | bytearray, bytes, list[tuple[bytes, bytes]]]:
    """The body, or the one byte range asked of it (206, or 416 past its end), with the
    validator that revalidates it (`no-cache`: a cache asks again, and gets a 304)."""
    headers = [
        (b"etag", etag.encode()),
        (b"cache-control", b"no-cache"),
        (b"accept-ranges", b"bytes"),
    ]
    size = len(body)
    span = byte_range(asked.get(b"range"), size, asked.get(b"if-range"), etag)
    if span is None:
        return 200, body, kind, headers
    if span == UNSATISFIABLE:
        return 416, b"", kind, [*headers, (b"content-range", f"bytes */{size}".encode())]
    start, stop = span
    content_range = f"bytes {start}-{stop - 1}/{size}".encode()
    return 206, body[start:stop], kind, [*headers, (b"content-range", content_range)]


async def answered_method(method: str, send: Send) -> bool:
    """Answer a CORS preflight, or refuse a method other than GET and HEAD; True when
    the request is answered so."""
    if method == "OPTIONS":
        await respond(send, 204, b"", b"text/plain", extra=cors_preflight())
        return True
    if method not in ("GET", "HEAD"):
        await respond(send, 405, b"", b"text/plain", extra=[(b"allow", ALLOW)])
        return True
    return False


def cors_preflight() -> list[tuple[bytes, bytes]]:
    return [
        (b"access-control-allow-methods", ALLOW),
        (b"access-control-allow-headers", b"*"),
        (b"access-control-max-age", b"86400"),
    ]


async def respond(
    send: Send,
    status: int,
    body: bytes | bytearray,
    kind: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
    length: int | None = None,
) -> None:
    headers = [
        (b"content-type", kind),
        (b"content-length", str(len(body) if length is None else length).encode()),
        (b"access-control-allow-origin", b"*"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def json_bytes(value: Any) -> bytes:
    return orjson.dumps(value)
