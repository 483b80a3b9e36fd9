"""A full export converted in steps over groups of data files (`load_steps`, `fan_out`).

The same BigQuery table as the conversion in one process, from the same
export, with the steps' Parquet in GCS; a corrupt file in one group fails the
run naming it, loading nothing; each group is a step of the run, and with the
definitions' multiprocess executor a process of its own.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import json
import re
import tempfile
from pathlib import Path

from dagster import DagsterInstance, execute_job

from export_pipeline.dynamodb import loading
from export_pipeline_tests.dynamodb._pipeline_helpers import (
    BUCKET,
    DATASET,
    assets_for,
    bigquery_rows,
    create_table,
    make_config,
    materialization_metadata,
    run,
    table_id,
)
from export_pipeline_tests.support.principals import pipeline_resources


def _items(count: int) -> list[dict]:
    """Types that only agree over every group: `n` is INT64 but for one decimal item, `mixed`
    is a number in some items and a string in others, `set` holds numbers."""
    items = []
    for i in range(count):
        item = {"pk": {"S": f"k{i:03d}"}, "n": {"N": "12.5" if i == count - 1 else str(i)}}
        item["mixed"] = {"N": str(i)} if i % 3 else {"S": f"s{i}"}
        if i % 4 == 0:
            item["set"] = {"NS": [str(i), "1E+2"]}
        if i % 5 == 0:
            item["doc"] = {"M": {"a": {"L": [{"S": "x"}, {"N": str(i)}]}}}
        items.append(item)
    return items


def _config(table: str, files_per_step: int = 1, gcs=None):
    config = make_config(table)
    return config.model_copy(
        update={
            "dynamodb": config.dynamodb.model_copy(update={"files_per_step": files_per_step}),
            "gcs": gcs,
        }
    )


def _steps(result, op_suffix: str) -> set[str]:
    """The keys of the run's steps of one op of the graph (mapped steps: one per group)."""
    return {
        event.step_key
        for event in result.all_events
        if event.is_step_success and event.step_key and f"__{op_suffix}" in event.step_key
    }


def _schema(client, table: str) -> list[tuple[str, str, str]]:
    return [(f.name, f.field_type, f.mode) for f in client.get_table(table_id(table)).schema]


def test_steps_give_the_same_table_as_one_process(
    aws_clients, bigquery_client, unique_name, pipeline_config
):
    table = f"fan-{unique_name}"
    create_table(aws_clients.dynamodb, table, _items(60))
    config = _config(table, gcs=pipeline_config.gcs)  # convert steps write to gs://
    result = run(config, DagsterInstance.ephemeral())
    assert result.success
    target = table_id(table).rsplit(".", 1)[1]
    loads = [j for j in bigquery_client.list_jobs(all_users=True) if j.job_type == "load"]
    loads = [j for j in loads if j.destination.table_id.startswith(f"_staging_{target}")]
    assert loads and all(
        uri.startswith(f"gs://{config.gcs.staging_bucket}/") for j in loads for uri in j.source_uris
    )
    assert len({uri for j in loads for uri in j.source_uris}) >= 4  # the steps' own objects
    storage = pipeline_resources(config)["gcs"]
    with storage.get_client() as client:
        prefix = f"{config.gcs.staging_prefix}/{result.run_id}/"
        assert not list(client.list_blobs(config.gcs.staging_bucket, prefix=prefix))
    export_asset, bigquery_asset = assets_for(config)
    arn = materialization_metadata(result, export_asset.key)["export_arn"]
    clients = {"ddb": aws_clients.dynamodb, "s3": aws_clients.s3}
    manifests = loading.export_manifests([arn], table=table, config=config, log=print, **clients)
    files = len(manifests[0].files)
    learned, converted = _steps(result, "learn"), _steps(result, "convert")
    assert len(learned) == len(converted) == files >= 4, (learned, converted)
    assert all(re.search(r"\[group_\d{4}\]$", step) for step in learned | converted)
    stepped_rows = bigquery_rows(bigquery_client, table)
    stepped_schema = _schema(bigquery_client, table)
    meta = materialization_metadata(result, bigquery_asset.key)
    assert meta["dagster/row_count"] == meta["items_converted"] == 60

    # The same export, converted in one process by the one-step path.
    resources = pipeline_resources(config)
    with tempfile.TemporaryDirectory() as work_dir:
        loading.load_exports(
            [arn],
            table=table,
            mode=config.dynamodb.tables[0].mode,
            config=config,
            ddb=aws_clients.dynamodb,
            s3=aws_clients.s3,
            bigquery=resources["bigquery"],
            work_dir=Path(work_dir),
            log=lambda _line: None,
            run_id=f"one-process-{unique_name}",
        )
    assert _schema(bigquery_client, table) == stepped_schema
    assert bigquery_rows(bigquery_client, table) == stepped_rows
    types = {name: kind for name, kind, _mode in stepped_schema}
    assert types["n"] == "NUMERIC" and types["mixed"] == "JSON"


def test_a_corrupt_file_in_one_group_fails_naming_it_and_loads_nothing(
    aws_clients, bigquery_client, unique_name
):
    table = f"fanbad-{unique_name}"
    create_table(aws_clients.dynamodb, table, _items(40))
    config = _config(table, files_per_step=2)
    export_asset, bigquery_asset = assets_for(config)
    instance = DagsterInstance.ephemeral()
    from dagster import materialize

    exported = materialize(
        [export_asset, bigquery_asset],
        resources=pipeline_resources(config),
        instance=instance,
        selection=[export_asset.key],
    )
    summary_uri = materialization_metadata(exported, export_asset.key)["manifest_uris"][-1]
    summary_key = summary_uri.split(f"s3://{BUCKET}/", 1)[1]
    summary = json.loads(aws_clients.s3.get_object(Bucket=BUCKET, Key=summary_key)["Body"].read())
    files_key = summary["manifestFilesS3Key"]
    body = aws_clients.s3.get_object(Bucket=BUCKET, Key=files_key)["Body"].read()
    entries = [json.loads(line) for line in body.decode().splitlines() if line]
    # The last non-empty file: in a later group than the first.
    index = max(i for i, e in enumerate(entries) if e["itemCount"] > 0)
    victim = entries[index]["dataFileS3Key"]
    text = gzip.decompress(aws_clients.s3.get_object(Bucket=BUCKET, Key=victim)["Body"].read())
    broken = gzip.compress(text.replace(b'{"Item"', b'{"Item" oops', 1))
    aws_clients.s3.put_object(Bucket=BUCKET, Key=victim, Body=broken)
    entries[index]["md5Checksum"] = base64.b64encode(hashlib.md5(broken).digest()).decode()
    aws_clients.s3.put_object(
        Bucket=BUCKET, Key=files_key, Body="".join(json.dumps(e) + "\n" for e in entries)
    )

    result = run(config, instance, only_bigquery=True, raise_on_error=False)
    assert not result.success
    failures = result.get_step_failure_events()
    assert len(failures) == 1 and "__learn[group_" in failures[0].step_key
    error = failures[0].step_failure_data.error
    message = error.message + (error.cause.message if error.cause else "")
    assert f"s3://{BUCKET}/{victim}" in message and "line 1" in message
    assert not _steps(result, "publish")
    datasets = [t.table_id for t in bigquery_client.list_tables(DATASET)]
    assert table_id(table).rsplit(".", 1)[1] not in datasets  # nothing was loaded


def test_the_multiprocess_executor_runs_a_process_per_group(aws_clients, bigquery_client, tmp_path):
    from dagster._core.definitions.reconstruct import ReconstructableJob

    from export_pipeline_tests.dynamodb import _stepped_job

    table = _stepped_job.TABLE
    with contextlib.suppress(aws_clients.dynamodb.exceptions.ResourceNotFoundException):
        aws_clients.dynamodb.delete_table(TableName=table)
    create_table(aws_clients.dynamodb, table, _items(30))
    job = ReconstructableJob.for_file(_stepped_job.__file__, "stepped_job")
    with DagsterInstance.local_temp(str(tmp_path)) as instance:
        with execute_job(job, instance=instance) as result:
            assert result.success
            starts = [e for e in result.all_events if e.event_type_value == "STEP_START"]
            pids = {e.step_key: e.pid for e in starts}
        converts = [step for step in pids if "__convert[group_" in step]
        assert len(converts) == 2, sorted(pids)  # 4 data files, 2 per step
        assert len(set(pids.values())) == len(pids)  # every step its own process
        staging = tmp_path / "storage" / "export_pipeline_staging"
        assert not any(staging.rglob("*.parquet"))  # staged Parquet removed after publish
    assert len(bigquery_rows(bigquery_client, table)) == 30


def test_a_failed_group_step_reexecutes_without_a_second_export(
    aws_clients, bigquery_client, tmp_path
):
    from dagster import ReexecutionOptions
    from dagster._core.definitions.reconstruct import ReconstructableJob

    from export_pipeline_tests.dynamodb import _stepped_job

    table = _stepped_job.REEXECUTED_TABLE
    with contextlib.suppress(aws_clients.dynamodb.exceptions.ResourceNotFoundException):
        aws_clients.dynamodb.delete_table(TableName=table)
    create_table(aws_clients.dynamodb, table, _items(30))
    job = ReconstructableJob.for_file(_stepped_job.__file__, "reexecuted_job")
    with DagsterInstance.local_temp(str(tmp_path)) as instance:
        # The first run stops in one learn step: its group's file is unreadable for now.
        export_asset, bigquery_asset = assets_for(_stepped_job.stepped_config(table))
        with execute_job(job, instance=instance, asset_selection=[export_asset.key]) as exported:
            assert exported.success
            arn = materialization_metadata(exported, export_asset.key)["export_arn"]
        victim, original = _break_one_file(aws_clients, exported, export_asset.key)
        load_only = [bigquery_asset.key]  # the load of the recorded export, no new export
        with execute_job(
            job, instance=instance, asset_selection=load_only, raise_on_error=False
        ) as first:
            assert not first.success
            failed = [e.step_key for e in first.all_events if e.is_step_failure]
            assert len(failed) == 1 and "__learn[group_" in failed[0], failed
        aws_clients.s3.put_object(Bucket=BUCKET, Key=victim, Body=original)  # readable again
        options = ReexecutionOptions.from_failure(first.run_id, instance)
        with execute_job(job, instance=instance, reexecution_options=options) as again:
            assert again.success
            ran = {e.step_key for e in again.all_events if e.is_step_success}
        assert failed[0] in ran and not any("__prepare" in step for step in ran)
    assert len(bigquery_rows(bigquery_client, table)) == 30
    table_arn = aws_clients.dynamodb.describe_table(TableName=table)["Table"]["TableArn"]
    listed = aws_clients.dynamodb.list_exports(TableArn=table_arn)["ExportSummaries"]
    assert [e["ExportArn"] for e in listed] == [arn]  # no second export


def _break_one_file(aws_clients, exported, export_key) -> tuple[str, bytes]:
    """Replace one listed data file by other bytes (its MD5 then fails); (key, old bytes)."""
    summary_uri = materialization_metadata(exported, export_key)["manifest_uris"][-1]
    summary_key = summary_uri.split(f"s3://{BUCKET}/", 1)[1]
    summary = json.loads(aws_clients.s3.get_object(Bucket=BUCKET, Key=summary_key)["Body"].read())
    body = aws_clients.s3.get_object(Bucket=BUCKET, Key=summary["manifestFilesS3Key"])["Body"]
    entries = [json.loads(line) for line in body.read().decode().splitlines() if line]
    victim = next(e for e in entries if e["itemCount"] > 0)["dataFileS3Key"]
    original = aws_clients.s3.get_object(Bucket=BUCKET, Key=victim)["Body"].read()
    aws_clients.s3.put_object(Bucket=BUCKET, Key=victim, Body=gzip.compress(b"broken\n"))
    return victim, original
