"""Fixtures for the PostgreSQL pipeline tests: a private BigQuery dataset."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest


@pytest.fixture
def pg_dataset(local_cloud, bigquery_client) -> Iterator[str]:
    """A BigQuery dataset of this test's own, removed afterwards."""
    name = "pg_test_" + uuid.uuid4().hex[:10]
    bigquery_client.create_dataset(f"{local_cloud.bigquery_project}.{name}")
    yield name
    bigquery_client.delete_dataset(
        f"{local_cloud.bigquery_project}.{name}", delete_contents=True, not_found_ok=True
    )
