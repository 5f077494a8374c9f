"""Several nodes: two `outcrop serve` processes on one PostgreSQL catalog and one Redis
queue, behind the nginx upstream of docs/deploy-nodes.md, with an `outcrop worker`.

PostgreSQL (127.0.0.1:5432, database `test`) and Redis (127.0.0.1:6379) are required
under CI=true; elsewhere the tests that need them are skipped with a message."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import xarray as xr
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

import outcrop.catalog
from outcrop.catalog import Catalog
from outcrop.db import HEAD, MIGRATIONS, Base, connect, current_revision
from outcrop.settings import Settings
from tests import test_catalog
from tests.api.test_proxy import doc_nginx_block, replace_once, running_nginx
from tests.conftest import Server, free_port, start_server
from tests.test_jobs import redis_url as redis_database

DONE = ("finished", "failed", "cancelled")


# -- services: PostgreSQL and Redis, required under CI=true, skipped elsewhere ------------
postgres_url = test_catalog.postgres_url  # a fresh schema, dropped after the test


@pytest.fixture
def redis_url() -> str:
    return redis_database()


# -- migrations -------------------------------------------------------------------------
def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def test_migrations_run_one_by_one_to_head_on_postgresql(postgres_url: str) -> None:
    from alembic import command

    revisions = [r.revision for r in ScriptDirectory.from_config(alembic_config()).walk_revisions()]
    engine = create_engine(postgres_url)
    try:
        for revision in reversed(revisions):  # oldest first
            config = alembic_config()
            with engine.begin() as conn:
                config.attributes["connection"] = conn
                command.upgrade(config, revision)
            assert current_revision(engine) == revision
        assert current_revision(engine) == HEAD
        tables = inspect(engine)
        for table in Base.metadata.sorted_tables:
            columns = {c["name"] for c in tables.get_columns(table.name)}
            assert columns == set(table.columns.keys()), table.name
    finally:
        engine.dispose()


def test_an_empty_postgresql_schema_is_migrated_to_head_on_connect(postgres_url: str) -> None:
    engine = connect(postgres_url)
    try:
        assert engine.dialect.name == "postgresql"
        assert current_revision(engine) == HEAD
        assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD
    finally:
        engine.dispose()


# -- one catalog seen by several processes ----------------------------------------------
def write_grid(path: Path, seed: int) -> xr.Dataset:
    """A small grid with values computed here, not by the server."""
    ds = xr.Dataset(
        {"t": (("time", "lat"), np.arange(12, dtype="f8").reshape(4, 3) * 0.5 + seed)},
        coords={"time": np.arange(4), "lat": np.linspace(-10, 10, 3)},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(path)
    return ds


def test_a_catalog_sees_what_another_process_scanned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outcrop.catalog, "RELOAD_CHECK_S", 0.0)  # check on every lookup
    folder = tmp_path / "archive"
    write_grid(folder / "a.nc", 1)
    settings = Settings(paths=[folder], data_dir=tmp_path / "state", quiet=True)
    scanner, server = Catalog(settings), Catalog(settings)
    scanner.refresh()
    server.load()
    assert [e.id for e in server.entries()] == ["a"]

    write_grid(folder / "b.nc", 2)
    scanner.refresh()
    assert "b" in server
    np.testing.assert_array_equal(server.open("b")["t"].values, xr.load_dataset(folder / "b.nc").t)

    before = server.get("a").version
    write_grid(folder / "a.nc", 3)
    os.utime(folder / "a.nc", ns=(0, 10**18))  # a different mtime whatever the clock
    (folder / "b.nc").unlink()
    scanner.refresh()
    assert server.get("a").version != before
    np.testing.assert_array_equal(server.open("a")["t"].values, xr.load_dataset(folder / "a.nc").t)
    assert [e.id for e in server.entries()] == ["a"]
    scanner.close()
    server.close()


# -- two nodes behind nginx -------------------------------------------------------------
@dataclass
class Nodes:
    folder: Path
    state: Path
    env: dict[str, str]
    a: Server
    b: Server
    proxy: str  # http://127.0.0.1:PORT
    worker: subprocess.Popen[bytes]
    worker_log: Path

    def which(self, request_id: str) -> str:
        """The node whose access log has the request (written just after the response)."""
        for _ in range(100):
            for node in (self.a, self.b):
                if f'"request_id": "{request_id}"' in node.logs():
                    return node.url
            time.sleep(0.05)
        raise AssertionError(f"no node logged request {request_id}\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(
            [self.a.logs(), self.b.logs(), self.worker_log.read_text(errors="replace")]
        )


def node_dir(state: Path, name: str) -> Path:
    """A node's own data folder (its jobs go to OUTCROP_JOBS_DIR, which all share)."""
    data_dir = state / name
    data_dir.mkdir(parents=True)
    return data_dir


def upstream_config(listen: int, nodes: list[Server]) -> str:
    """The nginx configuration of docs/deploy-nodes.md, with this test's ports."""
    block = doc_nginx_block("deploy-nodes.md", "upstream outcrop")
    for doc_address, node in zip(["10.0.0.11:8765", "10.0.0.12:8765"], nodes, strict=True):
        block = replace_once(block, f"server {doc_address};", f"server {node.url[7:]};")
    return replace_once(block, "listen 80;", f"listen 127.0.0.1:{listen};")


def start_worker(env: dict[str, str], data_dir: Path) -> tuple[subprocess.Popen[bytes], Path]:
    log = data_dir / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "outcrop", "worker", "--data-dir", str(data_dir)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,
        )
    return process, log


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def nodes(postgres_url: str, redis_url: str, tmp_path: Path) -> Iterator[Nodes]:
    folder = tmp_path / "archive"
    for seed, name in enumerate(["grid/a", "grid/b"]):
        write_grid(folder / f"{name}.nc", seed)
    state, shared_jobs = tmp_path / "state", tmp_path / "shared-jobs"
    shared_jobs.mkdir()
    env = {
        "OUTCROP_DATABASE_URL": postgres_url,
        "OUTCROP_QUEUE_URL": redis_url,
        "OUTCROP_JOBS_DIR": str(shared_jobs),
    }
    # The schema is made once before the nodes start (docs/deploy-nodes.md).
    upgrade = [sys.executable, "-m", "outcrop", "db", "upgrade", "--data-dir", str(state / "db")]
    done = subprocess.run(upgrade, env={**os.environ, **env}, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    # Both nodes start (and scan into the empty catalog) at the same time, as after a deploy.
    with ThreadPoolExecutor(2) as pool:
        starting = [
            pool.submit(start_server, [str(folder)], node_dir(state, name), env)
            for name in ("node-a", "node-b")
        ]
        errors = [f.exception() for f in starting]
    started = [f.result() for f, e in zip(starting, errors, strict=True) if e is None]
    if any(errors):
        for server in started:
            server.stop()
        raise AssertionError(f"a node failed to start: {errors}")
    a, b = started
    worker, worker_log = start_worker(env, node_dir(state, "worker"))
    listen = free_port()
    cluster = Nodes(folder, state, env, a, b, f"http://127.0.0.1:{listen}", worker, worker_log)
    try:
        with running_nginx(tmp_path, upstream_config(listen, [a, b]), [listen]):
            yield cluster
    finally:
        stop_process(worker)
        cluster.a.stop()  # a test may have restarted a node: stop the one running now
        cluster.b.stop()
        a.stop()


def wait_for_job(url: str, nodes: Nodes) -> dict[str, Any]:
    """Poll the job until it is done (a bound on the polls, not a timing assertion)."""
    for _ in range(1200):
        job: dict[str, Any] = httpx.get(url).raise_for_status().json()
        if job["status"] in DONE:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job never finished: {job}\n{nodes.logs()}")


def netcdf_in_zip(zipped: bytes, name: str) -> xr.Dataset:
    with zipfile.ZipFile(io.BytesIO(zipped)) as zf:
        return xr.load_dataset(io.BytesIO(zf.read(name)))


def run_job(nodes: Nodes, submit_to: Server, poll: Server, ds_id: str) -> dict[str, Any]:
    """Submit to one node, poll another until finished; the finished job document."""
    response = httpx.post(f"{submit_to.url}/api/jobs", json={"datasets": [ds_id]})
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    job = wait_for_job(f"{poll.url}/api/jobs/{job_id}", nodes)
    assert job["status"] == "finished", f"{job}\n{nodes.logs()}"
    return job


def test_a_job_submitted_to_one_node_is_run_by_a_worker_and_served_by_every_node(
    nodes: Nodes,
) -> None:
    job = run_job(nodes, nodes.a, nodes.b, "grid/a")
    local = xr.load_dataset(nodes.folder / "grid" / "a.nc")
    from_b = httpx.get(f"{nodes.b.url}/api/jobs/{job['id']}/result")
    assert from_b.status_code == 200, from_b.text
    np.testing.assert_array_equal(netcdf_in_zip(from_b.content, "grid/a.nc").t, local.t)

    through_proxy = httpx.get(f"{nodes.proxy}/api/jobs/{job['id']}").json()
    assert through_proxy["result_url"] == f"{nodes.proxy}/api/jobs/{job['id']}/result"
    answered = set()
    for _ in range(2):  # round robin: one download from each node
        result = httpx.get(through_proxy["result_url"])
        assert result.status_code == 200 and result.content == from_b.content
        answered.add(nodes.which(result.headers["x-request-id"]))
    assert answered == {nodes.a.url, nodes.b.url}


def test_both_nodes_serve_the_same_catalog_through_nginx(nodes: Nodes) -> None:
    def ids(base: str) -> list[str]:
        body = httpx.get(f"{base}/api/datasets").raise_for_status().json()
        return [row["id"] for row in body["datasets"]]

    assert ids(nodes.a.url) == ids(nodes.b.url) == ["grid/a", "grid/b"]
    for _ in range(2):  # round robin: each node once
        remote = xr.open_zarr(f"{nodes.proxy}/zarr/grid/b", zarr_format=2)
        np.testing.assert_array_equal(
            remote.t.values, xr.load_dataset(nodes.folder / "grid" / "b.nc").t
        )


def test_a_dataset_scanned_by_one_node_is_served_by_the_other_and_the_worker(
    nodes: Nodes,
) -> None:
    # The running node B and worker loaded the catalog before the new file existed.
    new = write_grid(nodes.folder / "grid" / "c.nc", 7)
    assert httpx.get(f"{nodes.b.url}/api/datasets/grid/c").status_code == 404
    nodes.a.stop()  # node A restarts, as after a deploy, and its start scan finds grid/c
    nodes.a = start_server([str(nodes.folder)], nodes.state / "node-a", nodes.env)

    for _ in range(300):  # a bound on the polls, not a timing assertion
        if httpx.get(f"{nodes.b.url}/api/datasets/grid/c").status_code == 200:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"node B never saw grid/c\n{nodes.b.logs()}")
    remote = xr.open_zarr(f"{nodes.b.url}/zarr/grid/c", zarr_format=3)
    np.testing.assert_array_equal(remote.t.values, new.t.values)

    job = run_job(nodes, nodes.b, nodes.a, "grid/c")
    result = httpx.get(f"{nodes.a.url}/api/jobs/{job['id']}/result")
    assert result.status_code == 200
    np.testing.assert_array_equal(netcdf_in_zip(result.content, "grid/c.nc").t, new.t.values)
