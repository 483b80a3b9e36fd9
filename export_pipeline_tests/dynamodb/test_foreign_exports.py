"""Reloading a DynamoDB export made outside the pipeline: `export_arn: latest`, readable places.

The export is made as the scheduled-Lambda design makes it (boto3
`ExportTableToPointInTime`, written to the bucket root), against the local cloud.
"""

from __future__ import annotations

import time

from dagster import DagsterInstance

from export_pipeline_tests.dynamodb._pipeline_helpers import (
    BUCKET,
    bigquery_rows,
    create_table,
    make_config,
    run,
)

ITEMS = [{"pk": {"S": f"k{n}"}, "n": {"N": str(n)}} for n in range(4)]


def lambda_export(ddb, table: str, prefix: str = "") -> str:
    """ExportTableToPointInTime as a team's Lambda calls it; returns the ARN once COMPLETED."""
    table_arn = ddb.describe_table(TableName=table)["Table"]["TableArn"]
    arn = ddb.export_table_to_point_in_time(
        TableArn=table_arn, S3Bucket=BUCKET, S3Prefix=prefix, ExportFormat="DYNAMODB_JSON"
    )["ExportDescription"]["ExportArn"]
    deadline = time.monotonic() + 60
    while ddb.describe_export(ExportArn=arn)["ExportDescription"]["ExportStatus"] != "COMPLETED":
        assert time.monotonic() < deadline, f"export {arn} did not complete"
        time.sleep(0.2)
    return arn


def readable(config, *locations: str):
    aws = config.aws.model_copy(update={"readable_s3_locations": list(locations)})
    return config.model_copy(update={"aws": aws})


def failure_text(result) -> str:
    return "\n".join(str(e.event_specific_data.error) for e in result.get_step_failure_events())


def test_latest_loads_the_newest_completed_export_made_by_anyone(
    aws_clients, bigquery_client, unique_name
) -> None:
    table = f"lambda-{unique_name}"
    create_table(aws_clients.dynamodb, table, ITEMS[:2])
    lambda_export(aws_clients.dynamodb, table)
    aws_clients.dynamodb.put_item(TableName=table, Item=ITEMS[2])
    aws_clients.dynamodb.put_item(TableName=table, Item=ITEMS[3])
    newest = lambda_export(aws_clients.dynamodb, table)
    config = readable(make_config(table), f"s3://{BUCKET}")
    result = run(config, DagsterInstance.ephemeral(), only_bigquery=True, export_arn="latest")
    assert sorted(bigquery_rows(bigquery_client, table)) == ["k0", "k1", "k2", "k3"]
    [event] = result.get_asset_materialization_events()
    assert newest in str(event.materialization.metadata["export_arns"].value)


def test_an_export_outside_the_readable_locations_fails_naming_the_setting(
    aws_clients, unique_name
) -> None:
    table = f"lambda-{unique_name}"
    create_table(aws_clients.dynamodb, table, ITEMS)
    arn = lambda_export(aws_clients.dynamodb, table, prefix="2020-Nov")
    config = make_config(table)
    result = run(
        config,
        DagsterInstance.ephemeral(),
        only_bigquery=True,
        export_arn=arn,
        raise_on_error=False,
    )
    text = failure_text(result)
    assert "aws.readable_s3_locations" in text and f"s3://{BUCKET}/2020-Nov" in text
    allowed = readable(config, f"s3://{BUCKET}/2020-Nov")
    assert run(allowed, DagsterInstance.ephemeral(), only_bigquery=True, export_arn=arn).success


def test_latest_without_any_export_says_so(aws_clients, unique_name) -> None:
    table = f"lambda-{unique_name}"
    create_table(aws_clients.dynamodb, table, ITEMS)
    result = run(
        make_config(table),
        DagsterInstance.ephemeral(),
        only_bigquery=True,
        export_arn="latest",
        raise_on_error=False,
    )
    assert "no completed full export" in failure_text(result)
