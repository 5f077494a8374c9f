"""The landing page listing the datasets, and a page of each dataset's metadata.

Every value is HTML-escaped by Jinja's autoescape; links are relative to the root path
(so they work behind a proxy under a prefix), and the URLs shown for Python are absolute,
built from the request as the client sent it (`X-Forwarded-*` applied before this).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.staticfiles import StaticFiles

from outcrop.catalog import parse_page
from outcrop.errors import BadQuery, DatasetNotFound
from outcrop.pipeline import Pipeline

HERE = Path(__file__).resolve().parent
PAGE_SIZE = 100

router = APIRouter(include_in_schema=False)
templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
)


def static_files() -> StaticFiles:
    """The pages' stylesheet and script, served at `/static`."""
    return StaticFiles(directory=HERE / "static")


def _pipeline(request: Request) -> Pipeline:
    pipeline: Pipeline = request.app.state.pipeline
    return pipeline


def _limiter(request: Request) -> Any:
    return request.app.state.limiter


def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    page = templates.get_template(name).render(
        root=request.scope.get("root_path", ""), base=str(request.base_url), **context
    )
    return HTMLResponse(page, status_code=status)


def wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def not_found(request: Request, message: str) -> HTMLResponse:
    return render(request, "not_found.html", status=404, message=message)


@router.get("/", response_class=HTMLResponse)
async def landing(request: Request) -> HTMLResponse:
    """The datasets, a page at a time, filtered by `q` (the search box does it live)."""
    q = request.query_params.get("q", "")
    try:
        limit, offset = parse_page(str(PAGE_SIZE), request.query_params.get("offset"))
    except BadQuery:
        limit, offset = PAGE_SIZE, 0
    search = _pipeline(request).catalog.search
    rows, total = await anyio.to_thread.run_sync(
        search, q, limit, offset, limiter=_limiter(request)
    )
    return render(request, "index.html", rows=rows, total=total, q=q, limit=limit, offset=offset)


@router.get("/datasets/{ds_id:path}", response_class=HTMLResponse)
async def dataset_page(request: Request, ds_id: str) -> HTMLResponse:
    """Dimensions, coordinates with their ranges, variables and attributes of a dataset."""
    pipeline = _pipeline(request)
    try:
        info = await anyio.to_thread.run_sync(pipeline.info, ds_id, limiter=_limiter(request))
    except DatasetNotFound:
        return not_found(request, f"No dataset has the id {ds_id!r}.")
    base = str(request.base_url)
    return render(
        request,
        "dataset.html",
        info=info,
        zarr_url=f"{base}zarr/{ds_id}",
        json_url=f"{base}api/datasets/{ds_id}",
    )
