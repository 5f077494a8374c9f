"""das2 server routes: `GET /das2/server?server=…` as das2 clients (Autoplot, das2py,
das2C, SPEDAS) call a das2 server, and `GET /das2/{dataset}?start_time=…` for people.

`server=list` (or `discovery`) lists the time series, `server=dsdf&dataset=ID` describes
one, `server=dataset&dataset=ID&start_time=…&end_time=…[&resolution=S][&params=…]
[&ascii=1]` (or `compactdataset`) streams it, `server=id` names the server. Errors found
before the stream starts get their HTTP status with a das2 exception as the body; errors
after it started end the stream with an exception packet (formats/das2.py).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from outcrop.api.app import in_threads, run_blocking
from outcrop.api.errors import status_of
from outcrop.api.rest import accepts_gzip, gzipped, pipeline_of
from outcrop.errors import BadQuery, OutcropError
from outcrop.formats import das2
from outcrop.model import SeriesInfo

router = APIRouter()
SERVER_ID = "Outcrop das2 server"
KINDS = ("list", "discovery", "dsdf", "dataset", "compactdataset", "id")
LIST_MEDIA = "text/plain; charset=utf-8"


@router.get("/das2/server", tags=["das2"])
async def das2_server(request: Request) -> Response:
    """The das2 server interface: `server=list|discovery|dsdf|dataset|compactdataset|id`."""
    try:
        kind = request.query_params.get("server", "")
        if kind in ("list", "discovery"):
            return await source_list(request)
        if kind == "id":
            return Response(f"{SERVER_ID}\n", media_type=LIST_MEDIA)
        if kind not in KINDS:
            raise BadQuery(
                f"server={kind!r} is not supported; use one of {', '.join(KINDS)}",
                parameter="server",
            )
        ds_id = request.query_params.get("dataset", "")
        if not ds_id:
            raise BadQuery(
                f"server={kind} needs dataset=ID (server=list lists them)", parameter="dataset"
            )
        if kind == "dsdf":
            return await source_definition(request, ds_id)
        return await data_stream(request, ds_id)
    except OutcropError as exc:
        return das2_error(exc)


@router.get("/das2/{ds_id:path}", tags=["das2"])
async def das2_dataset(request: Request, ds_id: str) -> Response:
    """A das2 stream of one dataset: the same parameters as `server=dataset` (start_time,
    end_time, resolution, params, ascii) with the dataset in the path."""
    try:
        return await data_stream(request, ds_id)
    except OutcropError as exc:
        return das2_error(exc)


async def source_list(request: Request) -> Response:
    """`ID|description` per time series (das2 `server=list`)."""
    pipeline = pipeline_of(request)
    ids: list[str] = await run_blocking(request, pipeline.series_ids)
    entries = [pipeline.catalog.get(ds_id) for ds_id in ids]
    rows = [(e.id, e.title or e.description) for e in entries]
    return Response(das2.source_list(rows), media_type=LIST_MEDIA)


async def source_definition(request: Request, ds_id: str) -> Response:
    """The data source definition (das2 `server=dsdf`) as a `[00]` stream header."""
    info = await series_info(request, ds_id)
    return Response(das2.dsdf(ds_id, info), media_type=LIST_MEDIA)


async def series_info(request: Request, ds_id: str) -> SeriesInfo:
    pipeline = pipeline_of(request)
    info: SeriesInfo = await run_blocking(request, pipeline.series_info, ds_id)
    return info


async def data_stream(request: Request, ds_id: str) -> Response:
    """A das2/2.2 stream: everything is checked, and the first block read, before the
    status is sent."""
    info = await series_info(request, ds_id)
    query = das2.parse_query(request.query_params.multi_items(), info)
    asked = query.request
    interval = f"{das2.iso_time(asked.start)} to {das2.iso_time(asked.stop)}"
    wanted = das2.trim(asked, info)
    if wanted is None:
        body = das2.exception_document("NoDataInInterval", f"no data in {interval}")
        return Response(body, media_type=das2.MEDIA_TEXT)
    pipeline = pipeline_of(request)
    answer = await run_blocking(request, pipeline.series_answer, ds_id, wanted)
    planes = das2.planes_for(answer.parameters, info, wanted)
    das2.packet_header(planes, query.ascii, "ns")  # refuse a header das2 cannot frame now
    head = das2.stream_header(info.title or ds_id, info.description, answer.width, info.cadence)
    chunks = das2.encode_stream(head, planes, answer.blocks, query.ascii, interval)
    media = das2.MEDIA_TEXT if query.ascii else das2.MEDIA_BINARY
    name = ds_id.rsplit("/", 1)[-1].replace('"', "")
    extension = "d2t" if query.ascii else "d2s"
    headers = {"Content-Disposition": f'inline; filename="{name}.{extension}"'}
    if query.ascii and accepts_gzip(request.headers.get("accept-encoding")):
        chunks = gzipped(chunks)
        headers["Content-Encoding"] = "gzip"
    return StreamingResponse(in_threads(request, chunks), media_type=media, headers=headers)


def das2_error(exc: OutcropError) -> Response:
    """An error before the stream: its HTTP status, and a das2 exception as the body."""
    body = das2.exception_document(das2.exception_type(exc), exc.message)
    return Response(body, status_code=status_of(exc), media_type=das2.MEDIA_TEXT)
