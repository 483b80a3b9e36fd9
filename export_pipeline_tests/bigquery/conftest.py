"""Fixtures for the BigQuery publishing tests: a private dataset in the session's emulator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from google.cloud import bigquery

from export_pipeline.bigquery.tables import TableId


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
