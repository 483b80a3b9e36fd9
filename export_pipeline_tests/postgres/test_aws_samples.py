"""The readers and the PostgreSQL load on an AWS-format sample export (no local_cloud export).

The sample is written by `support.aws_samples_postgres` from AWS's documents
and uploaded as it is to the local S3; the RDS readers and the load with
PostgreSQL's engine must make of it what AWS's layout and types mean.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from export_pipeline.postgres.engine import POSTGRES
from export_pipeline.rds.export_files import (
    ExportLocation,
    inspect_table_files,
    read_export_info,
    read_tables_info,
)
from export_pipeline.rds.loading import load_export_table
from export_pipeline_tests.support.aws_samples_postgres import (
    PG_EXPORT_ID,
    PG_SNAPSHOT_TIME,
    write_rds_postgres_export,
)
from export_pipeline_tests.support.bigquery import rows


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_sample_is_written_byte_for_byte_the_same(tmp_path: Path) -> None:
    write_rds_postgres_export(tmp_path / "a")
    write_rds_postgres_export(tmp_path / "b")
    first = _files(tmp_path / "a")
    assert first == _files(tmp_path / "b") and len(first) == 5


@pytest.fixture
def sample_export(tmp_path, aws_clients, pipeline_config) -> ExportLocation:
    """The sample, uploaded under a prefix of this test's own."""
    write_rds_postgres_export(tmp_path)
    prefix = f"pg-sample-{uuid.uuid4().hex[:8]}/exports"
    root = tmp_path / "exports"
    for path in root.rglob("*"):
        if path.is_file():
            key = f"{prefix}/{path.relative_to(root)}"
            aws_clients.s3.upload_file(str(path), pipeline_config.aws.export_bucket, key)
    return ExportLocation(pipeline_config.aws.export_bucket, prefix, PG_EXPORT_ID)


def test_readers_on_the_postgresql_sample(sample_export, aws_clients) -> None:
    assert read_export_info(aws_clients.s3, sample_export)["exportOnly"] == [
        "app.public.accounts",
        "app.sales",
    ]
    tables = read_tables_info(aws_clients.s3, sample_export)
    assert sorted(tables) == ["app.public.accounts", "app.sales.orders"]
    assert tables["app.sales.orders"].columns[1] == ("amount", "money")
    files = inspect_table_files(aws_clients.s3, sample_export, "app", "public", "accounts")
    assert [f.key.split("/")[-3:-1] for f in files] == [
        ["public.accounts", "1"],
        ["public.accounts", "2"],
    ]
    assert sum(f.num_rows for f in files) == 3


def test_load_of_the_postgresql_sample(
    sample_export, aws_clients, bigquery_client, local_cloud, pg_dataset
) -> None:
    tables = read_tables_info(aws_clients.s3, sample_export)
    project = local_cloud.bigquery_project
    loaded = {}
    for target in tables:
        table_id = f"{project}.{pg_dataset}.t_{target.replace('.', '_')}"
        result = load_export_table(
            s3=aws_clients.s3,
            client=bigquery_client,
            location=sample_export,
            info=tables[target],
            table_ref=table_id,
            exported_at=PG_SNAPSHOT_TIME,
            description="sample",
            engine=POSTGRES,
        )
        loaded[target] = (
            result,
            {r["id"]: r for r in rows(bigquery_client, f"SELECT * FROM `{table_id}`")},
        )
    result, accounts = loaded["app.public.accounts"]
    assert result.row_count == result.expected_row_count == 3
    # tags holds NULL and {}: a JSON column keeps them apart (1 empty array counted).
    assert result.unrepresentable == {"balance": 1, "born": 1, "seen": 1, "tags": 1}
    one, two, three = accounts[1], accounts[2], accounts[3]
    assert (one["age"], two["age"], one["score"], two["score"]) == (41, -32768, 0.5, math.inf)
    assert math.isnan(one["ratio"]) and two["ratio"] == 0.0
    assert one["balance"] == Decimal("1234.56") and two["balance__raw"] == "NaN"
    assert (one["active"], one["avatar"], two["avatar"]) == (True, b"\x89PNG", b"")
    assert (one["code"], two["code"]) == ("ab  ", "    ")
    assert one["profile"] == {"lang": "ga", "n": 1}
    assert one["born"] == dt.date(1984, 2, 29) and two["born__raw"] == "infinity"
    assert one["seen"] == dt.datetime(2025, 11, 30, 23, 59, 59, 999999, tzinfo=dt.UTC)
    assert two["seen"] is None and two["seen__raw"] == "0099-01-01 00:00:00+00 BC"
    assert (one["tags"], two["tags"], three["tags"]) == (["vip", "early bird"], [], None)
    assert three["_exported_at"] == PG_SNAPSHOT_TIME
    result, orders = loaded["app.sales.orders"]
    assert orders[10]["amount"] == Decimal("1000") and orders[11]["amount"] == Decimal("-0.5")
    assert orders[11]["placed"] == dt.datetime(2025, 12, 1, 0, 0, 0, 500000)
    types = {f.name: f.field_type for f in result.schema}
    assert types["amount"] == "NUMERIC" and types["placed"] == "DATETIME"
