"""The RDS demo in the real local cloud: moto's server as its own process (`aws_server`).

The session's `local_cloud` is seeded by `control.up` (which calls `demo_rds.seed`),
so this checks the wiring end to end: install() in the server process, the demo
seed from the control process, an export through boto3 against the endpoint.
"""

from __future__ import annotations

import io
import json
import time

import pyarrow.parquet as pq

from export_pipeline.config import PipelineConfig
from export_pipeline.local_cloud import control
from export_pipeline.local_cloud.clients import AwsClients
from export_pipeline.local_cloud.settings import LocalCloudSettings


def test_seeded_demo_snapshot_exports_like_aws(
    local_cloud: LocalCloudSettings,
    aws_clients: AwsClients,
    pipeline_config: PipelineConfig,
    unique_name: str,
) -> None:
    instance = pipeline_config.rds.instances[0]
    rds = aws_clients.rds
    snapshots = rds.describe_db_snapshots(
        DBInstanceIdentifier=instance.identifier, SnapshotType="automated"
    )["DBSnapshots"]
    assert snapshots, "the local cloud was not seeded with an automated snapshot"
    newest = max(snapshots, key=lambda s: s["SnapshotCreateTime"])
    assert newest["DBSnapshotIdentifier"].startswith(f"rds:{instance.identifier}-")

    task_id = f"it-{unique_name}"
    rds.start_export_task(
        ExportTaskIdentifier=task_id,
        SourceArn=newest["DBSnapshotArn"],
        S3BucketName=pipeline_config.aws.export_bucket,
        S3Prefix=f"{pipeline_config.aws.export_prefix}/tests",
        IamRoleArn=instance.iam_role_arn,
        KmsKeyId=instance.kms_key_id,
        ExportOnly=instance.export_only,
    )
    deadline = time.monotonic() + 60
    statuses = []
    while time.monotonic() < deadline:
        task = rds.describe_export_tasks(ExportTaskIdentifier=task_id)["ExportTasks"][0]
        statuses.append(task["Status"])
        if task["Status"] in ("COMPLETE", "FAILED", "CANCELED"):
            break
        time.sleep(0.1)
    assert statuses[-1] == "COMPLETE", task
    assert statuses[0] in ("STARTING", "IN_PROGRESS")

    prefix = f"{pipeline_config.aws.export_prefix}/tests/{task_id}/"
    listing = aws_clients.s3.list_objects_v2(
        Bucket=pipeline_config.aws.export_bucket, Prefix=prefix
    )["Contents"]
    found = {o["Key"][len(prefix) :] for o in listing}
    assert f"export_info_{task_id}.json" in found
    targets = {key.split("/")[1] for key in found if key.endswith(".parquet")}
    assert targets == set(instance.export_only)
    customers = [k for k in found if k.startswith("shop/shop.customers/")]
    body = aws_clients.s3.get_object(
        Bucket=pipeline_config.aws.export_bucket, Key=prefix + customers[0]
    )["Body"].read()
    schema = pq.ParquetFile(io.BytesIO(body)).schema
    ext_id = schema.column(schema.names.index("ext_id"))
    assert (ext_id.physical_type, ext_id.length) == ("FIXED_LEN_BYTE_ARRAY", 9)
    info = json.loads(
        aws_clients.s3.get_object(
            Bucket=pipeline_config.aws.export_bucket, Key=f"{prefix}export_info_{task_id}.json"
        )["Body"].read()
    )
    assert info["sourceArn"] == newest["DBSnapshotArn"]


def test_control_mutate_runs_the_nightly_backup(
    local_cloud: LocalCloudSettings, aws_clients: AwsClients, pipeline_config: PipelineConfig
) -> None:
    identifier = pipeline_config.rds.instances[0].identifier
    before = {
        s["DBSnapshotIdentifier"]
        for s in aws_clients.rds.describe_db_snapshots(DBInstanceIdentifier=identifier)[
            "DBSnapshots"
        ]
    }
    summary = control.mutate(local_cloud, pipeline_config, seed=3)["rds"][identifier]
    after = aws_clients.rds.describe_db_snapshots(
        DBInstanceIdentifier=identifier, SnapshotType="automated"
    )["DBSnapshots"]
    new = [s for s in after if s["DBSnapshotIdentifier"] not in before]
    assert [s["DBSnapshotIdentifier"] for s in new] == [summary["snapshot"]]
    assert summary["tables"]["orders"]["inserted"] > 0
