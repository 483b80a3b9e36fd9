"""The data behind a local RDS PostgreSQL instance or Aurora PostgreSQL cluster.

Like `rds_store` for MySQL: one SQLite file per instance/cluster (the live
database) and one per snapshot (a frozen copy), `<kind>-<id>[-<uuid>].pg.sqlite`:

* `_pg_tables(table_id, database, schema, name, persistence)`: which tables
  exist; `persistence` is PostgreSQL's `relpersistence` (`p` permanent,
  `u` unlogged, `t` temporary), since AWS's export skips the last two;
* `_pg_columns(table_id, ordinal, name, pg_type, storage)`: each column's type
  as `format_type()` spells it and how its values are stored (`storage`);
* one data table per PostgreSQL table, `t<table_id>`, columns `c0..cN`.

Values are kept as the export writes them: integers, booleans and bytea as
themselves, floats as Python's exact `repr` text (SQLite would turn NaN into
NULL), everything else as PostgreSQL's own text form. The embedded demo
writes those texts itself; `copy_from_postgres()` reads a real server, where
PostgreSQL produces them (session settings: `TimeZone` UTC, `DateStyle` ISO,
`IntervalStyle` iso_8601, `extra_float_digits` 3), so tests compare against
PostgreSQL's own forms, not ours.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pyarrow as pa

from export_pipeline.local_cloud.sqlite_tables import SqliteTableStore

SUFFIX = ".pg.sqlite"
# How a column's values are stored and written to Parquet (AWS's PostgreSQL table).
STORAGE_ARROW: dict[str, pa.DataType] = {
    "int16": pa.int16(),  # SMALLINT: INT32 annotated INT(16)
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "binary": pa.binary(),
    "text": pa.string(),
}
# PostgreSQL type oids written natively; every other type is text.
_NATIVE_OIDS = {
    21: "int16",
    23: "int32",
    20: "int64",
    26: "int64",  # oid
    700: "float32",
    701: "float64",
    16: "bool",
    17: "binary",
}
_NATIVE_NAMES = {
    "smallint": "int16",
    "integer": "int32",
    "bigint": "int64",
    "oid": "int64",
    "real": "float32",
    "double precision": "float64",
    "boolean": "bool",
    "bytea": "binary",
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS _pg_tables (
    table_id INTEGER PRIMARY KEY,
    database TEXT NOT NULL,
    schema TEXT NOT NULL,
    name TEXT NOT NULL,
    persistence TEXT NOT NULL DEFAULT 'p',
    UNIQUE (database, schema, name)
);
CREATE TABLE IF NOT EXISTS _pg_columns (
    table_id INTEGER NOT NULL REFERENCES _pg_tables(table_id),
    ordinal INTEGER NOT NULL,
    name TEXT NOT NULL,
    pg_type TEXT NOT NULL,
    storage TEXT NOT NULL,
    PRIMARY KEY (table_id, ordinal)
);
"""


class PgStoreError(ValueError):
    """A request to the PostgreSQL store names something missing or invalid."""


@dataclass(frozen=True)
class PgColumn:
    """One column: its name, `format_type()` text and storage (default: from the type)."""

    name: str
    pg_type: str
    storage: str = ""

    def __post_init__(self) -> None:
        if not self.storage:
            object.__setattr__(self, "storage", _NATIVE_NAMES.get(self.pg_type, "text"))
        if self.storage not in STORAGE_ARROW:
            raise PgStoreError(f"column {self.name!r}: unknown storage {self.storage!r}")


@dataclass(frozen=True)
class PgTableInfo:
    table_id: int
    database: str
    schema: str
    name: str
    persistence: str
    columns: tuple[PgColumn, ...]

    @property
    def target(self) -> str:
        """As export_tables_info names it: `database.schema.table`."""
        return f"{self.database}.{self.schema}.{self.name}"

    @property
    def folder(self) -> str:
        """The table's folder under the database's: `<schema>.<table>`."""
        return f"{self.schema}.{self.name}"


def pg_store_path(state_dir: Path, region: str, kind: str, identifier: str) -> Path:
    """Where the live data of PostgreSQL DB instance / cluster `identifier` lives."""
    if kind not in ("instance", "cluster"):
        raise PgStoreError(f"kind must be 'instance' or 'cluster', got {kind!r}")
    return Path(state_dir) / "rds" / region / f"{kind}-{identifier.lower()}{SUFFIX}"


def is_pg_store(path: Path) -> bool:
    return Path(path).name.endswith(SUFFIX)


def _stored(storage: str, value: Any) -> Any:
    if value is None:
        return None
    if storage.startswith("int"):
        return int(value)
    if storage.startswith("float"):
        return repr(float(value))
    if storage == "bool":
        return int(bool(value))
    if storage == "binary":
        return bytes(value)
    if not isinstance(value, str):
        raise PgStoreError(f"expected PostgreSQL's text form (a str), got {value!r}")
    return value


def exported_value(storage: str, stored: Any) -> Any:
    """The stored value as Arrow takes it for the column's Parquet type."""
    if stored is None:
        return None
    if storage.startswith("float"):
        return float(stored)
    if storage == "bool":
        return bool(stored)
    return stored


class PgStore(SqliteTableStore):
    """A PostgreSQL-typed table store in one SQLite file (see the module docstring)."""

    SCHEMA = _SCHEMA

    def tables(self) -> list[PgTableInfo]:
        if not self.path.exists():
            return []
        with self.connect() as conn:
            out = []
            for table_id, database, schema, name, persistence in conn.execute(
                "SELECT table_id, database, schema, name, persistence FROM _pg_tables "
                "ORDER BY database, schema, name"
            ).fetchall():
                columns = tuple(
                    PgColumn(n, t, s)
                    for n, t, s in conn.execute(
                        "SELECT name, pg_type, storage FROM _pg_columns WHERE table_id = ? "
                        "ORDER BY ordinal",
                        (table_id,),
                    ).fetchall()
                )
                out.append(PgTableInfo(table_id, database, schema, name, persistence, columns))
            return out

    def table(self, database: str, schema: str, name: str) -> PgTableInfo:
        for info in self.tables():
            if (info.database, info.schema, info.name) == (database, schema, name):
                return info
        raise PgStoreError(f"{self.path}: no table {database}.{schema}.{name}")

    def has_table(self, database: str, schema: str, name: str) -> bool:
        wanted = (database, schema, name)
        return any((t.database, t.schema, t.name) == wanted for t in self.tables())

    def create_table(
        self,
        database: str,
        schema: str,
        name: str,
        columns: Sequence[PgColumn],
        persistence: str = "p",
    ) -> PgTableInfo:
        if not columns:
            raise PgStoreError(f"table {database}.{schema}.{name}: needs at least one column")
        if persistence not in ("p", "u", "t"):
            raise PgStoreError(f"persistence must be p, u or t, got {persistence!r}")
        with self.connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                cur = conn.execute(
                    "INSERT INTO _pg_tables (database, schema, name, persistence) "
                    "VALUES (?, ?, ?, ?)",
                    (database, schema, name, persistence),
                )
                table_id = int(cur.lastrowid or 0)
                conn.executemany(
                    "INSERT INTO _pg_columns VALUES (?, ?, ?, ?, ?)",
                    [(table_id, i, c.name, c.pg_type, c.storage) for i, c in enumerate(columns)],
                )
                cols = ", ".join(f"c{i}" for i in range(len(columns)))
                conn.execute(f"CREATE TABLE t{table_id} ({cols})")
                conn.execute("COMMIT")
            except sqlite3.IntegrityError:
                conn.execute("ROLLBACK")
                raise PgStoreError(f"table {database}.{schema}.{name} already exists") from None
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return PgTableInfo(table_id, database, schema, name, persistence, tuple(columns))

    def insert(
        self,
        database: str,
        schema: str,
        name: str,
        rows: Iterable[Mapping[str, Any] | Sequence[Any]],
    ) -> int:
        """Insert rows (dicts by column name, missing ones NULL, or full tuples)."""
        info = self.table(database, schema, name)
        stored = []
        for row in rows:
            values = (
                [row.get(c.name) for c in info.columns] if isinstance(row, Mapping) else list(row)
            )
            if len(values) != len(info.columns):
                raise PgStoreError(f"{info.target}: {len(values)} values for a row")
            stored.append(
                tuple(_stored(c.storage, v) for c, v in zip(info.columns, values, strict=True))
            )
        if not stored:
            return 0
        marks = ", ".join("?" * len(info.columns))
        with self.connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(f"INSERT INTO t{info.table_id} VALUES ({marks})", stored)
            conn.execute("COMMIT")
        return len(stored)

    def count(self, info: PgTableInfo) -> int:
        with self.connect() as conn:
            return conn.execute(f"SELECT COUNT(*) FROM t{info.table_id}").fetchone()[0]


# --- a real PostgreSQL server as the live database ------------------------------

_SESSION = (
    "SET TimeZone TO 'UTC'; SET DateStyle TO 'ISO, YMD'; SET IntervalStyle TO 'iso_8601'; "
    "SET extra_float_digits TO 3; SET bytea_output TO 'hex'"
)
_TABLES = """
SELECT c.oid, n.nspname, c.relname, c.relpersistence
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_%'
ORDER BY n.nspname, c.relname
"""
# Domains are described by their base type (AWS does not document what it
# writes for them; the base type is what their values are).
_COLUMNS = """
SELECT a.attname,
       CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod)
            ELSE format_type(a.atttypid, a.atttypmod) END,
       CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


def _connect(url: str) -> tuple[Any, list[str]]:
    import psycopg2

    parsed = urlparse(url)
    if parsed.scheme not in ("postgres", "postgresql"):
        raise PgStoreError(f"expected postgresql://user@host:port/database, got {url!r}")
    databases = [d for d in unquote(parsed.path.lstrip("/")).split(",") if d]
    if not databases:
        raise PgStoreError(f"{url!r}: name the database(s) after the port")
    return (
        lambda database: psycopg2.connect(
            host=parsed.hostname or "127.0.0.1",
            port=parsed.port or 5432,
            user=unquote(parsed.username or "postgres"),
            password=unquote(parsed.password or "") or None,
            dbname=database,
            connect_timeout=10,
        ),
        databases,
    )


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def copy_from_postgres(url: str, target: Path, batch_size: int = 2000) -> PgStore:
    """Read every table of the URL's databases into a new store at `target`.

    One REPEATABLE READ read-only transaction per database: a consistent copy.
    """
    import psycopg2

    connect, databases = _connect(url)
    try:
        return _copy(connect, databases, Path(target), batch_size)
    except psycopg2.Error as exc:
        raise PgStoreError(f"reading {url}: {str(exc).strip()}") from None


def _copy(connect: Any, databases: list[str], target: Path, batch_size: int) -> PgStore:
    tmp = target.with_suffix(".reading")
    tmp.unlink(missing_ok=True)
    store = PgStore(tmp)
    for database in databases:
        with closing(connect(database)) as conn:
            conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
            with conn.cursor() as cur:
                cur.execute(_SESSION)
                cur.execute(_TABLES)
                for oid, schema, name, persistence in cur.fetchall():
                    cur.execute(_COLUMNS, (oid,))
                    described = cur.fetchall()
                    columns = [
                        PgColumn(col, pg_type, _NATIVE_OIDS.get(type_oid, "text"))
                        for col, pg_type, type_oid in described
                    ]
                    if not columns:
                        continue
                    store.create_table(database, schema, name, columns, persistence)
                    if persistence != "p":
                        continue  # never exported: AWS skips it
                    # format('%s', …) is the type's output function: char(n) keeps its
                    # padding there, where a cast to text would strip it.
                    selects = ", ".join(
                        _quote(c.name)
                        if c.storage != "text"
                        else f"CASE WHEN {_quote(c.name)} IS NOT NULL "
                        f"THEN format('%s', {_quote(c.name)}) END"
                        for c in columns
                    )
                    with conn.cursor(name=f"read_{oid}") as rows:
                        rows.itersize = batch_size
                        rows.execute(f"SELECT {selects} FROM {_quote(schema)}.{_quote(name)}")
                        while batch := rows.fetchmany(batch_size):
                            store.insert(database, schema, name, batch)
            conn.rollback()
    tmp.replace(target)
    return PgStore(target)
