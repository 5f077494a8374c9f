"""The one path from (dataset, request) to bytes. Protocol modules call only this."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import pickle
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from outcrop.cache import ByteLRU, DiskStore
from outcrop.catalog import Catalog, Entry
from outcrop.drivers.grid import read_stored, stored_chunks, stored_group
from outcrop.errors import SourceError, TooLarge
from outcrop.formats.mirror import build_stored_view
from outcrop.formats.zarr import (
    VIEW_LAYOUT,
    ArrayPlan,
    ZarrFormat,
    ZarrView,
    build_view,
    compress_block,
    encode_chunk,
    frame_stream,
    transcode_chunk,
)
from outcrop.http import package_version
from outcrop.model import (
    CF_ENCODING_KEYS,
    Query,
    SeriesInfo,
    SeriesRequest,
    StoredChunks,
    StoredGroup,
)
from outcrop.series import SeriesAnswer, SeriesService
from outcrop.settings import Settings

if TYPE_CHECKING:
    import xarray as xr

    from outcrop.formats.stored import StoredReader

NOWAIT: int = getattr(os, "RWF_NOWAIT", 0)
V2_DOCUMENTS = (".zmetadata", ".zgroup", ".zattrs", ".zarray")
V3_DOCUMENT = "zarr.json"
STORED_INDEXES = 256  # chunk indexes of variables kept for stored-value reads
SLAB_BYTES = 4 << 20  # stored values are read in slabs of about this size
TRANSCODED_FILES = 100_000  # paths of transcoded chunks remembered per process


def read_file(path: str, flags: int = 0) -> bytearray | None:
    """A whole file's bytes, or None if it is gone (or, with `RWF_NOWAIT`, not in memory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        buffer = bytearray(size)
        got = os.preadv(fd, [buffer], 0, flags)
    except OSError:
        return None
    finally:
        os.close(fd)
    return buffer if got == size else None


def zarr_format_of(key: str) -> ZarrFormat:
    """Which Zarr format a store key belongs to: v3 keys are `zarr.json` and `name/c/…`."""
    name = key.rsplit("/", 1)[-1]
    if name == V3_DOCUMENT or "/c/" in key or key.endswith("/c"):
        return 3
    return 2


@dataclass(frozen=True)
class ChunkRead:
    """Where a chunk's bytes come from: ready bytes, a file range, a chunk to encode
    (`plan` alone), or a file range to transcode (`plan` and `fd`). A file range with
    `framed` set goes out as the Blosc chunk that plan declares (`frame_stream`)."""

    key: Hashable
    data: bytes | None = None
    fd: int = -1
    offset: int = 0
    size: int = 0
    plan: ArrayPlan | None = None
    coords: tuple[int, ...] = ()
    zarr_format: ZarrFormat = 2
    framed: ArrayPlan | None = None


class Pipeline:
    """Datasets from the catalog, turned into the bytes each protocol sends."""

    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        self.settings = settings
        self.catalog = catalog
        self.chunks = ByteLRU(settings.cache_mb * 2**20)
        self._views: dict[tuple[str, str, int], ZarrView] = {}
        self._transcoded: DiskStore | None = None
        # Files of transcoded chunks found in the disk store, by key: hits read them
        # directly, from the event loop when the OS has them in memory.
        self._transcoded_files: dict[str, str] = {}
        self._fds: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._build_lock = threading.Lock()
        self._stored: OrderedDict[tuple[str, str, str], StoredChunks | None] = OrderedDict()
        self._pool: ThreadPoolExecutor | None = None
        self.series = SeriesService(settings, catalog)
        remove_stale_subsets(settings)

    def entry(self, ds_id: str) -> Entry:
        return self.catalog.get(ds_id)

    def dataset(self, ds_id: str) -> xr.Dataset:
        return self.catalog.open(ds_id)

    def info(self, ds_id: str) -> dict[str, Any]:
        """Blocking: the metadata document of a dataset."""
        entry = self.catalog.get(ds_id)
        doc = {
            "id": entry.id,
            "title": entry.title,
            "description": entry.description,
            "version": entry.version,
            "driver": entry.driver,
        }
        return {**doc, **describe(self.catalog.open(ds_id))}

    # -- time series (blocking) ------------------------------------------------------
    def series_ids(self) -> list[str]:
        """Ids of every time-series dataset, sorted."""
        return self.series.ids()

    def series_info(self, ds_id: str) -> SeriesInfo:
        """What a time series holds; BadQuery(parameter="dataset") if it is not one."""
        return self.series.info(ds_id)

    def series_answer(self, ds_id: str, request: SeriesRequest) -> SeriesAnswer:
        """Samples or reduced bins; errors before the first block raise here."""
        return self.series.answer(ds_id, request)

    # -- Zarr ----------------------------------------------------------------------
    def cached_view(self, entry: Entry, fmt: ZarrFormat) -> ZarrView | None:
        return self._views.get((entry.id, entry.version, fmt))

    def zarr_view(self, entry: Entry, fmt: ZarrFormat) -> ZarrView:
        """The Zarr view of a dataset version (blocking): from memory, from the data
        folder, or built by opening the dataset, once."""
        key = (entry.id, entry.version, fmt)
        with self._build_lock:
            view = self._views.get(key) or self._load_view(entry, fmt)
            if view is None:
                view = self._build_view(entry, fmt)
                self._save_view(entry, view)
            self._views[key] = view
            return view

    def _view_file(self, entry: Entry, fmt: ZarrFormat) -> Path:
        """Per dataset version, format and codec, and per Outcrop version: after an
        upgrade, views are built again by the new code (an older one's may describe the
        dataset as that code did, or not unpickle into today's classes)."""
        name = hashlib.sha256(entry.id.encode()).hexdigest()[:24]
        folder = self.settings.data_dir / "zarr"
        codec = self.settings.zarr_codec
        made_by = f"{package_version()}.{VIEW_LAYOUT}"
        return (
            folder
            / f"{name}-{entry.version}-{made_by}-v{fmt}{'' if codec == 'stored' else codec}.pickle"
        )

    def _load_view(self, entry: Entry, fmt: ZarrFormat) -> ZarrView | None:
        """A view saved by an earlier run: a restart answers without reopening the file."""
        path = self._view_file(entry, fmt)
        try:
            with path.open("rb") as f:
                # Written only by Outcrop into its own data folder, atomically; whoever can
                # write there can change the catalog database as well.
                view = pickle.load(f)  # noqa: S301
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError):
            return None
        if not isinstance(view, ZarrView) or view.codec != self.settings.zarr_codec:
            return None
        return view

    def _save_view(self, entry: Entry, view: ZarrView) -> None:
        path = self._view_file(entry, view.zarr_format)
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = path.name.rsplit("-", 1)[1]  # v{format}{codec}.pickle
        for old in path.parent.glob(path.name.split("-", 1)[0] + f"-*-{suffix}"):
            old.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            pickle.dump(view, f, protocol=pickle.HIGHEST_PROTOCOL)
        Path(tmp).replace(path)

    def _build_view(self, entry: Entry, fmt: ZarrFormat) -> ZarrView:
        """A single NetCDF-4 file is mirrored as stored, read with h5py alone (what a
        first start needs: no xarray, dask or zarr to import); anything else, or a file
        holding what only xarray's decoding serves (strings …), through xarray."""
        path = entry.source.paths[0]
        single = len(entry.source.paths) == 1 and not entry.source.aggregate
        if single and entry.driver == "grid":
            group = stored_group(path, entry.source.group)
            if group is not None:
                return build_stored_view(decorated(group, entry), fmt, self.settings.zarr_codec)
        ds = self.catalog.open(entry.id)

        def stored(name: str) -> StoredChunks | None:
            return stored_chunks(path, entry.source.group, name) if single else None

        return build_view(ds, fmt, stored, self.settings.zarr_codec)

    def locate_chunk(self, entry: Entry, view: ZarrView, key: str) -> ChunkRead | None:
        """Where a chunk's bytes are, without blocking; None for a chunk never written."""
        plan, coords = view.parse_chunk_key(key)
        cache_key = (entry.id, entry.version, view.zarr_format, key)
        hit = self.chunks.get(cache_key)
        if hit is not None:
            return ChunkRead(cache_key, data=hit)
        if plan.stored is None:
            return ChunkRead(cache_key, plan=plan, coords=coords, zarr_format=view.zarr_format)
        raw = plan.stored.get(coords)
        if raw is None:
            return None
        fd = self._fd(str(raw.path), entry.version)
        if plan.source_codecs is not None:
            # The same bytes serve both formats: the key names the chunk, not the format.
            chunk = ".".join(map(str, coords))
            key = f"{entry.id}@{entry.version}/{view.codec}/{plan.name}/{chunk}"
            return ChunkRead(key, fd=fd, offset=raw.offset, size=raw.size, plan=plan)
        framed = plan if plan.framed else None
        return ChunkRead(cache_key, fd=fd, offset=raw.offset, size=raw.size, framed=framed)

    def read_if_cached(self, read: ChunkRead) -> bytearray | None:
        """A stored chunk's bytes if the OS has them in memory, else None — never blocks.

        `RWF_NOWAIT` (preadv2, Linux ≥ 4.14) fails instead of waiting for the disk, so
        the event loop serves page-cache hits itself and leaves disk reads to threads.
        """
        if read.plan is not None:
            return self._transcoded_if_cached(read)
        if read.fd < 0 or not NOWAIT:
            return None
        header = b""
        if read.framed is not None:
            if read.size == read.framed.nbytes():
                return None  # a stream to inflate first: not on the event loop
            header = read.framed.frame_header(read.size)
        buffer = bytearray(len(header) + read.size)
        buffer[: len(header)] = header
        try:
            got = os.preadv(read.fd, [memoryview(buffer)[len(header) :]], read.offset, NOWAIT)
        except OSError:  # EAGAIN: not in memory; EOPNOTSUPP: the file system can't say
            return None
        return buffer if got == read.size else None

    def read_chunk(self, entry: Entry, read: ChunkRead) -> bytes:
        """Blocking: read a stored chunk's bytes, or encode the chunk and cache it."""
        if read.data is not None:
            return read.data
        if read.plan is not None and read.fd < 0:
            data = self._encode(entry, read.plan, read.coords, read.zarr_format)
            self.chunks.set(read.key, data)
            return data
        if read.plan is not None:
            return self._transcode(entry, read)
        # Stored chunks are not kept: the OS page cache holds their bytes already.
        data = self._pread(entry, read)
        return data if read.framed is None else frame_stream(read.framed, data)

    def _pread(self, entry: Entry, read: ChunkRead) -> bytes:
        data = os.pread(read.fd, read.size, read.offset)
        if len(data) != read.size:
            raise SourceError(f"{entry.id}: a stored chunk is shorter than its index says")
        return data

    def _transcoded_if_cached(self, read: ChunkRead) -> bytearray | None:
        """A transcoded chunk whose file is known and in memory, else None: never blocks."""
        path = self._transcoded_files.get(read.key) if isinstance(read.key, str) else None
        if path is None or not NOWAIT:
            return None
        data = read_file(path, NOWAIT)
        if data is not None and self._transcoded is not None:
            self._transcoded.count_hit()
        return data

    def _transcode(self, entry: Entry, read: ChunkRead) -> bytes:
        """A stored chunk in the served codec: from the disk store, or transcoded once.

        Transcoded chunks are kept on disk, not in memory: the OS caches the files, and a
        full read of a large variable would otherwise grow every worker by its size.
        """
        assert read.plan is not None and isinstance(read.key, str)
        store = self._transcoded
        if store is None:
            with self._lock:
                store = self._transcoded = self._transcoded or DiskStore(
                    self.settings.data_dir / "chunks", self.settings.zarr_cache_mb * 2**20
                )
        path = self._transcoded_files.get(read.key)
        if path is not None:
            kept = read_file(path)
            if kept is not None:
                store.count_hit()
                return bytes(kept)
            self._transcoded_files.pop(read.key, None)  # evicted: ask the store
        found = store.get_with_file(read.key)
        if found is None:
            # On the decode pool (a thread per core): the work is CPU-bound, and its
            # megabyte buffers then come from a few malloc arenas, not one per thread.
            raw = self._pread(entry, read)
            data = self.pool().submit(transcode_chunk, read.plan, raw).result()
            store.set(read.key, data)
            found = store.get_with_file(read.key, count=False)
            if found is None:  # evicted at once: a budget smaller than a few chunks
                return data
        data, path = found
        if path is not None:
            if len(self._transcoded_files) >= TRANSCODED_FILES:
                self._transcoded_files.clear()
            self._transcoded_files[read.key] = path
        return data

    def _encode(
        self, entry: Entry, plan: ArrayPlan, coords: tuple[int, ...], fmt: ZarrFormat
    ) -> bytes:
        if plan.from_file:
            source = entry.source
            region = plan.region(coords)
            return compress_block(
                plan, read_stored(source.paths[0], source.group, plan.name, region)
            )
        import dask

        ds = self.catalog.open(entry.id)
        with dask.config.set(scheduler="synchronous"):
            return encode_chunk(ds, plan, coords, fmt)

    def _fd(self, path: str, version: str) -> int:
        """An open descriptor per file and dataset version: a replaced file gets a new one."""
        key = (path, version)
        fd = self._fds.get(key)
        if fd is None:
            with self._lock:
                fd = self._fds.get(key)
                if fd is None:
                    fd = os.open(path, os.O_RDONLY)
                    self._fds[key] = fd
        return fd

    # -- values as stored (OPeNDAP) -------------------------------------------------------
    def stored_dataset(self, ds_id: str) -> xr.Dataset:
        """Blocking: the dataset as stored (undecoded, CF encoding in the attributes)."""
        return self.catalog.open(ds_id, stored=True)

    def values(self, entry: Entry) -> StoredValues:
        """The source of a dataset's stored values, slab by slab (`formats.dap.Values`)."""
        return StoredValues(self, entry, self.stored_dataset(entry.id))

    def stored_reader(self, entry: Entry, name: str) -> StoredReader | None:
        """A parallel reader of a variable's stored chunks, where the file has them."""
        from outcrop.formats.stored import StoredReader

        key = (entry.id, entry.version, name)
        with self._lock:
            known = key in self._stored
            stored = self._stored.get(key)
        if not known:
            find = stored_chunks_of(entry)
            stored = find(name) if find else None
            with self._lock:
                self._stored[key] = stored
                while len(self._stored) > STORED_INDEXES:
                    self._stored.popitem(last=False)
        if stored is None:
            return None
        return StoredReader(stored, self._fd(str(stored.path), entry.version), self.pool())

    def pool(self) -> ThreadPoolExecutor:
        """Threads that decompress stored chunks (one per core: the work is CPU-bound)."""
        with self._lock:
            if self._pool is None:
                workers = max(2, os.cpu_count() or 2)
                self._pool = ThreadPoolExecutor(workers, thread_name_prefix="outcrop-decode")
            return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self.series.close()
        with self._lock:
            if self._transcoded is not None:
                self._transcoded.close()
                self._transcoded = None
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
        self.catalog.close()


def iter_bytes(data: bytes, size: int = 1 << 20) -> Iterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(data), size):
        yield bytes(view[start : start + size])


def describe(ds: xr.Dataset) -> dict[str, Any]:
    """The metadata document of a dataset: dims, coordinate ranges, variables, attributes."""
    return {
        "dims": {str(k): int(v) for k, v in ds.sizes.items()},
        "coords": {str(k): coord_range(ds[k]) for k in ds.coords},
        "variables": {str(k): variable_info(v) for k, v in ds.data_vars.items()},
        "attrs": jsonable(ds.attrs),
    }


def coord_range(coord: xr.DataArray) -> dict[str, Any]:
    values = coord.values.ravel()
    out: dict[str, Any] = {
        "dims": list(coord.dims),
        "dtype": str(coord.dtype),
        "count": int(values.size),
    }
    if values.size:
        out["first"], out["last"] = jsonable(values[0]), jsonable(values[-1])
    if coord.ndim == 1 and values.size > 1 and values.dtype.kind in "iufM":
        steps = np.diff(values)
        if bool(np.all(steps == steps[0])):
            out["step"] = jsonable(steps[0])
    out["attrs"] = jsonable(coord.attrs)
    return out


def variable_info(var: xr.DataArray) -> dict[str, Any]:
    chunks = [int(c[0]) for c in var.chunks] if var.chunks else None
    return {
        "dims": list(var.dims),
        "shape": list(var.shape),
        "dtype": str(var.dtype),
        "chunks": chunks,
        "attrs": jsonable(var.attrs),
        "encoding": jsonable({k: v for k, v in var.encoding.items() if k in CF_ENCODING_KEYS}),
    }


def jsonable(value: Any) -> Any:
    """Attribute and coordinate values as JSON: numbers, strings, lists, ISO times."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()] if value.ndim else jsonable(value.item())
    if isinstance(value, np.datetime64):
        return str(np.datetime_as_string(value, unit="auto"))
    if isinstance(value, np.timedelta64):
        return str(value)
    if isinstance(value, np.dtype):
        return str(value)
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return value


# -- subsets (REST `GET /api/datasets/{id}/data`) ---------------------------------------
SUBSET_FORMATS = ("nc", "csv", "json", "arrow", "parquet")


class Encoder(Protocol):
    """A wire format for subsets: what it can hold, and its bytes, slab by slab."""

    name: str
    media_type: str
    extension: str

    def select(self, ds: xr.Dataset, query: Query) -> xr.Dataset:
        """The part of `ds` this format will write; BadQuery when it cannot hold it."""
        ...

    def encode(self, ds: xr.Dataset, query: Query) -> Iterator[bytes]: ...


@dataclass(frozen=True)
class SubsetPlan:
    """A validated subset request: everything about the response but its body."""

    entry: Entry
    query: Query
    data: xr.Dataset
    encoder: Encoder
    etag: str
    last_modified: float
    size: int


@dataclass(frozen=True)
class Rendered:
    """A subset's body: its blocks (the first already made), its length when known, and
    how to release what it holds (a temporary file, a reader) if the client goes away."""

    chunks: Iterator[bytes]
    length: int | None = None
    close: Callable[[], None] = lambda: None


def subset_encoders(settings: Settings) -> dict[str, Encoder]:
    from outcrop.drivers.grid import NETCDF_LOCK
    from outcrop.formats.netcdf import CfJsonFormat, NetcdfFormat
    from outcrop.formats.tabular import ArrowFormat, CsvFormat, ParquetFormat

    found: list[Encoder] = [
        NetcdfFormat(NETCDF_LOCK, settings.data_dir / "tmp"),
        CsvFormat(),
        CfJsonFormat(),
        ArrowFormat(),
        ParquetFormat(),
    ]
    return {e.name: e for e in found}


def plan_subset(pipeline: Pipeline, ds_id: str, params: Sequence[tuple[str, str]]) -> SubsetPlan:
    """Blocking: parse and check a subset request against its dataset, reading no data
    but coordinates; BadQuery or TooLarge here are answered before the first byte."""
    from outcrop import query as queries

    entry = pipeline.entry(ds_id)
    encoders = subset_encoders(pipeline.settings)
    query = queries.parse(params, SUBSET_FORMATS)
    encoder = encoders[query.format]
    data = encoder.select(queries.apply(pipeline.dataset(ds_id), query), query)
    size = queries.decoded_size(data)
    limit = pipeline.settings.max_response_mb * 2**20
    if size > limit:
        raise TooLarge(
            f"the subset is {size / 2**20:.1f} MB decoded, over the limit of "
            f"{pipeline.settings.max_response_mb} MB; select less (narrower ranges, fewer "
            "variables, a stride) or submit it as a job",
            size=size,
            limit=limit,
        )
    digest = hashlib.sha256(repr(query).encode()).hexdigest()[:20]
    return SubsetPlan(
        entry, query, data, encoder, f'W/"{entry.version}-{digest}"', _modified(entry), size
    )


def render_subset(plan: SubsetPlan, cancel: threading.Event | None = None) -> Rendered:
    """Blocking: start encoding; the first block is made here, so a failure in it is
    still an error status rather than a cut body. Setting `cancel` (the client went away)
    stops a NetCDF file being written and removes it (`Cancelled`)."""
    from outcrop.formats.netcdf import FileStream, NetcdfFormat

    if isinstance(plan.encoder, NetcdfFormat):
        stored = stored_chunks_of(plan.entry)
        chunks: Iterator[bytes] = plan.encoder.encode(plan.data, plan.query, cancel, stored)
    else:
        chunks = plan.encoder.encode(plan.data, plan.query)
    length = chunks.length if isinstance(chunks, FileStream) else None
    close = getattr(chunks, "close", None)
    first = next(chunks, b"")
    return Rendered(
        itertools.chain([first], chunks), length, close if callable(close) else lambda: None
    )


def stored_chunks_of(entry: Entry) -> Callable[[str], StoredChunks | None] | None:
    """Where the stored chunks of a dataset's variables are: single HDF5 files only."""
    if len(entry.source.paths) != 1 or entry.source.aggregate:
        return None
    path, group = entry.source.paths[0], entry.source.group
    return lambda name: stored_chunks(path, group, name)


def decorated(group: StoredGroup, entry: Entry) -> StoredGroup:
    """`group` with the attributes its declaration adds or hides (as `Catalog.open`)."""
    if not entry.attrs and not entry.hide_attrs:
        return group
    hidden = set(entry.hide_attrs)

    def keep(attrs: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in attrs.items() if k not in hidden}

    variables = tuple(dataclasses.replace(v, attrs=keep(v.attrs)) for v in group.variables)
    return StoredGroup(keep({**group.attrs, **entry.attrs}), variables)


def remove_stale_subsets(settings: Settings) -> None:
    """Remove the temporary subset files a crashed process left in `data_dir/tmp`."""
    from outcrop.formats.netcdf import remove_stale

    remove_stale(settings.data_dir / "tmp")


def _modified(entry: Entry) -> float:
    """When the dataset's files last changed (POSIX seconds)."""
    times = []
    for path in entry.source.paths:
        try:
            times.append(path.stat().st_mtime)
        except OSError:
            continue
    return max(times, default=0.0)


class StoredValues:
    """A dataset's stored values in bounded C-order slabs (`formats.dap.Values`): from the
    file's stored chunks, decompressed in parallel, where it has them; else through the
    driver, slab by slab."""

    def __init__(self, pipeline: Pipeline, entry: Entry, ds: xr.Dataset) -> None:
        self.pipeline = pipeline
        self.entry = entry
        self.ds = ds

    def slabs(self, name: str, index: tuple[slice, ...]) -> Iterator[np.ndarray[Any, Any]]:
        from outcrop.formats import slabs

        var = self.ds.variables[name]
        budget = max(1, SLAB_BYTES // max(var.dtype.itemsize, 1))
        reader = self.pipeline.stored_reader(self.entry, name)
        if reader is not None:
            yield from reader.slabs(index, budget)
            return
        ranges = [range(*s.indices(n)) for s, n in zip(index, var.shape, strict=True)]
        shape = tuple(len(r) for r in ranges)
        if 0 in shape:
            return
        for slab in slabs.slabs(shape, budget):
            source = tuple(
                slice(r[s.start], r[s.stop - 1] + 1, r.step)
                for r, s in zip(ranges, slab, strict=True)
            )
            yield slabs.read(var[source])
