"""Jobs whose array work runs on a Dask cluster (`dask_scheduler`): a real `LocalCluster`
of two worker processes on 127.0.0.1, the embedded queue consuming in this process."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from tests.test_jobs import Deployment, read_netcdf, zip_of

distributed = pytest.importorskip("distributed")
IDS = ["north", "south", "gone"]
LAT = np.linspace(-45.0, 45.0, 7)
LON = np.linspace(0.0, 350.0, 36)


def field(ds_id: str) -> np.ndarray[Any, Any]:
    seed = sum(map(ord, ds_id))
    return np.arange(3 * LAT.size * LON.size, dtype="f4").reshape(3, LAT.size, LON.size) + seed


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=40,
    ) as made:
        yield made


def test_each_dataset_is_a_task_on_the_cluster_with_the_values_of_a_local_run(
    cluster: Any, tmp_path: Path
) -> None:
    from outcrop.jobs.cluster import EVENT_TOPIC
    from outcrop.settings import Settings

    archive = tmp_path / "archive"
    archive.mkdir()
    for ds_id in IDS:
        xr.Dataset(
            {"tas": (("time", "lat", "lon"), field(ds_id))},
            coords={"time": np.arange(3), "lat": LAT, "lon": LON},
        ).to_netcdf(archive / f"{ds_id}.nc")
    settings = Settings(
        paths=[archive],
        data_dir=tmp_path / "state",
        quiet=True,
        dask_scheduler=cluster.scheduler_address,
    )
    dep = Deployment(settings)
    (archive / "gone.nc").unlink()  # catalogued, then lost: that dataset fails alone
    dep.start()
    try:
        bbox = [10.0, 60.0, -20.0, 30.0]  # west, east, south, north
        job = dep.submit(
            {"datasets": IDS, "operations": [{"operation": "mask_bbox", "bbox": bbox}]}
        )
        done = dep.wait(job.id)
        assert done.status == "finished", done
        zf = zip_of(dep, job.id)
        assert sorted(zf.namelist()) == ["README.txt", "errors.json", "north.nc", "south.nc"]
        errors = json.loads(zf.read("errors.json"))
        assert list(errors) == ["gone"] and "gone.nc" in errors["gone"]
        assert str(tmp_path) not in errors["gone"]
        inside = ((LAT >= -20) & (LAT <= 30))[:, None] & ((LON >= 10) & (LON <= 60))[None, :]
        for ds_id in ("north", "south"):
            expected = np.where(inside[None], field(ds_id), np.nan)
            got = read_netcdf(zf, f"{ds_id}.nc", tmp_path)["tas"].values
            np.testing.assert_array_equal(got, expected)
    finally:
        dep.stop()
        dep.catalog.close()
    with distributed.Client(cluster.scheduler_address, set_as_default=False) as client:
        events = [event for _, event in client.get_events(EVENT_TOPIC)]
    done_by = {event["dataset"]: event for event in events}
    assert set(done_by) == set(IDS)
    assert all(event["pid"] != os.getpid() for event in events)  # worked on the cluster
    assert done_by["gone"]["error"] and done_by["north"]["error"] is None


def test_an_unreachable_scheduler_fails_the_job_saying_so(tmp_path: Path) -> None:
    from tests.conftest import free_port
    from tests.test_jobs import make_settings

    settings = make_settings(tmp_path, dask_scheduler=f"tcp://127.0.0.1:{free_port()}")
    dep = Deployment(settings)
    dep.start()
    try:
        job = dep.submit({"datasets": ["a"], "operations": []})
        done = dep.wait(job.id)
        assert done.status == "failed"
        assert "Dask scheduler" in (done.error or "") and "OUTCROP_DASK_SCHEDULER" in done.error
    finally:
        dep.stop()
        dep.catalog.close()
