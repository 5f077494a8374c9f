"""The catalog tables of a SQLite catalog database, read with the standard library.

A server's start reads its catalog from here rather than through SQLAlchemy, whose import
alone takes a quarter of the time to the first answer; the database is written later,
through `outcrop.db`, and only when the scan changed something. The schema is the one
`outcrop.db` declares at `HEAD`; a database at another revision is not read here (the
start then goes through `outcrop.db`, which migrates it).
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HEAD = "0006"  # the newest revision in migrations/versions; a test checks they agree


def now() -> datetime:
    """The time stamps the tables store (UTC); here, so that code which only needs the
    clock does not import SQLAlchemy (`outcrop.db` re-exports it)."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class CatalogTables:
    """The rows of the `files` and `datasets` tables, as dicts of column values (JSON
    columns still as text), and the datasets' change stamp (see `Catalog.load`)."""

    files: list[dict[str, Any]]
    datasets: list[dict[str, Any]]
    stamp: tuple[int, str]


def sqlite_path(url: str) -> Path | None:
    """The file of a `sqlite:///…` URL; None for another database or an in-memory one."""
    if not url.startswith("sqlite:///"):
        return None
    name = url.removeprefix("sqlite:///")
    return Path(name) if name and not name.startswith(":memory:") and "?" not in name else None


def writable(path: Path) -> bool:
    """Whether the database file (or, when it does not exist yet, its folder or the
    nearest existing parent) can be written: a start that would fail to write it later
    goes through `outcrop.db` now, which reports why."""
    if path.exists():
        return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return os.access(parent, os.W_OK | os.X_OK)


def read_catalog(
    path: Path, file_columns: tuple[str, ...], dataset_columns: tuple[str, ...]
) -> CatalogTables | None:
    """These columns of the catalog tables of the database at `path`: empty when there is
    no such file yet; None when it is not at `HEAD` or cannot be read as one (`outcrop.db`
    handles it)."""
    if not path.exists():
        return CatalogTables([], [], (0, "None"))
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error:
        return None
    try:
        conn.execute("BEGIN")  # one snapshot for every query below
        if conn.execute("SELECT version_num FROM alembic_version").fetchall() != [(HEAD,)]:
            return None
        count, newest = conn.execute(STAMP_QUERY).fetchone()
        files = _rows(conn, "files", file_columns)
        datasets = _rows(conn, "datasets", dataset_columns)
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return CatalogTables(files, datasets, (int(count), str(newest)))


# Row count and newest `updated` of the datasets: an added, removed or changed row changes
# one of them (`Catalog` compares the stamp it loaded with the current one).
STAMP_QUERY = "SELECT count(*), max(updated) FROM datasets"


def _rows(conn: sqlite3.Connection, table: str, columns: tuple[str, ...]) -> list[dict[str, Any]]:
    cursor = conn.execute(f"SELECT {', '.join(columns)} FROM {table}")  # noqa: S608 (names from the models)
    return [dict(zip(columns, row, strict=True)) for row in cursor]
