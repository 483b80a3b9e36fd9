"""The data behind a local RDS instance or Aurora cluster, and behind its snapshots.

One SQLite file per instance/cluster ("the live database") and one per snapshot
(a frozen copy). Both have the same layout:

* `_tables(table_id, database, name)`: which MySQL tables exist;
* `_columns(table_id, ordinal, name, column_type, is_nullable)`: each column's
  MySQL type exactly as `information_schema.COLUMNS.COLUMN_TYPE` spells it;
* one data table per MySQL table, `t<table_id>`, with untyped columns
  `c0..cN` holding each value in the canonical form `mysql_types` defines
  (ints, exact DECIMAL text, `0000-00-00`, `838:59:59`, raw BIT/BLOB bytes,
  UTF-8 text). Generated names keep any MySQL identifier — even ones with
  commas or newlines — out of SQLite's SQL.

SQLite gives atomic writes and safe reads between processes: the demo seeder
writes the live file from the control process while the moto server copies it
into a snapshot (`sqlite3` backup API = a consistent point-in-time copy).

A live database can instead be a real MySQL/MariaDB server (the instance's
`local-cloud:source-url` tag, see `rds_exports`); `copy_from_mysql()` reads it
through information_schema + pymysql into a snapshot file, in one consistent
read transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from export_pipeline.local_cloud.mysql_types import MySQLType, MySQLValueError
from export_pipeline.local_cloud.sqlite_tables import SqliteTableStore

SOURCE_URL_TAG = "local-cloud:source-url"
_SYSTEM_DATABASES = {"information_schema", "mysql", "performance_schema", "sys"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS _tables (
    table_id INTEGER PRIMARY KEY,
    database TEXT NOT NULL,
    name TEXT NOT NULL,
    UNIQUE (database, name)
);
CREATE TABLE IF NOT EXISTS _columns (
    table_id INTEGER NOT NULL REFERENCES _tables(table_id),
    ordinal INTEGER NOT NULL,
    name TEXT NOT NULL,
    column_type TEXT NOT NULL,
    is_nullable INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (table_id, ordinal)
);
"""


class StoreError(ValueError):
    """A request to the local database store names something missing or invalid."""


@dataclass(frozen=True)
class Column:
    """One MySQL column: its name and COLUMN_TYPE text (`bigint unsigned`, `char(2)`)."""

    name: str
    column_type: str
    nullable: bool = True

    @property
    def mysql_type(self) -> MySQLType:
        return MySQLType.parse(self.column_type)


@dataclass(frozen=True)
class TableInfo:
    table_id: int
    database: str
    name: str
    columns: tuple[Column, ...]

    @property
    def target(self) -> str:
        return f"{self.database}.{self.name}"


def store_path(state_dir: Path, region: str, kind: str, identifier: str) -> Path:
    """Where the live data of DB instance / cluster `identifier` lives.

    `kind` is "instance" or "cluster". Identifiers are case-insensitive in RDS.
    """
    if kind not in ("instance", "cluster"):
        raise StoreError(f"kind must be 'instance' or 'cluster', got {kind!r}")
    return Path(state_dir) / "rds" / region / f"{kind}-{identifier.lower()}.sqlite"


def snapshot_dir(state_dir: Path, region: str) -> Path:
    return Path(state_dir) / "rds" / region / "snapshots"


class Store(SqliteTableStore):
    """A MySQL-typed table store in one SQLite file (see the module docstring)."""

    SCHEMA = _SCHEMA

    # --- schema -------------------------------------------------------------

    def tables(self) -> list[TableInfo]:
        if not self.path.exists():
            return []
        with self.connect() as conn:
            return _tables(conn)

    def table(self, database: str, name: str) -> TableInfo:
        for info in self.tables():
            if info.database == database and info.name == name:
                return info
        raise StoreError(f"{self.path}: no table {database}.{name}")

    def has_table(self, database: str, name: str) -> bool:
        return any(t.database == database and t.name == name for t in self.tables())

    def create_table(
        self, database: str, name: str, columns: Sequence[Column], *, if_not_exists: bool = False
    ) -> TableInfo:
        """Create MySQL table `database.name`; column types are validated here."""
        if not columns:
            raise StoreError(f"table {database}.{name}: needs at least one column")
        names = [c.name for c in columns]
        if len(set(n.lower() for n in names)) != len(names):
            raise StoreError(f"table {database}.{name}: duplicate column names {names}")
        for col in columns:
            try:
                col.mysql_type  # noqa: B018 - parse to validate
            except ValueError as exc:
                raise StoreError(f"table {database}.{name} column {col.name!r}: {exc}") from None
        with self.connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT table_id FROM _tables WHERE database = ? AND name = ?",
                    (database, name),
                ).fetchone()
                if row:
                    if not if_not_exists:
                        raise StoreError(f"{self.path}: table {database}.{name} already exists")
                    conn.execute("COMMIT")
                    return self.table(database, name)
                table_id = _add_table(conn, database, name, columns)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return TableInfo(table_id, database, name, tuple(columns))

    def drop_table(self, database: str, name: str) -> None:
        info = self.table(database, name)
        with self.connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(f"DROP TABLE IF EXISTS t{info.table_id}")
            conn.execute("DELETE FROM _columns WHERE table_id = ?", (info.table_id,))
            conn.execute("DELETE FROM _tables WHERE table_id = ?", (info.table_id,))
            conn.execute("COMMIT")

    # --- rows ---------------------------------------------------------------

    def insert(
        self, database: str, name: str, rows: Iterable[Mapping[str, Any] | Sequence[Any]]
    ) -> int:
        """Insert rows (dicts by column name — missing ones are NULL — or full tuples)."""
        info = self.table(database, name)
        canon = [self._canonical_row(info, row, n) for n, row in enumerate(rows, 1)]
        if not canon:
            return 0
        marks = ", ".join("?" * len(info.columns))
        with self.connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(f"INSERT INTO t{info.table_id} VALUES ({marks})", canon)
            conn.execute("COMMIT")
        return len(canon)

    def update(
        self, database: str, name: str, key_column: str, changes: Mapping[Any, Mapping[str, Any]]
    ) -> int:
        """Set columns on the rows whose `key_column` equals each key; returns rows changed."""
        info = self.table(database, name)
        key_index = _column_index(info, key_column)
        key_type = info.columns[key_index].mysql_type
        count = 0
        with self.connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for key, values in changes.items():
                    sets, params = [], []
                    for col_name, value in values.items():
                        i = _column_index(info, col_name)
                        sets.append(f"c{i} = ?")
                        params.append(self._canonical_cell(info, i, value, f"key {key!r}"))
                    if not sets:
                        continue
                    stored_key = key_type.canonical_value(key, f"{info.target}.{key_column}")
                    cur = conn.execute(
                        f"UPDATE t{info.table_id} SET {', '.join(sets)} WHERE c{key_index} = ?",
                        (*params, stored_key),
                    )
                    count += cur.rowcount
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return count

    def delete(self, database: str, name: str, key_column: str, keys: Iterable[Any]) -> int:
        info = self.table(database, name)
        key_index = _column_index(info, key_column)
        key_type = info.columns[key_index].mysql_type
        stored = [(key_type.canonical_value(k, f"{info.target}.{key_column}"),) for k in keys]
        with self.connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            before = conn.total_changes
            conn.executemany(f"DELETE FROM t{info.table_id} WHERE c{key_index} = ?", stored)
            count = conn.total_changes - before
            conn.execute("COMMIT")
        return count

    def count(self, database: str, name: str) -> int:
        info = self.table(database, name)
        with self.connect() as conn:
            return conn.execute(f"SELECT COUNT(*) FROM t{info.table_id}").fetchone()[0]

    def read_all(self, database: str, name: str) -> list[dict[str, Any]]:
        """Every row as a dict of stored values (for tests and small tables)."""
        info = self.table(database, name)
        return [
            dict(zip([c.name for c in info.columns], row, strict=True))
            for batch in self.rows(info)
            for row in batch
        ]

    # --- helpers ------------------------------------------------------------

    def _canonical_row(
        self, info: TableInfo, row: Mapping[str, Any] | Sequence[Any], number: int
    ) -> tuple[Any, ...]:
        if isinstance(row, Mapping):
            known = {c.name for c in info.columns}
            unknown = sorted(set(row) - known)
            if unknown:
                raise StoreError(f"{info.target} row {number}: unknown columns {unknown}")
            values = [row.get(c.name) for c in info.columns]
        else:
            values = list(row)
            if len(values) != len(info.columns):
                raise StoreError(
                    f"{info.target} row {number}: {len(values)} values for "
                    f"{len(info.columns)} columns"
                )
        return tuple(
            self._canonical_cell(info, i, v, f"row {number}") for i, v in enumerate(values)
        )

    @staticmethod
    def _canonical_cell(info: TableInfo, index: int, value: Any, where: str) -> Any:
        col = info.columns[index]
        if value is None and not col.nullable:
            raise StoreError(f"{info.target}.{col.name} {where}: NULL in a NOT NULL column")
        try:
            return col.mysql_type.canonical_value(value, f"{info.target}.{col.name} {where}")
        except MySQLValueError as exc:
            raise StoreError(str(exc)) from None


def _tables(conn: sqlite3.Connection) -> list[TableInfo]:
    out = []
    for table_id, database, name in conn.execute(
        "SELECT table_id, database, name FROM _tables ORDER BY database, name"
    ).fetchall():
        cols = conn.execute(
            "SELECT name, column_type, is_nullable FROM _columns WHERE table_id = ? "
            "ORDER BY ordinal",
            (table_id,),
        ).fetchall()
        out.append(
            TableInfo(table_id, database, name, tuple(Column(n, t, bool(nl)) for n, t, nl in cols))
        )
    return out


def _add_table(
    conn: sqlite3.Connection, database: str, name: str, columns: Sequence[Column]
) -> int:
    cur = conn.execute("INSERT INTO _tables (database, name) VALUES (?, ?)", (database, name))
    table_id = int(cur.lastrowid or 0)
    conn.executemany(
        "INSERT INTO _columns (table_id, ordinal, name, column_type, is_nullable) "
        "VALUES (?, ?, ?, ?, ?)",
        [(table_id, i, c.name, c.column_type, int(c.nullable)) for i, c in enumerate(columns)],
    )
    # Untyped columns: SQLite keeps each value exactly as given (int, float, text, bytes).
    conn.execute(f"CREATE TABLE t{table_id} ({', '.join(f'c{i}' for i in range(len(columns)))})")
    return table_id


def _column_index(info: TableInfo, name: str) -> int:
    for i, col in enumerate(info.columns):
        if col.name == name:
            return i
    raise StoreError(f"{info.target}: no column {name!r}")


# --- real MySQL / MariaDB as the live database ----------------------------------


@dataclass(frozen=True)
class MySQLSource:
    """A `mysql://user[:password]@host[:port][/db1[,db2]]` URL (databases optional)."""

    host: str
    port: int
    user: str
    password: str
    databases: tuple[str, ...]

    @classmethod
    def from_url(cls, url: str) -> MySQLSource:
        parsed = urlparse(url)
        if parsed.scheme not in ("mysql", "mariadb") or not parsed.hostname:
            raise StoreError(
                f"{SOURCE_URL_TAG}: expected mysql://user@host:port/database, got {url!r}"
            )
        path = unquote(parsed.path.lstrip("/"))
        return cls(
            host=parsed.hostname,
            port=parsed.port or 3306,
            user=unquote(parsed.username or "root"),
            password=unquote(parsed.password or ""),
            databases=tuple(d for d in path.split(",") if d),
        )

    def describe(self) -> str:
        """The URL without its password, for messages."""
        return f"mysql://{self.user}@{self.host}:{self.port}/{','.join(self.databases)}"

    def connect(self) -> Any:
        import pymysql
        import pymysql.converters

        # Encoders only: every value comes back as the server's text (or bytes for
        # binary columns), so we canonicalize it ourselves without pymysql rounding.
        encoders = {
            k: v for k, v in pymysql.converters.conversions.items() if not isinstance(k, int)
        }
        return pymysql.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            charset="utf8mb4",
            conv=encoders,
            connect_timeout=10,
        )


def copy_from_mysql(source: MySQLSource, target: Path, batch_size: int = 2000) -> Store:
    """Copy every base table of the source's databases into a new store file at `target`.

    Runs in one `REPEATABLE READ` transaction started `WITH CONSISTENT SNAPSHOT`,
    so the copy is one point in time (InnoDB tables), like an RDS snapshot.
    """
    import pymysql

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".partial")
    tmp.unlink(missing_ok=True)
    store = Store(tmp)
    try:
        conn = source.connect()
    except pymysql.MySQLError as exc:
        raise StoreError(f"cannot connect to {source.describe()}: {exc}") from None
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION time_zone = '+00:00'")
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            columns = _source_columns(cur, source)
        with store.connect() as sconn:
            for (database, name), cols in columns.items():
                sconn.execute("BEGIN")
                table_id = _add_table(sconn, database, name, cols)
                info = TableInfo(table_id, database, name, tuple(cols))
                marks = ", ".join("?" * len(cols))
                quoted = ", ".join(_quote(c.name) for c in cols)
                with conn.cursor(pymysql.cursors.SSCursor) as cur:
                    cur.execute(f"SELECT {quoted} FROM {_quote(database)}.{_quote(name)}")
                    number = 0
                    while batch := cur.fetchmany(batch_size):
                        canon = []
                        for row in batch:
                            number += 1
                            canon.append(
                                tuple(
                                    Store._canonical_cell(info, i, v, f"row {number}")
                                    for i, v in enumerate(row)
                                )
                            )
                        sconn.executemany(f"INSERT INTO t{table_id} VALUES ({marks})", canon)
                sconn.execute("COMMIT")
        conn.rollback()
    except pymysql.MySQLError as exc:
        raise StoreError(f"reading {source.describe()}: {exc}") from None
    finally:
        conn.close()
    tmp.replace(target)
    return Store(target)


def _source_columns(cur: Any, source: MySQLSource) -> dict[tuple[str, str], list[Column]]:
    if source.databases:
        marks = ", ".join(["%s"] * len(source.databases))
        where, params = f"c.TABLE_SCHEMA IN ({marks})", list(source.databases)
    else:
        marks = ", ".join(["%s"] * len(_SYSTEM_DATABASES))
        where, params = f"c.TABLE_SCHEMA NOT IN ({marks})", sorted(_SYSTEM_DATABASES)
    cur.execute(
        "SELECT c.TABLE_SCHEMA, c.TABLE_NAME, c.COLUMN_NAME, c.COLUMN_TYPE, c.IS_NULLABLE "
        "FROM information_schema.COLUMNS c JOIN information_schema.TABLES t "
        "ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME "
        f"WHERE t.TABLE_TYPE = 'BASE TABLE' AND {where} "
        "ORDER BY c.TABLE_SCHEMA, c.TABLE_NAME, c.ORDINAL_POSITION",
        params,
    )
    out: dict[tuple[str, str], list[Column]] = {}
    for schema, table, name, column_type, nullable in cur.fetchall():
        try:
            MySQLType.parse(column_type)
        except ValueError as exc:
            raise StoreError(f"{source.describe()}: {schema}.{table}.{name}: {exc}") from None
        out.setdefault((schema, table), []).append(Column(name, column_type, nullable == "YES"))
    if source.databases:
        cur.execute(
            f"SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN ({marks})",
            params,
        )
        missing = set(source.databases) - {r[0] for r in cur.fetchall()}
        if missing:
            raise StoreError(f"{source.describe()}: databases {sorted(missing)} do not exist")
    return out


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"
