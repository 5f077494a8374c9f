"""The registry of datasets: folders scanned and `outcrop.toml` declarations, indexed in
the catalog database so a restart does not reopen unchanged files."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from outcrop.db import DatasetRow, FileRow, connect, now
from outcrop.drivers import Source, driver
from outcrop.drivers.grid import NETCDF_SUFFIXES, is_zarr
from outcrop.errors import BadQuery, DatasetNotFound, OutcropError
from outcrop.log import logger
from outcrop.model import DatasetSummary
from outcrop.settings import DatasetConfig, Settings

if TYPE_CHECKING:
    import xarray as xr

log = logger(__name__)


@dataclass(frozen=True)
class Entry:
    """A catalogued dataset: enough to open it and to tell whether it changed."""

    id: str
    title: str
    description: str
    driver: str
    version: str
    source: Source
    attrs: dict[str, Any] = field(default_factory=dict, hash=False)
    hide_attrs: tuple[str, ...] = ()

    def summary(self) -> DatasetSummary:
        return DatasetSummary(self.id, self.title, self.description, self.driver, self.version)


@dataclass
class _Found:
    """A file on disk as a scan sees it."""

    path: Path
    size: int
    mtime_ns: int


class Catalog:
    """Datasets by id, from the database; `refresh()` rescans what changed."""

    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.engine = engine or connect(settings.db_url)
        self._entries: dict[str, Entry] = {}
        self._open: OrderedDict[tuple[str, str], xr.Dataset] = OrderedDict()
        self._lock = threading.Lock()

    # -- scanning -------------------------------------------------------------------
    def refresh(self) -> None:
        """Scan every served folder and declared dataset; record only what changed."""
        with Session(self.engine) as session:
            for root in self.settings.paths:
                self._sync_root(session, root.resolve())
            self._sync_declared(session)
            session.commit()
        self.load()

    def load(self) -> None:
        """Read the catalog from the database, without touching any file."""
        with Session(self.engine) as session:
            rows = session.scalars(select(DatasetRow).order_by(DatasetRow.id)).all()
            roots = self._roots()
            self._entries = {r.id: _entry(r) for r in rows if r.root in roots}

    def _roots(self) -> set[str]:
        roots = {str(p.resolve()) for p in self.settings.paths}
        return roots | {_declared_root(self.settings)}

    def _sync_root(self, session: Session, root: Path) -> None:
        if not root.exists():
            raise OutcropError(f"served path {root} does not exist")
        key = str(root)
        known = {r.path: r for r in session.scalars(select(FileRow).where(FileRow.root == key))}
        found = list(_walk(root))
        grid = driver("grid")
        wanted: dict[str, DatasetRow] = {}
        for item in found:
            row = known.pop(str(item.path), None)
            if row is None or (row.size, row.mtime_ns) != (item.size, item.mtime_ns):
                row = self._probe(session, key, item, row)
            if row.error:
                continue
            base = _dataset_id(root if root.is_dir() else root.parent, item.path)
            for group in ["", *row.groups]:
                ds_id = f"{base}/{group}" if group else base
                if ds_id in wanted:
                    log.warning("duplicate_dataset_id", id=ds_id, path=str(item.path))
                    continue
                src = {"paths": [str(item.path)], "group": group or None}
                wanted[ds_id] = DatasetRow(
                    id=ds_id,
                    title=row.title if not group else f"{row.title or base} / {group}",
                    description="",
                    driver=grid.name,
                    root=key,
                    source=src,
                    version=_version([item], src),
                )
        for gone in known.values():
            session.delete(gone)
        self._store(session, key, wanted)

    def _probe(self, session: Session, root: str, item: _Found, row: FileRow | None) -> FileRow:
        row = row or FileRow(path=str(item.path), root=root)
        row.size, row.mtime_ns, row.groups, row.title, row.error = (
            item.size,
            item.mtime_ns,
            [],
            "",
            "",
        )
        try:
            probe = driver("grid").probe(item.path)
            row.title, row.groups = probe.title, list(probe.groups)
        except OutcropError as exc:
            row.error = exc.message
            log.warning("unreadable_file", path=str(item.path), error=exc.message)
        session.add(row)
        return row

    def _sync_declared(self, session: Session) -> None:
        key = _declared_root(self.settings)
        wanted: dict[str, DatasetRow] = {}
        for decl in self.settings.datasets:
            files = _expand(decl.source)
            if not files:
                raise OutcropError(f"dataset {decl.id!r}: source {decl.source!r} matches no file")
            src = {
                "paths": [str(f.path) for f in files],
                "group": decl.group,
                "aggregate": decl.aggregate,
                "attrs": decl.attrs,
                "hide_attrs": decl.hide_attrs,
            }
            title = decl.title or _declared_title(decl, files[0].path)
            wanted[decl.id] = DatasetRow(
                id=decl.id,
                title=title,
                description=decl.description,
                driver=decl.driver,
                root=key,
                source=src,
                version=_version(files, src),
            )
        self._store(session, key, wanted)

    def _store(self, session: Session, root: str, wanted: dict[str, DatasetRow]) -> None:
        existing = {
            r.id: r for r in session.scalars(select(DatasetRow).where(DatasetRow.root == root))
        }
        for ds_id, new in wanted.items():
            old = existing.pop(ds_id, None)
            if old is None:
                other = session.get(DatasetRow, ds_id)
                if other is not None:  # the same id served from two roots: first one wins
                    log.warning("duplicate_dataset_id", id=ds_id, root=root)
                    continue
                new.updated = now()
                session.add(new)
            elif (old.version, old.title, old.description, old.source) != (
                new.version,
                new.title,
                new.description,
                new.source,
            ):
                old.version, old.title, old.description = new.version, new.title, new.description
                old.source, old.driver, old.updated = new.source, new.driver, now()
        if existing:
            session.execute(delete(DatasetRow).where(DatasetRow.id.in_(list(existing))))

    # -- lookups --------------------------------------------------------------------
    def __contains__(self, ds_id: str) -> bool:
        return ds_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> Iterator[Entry]:
        return iter(self._entries.values())

    def get(self, ds_id: str) -> Entry:
        entry = self._entries.get(ds_id)
        if entry is None:
            raise DatasetNotFound(
                f"no dataset {ds_id!r}; GET /api/datasets lists the {len(self)} datasets served"
            )
        return entry

    def search(self, q: str, limit: int, offset: int) -> tuple[list[DatasetSummary], int]:
        """A page of datasets, ordered by id, whose id, title or description contain `q`."""
        query = select(DatasetRow).where(DatasetRow.root.in_(self._roots()))
        if q:
            like = f"%{q.lower()}%"
            query = query.where(
                or_(
                    func.lower(DatasetRow.id).like(like),
                    func.lower(DatasetRow.title).like(like),
                    func.lower(DatasetRow.description).like(like),
                )
            )
        with Session(self.engine) as session:
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = session.scalars(query.order_by(DatasetRow.id).limit(limit).offset(offset))
            return [_entry(r).summary() for r in rows], total

    def open(self, ds_id: str) -> xr.Dataset:
        """The lazy dataset; opened datasets are kept, at most `open_files` of them."""
        entry = self.get(ds_id)
        key = (entry.id, entry.version)
        with self._lock:
            if key in self._open:
                self._open.move_to_end(key)
                return self._open[key]
        ds = _decorate(driver(entry.driver).open(entry.source), entry)
        with self._lock:
            self._open[key] = ds
            while len(self._open) > self.settings.open_files:
                _, old = self._open.popitem(last=False)
                old.close()
        return ds

    def close(self) -> None:
        with self._lock:
            for ds in self._open.values():
                ds.close()
            self._open.clear()
        self.engine.dispose()


def _walk(root: Path) -> Iterator[_Found]:
    """Data files and Zarr stores under `root`, skipping hidden names; sorted."""
    if root.is_file():
        st = root.stat()
        yield _Found(root, st.st_size, st.st_mtime_ns)
        return
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames.sort()
        for name in list(dirnames):
            if name.startswith("."):
                dirnames.remove(name)
            elif is_zarr(here / name):
                dirnames.remove(name)
                yield _zarr_found(here / name)
        for name in sorted(filenames):
            path = here / name
            if not name.startswith(".") and path.suffix.lower() in NETCDF_SUFFIXES:
                st = path.stat()
                yield _Found(path, st.st_size, st.st_mtime_ns)


def _zarr_found(path: Path) -> _Found:
    """A Zarr store changes when any of its metadata documents does."""
    stats = [
        p.stat()
        for p in path.glob("**/*")
        if p.name in {"zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata"}
    ]
    return _Found(
        path, sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)
    )


def _expand(source: str) -> list[_Found]:
    path = Path(source)
    if any(ch in source for ch in "*?["):
        paths = sorted(Path(path.anchor).glob(str(path.relative_to(path.anchor))))
        return [f for p in paths for f in _walk(p)]
    if path.exists():
        return list(_walk(path))
    return []


def _dataset_id(root: Path, path: Path) -> str:
    rel = path.relative_to(root).as_posix()
    suffix = path.suffix if path.suffix.lower() in NETCDF_SUFFIXES | {".zarr"} else ""
    return rel[: len(rel) - len(suffix)] if suffix else rel


def _version(files: list[_Found], source: dict[str, Any]) -> str:
    text = json.dumps(
        [[str(f.path), f.size, f.mtime_ns] for f in files] + [source], sort_keys=True, default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _declared_root(settings: Settings) -> str:
    return f"config:{settings.config_file or ''}"


def _declared_title(decl: DatasetConfig, first: Path) -> str:
    try:
        return driver(decl.driver).probe(first).title or decl.id
    except OutcropError:
        return decl.id


def _entry(row: DatasetRow) -> Entry:
    src = row.source
    source = Source(
        paths=tuple(Path(p) for p in src["paths"]),
        group=src.get("group"),
        aggregate=src.get("aggregate"),
    )
    return Entry(
        id=row.id,
        title=row.title or row.id,
        description=row.description,
        driver=row.driver,
        version=row.version,
        source=source,
        attrs=dict(src.get("attrs") or {}),
        hide_attrs=tuple(src.get("hide_attrs") or ()),
    )


def _decorate(ds: xr.Dataset, entry: Entry) -> xr.Dataset:
    """Apply the attributes a declaration adds or hides."""
    if not entry.attrs and not entry.hide_attrs:
        return ds
    ds = ds.copy(deep=False)
    ds.attrs.update(entry.attrs)
    for name in entry.hide_attrs:
        ds.attrs.pop(name, None)
        for var in ds.variables.values():
            var.attrs.pop(name, None)
    return ds


def parse_page(limit: str | None, offset: str | None, maximum: int = 1000) -> tuple[int, int]:
    """Validated `limit` and `offset` paging parameters."""
    values = []
    for name, text, default in (("limit", limit, 100), ("offset", offset, 0)):
        if text is None:
            values.append(default)
            continue
        if not text.isdigit():
            raise BadQuery(f"{name} must be a non-negative integer, not {text!r}", parameter=name)
        values.append(int(text))
    if not 1 <= values[0] <= maximum:
        raise BadQuery(f"limit must be between 1 and {maximum}", parameter="limit")
    return values[0], values[1]
