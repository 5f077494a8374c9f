"""Reading what the catalog needs of a FITS file: for every image HDU with a celestial
WCS, its footprint on the sky, observation time, instrument keywords and header.

Only headers are read. A local file is opened lazily (astropy reads a header and seeks
past the data); a remote one over HTTP(S) is read through fsspec in small ranged blocks,
so ingesting a 1 GB image costs a few kilobytes of transfer. astropy is imported here
and not at server start (it is an optional dependency and slow to import).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from outcrop.errors import SourceError

if TYPE_CHECKING:
    from astropy.io.fits import HDUList, Header
    from astropy.wcs import WCS

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fz", ".fits.gz", ".fit.gz", ".fts.gz", ".fits.fz")
EDGE_SAMPLES = 4  # outline points per image side: follows SIP distortion closely enough
REMOTE_BLOCK = 2**16  # ranged reads of this many bytes: a header is a few 2880-byte blocks
# Keywords that describe the file's layout, not the observation.
STRUCTURAL = {"SIMPLE", "BITPIX", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT", "GROUPS"}
COMMENTARY = {"COMMENT", "HISTORY", ""}
INSTRUMENT_KEYS = ("INSTRUME",)
FILTER_KEYS = ("FILTER", "FILTNAM1", "FILTNAM", "FILTER1", "FILTER2", "BAND")
TELESCOPE_KEYS = ("TELESCOP",)
EXPOSURE_KEYS = ("EXPTIME", "EXPOSURE", "ITIME", "TELAPSE")
# What astropy raises for a WCS it cannot build (InvalidTransformError etc. are ValueErrors).
WCS_ERRORS = (ValueError, KeyError, TypeError, IndexError, MemoryError)
START_KEYS = ("DATE-BEG", "DATE-OBS", "MJD-BEG", "MJD-OBS")
STOP_KEYS = ("DATE-END", "MJD-END")
# Units an exposure keyword's comment may name, as seconds (DSS plates: `EXPOSURE=60.0 /
# Exposure time in minutes`); a comment naming none means seconds, the FITS standard's.
TIME_UNITS = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1.0),
    **dict.fromkeys(("ms", "msec", "millisec", "millisecond", "milliseconds"), 1e-3),
    **dict.fromkeys(("min", "mins", "minute", "minutes"), 60.0),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600.0),
    **dict.fromkeys(("day", "days"), 86400.0),
}
# Words of a comment; "image's" and "H-alpha" are one word each (no "s", no "h").
WORD = re.compile(r"[A-Za-z]+(?:['-][A-Za-z]+)*")
GONE_STATUS = (404, 410)  # HTTP answers that mean the URL's file is no longer there


class SourceGone(SourceError):
    """The file no longer exists: no such local path, or HTTP 404/410 for a URL."""


@dataclass(frozen=True)
class Footprint:
    """Where an image lies: centre, circumscribed radius (degrees), the four pixel
    corners and an outline of `4 * EDGE_SAMPLES` points around the pixel edges (RA, Dec
    in degrees, in order around the image)."""

    ra: float
    dec: float
    radius: float
    corners: list[tuple[float, float]]
    outline: list[tuple[float, float]]


@dataclass(frozen=True)
class ImageRecord:
    """One image HDU as the catalog stores it."""

    hdu: int
    extname: str
    width: int
    height: int
    footprint: Footprint
    pixel_scale: float  # arcsec per pixel (mean of the two axes)
    start: datetime | None
    stop: datetime | None
    exposure: float | None
    instrument: str
    filter: str
    telescope: str
    header: dict[str, str | int | float | bool] = field(default_factory=dict)


@dataclass(frozen=True)
class Fingerprint:
    """What tells whether a file changed: size and mtime, or a URL's ETag/Last-Modified."""

    size: int
    mtime_ns: int
    etag: str

    def version(self) -> str:
        return f"{self.size}-{self.mtime_ns}-{self.etag}"


def is_remote(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def is_fits_name(name: str) -> bool:
    return name.lower().endswith(FITS_SUFFIXES)


def fingerprint(source: str) -> Fingerprint:
    """The file's fingerprint; SourceGone when it no longer exists (a local path that is
    not there, a URL answering 404 or 410), SourceError when it cannot be reached now."""
    if not is_remote(source):
        try:
            st = Path(source).stat()
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise SourceGone(f"{source}: no such file") from exc
        except OSError as exc:
            raise SourceError(f"{source}: {exc.strerror or exc}") from exc
        return Fingerprint(st.st_size, st.st_mtime_ns, "")
    import fsspec

    try:
        info = fsspec.filesystem("http").info(source)
    except (OSError, ValueError) as exc:  # aiohttp errors surface as OSError subclasses
        # fsspec raises FileNotFoundError for any failure; the HTTP answer is its cause
        cause = exc.__cause__
        status = getattr(cause, "status", None)
        if status in GONE_STATUS:
            raise SourceGone(f"{source}: HTTP {status} (no longer there)") from exc
        if status is not None:
            why = f"HTTP {status} {getattr(cause, 'message', '')}".strip()
        else:
            why = str(cause or exc)
        raise SourceError(f"{source}: {why}") from exc
    tag = str(info.get("ETag") or info.get("Last-Modified") or "")
    return Fingerprint(int(info.get("size") or -1), -1, tag)


def read_images(source: str) -> list[ImageRecord]:
    """Every image HDU of `source` with a celestial WCS.

    Raises SourceError when the file cannot be read as FITS, or holds no image with a
    celestial WCS (the message says which HDUs were seen and why each was left out).
    """
    from astropy.io import fits

    found: list[ImageRecord] = []
    skipped: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # non-standard keywords are common; not fatal
            with _open(source, fits) as hdul:
                primary = hdul[0].header
                for index, hdu in enumerate(hdul):
                    record, why = _image(hdul, index, hdu, primary)
                    if record is not None:
                        found.append(record)
                    elif why:
                        skipped.append(f"HDU {index}: {why}")
    except SourceError:
        raise
    except Exception as exc:  # a broken file raises anything astropy's parser hits
        raise SourceError(f"{source}: not a readable FITS file ({exc})") from exc
    if not found:
        reasons = "; ".join(skipped) or "no image HDU"
        raise SourceError(f"{source}: no image with a celestial WCS ({reasons})")
    return found


def _open(source: str, fits: Any) -> HDUList:
    if is_remote(source):
        kwargs = {"block_size": REMOTE_BLOCK, "cache_type": "readahead"}
        return fits.open(source, use_fsspec=True, lazy_load_hdus=True, fsspec_kwargs=kwargs)
    return fits.open(source, lazy_load_hdus=True, memmap=False)


def _image(hdul: HDUList, index: int, hdu: Any, primary: Header) -> tuple[ImageRecord | None, str]:
    """The record of one HDU, or None and why it is not an image with a celestial WCS
    (empty when it is not an image at all, e.g. a table)."""
    from astropy.io.fits import CompImageHDU, ImageHDU, PrimaryHDU

    if not isinstance(hdu, PrimaryHDU | ImageHDU | CompImageHDU):
        return None, ""
    header = hdu.header
    if int(header.get("NAXIS", 0)) < 2:
        return None, "" if index == 0 else "fewer than 2 axes"
    wcs = _celestial_wcs(header, hdul)
    if wcs is None:
        return None, "no celestial WCS"
    width, height = (int(n) for n in wcs.pixel_shape)
    merged = merge_headers(primary if index else None, header)
    try:
        footprint = footprint_of(wcs, width, height)
    except ValueError as exc:
        return None, str(exc)
    comments = merge_comments(primary if index else None, header, EXPOSURE_KEYS)
    start, stop, exposure = observation_time(merged, comments)
    return (
        ImageRecord(
            hdu=index,
            extname=str(header.get("EXTNAME", "")),
            width=width,
            height=height,
            footprint=footprint,
            pixel_scale=pixel_scale(wcs),
            start=start,
            stop=stop,
            exposure=exposure,
            instrument=_first_text(merged, INSTRUMENT_KEYS),
            filter=_first_text(merged, FILTER_KEYS),
            telescope=_first_text(merged, TELESCOPE_KEYS),
            header=merged,
        ),
        "",
    )


def _celestial_wcs(header: Header, hdul: HDUList) -> WCS | None:
    """The 2-axis celestial part of the header's WCS (SIP and lookup tables included),
    with its pixel shape; None when there is none."""
    from astropy.wcs import WCS

    try:
        full = WCS(header, hdul)
    except WCS_ERRORS:  # e.g. lookup-table distortions in extensions it can't find
        try:
            full = WCS(header)
        except WCS_ERRORS:
            return None
    if not full.has_celestial:
        return None
    wcs = full.celestial
    if wcs.naxis != 2 or wcs.pixel_shape is None or min(wcs.pixel_shape) < 1:
        return None
    return wcs


def footprint_of(wcs: WCS, width: int, height: int) -> Footprint:
    """Footprint of a `width` x `height` image: sky positions of the pixel edges (0-based
    pixel coordinates -0.5 to n-0.5), walked around the image, distortion included."""
    x, y = edge_pixels(width, height)
    ra, dec = equatorial(wcs, x, y)
    if not (np.isfinite(ra).all() and np.isfinite(dec).all()):
        raise ValueError("the WCS does not map every edge of the image to the sky")
    centre = equatorial(wcs, np.array([(width - 1) / 2]), np.array([(height - 1) / 2]))
    cra, cdec = float(centre[0][0]), float(centre[1][0])
    if not (math.isfinite(cra) and math.isfinite(cdec)):
        raise ValueError("the WCS does not map the centre of the image to the sky")
    ra = np.mod(ra, 360.0)
    outline = [(float(a), float(d)) for a, d in zip(ra, dec, strict=True)]
    corners = outline[::EDGE_SAMPLES]
    radius = float(np.max(separation(cra, cdec, ra, dec)))
    return Footprint(cra % 360.0, cdec, radius, corners, outline)


def equatorial(wcs: WCS, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RA, Dec (degrees) of pixels: the WCS's own values when it is equatorial (ICRS or
    FK5 J2000, which differ by under 0.1 arcsec), else converted to ICRS (galactic,
    ecliptic images)."""
    if wcs.wcs.lngtyp == "RA" and wcs.wcs.lattyp == "DEC":
        ra, dec = wcs.pixel_to_world_values(x, y)
        return np.asarray(ra, dtype=float), np.asarray(dec, dtype=float)
    sky = wcs.pixel_to_world(x, y).icrs
    return np.asarray(sky.ra.deg, dtype=float), np.asarray(sky.dec.deg, dtype=float)


def edge_pixels(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates around the image edge, counter-clockwise in pixel space from
    the corner (-0.5, -0.5), EDGE_SAMPLES per side, each side's end left to the next."""
    t = np.arange(EDGE_SAMPLES) / EDGE_SAMPLES
    x0, x1, y0, y1 = -0.5, width - 0.5, -0.5, height - 0.5
    xs = np.concatenate(
        [x0 + t * (x1 - x0), np.full_like(t, x1), x1 - t * (x1 - x0), np.full_like(t, x0)]
    )
    ys = np.concatenate(
        [np.full_like(t, y0), y0 + t * (y1 - y0), np.full_like(t, y1), y1 - t * (y1 - y0)]
    )
    return xs, ys


def separation(ra0: float, dec0: float, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Angular distance in degrees (Vincenty's formula, stable at every distance)."""
    a0, d0, a, d = np.radians(ra0), np.radians(dec0), np.radians(ra), np.radians(dec)
    da = a - a0
    num = np.hypot(
        np.cos(d) * np.sin(da), np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(da)
    )
    den = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(da)
    return np.asarray(np.degrees(np.arctan2(num, den)))


def pixel_scale(wcs: WCS) -> float:
    from astropy.wcs.utils import proj_plane_pixel_scales

    return float(np.mean(proj_plane_pixel_scales(wcs)) * 3600.0)


def merge_headers(primary: Header | None, header: Header) -> dict[str, str | int | float | bool]:
    """The keywords stored for an image: the primary header's (where an extension's
    observation keywords usually are), overridden by the image HDU's own, without the
    structural and commentary cards."""
    merged: dict[str, str | int | float | bool] = {}
    for source in (primary, header):
        if source is None:
            continue
        for key, value in source.items():
            if key in STRUCTURAL or key in COMMENTARY or key.startswith("NAXIS"):
                continue
            if isinstance(value, bool | int | float | str):
                if isinstance(value, float) and not math.isfinite(value):
                    continue
                merged[key] = value.strip() if isinstance(value, str) else value
    return merged


def merge_comments(primary: Header | None, header: Header, keys: tuple[str, ...]) -> dict[str, str]:
    """The comments of `keys`, taken as `merge_headers` takes their values (the image
    HDU's own card over the primary header's)."""
    comments: dict[str, str] = {}
    for source in (primary, header):
        if source is None:
            continue
        for key in keys:
            if key in source:
                comments[key] = str(source.comments[key])
    return comments


def observation_time(
    header: dict[str, str | int | float | bool],
    comments: Mapping[str, str] | None = None,
) -> tuple[datetime | None, datetime | None, float | None]:
    """Start, stop (UTC) and exposure in seconds; stop is start + exposure when the
    header has no end time, and start when it has neither. The exposure keyword's unit
    is read from its comment (`comments`, by keyword) when that names one."""
    exposure = exposure_seconds(header, comments or {})
    start = _first_time(header, START_KEYS)
    stop = _first_time(header, STOP_KEYS)
    if start is not None and stop is None:
        stop = start + timedelta(seconds=max(exposure or 0.0, 0.0))
    return start, stop, exposure


def exposure_seconds(header: Mapping[str, Any], comments: Mapping[str, str]) -> float | None:
    """The first exposure keyword holding a number, in seconds: converted from the unit
    its comment names, if any (see `time_unit`)."""
    for key in EXPOSURE_KEYS:
        value = header.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value) * time_unit(comments.get(key, ""))
    return None


def time_unit(comment: str) -> float:
    """Seconds in the unit a keyword's comment names: the FITS convention's `[unit]` at
    its start, else the first word that is a unit (`Exposure time in minutes`, `(sec)`,
    `hours`, `ms`); 1 (seconds) when it names none."""
    text = comment.strip()
    if text.startswith("["):
        unit = text[1:].partition("]")[0].strip().lower()
        return TIME_UNITS.get(unit, 1.0)
    for word in WORD.findall(text):
        factor = TIME_UNITS.get(word.lower())
        if factor is not None:
            return factor
    return 1.0


def _first_time(header: dict[str, Any], keys: tuple[str, ...]) -> datetime | None:
    for key in keys:
        if key in header:
            found = parse_time(header[key], key, header)
            if found is not None:
                return found
    return None


def parse_time(value: Any, key: str, header: dict[str, Any]) -> datetime | None:
    """A FITS date (ISO 8601, with TIME-OBS/UT for a bare date, the old `dd/mm/yy` form)
    or MJD as a UTC datetime; None when it cannot be read."""
    from astropy.time import Time

    scale = str(header.get("TIMESYS", "utc")).lower()
    scale = scale if scale in Time.SCALES else "utc"
    try:
        if key.startswith("MJD"):
            t = Time(float(value), format="mjd", scale=scale)
        else:
            t = Time(_iso_date(str(value), header), format="isot", scale=scale)
        return t.utc.to_datetime(timezone=UTC)  # type: ignore[no-any-return]
    except (ValueError, TypeError):
        return None


def _iso_date(text: str, header: dict[str, Any]) -> str:
    text = text.strip()
    if len(text) == 8 and text[2] == "/" and text[5] == "/":  # dd/mm/yy: 19yy (FITS 4.4.2.1)
        text = f"19{text[6:8]}-{text[3:5]}-{text[0:2]}"
    if "T" not in text:
        clock = str(header.get("TIME-OBS") or header.get("UT") or header.get("UTSTART") or "")
        text = f"{text}T{clock.strip() or '00:00:00'}"
    return text


def _first_text(header: dict[str, Any], keys: tuple[str, ...]) -> str:
    """The first of `keys` with a value that names something (filter wheels report
    `CLEAR…` for an empty slot)."""
    for key in keys:
        value = header.get(key)
        if value is None or isinstance(value, bool):
            continue
        text = str(value).strip()
        if text and not text.upper().startswith("CLEAR"):
            return text
    return ""


def find_sources(paths: list[str], recursive: bool) -> Iterator[tuple[str, str]]:
    """(source, relative path) of each FITS file named or under a folder named: a file
    given directly is known by its name, one under a folder by its path from there, a URL
    by its host and path."""
    for given in paths:
        if is_remote(given):
            yield given, given.split("://", 1)[1].split("?", 1)[0]
            continue
        path = Path(given)
        if path.is_dir():
            found = path.rglob("*") if recursive else path.iterdir()
            for item in sorted(found):
                if item.is_file() and is_fits_name(item.name) and not item.name.startswith("."):
                    yield str(item.resolve()), item.relative_to(path).as_posix()
        else:
            yield str(path.resolve()), path.name
