"""Images in the catalog database: saving what ingest read, and answering searches.

Every search is answered in a stable order — observation start (images without a time
last), then image id — and its `total` counts the same matches the pages are cut from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, and_, delete, exists, func, insert, or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from outcrop.db import ImageCellRow, ImageFileRow, ImageKeywordRow, ImageRow, now
from outcrop.errors import BadQuery, DatasetNotFound
from outcrop.images.index import image_cells, matches, search_ranges
from outcrop.images.ingest import Fingerprint, ImageRecord
from outcrop.images.search import ImageQuery, KeywordFilter

TEXT_LIMIT = 256  # characters of a keyword's text kept for filtering


@dataclass(frozen=True)
class FileImages:
    """The images read from one file, with where it is and its fingerprint."""

    source: str
    path: str
    url: str
    print_: Fingerprint
    records: Sequence[ImageRecord]


def image_id(collection: str, path: str, hdu: int, several: bool) -> str:
    """`{collection}:{path}`, with `:{hdu index}` when the file holds several images."""
    return f"{collection}:{path}:{hdu}" if several else f"{collection}:{path}"


def image_version(print_: Fingerprint, hdu: int) -> str:
    return hashlib.sha256(f"{print_.version()}#{hdu}".encode()).hexdigest()[:16]


class ImageStore:
    """The image tables of one catalog database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- ingest ------------------------------------------------------------------------
    def unchanged(self, collection: str, source: str, print_: Fingerprint) -> bool:
        """Whether `source` was ingested into `collection` as it is now (without error)."""
        with Session(self.engine) as session:
            row = session.get(ImageFileRow, (collection, source))
            return (
                row is not None
                and not row.error
                and (row.size, row.mtime_ns, row.etag)
                == (print_.size, print_.mtime_ns, print_.etag)
            )

    def save(
        self,
        collection: str,
        source: str,
        path: str,
        url: str,
        print_: Fingerprint,
        records: Sequence[ImageRecord],
    ) -> None:
        """Replace the images of `source` in `collection` by `records`, in one transaction
        (a server reading meanwhile sees the old images or the new ones)."""
        self.save_many(collection, [FileImages(source, path, url, print_, records)])

    def save_many(self, collection: str, files: Sequence[FileImages]) -> None:
        """`save` for several files in one transaction (bulk loads)."""
        with Session(self.engine) as session, session.begin():
            rows: list[dict[str, Any]] = []
            records: list[ImageRecord] = []
            for f in files:
                several = len(f.records) > 1
                mine = [_row(collection, f, r, several) for r in f.records]
                self._check_ids(session, f.source, [r["id"] for r in mine])
                self._forget(session, collection, f.source)
                self._record_file(session, collection, f.source, f.print_, len(mine), "")
                rows += mine
                records += f.records
            if not rows:
                return
            stmt = insert(ImageRow).returning(ImageRow.pk, sort_by_parameter_order=True)
            pks = list(session.execute(stmt, rows).scalars())
            self._index(session, pks, records)

    def save_error(self, collection: str, source: str, print_: Fingerprint, error: str) -> int:
        """Remember a file that cannot be read now, or holds no usable image. Images of it
        from an earlier ingest are kept (the file is still there: a copy in progress, a
        disk error) and the file is read again by the next ingest. Returns how many."""
        with Session(self.engine) as session, session.begin():
            old = session.get(ImageFileRow, (collection, source))
            kept = old.images if old is not None else 0
            self._record_file(session, collection, source, print_, kept, error)
            return kept

    def forget_file(self, collection: str, source: str) -> int | None:
        """Remove a file that no longer exists, and its images, from `collection`: how many
        images it had, or None when the collection does not know the file."""
        with Session(self.engine) as session, session.begin():
            row = session.get(ImageFileRow, (collection, source))
            if row is None:
                return None
            removed = self._forget(session, collection, source)
            session.delete(row)
            return removed

    def images_of(self, collection: str, source: str) -> int | None:
        """How many images of `source` the collection holds; None if it does not know it."""
        with Session(self.engine) as session:
            row = session.get(ImageFileRow, (collection, source))
            return None if row is None else row.images

    def sources_under(self, collection: str, folder: str) -> list[str]:
        """The files of `collection` whose path starts with `folder` (ending with the path
        separator), at any depth, in order."""
        stmt = (
            select(ImageFileRow.source)
            .where(
                ImageFileRow.collection == collection,
                ImageFileRow.source.startswith(folder, autoescape=True),
            )
            .order_by(ImageFileRow.source)
        )
        with Session(self.engine) as session:
            found = session.execute(stmt).scalars()
            return [s for s in found if s.startswith(folder)]  # SQLite's LIKE ignores case

    def _check_ids(self, session: Session, source: str, ids: list[str]) -> None:
        taken = session.execute(
            select(ImageRow.id, ImageRow.source).where(
                ImageRow.id.in_(ids), ImageRow.source != source
            )
        ).first()
        if taken is not None:
            raise BadQuery(f"image id {taken[0]!r} is already the image of {taken[1]}")

    def _forget(self, session: Session, collection: str, source: str) -> int:
        """Delete the images of `source` in `collection`; how many there were."""
        old = select(ImageRow.pk).where(
            ImageRow.collection == collection, ImageRow.source == source
        )
        pks = list(session.execute(old).scalars())
        if pks:  # explicit deletes: ON DELETE CASCADE needs SQLite's foreign_keys pragma
            session.execute(delete(ImageCellRow).where(ImageCellRow.image.in_(pks)))
            session.execute(delete(ImageKeywordRow).where(ImageKeywordRow.image.in_(pks)))
            session.execute(delete(ImageRow).where(ImageRow.pk.in_(pks)))
        return len(pks)

    def _index(self, session: Session, pks: list[int], records: list[ImageRecord]) -> None:
        cells: list[dict[str, int]] = []
        keywords: list[dict[str, Any]] = []
        for pk, record in zip(pks, records, strict=True):
            fp = record.footprint
            level, found = image_cells(fp.ra, fp.dec, fp.radius)
            cells += [{"level": level, "cell": int(c), "image": pk} for c in found]
            keywords += [_keyword(pk, k, v) for k, v in record.header.items()]
        session.execute(insert(ImageCellRow), cells)
        if keywords:
            session.execute(insert(ImageKeywordRow), keywords)

    def _record_file(
        self,
        session: Session,
        collection: str,
        source: str,
        print_: Fingerprint,
        n: int,
        error: str,
    ) -> None:
        row = session.get(ImageFileRow, (collection, source)) or ImageFileRow(
            collection=collection, source=source
        )
        row.size, row.mtime_ns, row.etag = print_.size, print_.mtime_ns, print_.etag
        row.images, row.error, row.ingested = n, error, now()
        session.add(row)

    # -- queries -----------------------------------------------------------------------
    def get(self, image_id: str) -> ImageRow:
        with Session(self.engine) as session:
            row = session.execute(
                select(ImageRow).where(ImageRow.id == image_id)
            ).scalar_one_or_none()
            if row is None:
                raise DatasetNotFound(
                    f"no image has the id {image_id!r}; GET /api/images lists them"
                )
            session.expunge(row)
            return row

    def search(self, query: ImageQuery) -> tuple[list[ImageRow], int]:
        """A page of the images matching `query`, and how many match in all."""
        conditions = _conditions(query)
        with Session(self.engine) as session:
            if query.ra is None or query.dec is None:
                total = session.execute(
                    select(func.count()).select_from(ImageRow).where(*conditions)
                ).scalar_one()
                page = session.execute(
                    select(ImageRow)
                    .where(*conditions)
                    .order_by(ImageRow.start.is_(None), ImageRow.start, ImageRow.id)
                    .limit(query.limit)
                    .offset(query.offset)
                ).scalars()
                rows = list(page)
            else:
                pks = self._near(session, query, conditions)
                total = len(pks)
                wanted = pks[query.offset : query.offset + query.limit]
                found = session.execute(select(ImageRow).where(ImageRow.pk.in_(wanted))).scalars()
                by_pk = {row.pk: row for row in found}
                rows = [by_pk[pk] for pk in wanted]
            session.expunge_all()
        return rows, int(total)

    def _near(
        self, session: Session, query: ImageQuery, conditions: list[ColumnElement[bool]]
    ) -> list[int]:
        """Keys of the images near the query's position, in the stable order: candidates
        from the cell index, each then tested exactly."""
        assert query.ra is not None and query.dec is not None
        ranges = search_ranges(query.ra, query.dec, query.radius)
        cells = select(ImageCellRow.image).where(
            or_(
                *(
                    and_(ImageCellRow.level == level, ImageCellRow.cell.between(lo, hi))
                    for level, lo, hi in ranges
                )
            )
        )
        candidates = session.execute(
            select(ImageRow.pk, ImageRow.start, ImageRow.id, ImageRow.outline).where(
                ImageRow.pk.in_(cells), *conditions
            )
        ).all()
        if not candidates:
            return []
        outlines = np.array([c.outline for c in candidates], dtype=float)
        keep = matches(outlines, query.ra, query.dec, query.radius)
        chosen = [c for c, k in zip(candidates, keep.tolist(), strict=True) if k]
        chosen.sort(key=lambda c: (c.start is None, _sortable(c.start), c.id))
        return [c.pk for c in chosen]

    def summary(self, collection: str | None = None) -> list[dict[str, Any]]:
        """Counts per collection, instrument and filter, with each group's time range."""
        stmt = select(
            ImageRow.collection,
            ImageRow.instrument,
            ImageRow.filter,
            func.count(),
            func.min(ImageRow.start),
            func.max(ImageRow.stop),
        ).group_by(ImageRow.collection, ImageRow.instrument, ImageRow.filter)
        if collection is not None:
            stmt = stmt.where(ImageRow.collection == collection)
        stmt = stmt.order_by(ImageRow.collection, ImageRow.instrument, ImageRow.filter)
        with Session(self.engine) as session:
            groups = session.execute(stmt).all()
        return [
            {
                "collection": c,
                "instrument": i,
                "filter": f,
                "images": int(n),
                "start": _iso(lo),
                "stop": _iso(hi),
            }
            for c, i, f, n, lo, hi in groups
        ]

    def files(self, collection: str) -> list[ImageFileRow]:
        with Session(self.engine) as session:
            rows = list(
                session.execute(
                    select(ImageFileRow).where(ImageFileRow.collection == collection)
                ).scalars()
            )
            session.expunge_all()
            return rows


def _conditions(query: ImageQuery) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if query.collection is not None:
        conditions.append(ImageRow.collection == query.collection)
    if query.instruments:
        conditions.append(ImageRow.instrument.in_(query.instruments))
    if query.filters:
        conditions.append(ImageRow.filter.in_(query.filters))
    if query.start is not None:  # exposures overlapping [start, stop]
        conditions.append(ImageRow.stop >= query.start)
    if query.stop is not None:
        conditions.append(ImageRow.start <= query.stop)
    # Near a position the few candidates are each looked up (EXISTS on the primary key);
    # without one, the keyword index finds the matching images first (IN).
    near = query.ra is not None
    conditions.extend(_keyword_condition(k, near) for k in query.keywords)
    return conditions


def _keyword_condition(kw: KeywordFilter, per_image: bool) -> ColumnElement[bool]:
    column = ImageKeywordRow.number if _numeric(kw) else ImageKeywordRow.text
    tests: list[ColumnElement[bool]] = [ImageKeywordRow.name == kw.name]
    if kw.equals is not None:
        tests.append(column == kw.equals)
    if kw.low is not None:
        tests.append(column >= kw.low)
    if kw.high is not None:
        tests.append(column <= kw.high)
    if per_image:
        return exists().where(ImageKeywordRow.image == ImageRow.pk, *tests)
    return ImageRow.pk.in_(select(ImageKeywordRow.image).where(*tests))


def _numeric(kw: KeywordFilter) -> bool:
    values = [v for v in (kw.equals, kw.low, kw.high) if v is not None]
    return all(isinstance(v, float) for v in values)


def _keyword(pk: int, name: str, value: str | int | float | bool) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"image": pk, "name": name[:72], "text": "T" if value else "F", "number": None}
    if isinstance(value, int | float):
        return {
            "image": pk,
            "name": name[:72],
            "text": repr(value)[:TEXT_LIMIT],
            "number": float(value),
        }
    return {"image": pk, "name": name[:72], "text": value[:TEXT_LIMIT], "number": None}


def _row(collection: str, f: FileImages, record: ImageRecord, several: bool) -> dict[str, Any]:
    fp = record.footprint
    return {
        "id": image_id(collection, f.path, record.hdu, several),
        "collection": collection,
        "source": f.source,
        "path": f.path,
        "url": f.url,
        "hdu": record.hdu,
        "extname": record.extname,
        "version": image_version(f.print_, record.hdu),
        "width": record.width,
        "height": record.height,
        "ra": fp.ra,
        "dec": fp.dec,
        "radius": fp.radius,
        "corners": [list(c) for c in fp.corners],
        "outline": [list(c) for c in fp.outline],
        "pixel_scale": record.pixel_scale,
        "start": record.start,
        "stop": record.stop,
        "exposure": record.exposure,
        "instrument": record.instrument[:256],
        "filter": record.filter[:256],
        "telescope": record.telescope[:256],
        "header": record.header,
    }


def _sortable(when: datetime | None) -> float:
    return when.timestamp() if when is not None else 0.0


def _iso(when: datetime | None) -> str | None:
    """ISO 8601 in UTC (SQLite gives back naive datetimes; they were stored in UTC)."""
    if when is None:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).isoformat()
