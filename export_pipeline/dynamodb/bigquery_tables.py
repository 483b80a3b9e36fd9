"""The DynamoDB loader's BigQuery writes, on top of the shared `export_pipeline.bigquery`.

The shared package does the staging load, the atomic replace, the MERGE and
the high-water mark (in `_export_pipeline_state`, written in the same
transaction as the data). This module only adds what DynamoDB needs on top:

- schema changes go through the shared `reconcile_schema` (new columns and
  widened types in one rewrite that BigQuery and bqemulator both accept);
- whole-image upserts: a DynamoDB NewImage is the complete item, so target
  columns the image lacks are set to NULL (the shared MERGE keeps columns it
  is not given);
- deletes a widened window cannot carry (see `merge_changes`);
- the table's layout (`layout_of`): configured attribute names resolved to
  the columns the loader gave them, clustered on the key schema by default
  in incremental mode.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from google.cloud import bigquery
from google.cloud.bigquery import SchemaField

from export_pipeline import bigquery as core
from export_pipeline.bigquery.deletes import DELETED_AT, KeptDeletes
from export_pipeline.bigquery.layout import CLUSTER_TYPES, TableLayout
from export_pipeline.bigquery.schema_policy import SchemaChange, SchemaPolicy
from export_pipeline.bigquery.sql import standard_type
from export_pipeline.bigquery.watermark import timestamp_literal
from export_pipeline.dynamodb import widening
from export_pipeline.dynamodb.column_names import (
    RecordedColumns,
    attribute_of_description,
    recorded_columns,
)
from export_pipeline.dynamodb.convert import (
    DELETED_COLUMN,
    WRITE_TIMESTAMP_COLUMN,
    ColumnSpec,
    ConversionResult,
)
from export_pipeline.naming import quote_identifier
from export_pipeline.table_settings import DeletesMode, SchemaChanges, TableSettings

EXPORTED_AT = "_exported_at"
EXPORTED_AT_DESCRIPTION = (
    "Time of the DynamoDB export this row was loaded from (the data are as of this time)."
)
# The columns the loader keeps in DynamoDB tables besides the attributes.
PIPELINE_COLUMNS = (EXPORTED_AT, WRITE_TIMESTAMP_COLUMN, DELETED_AT)
# Each change's time: Metadata.WriteTimestampMicros of its record, exactly. (Not
# TIMESTAMP_MICROS: see `watermark.timestamp_literal`.)
CHANGE_TIME_SQL = (
    "TIMESTAMP_ADD(TIMESTAMP '1970-01-01 00:00:00+00', "
    f"INTERVAL {quote_identifier(WRITE_TIMESTAMP_COLUMN)} MICROSECOND)"
)


def kept_deletes(
    deletes: DeletesMode, keys: list[str], as_of: datetime, *, incremental: bool
) -> KeptDeletes | None:
    """How a `soft`/`history` DynamoDB table keeps deletions (None: `hard`).

    `keys`: the key schema's columns. A full load dates a deletion at the
    export's time; an incremental one at the change's WriteTimestampMicros.
    """
    if deletes is DeletesMode.HARD:
        return None
    return KeptDeletes(
        deletes,
        tuple(keys),
        as_of,
        change_time=CHANGE_TIME_SQL if incremental else None,
        bookkeeping_columns=PIPELINE_COLUMNS,
    )


def schema_policy(mode: SchemaChanges) -> SchemaPolicy:
    """The table's policy; the loader's own columns are not compared."""
    return SchemaPolicy(mode, frozenset(PIPELINE_COLUMNS))


def schema_field(column: ColumnSpec) -> SchemaField:
    return SchemaField(
        column.name, column.bq_type, mode=column.mode, description=column.description
    )


def _exported_at(exported_at: datetime) -> core.SelectColumn:
    return core.SelectColumn.timestamp(EXPORTED_AT, exported_at, EXPORTED_AT_DESCRIPTION)


def layout_of(
    client: bigquery.Client,
    target: core.TableId,
    table: str,
    settings: TableSettings,
    result: ConversionResult,
    default_cluster_by: list[str] | None,
) -> TableLayout:
    """The table's layout, checked against its columns before anything is staged.

    Settings name attributes; an attribute maps to the column this
    conversion gave it, else to the column the table recorded for it (an
    incremental window need not hold every attribute). `default_cluster_by`:
    the key attributes (incremental mode), used when `cluster_by` is not set.
    Raises `LayoutError` naming the table, the setting and the column.
    """
    existing = table_schema(client, target)
    names: dict[str, str] = {EXPORTED_AT: EXPORTED_AT}
    for field in existing:
        attribute = attribute_of_description(field.description or "")
        names[attribute if attribute is not None else field.name] = field.name
    names.update({c.source_name: c.name for c in result.columns if c.source_name is not None})
    schema = {f.name.lower(): f for f in existing}
    schema.update({c.name.lower(): schema_field(c) for c in result.columns})
    schema[EXPORTED_AT] = SchemaField(EXPORTED_AT, "TIMESTAMP")
    # A key BigQuery cannot cluster on (a binary `B` key is BYTES) is left
    # out of the default; a configured one fails in `check`.
    default = [
        k
        for k in default_cluster_by or []
        if k in names
        and k.lower() != EXPORTED_AT
        and standard_type(schema[names[k].lower()].field_type) in CLUSTER_TYPES
        and schema[names[k].lower()].mode != "REPEATED"
    ]
    layout = TableLayout.from_settings(table, settings.bigquery, names, default)
    layout.check(list(schema.values()))
    return layout


def stage(
    client: bigquery.Client,
    target: core.TableId,
    result: ConversionResult,
    run_id: str,
    expected_rows: int | None,
    layout: TableLayout | None = None,
    gcs: core.GcsStaging | None = None,
    staged_uris: Sequence[core.GcsUri] = (),
) -> core.StagingResult:
    """Load the converted Parquet files into a fresh staging table (the shared staging load).

    `gcs`: through GCS; `staged_objects_deleted` then deletes the objects after publishing.
    `staged_uris`: the Parquet is in GCS already (written there by the conversion's
    steps), so BigQuery's load jobs read these URIs and `result.parquet_files` is unused.
    """
    schema = [schema_field(c) for c in result.columns]
    staging = core.staging_table_id(target, run_id)
    encryption = layout.encryption if layout is not None else None
    if staged_uris:
        return core.load_uris_to_staging(
            client,
            staged_uris,
            staging,
            schema,
            expected_rows=expected_rows,
            encryption=encryption,
        )
    return core.load_parquet_to_staging(
        client,
        result.parquet_files,
        staging,
        schema,
        expected_rows=expected_rows,
        encryption=encryption,
        gcs=gcs,
    )


@contextmanager
def staged_objects_deleted(
    gcs: core.GcsStaging | None, staged: core.StagingResult
) -> Iterator[None]:
    """Delete the GCS objects `staged` was loaded from once publishing ends (either way).

    The staging table holds their rows, so a failed publish keeps what a
    diagnosis needs, and a re-run stages afresh.
    """
    try:
        yield
    finally:
        core.delete_staged(gcs, staged.table)


def replace_table(
    client: bigquery.Client,
    target: core.TableId,
    result: ConversionResult,
    *,
    run_id: str,
    exported_at: datetime,
    description: str,
    watermark: core.Watermark | None,
    expected_previous: core.Watermark | None,
    deletes: DeletesMode = DeletesMode.HARD,
    key_attributes: list[str] | None = None,
    layout: TableLayout | None = None,
    schema_changes: SchemaChanges = SchemaChanges.ALLOW,
    gcs: core.GcsStaging | None = None,
    staged_uris: Sequence[core.GcsUri] = (),
) -> tuple[core.StagingResult, SchemaChange | None]:
    """Make `target` exactly the full export, every row stamped `_exported_at`.

    Without a watermark (mode full) the shared publish replaces the table with one CTAS;
    with one (seeding an incremental table) it swaps the rows and sets the
    mark in one transaction, the table keeping its identity. Returns the
    staging load and how the columns differ from the previous load's.
    """
    staged = stage(
        client,
        target,
        result,
        run_id,
        expected_rows=result.item_count,
        layout=layout,
        gcs=gcs,
        staged_uris=staged_uris,
    )
    with staged_objects_deleted(gcs, staged):
        columns = [
            core.SelectColumn.passthrough(schema_field(c), c.description) for c in result.columns
        ]
        columns.append(_exported_at(exported_at))
        published = core.replace_table(
            client,
            staging=staged.table,
            target=target,
            select_columns=columns,
            table_description=description,
            watermark=watermark,
            expected_previous=expected_previous,
            widen=widening.widened_field,
            convert=widening.convert_sql,
            deletes=kept_deletes(
                deletes, key_columns(result, key_attributes or []), exported_at, incremental=False
            ),
            layout=layout,
            schema_policy=schema_policy(schema_changes),
        )
        return staged, published.schema_change


def merge_changes(
    client: bigquery.Client,
    target: core.TableId,
    result: ConversionResult,
    *,
    run_id: str,
    key_attributes: list[str],
    window_start: datetime,
    exported_at: datetime,
    description: str,
    watermark: core.Watermark,
    expected_previous: core.Watermark,
    deletes: DeletesMode = DeletesMode.HARD,
    layout: TableLayout | None = None,
    schema_changes: SchemaChanges = SchemaChanges.ALLOW,
    gcs: core.GcsStaging | None = None,
) -> tuple[core.StagingResult, SchemaChange | None]:
    """Apply converted incremental changes with the shared MERGE (+ the mark, atomically).

    Per key the latest change (`_write_timestamp_micros`) wins; a delete
    removes the row; an upsert writes the whole new image (target columns
    the image lacks become NULL). Rows keep `_write_timestamp_micros` (the
    last write seen; NULL for rows from a full export) for one more rule,
    needed when a window starts before the mark (a widened window): an item
    created inside the window and deleted later is absent from the export
    (AWS leaves such items out), yet BigQuery may hold it from the previous
    load. Every row last written at or after `window_start` must appear in
    the export unless it ended deleted, so for such rows that are absent a
    deletion is added to the staging table before the MERGE (without a write
    time: when it happened is not known, so a kept deletion is dated at the
    export's time).

    `deletes` soft/history: a delete keeps the row with `_deleted_at` (the
    change's WriteTimestampMicros) and the history gets every change
    (`kept_deletes`).

    The columns are compared with the target's before its schema is widened
    (`schema_policy`; a change set cannot show a removed column): a change
    the policy forbids fails before anything is written.
    """
    staged = stage(
        client, target, result, run_id, expected_rows=result.item_count, layout=layout, gcs=gcs
    )
    with staged_objects_deleted(gcs, staged):
        data = [c for c in result.columns if c.name != DELETED_COLUMN]
        desired = [schema_field(c) for c in data]
        desired.append(_exported_at(exported_at).schema_field)
        change = schema_policy(schema_changes).check(client, target, desired, complete=False)
        schema = core.reconcile_schema(
            client, target, desired, widen=widening.widened_field, convert=widening.convert_sql
        )
        keys = key_columns(result, key_attributes)
        _add_implied_deletes(client, target, staged.table, keys, window_start)
        from_staging = {c.name.lower(): c for c in data}
        kept = kept_deletes(deletes, keys, exported_at, incremental=True)
        columns: list[core.SelectColumn] = []
        for field in schema:
            name = field.name.lower()
            if name == DELETED_AT and kept is not None:
                continue  # the shared MERGE keeps it (`deletes.KeptDeletes`)
            if name == EXPORTED_AT:
                columns.append(_exported_at(exported_at))
            elif name in from_staging:
                spec = from_staging[name]
                # The description records the attribute and every type the column was typed for.
                columns.append(core.SelectColumn.passthrough(schema_field(spec), spec.description))
            else:  # an attribute this image does not have: NULL (or empty array)
                columns.append(core.SelectColumn.absent(field))
        core.merge_changes(
            client,
            staging=staged.table,
            target=target,
            key_columns=keys,
            order_column=WRITE_TIMESTAMP_COLUMN,
            deleted_column=DELETED_COLUMN,
            columns=columns,
            watermark=watermark,
            expected_previous=expected_previous,
            table_description=description,
            widen=widening.widened_field,
            convert=widening.convert_sql,
            deletes=kept,
            layout=layout,
        )
        return staged, change


def _add_implied_deletes(
    client: bigquery.Client,
    target: core.TableId,
    staging: core.TableId,
    keys: list[str],
    window_start: datetime,
) -> None:
    target_columns = {f.name.lower() for f in client.get_table(target.reference).schema}
    if WRITE_TIMESTAMP_COLUMN not in target_columns:
        return  # only rows from full exports: none was written inside a window
    quoted = [quote_identifier(k) for k in keys]
    match = " AND ".join(f"s.{k} = t.{k}" for k in quoted)
    start = timestamp_literal(window_start)
    client.query(
        f"INSERT INTO {staging.sql} ({', '.join(quoted)}, {DELETED_COLUMN}, "
        f"{WRITE_TIMESTAMP_COLUMN}) "
        f"SELECT {', '.join(f't.{k}' for k in quoted)}, TRUE, NULL "
        f"FROM {target.sql} AS t WHERE t.{WRITE_TIMESTAMP_COLUMN} >= UNIX_MICROS({start}) "
        f"AND NOT EXISTS (SELECT 1 FROM {staging.sql} AS s WHERE {match})"
    ).result()


def key_columns(result: ConversionResult, key_attributes: list[str]) -> list[str]:
    """BigQuery column names of the key attributes."""
    by_source = {c.source_name: c.name for c in result.columns if c.source_name is not None}
    return [by_source[k] for k in key_attributes]


def distinct_key_count(client: bigquery.Client, target: core.TableId, keys: list[str]) -> int:
    columns = ", ".join(quote_identifier(k) for k in keys)
    rows = list(
        client.query(
            f"SELECT COUNT(*) AS n FROM (SELECT DISTINCT {columns} FROM {target.sql})"
        ).result()
    )
    return int(rows[0]["n"])


def recorded(client: bigquery.Client, target: core.TableId) -> RecordedColumns:
    """The target's attribute -> column mapping and taken names (empty before the first load).

    Read before every conversion, so that full, incremental and reseed loads
    all map an attribute to the column it was given first.
    """
    return recorded_columns(table_schema(client, target), internal=PIPELINE_COLUMNS)


def table_schema(client: bigquery.Client, target: core.TableId) -> list[Any]:
    from google.api_core.exceptions import NotFound

    try:
        return list(client.get_table(target.reference).schema)
    except NotFound:
        return []
