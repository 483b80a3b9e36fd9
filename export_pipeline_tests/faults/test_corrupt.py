"""Corrupt exports: the load fails naming the file, and BigQuery keeps the previous table.

Each test damages the session's clean export in the local S3 (the way a
broken writer, a bit flip or a half-finished copy would), re-runs the
BigQuery step that loaded it, and checks that the step fails with a message
naming the damaged object and that the table loaded earlier is row for row
what it was. The original objects are put back afterwards.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from export_pipeline.dynamodb.source import export_asset_key as dynamodb_export_key
from export_pipeline.naming import dynamodb_table_name, rds_table_name
from export_pipeline.rds.source import export_asset_key as rds_export_key
from export_pipeline_tests.faults import _runs

BUCKET = _runs.BUCKET


@contextmanager
def restored(s3: Any, keys: list[str]) -> Iterator[None]:
    """Put `keys` back as they were (content, or absence) when the block ends."""
    saved: dict[str, bytes | None] = {}
    for key in keys:
        try:
            saved[key] = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            saved[key] = None
    try:
        yield
    finally:
        for key, body in saved.items():
            if body is None:
                s3.delete_object(Bucket=BUCKET, Key=key)
            else:
                s3.put_object(Bucket=BUCKET, Key=key, Body=body)


def _md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


@pytest.fixture
def dynamodb_export(clean, aws_clients):
    """(manifest-files key, its entries, the first data file holding items) of the clean export."""
    clean.require("dynamodb")
    meta = _runs.export_metadata(clean, dynamodb_export_key(clean.dynamodb_table))
    summary_key = meta["manifest_uris"][0].removeprefix(f"s3://{BUCKET}/")
    summary = json.loads(aws_clients.s3.get_object(Bucket=BUCKET, Key=summary_key)["Body"].read())
    files_key = summary["manifestFilesS3Key"]
    body = aws_clients.s3.get_object(Bucket=BUCKET, Key=files_key)["Body"].read().decode()
    entries = [json.loads(line) for line in body.splitlines() if line.strip()]
    with_items = [e for e in entries if e["itemCount"] > 0]
    assert with_items, "the clean export has no data file holding items"
    return files_key, entries, with_items[0]


def _dynamodb_rows(client, clean) -> list[tuple]:
    return _runs.table_rows(client, clean.table_id(dynamodb_table_name(clean.dynamodb_table)))


def _fails_naming(result, *names: str) -> str:
    assert not result.success, "the load succeeded on a corrupt export"
    text = _runs.failure_messages(result)
    for name in names:
        assert name in text, f"the failure does not name {name!r}:\n{text}"
    return text


def _only_dynamodb(clean) -> Any:
    return _runs.make_config(clean.dataset, dynamodb_table=clean.dynamodb_table)


def test_changed_bytes_fail_the_md5_check(clean, aws_clients, bigquery_client, dynamodb_export):
    _, _, entry = dynamodb_export
    key = entry["dataFileS3Key"]
    before = _dynamodb_rows(bigquery_client, clean)
    with restored(aws_clients.s3, [key]):
        data = bytearray(aws_clients.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        data[len(data) // 2] ^= 0x01  # one flipped bit
        aws_clients.s3.put_object(Bucket=BUCKET, Key=key, Body=bytes(data))
        result = _runs.run_bigquery_steps(_only_dynamodb(clean), clean)
    text = _fails_naming(result, key)
    assert "MD5" in text
    assert _dynamodb_rows(bigquery_client, clean) == before


def test_truncated_gzip_with_a_matching_manifest_fails(
    clean, aws_clients, bigquery_client, dynamodb_export
):
    """A cut-off gzip whose MD5 the manifest agrees with: only decoding can notice."""
    files_key, entries, entry = dynamodb_export
    key = entry["dataFileS3Key"]
    before = _dynamodb_rows(bigquery_client, clean)
    with restored(aws_clients.s3, [key, files_key]):
        data = aws_clients.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        truncated = data[: len(data) * 2 // 3]
        aws_clients.s3.put_object(Bucket=BUCKET, Key=key, Body=truncated)
        edited = [
            {**e, "md5Checksum": _md5(truncated)} if e["dataFileS3Key"] == key else e
            for e in entries
        ]
        manifest = "".join(json.dumps(e) + "\n" for e in edited)
        aws_clients.s3.put_object(Bucket=BUCKET, Key=files_key, Body=manifest.encode())
        result = _runs.run_bigquery_steps(_only_dynamodb(clean), clean)
    _fails_naming(result, f"s3://{BUCKET}/{key}")
    assert _dynamodb_rows(bigquery_client, clean) == before


def test_data_file_missing_from_s3_fails_naming_it(
    clean, aws_clients, bigquery_client, dynamodb_export
):
    _, _, entry = dynamodb_export
    key = entry["dataFileS3Key"]
    before = _dynamodb_rows(bigquery_client, clean)
    with restored(aws_clients.s3, [key]):
        aws_clients.s3.delete_object(Bucket=BUCKET, Key=key)
        result = _runs.run_bigquery_steps(_only_dynamodb(clean), clean)
    _fails_naming(result, key)
    assert _dynamodb_rows(bigquery_client, clean) == before


def test_export_of_another_table_is_refused(clean, aws_clients, bigquery_client, unique_name):
    """An export ARN given for reload that belongs to a different DynamoDB table."""
    clean.require("dynamodb")
    other = f"other-{unique_name}"
    _runs.create_dynamodb_table(aws_clients.dynamodb, other, _runs.DYNAMODB_ITEMS[:1])
    other_arn = aws_clients.dynamodb.describe_table(TableName=other)["Table"]["TableArn"]
    export = aws_clients.dynamodb.export_table_to_point_in_time(
        TableArn=other_arn, S3Bucket=BUCKET, S3Prefix=f"exports/dynamodb/{other}"
    )["ExportDescription"]
    before = _dynamodb_rows(bigquery_client, clean)
    config = _only_dynamodb(clean)
    [key] = _runs.bigquery_keys(config)
    op_name = "__".join(key.path).replace("-", "_")
    result = _runs.run_bigquery_steps(
        config,
        clean,
        run_config={"ops": {op_name: {"config": {"export_arn": export["ExportArn"]}}}},
    )
    _fails_naming(result, export["ExportArn"], repr(other), repr(clean.dynamodb_table))
    assert _dynamodb_rows(bigquery_client, clean) == before


def test_parquet_file_with_another_schema_fails_naming_it(clean, aws_clients, bigquery_client):
    clean.require("rds")
    database, table = _runs.RDS_TABLE.split(".")
    meta = _runs.export_metadata(clean, rds_export_key(clean.rds))
    folder = f"exports/rds/{meta['export_task_identifier']}/{database}/{_runs.RDS_TABLE}/"
    listing = aws_clients.s3.list_objects_v2(Bucket=BUCKET, Prefix=folder)
    keys = sorted(o["Key"] for o in listing.get("Contents", []) if o["Key"].endswith(".parquet"))
    assert len(keys) >= 2, f"need sibling Parquet files to differ from, found {keys}"
    victim = keys[-1]
    table_id = clean.table_id(rds_table_name(database, table))
    before = _runs.table_rows(bigquery_client, table_id)
    with restored(aws_clients.s3, [victim]):
        original = pq.read_table(
            io.BytesIO(aws_clients.s3.get_object(Bucket=BUCKET, Key=victim)["Body"].read())
        )
        # Same columns, but the first one now holds text: a schema unlike its siblings'.
        first = original.column_names[0]
        changed = original.set_column(
            0, pa.field(first, pa.string()), original.column(0).cast(pa.string())
        )
        buffer = io.BytesIO()
        pq.write_table(changed, buffer)
        aws_clients.s3.put_object(Bucket=BUCKET, Key=victim, Body=buffer.getvalue())
        config = _runs.make_config(clean.dataset, rds_instances=[clean.rds])
        result = _runs.run_bigquery_steps(config, clean)
    _fails_naming(result, victim.rsplit("/", 1)[-1])
    assert _runs.table_rows(bigquery_client, table_id) == before


def test_gzip_sanity_of_the_fixture(dynamodb_export, aws_clients):
    """The damaged-file tests start from a file that really is a valid gzip with items."""
    _, _, entry = dynamodb_export
    data = aws_clients.s3.get_object(Bucket=BUCKET, Key=entry["dataFileS3Key"])["Body"].read()
    assert _md5(data) == entry["md5Checksum"]
    assert len(gzip.decompress(data).splitlines()) == entry["itemCount"]
