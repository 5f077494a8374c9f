"""Jobs through `JobService` and real huey consumers: the embedded SQLite queue in this
process, and `outcrop worker` processes on the SQLite queue and on Redis (127.0.0.1:6379;
required under CI=true, skipped elsewhere when missing)."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from outcrop.catalog import Catalog
from outcrop.db import now
from outcrop.errors import BadQuery, TooLarge
from outcrop.jobs import Job, JobRequest, JobService, Stoppable, start_consumer
from outcrop.settings import Settings

IDS = ["a", "b", "sub/c"]
REDIS = "redis://127.0.0.1:6379"


def values(ds_id: str, shape: tuple[int, int] = (4, 3)) -> np.ndarray[Any, Any]:
    """The data of a generated dataset, computed independently of the server."""
    seed = sum(map(ord, ds_id))
    return np.arange(shape[0] * shape[1], dtype="f8").reshape(shape) * 0.5 + seed


def write_archive(root: Path, ids: list[str], shape: tuple[int, int] = (4, 3)) -> Path:
    for ds_id in ids:
        path = root / f"{ds_id}.nc"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds = xr.Dataset(
            {"t": (("time", "lat"), values(ds_id, shape))},
            coords={"time": np.arange(shape[0]), "lat": np.linspace(-10, 10, shape[1])},
        )
        ds.to_netcdf(path)
    return root


def make_settings(tmp_path: Path, **extra: Any) -> Settings:
    archive = tmp_path / "archive"
    if not archive.exists():
        write_archive(archive, IDS)
    return Settings(paths=[archive], data_dir=tmp_path / "state", quiet=True, **extra)


class Deployment:
    """A catalog, the jobs service over it, and (when started) an embedded consumer."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.catalog = Catalog(settings)
        self.catalog.refresh()
        self.jobs = JobService(settings, self.catalog)
        self.consumer: Stoppable | None = None

    def start(self) -> None:
        self.consumer = start_consumer(self.settings)

    def stop(self) -> None:
        if self.consumer is not None:
            self.consumer.stop()
            self.consumer = None

    def submit(self, raw: dict[str, Any], uploads: dict[str, Path] | None = None) -> Job:
        return self.jobs.submit(JobRequest.parse(raw), uploads or {})[0]

    def wait(self, job_id: str, statuses: tuple[str, ...] = ("finished", "failed")) -> Job:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            job = self.jobs.get(job_id)
            if job.status in statuses:
                return job
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} still {self.jobs.get(job_id)} after 120 s")


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    dep = Deployment(make_settings(tmp_path))
    dep.start()
    yield dep
    dep.stop()
    dep.catalog.close()


def zip_of(dep: Deployment, job_id: str) -> zipfile.ZipFile:
    path = dep.jobs.result_path(job_id)
    assert path is not None
    return zipfile.ZipFile(io.BytesIO(path.read_bytes()))


def read_netcdf(zf: zipfile.ZipFile, name: str, tmp_path: Path) -> xr.Dataset:
    target = tmp_path / "read" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(zf.read(name))
    return xr.load_dataset(target)


# -- the embedded queue ------------------------------------------------------------------
def test_a_job_zips_each_dataset_with_a_readme_and_errors(
    deployment: Deployment, tmp_path: Path
) -> None:
    job = deployment.submit({"datasets": IDS, "operations": []})
    done = deployment.wait(job.id)
    assert done.status == "finished", done
    assert (done.progress.done, done.progress.total) == (3, 3)
    assert done.expires is not None and done.expires > now() + timedelta(hours=23)
    zf = zip_of(deployment, job.id)
    assert sorted(zf.namelist()) == ["README.txt", "a.nc", "b.nc", "errors.json", "sub/c.nc"]
    for ds_id in IDS:
        np.testing.assert_array_equal(read_netcdf(zf, f"{ds_id}.nc", tmp_path)["t"], values(ds_id))
    readme = zf.read("README.txt").decode()
    assert all(f"dataset {ds_id}" in readme for ds_id in IDS)
    assert str(tmp_path) not in readme and "/" + tmp_path.parts[1] not in readme
    assert json.loads(zf.read("errors.json")) == {}


def test_csv_output_holds_the_values(deployment: Deployment) -> None:
    job = deployment.submit({"datasets": ["a"], "output": {"format": "csv"}})
    assert deployment.wait(job.id).status == "finished"
    text = zip_of(deployment, job.id).read("a.csv").decode()
    rows = [line.split(",") for line in text.splitlines()[1:]]
    np.testing.assert_allclose(sorted(float(r[-1]) for r in rows), sorted(values("a").ravel()))


def test_a_repeated_request_reuses_its_job(deployment: Deployment) -> None:
    first, created = deployment.jobs.submit(JobRequest.parse({"datasets": ["b", "a"]}), {})
    again, created_again = deployment.jobs.submit(
        JobRequest.parse({"datasets": ["a", "b", "a"], "output": {"format": "netcdf"}}), {}
    )
    other, _ = deployment.jobs.submit(
        JobRequest.parse({"datasets": ["a", "b"], "output": {"format": "csv"}}), {}
    )
    assert (created, created_again) == (True, False)
    assert again.id == first.id != other.id
    assert len(first.id) == 32 and int(first.id, 16) >= 0
    deployment.wait(first.id)
    assert deployment.jobs.submit(JobRequest.parse({"datasets": ["a", "b"]}), {})[1] is False


def test_uploads_are_part_of_the_job_id(deployment: Deployment, tmp_path: Path) -> None:
    one, two = tmp_path / "one.geojson", tmp_path / "two.geojson"
    one.write_text('{"type": "FeatureCollection", "features": []}')
    two.write_text('{"type": "FeatureCollection", "features": [] }')
    request = JobRequest.parse({"datasets": ["a"]})
    first = deployment.jobs.submit(request, {"shape": one})[0]
    assert deployment.jobs.submit(request, {"shape": one})[0].id == first.id
    assert deployment.jobs.submit(request, {"shape": two})[0].id != first.id


@pytest.mark.parametrize(
    ("raw", "error", "parameter"),
    [
        ({"datasets": ["a", "b", "sub/c"]}, TooLarge, "datasets"),
        ({"datasets": ["nope"]}, BadQuery, "datasets"),
        ({"datasets": []}, BadQuery, "datasets"),
        ({"datasets": ["a"], "operations": [{}, {}, {}]}, TooLarge, "operations"),
        ({"datasets": ["a"], "operations": "mask"}, BadQuery, "operations"),
        ({"datasets": ["a"], "output": {"format": "grib"}}, BadQuery, "output"),
        ({"datasets": ["a"], "colour": "red"}, BadQuery, "colour"),
    ],
)
def test_bad_requests_are_refused_naming_the_parameter(
    tmp_path: Path, raw: dict[str, Any], error: type[Exception], parameter: str
) -> None:
    dep = Deployment(make_settings(tmp_path, job_max_files=2, job_max_operations=2))
    with pytest.raises(error) as caught:
        dep.jobs.submit(JobRequest.parse(raw), {})
    assert getattr(caught.value, "parameter", None) == parameter
    assert dep.jobs.list(None, 10, 0) == ([], 0)  # nothing queued
    dep.catalog.close()


def test_an_upload_over_the_limit_is_refused(tmp_path: Path) -> None:
    dep = Deployment(make_settings(tmp_path, upload_max_mb=1))
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (2**20 + 1))
    with pytest.raises(TooLarge) as caught:
        dep.jobs.submit(JobRequest.parse({"datasets": ["a"]}), {"shape": big})
    assert caught.value.parameter == "shape" and "upload_max_mb" in str(caught.value)
    dep.catalog.close()


def test_a_failing_dataset_is_recorded_and_the_others_finish(
    deployment: Deployment, tmp_path: Path
) -> None:
    (tmp_path / "archive" / "b.nc").write_bytes(b"not a netcdf file")  # still catalogued
    job = deployment.wait(deployment.submit({"datasets": IDS}).id)
    assert job.status == "finished"
    assert list(job.errors) == ["b"]
    zf = zip_of(deployment, job.id)
    assert "b.nc" not in zf.namelist() and "a.nc" in zf.namelist()
    errors = json.loads(zf.read("errors.json"))
    assert list(errors) == ["b"] and str(tmp_path) not in errors["b"]
    assert "dataset b failed" in zf.read("README.txt").decode()


def test_a_job_whose_every_dataset_fails_fails_and_leaves_no_files(
    deployment: Deployment, tmp_path: Path
) -> None:
    for ds_id in ("a", "b"):
        (tmp_path / "archive" / f"{ds_id}.nc").write_bytes(b"broken")
    job = deployment.wait(deployment.submit({"datasets": ["a", "b"]}).id)
    assert job.status == "failed" and "every one of the 2 datasets failed" in job.error
    assert sorted(job.errors) == ["a", "b"]
    assert deployment.jobs.result_path(job.id) is None
    assert leftovers(deployment.settings) == []


def leftovers(settings: Settings) -> list[str]:
    """Files under data_dir/jobs other than the queue's and the zips."""
    root = settings.data_dir / "jobs"
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith("queue.sqlite") and p.suffix != ".zip"
    )


def test_the_output_limit_fails_the_job(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    noise = np.random.default_rng(0).random((400, 400))  # 1.25 MB that does not compress
    xr.Dataset({"t": (("y", "x"), noise)}).to_netcdf(archive / "big.nc")
    dep = Deployment(Settings(paths=[archive], data_dir=tmp_path / "state", job_max_output_mb=1))
    dep.start()
    try:
        job = dep.wait(dep.submit({"datasets": ["big"]}).id)
    finally:
        dep.stop()
    assert job.status == "failed" and "job_max_output_mb = 1 MB" in job.error
    assert dep.jobs.result_path(job.id) is None and leftovers(dep.settings) == []


def test_the_run_time_limit_fails_the_job(tmp_path: Path) -> None:
    dep = Deployment(make_settings(tmp_path, job_timeout_s=0.2, job_file_delay_s=0.5))
    dep.start()
    try:
        job = dep.wait(dep.submit({"datasets": IDS}).id)
    finally:
        dep.stop()
    assert job.status == "failed" and "job_timeout_s = 0.2 s" in job.error
    assert dep.jobs.result_path(job.id) is None


def test_cancel_removes_the_outputs_and_a_resubmit_runs_again(deployment: Deployment) -> None:
    job = deployment.wait(deployment.submit({"datasets": ["a"]}).id)
    zip_path = deployment.jobs.result_path(job.id)
    assert zip_path is not None and zip_path.is_file()
    cancelled = deployment.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and not zip_path.exists()
    assert deployment.jobs.result_path(job.id) is None
    again, created = deployment.jobs.submit(JobRequest.parse({"datasets": ["a"]}), {})
    assert created and again.id == job.id
    assert deployment.wait(job.id).status == "finished" and zip_path.is_file()


def test_cancelling_a_running_job_stops_it_between_files(tmp_path: Path) -> None:
    dep = Deployment(make_settings(tmp_path, job_file_delay_s=0.5))
    dep.start()
    try:
        job = dep.submit({"datasets": IDS})
        dep.wait(job.id, ("running",))
        dep.jobs.cancel(job.id)
        time.sleep(1.5)  # longer than a file: a job not stopped would have finished by now
        after = dep.jobs.get(job.id)
    finally:
        dep.stop()
    assert after.status == "cancelled" and dep.jobs.result_path(job.id) is None
    assert leftovers(dep.settings) == []


def test_a_queued_job_survives_a_restart(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    first = Deployment(settings)
    job = first.submit({"datasets": ["a"]})  # no consumer: stays queued
    first.catalog.close()
    second = Deployment(settings)
    second.start()
    try:
        assert second.wait(job.id).status == "finished"
    finally:
        second.stop()


def test_expired_jobs_are_cleaned_with_their_zips(deployment: Deployment) -> None:
    job = deployment.wait(deployment.submit({"datasets": ["a"]}).id)
    zip_path = deployment.jobs.result_path(job.id)
    assert zip_path is not None
    assert deployment.jobs.clean(now()) == 0
    assert deployment.jobs.clean(now() + timedelta(hours=25)) == 1
    assert not zip_path.exists() and deployment.jobs.list(None, 10, 0) == ([], 0)


def test_outcrop_jobs_clean_removes_expired_jobs(tmp_path: Path) -> None:
    dep = Deployment(make_settings(tmp_path, job_expiry_hours=0.0001))  # 0.36 s
    dep.start()
    try:
        job = dep.wait(dep.submit({"datasets": ["a"]}).id)
    finally:
        dep.stop()
    time.sleep(0.5)
    out = outcrop("jobs", "clean", env=worker_env(dep.settings), cwd=tmp_path)
    assert out.stdout.strip() == "removed 1 expired jobs", out.stderr
    assert dep.jobs.list(None, 10, 0)[1] == 0 and dep.jobs.result_path(job.id) is None


# -- outcrop worker processes ----------------------------------------------------------------
def outcrop(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "outcrop", *args]
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def worker_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTCROP_")}
    values = settings.model_dump(mode="json", exclude_none=True)
    for name in (
        "paths",
        "data_dir",
        "queue_url",
        "job_lease_s",
        "job_file_delay_s",
        "job_expiry_hours",
    ):
        if name in values:
            value = values[name]
            env[f"OUTCROP_{name.upper()}"] = (
                json.dumps(value) if isinstance(value, list) else str(value)
            )
    return env


def start_worker(settings: Settings, cwd: Path, name: str) -> subprocess.Popen[bytes]:
    log = (cwd / f"{name}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "outcrop", "worker", "--log-level", "info"],
        env=worker_env(settings),
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def redis_url() -> str:
    """A Redis database for this test run (a random one of 1-15, so concurrent runs rarely
    share a queue); required under CI=true, else skipped when Redis is missing."""
    import redis

    try:
        redis.Redis.from_url(REDIS, socket_timeout=2).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Redis at {REDIS} is required under CI=true: {exc}")
        pytest.skip(f"Redis at {REDIS} is not reachable ({exc}); CI=true makes this fail")
    return f"{REDIS}/{random.randint(1, 15)}"


@pytest.fixture(params=["embedded", "redis"])
def backend(request: pytest.FixtureRequest) -> str | None:
    return None if request.param == "embedded" else redis_url()


def test_two_workers_finish_jobs(tmp_path: Path, backend: str | None) -> None:
    settings = make_settings(tmp_path, queue_url=backend, job_workers=0)
    dep = Deployment(settings)
    workers = [start_worker(settings, tmp_path, f"worker{i}") for i in range(2)]
    try:
        jobs = [dep.submit({"datasets": [ds_id]}) for ds_id in IDS]
        done = [dep.wait(job.id) for job in jobs]
    finally:
        for process in workers:
            stop_worker(process)
    assert [job.status for job in done] == ["finished"] * 3
    for ds_id, job in zip(IDS, done, strict=True):
        zf = zip_of(dep, job.id)
        np.testing.assert_array_equal(read_netcdf(zf, f"{ds_id}.nc", tmp_path)["t"], values(ds_id))
    dep.catalog.close()


def test_a_job_of_a_killed_worker_is_finished_by_another(
    tmp_path: Path, backend: str | None
) -> None:
    settings = make_settings(tmp_path, queue_url=backend, job_lease_s=2, job_file_delay_s=1)
    dep = Deployment(settings)
    workers = {p.pid: p for p in (start_worker(settings, tmp_path, f"w{i}") for i in range(2))}
    try:
        job = dep.submit({"datasets": IDS})
        row = dep.wait(job.id, ("running",))
        while dep.jobs.get(job.id).progress.done < 1:
            time.sleep(0.05)
        holder = dep.jobs.store.row(job.id)
        assert holder is not None and holder.status == "running"
        pid = int(holder.worker.split(":")[1])
        os.kill(pid, signal.SIGKILL)  # mid-job: 1 of 3 files done
        workers.pop(pid).wait()
        done = dep.wait(job.id)
        finisher = dep.jobs.store.row(job.id)
    finally:
        for process in workers.values():
            stop_worker(process)
    assert row.status == "running" and done.status == "finished", done
    assert finisher is not None and finisher.attempts == 2
    assert int(finisher.worker.split(":")[1]) in workers
    zf = zip_of(dep, job.id)
    assert zf.testzip() is None
    for ds_id in IDS:
        np.testing.assert_array_equal(read_netcdf(zf, f"{ds_id}.nc", tmp_path)["t"], values(ds_id))
    assert not list((settings.data_dir / "jobs").glob("*.part"))
    dep.catalog.close()
