"""`/metrics` read by Prometheus' own parser: requests by route template and status,
latency, bytes, caches and jobs, summed over worker processes; `/readyz`."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine

from outcrop.api.rest import check_catalog_database, check_database
from outcrop.catalog import Catalog
from outcrop.settings import Settings
from tests.conftest import DATA, Server, start_server

SERIES = "timeseries/SOI_Darwin"
GRID = "grids/A1B_north_america"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: Server) -> Samples:
    response = httpx.get(f"{server.url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def served_folder(root: Path) -> Path:
    for part in ("timeseries/SOI_Darwin.nc", "grids/A1B_north_america.nc"):
        (root / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DATA / part, root / part)
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    served = served_folder(tmp_path_factory.mktemp("metrics-archive"))
    env = {"OUTCROP_SERIES_CACHE_MB": "7", "OUTCROP_JOB_WORKERS": "0"}
    srv = start_server([str(served)], tmp_path_factory.mktemp("metrics-state"), env)
    yield srv
    srv.stop()


def test_requests_are_counted_by_route_template_and_status(server: Server) -> None:
    before = scrape(server)
    for _ in range(3):
        assert httpx.get(f"{server.url}/api/datasets/{GRID}").status_code == 200
    for _ in range(2):
        assert httpx.get(f"{server.url}/api/datasets/no/such").status_code == 404
    after = scrape(server)
    route = "/api/datasets/{ds_id:path}"
    for status, count in (("200", 3), ("404", 2)):
        name = "outcrop_http_requests_total"
        key = {"route": route, "method": "GET", "status": status}
        assert value(after, name, **key) - value(before, name, **key) == count
    # Raw paths never become labels: the number of series stays bounded.
    assert not [labels for _, labels in after if any(GRID in v for _, v in labels)]


def test_zarr_requests_count_latency_and_bytes_under_the_prefix(server: Server) -> None:
    before = scrape(server)
    sizes = [
        len(httpx.get(f"{server.url}/zarr/{GRID}/{key}").content)
        for key in (".zmetadata", ".zmetadata", "zarr.json", ".zgroup")
    ]
    after = scrape(server)
    route = {"route": "/zarr/{path}"}

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("outcrop_http_requests_total", method="GET", status="200", **route) == 4
    assert delta("outcrop_http_request_duration_seconds_count", **route) == 4
    assert delta("outcrop_http_request_duration_seconds_bucket", le="+Inf", **route) == 4
    assert delta("outcrop_http_request_duration_seconds_sum", **route) > 0
    assert delta("outcrop_http_response_bytes_total", **route) == sum(sizes)


def test_memory_cache_hits_misses_and_size(server: Server) -> None:
    before = scrape(server)
    for _ in range(3):
        assert httpx.get(f"{server.url}/opendap/{GRID}.das").status_code == 200
    after = scrape(server)
    hits = value(after, "outcrop_cache_hits_total", cache="memory")
    assert hits - value(before, "outcrop_cache_hits_total", cache="memory") >= 2
    assert value(after, "outcrop_cache_misses_total", cache="memory") >= 1
    assert value(after, "outcrop_memory_cache_bytes") > 0
    assert value(after, "outcrop_memory_cache_entries") >= 1


def test_disk_cache_size_and_limit(server: Server) -> None:
    # A reduced time series goes through the series cache (data_dir/series).
    info = httpx.get(f"{server.url}/hapi/info", params={"dataset": SERIES}).json()
    params = {
        "start_time": info["startDate"],
        "end_time": info["stopDate"],
        "resolution": str(365 * 86400),
    }
    assert httpx.get(f"{server.url}/das2/{SERIES}", params=params).status_code == 200
    samples = scrape(server)
    assert value(samples, "outcrop_disk_cache_limit_bytes", cache="series") == 7 * 2**20
    assert value(samples, "outcrop_disk_cache_bytes", cache="series") > 0
    assert ("outcrop_disk_cache_entries", frozenset({("cache", "series")})) in samples


def test_jobs_by_state_and_queue_depth(server: Server) -> None:
    # OUTCROP_JOB_WORKERS=0: nothing consumes the queue, so the job stays queued.
    body = {"datasets": [GRID], "operations": [{"operation": "mask_country", "country": "DEU"}]}
    response = httpx.post(f"{server.url}/api/jobs", json=body)
    assert response.status_code == 201, response.text
    samples = scrape(server)
    assert value(samples, "outcrop_jobs", state="queued") == 1
    assert value(samples, "outcrop_jobs", state="finished") == 0
    assert value(samples, "outcrop_job_queue_depth") == 1


def test_readyz_reports_database_and_queue(server: Server) -> None:
    response = httpx.get(f"{server.url}/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "queue": "ok"}}


def test_readyz_is_503_naming_an_unreachable_queue(tmp_path: Path) -> None:
    served = served_folder(tmp_path / "served")
    env = {"OUTCROP_QUEUE_URL": "redis://:secret@127.0.0.1:9/0"}  # discard port: refused
    srv = start_server([str(served)], tmp_path / "state", env)
    try:
        response = httpx.get(f"{srv.url}/readyz")
        alive = httpx.get(f"{srv.url}/healthz")
    finally:
        srv.stop()
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"] == "ok"
    assert "redis" in checks["queue"]
    assert "secret" not in response.text
    assert alive.status_code == 200


def test_database_check_names_the_failure(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/missing/folder/catalog.sqlite")
    assert "unable to open database file" in check_database(engine)
    assert check_database(create_engine(f"sqlite:///{tmp_path}/ok.sqlite")) == ""


def test_a_catalog_database_that_cannot_be_connected_is_the_readiness_problem(
    tmp_path: Path,
) -> None:
    """Connected by the check itself (in its thread) when nothing connected it before:
    a database that cannot be created is reported, not raised (a 503, not a 500)."""
    unreachable = Settings(
        data_dir=tmp_path / "state", database_url="sqlite:////proc/outcrop-none/catalog.sqlite"
    )
    problem = check_catalog_database(Catalog(unreachable))
    assert problem.startswith(("FileNotFoundError", "PermissionError", "OSError")), problem
    assert "/proc/outcrop-none" in problem
    fine = Catalog(Settings(data_dir=tmp_path / "state"))
    assert check_catalog_database(fine) == ""
    fine.close()


def test_counters_are_summed_over_worker_processes(tmp_path: Path) -> None:
    served = served_folder(tmp_path / "served")
    folder = tmp_path / "prometheus"
    folder.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(folder)}
    srv = start_server([str(served), "--workers", "2"], tmp_path / "state", env)
    try:
        sent = answered_by_both_workers(srv, folder)
        scrapes = [scrape(srv) for _ in range(6)]  # answered by either worker
    finally:
        srv.stop()
    key = {"route": "/api/datasets", "method": "GET", "status": "200"}
    assert {value(s, "outcrop_http_requests_total", **key) for s in scrapes} == {sent}


def answered_by_both_workers(server: Server, folder: Path) -> int:
    """Send batches of concurrent requests (new connections each) until both workers have
    answered some (each worker writes its own counter file); how many were sent."""
    sent = 0
    deadline = time.monotonic() + 60
    with ThreadPoolExecutor(8) as pool:
        while time.monotonic() < deadline:
            statuses = list(pool.map(lambda _: get_status(server), range(16)))
            assert statuses == [200] * 16
            sent += 16
            if len(list(folder.glob("counter_*.db"))) >= 2:
                return sent
    raise AssertionError("one worker answered every request")


def get_status(server: Server) -> int:
    return httpx.get(f"{server.url}/api/datasets").status_code
