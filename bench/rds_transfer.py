"""Benchmark: bytes the worker reads from S3 for one RDS table, worker vs storage_transfer.

Run (in the project's virtualenv): `python bench/rds_transfer.py [--rows 1000000] [--files 8]`

1. Starts a private local cloud and writes an export of `--rows` rows of an
   orders table in AWS's layout (`bench/rds_throughput.py`'s `write_export`).
2. Loads it twice in this process, counting every S3 GetObject response the
   worker's client receives (ranged reads of Parquet footers, the export's
   JSON files, whole objects):
   - `worker`: `load_export_table` streaming the files S3 -> BigQuery;
   - `storage_transfer`: the export's transfer job copies the table's files
     S3 -> GCS (in the local Storage Transfer server, another process), then
     `load_export_table` loads them from gs:// URIs.
3. Prints the bytes per kind for both paths, the ratio, and the wall time.
   Goal: no data bytes (whole-object reads) through the worker with
   `storage_transfer`; what remains is footers and the export's metadata.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rds_throughput import write_export

from export_pipeline.config import current_config
from export_pipeline.local_cloud.demo_rds import ensure_storage_transfer_role
from export_pipeline.rds.engine import MYSQL
from export_pipeline.rds.export_files import (
    ExportLocation,
    list_table_parquet,
    read_tables_info,
)
from export_pipeline.rds.loading import load_export_table
from export_pipeline.rds.transfer import export_transfer, stage_table
from export_pipeline.resources.storage_transfer import StorageTransferResource

TARGET = ("shop", "orders")


def count_reads(s3: Any) -> Counter:
    """Bytes of every GetObject response `s3` receives, by kind (ranged, json, whole)."""
    counts: Counter = Counter()

    def after(http_response: Any, parsed: dict, model: Any, **_: Any) -> None:
        if model.name != "GetObject":
            return
        size = int(parsed.get("ContentLength") or 0)
        key = http_response.url.split("?", 1)[0]
        kind = "footers (ranged)" if parsed.get("ContentRange") else "whole objects"
        if key.endswith(".json"):
            kind = "export metadata (json)"
        counts[kind] += size

    s3.meta.events.register("after-call.s3.GetObject", after)
    return counts


def reader_role(iam: Any, project: str) -> str:
    """The role the local Storage Transfer assumes, reading every bucket."""
    name = "bench-transfer-reader"
    ensure_storage_transfer_role(iam, f"arn:aws:iam::1:role/{name}", project, ["*"])
    return iam.get_role(RoleName=name)["Role"]["Arn"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=8)
    args = parser.parse_args()

    from export_pipeline.local_cloud import control
    from export_pipeline.local_cloud.clients import AwsClients
    from export_pipeline_tests.support.local_cloud import fresh_local_cloud_settings

    config = current_config()
    assert config.gcs is not None, "pipeline.yaml needs the gcs section"
    with tempfile.TemporaryDirectory(prefix="rds-transfer-bench-") as state:
        settings = fresh_local_cloud_settings(Path(state))
        control.up(settings, config, owner_pid=os.getpid())
        try:
            clients = AwsClients.for_config(settings, config)
            bq = control.bigquery_client(settings)
            bucket = config.aws.export_bucket
            identifier = "bench-" + uuid.uuid4().hex[:8]
            written = write_export(clients.s3, bucket, "bench", identifier, args.rows, args.files)
            print(
                f"export: {args.rows:,} rows in {args.files} files, "
                f"{written['bytes'] / 1e6:.1f} MB gzip Parquet"
            )
            location = ExportLocation(bucket, "bench", identifier)
            dataset = f"{settings.bigquery_project}.rds_transfer_bench_{uuid.uuid4().hex[:6]}"
            bq.create_dataset(dataset)
            figures: dict[str, tuple[Counter, float]] = {}

            worker_s3 = AwsClients.for_config(settings, config).s3
            counts = count_reads(worker_s3)
            info = read_tables_info(worker_s3, location)[".".join(TARGET)]
            started = time.perf_counter()
            load_export_table(
                s3=worker_s3,
                client=bq,
                location=location,
                info=info,
                table_ref=f"{dataset}.by_worker",
                exported_at=dt.datetime.now(dt.UTC),
                description="benchmark",
                engine=MYSQL,
            )
            figures["worker"] = (counts, time.perf_counter() - started)

            transfer_s3 = AwsClients.for_config(settings, config).s3
            counts = count_reads(transfer_s3)
            started = time.perf_counter()
            info = read_tables_info(transfer_s3, location)[".".join(TARGET)]
            transfer = export_transfer(
                location=location,
                project_id=settings.bigquery_project,
                role_arn=reader_role(clients.iam, settings.bigquery_project),
                staging_bucket=config.gcs.staging_bucket,
                staging_prefix=config.gcs.staging_prefix,
                tables=[TARGET],
                description="benchmark",
            )
            client = StorageTransferResource(
                project=settings.bigquery_project,
                api_endpoint=settings.storage_transfer_endpoint,
                anonymous_credentials=True,
            ).get_client()
            gcs = control.gcs_client(settings)
            staged = stage_table(
                client=client,
                gcs=gcs,
                transfer=transfer,
                folder=location.table_folder(*TARGET),
                files={
                    o["Key"]: int(o["Size"])
                    for o in list_table_parquet(transfer_s3, location, *TARGET)
                },
                what="benchmark",
                max_interval_seconds=0.5,
                timeout_seconds=600,
                log=lambda _m: None,
            )
            load_export_table(
                s3=transfer_s3,
                client=bq,
                location=location,
                info=info,
                table_ref=f"{dataset}.by_transfer",
                exported_at=dt.datetime.now(dt.UTC),
                description="benchmark",
                engine=MYSQL,
                staged_uris=staged.uris,
            )
            figures["storage_transfer"] = (counts, time.perf_counter() - started)
            gcs.close()

            kinds = ["whole objects", "footers (ranged)", "export metadata (json)"]
            print(f"{'bytes read from S3 by the worker':<36}" + "".join(f"{k:>24}" for k in kinds))
            for path, (counted, seconds) in figures.items():
                print(
                    f"{path:<36}"
                    + "".join(f"{counted[k]:>24,}" for k in kinds)
                    + f"   total {sum(counted.values()):,} B, {seconds:.1f} s"
                )
            worker_total = sum(figures["worker"][0].values())
            transfer_total = sum(figures["storage_transfer"][0].values())
            print(
                f"data bytes through the worker: worker {figures['worker'][0]['whole objects']:,}"
                f", storage_transfer {figures['storage_transfer'][0]['whole objects']:,} (goal 0)"
            )
            print(
                f"ratio all bytes read, storage_transfer / worker = "
                f"{transfer_total / worker_total:.4f}"
            )
            bq.delete_dataset(dataset, delete_contents=True)
        finally:
            control.down(settings)


if __name__ == "__main__":
    main()
