"""BigQuery helpers of the publishing tests: rows as dicts, the MERGE of test change rows."""

from __future__ import annotations

from google.cloud import bigquery

from export_pipeline.bigquery.publish import PublishResult, SelectColumn, merge_changes
from export_pipeline.bigquery.tables import TableId
from export_pipeline.bigquery.watermark import Watermark


def rows(client: bigquery.Client, sql: str) -> list[dict]:
    """All rows of a query as plain dicts."""
    return [dict(r.items()) for r in client.query(sql).result()]


def merge_by_pk(
    client: bigquery.Client,
    staging: TableId,
    target: TableId,
    columns: list[SelectColumn],
    watermark: Watermark,
    expected_previous: Watermark | None,
    deleted_column: str | None = None,
) -> PublishResult:
    """`merge_changes` of test change rows: key column `pk`, the greatest `ts` wins."""
    return merge_changes(
        client,
        staging=staging,
        target=target,
        key_columns=["pk"],
        order_column="ts",
        deleted_column=deleted_column,
        columns=columns,
        watermark=watermark,
        expected_previous=expected_previous,
    )
