"""A small RDS snapshot export of a PostgreSQL database, written from AWS's documentation.

Like `aws_samples` (MySQL, DynamoDB): nothing is taken from
`export_pipeline.local_cloud`, every byte is fixed, and a file's path relative
to `root` is its S3 key (prefix `exports`). Layout
(https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_ExportSnapshot.html):

    exports/<id>/export_info_<id>.json
    exports/<id>/export_tables_info_<id>_from_1_to_2.json
    exports/<id>/app/<schema>.<table>/<batch>/part-<n>-<uuid>.c000.gz.parquet

`target` in export_tables_info is `database.schema.table`. Parquet types as
AWS's PostgreSQL table says
(https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_ExportSnapshot.data-types.html):
BIGINT INT64, INTEGER INT32, SMALLINT INT32 annotated INT(16), REAL FLOAT,
DOUBLE PRECISION DOUBLE, BOOLEAN BOOLEAN, BYTEA BINARY; NUMERIC, DATE,
TIMESTAMP, JSON, UUID, arrays and the rest as BYTE_ARRAY STRING in
PostgreSQL's text form. `app.public.accounts` spans batch folders 1 and 2
with a gap in its part numbers. The files carry no Arrow schema.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from export_pipeline_tests.support.aws_samples import (
    PREFIX,
    _put,
    write_export_documents,
)

PG_EXPORT_ID = "appdb-2025-12-01-00-05-d4e5f6"
PG_SNAPSHOT_TIME = dt.datetime(2025, 12, 1, 0, 5, tzinfo=dt.UTC)
_ARN = "arn:aws:rds:eu-west-1:123456789012:cluster-snapshot:rds:appdb-2025-12-01-00-05"

# (column, format_type(), Arrow type writing AWS's Parquet type, expectedExportedType)
ACCOUNTS = [
    ("id", "bigint", pa.int64(), "int64"),
    ("age", "smallint", pa.int16(), "int32"),
    ("score", "real", pa.float32(), "float"),
    ("ratio", "double precision", pa.float64(), "double"),
    ("balance", "numeric(12,2)", pa.string(), "binary (UTF8)"),
    ("active", "boolean", pa.bool_(), "boolean"),
    ("avatar", "bytea", pa.binary(), "binary"),
    ("code", "character(4)", pa.string(), "binary (UTF8)"),
    ("profile", "jsonb", pa.string(), "binary (UTF8)"),
    ("born", "date", pa.string(), "binary (UTF8)"),
    ("seen", "timestamp with time zone", pa.string(), "binary (UTF8)"),
    ("tags", "text[]", pa.string(), "binary (UTF8)"),
]
ORDERS = [
    ("id", "integer", pa.int32(), "int32"),
    ("amount", "money", pa.string(), "binary (UTF8)"),
    ("placed", "timestamp without time zone", pa.string(), "binary (UTF8)"),
    ("ref", "uuid", pa.string(), "binary (UTF8)"),
]
ACCOUNT_BATCHES = [
    (
        1,
        0,
        [
            {
                "id": 1,
                "age": 41,
                "score": 0.5,
                "ratio": float("nan"),
                "balance": "1234.56",
                "active": True,
                "avatar": b"\x89PNG",
                "code": "ab  ",
                "profile": '{"lang": "ga", "n": 1}',
                "born": "1984-02-29",
                "seen": "2025-11-30 23:59:59.999999+00",
                "tags": '{vip,"early bird"}',
            },
            {
                "id": 2,
                "age": -32768,
                "score": float("inf"),
                "ratio": -0.0,
                "balance": "NaN",
                "active": False,
                "avatar": b"",
                "code": "    ",
                "profile": "{}",
                "born": "infinity",
                "seen": "0099-01-01 00:00:00+00 BC",
                "tags": "{}",
            },
        ],
    ),
    (2, 2, [{"id": 3}]),  # part 1 does not exist: part numbers can have gaps
]
ORDER_ROWS = [
    {
        "id": 10,
        "amount": "$1,000.00",
        "placed": "2025-11-30 12:00:00",
        "ref": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    },
    {"id": 11, "amount": "-$0.50", "placed": "2025-12-01 00:00:00.5", "ref": None},
]
_PART_UUID = "5b1c2d3e-4f50-4a6b-8c7d-{:012d}"


def _parquet(columns: list[tuple[str, str, pa.DataType, str]], rows: list[dict[str, Any]]) -> bytes:
    schema = pa.schema([pa.field(name, arrow) for name, _, arrow, _ in columns])
    sink = pa.BufferOutputStream()
    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(table, sink, compression="gzip", store_schema=False)
    return sink.getvalue().to_pybytes()


def _status(target: str, job_id: int, columns: list[tuple[str, str, pa.DataType, str]]) -> dict:
    return {
        "tableStatistics": {
            "extractionJobId": job_id,
            "partitioningInfo": {"numberOfPartitions": 1, "numberOfCompletedPartitions": 1},
        },
        "schemaMetadata": {
            "originalTypeMappings": [
                {
                    "columnName": name,
                    "originalType": pg_type,
                    "expectedExportedType": exported,
                    "originalCharMaxLength": 0,
                    "originalNumPrecision": 0,
                    "originalDateTimePrecision": 0,
                }
                for name, pg_type, _, exported in columns
            ]
        },
        "status": "COMPLETE",
        "sizeGB": 1e-06,
        "target": target,
    }


def write_rds_postgres_export(root: Path) -> str:
    """The sample export of database `app` under `root`; returns the export's folder key."""
    folder = f"{PREFIX}/{PG_EXPORT_ID}"

    def part(folder_name: str, batch: int, number: int) -> str:
        name = f"part-{number:05d}-{_PART_UUID.format(number)}.c000.gz.parquet"
        return f"{folder}/app/{folder_name}/{batch}/{name}"

    for batch, number, rows in ACCOUNT_BATCHES:
        _put(root, part("public.accounts", batch, number), _parquet(ACCOUNTS, rows))
    _put(root, part("sales.orders", 1, 0), _parquet(ORDERS, ORDER_ROWS))
    write_export_documents(
        root,
        folder,
        {
            "exportTaskIdentifier": PG_EXPORT_ID,
            "sourceArn": _ARN,
            "exportOnly": ["app.public.accounts", "app.sales"],
            "snapshotTime": "2025-12-01T00:05:00.000Z",
            "taskStartTime": "2025-12-01T00:10:00.000Z",
            "taskEndTime": "2025-12-01T00:40:00.000Z",
        },
        "arn:aws:kms:eu-west-1:123456789012:key/11111111-2222-3333-4444-555555555555",
        [
            _status("app.public.accounts", 100, ACCOUNTS),
            _status("app.sales.orders", 101, ORDERS),
        ],
    )
    return folder
