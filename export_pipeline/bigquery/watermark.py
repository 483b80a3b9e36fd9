"""The high-water mark of each incremental source, kept with the data in BigQuery.

An incremental DynamoDB source is only correct if the next export window
starts exactly where the data in BigQuery ends. So the mark (which export
was applied last and the time it covers up to) lives next to the data, in the
table `_export_pipeline_state` of the target's dataset, one row per source:

    source_key STRING, target_table STRING, export_arn STRING,
    exported_to TIMESTAMP, updated_at TIMESTAMP

and is only ever written in the same multi-statement transaction as the data
it describes, so the two cannot disagree (a crash or error between the two
writes rolls both back).

Why not `CREATE OR REPLACE TABLE` + state update in one transaction: BigQuery
transactions accept SELECT, INSERT, UPDATE, DELETE, MERGE, TRUNCATE TABLE and
DDL on temporary entities only, not DDL that creates or replaces permanent
tables (docs: "Multi-statement transactions", statements supported). So
every write that must move the mark is DML:

- incremental apply: `BEGIN TRANSACTION; <guard>; MERGE target …; MERGE state …; COMMIT`
- full reseed of an incremental source: `BEGIN TRANSACTION; <guard>; DELETE FROM
  target WHERE TRUE; INSERT INTO target … FROM staging; MERGE state …; COMMIT`
  (the table keeps its identity; readers see old or new rows by snapshot
  isolation). Schema changes a reseed or a merge needs are made before the
  transaction with operations that keep every existing value (add nullable
  columns, widen types by CTAS over the table itself), so the old mark stays
  true of the table in between.

Labels set by the CTAS (`OPTIONS(labels=…)`) were the other candidate: atomic
with a replace, but not with a MERGE (labels cannot be changed inside a
transaction), label values cannot hold an export ARN, and bqemulator ignores
labels in CTAS so it could not be tested here.

The guard makes concurrent or repeated runs safe: the transaction first
checks that the state row is still what the run read at its start
(`expected_previous`) and fails with `ERROR()` otherwise, which aborts the
whole transaction. A re-run after success sees the new mark and starts from
it; a re-run after failure sees the old one.

A mark is only returned while its target table exists: a mark for a dropped
table would make the next run MERGE changes into nothing.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass

from google.api_core import exceptions as google_exceptions
from google.cloud import bigquery
from google.cloud.bigquery import SchemaField

from export_pipeline.bigquery.sql import string_literal
from export_pipeline.bigquery.tables import BigQueryPublishError, TableId

STATE_TABLE = "_export_pipeline_state"
STATE_SCHEMA = [
    SchemaField(
        "source_key",
        "STRING",
        mode="REQUIRED",
        description="The source, e.g. a DynamoDB table ARN.",
    ),
    SchemaField("target_table", "STRING", description="The BigQuery table the mark describes."),
    SchemaField("export_arn", "STRING", description="The export whose data was applied last."),
    SchemaField(
        "exported_to", "TIMESTAMP", description="The data is complete up to this time (exclusive)."
    ),
    SchemaField("updated_at", "TIMESTAMP", description="When the mark was written."),
]


class WatermarkConflictError(BigQueryPublishError):
    """The stored mark changed since the run read it (another run applied data)."""


class WatermarkInFutureError(BigQueryPublishError):
    """The new mark lies after BigQuery's current time: no export can have reached it."""


@dataclass(frozen=True)
class Watermark:
    """Data for `source_key` is in BigQuery up to `exported_to`, from export `export_arn`."""

    source_key: str
    export_arn: str
    exported_to: dt.datetime

    def __post_init__(self) -> None:
        if self.exported_to.tzinfo is None:
            raise ValueError("Watermark.exported_to must be timezone-aware (UTC)")
        if not self.source_key:
            raise ValueError("Watermark.source_key must not be empty")


def state_table_for(target: TableId) -> TableId:
    """The state table in `target`'s dataset."""
    return target.sibling(STATE_TABLE)


def ensure_state_table(client: bigquery.Client, target: TableId) -> TableId:
    """Create the dataset's state table (explicit schema) if it is missing; return its id."""
    state = state_table_for(target)
    table = bigquery.Table(state.reference, schema=STATE_SCHEMA)
    table.description = (
        "export_pipeline: high-water mark of each incremental source, written in the same "
        "transaction as the data. Do not edit by hand."
    )
    client.create_table(table, exists_ok=True)
    return state


def read_watermark(client: bigquery.Client, target: TableId, source_key: str) -> Watermark | None:
    """The mark of `source_key` for `target`, or None (no mark, or the target is gone)."""
    try:
        client.get_table(target.reference)
        client.get_table(state_table_for(target).reference)
    except google_exceptions.NotFound:
        return None
    rows = list(
        client.query(
            f"SELECT export_arn, exported_to FROM {state_table_for(target).sql} "
            "WHERE source_key = @source_key AND target_table = @target_table",
            job_config=bigquery.QueryJobConfig(
                query_parameters=[
                    bigquery.ScalarQueryParameter("source_key", "STRING", source_key),
                    bigquery.ScalarQueryParameter("target_table", "STRING", target.dotted),
                ]
            ),
        ).result()
    )
    if not rows:
        return None
    if len(rows) > 1:
        raise BigQueryPublishError(
            f"{state_table_for(target)} holds {len(rows)} marks for {source_key!r}; expected one"
        )
    exported_to = rows[0]["exported_to"]
    if exported_to.tzinfo is None:
        exported_to = exported_to.replace(tzinfo=dt.UTC)
    return Watermark(source_key, rows[0]["export_arn"], exported_to)


@dataclass(frozen=True)
class Statement:
    """One SQL statement of a multi-statement transaction.

    Values are escaped literals (`string_literal`, `timestamp_literal`),
    not query parameters: bqemulator 1.4.0 does not bind query parameters
    inside multi-statement scripts ("Values were not provided for the
    following prepared statement parameters"); literals work on both.
    """

    sql: str


def timestamp_literal(value: dt.datetime) -> str:
    """Exact SQL for an aware datetime: `TIMESTAMP 'YYYY-MM-DD HH:MM:SS.ffffff+00'` (UTC).

    A literal rather than `TIMESTAMP_MICROS(<epoch micros>)`, which is just
    as exact on BigQuery: in bqemulator 1.4.0 a `TIMESTAMP_MICROS` call
    anywhere in a SELECT makes every `NUMERIC(38, 9)` cast of that query
    DECIMAL(18,3) (NUMERIC values rounded to 3 decimals, or the query failing
    on large ones), so a CTAS/MERGE carrying an `_exported_at` column would
    lose digits there. The literal is the form both type alike.
    """
    if value.tzinfo is None:
        raise ValueError("timestamp must be timezone-aware")
    u = value.astimezone(dt.UTC)
    return (
        f"TIMESTAMP '{u.year:04d}-{u.month:02d}-{u.day:02d} "
        f"{u.hour:02d}:{u.minute:02d}:{u.second:02d}.{u.microsecond:06d}+00'"
    )


WATERMARK_CONFLICT_MARKER = "export_pipeline watermark conflict"
WATERMARK_FUTURE_MARKER = "export_pipeline watermark in the future"


def _mark_row_filter(target: TableId, source_key: str) -> str:
    return (
        f"source_key = {string_literal(source_key)} "
        f"AND target_table = {string_literal(target.dotted)}"
    )


def guard_statement(
    target: TableId, source_key: str, expected_previous: Watermark | None
) -> Statement:
    """Abort the transaction unless the stored mark is `expected_previous` (None: no mark)."""
    state = state_table_for(target)
    where = _mark_row_filter(target, source_key)
    if expected_previous is None:
        condition = f"(SELECT COUNT(*) FROM {state.sql} WHERE {where}) != 0"
    else:
        condition = (
            f"(SELECT COUNT(*) FROM {state.sql} WHERE {where} "
            f"AND export_arn = {string_literal(expected_previous.export_arn)} "
            f"AND exported_to = {timestamp_literal(expected_previous.exported_to)}) != 1"
        )
    message = string_literal(
        f"{WATERMARK_CONFLICT_MARKER}: the high-water mark of {source_key} for "
        f"{target.dotted} changed since this run read it"
    )
    return Statement(f"SELECT IF({condition}, ERROR({message}), 0)")


def upsert_statement(target: TableId, watermark: Watermark) -> Statement:
    """Set the mark of `watermark.source_key` for `target` (MERGE: insert or update)."""
    state = state_table_for(target)
    source = string_literal(watermark.source_key)
    table = string_literal(target.dotted)
    arn = string_literal(watermark.export_arn)
    literal = timestamp_literal(watermark.exported_to)
    # The mark never moves into the future, by BigQuery's clock (the one the data
    # are read by): such a time was not reported by AWS for a finished export, and
    # every later run would find nothing to export. ERROR() aborts the transaction.
    future = string_literal(
        f"{WATERMARK_FUTURE_MARKER}: the new high-water mark of {watermark.source_key} for "
        f"{target.dotted}, {watermark.exported_to.isoformat()}, is after the current time"
    )
    to = f"IF({literal} > CURRENT_TIMESTAMP(), ERROR({future}), {literal})"
    return Statement(
        f"MERGE {state.sql} AS s USING (SELECT {source} AS source_key, {table} AS "
        f"target_table, {to} AS exported_to) AS n ON s.source_key = n.source_key "
        "AND s.target_table = n.target_table "
        f"WHEN MATCHED THEN UPDATE SET export_arn = {arn}, exported_to = n.exported_to, "
        "updated_at = CURRENT_TIMESTAMP() "
        "WHEN NOT MATCHED THEN INSERT (source_key, target_table, export_arn, exported_to, "
        f"updated_at) VALUES ({source}, {table}, {arn}, n.exported_to, CURRENT_TIMESTAMP())"
    )


# BigQuery aborts one of two transactions that mutate the same table at the
# same time ("Transaction is aborted due to concurrent update against table
# ..."); the state table is shared by every source of a dataset, so parallel
# runs of different sources can collide there. Such an abort rolled
# everything back, so the transaction is simply run again (the guard keeps a
# retry from applying anything twice).
_CONCURRENT_UPDATE = ("concurrent update", "could not serialize access")
TRANSACTION_ATTEMPTS = 5


def run_transaction(
    client: bigquery.Client,
    statements: list[Statement],
    *,
    job_labels: dict[str, str] | None = None,
    description: str,
    sleep: Callable[[float], None] = time.sleep,
) -> bigquery.QueryJob:
    """Run `statements` as one multi-statement transaction (all or nothing).

    A guard failure becomes `WatermarkConflictError`; an abort because of a
    concurrent update is retried with backoff; other errors raise
    `BigQueryPublishError` with `description` (what was being done).
    """
    sql = "BEGIN TRANSACTION;\n" + ";\n".join(s.sql for s in statements) + ";\nCOMMIT TRANSACTION;"
    for attempt in range(1, TRANSACTION_ATTEMPTS + 1):
        job = client.query(sql, job_config=bigquery.QueryJobConfig(labels=job_labels or {}))
        try:
            job.result()
            return job
        except google_exceptions.GoogleAPICallError as error:
            text = str(error)
            if WATERMARK_CONFLICT_MARKER in text:
                raise WatermarkConflictError(f"{description}: {error.message}") from error
            if WATERMARK_FUTURE_MARKER in text:
                raise WatermarkInFutureError(f"{description}: {error.message}") from error
            if attempt < TRANSACTION_ATTEMPTS and any(
                marker in text.lower() for marker in _CONCURRENT_UPDATE
            ):
                sleep(2 ** (attempt - 1))
                continue
            raise BigQueryPublishError(
                f"{description} failed and was rolled back: {error}"
            ) from error
    raise AssertionError("unreachable")


def rewind_marks(client: bigquery.Client, project: str, dataset: str, seconds: float) -> int:
    """Move every high-water mark of the dataset `seconds` into the past; how many moved.

    For the demo's `export-pipeline local pass-time`, which moves the local
    cloud's DynamoDB history back by as much, so that the next run plans its
    windows as after real waiting. The pipeline itself never calls it.
    """
    state = TableId(project, dataset, STATE_TABLE)
    try:
        job = client.query(
            f"UPDATE {state.sql} SET exported_to = TIMESTAMP_SUB(exported_to, "
            f"INTERVAL {round(seconds)} SECOND) WHERE exported_to IS NOT NULL"
        )
        job.result()
    except google_exceptions.NotFound:
        return 0  # no incremental table loaded yet: nothing to move
    return job.num_dml_affected_rows or 0
