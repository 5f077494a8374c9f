"""A served image collection: the real images of tests/data/images plus generated ones,
ingested by the `outcrop ingest images` command into a server's data folder."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import DATA, Server, start_server
from tests.images.fitsfiles import write_image


@dataclass
class Sky:
    server: Server
    folder: Path
    data_dir: Path


def ingest(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "outcrop", "ingest", "images", *args, "--data-dir", str(data_dir)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="package")
def sky(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sky]:
    pytest.importorskip("astropy")
    folder = tmp_path_factory.mktemp("sky")
    shutil.copytree(DATA / "images", folder / "real")
    (folder / "made").mkdir()
    write_image(
        folder / "made" / "zero.fits",
        0.02,
        -5.0,
        shape=(60, 80),
        scale_arcsec=6.0,
        keywords={
            "INSTRUME": "CAM",
            "FILTER": "r",
            "EXPTIME": 30.0,
            "DATE-OBS": "2021-06-01T00:00:00",
        },
        dtype="float32",
    )
    write_image(
        folder / "made" / "pole.fits",
        0.0,
        89.99,
        shape=(60, 60),
        scale_arcsec=3.0,
        keywords={
            "INSTRUME": "CAM",
            "FILTER": "g",
            "EXPTIME": 120.0,
            "DATE-OBS": "2021-06-02T00:00:00",
        },
        dtype="uint16",
    )
    data_dir = tmp_path_factory.mktemp("state")
    done = ingest(
        data_dir, "demo", str(folder), "--recursive", "--base-url", "https://example.org/sky/"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    server = start_server([str(tmp_path_factory.mktemp("nothing"))], data_dir)
    yield Sky(server, folder, data_dir)
    server.stop()
