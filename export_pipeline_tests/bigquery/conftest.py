"""Fixtures for the BigQuery publishing tests: a private dataset in the session's emulator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from google.cloud import bigquery

from export_pipeline.bigquery.publish import PublishResult, SelectColumn, merge_changes
from export_pipeline.bigquery.tables import TableId
from export_pipeline.bigquery.watermark import Watermark


@pytest.fixture
def dataset(bigquery_client: bigquery.Client, unique_name: str) -> Iterator[str]:
    """A fresh dataset for one test (deleted afterwards)."""
    name = f"{bigquery_client.project}.{unique_name}"
    bigquery_client.create_dataset(name)
    yield unique_name
    bigquery_client.delete_dataset(name, delete_contents=True, not_found_ok=True)


@pytest.fixture
def table_id(bigquery_client: bigquery.Client, dataset: str) -> Callable[[str], TableId]:
    """`table_id("orders")` → TableId in the test's dataset."""
    return lambda name: TableId(bigquery_client.project, dataset, name)


@pytest.fixture
def write_parquet(tmp_path: Path) -> Callable[..., Path]:
    """`write_parquet(rows_or_table, schema=None, name=None)` → a real Parquet file on disk."""
    counter = iter(range(1_000_000))

    def write(data: pa.Table | list[dict], schema: pa.Schema | None = None, name=None) -> Path:
        table = data if isinstance(data, pa.Table) else pa.Table.from_pylist(data, schema=schema)
        path = tmp_path / (name or f"part-{next(counter):05d}.parquet")
        pq.write_table(table, path)
        return path

    return write


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
