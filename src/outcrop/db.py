"""The catalog database: SQLAlchemy models and the session factory. Migrations: Alembic."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    create_engine,
    event,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from outcrop.dbfile import HEAD as HEAD  # the newest revision (re-exported)
from outcrop.dbfile import now as now  # re-exported

MIGRATIONS = Path(__file__).with_name("migrations")
MIGRATE_LOCK = 0x6F7574_6D696772  # PostgreSQL advisory lock held while migrating ("outmigr")


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class DatasetRow(Base):
    """One dataset of the catalog, found by a scan or declared in `outcrop.toml`."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(512), primary_key=True)
    title: Mapped[str] = mapped_column(Text, default="", server_default="")
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    driver: Mapped[str] = mapped_column(String(64), default="grid", server_default="grid")
    root: Mapped[str] = mapped_column(Text, index=True)
    source: Mapped[dict[str, Any]] = mapped_column(JSON)
    version: Mapped[str] = mapped_column(String(64))
    updated: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Why the dataset cannot be opened (e.g. its files overlap); empty when it can.
    error: Mapped[str] = mapped_column(Text, default="", server_default="")


class FileRow(Base):
    """A file seen by a scan of a served folder, with what tells whether it changed since."""

    __tablename__ = "files"

    root: Mapped[str] = mapped_column(Text, primary_key=True)
    path: Mapped[str] = mapped_column(Text, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    groups: Mapped[list[Any]] = mapped_column(JSON, default=list)
    title: Mapped[str] = mapped_column(Text, default="", server_default="")
    error: Mapped[str] = mapped_column(Text, default="", server_default="")
    # The groups that are time series (after `error`: migration 0003 added it to the table).
    series: Mapped[list[Any]] = mapped_column(JSON, default=list, server_default="[]")
    # The Outcrop version that probed the file (migration 0006); another version probes it
    # again, so what an upgrade changed in the probe reaches files that did not change.
    prober: Mapped[str] = mapped_column(Text, default="", server_default="")


class JobRow(Base):
    """An asynchronous job (outcrop.jobs): its request, progress, lease and result."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(256), index=True, nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    uploads: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # name -> sha256
    done: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    step: Mapped[str] = mapped_column(Text, default="")
    errors: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # dataset -> message
    error: Mapped[str] = mapped_column(Text, default="")
    result: Mapped[str] = mapped_column(String(256), default="")  # zip name in data_dir/jobs
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    expires: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The lease: who runs the job and when it last said so; `heartbeat` of a queued job is
    # when it was (last) put on the queue.
    worker: Mapped[str] = mapped_column(String(256), default="")
    heartbeat: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class ImageFileRow(Base):
    """A FITS file ingested into an image collection, with what tells whether it changed."""

    __tablename__ = "image_files"

    collection: Mapped[str] = mapped_column(String(128), primary_key=True)
    source: Mapped[str] = mapped_column(Text, primary_key=True)  # absolute path or URL
    size: Mapped[int] = mapped_column(BigInteger, default=-1)
    mtime_ns: Mapped[int] = mapped_column(BigInteger, default=-1)
    etag: Mapped[str] = mapped_column(Text, default="")  # ETag or Last-Modified of a URL
    images: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")  # why it holds no image
    ingested: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ImageRow(Base):
    """One image HDU with a celestial WCS: where it is, its footprint and its keywords."""

    __tablename__ = "images"
    __table_args__ = (Index("ix_images_collection_start", "collection", "start", "id"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(1024), unique=True)
    collection: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(Text, index=True)  # what the server reads
    path: Mapped[str] = mapped_column(Text)  # relative to the ingested folder, or the URL
    url: Mapped[str] = mapped_column(Text, default="")  # public URL (--base-url), if any
    hdu: Mapped[int] = mapped_column(Integer)
    extname: Mapped[str] = mapped_column(String(128), default="")
    version: Mapped[str] = mapped_column(String(64))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    ra: Mapped[float] = mapped_column(Float)  # centre, degrees
    dec: Mapped[float] = mapped_column(Float)
    radius: Mapped[float] = mapped_column(Float)  # centre to farthest edge point, degrees
    corners: Mapped[list[Any]] = mapped_column(JSON)  # [[ra, dec]] x 4, pixel corners
    outline: Mapped[list[Any]] = mapped_column(JSON)  # [[ra, dec]] around the edge
    pixel_scale: Mapped[float] = mapped_column(Float)  # arcsec per pixel
    start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    stop: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    exposure: Mapped[float | None] = mapped_column(Float, nullable=True)  # seconds
    instrument: Mapped[str] = mapped_column(String(256), default="", index=True)
    filter: Mapped[str] = mapped_column(String(256), default="", index=True)
    telescope: Mapped[str] = mapped_column(String(256), default="")
    header: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # stored keywords


class ImageCellRow(Base):
    """A HEALPix cell (nested, at `level`) that an image's circumscribed circle touches:
    the position index."""

    __tablename__ = "image_cells"

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    cell: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    image: Mapped[int] = mapped_column(
        ForeignKey("images.pk", ondelete="CASCADE"), primary_key=True, index=True
    )


class ImageKeywordRow(Base):
    """A header keyword of an image, as text and (when it is a number) as a number, so
    that any keyword can be filtered on with an index."""

    __tablename__ = "image_keywords"
    __table_args__ = (
        Index("ix_image_keywords_number", "name", "number"),
        Index("ix_image_keywords_text", "name", "text"),
    )

    image: Mapped[int] = mapped_column(
        ForeignKey("images.pk", ondelete="CASCADE"), primary_key=True, index=True
    )
    name: Mapped[str] = mapped_column(String(72), primary_key=True)
    text: Mapped[str] = mapped_column(String(256))
    number: Mapped[float | None] = mapped_column(Float, nullable=True)


def connect(url: str) -> Engine:
    """An engine with the schema migrated to the newest revision."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    migrate(engine)
    return engine


def _sqlite_pragmas(conn: Any, _record: Any) -> None:
    cur = conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def migrate(engine: Engine) -> None:
    """Upgrade the schema to HEAD; a database already there costs one query, no Alembic.

    A new, empty database gets the schema of the models at once, stamped HEAD (what
    `alembic stamp head` writes), instead of every migration in turn: Alembic is not
    imported on a first start. The models declare what the migrations create (server
    defaults, column order); a test checks that both schemas are the same.
    """
    if current_revision(engine) == HEAD:
        return
    try:
        _migrate(engine)
    except DBAPIError:
        # Processes sharing a new SQLite file: the one that lost the race to create the
        # tables fails; the schema the winner created is fine.
        if current_revision(engine) != HEAD:
            raise


def _migrate(engine: Engine) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # Nodes starting together: the second waits here, then finds the schema at head.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATE_LOCK})
        tables = set(inspect(conn).get_table_names())
        if not tables & {ALEMBIC_VERSION.name, *Base.metadata.tables}:
            create_at_head(conn)  # a new database
            return
        if ALEMBIC_VERSION.name in tables and _revision(conn) == HEAD:
            return  # another process migrated it meanwhile
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


# Alembic's own version table, as `alembic stamp` creates it.
ALEMBIC_VERSION = Table(
    "alembic_version",
    MetaData(),
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)


def create_at_head(conn: Connection) -> None:
    """Create every table of the models and record HEAD as the revision, in `conn`'s
    transaction (on an empty database)."""
    Base.metadata.create_all(conn, checkfirst=False)
    ALEMBIC_VERSION.create(conn, checkfirst=False)
    conn.execute(ALEMBIC_VERSION.insert().values(version_num=HEAD))


def _revision(conn: Connection) -> str | None:
    return conn.execute(select(ALEMBIC_VERSION.c.version_num)).scalar()


def current_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except (OperationalError, ProgrammingError):
        return None
