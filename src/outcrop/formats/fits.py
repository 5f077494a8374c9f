"""FITS cutouts: the SBN Survey Image Service's `ra`/`dec`/`size` parameters, the cutout
of one image HDU around a position, and its encoding as a FITS file.

Only the pixels a cutout needs are read: a local file is memory-mapped and read through
`hdu.section` (which also decodes BZERO/BSCALE and tile compression for just those rows
and tiles), and an http(s) URL is opened with fsspec, whose ranged requests fetch only
the header blocks and the rows asked for. A whole-file gzip (`.fits.gz`) cannot be
seeked: astropy decompresses it from the start up to the last row needed, so such a
cutout costs about as much as reading the image.

Choices:
- `ra` is accepted in [-180, 360] and normalised to [0, 360); `dec` must be in [-90, 90];
  `size` must carry a unit (`arcsec`, `arcmin`, `deg`, `rad`), as SBNSIS requires.
- The cutout is centred like `astropy.nddata.Cutout2D` (same rounding), and has the same
  pixels, so a client can compare the two; its side in pixels is the size divided by the
  image's pixel scale along that axis.
- The position must fall on the image; a cutout reaching past an edge is padded: with
  NaN for float images, and for integer images by converting the cutout to float (32-bit
  for integers up to 16 bits, 64-bit beyond, both exact) so that "no data" stays NaN
  rather than a BLANK value a viewer may not honour. The header then says `CUTPAD = T`.
  (An integer image with a BLANK keyword is read as floats with NaN anyway: astropy does
  so, and the cutout keeps it.)
"""

from __future__ import annotations

import datetime as dt
import math
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata.utils import NoOverlapError, overlap_slices
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS, NoConvergence, Sip
from astropy.wcs.utils import proj_plane_pixel_scales, skycoord_to_pixel

from outcrop.errors import BadQuery, SourceError, TooLarge
from outcrop.http import package_version

SIZE_UNITS: dict[str, float] = {
    "arcsec": 1 / 3600,
    "arcmin": 1 / 60,
    "deg": 1.0,
    "rad": math.degrees(1.0),
}
ROW_SPAN = 32 << 20  # bytes of whole rows read at once rather than a piece of each row
SIZE_PATTERN = re.compile(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([a-z]*)\s*")

# Keywords that describe the HDU's layout or the old pixel grid: not carried to a cutout.
STRUCTURAL = re.compile(
    r"(SIMPLE|XTENSION|BITPIX|NAXIS\d*|EXTEND|PCOUNT|GCOUNT|GROUPS|BSCALE|BZERO|BLANK"
    r"|CHECKSUM|DATASUM|EXTNAME|EXTVER|EXTLEVEL|INHERIT|Z[A-Z0-9_]*)"
)
# WCS keywords, primary and alternate (a trailing letter): replaced by the cutout's WCS.
# DSS plate solutions too: wcslib reads them as a polynomial distortion, and a header
# holding both them and that distortion crashes astropy 8 (a heap corruption in wcslib).
WCS_KEYS = re.compile(
    r"(WCSAXES|CTYPE\d|CRPIX\d|CRVAL\d|CDELT\d|CUNIT\d|CROTA\d|CRDER\d|CSYER\d|CD\d_\d"
    r"|PC\d_\d|PV\d_\d+|PS\d_\d+|LONPOLE|LATPOLE|RADESYS|RADECSYS|WCSNAME|CNAME\d"
    r"|[AB]P?_ORDER|[AB]P?_\d_\d|[AB]_DMAX|CPDIS\d|CQDIS\d|DP\d|DQ\d|CPERR\d|CQERR\d"
    r"|D2IMDIS\d|D2IMERR\d|D2IMEXT|D2IM\d|AMD[XY]\d+|PLTRA[HMS]|PLTDEC(SN|[DMS])"
    r"|CNPIX\d|PPO\d|[XY]PIXELSZ)[A-Z]?"
    # record-valued cards of lookup-table distortions (`DP1.EXTVER`, `D2IM2.AXIS.1`): kept
    # without their CPDISja/D2IMDISa, they make the header one astropy cannot read
    r"|(DP|DQ|D2IM)\d[A-Z]?\..*"
)
MAX_PIXELS_SETTING = "setting cutout_max_pixels, environment OUTCROP_CUTOUT_MAX_PIXELS"


@dataclass
class Cutout:
    """A cutout's values (FITS row order: row 0 is the bottom), its header and whether it
    was padded past the image's edge."""

    data: np.ndarray
    header: fits.Header
    padded: bool


# -- parameters ---------------------------------------------------------------------------
def parse_size(text: str) -> float:
    """Degrees from "5arcmin", "30 arcsec", "0.1deg", "0.001rad"; the unit is required."""
    units = ", ".join(SIZE_UNITS)
    m = SIZE_PATTERN.fullmatch(text)
    if m is None or m.group(2) not in SIZE_UNITS:
        raise BadQuery(
            f"size {text!r} is not a number followed by a unit; units: {units} (e.g. size=5arcmin)",
            parameter="size",
        )
    value = float(m.group(1)) * SIZE_UNITS[m.group(2)]
    if not (math.isfinite(value) and value > 0):
        raise BadQuery(f"size {text!r} must be greater than 0", parameter="size")
    return value


def parse_cutout(
    ra: str | None, dec: str | None, size: str | None
) -> tuple[float, float, float] | None:
    """(ra, dec, size) in degrees, or None when none is given; ra, dec and size come
    together (SBNSIS). ra in [-180, 360] is normalised to [0, 360)."""
    given = {"ra": ra, "dec": dec, "size": size}
    missing = [k for k, v in given.items() if v is None]
    if len(missing) == 3:
        return None
    if missing:
        raise BadQuery(
            f"ra, dec and size must be given together; missing: {', '.join(missing)}",
            parameter=missing[0],
        )
    assert ra is not None and dec is not None and size is not None
    lon = parse_degrees(ra, "ra", -180.0, 360.0) % 360.0
    lat = parse_degrees(dec, "dec", -90.0, 90.0)
    return lon, lat, parse_size(size)


def parse_degrees(text: str, name: str, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and low <= value <= high):
        raise BadQuery(
            f"{name} {text!r} must be a number of degrees in [{low:g}, {high:g}]", parameter=name
        )
    return value


# -- the cutout ---------------------------------------------------------------------------
def make_cutout(
    source: str,
    hdu: int | str | None,
    ra: float,
    dec: float,
    size_deg: float,
    *,
    max_pixels: int,
    name: str,
) -> Cutout:
    """The cutout of `size_deg` on a side centred on (ra, dec) from one image HDU.

    Args:
        source: a local path or an http(s) URL.
        hdu: the HDU's index, its EXTNAME ("SCI"), EXTNAME and EXTVER ("SCI,2"), an index
            as text ("1"), or None for the first 2-D image HDU with a celestial WCS.
        max_pixels: the longest side allowed, in pixels (TooLarge beyond).
        name: the image's public name, written in the header (never a server path).
    """
    with open_fits(source) as hdul:
        index, image, wcs = pick_hdu(hdul, hdu, name)
        if wcs is None:
            raise BadQuery(f"HDU {index} of {name} has no celestial WCS", parameter="hdu")
        shape = cutout_shape(wcs, size_deg, max_pixels, name)
        position = pixel_of(wcs, ra, dec)
        big, small = locate(image.section.shape, shape, position, wcs, (ra, dec), name)
        padded = any(s.start != 0 or s.stop != n for s, n in zip(small, shape, strict=True))
        data = read_pixels(image, big, small, shape, padded)
        origin = (big[1].start - small[1].start, big[0].start - small[0].start)  # (x, y)
        header = cutout_header(hdul, image, shifted(wcs, origin))
        hdu_label = label_of(image, index)
        dropped = table_distortion(wcs, big)
    provenance(header, name, hdu_label, (ra, dec, size_deg), origin, shape, padded)
    if dropped is not None:
        say_tables_dropped(header, dropped)
    return Cutout(data, header, padded)


def open_fits(source: str) -> fits.HDUList:
    """The file, memory-mapped, or the URL through fsspec's ranged reads; HDUs parsed as
    they are reached, so a cutout from the first extension never reads the others."""
    remote = source.startswith(("http://", "https://"))
    try:
        if remote:
            opts = {"block_size": 1 << 16, "cache_type": "bytes"}
            return fits.open(source, use_fsspec=True, fsspec_kwargs=opts, lazy_load_hdus=True)
        # memmap left at its default: mapped, yet scaled data allowed (memmap=True refuses it)
        return fits.open(source, lazy_load_hdus=True)
    except (OSError, ValueError) as exc:
        raise SourceError(f"cannot read {source!r} as FITS: {exc}") from exc


def pick_hdu(hdul: fits.HDUList, hdu: int | str | None, name: str) -> tuple[int, Any, WCS | None]:
    """(index, HDU, its celestial WCS or None): the HDU asked for, which must be a 2-D
    image, or the first such HDU with a celestial WCS."""
    if hdu is None:
        for index, candidate in enumerate(hdul):
            wcs = celestial_wcs(candidate.header, hdul) if is_2d_image(candidate) else None
            if wcs is not None:
                return index, candidate, wcs
        raise BadQuery(f"{name} has no 2-D image HDU with a celestial WCS", parameter="hdu")
    key = hdu_key(hdu)
    try:
        index = hdul.index_of(key)
        image = hdul[index]
    except (KeyError, IndexError) as exc:
        names = ", ".join(label_of(h, i) for i, h in enumerate(hdul))
        raise BadQuery(f"{name} has no HDU {hdu!r}; its HDUs: {names}", parameter="hdu") from exc
    if not is_2d_image(image):
        raise BadQuery(f"HDU {hdu!r} of {name} is not a 2-D image", parameter="hdu")
    return index, image, celestial_wcs(image.header, hdul)


def hdu_key(hdu: int | str) -> int | str | tuple[str, int]:
    """An index, "NAME" or "NAME,VER" as astropy's `HDUList.index_of` takes them."""
    if isinstance(hdu, int):
        return hdu
    text = hdu.strip()
    if text.isdigit():
        return int(text)
    label, _, ver = text.partition(",")
    if ver.strip().isdigit():
        return label.strip(), int(ver)
    return text


def is_2d_image(hdu: Any) -> bool:
    return bool(getattr(hdu, "is_image", False)) and hdu.header.get("NAXIS") == 2


def label_of(hdu: Any, index: int) -> str:
    """ "1 (SCI,1)": the index and, where the HDU has one, its name and version."""
    extname = hdu.header.get("EXTNAME")
    if not extname:
        return str(index)
    return f"{index} ({extname},{hdu.header.get('EXTVER', 1)})"


def celestial_wcs(header: fits.Header, hdul: fits.HDUList) -> WCS | None:
    """The header's celestial WCS (SIP and lookup-table distortions included), or None."""
    with quiet():
        try:
            wcs = WCS(header, fobj=hdul)
        except (ValueError, KeyError, MemoryError) as exc:
            raise SourceError(f"unreadable WCS: {exc}") from exc
    if not wcs.has_celestial or wcs.naxis != 2:
        return None
    return wcs


def cutout_shape(wcs: WCS, size_deg: float, max_pixels: int, name: str) -> tuple[int, int]:
    """(ny, nx): the size over the pixel scale of each axis, rounded as Cutout2D does;
    TooLarge (parameter `size`) naming the size asked for, in pixels, the limit and its
    setting, beyond `max_pixels` on a side."""
    scales = proj_plane_pixel_scales(wcs) * u.Unit(wcs.wcs.cunit[0]).to(u.deg)
    nx, ny = (max(1, int(np.round(size_deg / s))) for s in scales)
    if max(nx, ny) > max_pixels:
        finest = float(np.min(scales))
        most = max_pixels * finest * (1 - 1e-4)  # shown rounded: not past the limit
        raise TooLarge(
            f"size={angle_text(size_deg)} is {nx} x {ny} pixels of {name} ({finest * 3600:.4g} "
            f"arcsec per pixel), over the limit of {max_pixels} pixels on a side "
            f"({MAX_PIXELS_SETTING}): ask for size={angle_text(most)} or less",
            size=max(nx, ny),
            limit=max_pixels,
            parameter="size",
        )
    return ny, nx


def angle_text(degrees: float) -> str:
    """An angle as `size` takes it, in the largest unit that keeps it at least 1."""
    if degrees >= 1:
        return f"{degrees:.4g}deg"
    if degrees * 60 >= 1:
        return f"{degrees * 60:.4g}arcmin"
    return f"{degrees * 3600:.4g}arcsec"


def pixel_of(wcs: WCS, ra: float, dec: float) -> tuple[float, float]:
    """(x, y), 0-based, of an ICRS position (converted to the image's frame), distortions
    included; NaN where the projection does not reach it."""
    position = SkyCoord(ra * u.deg, dec * u.deg, frame="icrs")
    try:
        x, y = skycoord_to_pixel(position, wcs, mode="all")
    except NoConvergence:
        return math.nan, math.nan
    return float(x), float(y)


def locate(
    full: tuple[int, ...],
    shape: tuple[int, int],
    position: tuple[float, float],
    wcs: WCS,
    radec: tuple[float, float],
    name: str,
) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """(slices of the image, slices of the cutout) that overlap; BadQuery naming the
    image's footprint when the position is not on the image."""
    x, y = position
    inside = -0.5 <= x < full[1] - 0.5 and -0.5 <= y < full[0] - 0.5
    try:
        if not inside:
            raise NoOverlapError
        big, small = overlap_slices(full, shape, (y, x), mode="partial")
    except (NoOverlapError, ValueError) as exc:
        corners = wcs.calc_footprint(axes=(full[1], full[0]))
        shown = ", ".join(f"({c[0]:.5f}, {c[1]:.5f})" for c in corners)
        raise BadQuery(
            f"ra={radec[0]:g}, dec={radec[1]:g} is outside {name}, whose corners are at "
            f"(ra, dec) {shown}",
            parameter="ra",
        ) from exc
    return big, small


def read_pixels(
    image: Any,
    big: tuple[slice, slice],
    small: tuple[slice, slice],
    shape: tuple[int, int],
    padded: bool,
) -> np.ndarray:
    """The overlap read through `section` (scaled to physical values), placed in a cutout
    of NaN when padded.

    Whole rows are read in one span when that span is at most ROW_SPAN bytes: one read
    (one ranged request for a URL) instead of one per row, which astropy makes for a
    piece of each row, several times faster for the usual cutout of a few hundred rows.
    """
    rows = big[0].stop - big[0].start
    span = rows * image.section.shape[1] * abs(image.header["BITPIX"]) // 8
    if span <= ROW_SPAN and not isinstance(image, fits.CompImageHDU):
        # contiguous: astropy writes any other array to a BytesIO one value at a time
        values = np.ascontiguousarray(image.section[big[0], :][:, big[1]])
    else:  # tile-compressed: astropy decompresses only the tiles the box touches
        values = np.asarray(image.section[big])
    if not padded:
        return values
    if values.dtype.kind in "iu":  # exact as floats: up to 16 bits in 32, beyond in 64
        values = values.astype(np.float64 if values.dtype.itemsize > 2 else np.float32)
    out = np.full(shape, np.nan, dtype=values.dtype)
    out[small] = values
    return out


def shifted(wcs: WCS, origin: tuple[int, int]) -> WCS:
    """The WCS of a cutout whose pixel (0, 0) is the image's pixel `origin` (x, y), SIP
    reference pixel included (as Cutout2D does)."""
    out = wcs.deepcopy()
    offset = np.asarray(origin, dtype=float)
    out.wcs.crpix = out.wcs.crpix - offset
    if wcs.sip is not None:
        sip = wcs.sip
        out.sip = Sip(sip.a, sip.b, sip.ap, sip.bp, sip.crpix - offset)
    return out


def table_distortion(wcs: WCS, big: tuple[slice, slice]) -> float | None:
    """The largest shift, in pixels, that the WCS's lookup-table distortions (CPDIS, D2IM:
    HST's NPOL and detector tables) make over the part of the image cut; None without
    any. A cutout's header does not carry them (they live in extra HDUs), so this is how
    far its WCS can be from the source's. Measured on a grid of up to 33 x 33 points."""
    if all(t is None for t in (wcs.cpdis1, wcs.cpdis2, wcs.det2im1, wcs.det2im2)):
        return None
    plain = wcs.deepcopy()
    plain.cpdis1 = plain.cpdis2 = plain.det2im1 = plain.det2im2 = None
    ys = np.unique(np.linspace(big[0].start, big[0].stop - 1, 33).round())
    xs = np.unique(np.linspace(big[1].start, big[1].stop - 1, 33).round())
    gx, gy = np.meshgrid(xs, ys)
    points = np.column_stack([gx.ravel(), gy.ravel()])
    shift = wcs.pix2foc(points, 0) - plain.pix2foc(points, 0)
    return float(np.hypot(shift[:, 0], shift[:, 1]).max())


# -- the header ---------------------------------------------------------------------------
def cutout_header(hdul: fits.HDUList, image: Any, wcs: WCS) -> fits.Header:
    """The image's header, preceded by the primary header's keywords when the image is an
    extension (INHERIT-style), minus layout and old WCS keywords, plus the new WCS."""
    with quiet():  # astropy fixes non-standard cards as it reads them, and says so
        return merged_header(hdul, image, wcs)


def merged_header(hdul: fits.HDUList, image: Any, wcs: WCS) -> fits.Header:
    header = fits.Header()
    sources = [image.header]
    if image is not hdul[0] and hdul[0].header.get("NAXIS", 0) == 0:
        sources.insert(0, hdul[0].header)
    seen: set[tuple[str, str]] = set()  # commentary cards both headers hold, kept once
    for source in sources:
        for card in source.cards:
            if STRUCTURAL.fullmatch(card.keyword) or WCS_KEYS.fullmatch(card.keyword):
                continue
            if card.keyword in ("", "COMMENT", "HISTORY"):
                if card.value != "" and (card.keyword, str(card.value)) not in seen:
                    seen.add((card.keyword, str(card.value)))
                    header.append((card.keyword, card.value), bottom=True)
            else:
                header[card.keyword] = (card.value, card.comment)
    for card in wcs.to_header(relax=True).cards:
        if card.keyword not in header or WCS_KEYS.fullmatch(card.keyword):
            header.append(card)
    return header


def provenance(
    header: fits.Header,
    name: str,
    hdu: str,
    request: tuple[float, float, float],
    origin: tuple[int, int],
    shape: tuple[int, int],
    padded: bool,
) -> None:
    """Where the cutout comes from, in keywords a script can read and HISTORY a person
    can; DATE becomes this file's creation date."""
    ra, dec, size = request
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    made_by = f"Outcrop {package_version()}"
    if "ORIGIN" in header:
        header.add_history(f"Original ORIGIN: {header['ORIGIN']}")
    header["ORIGIN"] = (made_by, "software that made this cutout")
    header["DATE"] = (now, "UTC date this cutout was made")
    header["CUTSRC"] = (name, "image the cutout was made from")
    header["CUTHDU"] = (hdu, "HDU of that image (0-based index, name)")
    header["CUTRA"] = (ra, "[deg] requested centre, right ascension (ICRS)")
    header["CUTDEC"] = (dec, "[deg] requested centre, declination (ICRS)")
    header["CUTSIZE"] = (size, "[deg] requested size")
    header["CUTX0"] = (origin[0] + 1, "image pixel (1-based) of the cutout's column 1")
    header["CUTY0"] = (origin[1] + 1, "image pixel (1-based) of the cutout's row 1")
    header["CUTPAD"] = (padded, "T: reaches past the image edge; NaN there")
    x1, y1 = origin[0] + shape[1], origin[1] + shape[0]
    header.add_history(
        f"{now} cutout by {made_by} of {name} HDU {hdu}: ra {ra:.6f} dec {dec:.6f} "
        f"size {size * 60:.4g} arcmin, pixels [{origin[0] + 1}:{x1}, {origin[1] + 1}:{y1}]"
    )
    if padded:
        header.add_history("Pixels beyond the image's edge are NaN (CUTPAD = T).")


def say_tables_dropped(header: fits.Header, shift: float) -> None:
    """Say in the header that the source's lookup-table distortions were left out, and
    how far that moves positions in this cutout."""
    header["CUTLUT"] = (round(shift, 4), "[pixel] max lookup-table distortion left out")
    header.add_history(
        "The source's lookup-table distortions (CPDIS/D2IM) are not in this header; its "
        f"WCS (SIP kept) differs from the source's by up to {shift:.3g} pixel (CUTLUT)."
    )


@contextmanager
def quiet() -> Iterator[None]:
    """Without astropy's warnings about headers it repaired: they would fill the server's
    log once per request, and say nothing the user can act on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        yield


# -- encoding -----------------------------------------------------------------------------
def encode_fits(cutout: Cutout) -> bytes:
    """A one-HDU FITS file; astropy writes unsigned integers with BZERO again."""
    hdu = fits.PrimaryHDU(data=cutout.data, header=cutout.header)
    buffer = BytesIO()
    hdu.writeto(buffer, output_verify="silentfix+ignore", checksum=True)
    return buffer.getvalue()
