"""The grid driver opens NetCDF3, NetCDF4/HDF5 (with groups) and Zarr v2/v3 lazily, and
joins many files along a dimension only when they are sorted and disjoint."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from outcrop.drivers import Source
from outcrop.drivers.grid import GridDriver
from outcrop.errors import SourceError
from tests.conftest import _demo_module

GRID = GridDriver()
YEARS = ("ta_2000.nc", "ta_2001.nc", "ta_2002.nc")


def local(path: Path, group: str | None = None) -> xr.Dataset:
    if path.suffix == ".zarr":
        return xr.open_zarr(path, group=group, consolidated=(path / ".zmetadata").exists())
    return xr.open_dataset(path, group=group)


@pytest.mark.parametrize(
    ("rel", "group"),
    [
        ("cmip6/ta_Amon_1950.nc", None),  # NetCDF4, unlimited time, 360_day, packed int16
        ("cmip6/ta_Amon_noleap.nc", None),  # NetCDF3 64-bit offset
        ("groups.nc", "forecast"),  # a NetCDF4 group
        ("groups.nc", None),
        ("stores/ta_v2.zarr", None),
        ("stores/ta_v3.zarr", None),
    ],
)
def test_open_equals_xarray_open_of_the_file(archive: Path, rel: str, group: str | None) -> None:
    opened = GRID.open(Source((archive / rel,), group=group))
    with local(archive / rel, group) as expected:
        xr.testing.assert_identical(opened.load(), expected.load())


def test_open_is_lazy_and_dask_backed(archive: Path) -> None:
    opened = GRID.open(Source((archive / "cmip6/ta_Amon_1950.nc",)))
    assert type(opened["ta"].data).__module__.startswith("dask")
    # The file's chunks (one time step) become the dask chunks: nothing read yet.
    assert opened["ta"].chunks[0] == (1,) * 12


def test_probe_lists_groups_holding_variables(archive: Path) -> None:
    assert GRID.probe(archive / "groups.nc").groups == ("", "forecast")
    assert GRID.probe(archive / "cmip6/ta_Amon_noleap.nc").groups == ("",)
    probe = GRID.probe(archive / "cmip6/ta_Amon_1950.nc")
    assert probe.title == "Synthetic monthly air temperature (360_day)"
    assert probe.groups == ("",)


def test_probe_of_a_file_with_only_groups_omits_the_empty_root(tmp_path: Path) -> None:
    path = tmp_path / "only_groups.nc"
    xr.Dataset(attrs={"title": "t"}).to_netcdf(path)
    xr.Dataset({"a": ("x", [1.0, 2.0])}).to_netcdf(path, mode="a", group="g1")
    xr.Dataset({"b": ("y", [3.0])}).to_netcdf(path, mode="a", group="g1/inner")
    assert GRID.probe(path).groups == ("g1", "g1/inner")


def test_probe_of_zarr_groups(tmp_path: Path) -> None:
    store = tmp_path / "s.zarr"
    xr.Dataset({"a": ("x", [1, 2])}).to_zarr(store, zarr_format=3, consolidated=False)
    xr.Dataset({"b": ("x", [3])}).to_zarr(store, group="g/h", zarr_format=3, mode="a")
    assert GRID.probe(store).groups == ("", "g/h")
    opened = GRID.open(Source((store,), group="g/h"))
    assert opened["b"].values.tolist() == [3]


def test_probe_of_garbage_is_a_source_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.nc"
    bad.write_bytes(b"not a netcdf file at all")
    with pytest.raises(SourceError, match=r"bad\.nc"):
        GRID.probe(bad)
    broken = tmp_path / "broken.zarr"
    broken.mkdir()
    (broken / "zarr.json").write_text("{not json")
    with pytest.raises(SourceError, match=r"zarr\.json"):
        GRID.probe(broken)


def test_aggregation_equals_concatenating_the_local_files(archive: Path) -> None:
    paths = [archive / "yearly" / name for name in YEARS]
    # Listed out of order on purpose: files are joined in coordinate order.
    joined = GRID.open(Source(tuple(reversed(paths)), aggregate="time"))
    assert type(joined["ta"].data).__module__.startswith("dask")
    parts = [xr.open_dataset(p) for p in paths]
    expected = xr.concat(parts, dim="time", data_vars="minimal", coords="minimal")
    xr.testing.assert_identical(joined.load(), expected.load())
    with xr.open_mfdataset(paths, combine="nested", concat_dim="time") as mf:
        xr.testing.assert_equal(joined, mf.load())
    assert joined.sizes["time"] == 36


def test_two_files_without_aggregate_is_a_clear_error(archive: Path) -> None:
    paths = tuple(archive / "yearly" / name for name in YEARS[:2])
    with pytest.raises(SourceError, match="aggregate"):
        GRID.open(Source(paths))


def yearly_copy(archive: Path, tmp_path: Path) -> list[Path]:
    folder = tmp_path / "yearly"
    shutil.copytree(archive / "yearly", folder)
    return [folder / name for name in YEARS]


def write_year(path: Path, start: str, months: int = 12, seed: int = 0) -> xr.Dataset:
    ds = _demo_module().temperature((start, months), "standard", seed=seed)
    ds["time"].encoding["units"] = "days since 2000-01-01"
    ds.to_netcdf(path)
    return ds


def test_overlapping_files_are_a_clear_error(archive: Path, tmp_path: Path) -> None:
    paths = yearly_copy(archive, tmp_path)
    extra = tmp_path / "yearly" / "ta_2001_again.nc"
    write_year(extra, "2001-06-01", months=3)
    with pytest.raises(SourceError, match=r"ta_2001.*overlaps.*must not overlap"):
        GRID.open(Source((*paths, extra), aggregate="time"))


def test_unsorted_coordinate_inside_a_file_is_a_clear_error(tmp_path: Path) -> None:
    first = tmp_path / "a.nc"
    write_year(first, "2000-01-01")
    second = tmp_path / "b.nc"
    ds = write_year(tmp_path / "tmp.nc", "2001-01-01")
    ds.isel(time=slice(None, None, -1)).to_netcdf(second)
    with pytest.raises(SourceError, match=r"b\.nc.*not strictly increasing"):
        GRID.open(Source((first, second), aggregate="time"))


def test_missing_dimension_is_a_clear_error(archive: Path) -> None:
    paths = tuple(archive / "yearly" / name for name in YEARS)
    with pytest.raises(SourceError, match=r"no dimension 'month'.*time"):
        GRID.open(Source(paths, aggregate="month"))


def test_files_on_different_grids_are_not_joined(tmp_path: Path) -> None:
    first = tmp_path / "a.nc"
    write_year(first, "2000-01-01")
    ds = write_year(tmp_path / "tmp.nc", "2001-01-01")
    ds = ds.assign_coords(lat=ds.lat + 0.5)
    second = tmp_path / "b.nc"
    ds.to_netcdf(second)
    with pytest.raises(SourceError, match=r"b\.nc: coordinate 'lat' differs"):
        GRID.open(Source((first, second), aggregate="time"))


def test_aggregation_without_coordinate_keeps_file_order(tmp_path: Path) -> None:
    paths = []
    for i in range(3):
        path = tmp_path / f"part{i}.nc"
        xr.Dataset({"v": ("n", np.arange(2.0) + 10 * i)}).to_netcdf(path)
        paths.append(path)
    joined = GRID.open(Source(tuple(paths), aggregate="n"))
    assert joined["v"].values.tolist() == [0.0, 1.0, 10.0, 11.0, 20.0, 21.0]


def test_missing_file_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"cannot open nope\.nc"):
        GRID.open(Source((tmp_path / "nope.nc",)))
    plain = tmp_path / "plain.nc"
    xr.Dataset({"a": ("x", [1.0])}).to_netcdf(plain)
    with pytest.raises(SourceError, match=r"plain\.nc group 'nope'"):
        GRID.open(Source((plain,), group="nope"))


def h5py_groups(path: Path) -> tuple[str, ...]:
    """Groups holding a netCDF variable, found with h5py: datasets that are not bare
    netCDF dimensions (the reference the libnetcdf walk of the probe is checked with)."""
    import h5py

    found: list[str] = []

    def holds_variables(group: h5py.Group) -> bool:
        return any(
            isinstance(item, h5py.Dataset)
            and not bytes(item.attrs.get("NAME", b"")).startswith(b"This is a netCDF dimension")
            for item in group.values()
        )

    with h5py.File(path, "r") as f:
        if holds_variables(f):
            found.append("")
        f.visititems(
            lambda name, obj: (
                found.append(name) if isinstance(obj, h5py.Group) and holds_variables(obj) else None
            )
        )
    return tuple(sorted(found)) or ("",)


def test_probe_groups_are_the_groups_h5py_finds_variables_in(archive: Path) -> None:
    """Every NetCDF-4/HDF5 file of the archive (real GOES, OSTIA, A1B files, generated
    ones with nested groups): the probe's one libnetcdf walk finds the groups holding
    variables that h5py finds."""
    from outcrop.drivers.grid import is_hdf5

    files = sorted(p for p in archive.rglob("*") if p.is_file() and is_hdf5(p))
    assert len(files) >= 8
    nested = 0
    for path in files:
        assert GRID.probe(path).groups == h5py_groups(path), path
        nested += len(GRID.probe(path).groups) > 1
    assert nested >= 1
