"""Bringing an existing table to its `TableLayout`, and the MERGE's pruning filter.

`prepare_layout` gives a table whose partitioning or clustering differs
from its configuration the configured ones before a write (see its
docstring for how, and why not by `CREATE OR REPLACE`); `ensure_layout`
patches the options that change in place after it; `ensure_storage`
follows a CTAS that carried the layout's clauses (see its docstring for
what bqemulator keeps); `pruning_condition` lets a MERGE prune the
target's blocks.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from decimal import Decimal

from google.api_core.exceptions import GoogleAPICallError, NotFound
from google.cloud import bigquery
from google.cloud.bigquery import SchemaField

from export_pipeline.bigquery.evolve import METADATA_RETRY, apply_metadata, restore_declared_types
from export_pipeline.bigquery.layout import LayoutError, Partition, TableLayout
from export_pipeline.bigquery.sql import standard_type, string_literal, table_options
from export_pipeline.bigquery.tables import BigQueryPublishError, TableId, count_rows
from export_pipeline.bigquery.watermark import timestamp_literal
from export_pipeline.naming import quote_identifier

RELAYOUT_SUFFIX = "__relayout"


def relayout_table_id(target: TableId) -> TableId:
    """Where a repartitioned copy of `target` is built (see `prepare_layout`)."""
    return target.sibling(f"{target.table[: 1024 - len(RELAYOUT_SUFFIX)]}{RELAYOUT_SUFFIX}")


def prepare_layout(
    client: bigquery.Client,
    target: TableId,
    layout: TableLayout,
    job_labels: Mapping[str, str] | None = None,
    *,
    keep_rows: bool = True,
) -> None:
    """Before a write: give an existing `target` the configured partitioning and clustering.

    BigQuery refuses `CREATE OR REPLACE` of a table whose partitioning or
    clustering would change ("Cannot replace a table with a different
    partitioning spec"), so a change is applied before the write that would
    carry it, and the write then matches:

    - clustering only: `tables.patch` of the clustering (a metadata change,
      atomic), then, when the rows stay (`keep_rows`: a MERGE or a reseed
      follows, not a full replace), one `UPDATE … SET c = c WHERE TRUE`
      rewriting every row under the new clustering (one DML, atomic);
    - partitioning: BigQuery cannot change it in place, nor replace a table
      with another partitioning, nor rename over a table. The rows are
      copied into `<table>__relayout` laid out anew and checked by count,
      then the table is dropped and created again from that copy, and the
      copy dropped. Between the drop and the create readers get "not
      found" (the one non-atomic step, for the time of one CTAS); no row is
      ever only in flight: a run that stops there is finished by the next
      one before it writes anything (`_resume`).
    """
    _resume(client, target, layout, job_labels)
    try:
        table = client.get_table(target.reference)
    except NotFound:
        return
    current = Partition.of_table(table)
    if layout.partition is None:
        same_partition = current is None
    else:
        same_partition = layout.partition.same_as(current)
    clustering = [c.lower() for c in (table.clustering_fields or [])]
    if not same_partition:
        _repartition(client, target, table, layout, job_labels)
    elif clustering != [c.lower() for c in layout.cluster_by]:
        table.clustering_fields = list(layout.cluster_by) or None
        client.update_table(table, ["clustering_fields"], retry=METADATA_RETRY)
        if keep_rows:
            first = quote_identifier(table.schema[0].name)
            _run(
                client,
                f"UPDATE {target.sql} SET {first} = {first} WHERE TRUE",
                job_labels,
                f"reclustering {target} on {list(layout.cluster_by)}",
            )


def _run(
    client: bigquery.Client, sql: str, job_labels: Mapping[str, str] | None, what: str
) -> None:
    config = bigquery.QueryJobConfig(labels=dict(job_labels or {}))
    try:
        client.query(sql, job_config=config).result()
    except GoogleAPICallError as error:
        raise BigQueryPublishError(f"{what} failed: {error}") from error


def _copy(
    client: bigquery.Client,
    source: TableId,
    destination: TableId,
    table: bigquery.Table,
    layout: TableLayout,
    job_labels: Mapping[str, str] | None,
) -> None:
    """`destination` created (it must not exist) with `layout` and `source`'s rows and metadata."""
    schema = list(table.schema)
    _run(
        client,
        f"CREATE TABLE {destination.sql}\n{layout.ddl_clauses(schema)}\n"
        f"{table_options(table.description, dict(table.labels or {}), layout.options())}\n"
        f"AS SELECT * FROM {source.sql}",
        job_labels,
        f"copying {source} into {destination} with the configured layout",
    )
    restore_declared_types(client, destination, schema)
    apply_metadata(client, destination, schema, table.description, dict(table.labels or {}))
    ensure_storage(client, destination, layout)


def _repartition(
    client: bigquery.Client,
    target: TableId,
    table: bigquery.Table,
    layout: TableLayout,
    job_labels: Mapping[str, str] | None,
) -> None:
    if layout.needs_api_creation:
        raise LayoutError(
            f"{layout.table}: bigquery.partition: {target} exists with "
            f"{'; '.join(layout.differences(table))}, and BigQuery cannot create "
            "ingestion-time partitioning from a query; drop the table (the next load "
            "recreates it) or choose a column partitioning"
        )
    copy = relayout_table_id(target)
    client.delete_table(copy.reference, not_found_ok=True)  # a copy of an earlier attempt
    _copy(client, target, copy, table, layout, job_labels)
    copied, held = count_rows(client, copy), count_rows(client, target)
    if copied != held:
        raise BigQueryPublishError(
            f"repartitioning {target}: the copy {copy} holds {copied} rows, the table {held}; "
            "the table is unchanged"
        )
    client.delete_table(target.reference)
    _finish(client, target, copy, layout, job_labels)


def _finish(
    client: bigquery.Client,
    target: TableId,
    copy: TableId,
    layout: TableLayout,
    job_labels: Mapping[str, str] | None,
) -> None:
    _copy(client, copy, target, client.get_table(copy.reference), layout, job_labels)
    client.delete_table(copy.reference, not_found_ok=True)


def _resume(
    client: bigquery.Client,
    target: TableId,
    layout: TableLayout,
    job_labels: Mapping[str, str] | None,
) -> None:
    """Finish a repartitioning that stopped between dropping the table and creating it."""
    copy = relayout_table_id(target)
    try:
        client.get_table(copy.reference)
    except NotFound:
        return
    try:
        client.get_table(target.reference)
    except NotFound:
        _finish(client, target, copy, layout, job_labels)
        return
    client.delete_table(copy.reference, not_found_ok=True)  # the table was never dropped


def ensure_layout(client: bigquery.Client, target: TableId, layout: TableLayout) -> bigquery.Table:
    """After a write: patch the options that change in place where the table reports otherwise.

    require_partition_filter, partition expiration, CMEK and policy tags
    (`tables.patch`); partitioning and clustering are `prepare_layout`'s.
    """
    return _patch_options(client, client.get_table(target.reference), layout)


def ensure_storage(client: bigquery.Client, target: TableId, layout: TableLayout) -> bigquery.Table:
    """After a CTAS that carried `layout`'s clauses: patch what the table does not report.

    On BigQuery the CTAS has set partitioning and clustering, so nothing is
    sent. bqemulator 1.4.0 keeps only a plain `PARTITION BY <column>` from
    DDL (no `*_TRUNC`, `RANGE_BUCKET` or `CLUSTER BY`) but stores them from
    `tables.patch`, which is what this sends when they differ.
    """
    table = client.get_table(target.reference)
    fields = layout.storage_patch(table)
    if not fields:
        return table
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
        lo, hi = _literal(row[f"lo{i}"], low=True), _literal(row[f"hi{i}"], low=False)
        if lo is None or hi is None:
            continue  # no rows, or a value without an exact literal: no filter on it
        out.append(f" AND {alias}.{quote_identifier(column)} BETWEEN {lo} AND {hi}")
    return "".join(out)


_LITERAL_TYPES = ("STRING", "INT64", "NUMERIC", "BIGNUMERIC", "DATE", "TIMESTAMP")
_INT64 = range(-(2**63), 2**63)


def _literal(value: object, *, low: bool) -> str | None:
    """A GoogleSQL literal bounding `value` (as the client library returns it), or None.

    Exact for integers, strings, dates and timestamps. A NUMERIC value is
    bounded by the integer below (`low`) or above it: a range only needs to
    contain the values, and an INT64 literal compared with a NUMERIC column
    is exact on BigQuery and on bqemulator (whose NUMERIC literals can be
    narrowed to DECIMAL(18,3), see docs/local-cloud.md).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value) if value in _INT64 else None
    if isinstance(value, Decimal):
        bound = math.floor(value) if low else math.ceil(value)
        return str(bound) if bound in _INT64 else None
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return timestamp_literal(value)
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return f"DATE {string_literal(value.isoformat())}"
    if isinstance(value, str):
        return string_literal(value)
    return None
