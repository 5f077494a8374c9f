"""The HTML pages of image collections: the list of collections, and each collection's
page with a search form (position, instrument, filter), a paged list and a cutout preview
(`images.js` asks `/api/images` and shows PNG cutouts)."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from outcrop.images.service import shared_service, summarise
from outcrop.web.pages import not_found, render

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 25


@router.get("/images", response_class=HTMLResponse)
async def collections_page(request: Request) -> HTMLResponse:
    """Every image collection with its counts."""
    groups = await _summary(request, None)
    return render(request, "images_index.html", collections=summarise(groups))


@router.get("/images/{collection}", response_class=HTMLResponse)
async def collection_page(request: Request, collection: str) -> HTMLResponse:
    """A collection's instruments and filters, a search form, results and a preview."""
    groups = await _summary(request, collection)
    if not groups:
        return not_found(request, f"No image collection is called {collection!r}.")
    summary = summarise(groups)[collection]
    return render(
        request,
        "images.html",
        collection=collection,
        summary=summary,
        params=dict(request.query_params),
        limit=PAGE_SIZE,
    )


async def _summary(request: Request, collection: str | None) -> list[dict[str, Any]]:
    state = request.app.state

    def summary() -> list[dict[str, Any]]:  # the service is made here on first use
        found: list[dict[str, Any]] = shared_service(state).summary(collection)
        return found

    return await anyio.to_thread.run_sync(summary, limiter=state.limiter)
