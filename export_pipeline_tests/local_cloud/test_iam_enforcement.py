"""Which resource the enforcing local cloud checks a DynamoDB or RDS call against.

moto checks every non-S3 call against resource "*"; `request_resource`
supplies the ARN the request names, so that a statement scoped to a table,
instance or snapshot allows exactly its calls (as on AWS).
"""

from __future__ import annotations

import uuid

import pytest

from export_pipeline.local_cloud.iam_enforcement import export_object_arn, request_resource

WHERE = {"region": "eu-west-1", "account": "123456789012"}
TABLE_ARN = "arn:aws:dynamodb:eu-west-1:123456789012:table/Orders"


@pytest.mark.parametrize(
    ("service", "action", "params", "resource"),
    [
        ("dynamodb", "DescribeTable", {"TableName": "Orders"}, TABLE_ARN),
        ("dynamodb", "DescribeTable", {"TableName": TABLE_ARN}, TABLE_ARN),
        ("dynamodb", "ExportTableToPointInTime", {"TableArn": TABLE_ARN}, TABLE_ARN),
        ("dynamodb", "ListExports", {"TableArn": TABLE_ARN}, TABLE_ARN),
        ("dynamodb", "ListExports", {}, "*"),
        (
            "dynamodb",
            "DescribeExport",
            {"ExportArn": TABLE_ARN + "/export/1"},
            TABLE_ARN + "/export/1",
        ),
        (
            "rds",
            "DescribeDBSnapshots",
            {"DBInstanceIdentifier": "shopdb"},
            "arn:aws:rds:eu-west-1:123456789012:db:shopdb",
        ),
        (
            "rds",
            "DescribeDBSnapshots",
            {"DBSnapshotIdentifier": "rds:shopdb-2026-01-01-03-00", "DBInstanceIdentifier": "x"},
            "arn:aws:rds:eu-west-1:123456789012:snapshot:rds:shopdb-2026-01-01-03-00",
        ),
        (
            "rds",
            "DescribeDBClusterSnapshots",
            {"DBClusterIdentifier": "appdb"},
            "arn:aws:rds:eu-west-1:123456789012:cluster:appdb",
        ),
        ("rds", "StartExportTask", {"SourceArn": "arn:aws:rds:x"}, "*"),
        ("rds", "DescribeExportTasks", {}, "*"),
        ("sts", "GetCallerIdentity", {}, "*"),
    ],
)
def test_the_resource_is_the_one_the_request_names(service, action, params, resource) -> None:
    assert request_resource(service, action, params.get, WHERE) == resource


@pytest.mark.parametrize(
    ("prefix", "arn"),
    [
        ("exports/dynamodb/T", "arn:aws:s3:::bkt/exports/dynamodb/T/AWSDynamoDB/"),
        ("", "arn:aws:s3:::bkt/AWSDynamoDB/"),
        (None, "arn:aws:s3:::bkt/AWSDynamoDB/"),
    ],
)
def test_a_dynamodb_export_writes_under_its_prefix(prefix, arn) -> None:
    assert export_object_arn({"S3Bucket": "bkt", "S3Prefix": prefix}.get).startswith(arn)


def test_a_pipeline_user_is_made_only_where_iam_is_enforced(local_cloud, capsys) -> None:
    """Without enforcement such a user could do anything: the CLI refuses, saying how to enforce."""
    from export_pipeline import cli
    from export_pipeline.local_cloud import control

    code = cli.main(["local", "pipeline-user", "--name", "p" + uuid.uuid4().hex[:8]])
    printed = capsys.readouterr()
    if control.status(local_cloud).iam_enforced:
        assert code == 0 and "EXPORT_PIPELINE_LOCAL_AWS_ACCESS_KEY_ID=" in printed.out
    else:
        assert code == cli.EXIT_ERROR and "EXPORT_PIPELINE_LOCAL_IAM=enforce" in printed.err
