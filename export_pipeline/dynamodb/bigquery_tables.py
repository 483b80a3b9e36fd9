"""The DynamoDB loader's BigQuery writes, on top of the shared `export_pipeline.bigquery`.

BQ-core's package does the staging load, the atomic replace, the MERGE and
the high-water mark (in `_export_pipeline_state`, written in the same
transaction as the data). This module only adds what DynamoDB needs on top:

- `prepare_schema`: adds new columns and widens changed ones in ONE rewrite
  (`CREATE OR REPLACE TABLE … AS SELECT`), using BQ-core's widening lattice
  (`widened_field`, `convert_sql`). BQ-core's `add_columns` uses
  `tables.update`, which real BigQuery honours but bqemulator 1.4.0 does not
  apply to the stored data (a later SELECT/INSERT of the new column fails
  there); the rewrite works on both, at the cost of a table scan when the
  schema actually changes. When this runs first, BQ-core's own
  `reconcile_schema` finds nothing left to do.
- whole-image upserts: a DynamoDB NewImage is the complete item, so target
  columns the image lacks are set to NULL (BQ-core's MERGE keeps columns it
  is not given);
- deletes a widened window cannot carry (see `merge_changes`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.cloud import bigquery
from google.cloud.bigquery import SchemaField

from export_pipeline import bigquery as core
from export_pipeline.bigquery.evolve import apply_metadata, convert_sql, same_type
from export_pipeline.bigquery.sql import column_definition, column_type, table_options
from export_pipeline.bigquery.watermark import timestamp_literal
from export_pipeline.dynamodb.convert import (
    DELETED_COLUMN,
    WRITE_TIMESTAMP_COLUMN,
    ColumnSpec,
    ConversionResult,
)
from export_pipeline.naming import quote_identifier

EXPORTED_AT = "_exported_at"
EXPORTED_AT_DESCRIPTION = (
    "Time of the DynamoDB export this row was loaded from (the data are as of this time)."
)


def schema_field(column: ColumnSpec) -> SchemaField:
    return SchemaField(
        column.name, column.bq_type, mode=column.mode, description=column.description
    )


def _exported_at(exported_at: datetime) -> core.SelectColumn:
    return core.SelectColumn(
        name=EXPORTED_AT,
        expression=timestamp_literal(exported_at),
        field_type="TIMESTAMP",
        description=EXPORTED_AT_DESCRIPTION,
    )


def stage(
    client: bigquery.Client,
    target: core.TableId,
    result: ConversionResult,
    run_id: str,
    expected_rows: int | None,
) -> core.StagingResult:
    """Upload the converted Parquet files into a fresh staging table (BQ-core)."""
    schema = [schema_field(c) for c in result.columns]
    staging = core.staging_table_id(target, run_id)
    return core.load_parquet_to_staging(
        client, result.parquet_files, staging, schema, expected_rows=expected_rows
    )


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
) -> core.StagingResult:
    """Make `target` exactly the full export, every row stamped `_exported_at`.

    Without a watermark (mode full) BQ-core replaces the table with one CTAS;
    with one (seeding an incremental table) it swaps the rows and sets the
    mark in one transaction, the table keeping its identity.
    """
    staged = stage(client, target, result, run_id, expected_rows=result.item_count)
    columns = [
        core.SelectColumn.passthrough(schema_field(c), c.description) for c in result.columns
    ]
    columns.append(_exported_at(exported_at))
    if watermark is not None:
        _create_if_missing(client, target, [c.schema_field for c in columns], description)
        prepare_schema(client, target, [c.schema_field for c in columns])
    core.replace_table(
        client,
        staging=staged.table,
        target=target,
        select_columns=columns,
        table_description=description,
        watermark=watermark,
        expected_previous=expected_previous,
    )
    return staged


def _create_if_missing(
    client: bigquery.Client, target: core.TableId, fields: list[SchemaField], description: str
) -> None:
    table = bigquery.Table(target.reference, schema=fields)
    table.description = description
    client.create_table(table, exists_ok=True)


def prepare_schema(
    client: bigquery.Client, target: core.TableId, desired: list[SchemaField]
) -> list[SchemaField]:
    """Give `target` every desired column, widened where needed, in one rewrite.

    Returns the schema afterwards. Existing columns not desired are kept.
    """
    table = client.get_table(target.reference)
    existing = {f.name.lower(): f for f in table.schema}
    changed = False
    new_schema: list[SchemaField] = []
    selects: list[str] = []
    for field in table.schema:
        want = next((d for d in desired if d.name.lower() == field.name.lower()), None)
        new = field if want is None else core.widened_field(field, want)
        if not same_type(new, field) or new.mode != field.mode:
            changed = True
        name = quote_identifier(field.name)
        selects.append(f"{convert_sql(name, field, new)} AS {name}")
        new_schema.append(new)
    for want in desired:
        if want.name.lower() not in existing:
            changed = True
            selects.append(f"CAST(NULL AS {column_type(want)}) AS {quote_identifier(want.name)}")
            new_schema.append(want)
    if not changed:
        return list(table.schema)
    client.query(
        f"CREATE OR REPLACE TABLE {target.sql} (\n  "
        + ",\n  ".join(column_definition(f) for f in new_schema)
        + f"\n) {table_options(table.description, table.labels)}\nAS SELECT "
        + ", ".join(selects)
        + f" FROM {target.sql}"
    ).result()
    _restore_types(client, target, new_schema)
    apply_metadata(client, target, new_schema, table.description, table.labels)
    return list(client.get_table(target.reference).schema)


def _restore_types(
    client: bigquery.Client, target: core.TableId, intended: list[SchemaField]
) -> None:
    """Make the table's column types the declared ones if the rewrite reported others.

    A no-op on BigQuery, where the CTAS column list is the schema. bqemulator
    1.4.0 reports every JSON column of a CTAS result as STRING (the values
    stay JSON), which would make the next load try to narrow JSON to STRING;
    patching the schema's types back (what `tables.patch` allows there)
    keeps the table what the DDL said. Same idea as BQ-core's `apply_metadata`.
    """
    table = client.get_table(target.reference)
    wanted = {f.name.lower(): f for f in intended}
    if all(
        f.name.lower() not in wanted
        or (same_type(f, wanted[f.name.lower()]) and f.mode == wanted[f.name.lower()].mode)
        for f in table.schema
    ):
        return
    table.schema = [
        SchemaField(
            f.name,
            wanted[f.name.lower()].field_type if f.name.lower() in wanted else f.field_type,
            mode=wanted[f.name.lower()].mode if f.name.lower() in wanted else f.mode,
            description=f.description,
            fields=f.fields,
        )
        for f in table.schema
    ]
    client.update_table(table, ["schema"])


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
) -> core.StagingResult:
    """Apply converted incremental changes with BQ-core's MERGE (+ the mark, atomically).

    Per key the latest change (`_write_timestamp_micros`) wins; a delete
    removes the row; an upsert writes the whole new image (target columns
    the image lacks become NULL). Rows keep `_write_timestamp_micros` (the
    last write seen; NULL for rows from a full export) for one more rule,
    needed when a window starts before the mark (a widened window): an item
    created inside the window and deleted later is absent from the export
    (AWS leaves such items out), yet BigQuery may hold it from the previous
    load. Every row last written at or after `window_start` must appear in
    the export unless it ended deleted, so for such rows that are absent a
    deletion is added to the staging table before the MERGE.
    """
    staged = stage(client, target, result, run_id, expected_rows=result.item_count)
    data = [c for c in result.columns if c.name != DELETED_COLUMN]
    desired = [schema_field(c) for c in data]
    desired.append(_exported_at(exported_at).schema_field)
    schema = prepare_schema(client, target, desired)
    keys = key_columns(result, key_attributes)
    _add_implied_deletes(client, target, staged.table, keys, window_start)
    from_staging = {c.name.lower(): c for c in data}
    columns: list[core.SelectColumn] = []
    for field in schema:
        name = field.name.lower()
        if name == EXPORTED_AT:
            columns.append(_exported_at(exported_at))
        elif name in from_staging:
            spec = from_staging[name]
            columns.append(
                core.SelectColumn.passthrough(schema_field(spec), field.description or None)
            )
        else:  # an attribute this image does not have: NULL (or empty array)
            columns.append(
                core.SelectColumn(
                    name=field.name,
                    expression=f"CAST(NULL AS {column_type(field)})",
                    field_type=field.field_type,
                    mode=field.mode,
                    description=field.description,
                )
            )
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
    )
    return staged


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
        f"SELECT {', '.join(f't.{k}' for k in quoted)}, TRUE, t.{WRITE_TIMESTAMP_COLUMN} "
        f"FROM {target.sql} AS t WHERE t.{WRITE_TIMESTAMP_COLUMN} >= UNIX_MICROS({start}) "
        f"AND NOT EXISTS (SELECT 1 FROM {staging.sql} AS s WHERE {match})"
    ).result()


def key_columns(result: ConversionResult, key_attributes: list[str]) -> list[str]:
    """BigQuery column names of the key attributes."""
    by_source = {c.source_name: c.name for c in result.columns if c.source_name is not None}
    return [by_source[k] for k in key_attributes]


def row_count(client: bigquery.Client, target: core.TableId) -> int:
    rows = list(client.query(f"SELECT COUNT(*) AS n FROM {target.sql}").result())
    return int(rows[0]["n"])


def distinct_key_count(client: bigquery.Client, target: core.TableId, keys: list[str]) -> int:
    columns = ", ".join(quote_identifier(k) for k in keys)
    rows = list(
        client.query(
            f"SELECT COUNT(*) AS n FROM (SELECT DISTINCT {columns} FROM {target.sql})"
        ).result()
    )
    return int(rows[0]["n"])


def table_schema(client: bigquery.Client, target: core.TableId) -> list[Any]:
    from google.api_core.exceptions import NotFound

    try:
        return list(client.get_table(target.reference).schema)
    except NotFound:
        return []
