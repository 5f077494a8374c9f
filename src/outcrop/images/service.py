"""`ImageService`: what the image routes, pages and the ingest command call — ingest,
search, summary, metadata and cutouts (cached on disk by image version and parameters)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from sqlalchemy.engine import Engine

from outcrop.db import ImageRow
from outcrop.errors import BadQuery, SourceError, TooLarge
from outcrop.images.ingest import find_sources, fingerprint, is_remote, read_images
from outcrop.images.search import ImageQuery
from outcrop.images.store import ImageStore, SavedFile, check_collection
from outcrop.log import logger
from outcrop.settings import Settings

if TYPE_CHECKING:
    from outcrop.cache import DiskStore

log = logger(__name__)
FORMATS = {"fits": "application/fits", "png": "image/png", "jpeg": "image/jpeg"}
EXTENSIONS = {"fits": "fits", "png": "png", "jpeg": "jpg"}
FORMAT_ALIASES = {"jpg": "jpeg", "fit": "fits"}
TRUE, FALSE = {"true", "1", "yes"}, {"false", "0", "no", ""}


@dataclass(frozen=True)
class CutoutRequest:
    """A cutout's parameters, normalised (so equal requests share a cache entry)."""

    ra: float
    dec: float
    size: float  # degrees
    format: str = "fits"
    align: bool = False
    stretch: str = "linear"
    interval: str = "zscale"
    hdu: int | str | None = None

    def key(self) -> str:
        hdu = "" if self.hdu is None else str(self.hdu)
        picture = "" if self.format == "fits" else f"{self.stretch},{self.interval},{self.align}"
        return f"{self.ra!r},{self.dec!r},{self.size!r},{self.format},{hdu},{picture}"


@dataclass(frozen=True)
class CutoutResult:
    body: bytes
    media_type: str
    etag: str
    filename: str  # `<image>_<ra>_<dec>_<size>.<ext>`


def parse_flag(text: str | None, name: str) -> bool:
    value = (text or "").strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise BadQuery(f"{name} must be true or false, not {text!r}", parameter=name)


def parse_format(text: str | None) -> str:
    fmt = (text or "fits").strip().lower()
    fmt = FORMAT_ALIASES.get(fmt, fmt)
    if fmt not in FORMATS:
        raise BadQuery(
            f"format must be one of {', '.join(FORMATS)}, not {text!r}", parameter="format"
        )
    return fmt


def parse_hdu(text: str | None) -> int | str | None:
    if text is None or not text.strip():
        return None
    text = text.strip()
    return int(text) if text.isdigit() else text


class ImageService:
    """The image collections of one catalog database."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.store = ImageStore(engine)
        self._cache: DiskStore | None = None

    # -- ingest ------------------------------------------------------------------------
    def ingest(
        self,
        collection: str,
        paths: list[str],
        *,
        recursive: bool = False,
        base_url: str | None = None,
        progress: Callable[[SavedFile, int, int], None] | None = None,
    ) -> list[SavedFile]:
        """Ingest the FITS files named or under the folders named; one file failing does
        not stop the others. `progress(result, done, total)` after each file."""
        check_collection(collection)
        sources = list(find_sources(paths, recursive))
        results = []
        for done, (source, path) in enumerate(sources, start=1):
            result = self.ingest_file(collection, source, path, public_url(source, path, base_url))
            results.append(result)
            if progress is not None:
                progress(result, done, len(sources))
        return results

    def ingest_file(self, collection: str, source: str, path: str, url: str) -> SavedFile:
        try:
            print_ = fingerprint(source)
        except SourceError as exc:
            return SavedFile(source, "failed", error=exc.message)
        if self.store.unchanged(collection, source, print_):
            return SavedFile(source, "unchanged")
        try:
            records = read_images(source)
            self.store.save(collection, source, path, url, print_, records)
        except (SourceError, BadQuery) as exc:
            self.store.save_error(collection, source, print_, exc.message)
            log.info("image_ingest_failed", source=source, error=exc.message)
            return SavedFile(source, "failed", error=exc.message)
        return SavedFile(source, "ingested", images=len(records))

    # -- queries -----------------------------------------------------------------------
    def query(self, query: ImageQuery) -> tuple[list[ImageRow], int]:
        return self.store.search(query)

    def summary(self, collection: str | None = None) -> list[dict[str, Any]]:
        return self.store.summary(collection)

    def get(self, image_id: str) -> ImageRow:
        return self.store.get(image_id)

    # -- cutouts -----------------------------------------------------------------------
    def cutout(self, image_id: str, request: CutoutRequest) -> CutoutResult:
        """The cutout's bytes, from the disk cache when the same image version was cut the
        same way before."""
        row = self.store.get(image_id)
        etag = cutout_etag(row.version, request)
        result = CutoutResult(b"", FORMATS[request.format], etag, cutout_filename(row, request))
        cache = self.cache()
        key = f"{row.id}@{row.version}?{request.key()}"
        cached = cache.get(key) if cache is not None else None
        if cached is not None:
            return CutoutResult(cached, result.media_type, etag, result.filename)
        body = self._make(row, request)
        if cache is not None:
            cache.set(key, body)
        return CutoutResult(body, result.media_type, etag, result.filename)

    def _make(self, row: ImageRow, request: CutoutRequest) -> bytes:
        from outcrop.formats.fits import encode_fits, make_cutout

        hdu = row.hdu if request.hdu is None else request.hdu
        try:
            cut = make_cutout(
                row.source,
                hdu,
                request.ra,
                request.dec,
                request.size,
                max_pixels=self.settings.cutout_max_pixels,
                name=row.id,
            )
        except TooLarge as exc:  # a size the caller chose: a bad request (400), not 413
            raise BadQuery(exc.message, parameter="size") from exc
        if request.format == "fits":
            return encode_fits(cut)
        from outcrop.formats.skyimage import encode_picture

        return encode_picture(
            cut,
            request.format,
            stretch=request.stretch,
            interval=request.interval,
            align=request.align,
        )

    def cache(self) -> DiskStore | None:
        """The cutout cache under data_dir/cutouts; None when its budget is 0."""
        if self.settings.image_cache_mb <= 0:
            return None
        if self._cache is None:
            from outcrop.cache import DiskStore

            directory = self.settings.data_dir / "cutouts"
            self._cache = DiskStore(directory, self.settings.image_cache_mb * 2**20)
        return self._cache

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()


def shared_service(state: Any) -> ImageService:
    """The server's ImageService (kept on the app's `state`), made on first use over the
    catalog's database."""
    service: ImageService | None = getattr(state, "images", None)
    if service is None:
        service = ImageService(state.settings, state.pipeline.catalog.engine)
        state.images = service
    return service


def summarise(groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per collection: images, instruments and filters with their counts, time range."""
    out: dict[str, dict[str, Any]] = {}
    for g in groups:
        entry = out.setdefault(
            g["collection"],
            {"images": 0, "instruments": {}, "filters": {}, "start": None, "stop": None},
        )
        entry["images"] += g["images"]
        for kind, name in (("instruments", g["instrument"]), ("filters", g["filter"])):
            entry[kind][name] = entry[kind].get(name, 0) + g["images"]
        if g["start"] is not None and (entry["start"] is None or g["start"] < entry["start"]):
            entry["start"] = g["start"]
        if g["stop"] is not None and (entry["stop"] is None or g["stop"] > entry["stop"]):
            entry["stop"] = g["stop"]
    return out


def parse_cutout_request(params: Mapping[str, str]) -> CutoutRequest | None:
    """The cutout asked for by `ra`, `dec`, `size` and the rest; None when there is none."""
    from outcrop.formats.fits import parse_cutout

    position = parse_cutout(params.get("ra"), params.get("dec"), params.get("size"))
    picture_only = ("format", "align", "stretch", "interval", "hdu", "download")
    if position is None:
        given = [name for name in picture_only if name in params]
        if given:
            raise BadQuery(
                f"{given[0]} applies to a cutout: give ra, dec and size too", parameter=given[0]
            )
        return None
    ra, dec, size = position
    fmt = parse_format(params.get("format"))
    request = CutoutRequest(
        ra=ra % 360.0,
        dec=dec,
        size=size,
        format=fmt,
        align=parse_flag(params.get("align"), "align"),
        stretch=(params.get("stretch") or "linear").strip().lower(),
        interval=(params.get("interval") or "zscale").strip().lower(),
        hdu=parse_hdu(params.get("hdu")),
    )
    check_picture_options(request)
    return request


def check_picture_options(request: CutoutRequest) -> None:
    """BadQuery for an unknown stretch or interval, before any pixel is read."""
    if request.format != "fits":
        from outcrop.formats.skyimage import check_picture

        check_picture(request.format, request.stretch, request.interval)


def cutout_etag(version: str, request: CutoutRequest) -> str:
    digest = hashlib.sha256(f"{version}?{request.key()}".encode()).hexdigest()[:24]
    return f'"{digest}"'


def cutout_filename(row: ImageRow, request: CutoutRequest) -> str:
    """`<image>_<ra>_<dec>_<size>.<ext>` (SBNSIS's form): the image's file name without
    its FITS suffixes (and its HDU when the file has several), degrees to 5 decimals
    (about 0.04 arcsec), the size in arcmin."""
    stem = row.path.rsplit("/", 1)[-1]
    for suffix in (".gz", ".fz", ".fits", ".fit", ".fts"):
        stem = stem.removesuffix(suffix).removesuffix(suffix.upper())
    if row.id.endswith(f":{row.hdu}") and row.id != f"{row.collection}:{row.path}":
        stem = f"{stem}_{row.hdu}"
    stem = "".join(c if c.isalnum() or c in "-." else "_" for c in stem)
    size = f"{request.size * 60:.4g}arcmin"
    return f"{stem}_{request.ra:.5f}_{request.dec:+.5f}_{size}.{EXTENSIONS[request.format]}"


def public_url(source: str, path: str, base_url: str | None) -> str:
    """The URL people download the original from: `base_url` + the relative path, or
    the source itself when it is a URL."""
    if base_url:
        return base_url.rstrip("/") + "/" + quote(path)
    return source if is_remote(source) else ""


def describe(row: ImageRow, base: str) -> dict[str, Any]:
    """An image's metadata as the API shows it."""
    link = f"{base}api/images/{quote(row.id, safe=':/')}"
    return {
        "id": row.id,
        "collection": row.collection,
        "path": row.path,
        "hdu": row.hdu,
        "extname": row.extname,
        "width": row.width,
        "height": row.height,
        "ra": row.ra,
        "dec": row.dec,
        "radius": row.radius,
        "corners": row.corners,
        "pixel_scale": row.pixel_scale,
        "start": _iso(row.start),
        "stop": _iso(row.stop),
        "exposure": row.exposure,
        "instrument": row.instrument,
        "filter": row.filter,
        "telescope": row.telescope,
        "version": row.version,
        "url": link,
        "download": row.url or None,
        "cutout": f"{link}?ra={row.ra:.6f}&dec={row.dec:.6f}&size=1arcmin&format=fits",
    }


def _iso(when: datetime | None) -> str | None:
    if when is None:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).isoformat()


def ingest_status(results: Iterable[SavedFile]) -> int:
    """The exit status of an ingest: 1 when nothing was found or every file failed."""
    statuses = [r.status for r in results]
    if not statuses or all(s == "failed" for s in statuses):
        return 1
    return 0


__all__ = [
    "CutoutRequest",
    "CutoutResult",
    "ImageService",
    "describe",
    "ingest_status",
    "parse_cutout_request",
    "shared_service",
    "summarise",
]
