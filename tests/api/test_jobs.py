"""`/api/jobs` through a real server running the embedded job queue: submit, poll, download
the zip (whole and by byte range), and compare the outputs opened with xarray against
answers computed here from the generated grid (NumPy slicing, shapely point-in-polygon
cell by cell); repeated requests, cancelling, and every kind of bad input."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import shapefile
import xarray as xr
from shapely.geometry import Point, shape

import outcrop
from tests.conftest import Server, start_server

# The Natural Earth copy the package ships, read here with pyshp, not through Outcrop.
NATURAL_EARTH = Path(outcrop.__file__).parent / "data" / "naturalearth_lowres"
LAT = np.arange(-89.75, 90, 0.5)
LON = np.arange(-179.75, 180, 0.5)
CLIENT = {"X-Outcrop-Client": "test-jobs"}
UPLOAD_MAX_MB = 1
DONE = ("finished", "failed", "cancelled")


def write_grid(path: Path, seed: int) -> xr.Dataset:
    """A global 0.5° grid of three monthly fields, random values."""
    rng = np.random.default_rng(seed)
    values = rng.normal(280, 10, (3, LAT.size, LON.size)).astype("float32")
    ds = xr.Dataset(
        {"tas": (("time", "lat", "lon"), values, {"units": "K"})},
        coords={
            "time": np.array(["2000-01-15", "2000-02-15", "2000-03-15"], "datetime64[ns]"),
            "lat": ("lat", LAT, {"units": "degrees_north", "standard_name": "latitude"}),
            "lon": ("lon", LON, {"units": "degrees_east", "standard_name": "longitude"}),
        },
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(path)
    return ds


@pytest.fixture(scope="module")
def grids(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, xr.Dataset]]:
    root = tmp_path_factory.mktemp("jobs-archive")
    made = {name: write_grid(root / "grid" / f"{name}.nc", seed) for seed, name in enumerate("ab")}
    return root, {f"grid/{name}": ds for name, ds in made.items()}


@pytest.fixture(scope="module")
def server(
    grids: tuple[Path, dict[str, xr.Dataset]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    root, _ = grids
    env = {"OUTCROP_UPLOAD_MAX_MB": str(UPLOAD_MAX_MB)}
    srv = start_server([str(root)], tmp_path_factory.mktemp("jobs-state"), env)
    yield srv
    srv.stop()


def submit(server: Server, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    if "files" in kwargs:
        files = {"request": (None, json.dumps(body), "application/json"), **kwargs.pop("files")}
        return httpx.post(f"{server.url}/api/jobs", files=files, headers=CLIENT, **kwargs)
    return httpx.post(f"{server.url}/api/jobs", json=body, headers=CLIENT, **kwargs)


def wait(server: Server, job: dict[str, Any]) -> dict[str, Any]:
    """Poll the job until it is done (a bound on the polls, not a timing assertion)."""
    for _ in range(1200):
        job = httpx.get(job["url"]).raise_for_status().json()
        if job["status"] in DONE:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job never finished: {job}\n{server.logs()}")


def run(server: Server, body: dict[str, Any], **kwargs: Any) -> tuple[dict[str, Any], bytes]:
    """Submit, wait, check the job finished and download its zip."""
    response = submit(server, body, **kwargs)
    assert response.status_code in (200, 201), response.text
    job = wait(server, response.json())
    assert job["status"] == "finished", job
    result = httpx.get(job["result_url"])
    assert result.status_code == 200
    assert result.headers["content-type"] == "application/zip"
    assert result.headers["content-disposition"] == (
        f'attachment; filename="outcrop-job-{job["id"]}.zip"'
    )
    return job, result.content


def output(zipped: bytes, name: str) -> xr.Dataset:
    with zipfile.ZipFile(io.BytesIO(zipped)) as zf:
        return xr.open_dataset(io.BytesIO(zf.read(name))).load()


def germany() -> Any:
    reader = shapefile.Reader(str(NATURAL_EARTH / "naturalearth_lowres"))
    for record, geometry in zip(reader.records(), reader.shapes(), strict=True):
        if record["iso_a3"] == "DEU":
            return shape(geometry.__geo_interface__)
    raise AssertionError("no DEU in Natural Earth")


def inside_cells(polygon: Any) -> np.ndarray:
    """Cells whose centre lies strictly inside, one point at a time, within the bounds."""
    inside = np.zeros((LAT.size, LON.size), bool)
    west, south, east, north = polygon.bounds
    for i in np.flatnonzero((south < LAT) & (north > LAT)):
        for j in np.flatnonzero((west < LON) & (east > LON)):
            inside[i, j] = polygon.contains(Point(LON[j], LAT[i]))
    return inside


def test_mask_country_keeps_the_cells_inside_the_country(
    server: Server, grids: tuple[Path, dict[str, xr.Dataset]]
) -> None:
    _, sources = grids
    body = {"datasets": ["grid/a"], "operations": [{"operation": "mask_country", "country": "DEU"}]}
    job, zipped = run(server, body)
    assert job["progress"]["done"] == job["progress"]["total"] == 1
    assert job["errors"] == {}
    assert job["operations"] == [{"operation": "mask_country", "country": "DEU"}]
    assert job["expires"] and job["created"] and job["finished"]
    got = output(zipped, "grid/a.nc")
    inside = inside_cells(germany())
    assert inside.sum() > 50
    expected = np.where(inside, sources["grid/a"].tas.values, np.nan)
    np.testing.assert_array_equal(got.tas.values, expected)
    np.testing.assert_array_equal(got.lat.values, LAT)


def test_cutout_bbox_of_two_datasets_slices_each_grid(
    server: Server, grids: tuple[Path, dict[str, xr.Dataset]]
) -> None:
    _, sources = grids
    bbox = [5.0, 15.0, 45.0, 55.0]  # west, east, south, north
    body = {
        "datasets": ["grid/b", "grid/a"],
        "operations": [{"operation": "cutout_bbox", "bbox": bbox}],
    }
    job, zipped = run(server, body)
    assert job["progress"] == {"done": 2, "total": 2, "step": "finished"}
    rows = np.flatnonzero((LAT >= 45) & (LAT <= 55))
    cols = np.flatnonzero((LON >= 5) & (LON <= 15))
    for ds_id, source in sources.items():
        got = output(zipped, f"{ds_id}.nc")
        np.testing.assert_array_equal(got.lat.values, LAT[rows])
        np.testing.assert_array_equal(got.lon.values, LON[cols])
        np.testing.assert_array_equal(got.tas.values, source.tas.values[:, rows][:, :, cols])


def test_range_requests_on_the_result_zip(server: Server) -> None:
    body = {
        "datasets": ["grid/a"],
        "operations": [{"operation": "cutout_point", "point": [10, 50]}],
    }
    job, zipped = run(server, body)
    part = httpx.get(job["result_url"], headers={"Range": "bytes=10-109"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 10-109/{len(zipped)}"
    assert part.content == zipped[10:110]
    tail = httpx.get(job["result_url"], headers={"Range": "bytes=-20"})
    assert tail.status_code == 206 and tail.content == zipped[-20:]
    past = httpx.get(job["result_url"], headers={"Range": f"bytes={len(zipped)}-"})
    assert past.status_code == 416
    assert past.headers["content-range"] == f"bytes */{len(zipped)}"


def test_uploaded_geojson_polygon_masks_by_its_own_shape(
    server: Server, grids: tuple[Path, dict[str, xr.Dataset]]
) -> None:
    _, sources = grids
    triangle = {"type": "Polygon", "coordinates": [[[0, 0], [20, 0], [0, 20], [0, 0]]]}
    body = {
        "datasets": ["grid/a"],
        "operations": [{"operation": "mask_polygon", "shape": "tri.geojson"}],
    }
    # The client's file name is never used: only the part name refers to the upload.
    files = {"tri.geojson": ("../../evil.json", json.dumps(triangle), "application/geo+json")}
    _, zipped = run(server, body, files=files)
    got = output(zipped, "grid/a.nc")
    lon, lat = np.meshgrid(LON, LAT)
    inside = (lon > 0) & (lat > 0) & (lon + lat < 20)  # the triangle, strictly inside
    expected = np.where(inside, sources["grid/a"].tas.values, np.nan)
    np.testing.assert_array_equal(got.tas.values, expected)


def test_repeated_request_returns_the_same_job(server: Server) -> None:
    body = {"datasets": ["grid/b"], "operations": [{"operation": "mask_country", "country": "FRA"}]}
    first = submit(server, body)
    assert first.status_code == 201, first.text
    again = submit(server, body)
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert first.headers["location"] == first.json()["url"]
    isimip = submit(
        server, {k: v for k, v in body.items() if k != "datasets"} | {"paths": ["grid/b.nc"]}
    )
    assert isimip.status_code == 200 and isimip.json()["id"] == first.json()["id"]


def test_a_failed_job_runs_again_when_submitted_again(server: Server) -> None:
    body = {
        "datasets": ["grid/a"],
        "operations": [{"operation": "cutout_bbox", "bbox": [0.1, 0.2, 0.1, 0.2]}],
    }
    first = submit(server, body)
    assert first.status_code == 201, first.text
    failed = wait(server, first.json())
    assert failed["status"] == "failed" and "grid/a" in failed["errors"]
    assert failed["result_url"] is None
    again = submit(server, body)
    assert again.status_code == 201 and again.json()["id"] == failed["id"]


def test_delete_cancels_and_removes_the_result(server: Server) -> None:
    body = {
        "datasets": ["grid/a"],
        "operations": [{"operation": "cutout_point", "point": [20, 10]}],
    }
    job, _ = run(server, body)
    cancelled = httpx.delete(job["url"])
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert httpx.get(job["url"]).json()["status"] == "cancelled"
    gone = httpx.get(job["result_url"])
    assert gone.status_code == 404 and "cancelled" in gone.json()["detail"]


def test_list_shows_only_the_callers_jobs(server: Server) -> None:
    body = {
        "datasets": ["grid/a"],
        "operations": [{"operation": "cutout_point", "point": [30, 30]}],
    }
    mine = httpx.post(f"{server.url}/api/jobs", json=body, headers={"X-Outcrop-Client": "lister"})
    other = httpx.post(f"{server.url}/api/jobs", json=body, headers={"X-Outcrop-Client": "else"})
    assert mine.json()["id"] != other.json()["id"]
    page = httpx.get(f"{server.url}/api/jobs", headers={"X-Outcrop-Client": "lister"}).json()
    assert [j["id"] for j in page["jobs"]] == [mine.json()["id"]] and page["total"] == 1
    anonymous = httpx.get(f"{server.url}/api/jobs")
    assert anonymous.status_code == 400
    assert anonymous.json()["parameter"] == "X-Outcrop-Client"


def zip_bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb.shp", b"\0" * (100 << 20))
        zf.writestr("bomb.shx", b"\0" * 100)
        zf.writestr("bomb.dbf", b"\0" * 100)
    return buffer.getvalue()


BAD: list[tuple[str, dict[str, Any], dict[str, Any], int, str]] = [
    (
        "unknown operation",
        {"operations": [{"operation": "explode"}]},
        {},
        400,
        "operations[0].operation",
    ),
    (
        "bbox wrong order",
        {"operations": [{"operation": "cutout_bbox", "bbox": [0, 10, 20, 10]}]},
        {},
        400,
        "operations[0].bbox",
    ),
    (
        "bbox out of range",
        {"operations": [{"operation": "mask_bbox", "bbox": [0, 10, 0, 95]}]},
        {},
        400,
        "operations[0].bbox",
    ),
    (
        "unknown country",
        {"operations": [{"operation": "mask_country", "country": "XYZ"}]},
        {},
        400,
        "operations[0].country",
    ),
    ("unknown dataset", {"datasets": ["grid/nope"]}, {}, 400, "datasets"),
    ("unknown field", {"colour": "red"}, {}, 400, "colour"),
    ("path outside", {"paths": ["../grid/a.nc"]}, {}, 400, "paths"),
    ("absolute path", {"paths": ["/etc/passwd"]}, {}, 400, "paths"),
    ("missing path", {"paths": ["grid/c.nc"]}, {}, 404, "paths"),
    (
        "oversized upload",
        {"operations": [{"operation": "mask_polygon", "shape": "big.json"}]},
        {"big.json": ("big.json", b" " * (UPLOAD_MAX_MB * 2**20 + 1))},
        413,
        "big.json",
    ),
    (
        "zip bomb",
        {"operations": [{"operation": "mask_polygon", "shape": "bomb.zip"}]},
        {"bomb.zip": ("bomb.zip", zip_bomb())},
        400,
        "operations[0].shape",
    ),
    (
        "traversal in part name",
        {"operations": [{"operation": "mask_polygon", "shape": "x"}]},
        {"../x": ("x", b"{}")},
        400,
        "../x",
    ),
]


@pytest.mark.parametrize(
    ("case", "change", "files", "status", "parameter"), BAD, ids=[b[0] for b in BAD]
)
def test_bad_input_is_refused_naming_the_parameter(
    server: Server,
    case: str,
    change: dict[str, Any],
    files: dict[str, Any],
    status: int,
    parameter: str,
) -> None:
    body: dict[str, Any] = {"datasets": ["grid/a"], "operations": [{"operation": "mask_landonly"}]}
    body.update(change)
    if "paths" in change:
        del body["datasets"]
    response = submit(server, body, files=files) if files else submit(server, body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["parameter"] == parameter


def test_malformed_requests_are_refused(server: Server) -> None:
    url = f"{server.url}/api/jobs"
    not_json = httpx.post(url, content=b"{nope", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400 and "JSON" in not_json.json()["detail"]
    no_request = httpx.post(url, files={"x.json": ("x.json", b"{}")})
    assert no_request.status_code == 400 and no_request.json()["parameter"] == "request"
    unknown = httpx.get(f"{url}/{'0' * 32}")
    assert unknown.status_code == 404
