"""A first start: a new catalog database is created from the models and stamped at head
(no Alembic), and the FastAPI application is built after the server listens, while the
Zarr and OPeNDAP fast paths answer at once.

The schema of a stamped database is compared with one migrated revision by revision, on
SQLite and on PostgreSQL (skipped when none is reachable, required under CI=true).
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import netCDF4
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine

from outcrop.api import app as app_module
from outcrop.api.app import OutcropApp, create_app
from outcrop.api.routes import Prefix, RouteSet, Site
from outcrop.catalog import Catalog
from outcrop.db import HEAD, MIGRATIONS, connect, current_revision
from outcrop.settings import Settings
from tests import test_catalog
from tests.conftest import DATA, add_route_plugin, free_port, start_server

postgres_url = test_catalog.postgres_url  # a fresh schema, dropped after the test
GRIDS = DATA / "grids"


# -- a new database: created at head, the same schema as one migrated ------------------
def migrate_one_by_one(engine: Engine, stop: str = "head") -> None:
    """Every migration in turn, with Alembic itself (not `outcrop.db`)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, stop)


def schema(engine: Engine) -> dict[str, Any]:
    """Tables, columns (in order, with type, nullability and server default), primary
    keys, indexes, unique constraints and foreign keys, as the database reports them."""
    found = inspect(engine)
    tables: dict[str, Any] = {}
    for name in sorted(found.get_table_names()):
        tables[name] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"], c["default"])
                for c in found.get_columns(name)
            ],
            "primary_key": found.get_pk_constraint(name)["constrained_columns"],
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                for i in found.get_indexes(name)
            ),
            "unique": sorted(tuple(u["column_names"]) for u in found.get_unique_constraints(name)),
            "foreign_keys": sorted(
                (
                    tuple(f["constrained_columns"]),
                    f["referred_table"],
                    tuple(f["referred_columns"]),
                    f["options"].get("ondelete"),
                )
                for f in found.get_foreign_keys(name)
            ),
        }
    return tables


def sqlite_schema(path: Path) -> dict[str, Any]:
    """SQLite's own description of every table (PRAGMA), independent of SQLAlchemy."""
    with sqlite3.connect(path) as db:
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {
            name: (
                db.execute(f"PRAGMA table_info({name})").fetchall(),
                sorted(
                    (row[1], row[2], row[3], db.execute(f"PRAGMA index_xinfo({row[1]})").fetchall())
                    for row in db.execute(f"PRAGMA index_list({name})")
                ),
                db.execute(f"PRAGMA foreign_key_list({name})").fetchall(),
            )
            for name in sorted(names)
        }


def test_a_new_sqlite_database_is_created_at_head_with_the_migrated_schema(
    tmp_path: Path,
) -> None:
    stamped = connect(f"sqlite:///{tmp_path / 'stamped.sqlite'}")
    migrated = create_engine(f"sqlite:///{tmp_path / 'migrated.sqlite'}")
    migrate_one_by_one(migrated)
    try:
        assert current_revision(stamped) == current_revision(migrated) == HEAD
        assert schema(stamped) == schema(migrated)
        assert "datasets" in schema(stamped) and "alembic_version" in schema(stamped)
    finally:
        stamped.dispose()
        migrated.dispose()
    assert sqlite_schema(tmp_path / "stamped.sqlite") == sqlite_schema(tmp_path / "migrated.sqlite")


def test_a_new_postgresql_schema_is_created_at_head_with_the_migrated_schema(
    postgres_url: str,
) -> None:
    other = create_engine(postgres_url)
    with other.begin() as conn:  # a second fresh schema beside the fixture's, migrated
        conn.execute(text('CREATE SCHEMA "migrated_one_by_one"'))
    try:
        migrated = create_engine(
            postgres_url.rsplit("%3D", 1)[0] + "%3Dmigrated_one_by_one", pool_pre_ping=True
        )
        migrate_one_by_one(migrated)
        stamped = connect(postgres_url)
        assert current_revision(stamped) == current_revision(migrated) == HEAD
        assert schema(stamped) == schema(migrated)
        assert "images" in schema(stamped)
        stamped.dispose()
        migrated.dispose()
    finally:
        with other.begin() as conn:
            conn.execute(text('DROP SCHEMA "migrated_one_by_one" CASCADE'))
        other.dispose()


def test_an_older_database_still_upgrades_through_the_migrations(tmp_path: Path) -> None:
    """A catalog at revision 0003 keeps its rows and reaches head by migrating (0004 and
    0005 add the jobs and image tables), with the same schema as a new one."""
    path = tmp_path / "old.sqlite"
    old = create_engine(f"sqlite:///{path}")
    migrate_one_by_one(old, "0003")
    with old.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO datasets (id, root, source, version, updated) "
                "VALUES ('kept', '/data', '{}', 'v1', '2024-01-01 00:00:00')"
            )
        )
    assert current_revision(old) == "0003"
    assert "jobs" not in inspect(old).get_table_names()
    old.dispose()

    upgraded = connect(f"sqlite:///{path}")
    new = connect(f"sqlite:///{tmp_path / 'new.sqlite'}")
    try:
        assert current_revision(upgraded) == HEAD
        with upgraded.connect() as conn:
            row = conn.execute(text("SELECT id, title, driver, error FROM datasets")).one()
        assert tuple(row) == ("kept", "", "grid", "")  # the server defaults filled them
        assert schema(upgraded) == schema(new)
    finally:
        upgraded.dispose()
        new.dispose()


def run_python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_creating_a_new_database_does_not_import_alembic(tmp_path: Path) -> None:
    new = tmp_path / "new.sqlite"
    old = tmp_path / "old.sqlite"
    engine = create_engine(f"sqlite:///{old}")
    migrate_one_by_one(engine, "0004")
    engine.dispose()
    code = (
        "import sys; from outcrop.db import connect, current_revision; "
        "e = connect(sys.argv[1] if len(sys.argv) > 1 else {url!r}); "
        "print(current_revision(e), 'alembic' in sys.modules)"
    )
    assert run_python(code.format(url=f"sqlite:///{new}")) == f"{HEAD} False"
    assert run_python(code.format(url=f"sqlite:///{new}")) == f"{HEAD} False"  # at head
    assert run_python(code.format(url=f"sqlite:///{old}")) == f"{HEAD} True"  # migrated


# -- the FastAPI application, built after start-up -------------------------------------
@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Settings, Catalog]]:
    settings = Settings(paths=[GRIDS], data_dir=tmp_path / "state")
    catalog = Catalog(settings)
    catalog.refresh()
    yield settings, catalog
    catalog.close()


class HeldBuild:
    """`build_api` that waits for `release` once it started: the build in progress."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        real = app_module.build_api

        def held(site: Site, chosen: tuple[RouteSet, ...]) -> Any:
            self.started.set()
            assert self.release.wait(30)
            return real(site, chosen)

        monkeypatch.setattr(app_module, "build_api", held)


def variables_of(path: Path) -> set[str]:
    with netCDF4.Dataset(path) as nc:
        return set(nc.variables)


@pytest.mark.anyio
async def test_requests_during_the_build_wait_for_it_and_get_full_answers(
    served: tuple[Settings, Catalog], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Zarr route answers while the application is being built; `/api/datasets` and
    `/healthz`, asked meanwhile, wait for it and then answer in full."""
    held = HeldBuild(monkeypatch)
    app = create_app(*served)
    assert app.site.application is None  # nothing built before the first request
    expected = sorted(p.relative_to(GRIDS).with_suffix("").as_posix() for p in GRIDS.glob("*.nc"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        import anyio

        answers: dict[str, httpx.Response] = {}

        async def get(path: str) -> None:
            answers[path] = await client.get(path)

        async with anyio.create_task_group() as group:
            group.start_soon(get, "/api/datasets")
            group.start_soon(get, "/healthz")
            await anyio.to_thread.run_sync(held.started.wait, 30)
            zmetadata = await client.get(f"/zarr/{expected[0]}/.zmetadata")
            assert zmetadata.status_code == 200  # while the build is held
            assert not answers  # the others wait for it
            held.release.set()
    metadata = json.loads(zmetadata.content)["metadata"]
    arrays = {key.split("/")[0] for key in metadata if key.endswith("/.zarray")}
    assert arrays == variables_of(GRIDS / f"{expected[0]}.nc")
    listing = answers["/api/datasets"]
    assert listing.status_code == 200
    assert [d["id"] for d in listing.json()["datasets"]] == expected
    assert listing.json()["total"] == len(expected)
    assert answers["/healthz"].status_code == 200
    assert answers["/healthz"].json() == {"status": "ok", "datasets": len(expected)}
    assert app.site.application is not None


class Recorder:
    """A service of a route set: when it started and stopped."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def start(self) -> Recorder:
        self.events.append("started")
        return self

    def stop(self) -> None:
        self.events.append("stopped")


RECORDER = Recorder()


def add_late(site: Site) -> None:
    """A third-party set registering a prefix and a service in `add` (built later)."""

    async def hello(scope: Any, receive: Any, send: Any) -> None:
        body = b"late " + scope["path"].encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    site.prefixes.append(Prefix("/late/", hello, "/late/{path}"))
    site.services.append(RECORDER.start)


LATE = RouteSet("late", "a prefix and a service added when the app is built", add_late)


@pytest.fixture
def late_plugin(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    add_route_plugin(monkeypatch, "late", f"{__name__}:LATE")
    RECORDER.events.clear()
    return RECORDER


def late_app(served: tuple[Settings, Catalog]) -> OutcropApp:
    """The app over `served` with the REST routes and the `late` plugin's."""
    settings, catalog = served
    return create_app(settings.model_copy(update={"routes": ["rest", "late"]}), catalog)


@pytest.mark.anyio
async def test_a_prefix_added_by_a_deferred_set_answers_its_first_request(
    served: tuple[Settings, Catalog], late_plugin: Recorder
) -> None:
    app = late_app(served)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/late/x")
    assert (response.status_code, response.content) == (200, b"late x")
    assert late_plugin.events == []  # no lifespan (no server running): no services


async def lifespan(app: OutcropApp, inbox: list[str], replies: list[str]) -> None:
    """Drive the ASGI lifespan protocol: send the messages of `inbox` as they appear in it
    (the caller may append more while this runs), append the app's replies to `replies`."""
    import anyio

    async def receive() -> dict[str, Any]:
        while not inbox:
            await anyio.sleep(0.01)
        return {"type": inbox.pop(0)}

    async def send(message: dict[str, Any]) -> None:
        replies.append(message["type"])

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)


@pytest.mark.anyio
async def test_services_start_once_built_in_the_background_and_stop_at_shutdown(
    served: tuple[Settings, Catalog], late_plugin: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no request at all, the application is built `BUILD_DELAY_S` after start-up
    and the sets' services start; shutdown stops them and closes the pipeline."""
    import anyio

    monkeypatch.setattr(app_module, "BUILD_DELAY_S", 0.05)
    app = late_app(served)
    closed: list[bool] = []
    monkeypatch.setattr(app.site.pipeline, "close", lambda: closed.append(True))
    inbox, replies = ["lifespan.startup"], []

    async with anyio.create_task_group() as group:
        group.start_soon(lifespan, app, inbox, replies)
        with anyio.fail_after(30):
            while late_plugin.events != ["started"]:
                await anyio.sleep(0.01)
        assert app.site.application is not None
        assert replies == ["lifespan.startup.complete"]
        inbox.append("lifespan.shutdown")
    assert replies == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert late_plugin.events == ["started", "stopped"]
    assert closed == [True]


@contextlib.asynccontextmanager
async def serving(
    app: OutcropApp,
) -> AsyncIterator[tuple[httpx.AsyncClient, list[str], list[str]]]:
    """`app` after its lifespan started, with a client; append "lifespan.shutdown" to the
    inbox to stop it (the block then ends when the app has answered it)."""
    import anyio

    inbox, replies = ["lifespan.startup"], []
    transport = httpx.ASGITransport(app=app)
    async with (
        anyio.create_task_group() as group,
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        group.start_soon(lifespan, app, inbox, replies)
        yield client, inbox, replies


class SlowService:
    """A service whose start blocks until `release` is set; `fail` makes it raise."""

    def __init__(self, fail: bool = False) -> None:
        self.release, self.starting = threading.Event(), threading.Event()
        self.fail = fail
        self.events: list[str] = []

    def start(self) -> SlowService:
        self.starting.set()
        assert self.release.wait(30)
        if self.fail:
            raise RuntimeError("the queue is not reachable")
        self.events.append("started")
        return self

    def stop(self) -> None:
        self.events.append("stopped")


@pytest.mark.anyio
async def test_a_request_waiting_for_the_build_does_not_wait_for_the_services(
    served: tuple[Settings, Catalog], late_plugin: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first `/api/datasets` is answered while a service (the job consumer, on a
    restart: a second catalog and SQLAlchemy) is still starting; a shutdown then waits
    for the services to start, and stops them all."""
    import anyio

    monkeypatch.setattr(app_module, "BUILD_DELAY_S", 60)
    slow = SlowService()
    app = late_app(served)
    app.site.services.append(slow.start)
    async with serving(app) as (client, inbox, replies):
        with anyio.fail_after(30):
            listing = await client.get("/api/datasets")
        assert listing.status_code == 200 and listing.json()["total"] == 2
        assert await anyio.to_thread.run_sync(slow.starting.wait, 30)
        assert slow.events == [] and late_plugin.events == []  # started in turn, after it
        inbox.append("lifespan.shutdown")
        await anyio.sleep(0.2)
        assert replies == ["lifespan.startup.complete"]  # the shutdown waits for the start
        slow.release.set()
    assert replies == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert slow.events == ["started", "stopped"]
    assert late_plugin.events == ["started", "stopped"]


@pytest.mark.anyio
async def test_a_service_that_fails_to_start_is_logged_and_the_others_run(
    served: tuple[Settings, Catalog],
    late_plugin: Recorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import anyio
    from structlog.testing import capture_logs

    monkeypatch.setattr(app_module, "BUILD_DELAY_S", 60)
    broken = SlowService(fail=True)
    broken.release.set()
    app = late_app(served)
    app.site.services.insert(0, broken.start)  # before the plugin's own
    async with serving(app) as (client, inbox, _):
        with anyio.fail_after(30), capture_logs() as logged:
            assert (await client.get("/healthz")).status_code == 200
            while late_plugin.events != ["started"]:
                await anyio.sleep(0.01)
        assert (await client.get("/late/x")).status_code == 200
        inbox.append("lifespan.shutdown")
    assert late_plugin.events == ["started", "stopped"] and broken.events == []
    failed = [e for e in logged if e["event"] == "service_start_failed"]
    assert [e["error"] for e in failed] == ["RuntimeError: the queue is not reachable"]


@pytest.mark.anyio
async def test_a_shutdown_before_any_build_builds_nothing(
    served: tuple[Settings, Catalog], late_plugin: Recorder
) -> None:
    app = late_app(served)
    replies: list[str] = []
    await lifespan(app, ["lifespan.startup", "lifespan.shutdown"], replies)
    assert replies == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert app.site.application is None
    assert late_plugin.events == []


# -- a real first start ---------------------------------------------------------------
FIRST_ANSWER = """
import json, runpy, sys
import outcrop.api.app
import outcrop.api.zarr as zarr_api
outcrop.api.app.BUILD_DELAY_S = 60  # however slow the machine, built after the answer
out, seen = sys.argv[1], {}
respond = zarr_api.respond

async def noting(send, status, *args, **kwargs):
    await respond(send, status, *args, **kwargs)
    if status == 200 and not seen:  # the modules loaded when the first answer was sent
        seen["modules"] = sorted(sys.modules)
        with open(out, "w") as f:
            json.dump(seen["modules"], f)

zarr_api.respond = noting
import outcrop.api.middleware as middleware
count = middleware.observe

def counting(*args):  # the first answer counted in the metrics, on the event loop
    count(*args)
    if "counted" not in seen:
        seen["counted"] = sorted(sys.modules)
        with open(out + ".counted", "w") as f:
            json.dump(seen["counted"], f)

middleware.observe = counting
sys.argv = ["outcrop", *sys.argv[2:]]
runpy.run_module("outcrop", run_name="__main__", alter_sys=True)
"""


def serve_noting(script: str, listed: Path, state: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`outcrop serve GRIDS` run by `script` (which writes the modules it has loaded at
    some point to `listed`), on a free port: the process and its base URL."""
    path = state.parent / "noting.py"
    path.write_text(script)
    port = free_port()
    argv = [sys.executable, str(path), str(listed), "serve", str(GRIDS)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--data-dir", str(state)]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return process, f"http://127.0.0.1:{port}"


def test_a_first_start_answers_zarr_metadata_before_importing_fastapi_or_xarray(
    tmp_path: Path,
) -> None:
    """A new data folder: the first `.zmetadata` is answered, complete, and counted in the
    metrics, by a server that has not imported FastAPI, Alembic, xarray, dask or zarr
    yet; `/api/datasets` then answers too."""
    state, listed = tmp_path / "state", tmp_path / "modules.json"
    process, base = serve_noting(FIRST_ANSWER, listed, state)
    try:
        first = poll(process, f"{base}/zarr/ostia_monthly/.zmetadata")
        listing = httpx.get(f"{base}/api/datasets", timeout=60)
    finally:
        process.terminate()
        process.wait(30)
    metadata = json.loads(first.content)["metadata"]
    arrays = {key.split("/")[0] for key in metadata if key.endswith("/.zarray")}
    assert arrays == variables_of(GRIDS / "ostia_monthly.nc")
    modules = {name.split(".")[0] for name in json.loads(listed.read_text())}
    assert {"outcrop", "h5py"} <= modules
    # A NetCDF-4 file's view mirrors it as stored: no xarray (pandas), dask or zarr either.
    # The catalog database is written after the first answer: no SQLAlchemy before it.
    heavy = {"fastapi", "alembic", "sqlalchemy", "xarray", "pandas", "dask", "zarr"}
    assert not modules & heavy, sorted(modules & heavy)
    # Counting it in the metrics, on the event loop, imports none of them either.
    counted = {name.split(".")[0] for name in json.loads(Path(f"{listed}.counted").read_text())}
    assert "prometheus_client" in counted and not counted & heavy, sorted(counted & heavy)
    assert listing.status_code == 200
    ids = {"A1B_north_america", "ostia_monthly"}
    assert {d["id"] for d in listing.json()["datasets"]} == ids
    with sqlite3.connect(state / "catalog.sqlite") as conn:
        assert {row[0] for row in conn.execute("SELECT id FROM datasets")} == ids
        assert len(conn.execute("SELECT path FROM files").fetchall()) == 2


RESTART_ANSWER = """
import json, runpy, sys
import outcrop.api.app as app_module
out, build = sys.argv[1], app_module.build_api

def noting(*args, **kwargs):
    api = build(*args, **kwargs)
    with open(out, "w") as f:  # the modules loaded once the application is built
        json.dump(sorted(sys.modules), f)
    return api

app_module.build_api = noting
sys.argv = ["outcrop", *sys.argv[2:]]
runpy.run_module("outcrop", run_name="__main__", alter_sys=True)
"""


def test_a_restart_builds_its_application_without_sqlalchemy(tmp_path: Path) -> None:
    """A restart over a kept data folder (nothing changed) reads its catalog with the
    standard library, and builds the FastAPI application for its first `/api/datasets`
    without importing SQLAlchemy: the job records, the image store and the metrics'
    database are reached when first used. The jobs API then answers from the database."""
    state, listed = tmp_path / "state", tmp_path / "modules.json"
    first = start_server([str(GRIDS)], state)  # indexes, and writes the catalog database
    first.stop()
    process, base = serve_noting(RESTART_ANSWER, listed, state)
    try:
        listing = poll(process, f"{base}/api/datasets")
        jobs = httpx.get(f"{base}/api/jobs", headers={"X-Outcrop-Client": "me"}, timeout=60)
        metrics = httpx.get(f"{base}/metrics", timeout=60)
    finally:
        process.terminate()
        process.wait(30)
    modules = {name.split(".")[0] for name in json.loads(listed.read_text())}
    assert {"fastapi", "outcrop"} <= modules  # written after the build
    assert not modules & {"sqlalchemy", "alembic"}, sorted(modules & {"sqlalchemy", "alembic"})
    assert {d["id"] for d in listing.json()["datasets"]} == {"A1B_north_america", "ostia_monthly"}
    assert jobs.status_code == 200 and jobs.json()["total"] == 0
    assert metrics.status_code == 200
    assert 'outcrop_jobs{state="queued"} 0.0' in metrics.text  # read from the database


def test_a_server_stopped_before_its_first_request_still_writes_its_catalog(
    tmp_path: Path,
) -> None:
    """The catalog database is written at shutdown if nothing built the application
    before; the next start then reads it (nothing to probe again)."""
    state = tmp_path / "state"
    port = free_port()
    argv = [sys.executable, "-m", "outcrop", "serve", str(GRIDS), "--port", str(port)]
    argv += ["--host", "127.0.0.1", "--data-dir", str(state)]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        with socket.socket() as probe:  # listening: stop it before any request
            while probe.connect_ex(("127.0.0.1", port)) != 0:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.01)
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err.decode()
    with sqlite3.connect(state / "catalog.sqlite") as conn:
        ids = {row[0] for row in conn.execute("SELECT id FROM datasets")}
    assert ids == {"A1B_north_america", "ostia_monthly"}


def poll(process: subprocess.Popen[bytes], url: str) -> httpx.Response:
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        try:
            response = httpx.get(url, timeout=30)
            if response.status_code == 200:
                return response
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_the_served_server_still_answers_healthz_first(tmp_path: Path) -> None:
    """`outcrop serve` as tests and operators start it: the wait for `/healthz` (the
    first request) waits for the build, which then reports the datasets."""
    server = start_server([str(GRIDS)], tmp_path / "state")
    try:
        body = httpx.get(f"{server.url}/healthz", timeout=30).json()
        assert body == {"status": "ok", "datasets": 2}
        assert httpx.get(f"{server.url}/readyz", timeout=30).status_code == 200
    finally:
        server.stop()


@pytest.mark.anyio
async def test_the_start_up_timer_waits_for_a_zarr_answer_in_progress(
    served: tuple[Settings, Catalog], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first Zarr request slower than `BUILD_DELAY_S` is not made to share the CPU with
    the build: the build starts once it is answered."""
    import anyio

    monkeypatch.setattr(app_module, "BUILD_DELAY_S", 0.05)
    app = create_app(*served)
    release = threading.Event()
    real = app.site.pipeline.zarr_view

    def slow_view(*args: Any) -> Any:
        assert release.wait(30)
        return real(*args)

    monkeypatch.setattr(app.site.pipeline, "zarr_view", slow_view)
    inbox = ["lifespan.startup"]

    async def receive() -> dict[str, Any]:
        while not inbox:
            await anyio.sleep(0.01)
        return {"type": inbox.pop(0)}

    async def send(_: dict[str, Any]) -> None:
        pass

    transport = httpx.ASGITransport(app=app)
    async with (
        anyio.create_task_group() as group,
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        group.start_soon(app, {"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
        answer: list[httpx.Response] = []

        async def first() -> None:
            answer.append(await client.get("/zarr/ostia_monthly/zarr.json"))

        group.start_soon(first)
        await anyio.sleep(0.5)  # ten times the delay
        assert app.site.application is None and not answer
        release.set()
        with anyio.fail_after(30):
            while app.site.application is None:
                await anyio.sleep(0.01)
        assert answer[0].status_code == 200
        inbox.append("lifespan.shutdown")


@pytest.mark.anyio
async def test_the_image_service_is_made_off_the_event_loop(
    served: tuple[Settings, Catalog], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its first use imports SQLAlchemy and may connect the database: in the thread pool,
    whether the API or the web pages use it first."""
    from outcrop.images import service as images

    made: list[threading.Thread] = []
    real = images.ImageService.__init__

    def noting(self: Any, *args: Any) -> None:
        made.append(threading.current_thread())
        real(self, *args)

    monkeypatch.setattr(images.ImageService, "__init__", noting)
    for path in ("/api/images", "/images"):
        app = create_app(*served)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get(path)
        assert response.status_code == 200, response.text
    assert len(made) == 2
    assert all(thread is not threading.main_thread() for thread in made), made
