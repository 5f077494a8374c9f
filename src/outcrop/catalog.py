"""The registry of datasets: folders scanned and `outcrop.toml` declarations, indexed in
the catalog database so a restart does not reopen unchanged files.

A scan stats every file but opens only those whose size or modification time changed
since the last scan. Declared datasets are opened (and checked, e.g. that an aggregation's
files do not overlap) only when one of their files changed. The database holds the
catalog of one configuration: a refresh makes it match the current settings.

Several processes may share that database (server workers, `outcrop worker`, nodes on
PostgreSQL): each keeps the catalog in memory and, at most every `RELOAD_CHECK_S` seconds,
asks the database whether another process changed it, reloading when it did.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, or_, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from outcrop.db import DatasetRow, FileRow, connect, now
from outcrop.drivers import Driver, Source, driver, drivers, series_reader
from outcrop.errors import BadQuery, ConfigError, DatasetNotFound, OutcropError, SourceError
from outcrop.log import logger
from outcrop.model import DatasetSummary
from outcrop.settings import DatasetConfig, Settings

if TYPE_CHECKING:
    import xarray as xr

log = logger(__name__)
DECLARED = "config"  # the `root` of datasets declared in the settings
MAX_OFFSET = 10**9
RELOAD_CHECK_S = 2.0  # how long a change made by another process may go unseen
SCAN_LOCK = 0x6F7574_63726F70  # "outcrop": the PostgreSQL advisory lock a scan holds


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
    series: bool = False  # a time series (HAPI, das2, reduction)

    def summary(self) -> DatasetSummary:
        return DatasetSummary(self.id, self.title, self.description, self.driver, self.version)


@dataclass(frozen=True)
class Wanted:
    """A row the datasets table should hold (plain values: cheaper than ORM objects)."""

    id: str
    title: str
    description: str
    driver: str
    root: str
    source: dict[str, Any]
    version: str
    error: str


@dataclass(frozen=True)
class Found:
    """A data file (or Zarr store) a walk found: the path as seen, and what it points to."""

    path: Path
    target: Path
    driver: Driver
    size: int = 0
    mtime_ns: int = 0


# What a file-backed dataset's name may end with in a client's URL.
FILE_EXTENSIONS = frozenset(
    {".nc", ".nc4", ".cdf", ".netcdf", ".h5", ".hdf5", ".he5", ".hdf", ".zarr"}
)


class Catalog:
    """Datasets by id, from the database; `refresh()` rescans what changed."""

    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.engine = engine or connect(settings.db_url)
        self._entries: dict[str, Entry] = {}
        self._broken: dict[str, str] = {}
        self._open: OrderedDict[tuple[str, str, bool], xr.Dataset] = OrderedDict()
        self._lock = threading.Lock()
        # What the loaded catalog was read from; None until the first load.
        self._stamp: tuple[int, str] | None = None
        self._next_check = 0.0
        self._check_lock = threading.Lock()

    # -- scanning -------------------------------------------------------------------
    def refresh(self) -> None:
        """Scan every served folder and declared dataset; record only what changed."""
        roots = served_roots(self.settings)
        with Session(self.engine) as session:
            self._one_scan_at_a_time(session)
            known = {r.id: r for r in session.scalars(select(DatasetRow))}
            wanted: dict[str, Wanted] = {}
            for decl in self.settings.datasets:  # declarations win over scanned files
                wanted[decl.id] = self._declared(decl, known.get(decl.id))
            for root in roots:
                self._scan(session, root, wanted)
            served = [str(r) for r in roots]
            session.execute(delete(FileRow).where(FileRow.root.not_in(served)))
            _sync(session, known, wanted)
            session.commit()
        self.load()

    def _one_scan_at_a_time(self, session: Session) -> None:
        """Nodes starting together would insert the same rows; on PostgreSQL the second
        scan waits for the first to commit, then finds its rows and changes nothing.
        (SQLite serves one machine, where scans rarely overlap; its write lock and
        busy timeout apply.)"""
        if self.engine.dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCAN_LOCK})

    def load(self) -> None:
        """Read the catalog from the database, without touching any file."""
        stamp = self._read_stamp()  # before the rows: a change in between is seen next time
        entries: dict[str, Entry] = {}
        broken: dict[str, str] = {}
        with Session(self.engine) as session:
            for row in session.scalars(select(DatasetRow).order_by(DatasetRow.id)):
                if row.error:
                    broken[row.id] = row.error
                else:
                    entries[row.id] = _entry(row)
        for ds_id, error in broken.items():
            log.warning("dataset_unavailable", id=ds_id, error=error)
        self._entries, self._broken, self._stamp = entries, broken, stamp
        self._next_check = time.monotonic() + RELOAD_CHECK_S

    def _read_stamp(self) -> tuple[int, str]:
        """Row count and newest `updated`: an added, removed or changed row changes one
        of them (a changed row gets `updated = now()`; node clocks must agree, e.g. NTP)."""
        query = select(func.count(), func.max(DatasetRow.updated))
        with Session(self.engine) as session:
            count, newest = session.execute(query).one()
        return int(count), str(newest)

    def _current(self) -> None:
        """Reload when another process changed the database since the last load; one
        small query at most every RELOAD_CHECK_S seconds, by one thread at a time."""
        if self._stamp is None or time.monotonic() < self._next_check:
            return
        if not self._check_lock.acquire(blocking=False):
            return  # another thread is checking: serve what is loaded
        try:
            self._next_check = time.monotonic() + RELOAD_CHECK_S
            if self._read_stamp() != self._stamp:
                log.info("catalog_reloaded", reason="changed by another process")
                self.load()
        except SQLAlchemyError as exc:  # the database is away: keep serving what we have
            log.warning("catalog_check_failed", error=str(exc))
        finally:
            self._check_lock.release()

    def _scan(self, session: Session, root: Path, wanted: dict[str, Wanted]) -> None:
        key = str(root)
        known = {r.path: r for r in session.scalars(select(FileRow).where(FileRow.root == key))}
        for item in walk(root, list(drivers().values())):
            base = root.parent if item.path == root else root
            row = known.pop(str(item.path), None)
            if row is None or (row.size, row.mtime_ns) != (item.size, item.mtime_ns):
                row = _probe(session, key, item, row)
            if row.error:
                log.warning("unreadable_file", path=str(item.path), error=row.error)
                continue
            for new in _file_datasets(key, base, item, row):
                if new.id in wanted:
                    log.warning("duplicate_dataset_id", id=new.id, path=str(item.path))
                else:
                    wanted[new.id] = new
        for gone in known.values():
            session.delete(gone)

    def _declared(self, decl: DatasetConfig, old: DatasetRow | None) -> Wanted:
        """The row of a declared dataset; its files are opened only when they changed."""
        src: dict[str, Any] = {
            "group": decl.group,
            "aggregate": decl.aggregate,
            "attrs": decl.attrs,
            "hide_attrs": decl.hide_attrs,
        }
        if decl.reader is not None:  # a reader program described inline: no file to find
            files, problem = [], ""
            src["options"] = {"reader": decl.reader, "base": decl.source, "name": decl.id}
        else:
            try:
                files = expand(decl.source, [driver(decl.driver)])
            except ConfigError as exc:
                files, problem = [], exc.message
            else:
                problem = "" if files else f"source {decl.source!r} matches no file"
        src["paths"] = [str(f.target) for f in files]
        version = _version(files, {**src, "driver": decl.driver}, driver_version(decl.driver, src))
        if old is not None and old.root == DECLARED and old.version == version:
            found_title, error = str(old.source.get("found_title", "")), old.error
            series = bool(old.source.get("series"))
        elif problem:
            found_title, error, series = "", problem, False
        else:
            found_title, error, series = _check(decl, _source(src))
        return Wanted(
            id=decl.id,
            title=decl.title or found_title,
            description=decl.description,
            driver=decl.driver,
            root=DECLARED,
            source={**src, "found_title": found_title, "series": series},
            version=version,
            error=error,
        )

    # -- lookups --------------------------------------------------------------------
    def __contains__(self, ds_id: str) -> bool:
        self._current()
        return ds_id in self._entries or ds_id in self._broken

    def __len__(self) -> int:
        self._current()
        return len(self._entries)

    def entries(self) -> Iterator[Entry]:
        self._current()
        return iter(self._entries.values())

    def get(self, ds_id: str) -> Entry:
        self._current()
        entry = self._entries.get(ds_id)
        if entry is not None:
            return entry
        if ds_id in self._broken:
            raise SourceError(f"dataset {ds_id!r} cannot be served: {self._broken[ds_id]}")
        raise DatasetNotFound(
            f"no dataset {ds_id!r}; GET /api/datasets lists the {len(self)} datasets served"
        )

    def known_id(self, ds_id: str) -> str | None:
        """`ds_id`, or the id it names with the file extension a client kept on it (as
        THREDDS URLs have it: `…/ta_Amon_1950.nc`); None if neither is served."""
        if ds_id in self:
            return ds_id
        stem, dot, ext = ds_id.rpartition(".")
        if dot and f".{ext.lower()}" in FILE_EXTENSIONS and stem in self:
            return stem
        return None

    def search(self, q: str, limit: int, offset: int) -> tuple[list[DatasetSummary], int]:
        """A page of datasets, ordered by id, whose id, title or description contain `q`."""
        query = select(DatasetRow).where(DatasetRow.error == "")
        if q:
            like = "%" + q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            like += "%"
            query = query.where(
                or_(
                    func.lower(DatasetRow.id).like(like, escape="\\"),
                    func.lower(DatasetRow.title).like(like, escape="\\"),
                    func.lower(DatasetRow.description).like(like, escape="\\"),
                )
            )
        with Session(self.engine) as session:
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = session.scalars(query.order_by(DatasetRow.id).limit(limit).offset(offset))
            return [_entry(r).summary() for r in rows], total

    def open(self, ds_id: str, stored: bool = False) -> xr.Dataset:
        """The lazy dataset, decoded or (`stored=True`) as stored (see `Driver.open`); at
        most `open_files` opened datasets are kept, the least recently used closed first."""
        entry = self.get(ds_id)
        key = (entry.id, entry.version, stored)
        with self._lock:
            if key in self._open:
                self._open.move_to_end(key)
                return self._open[key]
        ds = _decorate(driver(entry.driver).open(entry.source, stored), entry)
        with self._lock:
            if key in self._open:  # another thread opened it meanwhile: keep one
                ds.close()
                self._open.move_to_end(key)
                return self._open[key]
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


def served_roots(settings: Settings) -> list[Path]:
    """The served folders, resolved; one that does not exist is a configuration error."""
    roots = []
    for path in settings.paths:
        root = path.expanduser().resolve()
        if not root.exists():
            raise ConfigError(f"served path {path} does not exist", parameter="paths")
        if root not in roots:
            roots.append(root)
    return roots


def walk(root: Path, candidates: list[Driver]) -> Iterator[Found]:
    """Files and stores under `root` that a driver opens, sorted; hidden names skipped.

    Symbolic links are followed only when they resolve inside `root`: nothing outside a
    served folder is served. Folders that are symbolic links are never descended into.
    """
    root = root.resolve()
    if not root.is_dir() or any(drv.can_open(root) for drv in candidates):
        yield from _found(root, root, candidates)
        return
    for dirpath, dirnames, filenames in os.walk(root):  # followlinks=False
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in list(dirnames):
            found = list(_found(here / name, root, candidates))
            if found or (here / name).is_symlink():
                dirnames.remove(name)  # a store, or a link: not walked into
            yield from found
        for name in sorted(filenames):
            if not name.startswith("."):
                yield from _found(here / name, root, candidates)


def _found(path: Path, root: Path, candidates: list[Driver]) -> Iterator[Found]:
    # os.walk does not enter linked folders, so only the last part of a path can be a link.
    target = path.resolve() if path.is_symlink() else path
    if not target.is_relative_to(root):
        log.warning("outside_served_folder", path=str(path), target=str(target))
        return
    for drv in candidates:
        if drv.can_open(target):
            size, mtime_ns = fingerprint(target)
            yield Found(path, target, drv, size, mtime_ns)
            return


def fingerprint(path: Path) -> tuple[int, int]:
    """Size and modification time; for a Zarr store, those of its metadata documents."""
    from outcrop.drivers.grid import zarr_nodes

    try:
        if not path.is_dir():
            st = path.stat()
            return (st.st_size, st.st_mtime_ns) if stat.S_ISREG(st.st_mode) else (-1, -1)
        stats = [doc.stat() for _, _, doc in zarr_nodes(path)]
    except (OSError, SourceError):
        return -1, -1  # probed (and reported) as unreadable
    return sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)


def expand(source: str, candidates: list[Driver]) -> list[Found]:
    """The files of a declared source: a file, a folder, or a glob (`**` recurses)."""
    path = Path(source).expanduser()
    if not any(ch in source for ch in "*?["):
        return list(walk(path, candidates)) if path.exists() else []
    found: list[Found] = []
    # glob.glob, unlike Path.glob, lets wildcards skip hidden names and `**` recurse.
    for match in sorted(glob.glob(str(path.absolute()), recursive=True)):  # noqa: PTH207
        found.extend(walk(Path(match), candidates))
    return found


def _probe(session: Session, root: str, item: Found, row: FileRow | None) -> FileRow:
    row = row or FileRow(root=root, path=str(item.path))
    row.size, row.mtime_ns = item.size, item.mtime_ns
    row.groups, row.series, row.title, row.error = [], [], "", ""
    try:
        probe = item.driver.probe(item.target)
        row.title, row.groups, row.series = probe.title, list(probe.groups), list(probe.series)
    except OutcropError as exc:
        row.error = exc.message
    session.add(row)
    return row


def _file_datasets(root: str, base: Path, item: Found, row: FileRow) -> list[Wanted]:
    """One dataset per group of a scanned file that holds variables: `id` and `id/group`."""
    file_id = dataset_id(base, item.path, getattr(item.driver, "suffix", None))
    rows = []
    for group in row.groups:
        src: dict[str, Any] = {"paths": [str(item.target)], "group": group or None}
        if group in (row.series or []):
            src["series"] = True
        rows.append(
            Wanted(
                id=f"{file_id}/{group}" if group else file_id,
                title=f"{row.title or file_id} / {group}" if group else row.title,
                description="",
                driver=item.driver.name,
                root=root,
                source=src,
                version=_version([item], src, driver_version(item.driver.name, src)),
                error="",
            )
        )
    return rows


def dataset_id(base: Path, path: Path, suffix: str | None = None) -> str:
    """The path relative to the served folder, `/`-separated, without its extension (or
    without the driver's `suffix`, e.g. `.reader.toml`)."""
    rel = path.relative_to(base)
    if suffix and rel.name.endswith(suffix) and len(rel.name) > len(suffix):
        return rel.with_name(rel.name[: -len(suffix)]).as_posix()
    if not path.is_dir() or path.suffix.lower() == ".zarr":
        rel = rel.with_suffix("")
    return rel.as_posix()


def _check(decl: DatasetConfig, source: Source) -> tuple[str, str, bool]:
    """(title, error, whether a time series) of a declared dataset, by opening it once."""
    from outcrop.drivers.timeseries import grid_series

    series_of = series_reader(decl.driver)
    try:
        if series_of is not None:
            series = series_of(source)
            return (series.info().title if series else ""), "", series is not None
        ds = driver(decl.driver).open(source)
    except OutcropError as exc:
        return "", exc.message, False
    try:
        return str(ds.attrs.get("title", "")), "", grid_series(ds) is not None
    finally:
        ds.close()


def driver_version(name: str, src: dict[str, Any]) -> str:
    """What a driver adds to a dataset's version beyond its files (e.g. a reader
    program's own file), so caches keyed by version notice the change."""
    try:
        version_of = getattr(driver(name), "version", None)
        return str(version_of(_source(src))) if callable(version_of) else ""
    except OutcropError:
        return ""  # the dataset's error says why


def _sync(session: Session, known: dict[str, DatasetRow], wanted: dict[str, Wanted]) -> None:
    """Make the datasets table hold exactly `wanted`, touching only rows that changed."""
    fields = [f.name for f in dataclasses.fields(Wanted) if f.name != "id"]
    for ds_id, new in wanted.items():
        old = known.pop(ds_id, None)
        if old is None:
            session.add(DatasetRow(**dataclasses.asdict(new), updated=now()))
        elif any(getattr(old, f) != getattr(new, f) for f in fields):
            for name in fields:
                setattr(old, name, getattr(new, name))
            old.updated = now()
    for gone in known.values():
        session.delete(gone)


def _version(files: list[Found], source: dict[str, Any], extra: str = "") -> str:
    text = json.dumps(
        [[str(f.target), f.size, f.mtime_ns] for f in files] + [source, extra],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _source(src: dict[str, Any]) -> Source:
    return Source(
        paths=tuple(Path(p) for p in src["paths"]),
        group=src.get("group"),
        aggregate=src.get("aggregate"),
        options=dict(src.get("options") or {}),
    )


def _entry(row: DatasetRow) -> Entry:
    src = row.source
    return Entry(
        id=row.id,
        title=row.title or row.id,
        description=row.description,
        driver=row.driver,
        version=row.version,
        source=_source(src),
        attrs=dict(src.get("attrs") or {}),
        hide_attrs=tuple(src.get("hide_attrs") or ()),
        series=bool(src.get("series")),
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
    for name, given, default in (("limit", limit, 100), ("offset", offset, 0)):
        if given is None:
            values.append(default)
            continue
        if not (given.isascii() and given.isdigit()):
            raise BadQuery(f"{name} must be a non-negative integer, not {given!r}", parameter=name)
        values.append(int(given))
    if not 1 <= values[0] <= maximum:
        raise BadQuery(f"limit must be between 1 and {maximum}, not {values[0]}", parameter="limit")
    if values[1] > MAX_OFFSET:
        raise BadQuery(f"offset must be at most {MAX_OFFSET}", parameter="offset")
    return values[0], values[1]
