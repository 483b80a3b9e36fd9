"""`<table>_history`: every version of every row of a `deletes: history` table.

Columns: the table's data columns (its own bookkeeping columns, such as
`_exported_at`, left out) and

- `_valid_from` TIMESTAMP: when this version started to hold;
- `_valid_to` TIMESTAMP: when the next version (or the deletion) replaced it;
  NULL while it holds;
- `_is_current` BOOL: `_valid_to IS NULL` (the version the source holds now;
  a deleted key has none);
- `_deleted_at` TIMESTAMP: on the last version before a deletion, the
  deletion's time (equal to `_valid_to`); NULL otherwise.

Where versions come from:
- a full load (`snapshot_statements`): the difference, by key, between the
  current versions and the load, at the export's time: a changed row closes
  its version and opens a new one, a missing row closes its version as
  deleted, a new or returning row opens one. Rows whose data columns are all
  equal (NULL-safely) keep their version: a re-run adds nothing.
- an incremental load (`change_statements`): each change record is a version
  at its own time (Metadata.WriteTimestampMicros), ordered by that time; a
  delete record closes the key's version. An incremental export holds one
  record per changed item (its state at the window's end), so several
  versions of one key come from a load of several exports. Changes at or
  before the key's latest known time are already in the history (a re-run,
  or a widened window) and are skipped.

Both run as statements of the publishing transaction (`deletes.KeptDeletes`);
the history table is created and its schema reconciled before it, like the
target's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from google.cloud import bigquery
from google.cloud.bigquery import SchemaField

from export_pipeline.bigquery.evolve import Convert, Widen, null_sql, reconcile_schema
from export_pipeline.bigquery.sql import standard_type
from export_pipeline.bigquery.tables import TableId
from export_pipeline.bigquery.watermark import Statement, timestamp_literal
from export_pipeline.naming import quote_identifier

HISTORY_SUFFIX = "_history"
VALID_FROM = "_valid_from"
VALID_TO = "_valid_to"
IS_CURRENT = "_is_current"
DELETED_AT = "_deleted_at"
VERSION_FIELDS = (
    SchemaField(VALID_FROM, "TIMESTAMP", description="When this version started to hold."),
    SchemaField(
        VALID_TO,
        "TIMESTAMP",
        description="When the next version or the deletion replaced it (NULL: it holds now).",
    ),
    SchemaField(IS_CURRENT, "BOOL", description="TRUE for the version the source holds now."),
    SchemaField(
        DELETED_AT,
        "TIMESTAMP",
        description="On the last version before a deletion: when the source deleted the row.",
    ),
)
_TIME = "__export_pipeline_time"
_DELETED = "__export_pipeline_deleted"
_KNOWN = "__export_pipeline_known"
_NEXT_TIME = "__export_pipeline_next_time"
_NEXT_DELETED = "__export_pipeline_next_deleted"
_RANK = "__export_pipeline_rank"
# Types `IS NOT DISTINCT FROM` cannot compare (not groupable): compared as JSON text.
_COMPARED_AS_JSON = ("JSON", "STRUCT", "RECORD", "GEOGRAPHY", "ARRAY")


def history_table_for(target: TableId) -> TableId:
    return target.sibling(target.table + HISTORY_SUFFIX)


def _q(name: str) -> str:
    return quote_identifier(name)


def _same(a: str, b: str, field: SchemaField) -> str:
    """NULL-safe equality of two values of `field`'s type (NaN equals NaN, [] equals [])."""
    if field.mode == "REPEATED" or standard_type(field.field_type) in _COMPARED_AS_JSON:
        return f"TO_JSON_STRING({a}) IS NOT DISTINCT FROM TO_JSON_STRING({b})"
    return f"{a} IS NOT DISTINCT FROM {b}"


def _prepare(
    client: bigquery.Client,
    target: TableId,
    pairs: Sequence[tuple[str, str]],
    unversioned: set[str],
    widen: Widen,
    convert: Convert,
    job_labels: dict[str, str] | None,
) -> tuple[TableId, list[tuple[str, str, SchemaField]]]:
    """Create/reconcile the history table of `target`; each data column's
    (quoted name, SQL over staging typed as the history column, history field)."""
    target_schema = list(client.get_table(target.reference).schema)
    data_fields = [f for f in target_schema if f.name.lower() not in unversioned]
    table_id = history_table_for(target)
    table = bigquery.Table(table_id.reference, schema=[*data_fields, *VERSION_FIELDS])
    table.description = (
        f"export_pipeline: every version of the rows of {target.dotted} "
        "(deletes: history). Written in the same transaction as that table."
    )
    client.create_table(table, exists_ok=True)
    effective = reconcile_schema(
        client,
        table_id,
        [*data_fields, *VERSION_FIELDS],
        job_labels=job_labels,
        widen=widen,
        convert=convert,
    )
    loaded = {name.strip("`").lower(): sql for name, sql in pairs}
    in_target = {f.name.lower(): f for f in target_schema}
    version_names = {f.name.lower() for f in VERSION_FIELDS}
    columns = []
    for field in effective:
        name = field.name.lower()
        if name in version_names or name in unversioned:
            continue
        if name in loaded and name in in_target:
            sql = convert(loaded[name], in_target[name], field)
        else:  # a column of earlier loads this one lacks
            sql = null_sql(field)
        columns.append((_q(field.name), sql, field))
    return table_id, columns


def snapshot_statements(
    client: bigquery.Client,
    *,
    target: TableId,
    staging: TableId,
    pairs: Sequence[tuple[str, str]],
    key_columns: Sequence[str],
    as_of: dt.datetime,
    unversioned: set[str],
    widen: Widen,
    convert: Convert,
    job_labels: dict[str, str] | None,
) -> list[Statement]:
    """Versions from the difference between the current versions and a full load at `as_of`."""
    table, columns = _prepare(client, target, pairs, unversioned, widen, convert, job_labels)
    at = timestamp_literal(as_of)
    loaded = (
        f"SELECT {', '.join(f'{sql} AS {name}' for name, sql, _ in columns)} FROM {staging.sql}"
    )
    keys = [_q(k) for k in key_columns]
    key_match = " AND ".join(f"n.{k} = h.{k}" for k in keys)
    same = " AND ".join(_same(f"n.{name}", f"h.{name}", f) for name, _, f in columns)
    names = [name for name, _, _ in columns]
    version_names = ", ".join(_q(f.name) for f in VERSION_FIELDS)
    close = Statement(
        f"UPDATE {table.sql} AS h SET {_q(VALID_TO)} = {at}, {_q(IS_CURRENT)} = FALSE, "
        f"{_q(DELETED_AT)} = IF(EXISTS(SELECT 1 FROM ({loaded}) AS n WHERE {key_match}), "
        f"NULL, {at}) "
        f"WHERE h.{_q(IS_CURRENT)} AND h.{_q(VALID_FROM)} < {at} "
        f"AND NOT EXISTS (SELECT 1 FROM ({loaded}) AS n WHERE {key_match} AND {same})"
    )
    open_ = Statement(
        f"INSERT INTO {table.sql} ({', '.join(names)}, {version_names}) "
        f"SELECT {', '.join(f'n.{name}' for name in names)}, {at}, NULL, TRUE, NULL "
        f"FROM ({loaded}) AS n WHERE NOT EXISTS (SELECT 1 FROM {table.sql} AS h "
        f"WHERE h.{_q(IS_CURRENT)} AND {key_match})"
    )
    return [close, open_]


def change_statements(
    client: bigquery.Client,
    *,
    target: TableId,
    staging: TableId,
    pairs: Sequence[tuple[str, str]],
    key_columns: Sequence[str],
    deleted_sql: str,
    change_time_sql: str,
    unversioned: set[str],
    widen: Widen,
    convert: Convert,
    job_labels: dict[str, str] | None,
) -> list[Statement]:
    """Versions from incremental change records (`deleted_sql`: BOOL, `change_time_sql`:
    TIMESTAMP, both over staging columns)."""
    table, columns = _prepare(client, target, pairs, unversioned, widen, convert, job_labels)
    keys = [_q(k) for k in key_columns]
    names = [name for name, _, _ in columns]
    changes = (
        f"SELECT {', '.join(f'{sql} AS {name}' for name, sql, _ in columns)}, "
        f"COALESCE({deleted_sql}, FALSE) AS {_DELETED}, {change_time_sql} AS {_TIME} "
        f"FROM {staging.sql}"
    )
    known_time = f"GREATEST({_q(VALID_FROM)}, COALESCE({_q(DELETED_AT)}, {_q(VALID_FROM)}))"
    known = (
        f"SELECT {', '.join(keys)}, MAX({known_time}) AS {_KNOWN} FROM {table.sql} "
        f"GROUP BY {', '.join(keys)}"
    )
    by_key = ", ".join(f"c.{k}" for k in keys)
    new = (
        f"SELECT c.* FROM ({changes}) AS c LEFT JOIN ({known}) AS k ON "
        + " AND ".join(f"c.{k} = k.{k}" for k in keys)
        + f" WHERE k.{_KNOWN} IS NULL OR c.{_TIME} > k.{_KNOWN} "
        f"QUALIFY ROW_NUMBER() OVER (PARTITION BY {by_key}, c.{_TIME} "
        f"ORDER BY c.{_DELETED} DESC) = 1"
    )
    window = f"OVER (PARTITION BY {', '.join(f'n.{k}' for k in keys)} ORDER BY n.{_TIME})"
    versions = (
        f"SELECT n.*, LEAD(n.{_TIME}) {window} AS {_NEXT_TIME}, "
        f"LEAD(n.{_DELETED}) {window} AS {_NEXT_DELETED}, ROW_NUMBER() {window} AS {_RANK} "
        f"FROM ({new}) AS n"
    )
    key_match = " AND ".join(f"s.{k} = h.{k}" for k in keys)
    close = Statement(
        f"MERGE {table.sql} AS h USING (SELECT {', '.join(keys)}, {_TIME}, {_DELETED} "
        f"FROM ({versions}) WHERE {_RANK} = 1) AS s ON {key_match} AND h.{_q(IS_CURRENT)} "
        f"WHEN MATCHED THEN UPDATE SET {_q(VALID_TO)} = s.{_TIME}, {_q(IS_CURRENT)} = FALSE, "
        f"{_q(DELETED_AT)} = IF(s.{_DELETED}, s.{_TIME}, NULL)"
    )
    version_names = ", ".join(_q(f.name) for f in VERSION_FIELDS)
    open_ = Statement(
        f"INSERT INTO {table.sql} ({', '.join(names)}, {version_names}) "
        f"SELECT {', '.join(names)}, {_TIME}, {_NEXT_TIME}, {_NEXT_TIME} IS NULL, "
        f"IF(COALESCE({_NEXT_DELETED}, FALSE), {_NEXT_TIME}, NULL) "
        f"FROM ({versions}) WHERE NOT {_DELETED}"
    )
    return [close, open_]
