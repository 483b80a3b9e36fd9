"""Bringing an existing table to its `TableLayout`, and the MERGE's pruning filter.

`ensure_layout` rebuilds a table whose partitioning or clustering differs
from its configuration (one CTAS of itself, atomic for readers) and patches
the options that can change in place; `ensure_storage` follows a CTAS that
carried the layout's clauses (see its docstring for what bqemulator keeps);
`pruning_condition` lets a MERGE prune the target's blocks.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from decimal import Decimal

from google.api_core.exceptions import GoogleAPICallError
from google.cloud import bigquery
from google.cloud.bigquery import SchemaField

from export_pipeline.bigquery.evolve import METADATA_RETRY, apply_metadata, restore_declared_types
from export_pipeline.bigquery.layout import LayoutError, TableLayout
from export_pipeline.bigquery.sql import standard_type, string_literal, table_options
from export_pipeline.bigquery.tables import BigQueryPublishError, TableId
from export_pipeline.bigquery.watermark import timestamp_literal
from export_pipeline.naming import quote_identifier


def ensure_layout(
    client: bigquery.Client,
    target: TableId,
    layout: TableLayout,
    job_labels: Mapping[str, str] | None = None,
    *,
    rebuild: bool = True,
) -> bigquery.Table:
    """Make an existing `target` laid out as `layout` says.

    A different partitioning or clustering (`rebuild=True`) rebuilds the
    table with one `CREATE OR REPLACE TABLE … PARTITION BY … CLUSTER BY …
    AS SELECT * FROM` itself: readers see the old or the new table, rows and
    column metadata are kept. Then the options that can change in place
    (require_partition_filter, partition expiration, CMEK, policy tags) are
    patched with `tables.patch` where the table reports otherwise.
    """
    table = client.get_table(target.reference)
    if rebuild and layout.differences(table):
        table = _rebuild(client, target, table, layout, job_labels)
    return _patch_options(client, table, layout)


def _rebuild(
    client: bigquery.Client,
    target: TableId,
    table: bigquery.Table,
    layout: TableLayout,
    job_labels: Mapping[str, str] | None,
) -> bigquery.Table:
    if layout.needs_api_creation:
        raise LayoutError(
            f"{layout.table}: bigquery.partition: {target} exists with "
            f"{'; '.join(layout.differences(table))}, and BigQuery cannot rebuild a table "
            "into ingestion-time partitioning in one statement; drop the table (the next "
            "load recreates it) or choose a column partitioning"
        )
    schema = list(table.schema)
    options = layout.options()
    sql = (
        f"CREATE OR REPLACE TABLE {target.sql}\n{layout.ddl_clauses(schema)}\n"
        f"{table_options(table.description, dict(table.labels or {}), options)}\n"
        f"AS SELECT * FROM {target.sql}"
    )
    config = bigquery.QueryJobConfig(labels=dict(job_labels or {}))
    try:
        client.query(sql, job_config=config).result()
    except GoogleAPICallError as error:
        raise BigQueryPublishError(
            f"rebuilding {target} with {'; '.join(layout.differences(table))} failed "
            f"(the table is unchanged): {error}"
        ) from error
    restore_declared_types(client, target, schema)
    apply_metadata(client, target, schema, table.description, dict(table.labels or {}))
    return ensure_storage(client, target, layout)


def ensure_storage(client: bigquery.Client, target: TableId, layout: TableLayout) -> bigquery.Table:
    """After a CTAS that carried `layout`'s clauses: patch what the table does not report.

    On BigQuery the CTAS has set partitioning and clustering, so nothing is
    sent. bqemulator 1.4.0 keeps only a plain `PARTITION BY <column>` from
    DDL (no `*_TRUNC`, `RANGE_BUCKET` or `CLUSTER BY`) but stores them from
    `tables.patch`, which is what this sends when they differ.
    """
    table = client.get_table(target.reference)
    if not layout.differences(table):
        return table
    fields = ["clustering_fields"]
    table.clustering_fields = list(layout.cluster_by) or None
    if layout.partition is not None:
        layout.set_storage(table)
        fields.append(
            "range_partitioning"
            if layout.partition.kind == "integer_range"
            else "time_partitioning"
        )
    return client.update_table(table, fields, retry=METADATA_RETRY)


def _patch_options(
    client: bigquery.Client, table: bigquery.Table, layout: TableLayout
) -> bigquery.Table:
    """Patch require_partition_filter, partition expiration, CMEK and policy tags."""
    fields: list[str] = []
    if layout.partition is not None:
        if bool(table.require_partition_filter) != layout.require_partition_filter:
            table.require_partition_filter = layout.require_partition_filter
            fields.append("require_partition_filter")
        tp = table.time_partitioning
        if (
            layout.partition.kind != "integer_range"
            and tp is not None
            and (int(tp.expiration_ms) if tp.expiration_ms else None) != layout.expiration_ms
        ):
            tp.expiration_ms = layout.expiration_ms
            table.time_partitioning = tp
            fields.append("time_partitioning")
    current_key = (
        table.encryption_configuration.kms_key_name
        if table.encryption_configuration is not None
        else None
    )
    if layout.kms_key_name is not None and current_key != layout.kms_key_name:
        table.encryption_configuration = layout.encryption
        fields.append("encryption_configuration")
    if layout.policy_tags:
        tagged = layout.tagged(table.schema)
        if [f.to_api_repr() for f in tagged] != [f.to_api_repr() for f in table.schema]:
            table.schema = tagged
            fields.append("schema")
    if not fields:
        return table
    return client.update_table(table, fields, retry=METADATA_RETRY)


def pruning_condition(
    client: bigquery.Client,
    source_sql: str,
    layout: TableLayout,
    key_fields: Sequence[SchemaField],
    *,
    alias: str,
) -> str:
    """` AND <alias>.k BETWEEN <min> AND <max>` for the layout's columns that are key columns.

    A MERGE matches target rows by key; BigQuery prunes a clustered or
    partitioned target only on constant filters of its clustering and
    partitioning columns. For a layout column that is also a key column
    every matching target row has the key of a staging row, so limiting the
    target side to the staging rows' [min, max] of it (literals, read from
    `source_sql` just before the MERGE; staging does not change in between)
    changes nothing but the bytes read. Columns that are not key columns are
    left out (a row's value there may have changed, and the old row must
    still match), as are types without an exact literal here.
    """
    keys = {f.name.lower(): f for f in key_fields}
    wanted = [c for c in layout.storage_columns if c.lower() in keys]
    wanted = [c for c in wanted if standard_type(keys[c.lower()].field_type) in _LITERAL_TYPES]
    if not wanted:
        return ""
    selects = ", ".join(
        f"MIN({quote_identifier(c)}) AS lo{i}, MAX({quote_identifier(c)}) AS hi{i}"
        for i, c in enumerate(wanted)
    )
    row = next(iter(client.query(f"SELECT {selects} FROM ({source_sql})").result()))
    out = []
    for i, column in enumerate(wanted):
        lo, hi = row[f"lo{i}"], row[f"hi{i}"]
        if lo is None or hi is None:
            continue
        out.append(
            f" AND {alias}.{quote_identifier(column)} BETWEEN {_literal(lo)} AND {_literal(hi)}"
        )
    return "".join(out)


_LITERAL_TYPES = ("STRING", "INT64", "NUMERIC", "BIGNUMERIC", "DATE", "TIMESTAMP")


def _literal(value: object) -> str:
    """A GoogleSQL literal of exactly `value` (as the client library returns it)."""
    if isinstance(value, bool):
        raise TypeError("BOOL is not a pruning column")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        return f"NUMERIC {string_literal(format(value, 'f'))}"
    if isinstance(value, dt.datetime):
        return timestamp_literal(value)
    if isinstance(value, dt.date):
        return f"DATE {string_literal(value.isoformat())}"
    if isinstance(value, str):
        return string_literal(value)
    raise TypeError(f"no literal for {type(value).__name__}")
