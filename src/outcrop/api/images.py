"""Sky image collections: position queries and cutouts (`/api/images…`).

The parameter names and units of cutouts are the SBN Survey Image Service's (`ra`, `dec`
in degrees, `size` with `arcsec`/`arcmin`/`deg`/`rad`, `format`, `align`, `download`);
docs/images.md has the rules.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from outcrop.api.app import run_blocking
from outcrop.api.conditional import none_match
from outcrop.api.rest import json_response, reject_unknown
from outcrop.images.search import parse_query
from outcrop.images.service import (
    CutoutRequest,
    ImageService,
    cutout_etag,
    describe,
    parse_cutout_request,
    parse_flag,
    shared_service,
    summarise,
)

router = APIRouter(tags=["images"])
CUTOUT_PARAMETERS = {
    "ra",
    "dec",
    "size",
    "format",
    "align",
    "download",
    "stretch",
    "interval",
    "hdu",
}


async def image_service(request: Request) -> ImageService:
    """The server's ImageService, made in the thread pool on first use (it imports
    SQLAlchemy and may connect the database: never on the event loop)."""
    service: ImageService | None = getattr(request.app.state, "images", None)
    if service is None:
        service = await run_blocking(request, shared_service, request.app.state)
    return service


@router.get("/api/images")
async def search_images(request: Request) -> Response:
    """Images of the collections, a page at a time, in a stable order (observation start,
    then id), with the `total` that match.

    `collection`; `ra`, `dec` (degrees) and `radius` (degrees or e.g. `5arcmin`): images
    whose footprint contains the position or comes within `radius` of it; `instrument`,
    `filter` (comma-separated names); `start`, `stop` (ISO 8601: exposures overlapping);
    any stored header keyword in upper case, `EXPTIME=60`, `EXPTIME=30/120`,
    `OBJECT="M 13"`; `limit` (1 to 1000, default 100), `offset`.
    """
    query = parse_query(request.query_params.multi_items())
    rows, total = await run_blocking(request, (await image_service(request)).query, query)
    base = str(request.base_url)
    return json_response(
        request,
        {
            "total": total,
            "limit": query.limit,
            "offset": query.offset,
            "images": [describe(row, base) for row in rows],
        },
    )


@router.get("/api/images/summary")
async def images_summary(request: Request, collection: str | None = None) -> Response:
    """Image counts per collection, and per instrument and filter within each, with the
    time range each covers."""
    reject_unknown(request, {"collection"})
    service = await image_service(request)
    groups = await run_blocking(request, service.summary, collection)
    return json_response(request, {"collections": summarise(groups), "groups": groups})


@router.get("/api/images/{image_id:path}")
async def image(request: Request, image_id: str) -> Response:
    """An image's metadata and header keywords; with `ra`, `dec` and `size` (all three),
    a cutout around that position.

    Cutout parameters: `size` with its unit (`30arcsec`, `5arcmin`, `0.1deg`, `0.001rad`),
    `format=fits|png|jpeg` (default fits), `align=true` (PNG/JPEG resampled north up),
    `stretch` and `interval` (PNG/JPEG scaling, default linear and zscale), `hdu` (another
    HDU of the same file, by index or EXTNAME), `download=true` (saved as
    `<image>_<ra>_<dec>_<size>.<ext>`).
    """
    reject_unknown(request, CUTOUT_PARAMETERS)
    params = dict(request.query_params)
    service = await image_service(request)
    cutout: CutoutRequest | None = parse_cutout_request(params)
    row = await run_blocking(request, service.get, image_id)
    if cutout is None:
        etag = f'W/"{row.version}"'
        body = {**describe(row, str(request.base_url)), "header": row.header}
        return json_response(request, body, etag)
    download = parse_flag(params.get("download"), "download")
    etag = cutout_etag(row.version, cutout)
    if etag_matches(request, etag):
        return Response(status_code=304, headers={"ETag": etag})
    result = await run_blocking(request, service.cutout, image_id, cutout)
    disposition = "attachment" if download else "inline"
    return Response(
        result.body,
        media_type=result.media_type,
        headers={
            "ETag": result.etag,
            "Content-Disposition": f'{disposition}; filename="{result.filename}"',
        },
    )


def etag_matches(request: Request, etag: str) -> bool:
    """If-None-Match (RFC 9110 §13.1.2, weak comparison) names this cutout."""
    return none_match(request.headers.get("if-none-match"), etag)
