"""Reading FITS headers into footprints, times and keywords, checked against astropy."""

from __future__ import annotations

import gzip
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("astropy")

from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

from outcrop.errors import SourceError
from outcrop.images.ingest import find_sources, read_images, time_unit
from tests.images.fitsfiles import reference_match, tan_header, wcs_of, write_image

IMAGES = Path(__file__).resolve().parent.parent / "data" / "images"


def corners_of(wcs: WCS) -> SkyCoord:
    ra, dec = wcs.calc_footprint(center=False).T  # pixel corners, not pixel centres
    return SkyCoord(ra * u.deg, dec * u.deg)


def assert_same_points(ours: list[tuple[float, float]], theirs: SkyCoord) -> None:
    mine = SkyCoord([p[0] for p in ours] * u.deg, [p[1] for p in ours] * u.deg)
    for point in theirs:
        assert point.separation(mine).arcsec.min() < 1e-3


@pytest.mark.parametrize(
    ("name", "hdu"),
    [("m13.fits", 0), ("m13_rice.fits", 1), ("dss.14.29.56-62.41.05.fits.gz", 0)],
)
def test_real_images_get_astropy_footprints(name: str, hdu: int) -> None:
    (record,) = read_images(str(IMAGES / name))
    assert record.hdu == hdu
    with fits.open(IMAGES / name) as hdul:
        wcs = WCS(hdul[hdu].header, hdul)
        assert (record.width, record.height) == (
            hdul[hdu].header["NAXIS1"],
            hdul[hdu].header["NAXIS2"],
        )
    assert_same_points(record.footprint.corners, corners_of(wcs))
    centre = SkyCoord(
        *wcs.pixel_to_world_values((record.width - 1) / 2, (record.height - 1) / 2), unit="deg"
    )
    ours = SkyCoord(record.footprint.ra * u.deg, record.footprint.dec * u.deg)
    assert centre.separation(ours).arcsec < 1e-3
    farthest = centre.separation(corners_of(wcs)).deg.max()
    assert record.footprint.radius == pytest.approx(farthest, rel=1e-6)


def test_dss_plate_time_is_read_from_the_old_date_form() -> None:
    (record,) = read_images(str(IMAGES / "dss.14.29.56-62.41.05.fits.gz"))
    assert record.start is not None and record.start.date().isoformat() == "1976-03-11"
    assert record.telescope == "UK 48-inch Schmidt"


def test_dss_exposure_is_in_minutes_as_its_comment_says() -> None:
    path = IMAGES / "dss.14.29.56-62.41.05.fits.gz"
    with fits.open(path) as hdul:
        card = hdul[0].header.cards["EXPOSURE"]
    assert "minutes" in card.comment  # what the file itself says: `Exposure time minutes`
    (record,) = read_images(str(path))
    assert record.exposure == card.value * 60
    assert record.start is not None and record.stop is not None
    assert (record.stop - record.start).total_seconds() == card.value * 60
    assert record.header["EXPOSURE"] == card.value  # the keyword is stored as written


@pytest.mark.parametrize(
    ("key", "value", "comment", "seconds"),
    [
        ("EXPOSURE", 60.0, "Exposure time in minutes", 3600.0),
        ("EXPTIME", 2.5, "[min] exposure", 150.0),
        ("EXPTIME", 1.5, "total exposure, hours", 5400.0),
        ("EXPTIME", 0.5, "exposure time (h)", 1800.0),
        ("EXPTIME", 250, "[ms] integration", 0.25),
        ("ITIME", 40.0, "Integration time in milliseconds", 0.04),
        ("EXPTIME", 30.0, "Exposure time (sec)", 30.0),
        ("EXPTIME", 30.0, "[s] exposure", 30.0),
        ("EXPTIME", 30.0, "Exposure time", 30.0),
        ("EXPTIME", 30.0, "", 30.0),
        ("EXPTIME", 30.0, "H-alpha image's exposure", 30.0),  # no "h", no "s" there
    ],
)
def test_exposure_unit_is_read_from_the_keyword_comment(
    tmp_path: Path, key: str, value: float, comment: str, seconds: float
) -> None:
    path = write_image(
        tmp_path / "t.fits", 10.0, 10.0, keywords={"DATE-OBS": "2020-01-02T03:04:05"}
    )
    with fits.open(path, mode="update") as hdul:
        hdul[0].header[key] = (value, comment)
    (record,) = read_images(str(path))
    assert record.exposure == pytest.approx(seconds)
    assert record.start == datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert record.stop is not None
    assert (record.stop - record.start).total_seconds() == pytest.approx(seconds, abs=1e-3)


def test_an_extension_s_exposure_comment_overrides_the_primary_s(tmp_path: Path) -> None:
    primary = fits.PrimaryHDU()
    primary.header["EXPOSURE"] = (2.0, "[h] planned exposure")
    primary.header["DATE-OBS"] = "2020-01-02T00:00:00"
    image = fits.ImageHDU(np.zeros((10, 12), "f4"), tan_header(10.0, -30.0, (10, 12), 30))
    image.header["EXPOSURE"] = (90.0, "Exposure time in minutes")
    fits.HDUList([primary, image]).writeto(tmp_path / "mef.fits")
    (record,) = read_images(str(tmp_path / "mef.fits"))
    assert record.exposure == 90.0 * 60
    del image.header["EXPOSURE"]  # now the primary header's, in hours, applies
    fits.HDUList([primary, image]).writeto(tmp_path / "inherit.fits")
    (record,) = read_images(str(tmp_path / "inherit.fits"))
    assert record.exposure == 2.0 * 3600


@pytest.mark.parametrize(
    ("comment", "factor"),
    [("[d] long", 1.0), ("[hr]", 3600.0), ("Exposure in MINUTES", 60.0), ("mins", 60.0)],
)
def test_time_unit_words(comment: str, factor: float) -> None:
    assert time_unit(comment) == factor


def test_multi_extension_file_gives_every_image_with_the_primary_keywords(tmp_path: Path) -> None:
    primary = fits.PrimaryHDU()
    primary.header.update(
        {"INSTRUME": "ACS", "TELESCOP": "HST", "FILTER1": "CLEAR1L", "FILTER2": "F606W"}
    )
    primary.header.update({"DATE-OBS": "2002-04-13", "TIME-OBS": "20:40:22", "EXPTIME": 60.0})
    sci = [
        fits.ImageHDU(
            np.zeros((10, 12), "f4"), tan_header(10.0, -30.0 + k, (10, 12), 30), name="SCI"
        )
        for k in range(2)
    ]
    table = fits.BinTableHDU.from_columns([fits.Column("x", "E", array=np.arange(3.0))])
    path = tmp_path / "mef.fits"
    fits.HDUList([primary, sci[0], table, sci[1]]).writeto(path)
    records = read_images(str(path))
    assert [r.hdu for r in records] == [1, 3]
    for record, k in zip(records, range(2), strict=True):
        assert (record.instrument, record.filter, record.telescope) == ("ACS", "F606W", "HST")
        assert record.extname == "SCI"
        assert record.start == datetime(2002, 4, 13, 20, 40, 22, tzinfo=UTC)
        assert record.stop == datetime(2002, 4, 13, 20, 41, 22, tzinfo=UTC)
        assert record.exposure == 60.0
        assert record.header["EXPTIME"] == 60.0
        assert record.footprint.dec == pytest.approx(-30.0 + k, abs=0.01)
        assert_same_points(record.footprint.corners, corners_of(wcs_of(path, record.hdu)))


def test_unsigned_int16_image_with_bzero(tmp_path: Path) -> None:
    path = write_image(tmp_path / "u16.fits", 120.0, 5.0, shape=(40, 50), dtype="uint16")
    with fits.open(path) as hdul:
        assert hdul[0].header["BZERO"] == 32768
    (record,) = read_images(str(path))
    assert (record.width, record.height) == (50, 40)
    assert "BZERO" in record.header


def test_sip_outline_follows_the_distortion(tmp_path: Path) -> None:
    path = write_image(
        tmp_path / "sip.fits", 40.0, 20.0, shape=(200, 300), scale_arcsec=2, sip=True
    )
    wcs = wcs_of(path)
    assert wcs.sip is not None
    (record,) = read_images(str(path))
    assert_same_points(record.footprint.corners, corners_of(wcs))
    # the distortion moves the middle of the bottom edge by more than a pixel
    nx = wcs.array_shape[1]
    linear = WCS(tan_header(40.0, 20.0, (200, 300), 2))  # the same without distortion
    shift = wcs.pixel_to_world(nx / 2, -0.5).separation(linear.pixel_to_world(nx / 2, -0.5))
    assert shift.arcsec > 2
    outline = SkyCoord(np.array(record.footprint.outline), unit="deg")
    middle = wcs.pixel_to_world_values(nx / 2 - 0.5, -0.5)  # an outline point
    assert outline.separation(SkyCoord(*middle, unit="deg")).arcsec.min() < 1e-3


def test_footprint_across_ra_zero(tmp_path: Path) -> None:
    path = write_image(tmp_path / "zero.fits", 0.05, 10.0, shape=(20, 20), scale_arcsec=60)
    (record,) = read_images(str(path))
    ras = [c[0] for c in record.footprint.corners]
    assert min(ras) < 1 and max(ras) > 359  # both sides of RA = 0, all in [0, 360)
    assert all(0 <= r < 360 for r in ras)
    assert_same_points(record.footprint.corners, corners_of(wcs_of(path)))


def test_footprint_over_the_pole(tmp_path: Path) -> None:
    path = write_image(tmp_path / "pole.fits", 45.0, 89.9, shape=(30, 30), scale_arcsec=60)
    (record,) = read_images(str(path))
    assert reference_match(wcs_of(path), 0.0, 90.0, 0.0)[0]  # the image holds the pole
    assert record.footprint.radius == pytest.approx(np.hypot(15, 15) / 60, rel=0.02)


def test_file_without_celestial_wcs_is_refused_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "plain.fits"
    fits.PrimaryHDU(np.zeros((5, 5))).writeto(path)
    with pytest.raises(SourceError, match="no image with a celestial WCS"):
        read_images(str(path))


@pytest.mark.parametrize("content", [b"not fits at all", b"SIMPLE  =                    T"])
def test_broken_file_is_refused_with_a_message(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.fits"
    path.write_bytes(content)
    with pytest.raises(SourceError, match=r"broken\.fits"):
        read_images(str(path))


def test_truncated_file_is_refused(tmp_path: Path) -> None:
    path = write_image(tmp_path / "whole.fits", 10.0, 10.0)
    cut = tmp_path / "cut.fits"
    cut.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(SourceError):
        read_images(str(cut))


def test_find_sources_names_files_by_their_path_under_the_folder(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/one.fits", "a/b/two.fits.gz", "a/notes.txt", "a/.hidden.fits"):
        (tmp_path / name).write_bytes(b"")
    with gzip.open(tmp_path / "a" / "b" / "x.fits.gz", "wb"):
        pass
    flat = list(find_sources([str(tmp_path / "a")], recursive=False))
    assert [rel for _, rel in flat] == ["one.fits"]
    deep = [rel for _, rel in find_sources([str(tmp_path / "a")], recursive=True)]
    assert deep == ["b/two.fits.gz", "b/x.fits.gz", "one.fits"]
    shutil.rmtree(tmp_path / "a")
