"""Publishing a loaded staging table into the table readers use, atomically.

Two ways in, both a single atomic step for readers:

- `replace_table`: the target becomes exactly `SELECT <columns> FROM staging`.
  Without a watermark this is one `CREATE OR REPLACE TABLE target
  OPTIONS(description, labels) AS SELECT …`: readers see the old or the new
  table, and a failing statement leaves the old table untouched. With a
  watermark (a full reseed of an incremental source) it is a transaction
  `DELETE all; INSERT …; set mark` instead, because BigQuery does not allow
  CREATE OR REPLACE in a transaction (see `watermark`).
- `merge_changes`: the changes in staging are applied with one MERGE
  (deduplicated first: MERGE fails when two source rows match one target
  row) and the mark moves in the same transaction.

`SelectColumn.expression` is SQL over the staging table's columns, built by
callers from validated names (`export_pipeline.naming.quote_identifier`).
Scalar columns are wrapped in a CAST to their declared type (`sql.cast_to`)
unless marked `typed`, so a raw staging column is a valid expression; JSON, STRUCT and ARRAY
expressions must produce the declared type themselves (e.g. `PARSE_JSON(…)`),
which is checked after the CTAS. Never write a bare `CAST(x AS NUMERIC)` in an
expression: bqemulator 1.4.0 turns it into DECIMAL(18,3) (use the declared
type, or `NUMERIC(38, 9)`).

Why the CTAS has no column list (`CREATE TABLE t (c TYPE OPTIONS(description=…))
AS SELECT …`, which BigQuery accepts): bqemulator 1.4.0 parses it but ignores
the column descriptions, turns a declared JSON column into STRING and a
declared NUMERIC into DuckDB DECIMAL(18,3) (rounding to 3 decimals). So the
types come from CASTs in the SELECT, the table description and labels from
the CTAS OPTIONS, and column descriptions from a `tables.patch` right after
(`evolve.apply_metadata`, which also re-applies labels: the emulator ignores
labels in CTAS OPTIONS), and JSON columns the emulator reports as STRING
after a CTAS are patched back to JSON (`evolve.restore_declared_types`; a
no-op on BigQuery). Between the CTAS and the patch a reader can see the
new table without column descriptions for a moment; data is never partial.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from google.api_core import exceptions as google_exceptions
from google.cloud import bigquery
from google.cloud.bigquery import SchemaField

from export_pipeline.bigquery.deletes import DELETED_AT_FIELD, KeptDeletes
from export_pipeline.bigquery.evolve import (
    Convert,
    Widen,
    apply_metadata,
    convert_sql,
    null_sql,
    reconcile_schema,
    restore_declared_types,
    widened_field,
)
from export_pipeline.bigquery.layout import TableLayout
from export_pipeline.bigquery.layout_sync import (
    ensure_layout,
    ensure_storage,
    prepare_layout,
    pruning_condition,
)
from export_pipeline.bigquery.schema_policy import SchemaChange, SchemaPolicy
from export_pipeline.bigquery.sql import cast_to, column_type, standard_type, table_options
from export_pipeline.bigquery.tables import BigQueryPublishError, TableId, count_rows
from export_pipeline.bigquery.watermark import (
    Statement,
    Watermark,
    ensure_state_table,
    guard_statement,
    run_transaction,
    timestamp_literal,
    upsert_statement,
)
from export_pipeline.naming import quote_identifier


@dataclass(frozen=True)
class SelectColumn:
    """One target column: its name, SQL over staging columns, type, mode, description.

    `typed=True` says the expression already yields `field_type` (a staging
    column of that type, a typed literal, SQL typed by construction), so no
    CAST is added around it; otherwise scalar columns are CAST (`sql.cast_to`).
    Not casting what is already typed is also what keeps NUMERIC exact on
    bqemulator 1.4.0: in a query that calls a `SAFE.`-prefixed function
    (e.g. `SAFE.PARSE_JSON`, `SAFE.PARSE_DATE`) or `TIMESTAMP_MICROS`, it
    turns every `NUMERIC(38, 9)` cast into DECIMAL(18,3); a column passed
    through uncast keeps its type on both.
    """

    name: str
    expression: str
    field_type: str
    mode: str = "NULLABLE"
    description: str | None = None
    fields: tuple[SchemaField, ...] = field(default=())
    typed: bool = False

    def __post_init__(self) -> None:
        quote_identifier(self.name)  # validates
        if self.mode not in ("NULLABLE", "REQUIRED", "REPEATED"):
            raise ValueError(f"column {self.name}: unknown mode {self.mode!r}")

    @property
    def schema_field(self) -> SchemaField:
        return SchemaField(
            self.name,
            self.field_type,
            mode=self.mode,
            description=self.description,
            fields=self.fields,
        )

    @classmethod
    def passthrough(
        cls, staging_field: SchemaField, description: str | None = None
    ) -> SelectColumn:
        """The staging column as it is (same name, type and mode)."""
        return cls(
            name=staging_field.name,
            expression=quote_identifier(staging_field.name),
            field_type=staging_field.field_type,
            mode=staging_field.mode,
            description=description if description is not None else staging_field.description,
            fields=tuple(staging_field.fields),
            typed=True,
        )

    @classmethod
    def absent(cls, field: SchemaField) -> SelectColumn:
        """`field` with no value in these rows: NULL, or [] if REPEATED (`evolve.null_sql`)."""
        return cls(
            name=field.name,
            expression=null_sql(field),
            field_type=field.field_type,
            mode=field.mode,
            description=field.description,
            fields=tuple(field.fields),
            typed=True,
        )

    @classmethod
    def timestamp(cls, name: str, value: dt.datetime, description: str) -> SelectColumn:
        """A TIMESTAMP column holding `value` (aware) in every row, exactly to the microsecond.

        E.g. `_exported_at`, the time of the export the rows come from.
        """
        return cls(name, timestamp_literal(value), "TIMESTAMP", description=description, typed=True)

    @property
    def typed_sql(self) -> str:
        """The expression, CAST to the declared type unless `typed`."""
        if self.typed:
            return self.expression
        return cast_to(f"({self.expression})", self.schema_field)


@dataclass(frozen=True)
class PublishResult:
    """The published table, its rows afterwards, and a console link."""

    target: TableId
    rows: int
    console_url: str
    schema: list[SchemaField]
    # How the columns differ from the previous load's (None: not compared).
    schema_change: SchemaChange | None = None


def _check_columns(target: TableId, columns: Sequence[SelectColumn]) -> None:
    if not columns:
        raise ValueError(f"{target}: no columns to publish")
    seen: dict[str, str] = {}
    for c in columns:
        other = seen.setdefault(c.name.lower(), c.name)
        if other != c.name or sum(1 for x in columns if x.name.lower() == c.name.lower()) > 1:
            raise ValueError(
                f"{target}: columns {other!r} and {c.name!r} collide (names are case-insensitive)"
            )


def _query(client: bigquery.Client, sql: str, job_labels: Mapping[str, str] | None, what: str):
    try:
        return client.query(
            sql, job_config=bigquery.QueryJobConfig(labels=dict(job_labels or {}))
        ).result()
    except google_exceptions.GoogleAPICallError as error:
        raise BigQueryPublishError(f"{what} failed: {error}") from error


def _check_types(client: bigquery.Client, target: TableId, fields: Sequence[SchemaField]) -> None:
    """Fail loudly if a column came out of the CTAS with another type than declared.

    Scalar columns are CAST to their type; STRUCT and ARRAY columns are
    typed by the caller's expression alone, so a mistake there shows here.
    JSON columns are not checked: bqemulator 1.4.0 reports every JSON column
    a CTAS makes as STRING (BigQuery makes it JSON from `PARSE_JSON`/`TO_JSON`).
    """
    actual = {f.name.lower(): f for f in client.get_table(target.reference).schema}
    wrong = [
        f"{f.name}: declared {column_type(f)}, got {column_type(actual[f.name.lower()])}"
        for f in fields
        if f.name.lower() in actual
        and standard_type(f.field_type) != "JSON"
        and column_type(actual[f.name.lower()]) != column_type(f)
    ]
    if wrong:
        raise BigQueryPublishError(
            f"{target} was replaced but its columns have unexpected types "
            f"(fix the SelectColumn expressions): {'; '.join(wrong)}"
        )


def _result(client: bigquery.Client, target: TableId) -> PublishResult:
    count = count_rows(client, target)
    table = client.get_table(target.reference)
    return PublishResult(target, count, target.console_url, list(table.schema))


def _ensure_target(
    client: bigquery.Client,
    target: TableId,
    columns: Sequence[SelectColumn],
    description: str | None,
    labels: Mapping[str, str] | None,
    layout: TableLayout | None = None,
) -> None:
    """Create `target` empty with the columns' schema (and `layout`) if it does not exist yet."""
    schema = [c.schema_field for c in columns]
    table = (layout or TableLayout()).new_table(target.reference, schema, description, labels)
    client.create_table(table, exists_ok=True)


def _converted_selects(
    columns: Sequence[SelectColumn], effective: Sequence[SchemaField], convert: Convert
) -> list[tuple[str, str]]:
    """(quoted target column, SQL converting the column's expression to the target's type)."""
    by_name = {f.name.lower(): f for f in effective}
    out = []
    for c in columns:
        target_field = by_name[c.name.lower()]
        sql = convert(c.typed_sql, c.schema_field, target_field)
        out.append((quote_identifier(target_field.name), sql))
    return out


def _reconciled_target(
    client: bigquery.Client,
    target: TableId,
    columns: Sequence[SelectColumn],
    description: str | None,
    labels: Mapping[str, str] | None,
    job_labels: Mapping[str, str] | None,
    widen: Widen,
    convert: Convert,
    layout: TableLayout | None = None,
) -> list[tuple[str, str]]:
    """Before writing into an existing table (with its mark): the state table and the
    target exist, the target is laid out as `layout` says (`layout_sync.prepare_layout`
    when its partitioning or clustering differs), its schema is widened to hold
    `columns`, and each column's (quoted target name, SQL converting it to the
    target's type)."""
    ensure_state_table(client, target)
    if layout is not None:
        prepare_layout(client, target, layout, job_labels)
    _ensure_target(client, target, columns, description, labels, layout)
    effective = reconcile_schema(
        client,
        target,
        [c.schema_field for c in columns],
        job_labels=dict(job_labels or {}),
        widen=widen,
        convert=convert,
    )
    return _converted_selects(columns, effective, convert)


def replace_table(
    client: bigquery.Client,
    *,
    staging: TableId,
    target: TableId,
    select_columns: Sequence[SelectColumn],
    table_description: str,
    labels: Mapping[str, str] | None = None,
    watermark: Watermark | None = None,
    expected_previous: Watermark | None = None,
    job_labels: Mapping[str, str] | None = None,
    drop_staging: bool = True,
    widen: Widen = widened_field,
    convert: Convert = convert_sql,
    deletes: KeptDeletes | None = None,
    layout: TableLayout | None = None,
    schema_policy: SchemaPolicy | None = None,
) -> PublishResult:
    """Atomically make `target` hold exactly `SELECT select_columns FROM staging`.

    Without `watermark`: one CREATE OR REPLACE TABLE … AS SELECT (the
    schema becomes exactly `select_columns`). With `watermark`: the target
    keeps its identity and wider/extra columns (schema reconciled first, see
    `evolve.reconcile_schema`), and its rows are swapped in one transaction
    that also sets the mark; `expected_previous` is the mark read at the
    start of the run (None: none expected) and the transaction fails with
    `WatermarkConflictError` if it changed meanwhile.
    `layout` (`bigquery.layout`): partitioning, clustering, options, CMEK and
    policy tags the table is created or replaced with; its columns are checked
    against `select_columns` first (`LayoutError`, nothing published).
    The staging table is dropped after success (kept on failure, for
    diagnosis; it expires). `schema_policy`: the columns are compared with
    the target's first, and a change the policy forbids fails here, before
    anything is written (`schema_policy`).
    With `deletes` (soft/history) the rows are swapped in a transaction as with
    a watermark, rows the load lacks kept as deleted (`deletes.KeptDeletes`).
    """
    if deletes is not None:
        select_columns = [*select_columns, SelectColumn.absent(DELETED_AT_FIELD)]
    _check_columns(target, select_columns)
    if layout is not None:
        layout.check([c.schema_field for c in select_columns])
        labels = layout.labels_with(labels)
    change = None
    if schema_policy is not None:
        fields = [c.schema_field for c in select_columns]
        change = schema_policy.check(client, target, fields, complete=True)
    what = f"replacing {target} from {staging}"
    if (
        watermark is None
        and deletes is None
        and not (layout is not None and layout.needs_api_creation)
    ):
        selects = ", ".join(f"{c.typed_sql} AS {quote_identifier(c.name)}" for c in select_columns)
        fields = [c.schema_field for c in select_columns]
        clauses = layout.ddl_clauses(fields) + "\n" if layout is not None else ""
        options = layout.options() if layout is not None else {}
        if layout is not None:
            prepare_layout(client, target, layout, job_labels, keep_rows=False)
        sql = (
            f"CREATE OR REPLACE TABLE {target.sql}\n{clauses}"
            f"{table_options(table_description, dict(labels or {}), options)}\n"
            f"AS SELECT {selects} FROM {staging.sql}"
        )
        _query(client, sql, job_labels, what)
        _check_types(client, target, fields)
        restore_declared_types(client, target, fields)
        if layout is not None:
            ensure_storage(client, target, layout)
    else:
        pairs = _reconciled_target(
            client,
            target,
            select_columns,
            table_description,
            labels,
            job_labels,
            widen,
            convert,
            layout,
        )
        if deletes is None:
            insert = Statement(
                f"INSERT INTO {target.sql} ({', '.join(name for name, _ in pairs)}) "
                f"SELECT {', '.join(sql for _, sql in pairs)} FROM {staging.sql}"
            )
            swap = [Statement(f"DELETE FROM {target.sql} WHERE TRUE"), insert]
        else:
            swap = deletes.replace_statements(
                client,
                target=target,
                staging=staging,
                pairs=pairs,
                widen=widen,
                convert=convert,
                job_labels=dict(job_labels or {}),
            )
        mark = [] if watermark is None else [upsert_statement(target, watermark)]
        guard = (
            []
            if watermark is None
            else [guard_statement(target, watermark.source_key, expected_previous)]
        )
        # Without a watermark or deletes: ingestion-time partitioning
        # (`TableLayout.needs_api_creation`), a table created through the API.
        run_transaction(
            client,
            [*guard, *swap, *mark],
            job_labels=dict(job_labels or {}),
            description=what,
        )
        fields = [c.schema_field for c in select_columns]
    apply_metadata(client, target, fields, table_description, dict(labels or {}))
    if layout is not None:
        ensure_layout(client, target, layout)
    if drop_staging:
        client.delete_table(staging.reference, not_found_ok=True)
    return dataclasses.replace(_result(client, target), schema_change=change)


def merge_changes(
    client: bigquery.Client,
    *,
    staging: TableId,
    target: TableId,
    key_columns: Sequence[str],
    order_column: str,
    deleted_column: str | None,
    columns: Sequence[SelectColumn],
    watermark: Watermark,
    expected_previous: Watermark | None,
    table_description: str | None = None,
    labels: Mapping[str, str] | None = None,
    job_labels: Mapping[str, str] | None = None,
    drop_staging: bool = True,
    widen: Widen = widened_field,
    convert: Convert = convert_sql,
    deletes: KeptDeletes | None = None,
    layout: TableLayout | None = None,
) -> PublishResult:
    """Apply the change rows in `staging` to `target` and move the mark, in one transaction.

    - `columns`: the target columns, as expressions over staging columns.
    - `key_columns`: names of target columns (among `columns`) that identify a row.
    - `order_column`: a staging column; of several changes to one key the one
      with the greatest value wins (e.g. the write timestamp).
    - `deleted_column`: a BOOL staging column, TRUE for a deletion (None: no deletes).
    Target rows whose key is deleted are removed, others updated or inserted;
    a deletion of a key the target does not have is a no-op. Columns of the
    target not in `columns` keep their values on update and are NULL on insert.
    `expected_previous`: the mark read at the start of the run (see
    `replace_table`).
    With `deletes` (soft/history) a deleted key's row stays with `_deleted_at`
    set, an upsert clears it, and the history gets the changes as versions.
    `layout`: as in `replace_table`; the MERGE's match condition
    also holds a constant range of the layout's key columns, computed from
    staging, so BigQuery can prune the target's blocks (`layout_sync.pruning_condition`).
    """
    if deletes is not None:
        columns = [*columns, SelectColumn.absent(DELETED_AT_FIELD)]
    _check_columns(target, columns)
    if layout is not None:
        layout.check([c.schema_field for c in columns])
        labels = layout.labels_with(labels)
    names = {c.name.lower(): c for c in columns}
    if not key_columns:
        raise ValueError(f"{target}: merge needs key columns")
    missing = [k for k in key_columns if k.lower() not in names]
    if missing:
        raise ValueError(f"{target}: key columns {missing} are not among the columns")
    what = f"merging {staging} into {target}"
    pairs = _reconciled_target(
        client, target, columns, table_description, labels, job_labels, widen, convert, layout
    )
    keys = [quote_identifier(names[k.lower()].name) for k in key_columns]
    deleted = f"COALESCE({quote_identifier(deleted_column)}, FALSE)" if deleted_column else "FALSE"
    partition = ", ".join(f"({names[k.lower()].expression})" for k in key_columns)
    source = (
        f"SELECT {', '.join(f'{sql} AS {name}' for name, sql in pairs)}, "
        f"{deleted} AS __export_pipeline_deleted "
        f"FROM {staging.sql} WHERE TRUE "
        f"QUALIFY ROW_NUMBER() OVER (PARTITION BY {partition} "
        f"ORDER BY {quote_identifier(order_column)} DESC) = 1"
    )
    prune = ""
    if layout is not None:
        key_fields = [names[k.lower()].schema_field for k in key_columns]
        prune = pruning_condition(client, source, layout, key_fields, alias="t")
    on = " AND ".join(f"t.{k} = s.{k}" for k in keys) + prune
    non_keys = [name for name, _ in pairs if name not in keys]
    update = ", ".join(f"{n} = s.{n}" for n in non_keys)
    all_names = [name for name, _ in pairs]
    merge_sql = (
        f"MERGE {target.sql} AS t USING ({source}) AS s ON {on} "
        "WHEN MATCHED AND s.__export_pipeline_deleted THEN DELETE "
        + (f"WHEN MATCHED THEN UPDATE SET {update} " if update else "")
        + "WHEN NOT MATCHED AND NOT s.__export_pipeline_deleted THEN "
        f"INSERT ({', '.join(all_names)}) VALUES ({', '.join(f's.{n}' for n in all_names)})"
    )
    if deletes is None:
        merge = [Statement(merge_sql)]
    else:
        merge = deletes.merge_statements(
            client,
            target=target,
            staging=staging,
            pairs=pairs,
            key_columns=keys,
            partition=partition,
            order_column=order_column,
            deleted_sql=deleted,
            prune=prune,
            widen=widen,
            convert=convert,
            job_labels=dict(job_labels or {}),
        )
    run_transaction(
        client,
        [
            guard_statement(target, watermark.source_key, expected_previous),
            *merge,
            upsert_statement(target, watermark),
        ],
        job_labels=dict(job_labels or {}),
        description=what,
    )
    apply_metadata(
        client,
        target,
        [c.schema_field for c in columns],
        table_description,
        None if labels is None else dict(labels),
    )
    if layout is not None:
        ensure_layout(client, target, layout)
    if drop_staging:
        client.delete_table(staging.reference, not_found_ok=True)
    return _result(client, target)
