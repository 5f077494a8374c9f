"""The position index: HEALPix cells in SQL to find candidates, then an exact test of
each candidate's outline in numpy.

Each image is indexed by the nested HEALPix cells, at a level chosen for its size, that
its circumscribed circle touches (a handful of cells, whatever the image's size). A
search cone is turned, for every level, into the cells it touches at that level — or,
when it is much larger than those cells, into the cells of a coarser level, each of which
is a contiguous range of nested cell numbers at the finer level. So the SQL condition is a
short list of `level = k AND cell BETWEEN lo AND hi` terms, each one index range scan on
the primary key of `image_cells`. HEALPix cells have no seam at RA = 0 and none at the
poles, so neither needs special handling.

The cells only narrow the search; `matches` decides: the position is inside the image's
outline (a spherical polygon), or within `radius` of one of its edges.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from astropy_healpix import HEALPix

MAX_LEVEL = 16  # cells of ~3 arcsec: finer buys nothing for real images
LEVEL0_RESOLUTION = math.degrees(math.sqrt(4 * math.pi / 12))  # ~58.6 degrees


@lru_cache(maxsize=MAX_LEVEL + 1)
def healpix(level: int) -> HEALPix:
    from astropy_healpix import HEALPix

    return HEALPix(nside=2**level, order="nested")


def resolution(level: int) -> float:
    """Typical cell size at `level`, degrees."""
    return math.ldexp(LEVEL0_RESOLUTION, -level)


def level_for(radius: float) -> int:
    """The finest level whose cells are at least twice `radius` (degrees) wide, so a
    circle of that radius touches only a few of them."""
    if radius <= 0:
        return MAX_LEVEL
    level = math.floor(math.log2(LEVEL0_RESOLUTION / (2 * radius)))
    return max(0, min(MAX_LEVEL, level))


def cone_cells(ra: float, dec: float, radius: float, level: int) -> np.ndarray:
    """Nested cells at `level` that a cone touches, even partly (astropy-healpix's cone
    search is inclusive); a zero radius is widened a hair so the cell holding the point
    is always among them."""
    import astropy.units as u

    reach = max(radius, 1e-9)
    cells = healpix(level).cone_search_lonlat(ra * u.deg, dec * u.deg, reach * u.deg)
    return np.unique(np.asarray(cells, dtype=np.int64))


def image_cells(ra: float, dec: float, radius: float) -> tuple[int, np.ndarray]:
    """The level and cells under which an image of this centre and radius is indexed."""
    level = level_for(radius)
    return level, cone_cells(ra, dec, radius, level)


def search_ranges(ra: float, dec: float, radius: float) -> list[tuple[int, int, int]]:
    """(level, first cell, last cell) ranges covering, at every level, the cells a search
    cone touches: an image matching the cone has one of its cells among them."""
    coarse = level_for(radius)
    coarse_cells = cone_cells(ra, dec, radius, coarse)
    ranges: list[tuple[int, int, int]] = []
    for level in range(MAX_LEVEL + 1):
        if level <= coarse:
            cells = cone_cells(ra, dec, radius, level)
            ranges.extend((level, lo, hi) for lo, hi in merge_runs(cells, cells))
        else:
            shift = 2 * (level - coarse)
            lo, hi = coarse_cells << shift, ((coarse_cells + 1) << shift) - 1
            ranges.extend((level, a, b) for a, b in merge_runs(lo, hi))
    return ranges


def merge_runs(lo: np.ndarray, hi: np.ndarray) -> list[tuple[int, int]]:
    """Sorted ranges [lo, hi] with adjacent ones joined."""
    runs: list[tuple[int, int]] = []
    for a, b in zip(lo.tolist(), hi.tolist(), strict=True):
        if runs and a <= runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], max(b, runs[-1][1]))
        else:
            runs.append((a, b))
    return runs


def unit_vectors(ra: Any, dec: Any) -> np.ndarray:
    a, d = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)], axis=-1)


def matches(outlines: np.ndarray, ra: float, dec: float, radius: float) -> np.ndarray:
    """Which images (outlines: n x m x 2 array of RA, Dec in degrees, each walked around
    a convex image edge) contain the position or come within `radius` degrees of it."""
    if len(outlines) == 0:
        return np.zeros(0, dtype=bool)
    v = unit_vectors(outlines[..., 0], outlines[..., 1])  # n, m, 3
    w = np.roll(v, -1, axis=1)  # the next vertex of each edge
    p = unit_vectors(ra, dec)
    normals = np.cross(v, w)  # n, m, 3: each edge's great circle pole
    norms = np.linalg.norm(normals, axis=-1, keepdims=True)
    normals = normals / np.where(norms == 0, 1.0, norms)
    side = normals @ p  # n, m: sine of the distance from each edge's great circle
    # Which side of its edges the image is on (the outline may run either way round);
    # testing both sides blindly would also match the antipodal polygon.
    centre = v.sum(axis=1)  # n, 3
    facing = np.sign(np.einsum("nmk,nk->nm", normals, centre))
    inside = (side * facing >= 0).all(axis=1)
    if radius <= 0:
        return np.asarray(inside)
    return np.asarray(inside | (edge_distance(v, w, normals, side, p) <= math.radians(radius)))


def edge_distance(
    v: np.ndarray, w: np.ndarray, normals: np.ndarray, side: np.ndarray, p: np.ndarray
) -> np.ndarray:
    """Smallest angular distance (radians) from p to each outline's edges (great-circle
    arcs v → w): to the arc itself where p's foot on the circle falls between its ends,
    else to the nearer end."""
    foot = p - side[..., None] * normals
    within = (np.einsum("nmk,nmk->nm", np.cross(v, foot), normals) >= 0) & (
        np.einsum("nmk,nmk->nm", np.cross(foot, w), normals) >= 0
    )
    to_arc = np.arcsin(np.clip(np.abs(side), 0.0, 1.0))
    to_ends = np.minimum(_angle(v, p), _angle(w, p))
    return np.asarray(np.where(within, to_arc, to_ends).min(axis=1))


def _angle(a: np.ndarray, p: np.ndarray) -> np.ndarray:
    cross = np.linalg.norm(np.cross(a, p), axis=-1)
    return np.asarray(np.arctan2(cross, a @ p))
