"""The image routes through a real socket: searches, metadata, cutouts read back by astropy
and Pillow, errors, caching; and the ingest command, also while the server runs."""

from __future__ import annotations

import http.server
import io
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

pytest.importorskip("astropy")

from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import Cutout2D
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales
from PIL import Image

from tests.images.conftest import Sky, ingest
from tests.images.fitsfiles import write_image

M13 = (250.4226, 36.4602)


def get(sky: Sky, path: str, **params: Any) -> httpx.Response:
    return httpx.get(f"{sky.server.url}{path}", params=params, timeout=60)


def test_search_by_position_finds_the_images_there(sky: Sky) -> None:
    page = get(sky, "/api/images", ra=M13[0], dec=M13[1]).json()
    assert {i["id"] for i in page["images"]} == {"demo:real/m13.fits", "demo:real/m13_rice.fits"}
    assert page["total"] == 2
    near_zero = get(sky, "/api/images", ra="359.999", dec="-5.0").json()
    assert [i["id"] for i in near_zero["images"]] == ["demo:made/zero.fits"]
    pole = get(sky, "/api/images", ra="271", dec="90").json()
    assert [i["id"] for i in pole["images"]] == ["demo:made/pole.fits"]
    far = get(sky, "/api/images", ra="0.4", dec="-5.0", radius="0.2deg").json()
    assert far["total"] == 0
    wide = get(sky, "/api/images", ra="0.4", dec="-5.0", radius="0.4").json()
    assert [i["id"] for i in wide["images"]] == ["demo:made/zero.fits"]


def test_search_filters_page_and_summary(sky: Sky) -> None:
    assert get(sky, "/api/images", instrument="CAM", EXPTIME="100/200").json()["total"] == 1
    assert get(sky, "/api/images", start="2021-06-01T12:00:00").json()["total"] == 1
    first = get(sky, "/api/images", limit=2).json()
    second = get(sky, "/api/images", limit=2, offset=2).json()
    whole = get(sky, "/api/images").json()
    assert [i["id"] for i in first["images"] + second["images"]] == [
        i["id"] for i in whole["images"]
    ][:4]
    assert whole["total"] == 5
    summary = get(sky, "/api/images/summary").json()
    assert summary["collections"]["demo"]["images"] == 5
    assert summary["collections"]["demo"]["filters"] == {"": 3, "g": 1, "r": 1}


def test_image_metadata_has_the_header_and_an_etag(sky: Sky) -> None:
    response = get(sky, "/api/images/demo:made/zero.fits")
    assert response.status_code == 200
    meta = response.json()
    assert meta["header"]["EXPTIME"] == 30.0
    assert meta["download"] == "https://example.org/sky/made/zero.fits"
    assert (meta["width"], meta["height"]) == (80, 60)
    etag = response.headers["etag"]
    again = httpx.get(response.url, headers={"If-None-Match": etag})
    assert again.status_code == 304


def test_fits_cutout_equals_astropy_cutout2d(sky: Sky) -> None:
    response = get(sky, "/api/images/demo:real/m13.fits", ra=M13[0], dec=M13[1], size="1arcmin")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/fits"
    with fits.open(io.BytesIO(response.content)) as got:
        data = got[0].data
        with fits.open(sky.folder / "real" / "m13.fits") as source:
            position = SkyCoord(
                M13[0] * u.deg,
                M13[1] * u.deg,
                frame=WCS(source[0].header).wcs.radesys.lower() or "icrs",
            )
            expected = Cutout2D(source[0].data, position, data.shape, wcs=WCS(source[0].header))
            np.testing.assert_array_equal(data, expected.data)


def test_png_cutout_download_has_the_sbnsis_file_name(sky: Sky) -> None:
    response = get(
        sky,
        "/api/images/demo:made/zero.fits",
        ra="0.02",
        dec="-5",
        size="2arcmin",
        format="png",
        download="true",
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    picture = Image.open(io.BytesIO(response.content))
    assert picture.size == (20, 20)  # 2 arcmin at 6 arcsec a pixel
    disposition = response.headers["content-disposition"]
    assert disposition == 'attachment; filename="zero_0.02000_-5.00000_2arcmin.png"'


def test_cutouts_are_cached_by_image_version_and_parameters(sky: Sky) -> None:
    params = {"ra": "0.0", "dec": "89.995", "size": "30arcsec", "format": "jpeg"}
    first = get(sky, "/api/images/demo:made/pole.fits", **params)
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    entries = list((sky.data_dir / "cutouts").iterdir())
    assert entries  # the disk cache exists and holds something
    second = get(sky, "/api/images/demo:made/pole.fits", **params)
    assert second.content == first.content and second.headers["etag"] == first.headers["etag"]
    other = get(sky, "/api/images/demo:made/pole.fits", **{**params, "size": "20arcsec"})
    assert other.headers["etag"] != first.headers["etag"]
    revalidated = httpx.get(first.url, headers={"If-None-Match": first.headers["etag"]})
    assert revalidated.status_code == 304


@pytest.mark.parametrize(
    ("path", "params", "status", "parameter"),
    [
        ("/api/images/demo:real/m13.fits", {"ra": "250.4", "dec": "36.4"}, 400, "size"),
        (
            "/api/images/demo:real/m13.fits",
            {"ra": "250.4", "dec": "36.4", "size": "5"},
            400,
            "size",
        ),
        (
            "/api/images/demo:real/m13.fits",
            {"ra": "250.4", "dec": "36.4", "size": "5furlong"},
            400,
            "size",
        ),
        (
            "/api/images/demo:real/m13.fits",
            {"ra": "250.4", "dec": "95", "size": "1arcmin"},
            400,
            "dec",
        ),
        (
            "/api/images/demo:real/m13.fits",
            {"ra": "250.4", "dec": "36.4", "size": "10deg"},
            400,
            "size",
        ),
        ("/api/images/demo:real/m13.fits", {"ra": "10", "dec": "10", "size": "1arcmin"}, 400, "ra"),
        ("/api/images/demo:real/m13.fits", {"format": "png"}, 400, "format"),
        (
            "/api/images/demo:real/m13.fits",
            {"ra": "250.42", "dec": "36.46", "size": "1arcmin", "format": "gif"},
            400,
            "format",
        ),
        (
            "/api/images/demo:real/m13.fits",
            {
                "ra": "250.42",
                "dec": "36.46",
                "size": "1arcmin",
                "format": "png",
                "stretch": "cubic",
            },
            400,
            "stretch",
        ),
        ("/api/images/demo:real/m13.fits", {"colour": "red"}, 400, "colour"),
        (
            "/api/images/demo:nope.fits",
            {"ra": "250.4", "dec": "36.4", "size": "1arcmin"},
            404,
            None,
        ),
        ("/api/images", {"ra": "1", "dec": "-91"}, 400, "dec"),
        ("/api/images", {"ra": "1"}, 400, "dec"),
    ],
)
def test_bad_requests_are_problems_naming_the_parameter(
    sky: Sky, path: str, params: dict[str, str], status: int, parameter: str | None
) -> None:
    response = get(sky, path, **params)
    assert response.status_code == status, response.text
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert problem.get("parameter") == parameter
    if parameter == "ra":  # outside the image: the message names its footprint
        assert "250.4" in problem["detail"] and "36.4" in problem["detail"]


def test_an_oversize_cutout_is_a_400_naming_size_pixels_and_the_setting(sky: Sky) -> None:
    with fits.open(sky.folder / "real" / "m13.fits") as hdul:  # astropy's pixel scale
        scale = float(np.min(proj_plane_pixel_scales(WCS(hdul[0].header))))
    side = round(10 / scale)
    response = get(sky, "/api/images/demo:real/m13.fits", ra=M13[0], dec=M13[1], size="10deg")
    assert response.status_code == 400, response.text
    problem = response.json()
    assert problem["parameter"] == "size"
    assert (problem["size"], problem["limit"]) == (side, 4096)
    detail = problem["detail"]
    assert detail.startswith("size=10deg ") and f"{side} pixels" in detail
    assert "4096 pixels" in detail and "OUTCROP_CUTOUT_MAX_PIXELS" in detail


def test_ingest_while_the_server_runs_and_exit_statuses(sky: Sky, tmp_path: Path) -> None:
    new = write_image(tmp_path / "late.fits", 100.0, 20.0, keywords={"INSTRUME": "LATE"})
    done = ingest(sky.data_dir, "late", str(new))
    assert done.returncode == 0, done.stderr
    assert "1 ingested" in done.stdout
    found = get(sky, "/api/images", ra="100", dec="20").json()
    assert [i["id"] for i in found["images"]] == ["late:late.fits"]
    again = ingest(sky.data_dir, "late", str(new))
    assert again.returncode == 0 and "1 unchanged" in again.stdout
    forced = ingest(sky.data_dir, "late", str(new), "--force")
    assert forced.returncode == 0 and "1 ingested (1 images), 0 unchanged" in forced.stdout
    broken = tmp_path / "broken.fits"
    broken.write_bytes(b"SIMPLE = nonsense")
    failed = ingest(sky.data_dir, "late", str(broken))
    assert failed.returncode == 1
    assert "broken.fits" in failed.stdout + failed.stderr
    mixed = ingest(sky.data_dir, "late", str(broken), str(new))
    assert mixed.returncode == 0 and "1 failed" in mixed.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    assert ingest(sky.data_dir, "late", str(empty)).returncode == 1
    assert ingest(sky.data_dir, "bad name!", str(new)).returncode == 2


def ids(sky: Sky, collection: str) -> list[str]:
    page = get(sky, "/api/images", collection=collection).json()
    return sorted(i["id"] for i in page["images"])


def test_files_gone_from_disk_are_pruned_and_the_server_forgets_them(
    sky: Sky, tmp_path: Path
) -> None:
    night = tmp_path / "night"
    (night / "sub").mkdir(parents=True)
    for name, ra in (("a.fits", 60.0), ("b.fits", 61.0), ("sub/c.fits", 62.0), ("d.fits", 63.0)):
        write_image(night / name, ra, 0.0, keywords={"FILTER": "V"})
    first = ingest(sky.data_dir, "prune", str(night), "--recursive")
    assert first.returncode == 0 and "4 ingested" in first.stdout, first.stdout + first.stderr
    assert ids(sky, "prune") == [f"prune:{n}" for n in ("a.fits", "b.fits", "d.fits", "sub/c.fits")]
    cut = {"ra": "61", "dec": "0", "size": "3arcmin", "format": "png"}
    assert get(sky, "/api/images/prune:b.fits", **cut).status_code == 200  # cached now

    (night / "b.fits").unlink()
    shutil.rmtree(night / "sub")
    (night / "d.fits").write_bytes(b"SIMPLE  = broken and longer than it was")  # unreadable
    again = ingest(sky.data_dir, "prune", str(night))  # not --recursive: sub/ is gone anyway
    out = again.stdout + again.stderr
    assert again.returncode == 0, out
    assert "1 unchanged, 1 failed, 2 removed (2 images)" in again.stdout
    assert "removed" in out and "b.fits" in out
    assert "d.fits" in out and "kept" in out  # reported, its image kept
    assert ids(sky, "prune") == ["prune:a.fits", "prune:d.fits"]
    for gone in ("prune:b.fits", "prune:sub/c.fits"):
        assert get(sky, f"/api/images/{gone}").status_code == 404
    assert get(sky, "/api/images/prune:b.fits", **cut).status_code == 404  # not from the cache
    assert get(sky, "/api/images", ra="61", dec="0").json()["total"] == 0
    summary = get(sky, "/api/images/summary", collection="prune").json()
    assert summary["collections"]["prune"]["images"] == 2
    assert summary["collections"]["prune"]["filters"] == {"V": 2}

    # a folder gone entirely: its files go, and so does the collection
    shutil.rmtree(night)
    last = ingest(sky.data_dir, "prune", str(night))
    assert last.returncode == 0 and "2 removed (2 images)" in last.stdout, last.stdout
    assert "0 failed" in last.stdout
    assert ids(sky, "prune") == []
    assert "prune" not in get(sky, "/api/images/summary").json()["collections"]
    # a path that never held files of the collection is still a usage error
    assert ingest(sky.data_dir, "prune", str(night)).returncode == 2


def test_a_file_given_by_name_and_gone_is_removed(sky: Sky, tmp_path: Path) -> None:
    lone = write_image(tmp_path / "lone.fits", 70.0, 5.0)
    assert ingest(sky.data_dir, "lone", str(lone)).returncode == 0
    assert ids(sky, "lone") == ["lone:lone.fits"]
    lone.unlink()
    done = ingest(sky.data_dir, "lone", str(lone))
    assert done.returncode == 0 and "1 removed (1 images)" in done.stdout, done.stdout
    assert get(sky, "/api/images/lone:lone.fits").status_code == 404
    assert ingest(sky.data_dir, "other", str(lone)).returncode == 2  # unknown there


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with HTTP Range support (RFC 9110 §14), counting the bytes sent."""

    sent: list[int] = []
    status: dict[str, int] = {}  # paths answered with this error status instead

    def log_message(self, *args: Any) -> None:
        pass

    def send_head(self) -> Any:
        if self.path in self.status:
            self.send_error(self.status[self.path])
            return None
        spec = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if spec is None or not path.is_file():
            return super().send_head()
        size = path.stat().st_size
        first, _, last = spec.removeprefix("bytes=").partition("-")
        start, stop = int(first), min(int(last) if last else size - 1, size - 1)
        body = path.read_bytes()[start : stop + 1]
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{stop}/{size}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.sent.append(len(body))
        return io.BytesIO(body)


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[str]:
    handler = lambda *a: RangeHandler(*a, directory=str(tmp_path))  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_remote_file_is_ingested_from_its_headers_only(remote: str, tmp_path: Path) -> None:
    big = write_image(
        tmp_path / "big.fits", 33.0, -20.0, shape=(2000, 2000), scale_arcsec=1, dtype="float32"
    )
    RangeHandler.sent.clear()
    data_dir = tmp_path / "state"
    done = ingest(data_dir, "web", f"{remote}/big.fits")
    assert done.returncode == 0, done.stdout + done.stderr
    assert 0 < sum(RangeHandler.sent) < big.stat().st_size / 20  # headers, not 16 MB of data
    from outcrop.db import connect
    from outcrop.images.search import ImageQuery
    from outcrop.images.service import ImageService
    from outcrop.settings import load_settings

    settings = load_settings(data_dir=data_dir)
    service = ImageService(settings, connect(settings.db_url))
    (row,), total = service.query(ImageQuery(ra=33.0, dec=-20.0))
    host = remote.removeprefix("http://")
    assert (row.id, row.url, total) == (f"web:{host}/big.fits", f"{remote}/big.fits", 1)


def test_remote_file_answering_404_is_removed_other_errors_keep_it(
    remote: str, tmp_path: Path
) -> None:
    for name, ra in (("stays.fits", 20.0), ("goes.fits", 21.0), ("flaky.fits", 22.0)):
        write_image(tmp_path / name, ra, -3.0)
    urls = [f"{remote}/{n}" for n in ("stays.fits", "goes.fits", "flaky.fits")]
    data_dir = tmp_path / "state"
    first = ingest(data_dir, "web", *urls)
    assert first.returncode == 0 and "3 ingested" in first.stdout, first.stdout + first.stderr
    (tmp_path / "goes.fits").unlink()  # 404 from now on
    RangeHandler.status["/flaky.fits"] = 503
    try:
        again = ingest(data_dir, "web", *urls)
    finally:
        RangeHandler.status.clear()
    out = again.stdout + again.stderr
    assert again.returncode == 0, out
    assert "1 unchanged, 1 failed, 1 removed (1 images)" in again.stdout
    assert "HTTP 503" in out and "flaky.fits" in out and "kept" in out
    from outcrop.db import connect
    from outcrop.images.search import ImageQuery
    from outcrop.images.service import ImageService
    from outcrop.settings import load_settings

    settings = load_settings(data_dir=data_dir)
    service = ImageService(settings, connect(settings.db_url))
    rows, total = service.query(ImageQuery(collection="web"))
    assert sorted(r.url for r in rows) == sorted([urls[0], urls[2]]) and total == 2
