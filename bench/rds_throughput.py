"""Benchmark: the RDS loader's S3 → BigQuery throughput against plainly copying the files.

Run (in the project's virtualenv): `python bench/rds_throughput.py [--rows 1000000] [--files 8]
[--engine mysql|postgres]`

`--engine postgres` does the same for an RDS PostgreSQL export (`app.sales.orders`
in `app/sales.orders/`): BIGINT INT64, INTEGER INT32, SMALLINT INT(16), DOUBLE,
BOOLEAN natively and NUMERIC, enum, TIMESTAMPTZ, DATE, TEXT and JSONB as
PostgreSQL's text, loaded with `export_pipeline.postgres.engine.POSTGRES`.

1. Writes an export of `--rows` rows of a typical orders table in AWS's
   layout and physical types (gzip Parquet, several part files in two batch
   folders, export_tables_info with originalTypeMappings; DECIMAL as
   FIXED_LEN_BYTE_ARRAY, BIGINT UNSIGNED as DECIMAL(20,0), CHAR as bytes,
   DATE/TIME as text, DATETIME as TIMESTAMP_MICROS) into the S3 of a private
   local cloud it starts (and stops) itself.
2. Measures, in this one run:
   - `s3 read`: GET every object to nowhere (the transfer floor);
   - `plain copy` (the limit): every object streamed from S3 into a BigQuery
     load job appending to a table with the file's own schema, nothing else:
     what any S3 → BigQuery loader has to do at least;
   - `worker`: `export_pipeline.rds.loading.load_export_table` — footers via
     ranged reads, staging table, the same streamed uploads, the profiling
     query, the typed `CREATE OR REPLACE … AS SELECT`, descriptions.
   Both BigQuery figures include the emulator's ingest (DuckDB reading the
   Parquet), which is the same work in both; the worker's own extra is
   reported separately (`worker - plain copy`).
3. Prints rows/s and MB/s for each, and the ratio plain copy / worker
   (1.0 = the worker costs nothing beyond copying; goal ≥ 0.8).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import sys
import tempfile
import time
import tracemalloc
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from google.cloud import bigquery

from export_pipeline.bigquery.parquet_schema import bigquery_schema_from_parquet
from export_pipeline.bigquery.staging import DECIMAL_TARGET_TYPES
from export_pipeline.config import current_config
from export_pipeline.postgres.engine import POSTGRES
from export_pipeline.rds.engine import MYSQL
from export_pipeline.rds.export_files import ExportLocation, read_tables_info
from export_pipeline.rds.loading import load_export_table

COLUMNS = [
    ("id", "bigint"),
    ("customer_id", "bigint unsigned"),
    ("country", "char(2)"),
    ("amount", "decimal(12,2)"),
    ("fx_rate", "decimal(20,10)"),
    ("status", "enum('new','paid','shipped','refunded')"),
    ("created_at", "datetime(6)"),
    ("ship_day", "date"),
    ("ship_time", "time"),
    ("note", "varchar(200)"),
    ("year", "year"),
]


def _batch(start: int, count: int, rng: np.random.Generator) -> pa.Table:
    ids = np.arange(start, start + count, dtype=np.int64)
    cents = rng.integers(-(10**9), 10**9, count)
    rates = rng.integers(0, 10**14, count)
    seconds = rng.integers(0, 86400, count)
    days = rng.integers(0, 3650, count)
    base = np.datetime64("2020-01-01T00:00:00", "us")
    statuses = np.array(["new", "paid", "shipped", "refunded"])
    countries = np.array([b"JP", b"US", b"DE", b"FR"], dtype=object)
    day_text = (np.datetime64("2015-01-01") + days.astype("timedelta64[D]")).astype(str)
    time_text = [f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in seconds.tolist()]
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "customer_id": pa.array(
                [Decimal(int(v)) for v in rng.integers(0, 2**62, count)], pa.decimal128(20, 0)
            ),
            "country": pa.array(countries[ids % 4], pa.binary()),
            "amount": pa.array([Decimal(int(c)).scaleb(-2) for c in cents], pa.decimal128(12, 2)),
            "fx_rate": pa.array(
                [Decimal(int(r)).scaleb(-10) for r in rates], pa.decimal128(20, 10)
            ),
            "status": pa.array(statuses[ids % 4], pa.string()),
            "created_at": pa.array(
                base + rng.integers(0, 10**15, count).astype("timedelta64[us]"),
                pa.timestamp("us", tz="UTC"),
            ),
            "ship_day": pa.array(day_text, pa.string()),
            "ship_time": pa.array(time_text, pa.string()),
            "note": pa.array([f"order {i} note" for i in ids.tolist()], pa.string()),
            "year": pa.array(2000 + ids % 30, pa.int32()),
        }
    )


PG_COLUMNS = [
    ("id", "bigint"),
    ("account_id", "integer"),
    ("qty", "smallint"),
    ("amount", "numeric(12,2)"),
    ("fx", "double precision"),
    ("paid", "boolean"),
    ("status", "order_status"),
    ("placed_at", "timestamp with time zone"),
    ("ship_day", "date"),
    ("note", "text"),
    ("payload", "jsonb"),
]


def _pg_batch(start: int, count: int, rng: np.random.Generator) -> pa.Table:
    ids = np.arange(start, start + count, dtype=np.int64)
    cents = rng.integers(-(10**9), 10**9, count)
    days = rng.integers(0, 3650, count)
    seconds = rng.integers(0, 86400 * 3650, count)
    statuses = np.array(["new", "paid", "shipped", "refunded"])
    base = np.datetime64("2015-01-01T00:00:00", "s")
    stamps = (base + seconds.astype("timedelta64[s]")).astype(str)
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "account_id": pa.array(rng.integers(1, 2**31 - 1, count), pa.int32()),
            "qty": pa.array(rng.integers(-(2**15), 2**15 - 1, count), pa.int16()),
            "amount": pa.array([f"{c / 100:.2f}" for c in cents.tolist()], pa.string()),
            "fx": pa.array(rng.random(count), pa.float64()),
            "paid": pa.array(ids % 2 == 0, pa.bool_()),
            "status": pa.array(statuses[ids % 4], pa.string()),
            "placed_at": pa.array([t.replace("T", " ") + "+00" for t in stamps], pa.string()),
            "ship_day": pa.array(
                (np.datetime64("2015-01-01") + days.astype("timedelta64[D]")).astype(str),
                pa.string(),
            ),
            "note": pa.array([f"order {i} note" for i in ids.tolist()], pa.string()),
            "payload": pa.array([f'{{"n": {i}, "tags": ["a"]}}' for i in ids.tolist()]),
        }
    )


# Per engine: columns, batch writer, table target, its folder under the export.
ENGINES = {
    "mysql": (MYSQL, COLUMNS, _batch, "shop.orders", "shop/shop.orders"),
    "postgres": (POSTGRES, PG_COLUMNS, _pg_batch, "app.sales.orders", "app/sales.orders"),
}


def write_export(
    s3, bucket: str, prefix: str, identifier: str, rows: int, files: int, engine: str = "mysql"
) -> dict:
    _, columns, make_batch, target, folder = ENGINES[engine]
    rng = np.random.default_rng(20251126)
    root = f"{prefix}/{identifier}"
    per_file = -(-rows // files)
    total_bytes = 0
    for index in range(files):
        start = index * per_file + 1
        count = min(per_file, rows - index * per_file)
        buffer = io.BytesIO()
        pq.write_table(make_batch(start, count, rng), buffer, compression="gzip")
        batch = 1 if index < files // 2 else 2
        name = f"part-{index + batch - 1:05d}-{uuid.uuid4()}.c000.gz.parquet"
        key = f"{root}/{folder}/{batch}/{name}"
        s3.put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())
        total_bytes += buffer.tell()
    mappings = [{"columnName": n, "originalType": t} for n, t in columns]
    info = {
        "perTableStatus": [
            {
                "tableStatistics": {"extractionJobId": 1},
                "schemaMetadata": {"originalTypeMappings": mappings},
                "status": "COMPLETE",
                "sizeGB": total_bytes / 1e9,
                "target": target,
            }
        ]
    }
    s3.put_object(
        Bucket=bucket,
        Key=f"{root}/export_tables_info_{identifier}_from_1_to_1.json",
        Body=json.dumps(info).encode(),
    )
    return {"bytes": total_bytes}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--parallel", type=int, default=1, help="uploads at once (both paths)")
    parser.add_argument("--engine", choices=sorted(ENGINES), default="mysql")
    args = parser.parse_args()
    engine, _, _, target, _ = ENGINES[args.engine]

    from export_pipeline.local_cloud import control
    from export_pipeline.local_cloud.clients import AwsClients
    from export_pipeline_tests.support.local_cloud import fresh_local_cloud_settings

    config = current_config()
    with tempfile.TemporaryDirectory(prefix="rds-bench-") as state:
        settings = fresh_local_cloud_settings(Path(state))
        control.up(settings, config, owner_pid=os.getpid())
        try:
            clients = AwsClients.for_config(settings, config)
            bq = control.bigquery_client(settings)
            s3 = clients.s3
            bucket = config.aws.export_bucket
            identifier = "bench-" + uuid.uuid4().hex[:8]
            t0 = time.perf_counter()
            written = write_export(
                s3, bucket, "bench", identifier, args.rows, args.files, args.engine
            )
            print(
                f"generated {args.rows:,} rows in {args.files} files, "
                f"{written['bytes'] / 1e6:.1f} MB gzip Parquet ({time.perf_counter() - t0:.1f} s)"
            )
            location = ExportLocation(bucket, "bench", identifier)
            objects = [
                o
                for page in s3.get_paginator("list_objects_v2").paginate(
                    Bucket=bucket, Prefix=location.table_folder(*target.split("."))
                )
                for o in page.get("Contents", [])
            ]
            dataset = f"{settings.bigquery_project}.rds_bench_{uuid.uuid4().hex[:6]}"
            bq.create_dataset(dataset)

            t0 = time.perf_counter()
            for o in objects:
                for _ in s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].iter_chunks(1 << 20):
                    pass
            s3_read = time.perf_counter() - t0

            # The limit: the same bytes, S3 → BigQuery load job, nothing else.
            first = pq.read_schema(
                io.BytesIO(s3.get_object(Bucket=bucket, Key=objects[0]["Key"])["Body"].read())
            )
            plain_schema = bigquery_schema_from_parquet(first)
            plain = bigquery.Table(f"{dataset}.plain_copy", schema=plain_schema)
            bq.create_table(plain)
            job_config = bigquery.LoadJobConfig(
                source_format="PARQUET",
                write_disposition="WRITE_APPEND",
                schema=plain_schema,
                decimal_target_types=list(DECIMAL_TARGET_TYPES),
            )

            def copy(o: dict) -> None:
                body = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"]
                bq.load_table_from_file(
                    body, plain.reference, job_config=job_config, rewind=False
                ).result()

            t0 = time.perf_counter()
            with ThreadPoolExecutor(max_workers=args.parallel) as pool:
                list(pool.map(copy, objects))
            plain_seconds = time.perf_counter() - t0

            info = read_tables_info(s3, location)[target]
            t0 = time.perf_counter()
            result = load_export_table(
                s3=s3,
                client=bq,
                location=location,
                info=info,
                table_ref=f"{dataset}.rds_shop_orders",
                exported_at=dt.datetime.now(dt.UTC),
                description="benchmark",
                parallel_uploads=args.parallel,
                engine=engine,
            )
            worker_seconds = time.perf_counter() - t0
            assert result.row_count == args.rows, result
            mb = written["bytes"] / 1e6
            for label, seconds in (
                ("s3 read (floor)", s3_read),
                ("plain copy S3 -> BigQuery (limit)", plain_seconds),
                ("worker load_export_table", worker_seconds),
            ):
                print(
                    f"{label:<34}{seconds:7.2f} s {args.rows / seconds:12,.0f} rows/s "
                    f"{mb / seconds:7.1f} MB/s"
                )
            print(
                f"  of which uploads {result.upload_seconds:.2f} s, profile + typed replace "
                f"{result.replace_seconds:.2f} s, the rest (footers, staging, descriptions) "
                f"{worker_seconds - result.upload_seconds - result.replace_seconds:.2f} s"
            )
            print(
                f"upload path ratio plain copy / worker uploads = "
                f"{plain_seconds / result.upload_seconds:.2f}"
            )
            print(f"ratio plain copy / worker = {plain_seconds / worker_seconds:.2f} (goal >= 0.8)")
            # Memory: the same load again under tracemalloc (not timed: tracing slows it).
            tracemalloc.start()
            load_export_table(
                s3=s3,
                client=bq,
                location=location,
                info=info,
                table_ref=f"{dataset}.rds_shop_orders",
                exported_at=dt.datetime.now(dt.UTC),
                description="benchmark",
                parallel_uploads=args.parallel,
                engine=engine,
            )
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            largest = max(o["Size"] for o in objects) / 1e6
            print(
                f"worker peak Python memory during a load: {peak / 1e6:.1f} MB "
                f"(largest file {largest:.1f} MB, {args.parallel} upload(s) at once)"
            )
            bq.delete_dataset(dataset, delete_contents=True)
        finally:
            control.down(settings)


if __name__ == "__main__":
    main()
