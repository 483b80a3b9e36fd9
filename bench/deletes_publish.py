"""Benchmark: publishing a full load with `deletes: soft` and `history` against `hard`.

Run (in the project's virtualenv): `python bench/deletes_publish.py [--rows 200000]
[--changed 0.01]`

`hard` replaces the table with one `CREATE OR REPLACE TABLE … AS SELECT`;
`soft` and `history` run a transaction instead (`export_pipeline.bigquery.deletes`):
DELETE of the loaded keys, UPDATE of the rest, INSERT, and for `history` the
comparison with the current versions. This measures what that costs, in one run,
on a private local cloud it starts (and stops) itself:

1. A staging table of `--rows` rows (key, 6 data columns: INT64, NUMERIC,
   STRING, TIMESTAMP, BOOL, JSON) is loaded from Parquet, once per mode, and
   published into an empty table (the first load).
2. A second staging table with `--changed` of the rows changed and as many
   deleted is published over it (a later load), per mode.
3. Prints seconds per publish and the ratio hard / mode (1.0 = as fast as
   hard; lower is slower).

The figures are the emulator's (DuckDB under bqemulator); BigQuery's own
costs differ (it bills DML by bytes scanned, see docs/performance.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from google.cloud.bigquery import SchemaField

from export_pipeline.bigquery.deletes import KeptDeletes
from export_pipeline.bigquery.publish import SelectColumn, replace_table
from export_pipeline.bigquery.staging import load_parquet_to_staging
from export_pipeline.bigquery.tables import TableId
from export_pipeline.config import current_config
from export_pipeline.table_settings import DeletesMode

SCHEMA = [
    SchemaField("id", "INT64"),
    SchemaField("qty", "INT64"),
    SchemaField("amount", "NUMERIC"),
    SchemaField("name", "STRING"),
    SchemaField("at", "TIMESTAMP"),
    SchemaField("paid", "BOOL"),
    SchemaField("doc", "STRING"),
]
T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def _columns() -> list[SelectColumn]:
    columns = [SelectColumn.passthrough(f) for f in SCHEMA if f.name != "doc"]
    columns.append(SelectColumn("doc", "SAFE.PARSE_JSON(`doc`)", "JSON", typed=True))
    return columns


def _rows(count: int, changed: float, later: bool) -> pa.Table:
    """`count` rows; `later`: the first `changed` share changed, the next share gone."""
    step = max(1, round(1 / changed)) if changed else 0
    ids, qty = [], []
    for i in range(count):
        if later and step and i % step == 1:
            continue  # deleted
        ids.append(i)
        qty.append(i + (1 if later and step and i % step == 0 else 0))
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "qty": pa.array(qty, pa.int64()),
            "amount": pa.array([f"{i}.25" for i in ids], pa.string()).cast(pa.decimal128(38, 9)),
            "name": pa.array([f"name {i}" for i in ids], pa.string()),
            "at": pa.array([T0 + dt.timedelta(seconds=i) for i in ids], pa.timestamp("us", "UTC")),
            "paid": pa.array([i % 2 == 0 for i in ids], pa.bool_()),
            "doc": pa.array([json.dumps({"i": i}) for i in ids], pa.string()),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--changed", type=float, default=0.01)
    args = parser.parse_args()

    from export_pipeline.local_cloud import control
    from export_pipeline_tests.support.local_cloud import fresh_local_cloud_settings

    config = current_config()
    with tempfile.TemporaryDirectory(prefix="deletes-bench-") as state:
        settings = fresh_local_cloud_settings(Path(state))
        control.up(settings, config, owner_pid=os.getpid())
        try:
            bq = control.bigquery_client(settings)
            dataset = f"deletes_bench_{uuid.uuid4().hex[:6]}"
            bq.create_dataset(f"{settings.bigquery_project}.{dataset}")
            files = {}
            for later in (False, True):
                path = Path(state) / f"load-{int(later)}.parquet"
                pq.write_table(_rows(args.rows, args.changed, later), path)
                files[later] = path
            print(
                f"{args.rows:,} rows; the second load changes {args.changed:.1%} and deletes "
                f"as many (load avg {os.getloadavg()[0]:.1f})"
            )
            seconds: dict[str, list[float]] = {}
            for mode in (DeletesMode.HARD, DeletesMode.SOFT, DeletesMode.HISTORY):
                target = TableId(settings.bigquery_project, dataset, f"t_{mode.value}")
                for load, later in enumerate((False, True), start=1):
                    staging = TableId(settings.bigquery_project, dataset, f"s_{mode.value}_{load}")
                    load_parquet_to_staging(bq, [files[later]], staging, SCHEMA)
                    kept = (
                        None
                        if mode is DeletesMode.HARD
                        else KeptDeletes(mode, ("id",), T0 + dt.timedelta(days=load))
                    )
                    started = time.perf_counter()
                    replace_table(
                        bq,
                        staging=staging,
                        target=target,
                        select_columns=_columns(),
                        table_description="bench",
                        deletes=kept,
                    )
                    seconds.setdefault(mode.value, []).append(time.perf_counter() - started)
            hard = seconds["hard"]
            print("mode     first load   later load   ratio hard/mode (first, later)")
            for mode, (first, later) in seconds.items():
                print(
                    f"{mode:8} {first:9.2f} s {later:10.2f} s   "
                    f"{hard[0] / first:.2f}, {hard[1] / later:.2f}"
                )
            bq.delete_dataset(f"{settings.bigquery_project}.{dataset}", delete_contents=True)
        finally:
            control.down(settings)


if __name__ == "__main__":
    main()
