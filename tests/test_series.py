"""Time series through the catalog and the pipeline: reader programs found by a scan or
declared inline, reduced answers against NumPy binning of the program's own output, and
the `outcrop cache` commands."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from outcrop.catalog import Catalog
from outcrop.errors import BadQuery, TooLarge, UpstreamFailed
from outcrop.model import SeriesRequest
from outcrop.pipeline import Pipeline
from outcrop.settings import load_settings

READERS = Path(__file__).resolve().parent.parent / "examples" / "readers"
S = 1_000_000_000
FILL = -1e31


def ns(text: str) -> int:
    return int(np.datetime64(text, "ns").astype(np.int64))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "served" / "mag"
    root.mkdir(parents=True)
    for name in ("wave.py", "wave.reader.toml"):
        shutil.copy2(READERS / name, root / name)
    return root.parent


def pipeline_of(tmp_path: Path, config: Path | None = None, **kw: Any) -> Pipeline:
    settings = load_settings(config, data_dir=tmp_path / "state", **kw)
    catalog = Catalog(settings)
    catalog.refresh()
    return Pipeline(settings, catalog)


def program_csv(start: str, stop: str) -> tuple[np.ndarray[Any, Any], dict[str, Any]]:
    """The reader run by hand (CSV), parsed with the csv module: the reference."""
    out = subprocess.run(
        [
            sys.executable,
            str(READERS / "wave.py"),
            f"--start={start}",
            f"--stop={stop}",
            "--format=csv",
        ],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    rows = list(csv.reader(io.StringIO(out)))
    header, body = rows[0], rows[1:]
    times = np.array([np.datetime64(r[0].rstrip("Z"), "ns") for r in body]).astype(np.int64)
    cols = {name: np.array([float(r[i]) for r in body]) for i, name in enumerate(header) if i}
    return times, cols


def reference_bins(
    times: np.ndarray[Any, Any], values: np.ndarray[Any, Any], width: int, first: int, n: int
) -> dict[str, np.ndarray[Any, Any]]:
    """Per-bin statistics by a plain loop over boolean masks."""
    out: dict[str, list[float]] = {"min": [], "max": [], "mean": [], "count": []}
    for k in range(first, first + n):
        inside = (times >= k * width) & (times < (k + 1) * width)
        good = values[inside & (values != FILL) & ~np.isnan(values)]
        out["count"].append(len(good))
        out["min"].append(good.min() if len(good) else FILL)
        out["max"].append(good.max() if len(good) else FILL)
        out["mean"].append(good.mean() if len(good) else FILL)
    return {k: np.array(v) for k, v in out.items()}


def test_a_reader_description_in_a_served_folder_is_a_time_series(
    folder: Path, tmp_path: Path
) -> None:
    pipeline = pipeline_of(tmp_path, paths=[folder])
    assert pipeline.series_ids() == ["mag/wave"]
    info = pipeline.series_info("mag/wave")
    assert [p.name for p in info.parameters] == ["bx", "by", "bz"]
    assert info.cadence == S


def test_full_resolution_answer_is_the_programs_output(folder: Path, tmp_path: Path) -> None:
    pipeline = pipeline_of(tmp_path, paths=[folder])
    start, stop = "2020-01-01T00:00:00", "2020-01-01T02:00:00"
    answer = pipeline.series_answer("mag/wave", SeriesRequest(ns(start), ns(stop), ("bz", "bx")))
    assert [p.name for p in answer.parameters] == ["bz", "bx"] and answer.width is None
    blocks = list(answer.blocks)
    times = np.concatenate([b.time for b in blocks]).astype(np.int64)
    ref_times, ref = program_csv(start + "Z", stop + "Z")
    np.testing.assert_array_equal(times, ref_times)
    for name in ("bz", "bx"):
        np.testing.assert_array_equal(np.concatenate([b.values[name] for b in blocks]), ref[name])


@pytest.mark.parametrize("width", [60 * S, 7 * S, 3600 * S])
def test_reduced_answer_equals_numpy_binning_at_the_answered_width(
    folder: Path, tmp_path: Path, width: int
) -> None:
    pipeline = pipeline_of(tmp_path, paths=[folder])
    start, stop = "2020-01-01T00:00:00", "2020-01-01T06:00:00"
    request = SeriesRequest(ns(start), ns(stop), ("bx",), width, ("min", "max", "mean", "count"))
    for _ in range(2):  # cold, then from the cache
        answer = pipeline.series_answer("mag/wave", request)
        assert answer.width is not None and answer.width <= width
        assert width - answer.width < answer.width  # the coarsest multiple of a level
        (block,) = list(answer.blocks)
        first = ns(start) // answer.width
        n = len(block)
        centres = (np.arange(first, first + n) * answer.width + answer.width // 2).astype(np.int64)
        np.testing.assert_array_equal(block.time.astype(np.int64), centres)
        times, cols = program_csv(start + "Z", stop + "Z")
        ref = reference_bins(times, cols["bx"], answer.width, first, n)
        np.testing.assert_array_equal(block.values["bx_count"], ref["count"])
        np.testing.assert_array_equal(block.values["bx_min"], ref["min"])
        np.testing.assert_array_equal(block.values["bx_max"], ref["max"])
        np.testing.assert_allclose(block.values["bx_mean"], ref["mean"], rtol=1e-13)


def test_requests_far_outside_the_data_read_nothing_and_huge_bin_counts_are_refused(
    folder: Path, tmp_path: Path
) -> None:
    pipeline = pipeline_of(tmp_path, paths=[folder])
    empty = pipeline.series_answer("mag/wave", SeriesRequest(ns("1980-01-01"), ns("1990-01-01")))
    assert list(empty.blocks) == []
    with pytest.raises(TooLarge) as err:
        pipeline.series_answer(
            "mag/wave", SeriesRequest(ns("2000-01-01"), ns("2039-01-01"), ("bx",), S)
        )
    assert err.value.parameter == "resolution"
    with pytest.raises(BadQuery) as bad:
        pipeline.series_answer("mag/wave", SeriesRequest(ns("2020-01-02"), ns("2020-01-01")))
    assert bad.value.parameter == "start"


def test_a_grid_dataset_that_is_no_time_series_is_refused(tmp_path: Path) -> None:
    grids = Path(__file__).resolve().parent / "data" / "grids"
    pipeline = pipeline_of(tmp_path, paths=[grids])
    assert pipeline.series_ids() == []
    with pytest.raises(BadQuery) as err:
        pipeline.series_info("ostia_monthly")
    assert err.value.parameter == "dataset"


def test_an_inline_reader_table_resolves_paths_against_the_config(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    shutil.copy2(READERS / "wave.py", conf / "wave.py")
    table = (READERS / "wave.reader.toml").read_text()
    body = (
        '[[datasets]]\nid = "inline/wave"\n[datasets.reader]\n' + table.split("[[parameters]]")[0]
    )
    for part in table.split("[[parameters]]")[1:]:
        body += "[[datasets.reader.parameters]]" + part
    (conf / "outcrop.toml").write_text(body)
    pipeline = pipeline_of(tmp_path, conf / "outcrop.toml")
    assert pipeline.series_ids() == ["inline/wave"]
    answer = pipeline.series_answer(
        "inline/wave", SeriesRequest(ns("2020-01-01T00:00:00"), ns("2020-01-01T00:00:10"))
    )
    assert sum(len(b) for b in answer.blocks) == 10


def test_changing_the_reader_program_changes_the_dataset_version(
    folder: Path, tmp_path: Path
) -> None:
    first = pipeline_of(tmp_path, paths=[folder]).catalog.get("mag/wave").version
    program = folder / "mag" / "wave.py"
    program.write_text(program.read_text() + "\n# changed\n")
    second = pipeline_of(tmp_path, paths=[folder]).catalog.get("mag/wave").version
    assert first != second


def outcrop(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "outcrop", *args], capture_output=True, text=True, timeout=300
    )


def test_cache_warm_stats_and_clear(folder: Path, tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    warm = outcrop(
        "cache", "warm", "mag/wave", str(folder), "--data-dir", state,
        "--start", "2020-01-01", "--stop", "2020-01-03", "--levels", "60,300",
    )  # fmt: skip
    assert warm.returncode == 0, warm.stderr
    assert "level 60 s: " in warm.stdout
    stats = outcrop("cache", "stats", "--data-dir", state)
    assert stats.returncode == 0, stats.stderr
    entries = int(stats.stdout.split("entries: ")[1].split()[0])
    assert entries > 0
    # Warmed blocks answer without running the reader: break the program, ask again.
    pipeline = pipeline_of(tmp_path, paths=[folder])
    program = folder / "mag" / "wave.py"
    program.rename(tmp_path / "away.py")
    request = SeriesRequest(ns("2020-01-01"), ns("2020-01-02"), ("by",), 300 * S)
    answer = pipeline.series_answer("mag/wave", request)
    assert answer.width == 300 * S and sum(len(b) for b in answer.blocks) == 288
    with pytest.raises(UpstreamFailed):  # a span not warmed needs the program
        later = SeriesRequest(ns("2020-02-01"), ns("2020-02-02"), ("by",), 300 * S)
        list(pipeline.series_answer("mag/wave", later).blocks)
    (tmp_path / "away.py").rename(program)
    cleared = outcrop("cache", "clear", "mag/wave", "--data-dir", state)
    assert cleared.returncode == 0 and f"removed {entries} cached blocks" in cleared.stdout
    bad = outcrop("cache", "warm", "nope", "--data-dir", state)
    assert bad.returncode == 2 and "no dataset 'nope'" in bad.stderr


def test_daily_files_aggregated_along_time_are_one_time_series(tmp_path: Path) -> None:
    import xarray as xr

    days = tmp_path / "days"
    days.mkdir()
    frames = []
    for d in range(3):
        t = np.datetime64("2021-03-01", "ns") + np.arange(d * 1440, (d + 1) * 1440) * 60 * S
        flux = np.sin(np.arange(1440) / 50.0 + d).astype(np.float32)
        ds = xr.Dataset({"flux": ("time", flux, {"units": "W/m2"})}, coords={"time": t})
        ds.to_netcdf(days / f"flux_{d}.nc", encoding={"flux": {"_FillValue": -9999.0}})
        frames.append(ds)
    conf = tmp_path / "outcrop.toml"
    conf.write_text('[[datasets]]\nid = "flux"\nsource = "days/*.nc"\naggregate = "time"\n')
    pipeline = pipeline_of(tmp_path, conf)
    assert pipeline.series_ids() == ["flux"]
    whole = xr.concat(frames, "time")
    start, stop = ns("2021-03-01T20:00"), ns("2021-03-02T04:00")  # across a file boundary
    answer = pipeline.series_answer("flux", SeriesRequest(start, stop, ("flux",)))
    got = np.concatenate([b.values["flux"] for b in answer.blocks])
    expected = whole.sel(time=slice("2021-03-01T20:00", "2021-03-02T03:59"))["flux"].values
    np.testing.assert_array_equal(got, expected.astype(np.float64))
