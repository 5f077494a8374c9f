"""Route sets: `OUTCROP_ROUTES` switches each protocol on or off; a switched-off set answers
404 and is absent from OpenAPI; third-party sets register through the `outcrop.routes`
entry-point group and are switched the same way."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import httpx
import netCDF4
import numpy as np
import pytest
import structlog
import xarray as xr
from fastapi import APIRouter

from outcrop.api import create_app, routes
from outcrop.errors import ConfigError
from outcrop.settings import Settings
from tests.conftest import DATA, Server, add_route_plugin, free_port, start_server

BUILTIN = {"rest", "zarr", "opendap", "hapi", "das2", "jobs", "images", "web"}
DATASET = "timeseries/SOI_Darwin"
ROOT = Path(__file__).resolve().parents[2]

# A third-party route set, as a site's own package would declare it.
extra = APIRouter()


@extra.get("/extra/hello")
async def hello() -> dict[str, str]:
    return {"hello": "world"}


@extra.get("/extra/boom")
async def boom() -> dict[str, str]:
    raise RuntimeError("a bug in a plugin")


EXTRA = routes.RouteSet("extra", "a third-party example", lambda site: site.include(extra))
NOT_A_SET = object()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    """The installed entry points plus `extra`, as if a package declaring it were installed."""
    add_route_plugin(monkeypatch, "extra", f"{__name__}:EXTRA")


def client_for(tmp_path: Path, names: list[str]) -> httpx.AsyncClient:
    app = create_app(Settings(data_dir=tmp_path, routes=names))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def test_builtin_sets_register_through_the_entry_point_group() -> None:
    """Declared in pyproject.toml exactly as a third-party package would declare its own
    (the installed metadata is made from it)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    table = project["entry-points"]["outcrop.routes"]
    declared = {
        name: EntryPoint(name, value, "outcrop.routes").load() for name, value in table.items()
    }
    assert set(declared) == BUILTIN
    assert all(isinstance(s, routes.RouteSet) and s.name == n for n, s in declared.items())


@pytest.mark.anyio
@pytest.mark.usefixtures("plugin")
async def test_a_third_party_set_is_served_and_documented(tmp_path: Path) -> None:
    async with client_for(tmp_path, ["extra", "rest"]) as client:
        assert (await client.get("/extra/hello")).json() == {"hello": "world"}
        assert (await client.get("/hapi/about")).status_code == 404
        paths = (await client.get("/openapi.json")).json()["paths"]
    assert "/extra/hello" in paths
    assert "/api/datasets" in paths


@pytest.mark.anyio
@pytest.mark.usefixtures("plugin")
async def test_a_third_party_set_is_switched_off_like_a_builtin(tmp_path: Path) -> None:
    async with client_for(tmp_path, ["rest"]) as client:
        assert (await client.get("/extra/hello")).status_code == 404
        paths = (await client.get("/openapi.json")).json()["paths"]
    assert "/extra/hello" not in paths


@pytest.mark.anyio
@pytest.mark.usefixtures("plugin")
async def test_all_switches_on_every_set_including_third_party(tmp_path: Path) -> None:
    async with client_for(tmp_path, ["all"]) as client:
        assert (await client.get("/extra/hello")).status_code == 200
        assert (await client.get("/hapi/about")).status_code == 200


@pytest.mark.usefixtures("plugin")
def test_an_unknown_set_is_a_config_error_naming_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        create_app(Settings(data_dir=tmp_path, routes=["rest", "bogus"]))
    message = str(caught.value)
    assert "bogus" in message
    assert all(name in message for name in [*BUILTIN, "extra", "all"])
    assert caught.value.parameter == "routes"


def test_an_entry_point_naming_something_else_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = EntryPoint("broken", f"{__name__}:NOT_A_SET", "outcrop.routes")
    monkeypatch.setattr(routes, "entry_points", lambda group: [broken])
    with pytest.raises(ConfigError, match=r"broken.*not an outcrop\.api\.routes\.RouteSet"):
        create_app(Settings(data_dir=tmp_path, routes=["rest"]))


@pytest.mark.anyio
@pytest.mark.usefixtures("plugin")
async def test_a_bug_in_a_route_is_a_500_with_the_request_id_logged_once(
    tmp_path: Path,
) -> None:
    async with client_for(tmp_path, ["extra"]) as client:
        with structlog.testing.capture_logs() as logs:
            response = await client.get("/extra/boom", headers={"X-Request-ID": "bug-1"})
    assert response.status_code == 500
    assert response.json()["request_id"] == "bug-1"
    assert "bug-1" in response.json()["detail"]
    with_traceback = [e for e in logs if e.get("exc_info")]
    assert [e["event"] for e in with_traceback] == ["request_failed"]
    assert with_traceback[0]["log_level"] == "error"


def test_outcrop_serve_refuses_an_unknown_set(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "outcrop", "serve", str(tmp_path), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OUTCROP_ROUTES": "zarr,bogus", "OUTCROP_DATA_DIR": str(tmp_path)},
    )
    assert result.returncode != 0
    assert "bogus" in result.stderr
    assert "known sets are" in result.stderr


@pytest.fixture(scope="module")
def zarr_and_rest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    served = tmp_path_factory.mktemp("routes-archive")
    (served / "timeseries").mkdir()
    shutil.copy(DATA / "timeseries" / "SOI_Darwin.nc", served / "timeseries")
    state = tmp_path_factory.mktemp("routes-state")
    srv = start_server([str(served)], state, {"OUTCROP_ROUTES": "zarr,rest"})
    yield srv, served
    srv.stop()


@pytest.mark.parametrize(
    "path",
    [
        "/hapi/about",
        "/hapi/catalog",
        f"/das2/{DATASET}",
        "/api/jobs",
        f"/opendap/{DATASET}.dds",
        f"/opendap/{DATASET}.html",
        "/",
        f"/datasets/{DATASET}",
        "/static/style.css",
    ],
)
def test_switched_off_routes_answer_404(zarr_and_rest: tuple[Server, Path], path: str) -> None:
    server, _ = zarr_and_rest
    assert httpx.get(f"{server.url}{path}").status_code == 404


def test_switched_off_routes_are_absent_from_openapi(zarr_and_rest: tuple[Server, Path]) -> None:
    server, _ = zarr_and_rest
    paths = set(httpx.get(f"{server.url}/openapi.json").json()["paths"])
    assert "/api/datasets" in paths
    assert "/healthz" in paths and "/readyz" in paths and "/metrics" in paths
    assert not [p for p in paths if p.startswith(("/hapi", "/das2", "/api/jobs", "/opendap"))]


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"])
def test_service_routes_are_always_on(zarr_and_rest: tuple[Server, Path], path: str) -> None:
    server, _ = zarr_and_rest
    assert httpx.get(f"{server.url}{path}").status_code == 200


def test_the_switched_on_sets_work(zarr_and_rest: tuple[Server, Path]) -> None:
    server, served = zarr_and_rest
    assert httpx.get(f"{server.url}/api/datasets/{DATASET}").status_code == 200
    remote = xr.open_zarr(f"{server.url}/zarr/{DATASET}", consolidated=True, zarr_format=2)
    with netCDF4.Dataset(served / f"{DATASET}.nc") as local:
        name = next(n for n, v in local.variables.items() if v.ndim and n not in v.dimensions)
        expected: Any = local.variables[name][:]
        np.testing.assert_array_equal(remote[name].values, np.ma.filled(expected, np.nan))
