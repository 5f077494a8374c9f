"""The landing page listing the datasets, a page of each dataset's metadata, and the
OPeNDAP request form of each dataset.

Every value is HTML-escaped by Jinja's autoescape; links are relative to the root path
(so they work behind a proxy under a prefix), and the URLs shown for Python are absolute,
built from the request as the client sent it (`X-Forwarded-*` applied before this).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.staticfiles import StaticFiles

from outcrop.catalog import parse_page
from outcrop.errors import BadQuery, DatasetNotFound
from outcrop.pipeline import Pipeline, jsonable

if TYPE_CHECKING:
    import numpy as np
    import xarray as xr

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
        opendap_url=f"{base}opendap/{ds_id}",
        json_url=f"{base}api/datasets/{ds_id}",
    )


@router.get("/opendap/{ds_id:path}.html", response_class=HTMLResponse)
async def opendap_form(request: Request, ds_id: str) -> HTMLResponse:
    """The OPeNDAP request form: tick variables, give index ranges, get the DAP2/DAP4 URLs
    (`opendap.js` builds the constraint as the person types)."""
    pipeline = _pipeline(request)
    try:
        form = await anyio.to_thread.run_sync(
            opendap_variables, pipeline, ds_id, limiter=_limiter(request)
        )
    except DatasetNotFound:
        return not_found(request, f"No dataset has the id {ds_id!r}.")
    path = "opendap/" + quote(form["entry"].id, safe="/")
    data_url = f"{request.base_url}{path}"
    return render(
        request, "opendap.html", path=path, data_url=data_url, dap4_url=dap4_url(data_url), **form
    )


def dap4_url(data_url: str) -> str:
    """The URL that makes libnetcdf speak DAP4: `dap4://` stands for `http://` only, so an
    https URL says it with the `#dap4` fragment instead (netcdf-c `dinfermodel.c`)."""
    if data_url.startswith("http://"):
        return "dap4://" + data_url.removeprefix("http://")
    return data_url + "#dap4"


def opendap_variables(pipeline: Pipeline, ds_id: str) -> dict[str, Any]:
    """Blocking: what the form shows of the stored dataset (the form DAP serves):
    every variable, coordinates first, with its type, dimensions and attributes."""
    entry = pipeline.entry(pipeline.catalog.known_id(ds_id) or ds_id)
    ds = pipeline.stored_dataset(entry.id)
    names = [*map(str, ds.coords), *map(str, ds.data_vars)]
    return {
        "entry": entry,
        "variables": [_dap_variable(name, ds.variables[name]) for name in names],
        "attrs": _attr_texts(ds.attrs),
    }


def _dap_variable(name: str, var: xr.Variable) -> dict[str, Any]:
    """A row of the form. DAP2 may see fewer dimensions than DAP4 (a char array is a
    String array there, without its string-length dimension): the DAP2 constraint has
    hyperslabs for the first `dap2_dims` only."""
    from outcrop.formats.dap2 import dap_dims

    return {
        "name": name,
        "type": _type_name(var.dtype),
        "dims": [(str(d), int(n)) for d, n in zip(var.dims, var.shape, strict=True)],
        "dap2_dims": len(dap_dims(var)),
        "empty": 0 in var.shape,
        "attrs": _attr_texts(var.attrs),
    }


def _type_name(dtype: np.dtype[Any]) -> str:
    if dtype.kind == "S":
        return "char" if dtype.itemsize == 1 else f"char[{dtype.itemsize}]"
    if dtype.kind in "OU":
        return "string"
    return dtype.name


def _attr_texts(attrs: Mapping[Any, Any]) -> dict[str, str]:
    """Attribute values as text: numbers and strings as they are, arrays comma-separated."""
    texts = {}
    for key, value in jsonable(dict(attrs)).items():
        texts[key] = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    return texts
