"""FITS cutouts against astropy's own Cutout2D, on real images and on generated ones whose
pixels hold their own sky position, so that every pixel of a cutout can be checked."""

from __future__ import annotations

import http.server
import io
import os
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import Cutout2D
from astropy.wcs import WCS, DistortionLookupTable
from astropy.wcs.utils import proj_plane_pixel_scales

from outcrop.errors import BadQuery, TooLarge
from outcrop.formats.fits import encode_fits, make_cutout, parse_cutout, parse_size

IMAGES = Path(__file__).resolve().parent.parent / "data" / "images"
M13 = (250.4226, 36.4602)  # the centre of m13.fits
DSS = (217.4832, -62.6849)  # the centre of the DSS image


def tan_header(
    ra: float, dec: float, shape: tuple[int, int], scale_arcsec: float, angle_deg: float = 0.0
) -> fits.Header:
    """A TAN-SIP header centred on (ra, dec), rotated by `angle_deg` (east of north)."""
    ny, nx = shape
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(nx + 1) / 2 + 3.3, (ny + 1) / 2 - 2.1]  # off-centre, not on a pixel
    s, a = scale_arcsec / 3600, np.radians(angle_deg)
    w.wcs.cd = [[-s * np.cos(a), s * np.sin(a)], [s * np.sin(a), s * np.cos(a)]]
    w.wcs.radesys = "ICRS"
    header = w.to_header(relax=True)
    # a mild SIP distortion: about a pixel at the corners
    header["A_ORDER"], header["B_ORDER"] = 2, 2
    header["A_2_0"], header["A_0_2"], header["B_1_1"] = 2e-5, -1e-5, 1.5e-5
    return header


def sky_of(header: fits.Header, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    ny, nx = shape
    y, x = np.mgrid[0:ny, 0:nx]
    ra, dec = WCS(header).all_pix2world(x, y, 0)
    return ra, dec


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fits")


@pytest.fixture(scope="module")
def radec(folder: Path) -> Path:
    """RA and DEC images (float64) across RA = 0, each pixel holding its own position,
    after a primary HDU of keywords only and a table."""
    shape = (180, 220)
    header = tan_header(0.01, 40.0, shape, 1.0, angle_deg=30)
    ra, dec = sky_of(header, shape)
    primary = fits.PrimaryHDU()
    primary.header["TELESCOP"] = "Generated"
    primary.header["INSTRUME"] = "RADEC"
    table = fits.BinTableHDU.from_columns([fits.Column("x", "D", array=[1.0])], name="TAB")
    hdus = [primary, table]
    hdus += [fits.ImageHDU(ra, header, name="RA"), fits.ImageHDU(dec, header, name="DEC")]
    path = folder / "radec.fits"
    fits.HDUList(hdus).writeto(path)
    return path


@pytest.fixture(scope="module")
def mef(folder: Path) -> Path:
    """An HST-like file: SCI, ERR, DQ for two chips (EXTVER 1 and 2)."""
    rng = np.random.default_rng(1)
    hdus: list[Any] = [fits.PrimaryHDU()]
    hdus[0].header["INSTRUME"] = "ACS"
    for ver, dec in ((1, 10.0), (2, 10.02)):
        header = tan_header(150.0, dec, (120, 100), 0.5, angle_deg=-70)
        sci = rng.normal(100 * ver, 5, (120, 100)).astype(np.float32)
        for name, data in (
            ("SCI", sci),
            ("ERR", np.sqrt(sci)),
            ("DQ", (sci > 105).astype(np.int16)),
        ):
            hdus.append(fits.ImageHDU(data, header, name=name, ver=ver))
    path = folder / "mef.fits"
    fits.HDUList(hdus).writeto(path)
    return path


@pytest.fixture(scope="module")
def unsigned(folder: Path) -> Path:
    """uint16 values above 32767, stored as int16 with BZERO = 32768, and a BLANK."""
    header = tan_header(80.0, -5.0, (64, 64), 2.0)
    data = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 15 + 3000).astype(np.uint16)
    path = folder / "unsigned.fits"
    fits.PrimaryHDU(data, header).writeto(path)
    with fits.open(path, do_not_scale_image_data=True) as hdul:
        assert hdul[0].header["BZERO"] == 32768 and hdul[0].data.dtype == np.dtype(">i2")
    return path


@pytest.fixture(scope="module")
def compressed(folder: Path) -> dict[str, Path]:
    """The same int16 and float32 images, tile-compressed with Rice and gzip, and a
    whole-file gzip."""
    header = tan_header(30.0, 60.0, (150, 130), 1.5, angle_deg=12)
    rng = np.random.default_rng(2)
    ints = rng.integers(-2000, 20000, (150, 130)).astype(np.int16)
    floats = rng.normal(0, 1, (150, 130)).astype(np.float32)
    out = {}
    for kind in ("RICE_1", "GZIP_1"):
        for label, data in (("int", ints), ("float", floats)):
            path = folder / f"{kind.lower()}_{label}.fits"
            hdu = fits.CompImageHDU(data, header, compression_type=kind, tile_shape=(16, 130))
            fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)
            out[f"{kind}_{label}"] = path
    path = folder / "whole.fits.gz"
    fits.PrimaryHDU(floats, header).writeto(path)
    out["gzip_file"] = path
    return out


def reference(
    path: Path, hdu: int | str | tuple[str, int], ra: float, dec: float, size_deg: float
) -> Cutout2D:
    """astropy's own cutout, from the whole decoded image."""
    with fits.open(path) as hdul:
        data = hdul[hdu].data
        if data.dtype.kind in "iu":
            data = data.astype(np.float64)  # Cutout2D pads with NaN: floats only
        wcs = WCS(hdul[hdu].header, fobj=hdul)
        position = SkyCoord(ra * u.deg, dec * u.deg)
        return Cutout2D(data, position, size_deg * u.deg, wcs=wcs, mode="partial")


def same_sky(a: WCS, b: WCS, shape: tuple[int, int]) -> None:
    """Both WCS put every corner and the centre of the cutout at the same place."""
    ny, nx = shape
    x = np.array([0, nx - 1, 0, nx - 1, (nx - 1) / 2])
    y = np.array([0, 0, ny - 1, ny - 1, (ny - 1) / 2])
    pa, pb = a.pixel_to_world(x, y), b.pixel_to_world(x, y)
    assert np.all(pa.separation(pb).to_value(u.arcsec) < 1e-6)


# -- parameters -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "degrees"),
    [("5arcmin", 5 / 60), ("30arcsec", 30 / 3600), ("0.1deg", 0.1), (" 2 deg", 2.0)],
)
def test_size_is_read_in_sbnsis_units(text: str, degrees: float) -> None:
    assert parse_size(text) == pytest.approx(degrees)
    assert parse_size("0.001rad") == pytest.approx(0.0572957795)


@pytest.mark.parametrize(
    ("text", "says"),
    [("5", "arcsec, arcmin, deg, rad"), ("5 furlongs", "arcsec, arcmin, deg, rad"),
     ("arcmin", "arcsec, arcmin, deg, rad"), ("0arcmin", "greater than 0"),
     ("-1deg", "greater than 0"), ("1e999deg", "greater than 0")],
)  # fmt: skip
def test_size_without_a_known_unit_or_not_positive_is_refused(text: str, says: str) -> None:
    with pytest.raises(BadQuery) as err:
        parse_size(text)
    assert err.value.parameter == "size" and says in err.value.message


def test_cutout_parameters_come_together() -> None:
    assert parse_cutout(None, None, None) is None
    assert parse_cutout("-10", "45.5", "1arcmin") == pytest.approx((350.0, 45.5, 1 / 60))
    assert parse_cutout("360", "-90", "1deg") == pytest.approx((0.0, -90.0, 1.0))
    with pytest.raises(BadQuery) as err:
        parse_cutout("10", None, None)
    assert err.value.parameter == "dec" and "dec, size" in err.value.message


@pytest.mark.parametrize(
    ("ra", "dec", "parameter"),
    [("10", "90.5", "dec"), ("10", "-91", "dec"), ("abc", "0", "ra"), ("400", "0", "ra"),
     ("nan", "0", "ra"), ("10", "inf", "dec")],
)  # fmt: skip
def test_bad_positions_name_the_parameter(ra: str, dec: str, parameter: str) -> None:
    with pytest.raises(BadQuery) as err:
        parse_cutout(ra, dec, "1arcmin")
    assert err.value.parameter == parameter


# -- cutouts against Cutout2D ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "hdu", "ra", "dec", "size"),
    [
        ("m13.fits", None, *M13, 2 / 60),
        ("m13.fits", 0, 250.40, 36.47, 0.5 / 60),
        ("m13_rice.fits", None, *M13, 2 / 60),
        ("m13_rice.fits", 1, 250.45, 36.44, 1 / 60),
        ("m13.fits", None, 250.38, 36.48, 3 / 60),  # touches an edge: padded
        ("dss.14.29.56-62.41.05.fits.gz", None, *DSS, 1 / 60),
        ("dss.14.29.56-62.41.05.fits.gz", None, 217.52, -62.70, 2 / 60),  # padded
    ],
)
def test_real_images_cut_as_cutout2d_does(
    name: str, hdu: int | None, ra: float, dec: float, size: float
) -> None:
    path = IMAGES / name
    cut = make_cutout(str(path), hdu, ra, dec, size, max_pixels=4096, name=name)
    ref = reference(path, 1 if "rice" in name else 0, ra, dec, size)
    np.testing.assert_array_equal(cut.data, ref.data)
    assert cut.padded == bool(np.isnan(ref.data).any())
    same_sky(WCS(cut.header), ref.wcs, cut.data.shape)


def test_requested_position_falls_where_cutout2d_puts_it() -> None:
    path = IMAGES / "m13.fits"
    ra, dec = 250.4111, 36.4655
    cut = make_cutout(str(path), None, ra, dec, 1.5 / 60, max_pixels=4096, name="m13.fits")
    x, y = WCS(cut.header).world_to_pixel(SkyCoord(ra * u.deg, dec * u.deg))
    ref = reference(path, 0, ra, dec, 1.5 / 60)
    assert abs(x - ref.input_position_cutout[0]) < 0.1
    assert abs(y - ref.input_position_cutout[1]) < 0.1
    ny, nx = cut.data.shape
    assert abs(x - (nx - 1) / 2) <= 0.5 and abs(y - (ny - 1) / 2) <= 0.5


def test_every_pixel_holds_the_position_its_header_gives(radec: Path) -> None:
    """Across RA = 0, with SIP: the cutout's WCS maps each pixel to the RA and DEC that
    the generated images store in it."""
    ra, dec = 359.995, 40.003
    cuts = [
        make_cutout(str(radec), h, ra, dec, 1 / 60, max_pixels=4096, name="radec.fits")
        for h in ("RA", "DEC")
    ]
    header = cuts[0].header
    assert header["CTYPE1"] == "RA---TAN-SIP" and header["A_2_0"] == 2e-5
    ny, nx = cuts[0].data.shape
    assert (ny, nx) == (60, 60)
    y, x = np.mgrid[0:ny, 0:nx]
    got = WCS(header).pixel_to_world(x, y)
    stored = SkyCoord(cuts[0].data * u.deg, cuts[1].data * u.deg)
    assert np.max(got.separation(stored).to_value(u.arcsec)) < 1e-6
    centre = WCS(header).world_to_pixel(SkyCoord(ra * u.deg, dec * u.deg))
    assert abs(centre[0] - (nx - 1) / 2) <= 0.5 and abs(centre[1] - (ny - 1) / 2) <= 0.5


def test_first_image_with_a_celestial_wcs_is_taken_by_default(radec: Path) -> None:
    cut = make_cutout(str(radec), None, 0.01, 40.0, 0.5 / 60, max_pixels=4096, name="r")
    by_name = make_cutout(str(radec), "RA", 0.01, 40.0, 0.5 / 60, max_pixels=4096, name="r")
    np.testing.assert_array_equal(cut.data, by_name.data)
    assert cut.header["CUTHDU"] == "2 (RA,1)"
    assert cut.header["INSTRUME"] == "RADEC"  # from the primary header
    assert "EXTNAME" not in cut.header


@pytest.mark.parametrize(
    ("hdu", "ref"),
    [("SCI", ("SCI", 1)), ("SCI,2", ("SCI", 2)), ("dq,2", ("DQ", 2)), (5, 5), ("2", 2)],
)
def test_hdu_is_picked_by_name_version_or_index(
    mef: Path, hdu: int | str, ref: int | tuple[str, int]
) -> None:
    ra, dec = 150.0, 10.02 if hdu in ("SCI,2", "dq,2", 5) else 10.0
    cut = make_cutout(str(mef), hdu, ra, dec, 20 / 3600, max_pixels=4096, name="mef.fits")
    want = reference(mef, ref, ra, dec, 20 / 3600)
    np.testing.assert_array_equal(cut.data, want.data)
    assert cut.header["INSTRUME"] == "ACS"


@pytest.mark.parametrize("hdu", ["NOPE", 99, "SCI,7"])
def test_an_unknown_hdu_lists_the_file_s_hdus(mef: Path, hdu: int | str) -> None:
    with pytest.raises(BadQuery) as err:
        make_cutout(str(mef), hdu, 150.0, 10.0, 0.01, max_pixels=4096, name="mef.fits")
    assert err.value.parameter == "hdu"
    assert "1 (SCI,1)" in err.value.message and "6 (DQ,2)" in err.value.message


def test_a_table_hdu_is_not_an_image(radec: Path) -> None:
    with pytest.raises(BadQuery, match="not a 2-D image"):
        make_cutout(str(radec), "TAB", 0.0, 40.0, 0.01, max_pixels=4096, name="r")


@pytest.mark.parametrize(
    "key", ["RICE_1_int", "RICE_1_float", "GZIP_1_int", "GZIP_1_float", "gzip_file"]
)
def test_compressed_images_cut_as_cutout2d_does(compressed: dict[str, Path], key: str) -> None:
    path = compressed[key]
    for ra, dec in ((30.0, 60.0), (30.05, 60.02)):  # the second one is padded
        cut = make_cutout(str(path), None, ra, dec, 1.5 / 60, max_pixels=4096, name="c")
        ref = reference(path, 0 if key == "gzip_file" else 1, ra, dec, 1.5 / 60)
        np.testing.assert_array_equal(cut.data, ref.data)
        same_sky(WCS(cut.header), ref.wcs, cut.data.shape)
    assert cut.padded


def test_unsigned_values_stay_unsigned_and_exact(unsigned: Path) -> None:
    cut = make_cutout(str(unsigned), None, 80.0, -5.0, 40 / 3600, max_pixels=4096, name="u")
    assert cut.data.dtype == np.uint16 and not cut.padded
    want = reference(unsigned, 0, 80.0, -5.0, 40 / 3600).data
    np.testing.assert_array_equal(cut.data, want)
    assert cut.data.max() > 32767
    with fits.open(io.BytesIO(encode_fits(cut))) as hdul:
        assert hdul[0].header["BZERO"] == 32768
        np.testing.assert_array_equal(hdul[0].data, want)


def test_integer_cutout_past_the_edge_becomes_float_with_nan(unsigned: Path) -> None:
    ra, dec = WCS(fits.getheader(unsigned)).all_pix2world([[2, 60]], 0)[0]
    cut = make_cutout(str(unsigned), None, ra, dec, 40 / 3600, max_pixels=4096, name="u")
    assert cut.padded and cut.data.dtype == np.float32
    want = reference(unsigned, 0, ra, dec, 40 / 3600).data
    np.testing.assert_array_equal(cut.data, want)
    assert np.isnan(cut.data).any() and np.nanmax(cut.data) > 32767
    with fits.open(io.BytesIO(encode_fits(cut))) as hdul:
        assert hdul[0].header["CUTPAD"] is True
        np.testing.assert_array_equal(hdul[0].data, want)


def test_blank_pixels_are_nan(folder: Path) -> None:
    header = tan_header(10.0, 10.0, (40, 40), 1.0)
    data = np.full((40, 40), 7, dtype=np.int16)
    data[0, :] = -999
    header["BLANK"] = -999
    path = folder / "blank.fits"
    fits.PrimaryHDU(data, header).writeto(path)
    whole = make_cutout(str(path), None, 10.0, 10.0, 10 / 3600, max_pixels=99, name="b")
    assert not whole.padded and np.all(whole.data == 7) and "BLANK" not in whole.header
    ra, dec = WCS(header).all_pix2world([[20, 1]], 0)[0]
    cut = make_cutout(str(path), None, ra, dec, 10 / 3600, max_pixels=99, name="b")
    assert cut.padded and "BLANK" not in cut.header
    values = cut.data[~np.isnan(cut.data)]
    assert set(np.unique(values)) == {7.0}
    assert np.isnan(cut.data).sum() == 10 * 5  # 4 rows past the edge and the BLANK row


def test_scaled_integers_give_physical_values(folder: Path) -> None:
    header = tan_header(200.0, -30.0, (50, 50), 1.0)
    raw = np.arange(2500, dtype=np.int16).reshape(50, 50)
    path = folder / "scaled.fits"
    hdu = fits.PrimaryHDU(raw, header)
    hdu.header["BSCALE"], hdu.header["BZERO"] = 0.5, 10.0
    hdu.writeto(path)
    with fits.open(path, do_not_scale_image_data=True) as hdul:
        assert hdul[0].header["BSCALE"] == 0.5
        stored = hdul[0].data
    cut = make_cutout(str(path), None, 200.0, -30.0, 11 / 3600, max_pixels=99, name="s")
    ref = reference(path, 0, 200.0, -30.0, 11 / 3600)
    np.testing.assert_array_equal(cut.data, ref.data)
    assert cut.data.dtype.kind == "f"
    np.testing.assert_array_equal(cut.data, stored[ref.slices_original] * 0.5 + 10.0)
    with fits.open(io.BytesIO(encode_fits(cut))) as hdul:
        np.testing.assert_array_equal(hdul[0].data, cut.data)


# -- bad requests --------------------------------------------------------------------------
def test_a_position_off_the_image_names_its_footprint() -> None:
    with pytest.raises(BadQuery) as err:
        make_cutout(
            str(IMAGES / "m13.fits"), None, 250.6, 36.46, 0.01, max_pixels=4096, name="m13.fits"
        )
    assert err.value.parameter == "ra"
    assert "m13.fits" in err.value.message and "(250.3" in err.value.message


def test_the_far_side_of_the_sky_is_off_the_image() -> None:
    with pytest.raises(BadQuery, match="outside"):
        make_cutout(str(IMAGES / "m13.fits"), None, 70.4, -36.4, 0.01, max_pixels=4096, name="m")


def test_an_oversize_cutout_names_the_limit() -> None:
    with pytest.raises(TooLarge) as err:
        make_cutout(str(IMAGES / "m13.fits"), None, *M13, 0.5, max_pixels=1000, name="m13")
    assert err.value.limit == 1000 and err.value.size == 1801
    assert err.value.parameter == "size" and "1000 pixels" in err.value.message


def test_an_oversize_cutout_says_the_size_in_pixels_the_setting_and_what_fits() -> None:
    path = str(IMAGES / "m13.fits")
    with fits.open(path) as hdul:  # the expected side, from astropy's pixel scale
        scale = float(np.min(proj_plane_pixel_scales(WCS(hdul[0].header))))
    side = round(0.5 / scale)
    with pytest.raises(TooLarge) as err:
        make_cutout(path, None, *M13, 0.5, max_pixels=1000, name="m13")
    message = err.value.message
    assert err.value.size == side
    assert message.startswith("size=30arcmin ") and f"{side} pixels" in message
    assert "cutout_max_pixels" in message and "OUTCROP_CUTOUT_MAX_PIXELS" in message
    # the size it suggests is the largest allowed: it cuts, a little more does not
    suggested = message.rsplit("size=", 1)[1].split()[0]
    most = parse_size(suggested)
    cut = make_cutout(path, None, *M13, most, max_pixels=1000, name="m13")
    assert max(cut.data.shape) == 1000
    with pytest.raises(TooLarge):
        make_cutout(path, None, *M13, most + 1.5 * scale, max_pixels=1000, name="m13")


# -- the FITS file ---------------------------------------------------------------------------
def test_fits_output_keeps_the_header_and_says_where_it_comes_from(tmp_path: Path) -> None:
    source = tmp_path / "secret-server-folder" / "dss.fits.gz"
    source.parent.mkdir()
    source.write_bytes((IMAGES / "dss.14.29.56-62.41.05.fits.gz").read_bytes())
    cut = make_cutout(str(source), None, *DSS, 1 / 60, max_pixels=4096, name="dss/plate.fits")
    body = encode_fits(cut)
    assert str(tmp_path).encode() not in body
    with fits.open(io.BytesIO(body)) as hdul:
        header = hdul[0].header
        assert hdul[0].data.shape == cut.data.shape
        assert header["TELESCOP"] == "UK 48-inch Schmidt" and header["PLATEID"] == "0025"
        assert header["ORIGIN"].startswith("Outcrop")
        assert header["CUTSRC"] == "dss/plate.fits" and header["CUTHDU"] == "0"
        assert header["CUTRA"] == DSS[0] and header["CUTSIZE"] == pytest.approx(1 / 60)
        assert header["CUTPAD"] is False and "AMDX1" not in header
        assert any("dss/plate.fits" in h for h in header["HISTORY"])
        assert hdul[0].verify_checksum() == 1
        ref = reference(IMAGES / "dss.14.29.56-62.41.05.fits.gz", 0, *DSS, 1 / 60)
        same_sky(WCS(header), ref.wcs, cut.data.shape)  # the plate solution, shifted


# -- reading little --------------------------------------------------------------------------
def test_a_cutout_of_a_large_file_reads_little(tmp_path: Path) -> None:
    """8k x 8k int16 with BSCALE (a sparse file, 128 MB): decoding it all would allocate
    256 MB of float32; the cutout must cost a tiny fraction of that."""
    n, ra, dec = 8192, 120.0, 20.0
    header = fits.Header()
    header["SIMPLE"], header["BITPIX"], header["NAXIS"] = True, 16, 2
    header["NAXIS1"], header["NAXIS2"] = n, n
    header.update(tan_header(ra, dec, (n, n), 0.2))
    header["BSCALE"], header["BZERO"] = 2.0, 1.0
    path = tmp_path / "large.fits"
    with path.open("wb") as f:
        f.write(header.tostring().encode())
        start = f.tell()
        f.truncate(start + -(-n * n * 2 // 2880) * 2880)
    raw = np.memmap(path, dtype=">i2", mode="r+", offset=start, shape=(n, n))
    raw[4000:4200, 4000:4200] = np.arange(200, dtype=np.int16)[None, :]
    raw.flush()
    del raw
    tracemalloc.start()
    try:
        cut = make_cutout(str(path), None, ra, dec, 30 / 3600, max_pixels=4096, name="l")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert cut.data.shape == (150, 150)
    assert peak < 16e6, f"peak {peak / 1e6:.0f} MB"
    with fits.open(path) as hdul:
        ref = Cutout2D(hdul[0].section, SkyCoord(ra * u.deg, dec * u.deg), 30 * u.arcsec,
                       wcs=WCS(hdul[0].header))  # fmt: skip
    np.testing.assert_array_equal(cut.data, ref.data)
    assert np.unique(cut.data).size > 100  # the written block, scaled


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with single-range requests (RFC 9110 §14), counting bytes sent."""

    sent: list[int]

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        size = path.stat().st_size
        spec = self.headers.get("Range", "")
        if spec.startswith("bytes="):
            first, _, last = spec[6:].partition("-")
            start, stop = int(first), min(int(last) if last else size - 1, size - 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{stop}/{size}")
        else:
            start, stop = 0, size - 1
            self.send_response(200)
        self.send_header("Content-Length", str(stop - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        with path.open("rb") as f:
            f.seek(start)
            body = f.read(stop - start + 1)
        self.sent.append(len(body))
        self.wfile.write(body)

    def do_HEAD(self) -> None:
        path = Path(self.translate_path(self.path))
        self.send_response(200 if path.is_file() else 404)
        self.send_header("Content-Length", str(path.stat().st_size if path.is_file() else 0))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()


@pytest.fixture
def http_folder(tmp_path: Path) -> Iterator[tuple[str, Path, list[int]]]:
    sent: list[int] = []

    def handler(*args: Any, **kwargs: Any) -> RangeHandler:
        h = type("Counting", (RangeHandler,), {"sent": sent})
        return h(*args, directory=str(tmp_path), **kwargs)  # type: ignore[no-any-return]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", tmp_path, sent
    finally:
        server.shutdown()
        server.server_close()


def test_a_remote_cutout_fetches_only_the_rows_it_needs(
    http_folder: tuple[str, Path, list[int]],
) -> None:
    base, folder, sent = http_folder
    n = 2048
    header = tan_header(300.0, -45.0, (n, n), 0.5)
    data = np.arange(n * n, dtype=np.float32).reshape(n, n)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, header, name="SCI")]).writeto(
        folder / "remote.fits"
    )
    size = os.path.getsize(folder / "remote.fits")
    cut = make_cutout(
        f"{base}/remote.fits", "SCI", 300.0, -45.0, 1 / 60, max_pixels=4096, name="remote"
    )
    local = make_cutout(
        str(folder / "remote.fits"), "SCI", 300.0, -45.0, 1 / 60, max_pixels=4096, name="x"
    )
    np.testing.assert_array_equal(cut.data, local.data)
    assert cut.data.shape == (120, 120)
    assert 0 < sum(sent) < size / 10, f"{sum(sent)} bytes of {size} fetched"


# -- lookup-table distortions --------------------------------------------------------------
@pytest.fixture(scope="module")
def tables(folder: Path) -> Path:
    """An HST-like image: SIP plus CPDIS (NPOL) and D2IM lookup tables in WCSDVARR and
    D2IMARR extensions, of a few tenths of a pixel."""
    shape = (200, 300)
    w = WCS(tan_header(150.0, 2.0, shape, 0.05))
    ramp = np.linspace(-0.3, 0.3, 80, dtype=np.float32).reshape(8, 10)
    w.cpdis1 = DistortionLookupTable(ramp, (1.0, 1.0), (1.0, 1.0), (40.0, 40.0))
    w.cpdis2 = DistortionLookupTable(-ramp.T.copy(), (1.0, 1.0), (1.0, 1.0), (40.0, 40.0))
    w.det2im1 = DistortionLookupTable(
        np.full((8, 10), 0.2, np.float32), (1.0, 1.0), (1.0, 1.0), (40.0, 40.0)
    )
    hdul = w.to_fits(relax=True)
    hdul[0].data = np.arange(shape[0] * shape[1], dtype=np.float32).reshape(shape)
    path = folder / "tables.fits"
    hdul.writeto(path)
    return path


def test_lookup_table_distortions_left_out_are_said_and_measured(tables: Path) -> None:
    with fits.open(tables) as hdul:
        source = WCS(hdul[0].header, hdul)
    assert source.cpdis1 is not None and source.det2im1 is not None
    ra, dec = (float(v) for v in source.all_pix2world(210, 60, 0))
    cut = make_cutout(str(tables), None, ra, dec, 3 / 3600, max_pixels=4096, name="t")
    with fits.open(io.BytesIO(encode_fits(cut))) as got:
        header = got[0].header
        mine = WCS(header)  # a header astropy can read: no orphan DPj.* cards
    assert "CPDIS1" not in header and not any(k.startswith("DP1.") for k in header)
    assert any("lookup-table" in h for h in header["HISTORY"])
    # how far the cutout's WCS is from the source's, pixel by pixel, by astropy alone
    ny, nx = cut.data.shape
    y, x = np.mgrid[0:ny, 0:nx]
    x0, y0 = header["CUTX0"] - 1, header["CUTY0"] - 1
    theirs = source.pixel_to_world(x + x0, y + y0)
    ours = mine.pixel_to_world(x, y)
    scale = float(np.mean(proj_plane_pixel_scales(source))) * 3600
    off = ours.separation(theirs).arcsec / scale
    assert 0.05 < off.max() <= header["CUTLUT"] * 1.02 + 1e-3
    assert header["CUTLUT"] == pytest.approx(off.max(), rel=0.05)


def test_an_image_without_lookup_tables_says_nothing_of_them(radec: Path) -> None:
    cut = make_cutout(str(radec), "RA", 0.01, 40.0, 0.5 / 60, max_pixels=4096, name="r")
    assert "CUTLUT" not in cut.header
    assert not any("lookup-table" in h for h in cut.header.get("HISTORY", []))
