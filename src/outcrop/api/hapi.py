"""HAPI 3.3 routes at `/hapi`: the landing page, about, capabilities, catalog, info, data.

Every request is checked (formats/hapi.py) and the first block of data read before the
status is sent; an error before that is a HAPI status document with the HTTP status the
specification gives (HAPI 3.3 §4.2). A failure after the body started cuts the connection
(§3.7.5), so a client never takes a truncated stream for a whole one.
"""

from __future__ import annotations

import html
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import quote

import orjson
import structlog
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from outcrop.api.app import close_source, in_threads, run_blocking
from outcrop.api.rest import accepts_gzip, pipeline_of
from outcrop.errors import OutcropError
from outcrop.formats import hapi, hapitime
from outcrop.log import logger
from outcrop.model import Parameter, SeriesInfo
from outcrop.series import SeriesAnswer

router = APIRouter(tags=["hapi"])
T = TypeVar("T")
log = logger(__name__)
ENDPOINTS = ("about", "capabilities", "catalog", "info", "data")
JSON = "application/json"
GZIP_LEVEL = 1  # CSV compresses to ~35% at level 1, at about the speed it is written
SERVER_ID = "Outcrop"
SERVER_TITLE = "Outcrop time series"
CONTACT = "the administrator of this server"


def hapi_error(exc: OutcropError) -> Response:
    """An error as HAPI clients expect it: a status document and its HTTP status."""
    code, http = hapi.status_of(exc)
    if code >= 1500:
        log.error("hapi_error", code=code, error=exc.message)
    return Response(hapi.error_document(code, exc.message), status_code=http, media_type=JSON)


def document(doc: dict[str, Any]) -> Response:
    return Response(orjson.dumps(doc), media_type=JSON)


async def guarded(request: Request, answer: Callable[[Request], Any]) -> Response:
    """Run a route, turning every error into a HAPI status document: domain errors with
    their code, anything else (a bug, logged with the request id) as 1500."""
    try:
        response: Response = await answer(request)
        return response
    except OutcropError as exc:
        return hapi_error(exc)
    except Exception:
        log.exception("hapi_failed", path=request.url.path)
        request_id = structlog.contextvars.get_contextvars().get("request_id", "")
        return hapi_error(OutcropError(f"the server log has the details (request {request_id})"))


@router.api_route("/hapi", methods=["GET", "HEAD"], response_class=HTMLResponse)
async def landing(request: Request) -> Response:
    """The landing page (HAPI 3.3 §3.2): the endpoints and the time series served."""
    return await guarded(request, _landing)


@router.api_route("/hapi/about", methods=["GET", "HEAD"])
async def about(request: Request) -> Response:
    """Who serves these data (§3.3)."""
    return await guarded(request, _about)


@router.api_route("/hapi/capabilities", methods=["GET", "HEAD"])
async def capabilities(request: Request) -> Response:
    """Output formats csv, binary and json; catalog depths dataset and all (§3.4)."""
    return await guarded(request, _capabilities)


@router.api_route("/hapi/catalog", methods=["GET", "HEAD"])
async def catalog(request: Request) -> Response:
    """Every time series: `id` and `title`; with `depth=all`, each one's info (§3.5)."""
    return await guarded(request, _catalog)


@router.api_route("/hapi/info", methods=["GET", "HEAD"])
async def info(request: Request) -> Response:
    """A dataset's header (§3.6): `dataset` (or `id`), `parameters`, and Outcrop's
    `x_resolution`/`x_statistic`, describing what the matching data request returns."""
    return await guarded(request, _info)


@router.api_route("/hapi/data", methods=["GET", "HEAD"])
async def data(request: Request) -> Response:
    """Records (§3.7): `dataset`, `start`, `stop` (or `id`, `time.min`, `time.max`),
    `parameters`, `format=csv|binary|json`, `include=header`; `x_resolution` (seconds or
    an ISO 8601 duration) and `x_statistic=min,max,mean,count` for reduced data."""
    return await guarded(request, _data)


@router.api_route("/hapi/{rest:path}", methods=["GET", "HEAD"], include_in_schema=False)
async def elsewhere(request: Request, rest: str) -> Response:
    """A trailing slash is redirected (301) to the endpoint without it (§3.1); any other
    path under /hapi is 1400 (§4.1)."""
    name = rest.rstrip("/")
    slashed = rest != name or not rest  # `/hapi/` arrives as an empty rest
    if slashed and name in ("", *ENDPOINTS):
        return RedirectResponse(_without_slash(request), status_code=301)
    detail = f"{hapi.quoted(rest)} is not a HAPI endpoint; use one of {', '.join(ENDPOINTS)}"
    return hapi_error(hapi.HapiError(1400, detail))


def _without_slash(request: Request) -> str:
    url = request.url
    target = url.replace(path=url.path.rstrip("/"))
    return str(target)


def _query(request: Request, endpoint: str) -> hapi.Query:
    return hapi.parse_query(endpoint, request.query_params.multi_items())


async def _landing(request: Request) -> Response:
    _query(request, "about")
    ids: list[str] = await run_blocking(request, pipeline_of(request).series_ids)
    rows = "".join(
        f'<li><a href="hapi/info?dataset={quote(i, safe="/")}">{html.escape(i)}</a></li>'
        for i in ids
    )
    links = " · ".join(f'<a href="hapi/{e}">{e}</a>' for e in ENDPOINTS[:3])
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>HAPI server</title></head>"
        f"<body><h1>{SERVER_TITLE}</h1><p>A HAPI {hapi.HAPI_VERSION} server: {links}.</p>"
        f"<h2>Datasets</h2><ul>{rows}</ul></body></html>"
    )
    return HTMLResponse(page)


async def _about(request: Request) -> Response:
    _query(request, "about")
    description = "Time series of the datasets this Outcrop server publishes."
    return document(hapi.about_document(SERVER_ID, SERVER_TITLE, CONTACT, description))


async def _capabilities(request: Request) -> Response:
    _query(request, "capabilities")
    return document(hapi.capabilities_document())


async def _catalog(request: Request) -> Response:
    query = _query(request, "catalog")
    pipeline = pipeline_of(request)
    ids: list[str] = await run_blocking(request, pipeline.series_ids)
    rows = []
    for ds_id in ids:
        full = None
        if query.get("depth") == "all":
            full = await _info_document(request, ds_id, hapi.Query({"dataset": ds_id}))
        rows.append((ds_id, pipeline.catalog.get(ds_id).title, full))
    return document(hapi.catalog_document(rows))


async def _info(request: Request) -> Response:
    query = _query(request, "info")
    return document(await _info_document(request, query.dataset, query))


async def series_info(request: Request, ds_id: str) -> SeriesInfo:
    found: SeriesInfo = await run_blocking(request, pipeline_of(request).series_info, ds_id)
    return found


async def _info_document(request: Request, ds_id: str, query: hapi.Query) -> dict[str, Any]:
    from outcrop.reduce import auto_levels, parse_width

    found = await series_info(request, ds_id)
    selection = hapi.select(query, found, parse_width)
    layout = hapi.Layout(
        hapitime.time_format(found.cadence, selection.width), reduced_columns(selection)
    )
    levels = found.levels or auto_levels(found)
    return hapi.info_document(
        found,
        layout,
        selection,
        max_bytes=max_bytes(request),
        levels=levels,
        answered=answered_width(levels, selection.width),
    )


def answered_width(levels: tuple[int, ...], width: int | None) -> int | None:
    """The bin width a reduced request gets (what the pipeline's cache will answer)."""
    from outcrop.reduce import effective_width

    return None if width is None else effective_width(levels, width)[1]


def reduced_columns(selection: hapi.Selection) -> tuple[Parameter, ...]:
    """The columns the matching data request returns, as the pipeline names them."""
    if selection.width is None:
        return selection.parameters
    from outcrop.reduce import answer_block, empty_bins

    wanted = list(selection.parameters)
    none = empty_bins(wanted, selection.width, 0, 0)
    return answer_block(none, wanted, selection.statistics)[0]


def max_bytes(request: Request) -> int:
    mb: int = request.app.state.settings.max_response_mb
    return mb * 2**20


async def _data(request: Request) -> Response:
    from outcrop.reduce import parse_width

    query = _query(request, "data")
    found = await series_info(request, query.dataset)
    selection = hapi.select(query, found, parse_width)
    plan = hapi.data_plan(query, found, selection, max_bytes(request))
    pipeline = pipeline_of(request)
    answer = await run_blocking(request, pipeline.series_answer, query.dataset, plan.request)
    try:
        return await _answer(request, query, found, selection, plan, answer)
    except BaseException:
        await run_blocking(request, close_source, answer.blocks)
        raise


async def _answer(
    request: Request,
    query: hapi.Query,
    found: SeriesInfo,
    selection: hapi.Selection,
    plan: hapi.DataPlan,
    answer: SeriesAnswer,
) -> Response:
    """The response to a checked data request whose first block is read."""
    headers, media = _headers(request, query)
    if request.method == "HEAD":  # the status and headers of the GET, no body made
        await run_blocking(request, close_source, answer.blocks)
        response = Response(media_type=media, headers=headers)
        del response.headers["content-length"]
        return response
    # Imported on the first data request: it imports pyarrow (~0.2 s, ~40 MB at start).
    from outcrop.formats import hapistream

    columns = () if plan.time_only else answer.parameters
    layout = hapi.Layout(hapitime.time_format(found.cadence, selection.width), columns)
    blocks = hapistream.within(ahead(answer.blocks), plan.start, plan.stop)
    head = None
    if query.header or query.format == "json":
        any_data, blocks = await run_blocking(request, hapistream.peek, blocks)
        head = _data_header(request, found, layout, selection, query, any_data, answer.width)
    chunks = hapistream.encode(blocks, layout, query.format, head)
    if "Content-Encoding" in headers:
        chunks = gzipped(ahead(chunks))
    return StreamingResponse(in_threads(request, chunks), media_type=media, headers=headers)


def _data_header(
    request: Request,
    found: SeriesInfo,
    layout: hapi.Layout,
    selection: hapi.Selection,
    query: hapi.Query,
    any_data: bool,
    width: int | None,
) -> dict[str, Any]:
    """The info document heading a data stream: its format, 1201 when no record comes,
    and for reduced data `x_width`, the bin width answered."""
    from outcrop.reduce import auto_levels

    head = hapi.info_document(
        found,
        layout,
        selection,
        fmt=query.format,
        code=1200 if any_data else 1201,
        max_bytes=max_bytes(request),
        levels=found.levels or auto_levels(found),
        answered=width,
    )
    if width is not None:
        head["x_width"] = hapitime.duration_text(width)
    return head


def _headers(request: Request, query: hapi.Query) -> tuple[dict[str, str], str]:
    """Headers and media type of a data response; CSV and JSON are gzipped when the client
    accepts it (binary doubles barely compress, and gzip would halve its speed)."""
    name = query.dataset.rsplit("/", 1)[-1].replace('"', "")
    extension = {"csv": "csv", "binary": "bin", "json": "json"}[query.format]
    headers = {
        "Vary": "Accept-Encoding",
        "Content-Disposition": f'inline; filename="{name}.{extension}"',
    }
    if query.format != "binary" and accepts_gzip(request.headers.get("accept-encoding")):
        headers["Content-Encoding"] = "gzip"
    return headers, hapi.MEDIA_TYPES[query.format]


def gzipped(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """gzip (RFC 1952) of a stream, piece by piece, at a fast level."""
    packer = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    try:
        for piece in chunks:
            packed = packer.compress(piece)
            if packed:
                yield packed
        yield packer.flush()
    finally:
        close_source(chunks)


def ahead(items: Iterator[T]) -> Iterator[T]:
    """The same items, the next one made in a helper thread while this one is used: the
    source (a reader program, a file) is read while a block is encoded, and a piece
    encoded while the one before is compressed."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="hapi-ahead")
    try:
        pending: Future[T | None] = pool.submit(next, items, None)
        while (item := pending.result()) is not None:
            pending = pool.submit(next, items, None)
            yield item
    finally:
        pool.shutdown(wait=True)
        close_source(items)
