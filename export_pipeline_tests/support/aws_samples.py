"""Small exports in the formats AWS documents, written by the tests themselves.

The readers (`export_pipeline.dynamodb.export_files`, `export_pipeline.rds.export_files`)
and the local cloud's export emulation are both tested against these files. They
are written here from AWS's documentation, with nothing taken from
`export_pipeline.local_cloud`, so that reader and emulator cannot come to agree
on a format of their own. Every byte is fixed (gzip without a timestamp, fixed
ids and names): the same call writes the same files.

Each writer puts its files under `root`; a file's path relative to `root` is its
S3 key in a bucket (the prefix is `exports`), so a test can read the files
directly or upload them as they are.

DynamoDB (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/S3DataExport.Output.html):

    exports/AWSDynamoDB/<ExportId>/_started                 empty marker
    exports/AWSDynamoDB/<ExportId>/manifest-summary.json    (+ .md5: base64 MD5 of the file)
    exports/AWSDynamoDB/<ExportId>/manifest-files.json      JSON Lines, one object per data file
    full export:        exports/AWSDynamoDB/<ExportId>/data/<name>.json.gz
    incremental export: exports/AWSDynamoDB/data/<name>.json.gz  (one folder for every
                        incremental export of the prefix: select files through the manifest)

manifest-files.json lines are `{"itemCount", "md5Checksum" (base64 MD5 of the
object), "etag" (S3's ETag: hex MD5 for a single-part upload), "dataFileS3Key"}`.
An empty partition gives an empty (zero-byte) data file. Full-export lines are
`{"Item": {...}}` in DynamoDB JSON; incremental (NEW_AND_OLD_IMAGES) lines are
`{"Metadata": {"WriteTimestampMicros": {"N": ...}}, "Keys": {...}, "NewImage": {...},
"OldImage": {...}}`: an insert has no OldImage, a delete no NewImage.
Export ids are `<14-digit epoch milliseconds>-<8 hex digits>`.

RDS snapshot export of MySQL database `shop`
(https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_ExportSnapshot.html):

    exports/<id>/export_info_<id>.json
    exports/<id>/export_tables_info_<id>_from_1_to_<N>.json
    exports/<id>/shop/shop.<table>/<batch>/part-<n>-<uuid>.c000.gz.parquet

with gzip Parquet typed as AWS's MySQL table says
(https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_ExportSnapshot.data-types.html):
BIGINT as INT64; BIGINT UNSIGNED as FIXED_LEN_BYTE_ARRAY(9) DECIMAL(20,0); CHAR
as BYTE_ARRAY without annotation (not STRING); VARCHAR, ENUM and JSON as
BYTE_ARRAY STRING; DATE and TIME as BYTE_ARRAY STRING (so `0000-00-00` and
`838:59:59` survive); DATETIME as INT64 TIMESTAMP_MICROS; TINYINT UNSIGNED as
INT32 INT(16, signed); DECIMAL(p,s) with p <= 38 as DECIMAL(p,s) (INT32, INT64 or
FIXED_LEN_BYTE_ARRAY by size: here the fixed-length form); BLOB as BYTE_ARRAY;
YEAR as INT32. A table can span several batch folders and part
numbers can have gaps (here: `shop.orders` in folders 1 and 2, parts 0 and 2).
The files carry no Arrow schema (AWS's export is not written by Arrow).
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

BUCKET = "my-export-bucket"
PREFIX = "exports"
REGION = "ap-northeast-1"
ACCOUNT = "123456789012"
TABLE_ARN = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/Orders"
TABLE_ID = "0f9a8b7c-1d2e-3f40-5a6b-7c8d9e0f1a2b"

FULL_EXPORT_ID = "01764115200000-5f3e2a1b"  # export time 2025-11-26T00:00:00Z
INCREMENTAL_EXPORT_ID = "01764118800000-9c8d7e6f"  # window 00:00 to 01:00 that day
FULL_SUMMARY_KEY = f"{PREFIX}/AWSDynamoDB/{FULL_EXPORT_ID}/manifest-summary.json"
INCREMENTAL_SUMMARY_KEY = f"{PREFIX}/AWSDynamoDB/{INCREMENTAL_EXPORT_ID}/manifest-summary.json"
INCREMENTAL_DATA_KEY = f"{PREFIX}/AWSDynamoDB/data/k3d7q2wzmxe5hbnup4ravtyl6i.json.gz"

RDS_EXPORT_ID = "shopdb-2025-11-26-00-05-a1b2c3"
RDS_SNAPSHOT_TIME = dt.datetime(2025, 11, 26, 0, 5, tzinfo=dt.UTC)

# Full export of table Orders (key `orderId`): three items over three partitions,
# the last one empty. Every DynamoDB type appears, and a number that fits no
# BigQuery NUMERIC scale exactly.
FULL_EXPORT_FILES: list[tuple[str, list[dict[str, Any]]]] = [
    (
        "fq2nrlwo5usdjhg7ay4ic6pvbe",
        [
            {
                "orderId": {"S": "o-1001"},
                "customer": {"S": "c-1"},
                "total": {"N": "1999.50"},
                "paid": {"BOOL": True},
                "lines": {
                    "L": [
                        {"M": {"sku": {"S": "A1"}, "qty": {"N": "2"}}},
                        {"M": {"sku": {"S": "B7"}, "qty": {"N": "1"}}},
                    ]
                },
                "tags": {"SS": ["gift", "express"]},
                "note": {"NULL": True},
            },
            {
                "orderId": {"S": "o-1002"},
                "customer": {"S": "c-2"},
                "total": {"N": "5"},
                "paid": {"BOOL": False},
                "sig": {"B": "AQID"},
                "scores": {"NS": ["1", "2.5"]},
            },
        ],
    ),
    (
        "m4ptc6xkeh2zw7aboyj3ndrqsu",
        [
            {
                "orderId": {"S": "o-1003"},
                "customer": {"S": "c-1"},
                "total": {"N": "12345678901234567890.123"},
                "meta": {"M": {"source": {"S": "web"}, "ab": {"BS": ["/w=="]}}},
            }
        ],
    ),
    ("zd5ivbq3ywgo6lkfnexh2r7tma", []),  # an empty partition: a zero-byte file
]

# Incremental export of the same table, 00:00 to 01:00: o-1002 updated, o-1003
# deleted, o-1004 inserted (NEW_AND_OLD_IMAGES).
INCREMENTAL_LINES: list[dict[str, Any]] = [
    {
        "Metadata": {"WriteTimestampMicros": {"N": "1764117000000000"}},
        "Keys": {"orderId": {"S": "o-1002"}},
        "NewImage": {
            "orderId": {"S": "o-1002"},
            "customer": {"S": "c-2"},
            "total": {"N": "7"},
            "paid": {"BOOL": True},
        },
        "OldImage": {
            "orderId": {"S": "o-1002"},
            "customer": {"S": "c-2"},
            "total": {"N": "5"},
            "paid": {"BOOL": False},
        },
    },
    {
        "Metadata": {"WriteTimestampMicros": {"N": "1764117300000000"}},
        "Keys": {"orderId": {"S": "o-1003"}},
        "OldImage": {
            "orderId": {"S": "o-1003"},
            "customer": {"S": "c-1"},
            "total": {"N": "12345678901234567890.123"},
        },
    },
    {
        "Metadata": {"WriteTimestampMicros": {"N": "1764117600000000"}},
        "Keys": {"orderId": {"S": "o-1004"}},
        "NewImage": {"orderId": {"S": "o-1004"}, "customer": {"S": "c-3"}, "total": {"N": "42"}},
    },
]


@dataclass(frozen=True)
class AwsSamples:
    """Where `write_aws_samples` put each export: a folder whose relative paths are S3 keys."""

    dynamodb_full: Path
    dynamodb_incremental: Path
    rds_mysql: Path


def write_aws_samples(root: Path) -> AwsSamples:
    """All three sample exports, each in its own folder under `root`."""
    samples = AwsSamples(
        dynamodb_full=root / "dynamodb-full",
        dynamodb_incremental=root / "dynamodb-incremental",
        rds_mysql=root / "rds-mysql",
    )
    write_dynamodb_full_export(samples.dynamodb_full)
    write_dynamodb_incremental_export(samples.dynamodb_incremental)
    write_rds_mysql_export(samples.rds_mysql)
    return samples


# --------------------------------------------------------------------------- DynamoDB


def _put(root: Path, key: str, body: bytes) -> bytes:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return body


def _md5_base64(body: bytes) -> str:
    return base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()


def _gzip_lines(records: list[dict[str, Any]]) -> bytes:
    """JSON Lines, gzip-compressed without a timestamp; no records: a zero-byte file."""
    if not records:
        return b""
    text = "".join(json.dumps(r, separators=(",", ":"), ensure_ascii=False) + "\n" for r in records)
    return gzip.compress(text.encode("utf-8"), mtime=0)


# manifest-summary.json's fields in the order of AWS's examples (full, then incremental).
_SUMMARY_ORDER = [
    "version",
    "exportArn",
    "startTime",
    "endTime",
    "tableArn",
    "tableId",
    "exportTime",
    "exportFromTime",
    "exportToTime",
    "s3Bucket",
    "s3Prefix",
    "s3SseAlgorithm",
    "s3SseKmsKeyId",
    "manifestFilesS3Key",
    "billedSizeBytes",
    "itemCount",
    "outputFormat",
    "outputView",
    "exportType",
]


def _manifests(
    root: Path, export_id: str, summary: dict[str, Any], files: list[tuple[str, bytes, int]]
) -> None:
    """`_started`, manifest-files.json and manifest-summary.json with their .md5 files."""
    folder = f"{PREFIX}/AWSDynamoDB/{export_id}"
    _put(root, f"{folder}/_started", b"")
    entries = "".join(
        json.dumps(
            {
                "itemCount": count,
                "md5Checksum": _md5_base64(body),
                "etag": hashlib.md5(body, usedforsecurity=False).hexdigest(),
                "dataFileS3Key": key,
            }
        )
        + "\n"
        for key, body, count in files
    ).encode()
    _put(root, f"{folder}/manifest-files.json", entries)
    _put(root, f"{folder}/manifest-files.md5", _md5_base64(entries).encode())
    fields = {
        **summary,
        "manifestFilesS3Key": f"{folder}/manifest-files.json",
        "itemCount": sum(count for _key, _body, count in files),
        "outputFormat": "DYNAMODB_JSON",
    }
    ordered = {name: fields[name] for name in _SUMMARY_ORDER if name in fields}
    text = json.dumps(ordered, indent=2).encode()
    _put(root, f"{folder}/manifest-summary.json", text)
    _put(root, f"{folder}/manifest-summary.md5", _md5_base64(text).encode())


def _summary_start(export_id: str, version: str, start: str, end: str) -> dict[str, Any]:
    return {
        "version": version,
        "exportArn": f"{TABLE_ARN}/export/{export_id}",
        "startTime": start,
        "endTime": end,
        "tableArn": TABLE_ARN,
        "tableId": TABLE_ID,
    }


def _sse_and_location() -> dict[str, Any]:
    return {
        "s3Bucket": BUCKET,
        "s3Prefix": PREFIX,
        "s3SseAlgorithm": "AES256",
        "s3SseKmsKeyId": None,
    }


def write_dynamodb_full_export(root: Path) -> str:
    """A full export of table `Orders` under `root`; returns its manifest-summary key."""
    files = []
    for name, items in FULL_EXPORT_FILES:
        key = f"{PREFIX}/AWSDynamoDB/{FULL_EXPORT_ID}/data/{name}.json.gz"
        body = _put(root, key, _gzip_lines([{"Item": item} for item in items]))
        files.append((key, body, len(items)))
    summary = {
        **_summary_start(
            FULL_EXPORT_ID, "2020-06-30", "2025-11-26T00:00:05.123Z", "2025-11-26T00:06:41.456Z"
        ),
        "exportTime": "2025-11-26T00:00:00.000Z",
        **_sse_and_location(),
        "billedSizeBytes": 1234,
    }
    _manifests(root, FULL_EXPORT_ID, summary, files)
    return FULL_SUMMARY_KEY


def write_dynamodb_incremental_export(root: Path) -> str:
    """An incremental export of table `Orders` under `root`; returns its manifest-summary key."""
    body = _put(root, INCREMENTAL_DATA_KEY, _gzip_lines(INCREMENTAL_LINES))
    summary = {
        **_summary_start(
            INCREMENTAL_EXPORT_ID,
            "2023-08-01",
            "2025-11-26T01:00:03.000Z",
            "2025-11-26T01:04:10.000Z",
        ),
        "exportFromTime": "2025-11-26T00:00:00.000Z",
        "exportToTime": "2025-11-26T01:00:00.000Z",
        **_sse_and_location(),
        "billedSizeBytes": 10485760,
        "outputView": "NEW_AND_OLD_IMAGES",
        "exportType": "INCREMENTAL_EXPORT",
    }
    _manifests(root, INCREMENTAL_EXPORT_ID, summary, [(INCREMENTAL_DATA_KEY, body, 3)])
    return INCREMENTAL_SUMMARY_KEY


# --------------------------------------------------------------------------- RDS (MySQL)


@dataclass(frozen=True)
class _Column:
    """A MySQL column: its COLUMN_TYPE, the Arrow type that writes AWS's Parquet type, and
    the information_schema sizes export_tables_info repeats."""

    name: str
    mysql_type: str
    arrow_type: pa.DataType
    exported_type: str
    char_max_length: int = 0
    num_precision: int = 0
    datetime_precision: int = 0


_UTC_MICROS = pa.timestamp("us", tz="UTC")  # INT64 TIMESTAMP_MICROS, isAdjustedToUTC
CUSTOMERS = [
    _Column("id", "bigint", pa.int64(), "int64", num_precision=19),
    _Column("ext_id", "bigint unsigned", pa.decimal128(20, 0), "decimal(20,0)", num_precision=20),
    _Column("country", "char(2)", pa.binary(), "binary", char_max_length=2),
    _Column("name", "varchar(100)", pa.string(), "string", char_max_length=100),
    _Column("birthday", "date", pa.string(), "string"),
    _Column("created_at", "datetime(6)", _UTC_MICROS, "timestamp", datetime_precision=6),
    _Column("prefs", "json", pa.string(), "string"),
    _Column("tier", "tinyint unsigned", pa.int16(), "int16", num_precision=3),
]
ORDERS = [
    _Column("id", "bigint", pa.int64(), "int64", num_precision=19),
    _Column("customer_id", "bigint", pa.int64(), "int64", num_precision=19),
    _Column("amount", "decimal(12,2)", pa.decimal128(12, 2), "decimal(12,2)", num_precision=12),
    _Column("fx_rate", "decimal(20,10)", pa.decimal128(20, 10), "decimal(20,10)", num_precision=20),
    _Column("status", "enum('new','paid','refunded')", pa.string(), "string", char_max_length=8),
    _Column("ship_time", "time", pa.string(), "string"),
    _Column("note", "blob", pa.binary(), "binary", char_max_length=65535),
    _Column("year", "year", pa.int32(), "int32"),
]
_CREATED = dt.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=dt.UTC)
CUSTOMER_ROWS = [
    {
        "id": 1,
        "ext_id": Decimal("18446744073709551615"),
        "country": b"JP",
        "name": "山田 太郎",
        "birthday": "1990-04-01",
        "created_at": _CREATED,
        "prefs": '{"lang": "ja"}',
        "tier": 13,
    },
    {
        "id": 2,
        "ext_id": Decimal("7"),
        "country": b"US",
        "name": "Jane 🚀",
        "birthday": "0000-00-00",  # MySQL's zero date: no DATE value, kept as text
        "created_at": _CREATED,
        "prefs": None,
        "tier": 255,
    },
]
# shop.orders as two batches: (batch folder, part number, rows).
ORDER_BATCHES = [
    (
        1,
        0,
        [
            {
                "id": 10,
                "customer_id": 1,
                "amount": Decimal("1999.50"),
                "fx_rate": Decimal("0.0067123456"),
                "status": "paid",
                "ship_time": "12:30:00",
                "note": None,
                "year": 2024,
            },
            {
                "id": 11,
                "customer_id": 1,
                "amount": Decimal("0.01"),
                "fx_rate": Decimal("1.0000000000"),
                "status": "refunded",
                "ship_time": "838:59:59",  # TIME reaches 838 hours
                "note": b"\x00\x01",
                "year": 2025,
            },
        ],
    ),
    (
        2,
        2,  # part 1 does not exist: part numbers can have gaps
        [
            {
                "id": 12,
                "customer_id": 2,
                "amount": Decimal("-5.00"),
                "fx_rate": Decimal("150.1234567891"),
                "status": "new",
                "ship_time": None,
                "note": b"",
                "year": 2025,
            }
        ],
    ),
]
_PART_UUID = "7a3e5c1d-0b2f-4e6a-9d8c-{:012d}"


def _parquet(columns: list[_Column], rows: list[dict[str, Any]]) -> bytes:
    schema = pa.schema([pa.field(c.name, c.arrow_type) for c in columns])
    table = pa.Table.from_pylist(rows, schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="gzip", store_schema=False)
    return sink.getvalue().to_pybytes()


def _table_status(target: str, job_id: int, columns: list[_Column]) -> dict[str, Any]:
    return {
        "tableStatistics": {
            "extractionJobId": job_id,
            "partitioningInfo": {"numberOfPartitions": 1, "numberOfCompletedPartitions": 1},
        },
        "schemaMetadata": {
            "originalTypeMappings": [
                {
                    "columnName": c.name,
                    "originalType": c.mysql_type,
                    "expectedExportedType": c.exported_type,
                    "originalCharMaxLength": c.char_max_length,
                    "originalNumPrecision": c.num_precision,
                    "originalDateTimePrecision": c.datetime_precision,
                }
                for c in columns
            ]
        },
        "status": "COMPLETE",
        "sizeGB": 1e-06,
        "target": target,
    }


def write_export_documents(
    root: Path, folder: str, task: dict[str, Any], kms_key_id: str, statuses: list[dict[str, Any]]
) -> None:
    """`export_info_<id>.json` and one `export_tables_info_<id>_from_1_to_2.json` of a
    completed snapshot export in `folder`: `task`'s own fields (identifier, source,
    scope, times) and what every such export holds (bucket, role, key, status)."""
    export_id = task["exportTaskIdentifier"]
    info = {
        **task,
        "s3Bucket": BUCKET,
        "s3Prefix": PREFIX,
        "exportedFilesPath": folder,
        "iamRoleArn": f"arn:aws:iam::{ACCOUNT}:role/rds-s3-export",
        "kmsKeyId": kms_key_id,
        "status": "COMPLETE",
        "percentProgress": 100,
        "totalExportedDataInGB": 2e-06,
    }
    _put(root, f"{folder}/export_info_{export_id}.json", json.dumps(info, indent=2).encode())
    _put(
        root,
        f"{folder}/export_tables_info_{export_id}_from_1_to_2.json",
        json.dumps({"perTableStatus": statuses}, indent=2).encode(),
    )


def write_rds_mysql_export(root: Path) -> str:
    """A snapshot export of MySQL database `shop` under `root`; returns the export's folder key."""
    folder = f"{PREFIX}/{RDS_EXPORT_ID}"

    def part(table: str, batch: int, number: int) -> str:
        name = f"part-{number:05d}-{_PART_UUID.format(number)}.c000.gz.parquet"
        return f"{folder}/shop/shop.{table}/{batch}/{name}"

    _put(root, part("customers", 1, 0), _parquet(CUSTOMERS, CUSTOMER_ROWS))
    for batch, number, rows in ORDER_BATCHES:
        _put(root, part("orders", batch, number), _parquet(ORDERS, rows))
    write_export_documents(
        root,
        folder,
        {
            "exportTaskIdentifier": RDS_EXPORT_ID,
            "sourceArn": f"arn:aws:rds:{REGION}:{ACCOUNT}:snapshot:rds:shopdb-2025-11-26-00-05",
            "exportOnly": ["shop.customers", "shop.orders"],
            "snapshotTime": "2025-11-26T00:05:00.000Z",
            "taskStartTime": "2025-11-26T00:10:00.000Z",
            "taskEndTime": "2025-11-26T00:31:12.000Z",
        },
        f"arn:aws:kms:{REGION}:{ACCOUNT}:key/11111111-2222-3333-4444-555555555555",
        [
            _table_status("shop.customers", 100, CUSTOMERS),
            _table_status("shop.orders", 101, ORDERS),
        ],
    )
    return folder
