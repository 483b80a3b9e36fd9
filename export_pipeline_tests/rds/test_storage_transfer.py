"""RDS with `transfer: storage_transfer` end to end on the local cloud.

One fresh export of the demo instance (its own `export_attempt`, so its
transfer job is this module's own) is loaded twice: the worker's way and
through Storage Transfer + gs:// staging, into two datasets whose rows must
agree. Before the Storage Transfer load, the transfer is started as a step
killed after starting it would have left it: the load must find that
operation and start no second one.
"""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

import pytest
from dagster import AssetKey, DagsterInstance

from export_pipeline.local_cloud import control
from export_pipeline.local_cloud.demo_rds import ensure_storage_transfer_role
from export_pipeline.rds.export_files import ExportLocation, read_tables_info
from export_pipeline.rds.source import RdsSource, export_asset_key
from export_pipeline.rds.transfer import export_transfer, transferred_tables
from export_pipeline.resources.storage_transfer import StorageTransferResource
from export_pipeline.storage_transfer import ensure_transfer, list_operations
from export_pipeline_tests.support.rds import config_for, run_rds

# Copied by Storage Transfer; shop.customers (hashed and excluded columns) stays on the worker.
TRANSFERRED = ("orders", "type_zoo")


def _metadata(result, key: AssetKey) -> dict[str, Any]:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _table_keys(config, only: tuple[str, ...] | None = None) -> list[AssetKey]:
    keys = [table.key for table in RdsSource(config).units()[0].tables]
    return [k for k in keys if only is None or k.path[-1].removeprefix("rds_shop_") in only]


def _reader_role(aws_clients, project: str, name: str) -> str:
    """The AWS role Google's service agent assumes: trusts it, may read the exports."""
    arn = f"arn:aws:iam::123456789012:role/{name}"
    ensure_storage_transfer_role(aws_clients.iam, arn, project, ["*"])
    return aws_clients.iam.get_role(RoleName=name)["Role"]["Arn"]


@pytest.fixture(scope="module")
def both_paths(local_cloud, pipeline_config, bigquery_client, aws_clients):
    """(worker config, transfer config, worker result, transfer result, export id, datasets)."""
    project = local_cloud.bigquery_project
    datasets = {path: f"rds_st_{path}_{uuid.uuid4().hex[:8]}" for path in ("worker", "st")}
    for dataset in datasets.values():
        bigquery_client.create_dataset(f"{project}.{dataset}")
    [shopdb] = [i for i in pipeline_config.rds.instances if i.identifier == "shopdb"]
    role = _reader_role(aws_clients, project, "st-rds-" + uuid.uuid4().hex[:8])
    worker = config_for(pipeline_config, datasets["worker"], [shopdb])
    transfer = config_for(
        pipeline_config,
        datasets["st"],
        [shopdb],
        transfer="storage_transfer",
        storage_transfer_role_arn=role,
    )
    assert transfer.gcs is not None, "the demo configuration stages in GCS"
    instance = DagsterInstance.ephemeral()
    export_key = export_asset_key(shopdb)
    attempt = random.randint(100, 10**6)
    exported = run_rds(
        worker,
        instance,
        selection=[export_key],
        run_config={
            "ops": {export_key.to_python_identifier(): {"config": {"export_attempt": attempt}}}
        },
    )
    identifier = _metadata(exported, export_key)["export_task_identifier"]
    # The transfer as a killed step leaves it: started, the step gone.
    task = aws_clients.rds.describe_export_tasks(ExportTaskIdentifier=identifier)["ExportTasks"][0]
    location = ExportLocation(task["S3Bucket"], task.get("S3Prefix") or "", identifier)
    client = StorageTransferResource(
        project=project,
        api_endpoint=local_cloud.storage_transfer_endpoint,
        anonymous_credentials=True,
    ).get_client()
    tables_info = read_tables_info(aws_clients.s3, location)
    job = export_transfer(
        location=location,
        project_id=project,
        role_arn=role,
        staging_bucket=transfer.gcs.staging_bucket,
        staging_prefix=transfer.gcs.staging_prefix,
        tables=transferred_tables(
            tables_info,
            shopdb.loaded_tables(),
            {".".join(p): shopdb.table_settings(p) for p in shopdb.loaded_tables()},
            RdsSource.engine,
        ),
        description="started by a step that was then killed",
    )
    assert ensure_transfer(client, job).started
    by_worker = run_rds(worker, instance, selection=_table_keys(worker, TRANSFERRED))
    by_transfer = run_rds(transfer, instance, selection=_table_keys(transfer))
    yield {
        "worker": by_worker,
        "st": by_transfer,
        "datasets": datasets,
        "identifier": identifier,
        "job": job,
        "client": client,
        "config": transfer,
        "instance": instance,
    }
    for dataset in datasets.values():
        bigquery_client.delete_dataset(
            f"{project}.{dataset}", delete_contents=True, not_found_ok=True
        )


def _rows(bigquery_client, table_id: str) -> list[dict[str, Any]]:
    query = f"SELECT * EXCEPT (_exported_at) FROM `{table_id}` ORDER BY id"
    return [dict(r) for r in bigquery_client.query(query).result()]


def test_storage_transfer_loads_what_the_worker_loads(both_paths, local_cloud, bigquery_client):
    assert both_paths["worker"].success and both_paths["st"].success
    project = local_cloud.bigquery_project
    for table in TRANSFERRED:
        name = f"rds_shop_{table}"
        worker_rows = _rows(bigquery_client, f"{project}.{both_paths['datasets']['worker']}.{name}")
        st_rows = _rows(bigquery_client, f"{project}.{both_paths['datasets']['st']}.{name}")
        assert worker_rows and st_rows == worker_rows, table
        key = AssetKey(["bigquery", both_paths["datasets"]["st"], name])
        assert _metadata(both_paths["st"], key)["transfer"] == "storage_transfer", table
    # customers hashes and excludes columns: the worker rewrites it, by design.
    customers = AssetKey(["bigquery", both_paths["datasets"]["st"], "rds_shop_customers"])
    assert _metadata(both_paths["st"], customers)["transfer"] == "worker"
    checks = [c for c in both_paths["st"].get_asset_check_evaluations()]
    assert checks and all(c.passed for c in checks)


def test_bigquery_read_the_transferred_files_from_gcs(both_paths, bigquery_client):
    jobs = [
        job
        for job in bigquery_client.list_jobs(max_results=200)
        if job.job_type == "load" and any("/rds-transfer/" in u for u in job.source_uris or [])
    ]
    sources = {u for job in jobs for u in job.source_uris}
    assert any(f"/{both_paths['identifier']}/shop/shop.orders/" in u for u in sources)
    assert all(u.startswith("gs://") for u in sources)


def test_a_killed_step_re_executed_starts_no_second_transfer(both_paths, local_cloud):
    job = both_paths["job"]
    operations = list_operations(both_paths["client"], local_cloud.bigquery_project, [job.job_name])
    assert len(operations) == 1
    for table in ("orders", "type_zoo"):
        key = AssetKey(["bigquery", both_paths["datasets"]["st"], f"rds_shop_{table}"])
        meta = _metadata(both_paths["st"], key)
        assert meta["transfer_operation"] == operations[0].name
        assert meta["transfer_started"] is False


def test_staged_objects_are_deleted_after_publishing(both_paths, local_cloud):
    job = both_paths["job"]
    gcs = control.gcs_client(local_cloud)
    try:
        left = [b.name for b in gcs.list_blobs(job.sink_bucket, prefix=job.sink_path)]
    finally:
        gcs.close()
    assert left == []


def test_a_reload_after_publishing_runs_the_same_job_once_more(both_paths, local_cloud):
    """The staged copy is gone after publishing: a reload copies it again with the same job."""
    config, instance = both_paths["config"], both_paths["instance"]
    again = run_rds(config, instance, selection=_table_keys(config, TRANSFERRED))
    assert again.success
    job = both_paths["job"]
    operations = list_operations(both_paths["client"], local_cloud.bigquery_project, [job.job_name])
    assert len(operations) == 2  # one job; its second run copied what the loads had deleted
    started = [
        _metadata(again, key)["transfer_started"] for key in _table_keys(config, TRANSFERRED)
    ]
    assert sorted(started) == [False, True]  # the first table ran it, the other reused it


def test_a_denied_transfer_fails_the_load_in_one_line(
    both_paths, local_cloud, pipeline_config, aws_clients, rds_dataset
):
    """A role Google may not assume: the table fails naming the export and the operation."""
    [shopdb] = [i for i in pipeline_config.rds.instances if i.identifier == "shopdb"]
    untrusted = aws_clients.iam.create_role(
        RoleName="st-untrusted-" + uuid.uuid4().hex[:8],
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )["Role"]["Arn"]
    narrowed = shopdb.model_copy(update={"export_only": ["shop.orders"], "tables": {}})
    config = config_for(
        pipeline_config,
        rds_dataset,
        [narrowed],
        transfer="storage_transfer",
        storage_transfer_role_arn=untrusted,
    )
    instance = DagsterInstance.ephemeral()
    export_key = export_asset_key(shopdb)
    attempt = random.randint(100, 10**6)
    run_rds(
        config,
        instance,
        selection=[export_key],
        run_config={
            "ops": {export_key.to_python_identifier(): {"config": {"export_attempt": attempt}}}
        },
    )
    [table] = RdsSource(config).units()[0].tables
    failed = run_rds(config, instance, selection=[table.key], raise_on_error=False)
    assert not failed.success
    [failure] = [e for e in failed.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message.strip().splitlines()[-1]
    assert "transfer operation transferOperations/" in message
    assert "is FAILED: PERMISSION_DENIED" in message and "shop.orders (export " in message
