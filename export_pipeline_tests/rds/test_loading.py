"""The reader and loader on AWS-format exports placed in local S3 (no export task needed).

Uses the AWS-format sample export of `support.aws_samples` (AWS's documented
layout and types) and small hand-written exports for values the demo cannot
hold (CHAR bytes that are not UTF-8, JSON BigQuery cannot parse exactly).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import uuid
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from export_pipeline.bigquery.publish import SelectColumn
from export_pipeline.rds import loading
from export_pipeline.rds.export_files import (
    ExportLocation,
    inspect_table_files,
    read_export_info,
    read_tables_info,
)
from export_pipeline.rds.loading import RdsLoadError, load_export_table
from export_pipeline_tests.support.aws_samples import RDS_EXPORT_ID, RDS_SNAPSHOT_TIME


@pytest.fixture
def sample_export(aws_clients, pipeline_config, aws_samples) -> ExportLocation:
    """The AWS-format sample export, uploaded under a prefix of this test's own."""
    prefix = f"rds-sample-{uuid.uuid4().hex[:8]}/exports"
    root = aws_samples.rds_mysql / "exports"
    for path in root.rglob("*"):
        if path.is_file():
            key = f"{prefix}/{path.relative_to(root)}"
            aws_clients.s3.upload_file(str(path), pipeline_config.aws.export_bucket, key)
    return ExportLocation(pipeline_config.aws.export_bucket, prefix, RDS_EXPORT_ID)


def _load(aws_clients, bigquery_client, location, info, table_id):
    return load_export_table(
        s3=aws_clients.s3,
        client=bigquery_client,
        location=location,
        info=info,
        table_ref=table_id,
        exported_at=RDS_SNAPSHOT_TIME,
        description="test",
    )


def _rows(bigquery_client, table_id):
    query = f"SELECT * FROM `{table_id}` ORDER BY id"
    return [dict(r) for r in bigquery_client.query(query).result()]


def test_reader_on_the_sample(sample_export, aws_clients):
    info = read_export_info(aws_clients.s3, sample_export)
    assert info["snapshotTime"] == "2025-11-26T00:05:00.000Z"
    tables = read_tables_info(aws_clients.s3, sample_export)
    assert sorted(tables) == ["shop.customers", "shop.orders"]
    assert tables["shop.orders"].columns[3] == ("fx_rate", "decimal(20,10)")
    assert tables["shop.orders"].row_count is None  # no count in the statistics
    files = inspect_table_files(aws_clients.s3, sample_export, "shop", "orders")
    assert [f.key.split("/")[-2] for f in files] == ["1", "2"]  # both batch folders
    assert [f.num_rows for f in files] == [2, 1]  # from footers (ranged reads)
    assert str(files[0].schema.field("amount").type) == "decimal128(12, 2)"


def test_sample_loads_with_mysql_meaning(
    sample_export, aws_clients, bigquery_client, rds_dataset, local_cloud
):
    tables = read_tables_info(aws_clients.s3, sample_export)
    base = f"{local_cloud.bigquery_project}.{rds_dataset}"
    customers = _load(
        aws_clients, bigquery_client, sample_export, tables["shop.customers"], f"{base}.c"
    )
    assert customers.row_count == customers.expected_row_count == 2
    assert customers.unrepresentable == {"birthday": 1}
    rows = _rows(bigquery_client, f"{base}.c")
    assert rows[0]["ext_id"] == Decimal("18446744073709551615")
    assert rows[0]["country"] == "JP"  # CHAR: unannotated bytes, decoded
    assert rows[0]["name"] == "山田 太郎"
    assert rows[0]["birthday"] == dt.date(1990, 4, 1) and rows[0]["birthday__raw"] is None
    assert rows[1]["birthday"] is None and rows[1]["birthday__raw"] == "0000-00-00"
    assert rows[0]["created_at"] == dt.datetime(2024, 1, 2, 3, 4, 5, 123456)  # DATETIME
    assert rows[0]["prefs"] == {"lang": "ja"}
    assert rows[1]["tier"] == 255
    assert rows[0]["_exported_at"] == RDS_SNAPSHOT_TIME

    orders = _load(aws_clients, bigquery_client, sample_export, tables["shop.orders"], f"{base}.o")
    assert orders.files == 2 and orders.row_count == 3
    rows = _rows(bigquery_client, f"{base}.o")
    assert [r["amount"] for r in rows] == [Decimal("1999.50"), Decimal("0.01"), Decimal("-5.00")]
    assert [r["fx_rate"] for r in rows] == ["0.0067123456", "1.0000000000", "150.1234567891"]
    assert [r["ship_time"] for r in rows] == ["12:30:00", "838:59:59", None]  # text: > 24 h
    assert [r["note"] for r in rows] == [None, b"\x00\x01", b""]
    assert [r["year"] for r in rows] == [2024, 2025, 2025]
    schema = {f.name: f.field_type for f in bigquery_client.get_table(f"{base}.o").schema}
    assert schema["fx_rate"] == "STRING" and schema["ship_time"] == "STRING"
    assert schema["amount"] == "NUMERIC"


def test_failed_replace_leaves_the_old_table(
    sample_export, aws_clients, bigquery_client, rds_dataset, local_cloud, monkeypatch
):
    tables = read_tables_info(aws_clients.s3, sample_export)
    table_id = f"{local_cloud.bigquery_project}.{rds_dataset}.orders"
    _load(aws_clients, bigquery_client, sample_export, tables["shop.orders"], table_id)
    before = _rows(bigquery_client, table_id)
    schema_before = bigquery_client.get_table(table_id).schema

    real_final_select = loading.final_select

    def failing_select(*args, **kwargs):
        # Fault injection (no server can be asked to fail one statement): an
        # expression that fails while the replacing statement runs.
        selects = real_final_select(*args, **kwargs)
        return [*selects, SelectColumn("boom", "CAST('not a number' AS INT64)", "INT64")]

    monkeypatch.setattr(loading, "final_select", failing_select)
    with pytest.raises(Exception, match=r"(?i)not a number|conversion|invalid"):
        _load(aws_clients, bigquery_client, sample_export, tables["shop.orders"], table_id)
    assert _rows(bigquery_client, table_id) == before
    assert bigquery_client.get_table(table_id).schema == schema_before
    leftovers = [
        t.table_id
        for t in bigquery_client.list_tables(f"{local_cloud.bigquery_project}.{rds_dataset}")
    ]
    assert not [t for t in leftovers if t.startswith("_staging_")]


def _write_export(s3, pipeline_config, columns, arrow_table: pa.Table | None, target="app.t"):
    """A minimal export of `target` in AWS's layout, under a prefix of its own.

    tables_info with `columns` ((name, original type)), and one Parquet file
    holding `arrow_table` (None: a table the export wrote no file for).
    """
    bucket = pipeline_config.aws.export_bucket
    prefix = f"hand-{uuid.uuid4().hex[:6]}"
    identifier = "hand-" + uuid.uuid4().hex[:8]
    root = f"{prefix}/{identifier}"
    # MySQL: `<db>/<db>.<table>/`; PostgreSQL (target db.schema.table): `<db>/<schema>.<table>/`.
    db, *rest = target.split(".")
    folder = target if len(rest) == 1 else ".".join(rest)
    mappings = [
        {
            "columnName": n,
            "originalType": t,
            "expectedExportedType": "",
            "originalCharMaxLength": 0,
            "originalNumPrecision": 0,
            "originalDateTimePrecision": 0,
        }
        for n, t in columns
    ]
    info = {
        "perTableStatus": [
            {
                "tableStatistics": {"extractionJobId": 1},
                "schemaMetadata": {"originalTypeMappings": mappings},
                "status": "COMPLETE",
                "sizeGB": 0.0,
                "target": target,
            }
        ]
    }
    s3.put_object(
        Bucket=bucket,
        Key=f"{root}/export_tables_info_{identifier}_from_1_to_1.json",
        Body=json.dumps(info).encode(),
    )
    if arrow_table is None:
        return ExportLocation(bucket, prefix, identifier)
    buffer = io.BytesIO()
    pq.write_table(arrow_table, buffer, compression="gzip")
    s3.put_object(
        Bucket=bucket,
        Key=f"{root}/{db}/{folder}/1/part-00000-x.c000.gz.parquet",
        Body=buffer.getvalue(),
    )
    return ExportLocation(bucket, prefix, identifier)


def test_values_bigquery_cannot_type_are_kept_beside(
    aws_clients, bigquery_client, rds_dataset, local_cloud, pipeline_config
):
    columns = [
        ("id", "int"),
        ("code", "char(4)"),
        ("doc", "json"),
        ("at", "time(6)"),
        ("day", "date"),
    ]
    arrow_table = pa.table(
        {
            "id": pa.array([1, 2, 3, 4], pa.int32()),
            "code": pa.array([b"ok", b"\xff\xfe", "é".encode(), None], pa.binary()),
            "doc": pa.array(['{"a": 1}', "{not json", "[1, 2]", None], pa.string()),
            "at": pa.array(["00:00:00", "23:59:59.999999", "12:00:00.5", None], pa.string()),
            "day": pa.array(["2024-02-29", "2024-00-10", "0000-00-00", None], pa.string()),
        }
    )
    location = _write_export(aws_clients.s3, pipeline_config, columns, arrow_table)
    tables = read_tables_info(aws_clients.s3, location)
    table_id = f"{local_cloud.bigquery_project}.{rds_dataset}.t"
    result = _load(aws_clients, bigquery_client, location, tables["app.t"], table_id)
    assert result.unrepresentable == {"code": 1, "doc": 1, "day": 2}
    rows = _rows(bigquery_client, table_id)
    assert [r["code"] for r in rows] == ["ok", None, "é", None]
    assert [r["code__raw"] for r in rows] == [None, b"\xff\xfe", None, None]
    assert [r["doc"] for r in rows] == [{"a": 1}, None, [1, 2], None]
    assert [r["doc__raw"] for r in rows] == [None, "{not json", None, None]
    # Every TIME fits a day here, so the column is TIME.
    assert [r["at"] for r in rows] == [
        dt.time(0),
        dt.time(23, 59, 59, 999999),
        dt.time(12, 0, 0, 500000),
        None,
    ]
    assert [r["day"] for r in rows] == [dt.date(2024, 2, 29), None, None, None]
    assert [r["day__raw"] for r in rows] == [None, "2024-00-10", "0000-00-00", None]
    schema = {f.name: f.field_type for f in bigquery_client.get_table(table_id).schema}
    assert schema["at"] == "TIME" and schema["code__raw"] == "BYTES"


def test_file_schemas_that_disagree_are_an_error_naming_the_file(
    aws_clients, bigquery_client, rds_dataset, local_cloud, pipeline_config
):
    columns = [("id", "int")]
    location = _write_export(
        aws_clients.s3, pipeline_config, columns, pa.table({"id": pa.array([1], pa.int32())})
    )
    other = io.BytesIO()
    pq.write_table(pa.table({"id": pa.array(["x"], pa.string())}), other)
    key = f"{location.root}/app/app.t/2/part-00002-y.c000.gz.parquet"
    aws_clients.s3.put_object(Bucket=location.bucket, Key=key, Body=other.getvalue())
    tables = read_tables_info(aws_clients.s3, location)
    with pytest.raises(RdsLoadError, match="part-00002-y"):
        _load(
            aws_clients,
            bigquery_client,
            location,
            tables["app.t"],
            f"{local_cloud.bigquery_project}.{rds_dataset}.t",
        )


def test_table_without_parquet_files_loads_empty_with_its_schema(
    aws_clients, bigquery_client, rds_dataset, local_cloud, pipeline_config
):
    columns = [("id", "bigint unsigned"), ("code", "char(2)"), ("day", "date"), ("at", "datetime")]
    location = _write_export(aws_clients.s3, pipeline_config, columns, None)
    tables = read_tables_info(aws_clients.s3, location)
    table_id = f"{local_cloud.bigquery_project}.{rds_dataset}.empty"
    result = _load(aws_clients, bigquery_client, location, tables["app.t"], table_id)
    assert (result.row_count, result.expected_row_count, result.files) == (0, 0, 0)
    schema = {f.name: f.field_type for f in bigquery_client.get_table(table_id).schema}
    assert schema["id"] == "NUMERIC" and schema["code"] == "STRING"
    assert schema["day"] == "DATE" and schema["at"] == "DATETIME"


def test_columns_bigquery_cannot_name_are_renamed_in_the_streamed_file(
    aws_clients, bigquery_client, rds_dataset, local_cloud, pipeline_config
):
    columns = [("id", "int"), ("unit-price", "decimal(10,2)"), ("note", "varchar(10)")]
    arrow_table = pa.table(
        {
            "id": pa.array([1, 2], pa.int32()),
            "unit-price": pa.array([Decimal("9.99"), None], pa.decimal128(10, 2)),
            "note": pa.array(["x", None], pa.string()),
        }
    )
    location = _write_export(aws_clients.s3, pipeline_config, columns, arrow_table)
    tables = read_tables_info(aws_clients.s3, location)
    table_id = f"{local_cloud.bigquery_project}.{rds_dataset}.renamed"
    result = _load(aws_clients, bigquery_client, location, tables["app.t"], table_id)
    renamed = result.renamed_columns["unit-price"]
    assert list(result.renamed_columns) == ["unit-price"] and renamed.startswith("unit_price")
    assert result.row_count == 2
    rows = _rows(bigquery_client, table_id)
    assert [r[renamed] for r in rows] == [Decimal("9.99"), None]
    assert [r["note"] for r in rows] == ["x", None]
    described = {f.name: f.description for f in bigquery_client.get_table(table_id).schema}
    assert described[renamed] == "MySQL `unit-price` decimal(10,2)"
