"""The landing page listing the datasets, and a page of each dataset's metadata."""

from __future__ import annotations

from pathlib import Path

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from outcrop.pipeline import Pipeline

router = APIRouter(include_in_schema=False)
templates = Environment(
    loader=FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=select_autoescape(["html"]),
)


def _pipeline(request: Request) -> Pipeline:
    pipeline: Pipeline = request.app.state.pipeline
    return pipeline


@router.get("/", response_class=HTMLResponse)
async def landing(request: Request) -> HTMLResponse:
    entries = sorted(_pipeline(request).catalog.entries(), key=lambda e: e.id)
    page = templates.get_template("index.html").render(
        entries=entries, root=request.scope.get("root_path", "")
    )
    return HTMLResponse(page)


@router.get("/datasets/{ds_id:path}", response_class=HTMLResponse)
async def dataset_page(request: Request, ds_id: str) -> HTMLResponse:
    pipeline = _pipeline(request)
    limiter = request.app.state.limiter
    info = await anyio.to_thread.run_sync(pipeline.info, ds_id, limiter=limiter)
    page = templates.get_template("dataset.html").render(
        info=info, root=request.scope.get("root_path", "")
    )
    return HTMLResponse(page)
