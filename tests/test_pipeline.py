"""The Zarr half of the pipeline: views kept in the data folder, stored chunks read."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr

from outcrop.catalog import Catalog
from outcrop.pipeline import NOWAIT, Pipeline
from outcrop.settings import Settings
from tests.conftest import assert_served_as_stored


@pytest.fixture
def pipeline(tmp_path: Path) -> Pipeline:
    folder = tmp_path / "archive"
    folder.mkdir()
    data = np.arange(4 * 6 * 8, dtype="float32").reshape(4, 6, 8)
    ds = xr.Dataset({"t": (("time", "y", "x"), data)}, coords={"time": np.arange(4)})
    encoding = {"t": {"zlib": True, "shuffle": True, "chunksizes": (1, 6, 8)}}
    ds.to_netcdf(folder / "grid.nc", encoding=encoding)
    settings = Settings(paths=[folder], data_dir=tmp_path / "state")
    catalog = Catalog(settings)
    catalog.refresh()
    return Pipeline(settings, catalog)


def test_both_ways_of_reading_a_stored_chunk_give_the_bytes_in_the_file(
    pipeline: Pipeline,
) -> None:
    entry = pipeline.entry("grid")
    view = pipeline.zarr_view(entry, 2)
    read = pipeline.locate_chunk(entry, view, "t/2.0.0")
    assert read is not None and read.plan is None  # stored, not encoded
    with h5py.File(entry.source.paths[0]) as f:
        _, expected = f["t"].id.read_direct_chunk((2, 0, 0))
        var = f["t"]
        assert_served_as_stored(pipeline.read_chunk(entry, read), var, expected)  # thread pool
        cached = pipeline.read_if_cached(read)  # the event loop (None if not in memory)
        assert cached is not None or not NOWAIT
        if cached is not None:
            assert_served_as_stored(bytes(cached), var, expected)


def test_a_restart_answers_from_the_saved_view_without_opening_the_dataset(
    pipeline: Pipeline,
) -> None:
    entry = pipeline.entry("grid")
    built = pipeline.zarr_view(entry, 3)
    again = Pipeline(pipeline.settings, pipeline.catalog)
    opened: list[str] = []
    again.catalog.open = lambda ds_id: opened.append(ds_id)  # type: ignore[method-assign,assignment,return-value]
    assert again.zarr_view(entry, 3).documents == built.documents
    assert opened == []


def test_a_corrupt_saved_view_is_rebuilt(pipeline: Pipeline) -> None:
    entry = pipeline.entry("grid")
    built = pipeline.zarr_view(entry, 2)
    for path in (pipeline.settings.data_dir / "zarr").glob("*.pickle"):
        path.write_bytes(b"not a pickle")
    again = Pipeline(pipeline.settings, pipeline.catalog)
    assert again.zarr_view(entry, 2).documents == built.documents


def test_a_view_saved_by_another_outcrop_version_is_built_again(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an upgrade the new code describes the dataset itself: a saved view (marked
    here, so that loading it shows) is used by the same version only, then replaced."""
    import dataclasses
    import pickle

    entry = pipeline.entry("grid")
    pipeline.zarr_view(entry, 2)
    (saved,) = (pipeline.settings.data_dir / "zarr").glob("*-v2.pickle")
    view = pickle.loads(saved.read_bytes())
    marked = dataclasses.replace(view, documents={**view.documents, "marker": b"old"})
    saved.write_bytes(pickle.dumps(marked))
    assert "marker" in Pipeline(pipeline.settings, pipeline.catalog).zarr_view(entry, 2).documents

    monkeypatch.setattr("outcrop.pipeline.package_version", lambda: "99.0")
    rebuilt = Pipeline(pipeline.settings, pipeline.catalog).zarr_view(entry, 2)
    assert "marker" not in rebuilt.documents
    assert rebuilt.documents == view.documents
    (kept,) = (pipeline.settings.data_dir / "zarr").glob("*-v2.pickle")
    assert "-99.0." in kept.name


def test_a_view_saved_before_the_layout_changed_is_built_again(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change in what views serve (VIEW_LAYOUT) under an unchanged package version, as
    in a source checkout: views saved before it are not used."""
    import dataclasses
    import pickle

    entry = pipeline.entry("grid")
    monkeypatch.setattr("outcrop.pipeline.VIEW_LAYOUT", 1)
    pipeline.zarr_view(entry, 2)
    (saved,) = (pipeline.settings.data_dir / "zarr").glob("*-v2.pickle")
    view = pickle.loads(saved.read_bytes())
    saved.write_bytes(pickle.dumps(dataclasses.replace(view, documents={"marker": b"old"})))
    assert "marker" in Pipeline(pipeline.settings, pipeline.catalog).zarr_view(entry, 2).documents
    monkeypatch.undo()
    assert (
        "marker" not in Pipeline(pipeline.settings, pipeline.catalog).zarr_view(entry, 2).documents
    )


def test_a_mirrored_view_carries_the_attributes_a_declaration_adds_or_hides(
    tmp_path: Path,
) -> None:
    """The mirror (h5py, no xarray) applies `attrs`/`hide_attrs` as `Catalog.open` does:
    the xarray-opened dataset is the reference."""
    import json

    from outcrop.settings import DatasetConfig

    path = tmp_path / "file.nc"
    ds = xr.Dataset(
        {"t": (("x",), np.arange(3.0), {"long_name": "T", "units": "K"})},
        attrs={"title": "hidden", "source": "kept"},
    )
    ds.to_netcdf(path)
    declared = DatasetConfig(
        id="one",
        source=str(path),
        attrs={"institution": "Outcrop tests"},
        hide_attrs=["long_name", "title"],
    )
    settings = Settings(datasets=[declared], data_dir=tmp_path / "state")
    catalog = Catalog(settings)
    catalog.refresh()
    pipeline = Pipeline(settings, catalog)
    view = pipeline.zarr_view(pipeline.entry("one"), 2)
    assert view.mirror
    metadata = json.loads(view.documents[".zmetadata"])["metadata"]
    reference = catalog.open("one")
    assert metadata[".zattrs"] == reference.attrs
    attrs = {k: v for k, v in metadata["t/.zattrs"].items() if k != "_ARRAY_DIMENSIONS"}
    assert attrs == reference["t"].attrs
