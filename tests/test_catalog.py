"""The catalog: ids from paths, groups, declarations, an index that survives restarts
without reopening unchanged files, paging and search, and path safety."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import structlog
import xarray as xr
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from outcrop.catalog import Catalog, parse_page
from outcrop.db import HEAD
from outcrop.drivers.grid import GridDriver
from outcrop.errors import BadQuery, DatasetNotFound, SourceError
from outcrop.settings import DatasetConfig, Settings, load_settings
from tests.conftest import start_server

PG_URL = os.environ.get(
    "OUTCROP_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
YEARS = ("ta_2000.nc", "ta_2001.nc", "ta_2002.nc")


def expected_ids(root: Path) -> set[str]:
    """Dataset ids of a served folder, worked out from the files independently."""
    ids = set()
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or ".zarr" in str(rel.parent):
            continue
        if path.suffix in {".nc", ".zarr"}:
            ids.add(rel.with_suffix("").as_posix())
    return ids | {"groups/forecast"}  # groups.nc: its root and the group holding `wind`


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    """Every structlog event while the test runs, whatever logging was configured before."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with structlog.testing.capture_logs() as captured:
            yield captured
    finally:
        structlog.configure(**saved)


@pytest.fixture
def folder(archive: Path, tmp_path: Path) -> Path:
    """A private copy of the archive, to change files in."""
    root = tmp_path / "archive"
    shutil.copytree(archive, root)
    return root


def catalog_of(root: Path | None, state: Path, how: str = "refresh", **settings: Any) -> Catalog:
    """The catalog of `root`, scanned by `refresh()` or as a server starts (`start()`, then
    `save()`, which a server calls after its first answer)."""
    paths = [root] if root is not None else []
    catalog = Catalog(Settings(paths=paths, data_dir=state, **settings))
    if how == "start":
        catalog.start()
        catalog.save()
    else:
        catalog.refresh()
    return catalog


@pytest.fixture(params=["refresh", "start"])
def how(request: pytest.FixtureRequest) -> str:
    """How the catalog is scanned: `refresh()`, or `start()` as `outcrop serve` does."""
    return str(request.param)


class Calls:
    """Counts calls of a method while a test runs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, cls: type, name: str) -> None:
        self.paths: list[Any] = []
        original = getattr(cls, name)

        def counting(this: Any, arg: Any, *more: Any) -> Any:
            self.paths.append(arg)
            return original(this, arg, *more)

        monkeypatch.setattr(cls, name, counting)


def test_ids_are_relative_paths_without_extension(archive: Path, tmp_path: Path, how: str) -> None:
    catalog = catalog_of(archive, tmp_path / "state", how=how)
    ids = {e.id for e in catalog.entries()}
    assert ids == expected_ids(archive)
    assert {"cmip6/ta_Amon_1950", "stores/ta_v3", "groups", "groups/forecast"} <= ids


def test_a_group_is_a_dataset_of_its_own(archive: Path, tmp_path: Path) -> None:
    catalog = catalog_of(archive, tmp_path / "state")
    with xr.open_dataset(archive / "groups.nc", group="forecast") as expected:
        xr.testing.assert_identical(catalog.open("groups/forecast").load(), expected.load())
    with xr.open_dataset(archive / "groups.nc") as expected:
        xr.testing.assert_identical(catalog.open("groups").load(), expected.load())


def test_restart_does_not_reopen_unchanged_files(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    probes = Calls(monkeypatch, GridDriver, "probe")
    opens = Calls(monkeypatch, GridDriver, "open")
    declared = [DatasetConfig(id="ta", source=str(folder / "yearly"), aggregate="time")]
    first = catalog_of(folder, tmp_path / "state", datasets=declared, how=how)
    assert len(probes.paths) == len(list(folder.rglob("*.nc"))) + 2  # + the two Zarr stores
    assert len(opens.paths) == 1  # the declared aggregation, checked once
    versions = {e.id: e.version for e in first.entries()}
    first.close()

    probes.paths.clear()
    opens.paths.clear()
    again = catalog_of(folder, tmp_path / "state", datasets=declared, how=how)
    assert probes.paths == []
    assert opens.paths == []
    assert {e.id: e.version for e in again.entries()} == versions


def test_an_upgrade_probes_files_and_checks_declarations_again(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """What an older Outcrop found (here: a probe and a check that failed) is not trusted
    by a newer one, though no file changed; the same version trusts it again."""
    declared = [DatasetConfig(id="ta", source=str(folder / "yearly"), aggregate="time")]
    broken = folder / "cmip6" / "ta_Amon_1950.nc"
    real_probe = GridDriver.probe

    def old_probe(this: GridDriver, target: Path) -> Any:
        if target == broken:
            raise SourceError("the old probe failed")
        return real_probe(this, target)

    def old_open(this: GridDriver, *args: Any) -> Any:
        raise SourceError("the old check failed")

    with monkeypatch.context() as old:
        old.setattr("outcrop.catalog.package_version", lambda: "0.0.1")
        old.setattr(GridDriver, "probe", old_probe)
        old.setattr(GridDriver, "open", old_open)
        catalog = catalog_of(folder, tmp_path / "state", datasets=declared, how=how)
        assert "cmip6/ta_Amon_1950" not in {e.id for e in catalog.entries()}
        assert "ta" not in {e.id for e in catalog.entries()}
        catalog.close()

    probes = Calls(monkeypatch, GridDriver, "probe")
    opens = Calls(monkeypatch, GridDriver, "open")
    upgraded = catalog_of(folder, tmp_path / "state", datasets=declared, how=how)
    assert len(probes.paths) == len(list(folder.rglob("*.nc"))) + 2  # every file again
    assert len(opens.paths) == 1  # the declaration, checked again
    assert upgraded.get("cmip6/ta_Amon_1950").title.endswith("(360_day)")
    assert upgraded.open("ta").sizes["time"] == 36
    upgraded.close()

    probes.paths.clear()
    opens.paths.clear()  # including the test's own open of "ta"
    catalog_of(folder, tmp_path / "state", datasets=declared, how=how).close()
    assert (probes.paths, opens.paths) == ([], [])


def test_same_size_and_mtime_is_trusted_without_reopening(
    folder: Path, tmp_path: Path, how: str
) -> None:
    path = folder / "cmip6" / "ta_Amon_1950.nc"
    catalog_of(folder, tmp_path / "state", how=how).close()
    st = path.stat()
    with xr.open_dataset(path) as ds:
        replaced = ds.load()
    replaced.attrs["title"] = replaced.attrs["title"].replace("360_day", "REPLACE")
    replaced.to_netcdf(tmp_path / "new.nc", unlimited_dims=["time"])
    assert (tmp_path / "new.nc").stat().st_size == st.st_size
    shutil.copyfile(tmp_path / "new.nc", path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))

    catalog = catalog_of(folder, tmp_path / "state", how=how)
    assert catalog.get("cmip6/ta_Amon_1950").title.endswith("(360_day)")  # not reopened
    old_version = catalog.get("cmip6/ta_Amon_1950").version
    catalog.close()

    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    catalog = catalog_of(folder, tmp_path / "state", how=how)
    assert catalog.get("cmip6/ta_Amon_1950").title.endswith("(REPLACE)")
    assert catalog.get("cmip6/ta_Amon_1950").version != old_version


def test_changed_file_gets_a_new_version_and_its_new_data(
    folder: Path, tmp_path: Path, how: str
) -> None:
    catalog = catalog_of(folder, tmp_path / "state", how=how)
    before = {e.id: e.version for e in catalog.entries()}
    first = catalog.open("yearly/ta_2001")["ta"].isel(time=0).values
    path = folder / "yearly" / "ta_2001.nc"
    with xr.open_dataset(path) as ds:
        changed = ds.load()
    changed["ta"] = changed["ta"] + 1
    path.unlink()
    changed.to_netcdf(path, unlimited_dims=["time"])
    catalog.refresh()
    after = {e.id: e.version for e in catalog.entries()}
    assert after.keys() == before.keys()
    assert {k for k in after if after[k] != before[k]} == {"yearly/ta_2001"}
    np.testing.assert_allclose(catalog.open("yearly/ta_2001")["ta"].isel(time=0).values, first + 1)


def test_deleted_file_disappears_and_new_file_appears(
    folder: Path, tmp_path: Path, how: str
) -> None:
    catalog = catalog_of(folder, tmp_path / "state", how=how)
    (folder / "cmip6" / "ta_Amon_noleap.nc").unlink()
    shutil.rmtree(folder / "stores" / "ta_v2.zarr")
    shutil.copyfile(folder / "yearly" / "ta_2000.nc", folder / "cmip6" / "fresh.nc")
    catalog.refresh()
    ids = {e.id for e in catalog.entries()}
    assert "cmip6/fresh" in ids
    assert "cmip6/ta_Amon_noleap" not in ids
    assert "stores/ta_v2" not in ids
    assert ids == expected_ids(folder)
    with pytest.raises(DatasetNotFound, match="no dataset 'cmip6/ta_Amon_noleap'"):
        catalog.open("cmip6/ta_Amon_noleap")
    # The database agrees, not only this process's view of it.
    restarted = Catalog(catalog.settings)
    restarted.load()
    assert {e.id for e in restarted.entries()} == ids


def test_unreadable_file_is_logged_and_skipped(
    folder: Path, tmp_path: Path, logs: list[dict[str, Any]], how: str
) -> None:
    (folder / "cmip6" / "broken.nc").write_bytes(b"CDF\x01 but truncated")
    (folder / "cmip6" / "empty.h5").write_bytes(b"")
    catalog = catalog_of(folder, tmp_path / "state", how=how)
    ids = {e.id for e in catalog.entries()}
    assert ids == expected_ids(folder) - {"cmip6/broken"}
    skipped = {Path(e["path"]).name for e in logs if e["event"] == "unreadable_file"}
    assert skipped == {"broken.nc", "empty.h5"}
    # Still reported on the next start, without reopening.
    logs.clear()
    catalog_of(folder, tmp_path / "state", how=how)
    assert {Path(e["path"]).name for e in logs if e["event"] == "unreadable_file"} == skipped


def test_links_out_of_the_served_folder_are_not_followed(
    archive: Path, tmp_path: Path, logs: list[dict[str, Any]]
) -> None:
    served = tmp_path / "served"
    served.mkdir()
    outside = tmp_path / "secret"
    shutil.copytree(archive / "cmip6", outside)
    shutil.copytree(archive / "stores" / "ta_v2.zarr", served / "inside.zarr")
    shutil.copyfile(archive / "yearly" / "ta_2000.nc", served / "real.nc")
    (served / "file_out.nc").symlink_to(outside / "ta_Amon_1950.nc")
    (served / "dir_out").symlink_to(outside, target_is_directory=True)
    (served / "store_out.zarr").symlink_to(archive / "stores" / "ta_v3.zarr")
    (served / "relative_out.nc").symlink_to(Path("..") / "secret" / "ta_Amon_noleap.nc")
    (served / "link_in.nc").symlink_to(served / "real.nc")
    (served / "store_in.zarr").symlink_to(served / "inside.zarr")
    catalog = catalog_of(served, tmp_path / "state")
    assert {e.id for e in catalog.entries()} == {"inside", "real", "link_in", "store_in"}
    refused = {Path(e["path"]).name for e in logs if e["event"] == "outside_served_folder"}
    assert refused == {"file_out.nc", "dir_out", "store_out.zarr", "relative_out.nc"}
    with xr.open_dataset(served / "real.nc") as expected:
        xr.testing.assert_identical(catalog.open("link_in").load(), expected.load())


def test_hidden_files_and_folders_are_skipped(archive: Path, tmp_path: Path) -> None:
    served = tmp_path / "served"
    (served / ".hidden").mkdir(parents=True)
    (served / "sub").mkdir()
    for target in (served / ".dot.nc", served / ".hidden" / "a.nc", served / "sub" / "b.nc"):
        shutil.copyfile(archive / "yearly" / "ta_2000.nc", target)
    shutil.copytree(archive / "stores" / "ta_v2.zarr", served / ".store.zarr")
    catalog = catalog_of(served, tmp_path / "state")
    assert [e.id for e in catalog.entries()] == ["sub/b"]


def test_a_single_file_or_store_can_be_served(archive: Path, tmp_path: Path) -> None:
    catalog = Catalog(
        Settings(
            paths=[archive / "groups.nc", archive / "stores" / "ta_v3.zarr"],
            data_dir=tmp_path / "state",
        )
    )
    catalog.refresh()
    assert sorted(e.id for e in catalog.entries()) == ["groups", "groups/forecast", "ta_v3"]


def test_missing_served_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(Exception, match=r"served path .*nowhere does not exist"):
        catalog_of(tmp_path / "nowhere", tmp_path / "state")


def test_search_pages_in_a_stable_order_with_total(archive: Path, tmp_path: Path, how: str) -> None:
    catalog = catalog_of(archive, tmp_path / "state", how=how)
    everything = sorted(expected_ids(archive))
    seen = []
    for offset in range(0, len(everything) + 3, 3):
        page, total = catalog.search("", limit=3, offset=offset)
        assert total == len(everything)
        seen += [row.id for row in page]
    assert seen == everything
    page, total = catalog.search("", limit=5, offset=len(everything))
    assert (page, total) == ([], len(everything))


def test_search_matches_id_title_and_description_case_insensitively(
    archive: Path, tmp_path: Path, how: str
) -> None:
    declared = [
        DatasetConfig(
            id="special/one",
            source=str(archive / "groups.nc"),
            title="Plain",
            description="Has 100% OZONE_in it",
        )
    ]
    catalog = catalog_of(archive, tmp_path / "state", datasets=declared, how=how)

    def ids(q: str) -> list[str]:
        page, total = catalog.search(q, limit=100, offset=0)
        assert total == len(page)
        return [row.id for row in page]

    assert ids("NOLEAP") == ["cmip6/ta_Amon_noleap"]  # the id
    assert ids("(360_DAY)") == ["cmip6/ta_Amon_1950"]  # the title attribute
    assert ids("ozone_in") == ["special/one"]  # the description
    assert ids("100%") == ["special/one"]  # `%` and `_` are not wildcards
    assert ids("0_o") == []
    assert ids("no such text") == []


def test_declared_dataset_adds_title_description_and_attributes(
    archive: Path, tmp_path: Path
) -> None:
    declared = [
        DatasetConfig(
            id="climate/ta",
            source=str(archive / "yearly" / "ta_*.nc"),
            aggregate="time",
            title="Air temperature 2000-2002",
            description="Three yearly files joined",
            attrs={"institution": "Outcrop tests", "Conventions": "CF-1.9"},
            hide_attrs=["long_name", "title"],
        ),
        DatasetConfig(id="one/file", source=str(archive / "cmip6" / "ta_Amon_1950.nc")),
        DatasetConfig(id="folder", source=str(archive / "stores" / "ta_v2.zarr")),
    ]
    catalog = catalog_of(None, tmp_path / "state", datasets=declared)
    entry = catalog.get("climate/ta")
    assert (entry.title, entry.description) == (
        "Air temperature 2000-2002",
        "Three yearly files joined",
    )
    ds = catalog.open("climate/ta")
    assert ds.attrs["institution"] == "Outcrop tests"
    assert ds.attrs["Conventions"] == "CF-1.9"
    assert "title" not in ds.attrs
    assert "long_name" not in ds["ta"].attrs
    assert ds["ta"].attrs["units"] == "K"
    assert ds.sizes["time"] == 36
    # The title defaults to the file's title attribute.
    assert catalog.get("one/file").title == "Synthetic monthly air temperature (360_day)"
    assert catalog.get("folder").title == "Synthetic monthly air temperature (standard)"
    assert [e.id for e in catalog.entries()] == ["climate/ta", "folder", "one/file"]


def test_declaration_wins_over_a_scanned_file_of_the_same_id(
    archive: Path, tmp_path: Path, how: str
) -> None:
    declared = [DatasetConfig(id="groups", source=str(archive / "groups.nc"), group="forecast")]
    catalog = catalog_of(archive, tmp_path / "state", datasets=declared, how=how)
    assert set(catalog.open("groups").data_vars) == {"wind"}


@pytest.mark.parametrize(
    ("sources", "aggregate", "message"),
    [
        (["ta_2000.nc", "ta_2001.nc", "overlap.nc"], "time", "overlap"),
        (["ta_2000.nc", "ta_2001.nc"], None, "aggregate"),
        (["ta_2000.nc", "ta_2001.nc"], "height", "no dimension 'height'"),
        ([], "time", "matches no file"),
    ],
)
def test_broken_declaration_is_reported_not_fatal(
    archive: Path,
    tmp_path: Path,
    sources: list[str],
    aggregate: str | None,
    message: str,
    logs: list[dict[str, Any]],
    how: str,
) -> None:
    folder = tmp_path / "files"
    folder.mkdir()
    for name in sources:
        src = archive / "yearly" / ("ta_2001.nc" if name == "overlap.nc" else name)
        shutil.copyfile(src, folder / name)
    declared = [
        DatasetConfig(id="bad", source=str(folder / "*.nc"), aggregate=aggregate),
        DatasetConfig(id="good", source=str(archive / "groups.nc")),
    ]
    catalog = catalog_of(None, tmp_path / "state", datasets=declared, how=how)
    assert [e.id for e in catalog.entries()] == ["good"]
    assert catalog.search("", 10, 0)[1] == 1
    with pytest.raises(SourceError, match=message):
        catalog.open("bad")
    reported = [e for e in logs if e["event"] == "dataset_unavailable"]
    assert [e["id"] for e in reported] == ["bad"]
    assert message in reported[0]["error"]


def test_unknown_driver_is_reported(archive: Path, tmp_path: Path) -> None:
    declared = [DatasetConfig(id="x", source=str(archive / "groups.nc"), driver="nope")]
    catalog = catalog_of(None, tmp_path / "state", datasets=declared)
    with pytest.raises(SourceError, match="unknown driver 'nope'; installed drivers are grid"):
        catalog.get("x")


def proc_fds_under(folder: Path) -> int:
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            if Path(os.readlink(fd)).is_relative_to(folder):
                count += 1
        except OSError:
            continue
    return count


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def tables(state: Path) -> dict[str, list[tuple[Any, ...]]]:
    """The catalog tables of the SQLite database in `state`, read with sqlite3, without
    the time each dataset row was last changed."""
    with sqlite3.connect(state / "catalog.sqlite") as conn:
        return {
            "files": conn.execute("SELECT * FROM files ORDER BY root, path").fetchall(),
            "datasets": conn.execute(
                "SELECT id, title, description, driver, root, source, version, error "
                "FROM datasets ORDER BY id"
            ).fetchall(),
            "revision": conn.execute("SELECT version_num FROM alembic_version").fetchall(),
        }


def test_a_server_start_serves_its_scan_at_once_and_writes_it_later(
    archive: Path, tmp_path: Path
) -> None:
    """`start()` serves what it scanned before the database exists; `save()` then writes
    the rows `refresh()` writes."""
    state = tmp_path / "state"
    declared = [DatasetConfig(id="ta", source=str(archive / "yearly"), aggregate="time")]
    catalog = Catalog(Settings(paths=[archive], data_dir=state, datasets=declared))
    catalog.start()
    assert not (state / "catalog.sqlite").exists()
    ids = expected_ids(archive) | {"ta"}
    assert {e.id for e in catalog.entries()} == ids
    page, total = catalog.search("", limit=1000, offset=0)
    assert ([s.id for s in page], total) == (sorted(ids), len(ids))
    catalog.save()
    catalog_of(archive, tmp_path / "reference", datasets=declared).close()
    written = tables(state)
    assert len(written["files"]) == len(list(archive.rglob("*.nc"))) + 2
    assert written == tables(tmp_path / "reference")
    assert written["revision"] == [(HEAD,)]


def test_a_start_that_finds_nothing_changed_writes_nothing(
    archive: Path, tmp_path: Path, logs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restart over unchanged files leaves the database as it is, and does not take its
    own reading of it for another process's change."""
    state = tmp_path / "state"
    catalog_of(archive, state).close()
    before = tables(state)
    with sqlite3.connect(state / "catalog.sqlite") as conn:
        updated = conn.execute("SELECT id, updated FROM datasets ORDER BY id").fetchall()
    monkeypatch.setattr("outcrop.catalog.RELOAD_CHECK_S", 0.0)  # check on every lookup
    again = Catalog(Settings(paths=[archive], data_dir=state))
    again.start()
    again.save()
    assert {e.id for e in again.entries()} == expected_ids(archive)
    assert "catalog_reloaded" not in [e["event"] for e in logs]
    assert tables(state) == before
    with sqlite3.connect(state / "catalog.sqlite") as conn:
        assert conn.execute("SELECT id, updated FROM datasets ORDER BY id").fetchall() == updated
    # A change made by another process is still seen.
    with sqlite3.connect(state / "catalog.sqlite") as conn:
        conn.execute("DELETE FROM datasets WHERE id = 'groups'")
    assert "groups" not in {e.id for e in again.entries()}
    assert "catalog_reloaded" in [e["event"] for e in logs]


def test_a_start_killed_before_saving_leaves_the_last_catalog(folder: Path, tmp_path: Path) -> None:
    """A process gone before `save()` wrote nothing: the database holds the previous
    scan, and the next start finds the change again."""
    state = tmp_path / "state"
    catalog_of(folder, state).close()
    before = tables(state)
    shutil.copyfile(folder / "yearly" / "ta_2000.nc", folder / "cmip6" / "fresh.nc")
    gone = Catalog(Settings(paths=[folder], data_dir=state))
    gone.start()
    assert "cmip6/fresh" in {e.id for e in gone.entries()}
    assert tables(state) == before  # (the process ends here)
    again = catalog_of(folder, state, how="start")
    assert "cmip6/fresh" in {e.id for e in again.entries()}
    assert len(tables(state)["files"]) == len(before["files"]) + 1


def test_a_start_reads_a_sqlite_catalog_without_importing_sqlalchemy(
    archive: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    catalog_of(archive, state).close()
    code = (
        "import sys; from pathlib import Path; from outcrop.catalog import Catalog; "
        "from outcrop.settings import Settings; "
        "c = Catalog(Settings(paths=[Path(sys.argv[1])], data_dir=Path(sys.argv[2]))); "
        "c.start(); print(len(c), 'sqlalchemy' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(archive), str(state)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split() == [str(len(expected_ids(archive))), "False"]


@pytest.mark.parametrize(("open_files", "held"), [(2, 2), (10, 5)])
def test_open_datasets_are_bounded_by_open_files(
    archive: Path, tmp_path: Path, open_files: int, held: int
) -> None:
    served = tmp_path / "served"
    served.mkdir()
    for i in range(5):
        shutil.copyfile(archive / "yearly" / "ta_2000.nc", served / f"f{i}.nc")
    catalog = catalog_of(served, tmp_path / "state", open_files=open_files)
    with xr.open_dataset(served / "f0.nc") as ds:
        expected = ds["ta"].isel(time=1).values
    for i in range(5):
        np.testing.assert_array_equal(catalog.open(f"f{i}")["ta"].isel(time=1).values, expected)
    assert proc_fds_under(served) == held
    # An evicted dataset opens again, with the same data.
    np.testing.assert_array_equal(catalog.open("f0")["ta"].isel(time=1).values, expected)
    assert proc_fds_under(served) == held
    catalog.close()
    assert proc_fds_under(served) == 0


def test_paging_parameters_are_validated() -> None:
    assert parse_page(None, None) == (100, 0)
    assert parse_page("5", "10") == (5, 10)
    for limit, offset, name in [
        ("0", None, "limit"),
        ("1001", None, "limit"),
        ("-1", None, "limit"),
        ("ten", None, "limit"),
        ("²", None, "limit"),
        (None, "-3", "offset"),
        (None, "1.5", "offset"),
        (None, "9" * 40, "offset"),
    ]:
        with pytest.raises(BadQuery) as info:
            parse_page(limit, offset)
        assert info.value.parameter == name


# -- PostgreSQL -------------------------------------------------------------------------
@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh schema in the PostgreSQL at PG_URL; required under CI=true, else optional."""
    try:
        engine = create_engine(PG_URL)
        with engine.connect():
            pass
    except (OperationalError, ImportError) as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL at {PG_URL} is required under CI=true: {exc}")
        pytest.skip(f"PostgreSQL at {PG_URL} is not reachable ({exc}); CI=true makes this fail")
    schema = f"outcrop_test_{uuid.uuid4().hex[:12]}"
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def test_catalog_on_postgresql(
    postgres_url: str, folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUTCROP_DATABASE_URL", postgres_url)
    settings = load_settings(paths=[folder], data_dir=tmp_path / "state")
    assert settings.db_url.startswith("postgresql+psycopg://")
    catalog = Catalog(settings)
    assert catalog.engine.dialect.name == "postgresql"
    catalog.refresh()
    assert {e.id for e in catalog.entries()} == expected_ids(folder)
    page, total = catalog.search("NOLEAP", limit=10, offset=0)
    assert ([r.id for r in page], total) == (["cmip6/ta_Amon_noleap"], 1)
    before = catalog.get("yearly/ta_2000").version
    catalog.close()
    assert not (tmp_path / "state" / "catalog.sqlite").exists()

    probes = Calls(monkeypatch, GridDriver, "probe")
    os.utime(folder / "yearly" / "ta_2000.nc", ns=(0, 10**18))
    (folder / "cmip6" / "ta_Amon_noleap.nc").unlink()
    restarted = Catalog(load_settings(paths=[folder], data_dir=tmp_path / "state"))
    restarted.refresh()
    assert [p.name for p in probes.paths] == ["ta_2000.nc"]
    assert restarted.get("yearly/ta_2000").version != before
    assert "cmip6/ta_Amon_noleap" not in restarted
    restarted.close()


def test_server_on_postgresql(postgres_url: str, archive: Path, tmp_path: Path) -> None:
    server = start_server(
        [str(archive)], tmp_path / "state", {"OUTCROP_DATABASE_URL": postgres_url}
    )
    try:
        body = httpx.get(f"{server.url}/api/datasets", params={"limit": 1000}).json()
    finally:
        server.stop()
    assert body["total"] == len(expected_ids(archive))
    assert [d["id"] for d in body["datasets"]] == sorted(expected_ids(archive))


def test_a_database_of_the_first_schema_is_migrated(
    archive: Path, tmp_path: Path, how: str
) -> None:
    from alembic import command
    from alembic.config import Config

    from outcrop.db import MIGRATIONS

    state = tmp_path / "state"
    state.mkdir()
    engine = create_engine(f"sqlite:///{state / 'catalog.sqlite'}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
        conn.execute(
            text(
                "INSERT INTO datasets (id, root, source, version, updated) "
                "VALUES ('old', '/gone', '{\"paths\": []}', 'v', '2020-01-01')"
            )
        )
    engine.dispose()
    catalog = catalog_of(archive, state, how=how)
    assert {e.id for e in catalog.entries()} == expected_ids(archive)
    with catalog.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD
