"""What a snapshot export of a PostgreSQL instance or cluster writes (inside moto's server).

`rds_exports` runs every export task; for a PostgreSQL snapshot (its store is
a `postgres_store.PgStore`) it selects tables and writes files through this
module, as AWS documents for PostgreSQL
(https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_ExportSnapshot.html):

* ExportOnly entries are `database`, `database.schema` or `database.schema.table`;
* files land in `<export>/<database>/<schema>.<table>/<batch>/part-….gz.parquet`,
  and `export_tables_info` names each table `database.schema.table`;
* Parquet types: BIGINT → INT64, INTEGER → INT32, SMALLINT → INT32 annotated
  INT(16), REAL → FLOAT, DOUBLE PRECISION → DOUBLE, BOOLEAN → BOOLEAN, BYTEA →
  BINARY; every other type a UTF-8 string in PostgreSQL's text form (oid, which
  AWS's table does not list, is written as INT64);
* skipped, and reported per table: unlogged and temporary tables, and tables
  with a column name holding a space or `, ; { } ( ) =` (or newline, tab).

`originalType` is the column's `format_type()` text (for a domain, its base
type's): AWS documents the key but not its spelling for PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from export_pipeline.local_cloud.postgres_store import (
    STORAGE_ARROW,
    PgColumn,
    PgStore,
    PgTableInfo,
    exported_value,
)
from export_pipeline.local_cloud.rds_export_worker import _error, _ExportWorker

_UNSUPPORTED_IN_NAMES = " ,;{}()=\n\t"
_EXPORTED_TYPE = {
    "int16": "int32",
    "int32": "int32",
    "int64": "int64",
    "float32": "float",
    "float64": "double",
    "bool": "boolean",
    "binary": "binary",
    "text": "binary (UTF8)",
}


def skip_reason(table: PgTableInfo) -> str | None:
    """Why AWS skips the table, or None when it is exported."""
    if table.persistence == "u":
        return "The table is unlogged and was skipped."
    if table.persistence == "t":
        return "The table is temporary and was skipped."
    if any(ch in c.name for c in table.columns for ch in _UNSUPPORTED_IN_NAMES):
        return (
            "The table has column names with characters that are not supported "
            "(space , ; { } ( ) \\n \\t =) and was skipped."
        )
    return None


def select_tables(tables: list[PgTableInfo], export_only: list[str]) -> list[PgTableInfo]:
    """The tables ExportOnly names (all when empty); an entry naming nothing is an error."""
    if not export_only:
        return tables
    chosen: list[PgTableInfo] = []
    for entry in export_only:
        parts = entry.split(".")
        if len(parts) > 3 or not all(parts):
            raise _error(
                "InvalidExportOnly",
                f"ExportOnly entry {entry!r}: expected 'database', 'database.schema' or "
                "'database.schema.table' for PostgreSQL.",
            )
        found = [t for t in tables if [t.database, t.schema, t.name][: len(parts)] == parts]
        if not found:
            raise _error("InvalidExportOnly", f"ExportOnly: {entry!r} does not exist.")
        chosen.extend(t for t in found if t not in chosen)
    return sorted(chosen, key=lambda t: t.target)


def type_mapping(column: PgColumn) -> dict[str, Any]:
    """One `originalTypeMappings` entry of export_tables_info."""
    return {
        "columnName": column.name,
        "originalType": column.pg_type,
        "expectedExportedType": _EXPORTED_TYPE[column.storage],
        "originalCharMaxLength": 0,
        "originalNumPrecision": 0,
        "originalDateTimePrecision": 0,
    }


class _ArrowColumn:
    """A column's Parquet type and its values' conversion, as `_ExportWorker` uses them."""

    def __init__(self, storage: str) -> None:
        self.storage = storage

    def arrow_type(self) -> pa.DataType:
        return STORAGE_ARROW[self.storage]

    def arrow_array(self, stored: list[Any]) -> pa.Array:
        return pa.array([exported_value(self.storage, v) for v in stored], self.arrow_type())


class PostgresExportWorker(_ExportWorker):
    """`_ExportWorker` with PostgreSQL's skip rules, layout and Parquet types."""

    store: PgStore | None

    def _skip_reason(self, table: PgTableInfo) -> str | None:
        return skip_reason(table)

    def _count(self, table: PgTableInfo) -> int:
        assert self.store is not None
        return self.store.count(table)

    def _type_mappings(self, table: PgTableInfo) -> list[dict[str, Any]]:
        return [type_mapping(c) for c in table.columns]

    def _write_table(self, table: PgTableInfo) -> Any:
        types = [_ArrowColumn(c.storage) for c in table.columns]
        schema = pa.schema(
            [pa.field(c.name, t.arrow_type()) for c, t in zip(table.columns, types, strict=True)]
        )
        base = f"{self.task.export_path}/{table.database}/{table.folder}"
        batches = self.store.rows(table, self.rows_per_file) if self.store else iter(())
        uuid_ref = [""]
        index = -1
        for index, rows in enumerate(batches):
            yield self._write_part(base, schema, types, rows, index, uuid_ref)  # type: ignore[arg-type]
        if index < 0:
            yield self._write_part(base, schema, types, [], 0, uuid_ref)  # type: ignore[arg-type]
