from __future__ import annotations

import contextlib
import datetime as dt
import io
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
from google.cloud.bigquery import SchemaField

from export_pipeline.bigquery.staging import (
    ParquetSource,
    StagingLoadError,
    load_parquet_to_staging,
    staging_table_id,
)
from export_pipeline.bigquery.tables import TableId
from export_pipeline_tests.support.bigquery import rows

SCHEMA = [
    SchemaField("id", "STRING", mode="REQUIRED"),
    SchemaField("n", "NUMERIC"),
    SchemaField("raw", "BYTES"),
    SchemaField("tags", "STRING", mode="REPEATED"),
]
ARROW = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        ("n", pa.decimal128(20, 0)),
        ("raw", pa.binary()),
        ("tags", pa.list_(pa.string())),
    ]
)


def test_staging_name_is_unique_per_run_and_valid() -> None:
    target = TableId("proj-ok-1", "ds", "dynamodb_orders")
    a = staging_table_id(target, "run-1/attempt-1")
    b = staging_table_id(target, "run-1/attempt-2")
    assert a != b and a.dataset == "ds" and a.table.startswith("_staging_dynamodb_orders_")
    assert staging_table_id(target, "run-1/attempt-1") == a


def test_many_files_load_with_values_intact(bigquery_client, table_id, write_parquet, tmp_path):
    files = [
        write_parquet(
            [
                {
                    "id": f"f{f}-{i}",
                    "n": Decimal("18446744073709551615") if i == 0 else Decimal(i),
                    "raw": bytes([f, i, 0, 255]),
                    "tags": [f"t{i}"] * (i % 3),
                }
                for i in range(4)
            ],
            ARROW,
        )
        for f in range(6)
    ]
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")  # a zero-byte data file holds no rows and is skipped
    staging = table_id("_staging_many")
    result = load_parquet_to_staging(
        bigquery_client, [*files, empty], staging, SCHEMA, job_labels={"run": "test"}
    )
    assert (result.rows, result.files) == (24, 6)
    assert result.bytes == sum(p.stat().st_size for p in files)
    table = bigquery_client.get_table(staging.reference)
    assert table.num_rows == 24
    assert table.labels.get("export_pipeline") == "staging"
    got = {r["id"]: r for r in rows(bigquery_client, f"SELECT * FROM {staging.sql}")}
    assert got["f5-0"]["n"] == Decimal("18446744073709551615")
    assert got["f3-2"]["raw"] == bytes([3, 2, 0, 255])
    assert got["f1-2"]["tags"] == ["t2", "t2"]

    # A retry recreates the staging table: no rows from the first attempt remain.
    again = load_parquet_to_staging(bigquery_client, files[:2], staging, SCHEMA)
    assert again.rows == 8
    assert rows(bigquery_client, f"SELECT COUNT(*) AS c FROM {staging.sql}") == [{"c": 8}]


def test_expected_row_count_is_checked(bigquery_client, table_id, write_parquet):
    path = write_parquet([{"id": "a", "n": None, "raw": None, "tags": []}], ARROW)
    with pytest.raises(StagingLoadError, match="loaded 1 rows from 1 files, expected 2"):
        load_parquet_to_staging(
            bigquery_client, [path], table_id("_staging_count"), SCHEMA, expected_rows=2
        )


def test_a_file_that_does_not_fit_names_the_file(bigquery_client, table_id, write_parquet):
    good = write_parquet([{"id": "a", "n": Decimal(1), "raw": b"x", "tags": []}], ARROW)
    bad = write_parquet(pa.table({"id": ["b"], "n": ["not a number"]}), name="bad.parquet")
    with pytest.raises(StagingLoadError, match=r"bad\.parquet"):
        load_parquet_to_staging(bigquery_client, [good, bad], table_id("_staging_bad"), SCHEMA)


def test_parquet_schema_path_on_rds_samples(bigquery_client, table_id, aws_samples):
    customers = sorted(aws_samples.rds_mysql.glob("**/shop.customers/**/*.parquet"))
    staging = table_id("_staging_customers")
    result = load_parquet_to_staging(bigquery_client, customers, staging, schema=None)
    assert result.rows == 2
    assert {f.name: f.field_type for f in result.schema}["ext_id"] == "NUMERIC"
    got = {r["id"]: r for r in rows(bigquery_client, f"SELECT * FROM {staging.sql}")}
    first = got[1]
    assert first["ext_id"] == Decimal("18446744073709551615")
    assert first["country"] == b"JP"
    assert first["name"] == "山田 太郎"
    assert first["created_at"] == dt.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=dt.UTC)
    assert got[2]["birthday"] == "0000-00-00" and got[2]["tier"] == 255

    orders = sorted(aws_samples.rds_mysql.glob("**/shop.orders/**/*.parquet"))
    staging = table_id("_staging_orders")
    result = load_parquet_to_staging(bigquery_client, orders, staging, schema=None)
    assert result.files == 2
    got = {r["id"]: r for r in rows(bigquery_client, f"SELECT * FROM {staging.sql}")}
    assert result.rows == len(got) == 3
    # DECIMAL(20,10) exceeds NUMERIC's scale: kept exactly as text.
    assert got[12]["fx_rate"] == "150.1234567891"
    assert got[10]["amount"] == Decimal("1999.50")
    assert got[11]["note"] == b"\x00\x01" and got[11]["ship_time"] == "838:59:59"


class _OneWayStream(io.RawIOBase):
    """A forward-only binary stream, like an S3 GetObject body: tell() but no seek()."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._data.tell()

    def readinto(self, buffer) -> int:
        chunk = self._data.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_streamed_sources_load_without_a_local_file(bigquery_client, table_id, write_parquet):
    """`ParquetSource`: a forward-only stream per file, opened when its load starts."""
    paths = [
        write_parquet([{"id": f"s{f}-{i}", "n": Decimal(i), "raw": None, "tags": []}], ARROW)
        for f in range(2)
        for i in range(2)
    ]
    opened: list[str] = []

    def source(path: Path) -> ParquetSource:
        data = path.read_bytes()

        @contextlib.contextmanager
        def open_stream():
            opened.append(path.name)
            yield _OneWayStream(data)

        return ParquetSource(f"mem://{path.name}", 1, len(data), open_stream)

    loaded: list[str] = []
    staging = table_id("_staging_streamed")
    result = load_parquet_to_staging(
        bigquery_client,
        [source(p) for p in paths],
        staging,
        SCHEMA,
        labels={"source": "test"},
        parallel_uploads=2,
        on_loaded=lambda s: loaded.append(s.name),
    )
    assert (result.rows, result.files) == (4, 4)
    assert sorted(opened) == sorted(p.name for p in paths)
    assert sorted(loaded) == sorted(f"mem://{p.name}" for p in paths)
    assert bigquery_client.get_table(staging.reference).labels["source"] == "test"
    got = rows(bigquery_client, f"SELECT id FROM {staging.sql} ORDER BY id")
    assert [r["id"] for r in got] == ["s0-0", "s0-1", "s1-0", "s1-1"]


def test_a_source_whose_footer_count_is_wrong_is_refused(bigquery_client, table_id, write_parquet):
    path = write_parquet([{"id": "a", "n": None, "raw": None, "tags": []}], ARROW)
    wrong = ParquetSource(str(path), 2, path.stat().st_size, lambda: path.open("rb"))
    with pytest.raises(StagingLoadError, match="footers say 2"):
        load_parquet_to_staging(bigquery_client, [wrong], table_id("_staging_wrong"), SCHEMA)
