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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from outcrop.drivers import Driver, Source, driver, drivers, series_reader
from outcrop.errors import BadQuery, ConfigError, DatasetNotFound, OutcropError, SourceError
from outcrop.http import package_version
from outcrop.log import logger
from outcrop.model import DatasetSummary
from outcrop.settings import DatasetConfig, Settings

if TYPE_CHECKING:
    import xarray as xr
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session

    from outcrop.db import DatasetRow, FileRow
    from outcrop.dbfile import CatalogTables

    FileRows = dict[tuple[str, str], FileRow]
    DatasetRows = dict[str, DatasetRow]

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


@dataclass(frozen=True)
class FileState:
    """A data file as a scan last saw it: a row of the files table, as plain values."""

    root: str
    path: str
    size: int
    mtime_ns: int
    groups: list[Any] = field(default_factory=list)
    title: str = ""
    error: str = ""
    series: list[Any] = field(default_factory=list)  # the groups that are time series
    prober: str = ""  # the Outcrop version that probed it: another one probes it again


@dataclass(frozen=True)
class Known:
    """What the database says the last scan found: files by (root, path), datasets."""

    files: dict[tuple[str, str], FileState]
    datasets: dict[str, Wanted]


@dataclass(frozen=True)
class Scan:
    """What a scan found: every file of the served folders, and the datasets to serve."""

    files: dict[tuple[str, str], FileState]
    wanted: dict[str, Wanted]

    def same_as(self, known: Known) -> bool:
        """Whether writing this scan would leave the database as it is."""
        return known.files == self.files and known.datasets == {
            ds_id: dataclasses.replace(new, source=_as_stored(new.source))
            for ds_id, new in self.wanted.items()
        }


# What a file-backed dataset's name may end with in a client's URL.
FILE_EXTENSIONS = frozenset(
    {".nc", ".nc4", ".cdf", ".netcdf", ".h5", ".hdf5", ".he5", ".hdf", ".zarr"}
)


class Catalog:
    """Datasets by id, from the database; `refresh()` rescans what changed."""

    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self._engine = engine
        self._engine_lock = threading.Lock()
        self._entries: dict[str, Entry] = {}
        self._broken: dict[str, str] = {}
        self._loaded = False
        self._open: OrderedDict[tuple[str, str, bool], xr.Dataset] = OrderedDict()
        self._lock = threading.Lock()
        # What the loaded catalog was read from; None until the first load.
        self._stamp: tuple[int, str] | None = None
        self._next_check = 0.0
        self._check_lock = threading.Lock()
        self._pending: Scan | None = None  # found by `start()`, not yet in the database
        self._save_lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        """The database, connected (and its schema migrated) on first use."""
        with self._engine_lock:
            if self._engine is None:
                from outcrop.db import connect

                self._engine = connect(self.settings.db_url)
            return self._engine

    # -- scanning -------------------------------------------------------------------
    def refresh(self) -> None:
        """Scan every served folder and declared dataset; record only what changed."""
        self._write(lambda files, datasets: self.scan(_known(files, datasets)))

    def start(self) -> None:
        """`refresh()` for a server's start: on a SQLite database the tables are read
        with the standard library, the catalog is served from the scan at once, and what
        the scan changed is written by `save()` (after the first answer). Nothing is lost
        if the process ends before: the next start scans the same files again."""
        from outcrop.dbfile import read_catalog, sqlite_path, writable

        path = sqlite_path(self.settings.db_url)
        tables = None
        if path is not None and self._engine is None and writable(path):
            tables = read_catalog(path, FILE_FIELDS, WANTED_FIELDS)
        if tables is None:  # another database, or one to migrate: through SQLAlchemy
            self.refresh()
            return
        known = _known_tables(tables)
        scan = self.scan(known)
        self._show(scan.wanted.values())
        if scan.same_as(known):
            self._stamp = tables.stamp
            self._next_check = time.monotonic() + RELOAD_CHECK_S
        else:
            self._pending = scan

    def save(self) -> None:
        """Write what `start()` found to the database, if it changed anything (once)."""
        with self._save_lock:
            scan = self._pending
            if scan is not None:
                self._write(lambda *_: scan)

    def _write(self, scan_of: Callable[[FileRows, DatasetRows], Scan]) -> None:
        """Make the database hold the scan `scan_of` gives for its current rows, then
        load it."""
        from sqlalchemy.orm import Session

        with Session(self.engine) as session:
            self._one_scan_at_a_time(session)
            files, datasets = _stored_rows(session)
            _save(session, files, datasets, scan_of(files, datasets))
            session.commit()
        self._pending = None
        self.load()

    @property
    def loaded(self) -> bool:
        """Whether the catalog was loaded (or scanned by `start()`) in this process."""
        return self._loaded

    def scan(self, known: Known) -> Scan:
        """Every served folder and declared dataset; files probed only when they differ
        from `known`, declarations opened only when their files changed."""
        roots = served_roots(self.settings)
        wanted: dict[str, Wanted] = {}
        for decl in self.settings.datasets:  # declarations win over scanned files
            wanted[decl.id] = self._declared(decl, known.datasets.get(decl.id))
        files: dict[tuple[str, str], FileState] = {}
        for root in roots:
            _scan_root(root, known.files, files, wanted)
        return Scan(files, wanted)

    def _one_scan_at_a_time(self, session: Session) -> None:
        """Nodes starting together would insert the same rows; on PostgreSQL the second
        scan waits for the first to commit, then finds its rows and changes nothing.
        (SQLite serves one machine, where scans rarely overlap; its write lock and
        busy timeout apply.)"""
        from sqlalchemy import text

        if self.engine.dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCAN_LOCK})

    def load(self) -> None:
        """Read the catalog from the database, without touching any file."""
        from sqlalchemy import select
        from sqlalchemy.orm import Session

        from outcrop.db import DatasetRow

        stamp = self._read_stamp()  # before the rows: a change in between is seen next time
        with Session(self.engine) as session:
            self._show(session.scalars(select(DatasetRow)))
        self._stamp = stamp
        self._next_check = time.monotonic() + RELOAD_CHECK_S

    def _show(self, rows: Iterable[Wanted | DatasetRow]) -> None:
        """Serve `rows`: the broken ones are answered with their error, and logged
        unless this process already reported them."""
        entries: dict[str, Entry] = {}
        broken: dict[str, str] = {}
        for row in sorted(rows, key=lambda r: r.id):
            if row.error:
                broken[row.id] = row.error
            else:
                entries[row.id] = _entry(row)
        for ds_id, error in broken.items():
            if self._broken.get(ds_id) != error:
                log.warning("dataset_unavailable", id=ds_id, error=error)
        self._entries, self._broken, self._loaded = entries, broken, True

    def _read_stamp(self) -> tuple[int, str]:
        """Row count and newest `updated`: an added, removed or changed row changes one
        of them (a changed row gets `updated = now()`; node clocks must agree, e.g. NTP).
        Read as the database gives them, as `dbfile.read_catalog` does."""
        from sqlalchemy import text

        from outcrop.dbfile import STAMP_QUERY

        with self.engine.connect() as conn:
            count, newest = conn.execute(text(STAMP_QUERY)).one()
        return int(count), str(newest)

    def _current(self) -> None:
        """Reload when another process changed the database since the last load; one
        small query at most every RELOAD_CHECK_S seconds, by one thread at a time."""
        if self._stamp is None or time.monotonic() < self._next_check:
            return
        if not self._check_lock.acquire(blocking=False):
            return  # another thread is checking: serve what is loaded
        from sqlalchemy.exc import SQLAlchemyError

        try:
            self._next_check = time.monotonic() + RELOAD_CHECK_S
            if self._read_stamp() != self._stamp:
                log.info("catalog_reloaded", reason="changed by another process")
                self.load()
        except SQLAlchemyError as exc:  # the database is away: keep serving what we have
            log.warning("catalog_check_failed", error=str(exc))
        finally:
            self._check_lock.release()

    def _declared(self, decl: DatasetConfig, old: Wanted | None) -> Wanted:
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
        checked_by = package_version()
        if (
            old is not None
            and old.root == DECLARED
            and old.version == version
            and old.source.get("checked_by") == checked_by
        ):
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
            source={**src, "found_title": found_title, "series": series, "checked_by": checked_by},
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
        """A page of datasets, ordered by id, whose id, title or description contain `q`
        (ignoring case), and how many match in all."""
        self._current()
        entries = list(self._entries.values())  # ordered by id
        if q:
            needle = q.casefold()
            entries = [
                e
                for e in entries
                if needle in e.id.casefold()
                or needle in e.title.casefold()
                or needle in e.description.casefold()
            ]
        return [e.summary() for e in entries[offset : offset + limit]], len(entries)

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
        if self._engine is not None:
            self._engine.dispose()


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


def _scan_root(
    root: Path,
    known: dict[tuple[str, str], FileState],
    files: dict[tuple[str, str], FileState],
    wanted: dict[str, Wanted],
) -> None:
    """Add the files under `root` to `files` (probing those not as `known`) and their
    datasets to `wanted`."""
    key = str(root)
    for item in walk(root, list(drivers().values())):
        base = root.parent if item.path == root else root
        state = known.get((key, str(item.path)))
        if state is None or (state.size, state.mtime_ns, state.prober) != (
            item.size,
            item.mtime_ns,
            package_version(),
        ):
            state = _probe(key, item)
        files[(key, str(item.path))] = state
        if state.error:
            log.warning("unreadable_file", path=str(item.path), error=state.error)
            continue
        for new in _file_datasets(key, base, item, state):
            if new.id in wanted:
                log.warning("duplicate_dataset_id", id=new.id, path=str(item.path))
            else:
                wanted[new.id] = new


def _probe(root: str, item: Found) -> FileState:
    found = FileState(root, str(item.path), item.size, item.mtime_ns, prober=package_version())
    try:
        probe = item.driver.probe(item.target)
    except OutcropError as exc:
        return dataclasses.replace(found, error=exc.message)
    return dataclasses.replace(
        found, groups=list(probe.groups), title=probe.title, series=list(probe.series)
    )


def _file_datasets(root: str, base: Path, item: Found, row: FileState) -> list[Wanted]:
    """One dataset per group of a scanned file that holds variables: `id` and `id/group`."""
    file_id = dataset_id(base, item.path, getattr(item.driver, "suffix", None))
    rows = []
    for group in row.groups:
        src: dict[str, Any] = {"paths": [str(item.target)], "group": group or None}
        if group in row.series:
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


def _stored_rows(session: Session) -> tuple[FileRows, DatasetRows]:
    """The rows of the files and datasets tables."""
    from sqlalchemy import select

    from outcrop.db import DatasetRow, FileRow

    files = {(r.root, r.path): r for r in session.scalars(select(FileRow))}
    return files, {r.id: r for r in session.scalars(select(DatasetRow))}


def _known(files: FileRows, datasets: DatasetRows) -> Known:
    return Known(
        {key: FileState(**{f: getattr(r, f) for f in FILE_FIELDS}) for key, r in files.items()},
        {key: Wanted(**{f: getattr(r, f) for f in WANTED_FIELDS}) for key, r in datasets.items()},
    )


def _known_tables(tables: CatalogTables) -> Known:
    """`Known` from the tables as `dbfile` reads them (JSON columns as text)."""
    files = {}
    for row in tables.files:
        lists = {"groups": json.loads(row["groups"]), "series": json.loads(row["series"])}
        state = FileState(**{**row, **lists})
        files[(state.root, state.path)] = state
    datasets = {
        row["id"]: Wanted(**{**row, "source": json.loads(row["source"])}) for row in tables.datasets
    }
    return Known(files, datasets)


FILE_FIELDS = tuple(f.name for f in dataclasses.fields(FileState))
WANTED_FIELDS = tuple(f.name for f in dataclasses.fields(Wanted))


def _save(session: Session, files: FileRows, datasets: DatasetRows, scan: Scan) -> None:
    """Make the files and datasets tables hold `scan`, touching only rows that changed;
    `files` and `datasets` are their current rows (consumed)."""
    from outcrop.db import FileRow

    for key, state in scan.files.items():
        row = files.pop(key, None)
        values = dataclasses.asdict(state)
        if row is None:
            session.add(FileRow(**values))
        elif any(getattr(row, name) != value for name, value in values.items()):
            for name, value in values.items():
                setattr(row, name, value)
    for gone in files.values():  # deleted, or under a folder no longer served
        session.delete(gone)
    _sync(session, datasets, scan.wanted)


def _sync(session: Session, known: DatasetRows, wanted: dict[str, Wanted]) -> None:
    """Make the datasets table hold exactly `wanted`, touching only rows that changed."""
    from outcrop.db import DatasetRow, now

    fields = [f for f in WANTED_FIELDS if f != "id"]
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


def _as_stored(value: Any) -> Any:
    """`value` as it comes back from a JSON column (tuples as lists, …)."""
    return json.loads(json.dumps(value, default=str))


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


def _entry(row: Wanted | DatasetRow) -> Entry:
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
