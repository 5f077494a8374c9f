"""The native REST API: the catalog and each dataset's metadata."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from outcrop.api.app import run_blocking
from outcrop.catalog import parse_page
from outcrop.errors import BadQuery
from outcrop.pipeline import Pipeline

router = APIRouter()


def pipeline_of(request: Request) -> Pipeline:
    pipeline: Pipeline = request.app.state.pipeline
    return pipeline


def reject_unknown(request: Request, allowed: set[str]) -> None:
    """400 for a query parameter the route does not know, naming the ones it does."""
    for name in request.query_params:
        if name not in allowed:
            raise BadQuery(
                f"unknown parameter {name!r}; allowed: {', '.join(sorted(allowed))}",
                parameter=name,
            )


def json_response(request: Request, body: dict[str, Any], etag: str | None = None) -> Response:
    headers = {}
    if etag is not None:
        headers["ETag"] = etag
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
    return Response(orjson.dumps(body), media_type="application/json", headers=headers)


@router.get("/healthz", tags=["service"])
async def healthz(request: Request) -> Response:
    """Liveness: 200 while the server answers, with the number of datasets served."""
    return json_response(request, {"status": "ok", "datasets": len(pipeline_of(request).catalog)})


@router.get("/api/datasets", tags=["catalog"])
async def list_datasets(
    request: Request, q: str = "", limit: str | None = None, offset: str | None = None
) -> Response:
    """A page of the catalog, ordered by id; `q` filters on id, title and description."""
    reject_unknown(request, {"q", "limit", "offset"})
    size, start = parse_page(limit, offset)
    found, total = await run_blocking(request, pipeline_of(request).catalog.search, q, size, start)
    base = str(request.base_url).rstrip("/")
    return json_response(
        request,
        {
            "total": total,
            "limit": size,
            "offset": start,
            "datasets": [{**row.__dict__, "url": f"{base}/api/datasets/{row.id}"} for row in found],
        },
    )


@router.get("/api/datasets/{ds_id:path}", tags=["catalog"])
async def dataset_info(request: Request, ds_id: str) -> Response:
    """Dimensions, coordinates with their ranges, variables, attributes, version and links."""
    reject_unknown(request, set())
    pipeline = pipeline_of(request)
    entry = pipeline.entry(ds_id)
    etag = f'"{entry.version}-info"'
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    info = await run_blocking(request, pipeline.info, ds_id)
    base = str(request.base_url).rstrip("/")
    info["links"] = {
        "self": f"{base}/api/datasets/{ds_id}",
        "data": f"{base}/api/datasets/{ds_id}/data",
        "zarr": f"{base}/zarr/{ds_id}",
        "html": f"{base}/datasets/{ds_id}",
    }
    return json_response(request, info, etag)
