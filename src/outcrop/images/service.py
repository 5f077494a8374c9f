"""`ImageService`: what the image routes, pages and the ingest command call — ingest,
search, summary, metadata and cutouts (cached on disk by image version and parameters)."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from outcrop.errors import BadQuery, SourceError, TooLarge
from outcrop.images.ingest import (
    SourceGone,
    find_sources,
    fingerprint,
    is_remote,
    read_images,
)
from outcrop.images.search import ImageQuery
from outcrop.log import logger
from outcrop.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from outcrop.cache import DiskStore
    from outcrop.db import ImageRow
    from outcrop.images.store import ImageStore

log = logger(__name__)
FORMATS = {"fits": "application/fits", "png": "image/png", "jpeg": "image/jpeg"}
EXTENSIONS = {"fits": "fits", "png": "png", "jpeg": "jpg"}
FORMAT_ALIASES = {"jpg": "jpeg", "fit": "fits"}
TRUE, FALSE = {"true", "1", "yes"}, {"false", "0", "no", ""}
COLLECTION_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@dataclass(frozen=True)
class SavedFile:
    """What ingest did with a file: `status` is "ingested", "unchanged", "failed" or
    "removed" (the file is gone; `images` is then how many of its images went)."""

    source: str
    status: str
    images: int = 0
    error: str = ""


def check_collection(name: str) -> str:
    if not name or not set(name) <= COLLECTION_CHARS or len(name) > 128:
        raise BadQuery(
            f"collection name {name!r}: use 1 to 128 letters, digits, '.', '_' or '-'",
            parameter="collection",
        )
    return name


class CutoutTooLarge(BadQuery, TooLarge):
    """A cutout longer than `cutout_max_pixels` on a side: a bad request (400, BadQuery
    first) whose problem body also has the `size` asked for and the `limit`, in pixels."""


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
        from outcrop.images.store import ImageStore  # SQLAlchemy: not with the routes

        self.settings = settings
        self.store: ImageStore = ImageStore(engine)
        self._cache: DiskStore | None = None

    # -- ingest ------------------------------------------------------------------------
    def ingest(
        self,
        collection: str,
        paths: list[str],
        *,
        recursive: bool = False,
        base_url: str | None = None,
        force: bool = False,
        progress: Callable[[SavedFile, int, int], None] | None = None,
    ) -> list[SavedFile]:
        """Ingest the FITS files named or under the folders named; one file failing does
        not stop the others. Files of the collection under those folders that no longer
        exist are removed first (see `vanished`). `force` reads unchanged files again.
        `progress(result, done, total)` after each file."""
        check_collection(collection)
        sources = list(find_sources(paths, recursive))
        stale, unsure, folders = self.vanished(collection, paths, {s for s, _ in sources})
        # a folder that is gone entirely is not a file that failed: its files are removed
        sources = [(s, p) for s, p in sources if s not in folders]
        total = len(stale) + len(unsure) + len(sources)
        results: list[SavedFile] = []

        def done(result: SavedFile) -> None:
            results.append(result)
            if progress is not None:
                progress(result, len(results), total)

        for source in stale:  # before the others: a file moved keeps its image ids
            removed = self.store.forget_file(collection, source)
            done(SavedFile(source, "removed", images=removed or 0))
            log.info("image_file_removed", source=source, images=removed)
        for source, why in unsure:
            kept = self._kept(collection, source)
            done(SavedFile(source, "failed", error=f"{source}: {why}{kept}"))
        for source, path in sources:
            url = public_url(source, path, base_url)
            done(self.ingest_file(collection, source, path, url, force=force))
        return results

    def vanished(
        self, collection: str, paths: list[str], found: set[str]
    ) -> tuple[list[str], list[tuple[str, str]], set[str]]:
        """What ingesting `paths` removes from `collection`: (files under the local folders
        given that no longer exist, files there that cannot be checked and why, folders
        given that are gone). A file given directly, or a URL, is checked by `ingest_file`.
        """
        stale: list[str] = []
        unsure: list[tuple[str, str]] = []
        gone_folders: set[str] = set()
        for given in paths:
            if is_remote(given):
                continue
            root = Path(given).resolve()
            if root.exists() and not root.is_dir():
                continue
            under = self.store.sources_under(collection, str(root).rstrip(os.sep) + os.sep)
            if under and not root.exists():
                gone_folders.add(str(root))
            for source in under:
                if source in found or source in stale:
                    continue
                try:
                    Path(source).stat()
                except (FileNotFoundError, NotADirectoryError):
                    stale.append(source)
                except OSError as exc:  # e.g. a folder it is in can no longer be searched
                    unsure.append((source, f"cannot tell whether it still exists: {exc}"))
        return stale, unsure, gone_folders

    def knows(self, collection: str, path: str) -> bool:
        """Whether `collection` holds the local file `path`, or files under it (a folder)."""
        root = str(Path(path).resolve())
        return self.store.images_of(collection, root) is not None or bool(
            self.store.sources_under(collection, root.rstrip(os.sep) + os.sep)
        )

    def ingest_file(
        self, collection: str, source: str, path: str, url: str, *, force: bool = False
    ) -> SavedFile:
        """Read one file into the collection. A file that is gone (no such local file, a
        URL answering 404 or 410) has its images removed; one that cannot be read now
        keeps the images of an earlier ingest, and is reported as failed either way."""
        try:
            print_ = fingerprint(source)
        except SourceGone as exc:
            removed = self.store.forget_file(collection, source)
            if removed is None:
                return SavedFile(source, "failed", error=exc.message)
            log.info("image_file_removed", source=source, images=removed)
            return SavedFile(source, "removed", images=removed)
        except SourceError as exc:
            return SavedFile(source, "failed", error=exc.message + self._kept(collection, source))
        if not force and self.store.unchanged(collection, source, print_):
            return SavedFile(source, "unchanged")
        try:
            records = read_images(source)
            self.store.save(collection, source, path, url, print_, records)
        except (SourceError, BadQuery) as exc:
            kept = self.store.save_error(collection, source, print_, exc.message)
            log.info("image_ingest_failed", source=source, error=exc.message, kept=kept)
            return SavedFile(source, "failed", error=exc.message + _kept_note(kept))
        return SavedFile(source, "ingested", images=len(records))

    def _kept(self, collection: str, source: str) -> str:
        return _kept_note(self.store.images_of(collection, source) or 0)

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
            raise CutoutTooLarge(
                exc.message, size=exc.size, limit=exc.limit, parameter="size"
            ) from exc
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


_SHARED_LOCK = threading.Lock()


def shared_service(state: Any) -> ImageService:
    """The server's ImageService (kept on the app's `state`), made on first use over the
    catalog's database."""
    with _SHARED_LOCK:  # requests in several threads: one service
        service: ImageService | None = getattr(state, "images", None)
        if service is None:
            service = ImageService(state.settings, state.pipeline.catalog.engine)
            state.images = service
        return service


def _kept_note(kept: int) -> str:
    if not kept:
        return ""
    return f" (its {kept} image{'s' if kept > 1 else ''} from an earlier ingest kept)"


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
    "CutoutTooLarge",
    "ImageService",
    "describe",
    "ingest_status",
    "parse_cutout_request",
    "shared_service",
    "summarise",
]
