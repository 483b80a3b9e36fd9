"""What the local cloud's MySQL- and PostgreSQL-typed table stores share: one SQLite file.

Each live database and each snapshot is one SQLite file holding a catalogue
of tables and one SQLite table `t<id>` per stored table, its columns `c0`,
`c1`, … (`rds_store.Store` for MySQL, `postgres_store.PgStore` for
PostgreSQL, each with its own catalogue schema and types). Connecting, reading
rows in batches and taking a consistent copy (a snapshot) are the same for both.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self


class StoredTable(Protocol):
    """A catalogue entry: the SQLite table `t<table_id>` and its columns."""

    table_id: int
    columns: Any  # a sequence, one entry per stored column `c<i>`


class SqliteTableStore:
    """A table store in one SQLite file; subclasses give their catalogue `SCHEMA`."""

    SCHEMA: ClassVar[str] = ""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.executescript(self.SCHEMA)
            yield conn
        finally:
            conn.close()

    def rows(self, info: StoredTable, batch_size: int = 5000) -> Iterator[list[tuple[Any, ...]]]:
        """Stored rows of a table in insertion order, `batch_size` at a time."""
        cols = ", ".join(f"c{i}" for i in range(len(info.columns)))
        last = -1
        with self.connect() as conn:
            while True:
                batch = conn.execute(
                    f"SELECT rowid, {cols} FROM t{info.table_id} WHERE rowid > ? "
                    "ORDER BY rowid LIMIT ?",
                    (last, batch_size),
                ).fetchall()
                if not batch:
                    return
                last = batch[-1][0]
                yield [tuple(r[1:]) for r in batch]

    def copy_to(self, target: Path) -> Self:
        """A consistent point-in-time copy of this store (SQLite online backup)."""
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".partial")
        tmp.unlink(missing_ok=True)
        with self.connect() as source, closing(sqlite3.connect(tmp)) as dest:
            source.backup(dest)
        tmp.replace(target)
        return type(self)(target)
