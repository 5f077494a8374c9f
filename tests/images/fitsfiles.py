"""Generated FITS images with known WCS, and an independent reference for footprints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS


def tan_header(
    ra: float,
    dec: float,
    shape: tuple[int, int],
    scale_arcsec: float,
    angle_deg: float = 0.0,
    sip: bool = False,
) -> fits.Header:
    """A TAN (or TAN-SIP) header centred near (ra, dec), rotated by `angle_deg`."""
    ny, nx = shape
    w = WCS(naxis=2)
    suffix = "-SIP" if sip else ""
    w.wcs.ctype = [f"RA---TAN{suffix}", f"DEC--TAN{suffix}"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(nx + 1) / 2 + 0.3, (ny + 1) / 2 - 0.2]
    s, a = scale_arcsec / 3600, np.radians(angle_deg)
    w.wcs.cd = [[-s * np.cos(a), s * np.sin(a)], [s * np.sin(a), s * np.cos(a)]]
    w.wcs.radesys = "ICRS"
    header = w.to_header(relax=True)
    if sip:  # a few pixels at the corners
        header["A_ORDER"], header["B_ORDER"] = 2, 2
        header["A_2_0"], header["A_0_2"], header["B_1_1"] = 4e-4, -2e-4, 3e-4
    return header


def write_image(
    path: Path,
    ra: float,
    dec: float,
    *,
    shape: tuple[int, int] = (20, 30),
    scale_arcsec: float = 60.0,
    angle_deg: float = 0.0,
    sip: bool = False,
    keywords: dict[str, Any] | None = None,
    dtype: str = "uint8",
) -> Path:
    """A one-image FITS file (data of `dtype`; uint16 is written with BZERO 32768)."""
    header = tan_header(ra, dec, shape, scale_arcsec, angle_deg, sip)
    for key, value in (keywords or {}).items():
        header[key] = value
    data = np.arange(shape[0] * shape[1]).reshape(shape).astype(dtype)
    fits.PrimaryHDU(data, header).writeto(path, overwrite=True)
    return path


def wcs_of(path: Path, hdu: int = 0) -> WCS:
    with fits.open(path) as hdul:
        return WCS(hdul[hdu].header, hdul)


def edge_points(wcs: WCS, n: int = 60) -> SkyCoord:
    """Sky positions densely along the pixel edges of the image."""
    ny, nx = wcs.array_shape
    t = np.linspace(0, 1, n)
    x0, x1, y0, y1 = -0.5, nx - 0.5, -0.5, ny - 0.5
    xs = np.concatenate([x0 + t * (x1 - x0), np.full(n, x1), x1 - t * (x1 - x0), np.full(n, x0)])
    ys = np.concatenate([np.full(n, y0), y0 + t * (y1 - y0), np.full(n, y1), y1 - t * (y1 - y0)])
    return wcs.pixel_to_world(xs, ys)


def reference_match(wcs: WCS, ra: float, dec: float, radius: float) -> tuple[bool, float]:
    """Whether the image contains (ra, dec) or comes within `radius` degrees of it, by
    astropy alone, and the position's distance from the image edge (degrees)."""
    match, to_edge = reference_matches(wcs, np.array([ra]), np.array([dec]), np.array([radius]))
    return bool(match[0]), float(to_edge[0])


def reference_matches(
    wcs: WCS, ra: np.ndarray, dec: np.ndarray, radius: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For many positions: the image's WCS maps the position inside its pixel bounds, or
    the position is within `radius` of a dense sampling of its edge; and that distance."""
    x, y = wcs.world_to_pixel_values(ra, dec)
    ny, nx = wcs.array_shape
    with np.errstate(invalid="ignore"):  # positions the projection cannot reach are NaN
        inside = (x >= -0.5) & (x <= nx - 0.5) & (y >= -0.5) & (y <= ny - 0.5)
    points = SkyCoord(ra * u.deg, dec * u.deg)
    edge = edge_points(wcs)
    to_edge = points[:, None].separation(edge[None, :]).deg.min(axis=1)
    return inside | (to_edge <= radius), to_edge
