"""Cutouts as PNG and JPEG, decoded with Pillow: size, mode, scaling, transparency, and
north up on generated skies whose bright half is known."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.visualization import (
    BaseInterval,
    BaseStretch,
    LinearStretch,
    MinMaxInterval,
    SqrtStretch,
    ZScaleInterval,
)
from astropy.wcs import WCS
from PIL import Image

from outcrop.errors import BadQuery
from outcrop.formats.fits import Cutout, make_cutout
from outcrop.formats.skyimage import INTERVALS, STRETCHES, encode_picture

IMAGES = Path(__file__).resolve().parent.parent / "data" / "images"
M13 = (250.4226, 36.4602)


def decode(body: bytes) -> Image.Image:
    picture = Image.open(io.BytesIO(body))
    picture.load()
    return picture


def sky(angle_deg: float, shape: tuple[int, int] = (101, 121)) -> Cutout:
    """A cutout rotated by `angle_deg`, bright (1) north of its centre and, separately
    (values + 2), east of it: 3 in the north-east quadrant, 0 in the south-west."""
    ny, nx = shape
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval, w.wcs.crpix = [45.0, 30.0], [(nx + 1) / 2, (ny + 1) / 2]
    s, a = 1 / 3600, np.radians(angle_deg)
    w.wcs.cd = [[-s * np.cos(a), s * np.sin(a)], [s * np.sin(a), s * np.cos(a)]]
    y, x = np.mgrid[0:ny, 0:nx]
    ra, dec = w.all_pix2world(x, y, 0)
    data = (dec > 30.0) + 2.0 * (ra > 45.0)
    return Cutout(data.astype(np.float32), w.to_header(), padded=False)


def quadrants(picture: Image.Image) -> dict[str, float]:
    """Mean grey level of the four quadrants' inner parts (rotation leaves the corners)."""
    grey = np.asarray(picture.convert("L"), dtype=float)
    h, w = grey.shape
    qh, qw = h // 4, w // 4
    return {
        "top-left": grey[qh : 2 * qh - 4, qw : 2 * qw - 4].mean(),
        "top-right": grey[qh : 2 * qh - 4, 2 * qw + 4 : 3 * qw].mean(),
        "bottom-left": grey[2 * qh + 4 : 3 * qh, qw : 2 * qw - 4].mean(),
        "bottom-right": grey[2 * qh + 4 : 3 * qh, 2 * qw + 4 : 3 * qw].mean(),
    }


def assert_north_up_east_left(picture: Image.Image) -> None:
    q = quadrants(picture)
    order = sorted(q, key=q.__getitem__)
    assert order == ["bottom-right", "top-right", "bottom-left", "top-left"], q


def test_png_has_the_cutout_s_size_in_grey() -> None:
    cut = make_cutout(str(IMAGES / "m13.fits"), None, *M13, 2 / 60, max_pixels=4096, name="m")
    picture = decode(encode_picture(cut, "png"))
    assert picture.format == "PNG" and picture.mode == "L"  # nothing blank: no alpha
    assert picture.size == (cut.data.shape[1], cut.data.shape[0])


def test_jpeg_is_grey() -> None:
    cut = make_cutout(str(IMAGES / "m13.fits"), None, *M13, 2 / 60, max_pixels=4096, name="m")
    picture = decode(encode_picture(cut, "jpeg", stretch="asinh"))
    assert picture.format == "JPEG" and picture.mode == "L"
    assert picture.size == (cut.data.shape[1], cut.data.shape[0])


def test_rows_are_flipped_so_that_north_is_up() -> None:
    """A sky in the usual orientation (north +y, east -x) is shown as it is."""
    picture = decode(encode_picture(sky(0.0), "png", interval="minmax"))
    assert_north_up_east_left(picture)


@pytest.mark.parametrize("angle", [180.0, 120.0, -35.0])
def test_align_turns_any_rotation_north_up_east_left(angle: float) -> None:
    cutout = sky(angle)
    assert_north_up_east_left(decode(encode_picture(cutout, "png", align=True)))
    if angle == 180.0:  # without align, upside down: the north half at the bottom
        q = quadrants(decode(encode_picture(cutout, "png")))
        assert q["bottom-right"] > q["top-left"]


def test_align_of_a_large_cutout_uses_the_interpolated_grid() -> None:
    picture = decode(encode_picture(sky(75.0, (700, 800)), "png", align=True))
    assert picture.size == (800, 700)
    assert_north_up_east_left(picture)


def test_blank_pixels_are_transparent_in_png_and_black_in_jpeg() -> None:
    ra, dec = WCS(fits.getheader(IMAGES / "m13.fits")).all_pix2world([[5, 150]], 0)[0]
    cut = make_cutout(str(IMAGES / "m13.fits"), None, ra, dec, 1 / 60, max_pixels=99, name="m")
    assert cut.padded
    blank = np.isnan(cut.data)[::-1]  # picture rows are top first
    picture = decode(encode_picture(cut, "png"))
    assert picture.mode == "LA"
    rgba = np.asarray(picture)
    np.testing.assert_array_equal(rgba[..., 1] == 0, blank)
    assert blank[:, 0].all() and not blank[:, -1].any()  # the image's edge is on the left
    grey = np.asarray(decode(encode_picture(cut, "jpeg")), dtype=int)
    assert grey[blank].max() < 16


@pytest.mark.parametrize(
    ("stretch", "interval", "limits", "curve"),
    [
        ("sqrt", "minmax", MinMaxInterval(), SqrtStretch()),
        ("linear", "zscale", ZScaleInterval(), LinearStretch()),
    ],
)
def test_grey_levels_follow_astropy_visualization(
    stretch: str, interval: str, limits: BaseInterval, curve: BaseStretch
) -> None:
    cut = make_cutout(str(IMAGES / "m13.fits"), None, *M13, 2 / 60, max_pixels=4096, name="m")
    data = cut.data.astype(float)
    low, high = limits.get_limits(data)
    want = curve(np.clip((data - low) / (high - low), 0, 1))[::-1] * 255
    got = np.asarray(decode(encode_picture(cut, "png", stretch=stretch, interval=interval)))
    assert np.abs(got - want).max() <= 1.0


def test_every_stretch_and_interval_makes_a_picture() -> None:
    cut = make_cutout(str(IMAGES / "m13.fits"), None, *M13, 1 / 60, max_pixels=4096, name="m")
    for stretch in STRETCHES:
        for interval in INTERVALS:
            grey = np.asarray(
                decode(encode_picture(cut, "png", stretch=stretch, interval=interval))
            )
            assert grey.max() > grey.min(), (stretch, interval)


def test_a_flat_or_empty_cutout_is_black_not_an_error() -> None:
    flat = sky(0.0)
    flat.data[:] = 5.0
    assert np.asarray(decode(encode_picture(flat, "jpeg"))).max() == 0
    flat.data[:] = np.nan
    assert np.asarray(decode(encode_picture(flat, "png")))[..., 1].max() == 0


@pytest.mark.parametrize(
    ("options", "parameter"),
    [
        ({"fmt": "gif"}, "format"),
        ({"stretch": "cubic"}, "stretch"),
        ({"interval": "12"}, "interval"),
    ],
)
def test_unknown_options_name_the_parameter_and_the_choices(
    options: dict[str, str], parameter: str
) -> None:
    args = {"fmt": "png", **options}
    fmt = args.pop("fmt")
    with pytest.raises(BadQuery) as err:
        encode_picture(sky(0.0), fmt, **args)  # type: ignore[arg-type]
    assert err.value.parameter == parameter and "one of" in err.value.message
