"""Cutouts as pictures: PNG and JPEG, grey levels scaled for the eye, north up on request.

Scaling takes two steps, as in DS9 and `astropy.visualization`: an *interval* picks the
values mapped to black and white (`zscale`, IRAF's choice around the sky level, by
default; `minmax`; or a percentile of the finite values kept, `99.5` … `90`), then a
*stretch* maps that range to grey levels (`linear` by default; `sqrt`, `squared`, `log`,
`asinh`, `sinh` bring out faint or bright parts; `histeq` equalises the histogram).

FITS stores row 0 at the bottom and pictures store it at the top, so rows are flipped:
with the usual orientation of a sky image, north is up. `align=True` resamples the cutout
(nearest pixel) onto a north-up, east-left gnomonic grid of the same centre, pixel scale
and shape, so images taken at any rotation look alike; the corners the rotated cutout
does not cover are blank. Blank (NaN) pixels are transparent in PNG (which then has an
alpha channel: mode "LA" rather than "L") and black in JPEG, which has no transparency.
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from typing import Any

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.visualization import (
    AsinhStretch,
    BaseInterval,
    BaseStretch,
    HistEqStretch,
    LinearStretch,
    LogStretch,
    MinMaxInterval,
    PercentileInterval,
    SinhStretch,
    SqrtStretch,
    SquaredStretch,
    ZScaleInterval,
)
from astropy.wcs import WCS, NoConvergence
from astropy.wcs.utils import proj_plane_pixel_scales, skycoord_to_pixel

from outcrop.errors import BadQuery
from outcrop.formats.fits import Cutout

FORMATS = ("png", "jpeg")
STRETCHES: tuple[str, ...] = ("linear", "sqrt", "squared", "log", "asinh", "sinh", "histeq")
INTERVALS: tuple[str, ...] = ("zscale", "minmax", "99.5", "99", "98", "95", "90")
JPEG_QUALITY = 90
PNG_LEVEL = 1
EXACT_PIXELS = 1 << 18  # up to 512 x 512 every pixel is mapped exactly; beyond, a grid
GRID_STEP = 16  # of every 16th pixel, interpolated (the mapping is smooth at that scale)

STRETCH_OF: dict[str, Callable[[np.ndarray[Any, Any]], BaseStretch]] = {
    "linear": lambda _: LinearStretch(),
    "sqrt": lambda _: SqrtStretch(),
    "squared": lambda _: SquaredStretch(),
    "log": lambda _: LogStretch(),
    "asinh": lambda _: AsinhStretch(),
    "sinh": lambda _: SinhStretch(),
    "histeq": lambda values: HistEqStretch(values),
}


def check_picture(fmt: str, stretch: str, interval: str) -> None:
    """BadQuery naming the parameter and what it allows, before any pixel is read."""
    for name, value, allowed in (
        ("format", fmt, FORMATS),
        ("stretch", stretch, STRETCHES),
        ("interval", interval, INTERVALS),
    ):
        if value not in allowed:
            raise BadQuery(f"{name} {value!r} is not one of {', '.join(allowed)}", parameter=name)


def encode_picture(
    cutout: Cutout,
    fmt: str,
    *,
    stretch: str = "linear",
    interval: str = "zscale",
    align: bool = False,
) -> bytes:
    """The cutout as a PNG or JPEG (`fmt`), scaled by `interval` then `stretch`.

    Args:
        fmt: "png" (grey; grey + alpha with blank pixels transparent when there are any)
            or "jpeg" (grey, blank pixels black).
        stretch: one of STRETCHES.
        interval: one of INTERVALS ("99.5": the 0.25 and 99.75 percentiles).
        align: resample north up, east left.
    """
    check_picture(fmt, stretch, interval)
    values = np.asarray(cutout.data, dtype=np.float32)
    if align:
        values = north_up(values, cutout.header)
    levels, valid = grey_levels(values, stretch, interval)
    levels, valid = levels[::-1], valid[::-1]  # FITS row 0 is the bottom of the sky
    return encode_png(levels, valid) if fmt == "png" else encode_jpeg(levels)


def grey_levels(
    values: np.ndarray[Any, Any], stretch: str, interval: str
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """(uint8 grey levels, finite mask); blank pixels are 0."""
    valid = np.isfinite(values)
    levels = np.zeros(values.shape, dtype=np.uint8)
    if not valid.any():
        return levels, valid
    finite = values[valid]
    low, high = interval_of(interval).get_limits(finite)
    if not high > low:  # a flat image: one grey level, black
        return levels, valid
    scaled = np.clip((finite - low) / (high - low), 0.0, 1.0)
    stretched = STRETCH_OF[stretch](scaled)(scaled, clip=True)
    levels[valid] = np.round(stretched * 255).astype(np.uint8)
    return levels, valid


def interval_of(name: str) -> BaseInterval:
    if name == "zscale":
        return ZScaleInterval()
    if name == "minmax":
        return MinMaxInterval()
    return PercentileInterval(float(name))


def encode_png(levels: np.ndarray[Any, Any], valid: np.ndarray[Any, Any]) -> bytes:
    """Grey ("L"), or grey + alpha ("LA") when some pixels are blank. zlib level 1: sky
    noise hardly compresses, and level 6 takes several times longer for a few percent."""
    from PIL import Image

    planes = levels if valid.all() else np.dstack([levels, np.where(valid, 255, 0)])
    picture = Image.fromarray(np.ascontiguousarray(planes, dtype=np.uint8))
    buffer = BytesIO()
    picture.save(buffer, format="PNG", compress_level=PNG_LEVEL)
    return buffer.getvalue()


def encode_jpeg(levels: np.ndarray[Any, Any]) -> bytes:
    from PIL import Image

    picture = Image.fromarray(np.ascontiguousarray(levels))
    buffer = BytesIO()
    picture.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


# -- north up ------------------------------------------------------------------------------
def north_up(values: np.ndarray[Any, Any], header: Any) -> np.ndarray[Any, Any]:
    """`values` resampled (nearest pixel) on a north-up, east-left TAN grid in ICRS with
    the cutout's centre, mean pixel scale and shape; NaN where the cutout has no pixel."""
    wcs = WCS(header).celestial
    ny, nx = values.shape
    target = north_up_wcs(wcs, nx, ny)
    px, py = source_pixels(wcs, target, nx, ny)
    ix, iy = np.rint(px), np.rint(py)
    inside = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    out = np.full(values.shape, np.nan, dtype=np.float32)
    out[inside] = values[iy[inside].astype(np.intp), ix[inside].astype(np.intp)]
    return out


def north_up_wcs(wcs: WCS, nx: int, ny: int) -> WCS:
    centre = wcs.pixel_to_world((nx - 1) / 2, (ny - 1) / 2).icrs
    scale = float(np.mean(proj_plane_pixel_scales(wcs))) * u.Unit(wcs.wcs.cunit[0]).to(u.deg)
    target = WCS(naxis=2)
    target.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    target.wcs.crval = [centre.ra.deg, centre.dec.deg]
    target.wcs.crpix = [(nx + 1) / 2, (ny + 1) / 2]
    target.wcs.cdelt = [-scale, scale]
    target.wcs.radesys = "ICRS"
    return target


def source_pixels(
    wcs: WCS, target: WCS, nx: int, ny: int
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """The cutout's (x, y) under each target pixel: exact for small pictures, else on a
    grid of every GRID_STEP-th pixel, interpolated bilinearly."""
    if nx * ny <= EXACT_PIXELS:
        xs, ys = np.arange(nx), np.arange(ny)
    else:
        xs = np.unique(np.r_[0:nx:GRID_STEP, nx - 1])
        ys = np.unique(np.r_[0:ny:GRID_STEP, ny - 1])
    gx, gy = np.meshgrid(xs, ys)
    sky: SkyCoord = target.pixel_to_world(gx, gy)
    try:
        px, py = skycoord_to_pixel(sky, wcs, mode="all")
    except NoConvergence:  # far from the image a distortion may not invert: ignore it
        px, py = skycoord_to_pixel(sky, wcs, mode="wcs")
    if len(xs) == nx and len(ys) == ny:
        return px, py
    return spread(px, xs, ys, nx, ny), spread(py, xs, ys, nx, ny)


def spread(
    grid: np.ndarray[Any, Any], xs: np.ndarray[Any, Any], ys: np.ndarray[Any, Any], nx: int, ny: int
) -> np.ndarray[Any, Any]:
    """Values known at (ys x xs) interpolated bilinearly onto every pixel of (ny, nx)."""
    i, s = weights(xs, nx)
    j, t = weights(ys, ny)
    rows = grid[:, i] * (1 - s) + grid[:, i + 1] * s  # (len(ys), nx)
    out: np.ndarray[Any, Any] = rows[j] * (1 - t)[:, None] + rows[j + 1] * t[:, None]
    return out


def weights(
    points: np.ndarray[Any, Any], n: int
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """For each of 0..n-1: the index of the grid point at or before it, and the fraction
    of the way to the next one."""
    at = np.arange(n)
    i = np.clip(np.searchsorted(points, at, side="right") - 1, 0, len(points) - 2)
    return i, (at - points[i]) / (points[i + 1] - points[i])
