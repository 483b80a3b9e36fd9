"""What must never happen: a corrupt export reaching BigQuery, a failed export unnoticed,
a second export for one run, a half-replaced table. Plus the reload path."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os

from dagster import DagsterInstance

from export_pipeline.dynamodb.exports import ExportRequest, start_export
from export_pipeline_tests.dynamodb._pipeline_helpers import (
    BUCKET,
    assets_for,
    bigquery_rows,
    create_table,
    make_config,
    materialization_metadata,
    run,
    table_id,
)


def _items(*keys: str) -> list[dict]:
    return [{"pk": {"S": k}, "n": {"N": str(i)}} for i, k in enumerate(keys)]


def _failure(result) -> tuple[str, dict]:
    failures = result.get_step_failure_events()
    assert len(failures) == 1
    data = failures[0].step_failure_data
    message = data.error.message if data.error else ""
    if data.error and data.error.cause:
        message += " " + data.error.cause.message
    metadata = (
        {k: v.value for k, v in data.user_failure_data.metadata.items()}
        if data.user_failure_data
        else {}
    )
    return message, metadata


def _latest_manifest(aws_clients, export_meta: dict) -> tuple[str, list[dict]]:
    summary_uri = export_meta["manifest_uris"][-1]
    summary_key = summary_uri.split(f"s3://{BUCKET}/", 1)[1]
    summary = json.loads(aws_clients.s3.get_object(Bucket=BUCKET, Key=summary_key)["Body"].read())
    files_key = summary["manifestFilesS3Key"]
    body = aws_clients.s3.get_object(Bucket=BUCKET, Key=files_key)["Body"].read()
    return files_key, [json.loads(line) for line in body.decode().splitlines() if line]


def _seed_then_export_again(aws_clients, bigquery_client, table: str):
    """One full load (a, b), then a change (c) exported but not loaded yet."""
    create_table(aws_clients.dynamodb, table, _items("a", "b"))
    config = make_config(table)
    instance = DagsterInstance.ephemeral()
    assert run(config, instance).success
    assert sorted(bigquery_rows(bigquery_client, table)) == ["a", "b"]
    aws_clients.dynamodb.put_item(TableName=table, Item={"pk": {"S": "c"}, "n": {"N": "9"}})
    export_asset, _ = assets_for(config)
    from dagster import materialize

    from export_pipeline_tests.support.principals import pipeline_resources

    exported = materialize(
        list(assets_for(config)),
        resources=pipeline_resources(config),
        instance=instance,
        selection=[export_asset.key],
    )
    return config, instance, materialization_metadata(exported, export_asset.key)


def test_md5_mismatch_fails_naming_the_file_and_keeps_bigquery(
    aws_clients, bigquery_client, unique_name
):
    table = f"md5-{unique_name}"
    config, instance, export_meta = _seed_then_export_again(aws_clients, bigquery_client, table)
    _, entries = _latest_manifest(aws_clients, export_meta)
    victim = next(e for e in entries if e["itemCount"] > 0)["dataFileS3Key"]
    aws_clients.s3.put_object(Bucket=BUCKET, Key=victim, Body=gzip.compress(b"tampered\n"))

    result = run(config, instance, only_bigquery=True, raise_on_error=False)
    assert not result.success
    message, _ = _failure(result)
    assert victim in message and "MD5" in message
    assert sorted(bigquery_rows(bigquery_client, table)) == ["a", "b"]  # untouched


def test_item_count_mismatch_fails_naming_the_file_and_keeps_bigquery(
    aws_clients, bigquery_client, unique_name
):
    table = f"cnt-{unique_name}"
    config, instance, export_meta = _seed_then_export_again(aws_clients, bigquery_client, table)
    files_key, entries = _latest_manifest(aws_clients, export_meta)
    entry = next(e for e in entries if e["itemCount"] > 0)
    victim = entry["dataFileS3Key"]
    lines = gzip.decompress(
        aws_clients.s3.get_object(Bucket=BUCKET, Key=victim)["Body"].read()
    ).decode()
    # One extra item, and a manifest MD5 that matches: only the count is wrong.
    extra = json.dumps({"Item": {"pk": {"S": "zz"}, "n": {"N": "1"}}}) + "\n"
    body = gzip.compress((lines + extra).encode())
    aws_clients.s3.put_object(Bucket=BUCKET, Key=victim, Body=body)
    entry["md5Checksum"] = base64.b64encode(hashlib.md5(body).digest()).decode()
    aws_clients.s3.put_object(
        Bucket=BUCKET, Key=files_key, Body="".join(json.dumps(e) + "\n" for e in entries)
    )

    result = run(config, instance, only_bigquery=True, raise_on_error=False)
    assert not result.success
    message, _ = _failure(result)
    assert victim in message
    # The extra line stops the conversion as it is read (not after the whole file).
    assert f"line {entry['itemCount'] + 1}: more than the {entry['itemCount']} item(s)" in message
    assert sorted(bigquery_rows(bigquery_client, table)) == ["a", "b"]


def test_failed_export_stops_with_the_failure_code(aws_clients, bigquery_client, unique_name):
    table = f"fail-{unique_name}"
    create_table(aws_clients.dynamodb, table, _items("a"))
    config = make_config(table, bucket=f"missing-{unique_name}")
    result = run(config, DagsterInstance.ephemeral(), raise_on_error=False)
    assert not result.success
    message, metadata = _failure(result)
    assert "S3NoSuchBucket" in message and table in message
    assert metadata["failure_code"] == "S3NoSuchBucket"
    assert metadata["dynamodb_table"] == table
    assert metadata["failure_message"]


def test_same_run_same_parameters_same_export(aws_clients, unique_name):
    table = f"tok-{unique_name}"
    create_table(aws_clients.dynamodb, table, _items("a"))
    ddb = aws_clients.dynamodb
    arn = ddb.describe_table(TableName=table)["Table"]["TableArn"]
    request = ExportRequest(arn, BUCKET, f"exports/dynamodb/{table}")
    first = start_export(ddb, request, "run-1")
    retried = start_export(ddb, request, "run-1")
    assert retried["ExportArn"] == first["ExportArn"]
    listed = ddb.list_exports(TableArn=arn)["ExportSummaries"]
    assert [e["ExportArn"] for e in listed] == [first["ExportArn"]]
    other = start_export(ddb, request, "run-2")
    assert other["ExportArn"] != first["ExportArn"]
    assert len(ddb.list_exports(TableArn=arn)["ExportSummaries"]) == 2


def test_full_load_replaces_the_whole_table(aws_clients, bigquery_client, unique_name):
    table = f"repl-{unique_name}"
    create_table(aws_clients.dynamodb, table, _items("a", "b"))
    config = make_config(table)
    instance = DagsterInstance.ephemeral()
    assert run(config, instance).success
    ddb = aws_clients.dynamodb
    ddb.delete_item(TableName=table, Key={"pk": {"S": "a"}})
    ddb.put_item(TableName=table, Item={"pk": {"S": "b"}, "label": {"S": "new"}})
    assert run(config, instance).success
    rows = bigquery_rows(bigquery_client, table)
    assert sorted(rows) == ["b"]
    assert rows["b"]["label"] == "new"
    columns = {f.name for f in bigquery_client.get_table(table_id(table)).schema}
    assert columns == {"pk", "label", "_exported_at"}  # the schema is the export's
    leftovers = [
        t.table_id
        for t in bigquery_client.list_tables(table_id(table).rsplit(".", 1)[0])
        if t.table_id.startswith(f"_staging_{table_id(table).rsplit('.', 1)[1]}")
    ]
    assert leftovers == []


def test_reload_path_loads_a_given_export_without_a_new_one(
    aws_clients, bigquery_client, unique_name
):
    table = f"rel-{unique_name}"
    create_table(aws_clients.dynamodb, table, _items("a", "b"))
    config = make_config(table)
    instance = DagsterInstance.ephemeral()
    first = run(config, instance)
    export_asset, bigquery_asset = assets_for(config)
    first_arn = materialization_metadata(first, export_asset.key)["export_arn"]
    aws_clients.dynamodb.put_item(TableName=table, Item={"pk": {"S": "c"}, "n": {"N": "5"}})
    assert run(config, instance).success
    assert sorted(bigquery_rows(bigquery_client, table)) == ["a", "b", "c"]
    table_arn = aws_clients.dynamodb.describe_table(TableName=table)["Table"]["TableArn"]
    exports_before = aws_clients.dynamodb.list_exports(TableArn=table_arn)["ExportSummaries"]

    reload = run(config, instance, only_bigquery=True, export_arn=first_arn)
    assert reload.success
    assert sorted(bigquery_rows(bigquery_client, table)) == ["a", "b"]
    assert materialization_metadata(reload, bigquery_asset.key)["export_arn"] == first_arn
    exports_after = aws_clients.dynamodb.list_exports(TableArn=table_arn)["ExportSummaries"]
    assert exports_after == exports_before


REEXEC_TABLE_ENV = "EXPORT_PIPELINE_TEST_REEXEC_TABLE"


def reexecution_job():
    """The job of the re-execution test, importable so Dagster can rebuild it (reconstructable)."""
    from dagster import Definitions, define_asset_job, in_process_executor

    from export_pipeline.dynamodb.source import DynamoDBSource
    from export_pipeline.graph.assets import build_source_assets
    from export_pipeline_tests.support.principals import pipeline_resources

    config = make_config(os.environ[REEXEC_TABLE_ENV])
    defs = Definitions(
        assets=build_source_assets(DynamoDBSource(config)),
        jobs=[define_asset_job("dynamodb_reexecution", executor_def=in_process_executor)],
        resources=pipeline_resources(config),
    )
    return defs.resolve_job_def("dynamodb_reexecution")


def test_reexecuted_run_reuses_its_export(aws_clients, unique_name, monkeypatch, tmp_path):
    from dagster import ReexecutionOptions, execute_job, reconstructable

    table = f"reex-{unique_name}"
    create_table(aws_clients.dynamodb, table, _items("a", "b"))
    monkeypatch.setenv(REEXEC_TABLE_ENV, table)
    export_key = assets_for(make_config(table))[0].key
    with DagsterInstance.local_temp(str(tmp_path)) as instance:
        job = reconstructable(reexecution_job)
        with execute_job(job, instance) as first:
            assert first.success
            first_arn = materialization_metadata(first, export_key)["export_arn"]
        options = ReexecutionOptions(parent_run_id=first.run_id)
        with execute_job(job, instance, reexecution_options=options) as again:
            assert again.success
            assert again.dagster_run.root_run_id == first.run_id
            assert materialization_metadata(again, export_key)["export_arn"] == first_arn
    table_arn = aws_clients.dynamodb.describe_table(TableName=table)["Table"]["TableArn"]
    listed = aws_clients.dynamodb.list_exports(TableArn=table_arn)["ExportSummaries"]
    assert [e["ExportArn"] for e in listed] == [first_arn]
