"""OPeNDAP at `/opendap/{id}.{suffix}`: DAP2 (`.dds .das .dods .ascii .ver`) and DAP4
(`.dmr .dmr.xml .dap`), as a bare ASGI app; the `.html` form is a page of `web/`.

Everything that can fail is checked before the status line: the dataset, the suffix,
the constraint, the response's size. Small responses (a time step, every metadata
document) are made once per dataset version and constraint and then served from the
memory LRU, so a busy client costs a dict lookup. Large ones stream in slabs from a
thread; if a read fails after the first byte, the connection is dropped, so the client
sees a short body (a Content-Length it did not get, or a chunked body without its last
chunk), never values that are silently wrong. The format modules are imported on first
use, so starting the server does not pay for them.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import anyio.to_thread
from anyio import CapacityLimiter

from outcrop.api.errors import status_of
from outcrop.api.zarr import Receive, Scope, Send, answered_method, respond
from outcrop.catalog import Entry
from outcrop.errors import DatasetNotFound, OutcropError, SourceError, TooLarge
from outcrop.formats.dap import Constraint, Projection, whole
from outcrop.log import logger
from outcrop.pipeline import Pipeline

if TYPE_CHECKING:
    import xarray as xr

log = logger(__name__)
TEXT = b"text/plain; charset=utf-8"
DMR_TYPE = b"application/vnd.opendap.dap4.dataset-metadata+xml"
DAP_TYPE = b"application/vnd.opendap.dap4.data"
CACHED_MAX = 8 << 20  # responses up to this size are kept in the memory LRU
SERVER = [(b"xdods-server", b"dods/3.2"), (b"xopendap-server", b"outcrop/dap-3.2")]


@dataclass(frozen=True)
class Suffix:
    """What one URL suffix answers: its protocol (2 or 4), media type and description."""

    name: str
    protocol: int
    media_type: bytes
    description: bytes


SUFFIXES = {
    s.name: s
    for s in (
        Suffix(".dds", 2, TEXT, b"dods_dds"),
        Suffix(".das", 2, TEXT, b"dods_das"),
        Suffix(".dods", 2, b"application/octet-stream", b"dods_data"),
        Suffix(".ascii", 2, TEXT, b"dods_ascii"),
        Suffix(".asc", 2, TEXT, b"dods_ascii"),
        Suffix(".ver", 2, TEXT, b"dods_version"),
        Suffix(".dmr.xml", 4, DMR_TYPE, b"dap4-dmr"),
        Suffix(".dmr", 4, DMR_TYPE, b"dap4-dmr"),
        Suffix(".dap", 4, DAP_TYPE, b"dap4-data"),
    )
}
# Longest first, so `.dmr.xml` is not read as `.xml` after an id ending in `.dmr`.
SUFFIX_ORDER = sorted(SUFFIXES, key=len, reverse=True)


@dataclass(frozen=True)
class Answer:
    """A response decided before its first byte: a whole body, or blocks to stream."""

    body: bytes = b""
    blocks: Iterator[bytes] | None = None
    length: int | None = None
    headers: tuple[tuple[bytes, bytes], ...] = ()
    small: bool = False  # small enough to make whole before answering, and to cache


class OpendapApp:
    """Serves `/opendap/…` (the prefix already removed from `scope["path"]`)."""

    def __init__(self, pipeline: Pipeline, limiter: CapacityLimiter) -> None:
        self.pipeline = pipeline
        self.limiter = limiter
        self._servable: OrderedDict[tuple[str, str], xr.Dataset] = OrderedDict()
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if await answered_method(method, send):
            return
        path = scope["path"]
        if not any(path.endswith(name) for name in SUFFIX_ORDER):
            bare = self.pipeline.catalog.known_id(path.strip("/"))
            if bare is not None:  # `/opendap/{id}`: DAP4 by its media types, else the form
                negotiated = _negotiate(scope)
                if negotiated is None:
                    page = bare.rsplit("/", 1)[-1] + ".html"
                    await respond(send, 303, b"", TEXT, [(b"location", page.encode())])
                    return
                path += negotiated
        suffix = _suffix_of(path)
        try:
            entry, suffix = self.resolve(path)
            query = scope.get("query_string", b"").decode("latin-1")
            answer = self.cached(entry, suffix, query)
            if answer is None:
                answer = await anyio.to_thread.run_sync(
                    self.answer, entry, suffix, query, limiter=self.limiter
                )
        except OutcropError as exc:
            await self.fail(send, exc, suffix, scope["path"])
            return
        headers = [(b"content-description", suffix.description), *SERVER, *answer.headers]
        if method == "HEAD":
            _close(answer.blocks)
            length = len(answer.body) if answer.blocks is None else answer.length
            await respond(send, 200, b"", suffix.media_type, headers, length=length)
        elif answer.blocks is None:
            await respond(send, 200, answer.body, suffix.media_type, headers)
        else:
            await self.stream(send, answer, suffix, headers)

    def resolve(self, path: str) -> tuple[Entry, Suffix]:
        """The dataset and suffix of `{id}{suffix}`; the id may keep its file extension."""
        suffix = _suffix_of(path)
        ds_id = path.strip("/")[: -len(suffix.name)] if path.endswith(suffix.name) else ""
        if not ds_id:
            raise DatasetNotFound(
                f"no dataset and suffix in {path!r}: ask for /opendap/{{id}}{{suffix}}, "
                f"suffix one of {', '.join(SUFFIX_ORDER[::-1])} or .html; ids are listed "
                "at /api/datasets"
            )
        catalog = self.pipeline.catalog
        known = catalog.known_id(ds_id)
        if known is None:
            raise DatasetNotFound(f"no dataset {ds_id!r}; ids are listed at /api/datasets")
        ds_id = known
        return catalog.get(ds_id), suffix

    def cached(self, entry: Entry, suffix: Suffix, query: str) -> Answer | None:
        body = self.pipeline.chunks.get(_cache_key(entry, suffix, query))
        return None if body is None else Answer(body=body, length=len(body))

    def answer(self, entry: Entry, suffix: Suffix, query: str) -> Answer:
        """Blocking: open the dataset, check the request, and make or start the body."""
        from outcrop.formats import dap2

        if suffix.name == ".ver":
            return Answer(body=dap2.version().encode())
        ds = self.pipeline.stored_dataset(entry.id)
        name = _document_name(entry)
        if suffix.protocol == 2:
            answer = self._dap2(ds, name, entry, suffix, query)
        else:
            answer = self._dap4(ds, name, entry, suffix, query)
        if answer.blocks is not None and answer.small:
            body = b"".join(answer.blocks)
            if answer.length is not None and len(body) != answer.length:
                raise SourceError(
                    f"{entry.id}: a response of {len(body)} bytes, {answer.length} announced"
                )
            answer = Answer(body=body, length=len(body), headers=answer.headers)
        if answer.blocks is None and len(answer.body) <= CACHED_MAX:
            self.pipeline.chunks.set(_cache_key(entry, suffix, query), answer.body)
        return answer

    def _dap2(self, ds: xr.Dataset, name: str, entry: Entry, suffix: Suffix, query: str) -> Answer:
        from outcrop.formats import dap2

        ds = self._dap2_form(entry, ds)
        constraint = dap2.parse_constraint(query, ds)
        if suffix.name == ".dds":
            return Answer(body=dap2.dds(ds, name, constraint).encode())
        if suffix.name == ".das":
            return Answer(body=dap2.das(ds).encode())
        small = self._check_size(ds, constraint) <= CACHED_MAX // 2
        values = self.pipeline.values(entry)
        if suffix.name == ".dods":
            length = dap2.dods_length(ds, name, constraint)
            blocks = dap2.dods(ds, name, constraint, values)
            return Answer(blocks=blocks, length=length, small=small)
        return Answer(blocks=dap2.ascii(ds, name, constraint, values), small=small)

    def _dap2_form(self, entry: Entry, ds: xr.Dataset) -> xr.Dataset:
        """The dataset as DAP2 can carry it exactly (`dap2.servable`), once per version:
        it reads the 64-bit integer variables to see whether Float64 holds them."""
        from outcrop.formats import dap2

        key = (entry.id, entry.version)
        with self._lock:
            found = self._servable.get(key)
        if found is None:
            found = dap2.servable(ds, self.pipeline.values(entry))
            with self._lock:
                self._servable[key] = found
                while len(self._servable) > self.pipeline.settings.open_files:
                    self._servable.popitem(last=False)
        return found

    def _dap4(self, ds: xr.Dataset, name: str, entry: Entry, suffix: Suffix, query: str) -> Answer:
        from outcrop.formats import dap4

        params = dict(parse_qsl(query, keep_blank_values=True))
        constraint = dap4.parse_constraint(params.get("dap4.ce", ""), ds)
        checksums = params.get("dap4.checksum", "false").lower() == "true"
        values = self.pipeline.values(entry)
        if suffix.name in (".dmr", ".dmr.xml") and not checksums:
            return Answer(body=dap4.dmr(ds, name, constraint).encode())
        small = self._check_size(ds, constraint) <= CACHED_MAX // 2
        if suffix.name in (".dmr", ".dmr.xml"):  # with the data's checksums (§Checksums)
            sums = dap4.crc32s(ds, constraint, values)
            return Answer(body=dap4.dmr(ds, name, constraint, sums).encode())
        blocks = dap4.dap(ds, name, constraint, values, checksums)
        return Answer(blocks=blocks, small=small)

    def _check_size(self, ds: xr.Dataset, constraint: Constraint) -> int:
        """The request's size in bytes of values; more than `max_response_mb` is refused
        before any data."""
        projections = constraint or tuple(whole(ds, str(n)) for n in ds.variables)
        size = sum(math.prod(p.shape) * _value_size(ds, p) for p in projections)
        limit = self.pipeline.settings.max_response_mb * 2**20
        if size > limit:
            raise TooLarge(
                f"the request is {size / 2**20:.1f} MB, over the limit of "
                f"{self.pipeline.settings.max_response_mb} MB; ask for less (fewer variables, "
                "smaller hyperslabs, a stride) or submit it as a job",
                size=size,
                limit=limit,
            )
        return size

    async def stream(
        self, send: Send, answer: Answer, suffix: Suffix, headers: list[tuple[bytes, bytes]]
    ) -> None:
        """Send blocks made in a thread; a failure after the first byte drops the
        connection (raising here makes the server close it without finishing the body)."""
        assert answer.blocks is not None
        blocks = answer.blocks
        start = [
            (b"content-type", suffix.media_type),
            (b"access-control-allow-origin", b"*"),
            *headers,
        ]
        if answer.length is not None:
            start.append((b"content-length", str(answer.length).encode()))
        nothing = object()
        step: Callable[[], Any] = lambda: next(blocks, nothing)  # noqa: E731
        try:
            first = await anyio.to_thread.run_sync(step, limiter=self.limiter)
        except OutcropError as exc:  # nothing sent yet: an error document is still possible
            await self.fail(send, exc, suffix, "")
            return
        await send({"type": "http.response.start", "status": 200, "headers": start})
        block = first
        try:
            while block is not nothing:
                await send({"type": "http.response.body", "body": block, "more_body": True})
                block = await anyio.to_thread.run_sync(step, limiter=self.limiter)
        except Exception:
            log.error("opendap_body_failed", exc_info=True)
            raise
        finally:
            _close(blocks)
        await send({"type": "http.response.body", "body": b""})

    async def fail(self, send: Send, exc: OutcropError, suffix: Suffix, path: str) -> None:
        """The error the protocol's clients expect: DAP2 `Error {…}` or the DAP4 document."""
        from outcrop.formats import dap2, dap4

        status = status_of(exc)
        if status >= 500:
            log.error("opendap_failed", path=path, error=exc.message)
        if suffix.protocol == 4:
            body, kind = dap4.error(exc.message, status), b"application/xml; charset=utf-8"
        else:
            body, kind = dap2.error(exc.message, status), TEXT
        headers = [(b"content-description", b"dods_error"), *SERVER]
        await respond(send, status, body, kind, headers)


def _negotiate(scope: Scope) -> str | None:
    """The DAP4 suffix a suffix-less request asks for with its Accept header (DAP4
    Vol. 1 §Content negotiation), or None (a person, or a DAP2 client: the form)."""
    accept = b" ".join(v for k, v in scope["headers"] if k == b"accept")
    if DMR_TYPE in accept:
        return ".dmr"
    if DAP_TYPE in accept:
        return ".dap"
    return None


def _value_size(ds: xr.Dataset, projection: Projection) -> int:
    """Bytes per selected position: a DAP2 char array's projection leaves out its
    string-length dimension, whose whole length goes with every string."""
    var = ds.variables[projection.member or projection.name]  # a Grid member: its own
    return int(var.dtype.itemsize) * math.prod(var.shape[len(projection.slabs) :])


def _close(blocks: Iterator[bytes] | None) -> None:
    """Stop a generator of blocks early: its `finally` clauses release what it holds."""
    close = getattr(blocks, "close", None)
    if callable(close):
        close()


def _suffix_of(path: str) -> Suffix:
    for name in SUFFIX_ORDER:
        if path.endswith(name):
            return SUFFIXES[name]
    return SUFFIXES[".dds"]  # only for the error document's form


def _cache_key(entry: Entry, suffix: Suffix, query: str) -> tuple[str, ...]:
    return ("opendap", entry.id, entry.version, suffix.name, query)


def _document_name(entry: Entry) -> str:
    """The dataset's name inside DDS and DMR: its file name, as other servers give it."""
    paths = entry.source.paths
    if len(paths) == 1 and not entry.source.group:
        return paths[0].name
    return entry.id.rsplit("/", 1)[-1]
