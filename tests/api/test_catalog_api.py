"""`GET /api/datasets` through a real server, and datasets declared in an outcrop.toml
(an aggregation of yearly files) read through the Zarr route."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import xarray as xr

from tests.conftest import Server, start_server
from tests.test_catalog import expected_ids

YEARS = ("ta_2000.nc", "ta_2001.nc", "ta_2002.nc")


def listing(server: Server, **params: str | int) -> httpx.Response:
    return httpx.get(f"{server.url}/api/datasets", params=params, timeout=30)


def test_pages_cover_the_catalog_once_in_a_stable_order(server: Server, archive: Path) -> None:
    everything = sorted(expected_ids(archive))
    seen: list[str] = []
    for offset in range(0, len(everything), 4):
        body = listing(server, limit=4, offset=offset).json()
        assert (body["total"], body["limit"], body["offset"]) == (len(everything), 4, offset)
        seen += [d["id"] for d in body["datasets"]]
    assert seen == everything
    assert listing(server, limit=4, offset=len(everything)).json()["datasets"] == []


def test_rows_carry_title_version_and_a_link(server: Server) -> None:
    body = listing(server, q="ta_Amon_1950").json()
    assert body["total"] == 1
    (row,) = body["datasets"]
    assert row["id"] == "cmip6/ta_Amon_1950"
    assert row["title"] == "Synthetic monthly air temperature (360_day)"
    assert row["version"]
    assert row["url"] == f"{server.url}/api/datasets/cmip6/ta_Amon_1950"


def titles(archive: Path) -> dict[str, str]:
    """Each file's and store's `title` attribute, by dataset id."""
    found = {}
    for path in [*archive.rglob("*.nc"), *archive.rglob("*.zarr")]:
        zarr = path.suffix == ".zarr"
        consolidated = (path / ".zmetadata").exists()
        with xr.open_zarr(path, consolidated=consolidated) if zarr else xr.open_dataset(path) as ds:
            found[path.relative_to(archive).with_suffix("").as_posix()] = ds.attrs.get("title", "")
    return found


@pytest.mark.parametrize("q", ["irradiance", "L2 XRS", "monthly AIR"])
def test_q_filters_on_id_and_title(server: Server, archive: Path, q: str) -> None:
    body = listing(server, q=q).json()
    matching = {k for k, title in titles(archive).items() if q.lower() in (k + title).lower()}
    assert matching  # the query means something in this archive
    # Titles only: ids never contain these words.
    assert not any(q.lower() in k.lower() for k in matching)
    assert {d["id"] for d in body["datasets"]} == matching
    assert body["total"] == len(body["datasets"])
    assert listing(server, q="yearly/").json()["total"] == 3
    assert listing(server, q="nothing matches this").json() == {
        "total": 0,
        "limit": 100,
        "offset": 0,
        "datasets": [],
    }


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "100000"}, "limit"),
        ({"limit": "abc"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"offset": "1e3"}, "offset"),
        ({"page": "2"}, "page"),
    ],
)
def test_bad_paging_is_400_naming_the_parameter(
    server: Server, params: dict[str, str], parameter: str
) -> None:
    response = listing(server, **params)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["parameter"] == parameter
    assert parameter in problem["detail"]


# -- datasets declared in outcrop.toml -------------------------------------------------------
@pytest.fixture(scope="module")
def declared(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server over an outcrop.toml declaring an aggregation and a broken one."""
    site = tmp_path_factory.mktemp("site")
    overlap = site / "overlap"
    overlap.mkdir()
    shutil.copyfile(archive / "yearly" / "ta_2001.nc", overlap / "a.nc")
    shutil.copyfile(archive / "yearly" / "ta_2001.nc", overlap / "b.nc")
    toml = site / "outcrop.toml"
    toml.write_text(
        f"""
[[datasets]]
id = "climate/ta"
title = "Air temperature 2000-2002"
description = "Three yearly files"
source = "{archive}/yearly/ta_*.nc"
aggregate = "time"
attrs = {{ institution = "Outcrop tests" }}

[[datasets]]
id = "climate/broken"
source = "overlap/*.nc"
aggregate = "time"
"""
    )
    server = start_server(["--config", str(toml)], site / "state")
    yield server
    server.stop()


def test_aggregation_reads_through_zarr_as_the_joined_local_files(
    declared: Server, archive: Path
) -> None:
    files = [archive / "yearly" / name for name in YEARS]
    for zarr_format in (2, 3):
        remote = xr.open_zarr(f"{declared.url}/zarr/climate/ta", zarr_format=zarr_format)
        assert remote.sizes["time"] == 36
        with xr.open_mfdataset(files, combine="nested", concat_dim="time") as local:
            expected = local.load()
        expected.attrs["institution"] = "Outcrop tests"
        xr.testing.assert_identical(remote.load(), expected)


def test_declared_dataset_is_listed_with_its_title(declared: Server) -> None:
    body = listing(declared).json()
    assert body["total"] == 1
    (row,) = body["datasets"]
    assert (row["id"], row["title"], row["description"]) == (
        "climate/ta",
        "Air temperature 2000-2002",
        "Three yearly files",
    )
    assert listing(declared, q="three YEARLY").json()["total"] == 1


def test_broken_aggregation_is_logged_and_explained_not_fatal(declared: Server) -> None:
    assert "dataset_unavailable" in declared.logs()
    assert "must not overlap" in declared.logs()
    for url in ("/api/datasets/climate/broken", "/zarr/climate/broken/.zmetadata"):
        response = httpx.get(declared.url + url)
        assert response.status_code >= 400
        assert "must not overlap" in response.json()["detail"]
