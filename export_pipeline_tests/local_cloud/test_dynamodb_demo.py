"""The DynamoDB demo data: what `seed` creates, what `mutate` changes, and that
the local cloud's exports carry both."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from export_pipeline.config import PipelineConfig
from export_pipeline.local_cloud import demo_dynamodb
from export_pipeline.local_cloud import dynamodb_time_control as time_control
from export_pipeline.local_cloud.clients import AwsClients
from export_pipeline.local_cloud.settings import LocalCloudSettings
from export_pipeline_tests.support.local_cloud import in_process_aws_server


@pytest.fixture(scope="module")
def demo_cloud(
    tmp_path_factory: pytest.TempPathFactory, pipeline_config: PipelineConfig
) -> Iterator[tuple[AwsClients, LocalCloudSettings]]:
    """A private moto server (emulation installed) with the demo seeded once."""
    state = tmp_path_factory.mktemp("demo_aws")
    with in_process_aws_server(state, export_seconds=0.2) as url:
        settings = LocalCloudSettings(state_dir=state, aws_port=int(url.rsplit(":", 1)[1]))
        clients = AwsClients.for_config(settings, pipeline_config)
        clients.s3.create_bucket(
            Bucket=pipeline_config.aws.export_bucket,
            CreateBucketConfiguration={"LocationConstraint": pipeline_config.aws.region},
        )
        demo_dynamodb.seed(clients, pipeline_config, settings)
        yield clients, settings


def type_codes(value: dict[str, Any]) -> set[str]:
    ((code, inner),) = value.items()
    codes = {code}
    if code == "M":
        for nested in inner.values():
            codes |= type_codes(nested)
    elif code == "L":
        for nested in inner:
            codes |= type_codes(nested)
    return codes


def wait_export(dynamodb: Any, arn: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        description = dynamodb.describe_export(ExportArn=arn)["ExportDescription"]
        if description["ExportStatus"] != "IN_PROGRESS":
            return description
        time.sleep(0.2)
    raise AssertionError(f"export {arn} did not finish")


def test_seed_creates_the_configured_tables(
    demo_cloud: tuple[AwsClients, LocalCloudSettings], pipeline_config: PipelineConfig
) -> None:
    clients, _ = demo_cloud
    dynamodb = clients.dynamodb
    configured = {t.name for t in pipeline_config.dynamodb.tables}
    assert {"Orders", "Products"} <= configured
    orders = dynamodb.describe_table(TableName="Orders")["Table"]
    assert {(k["AttributeName"], k["KeyType"]) for k in orders["KeySchema"]} == {
        ("customerId", "HASH"),
        ("orderId", "RANGE"),
    }
    products = dynamodb.describe_table(TableName="Products")["Table"]
    assert products["KeySchema"] == [{"AttributeName": "sku", "KeyType": "HASH"}]
    for name in ("Orders", "Products"):
        pitr = dynamodb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"][
            "PointInTimeRecoveryDescription"
        ]
        assert pitr["PointInTimeRecoveryStatus"] == "ENABLED"
        age = dt.datetime.now(dt.UTC) - pitr["EarliestRestorableDateTime"]
        assert dt.timedelta(days=2) <= age < dt.timedelta(days=2, minutes=10)


def seeded_items(
    clients: AwsClients, config: PipelineConfig, table: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(DescribeExport, items) of a full export of `table` as seeded (a day ago).

    An export rather than a Scan: moto's Scan of 2,000 items takes seconds.
    """
    dynamodb, s3, bucket = clients.dynamodb, clients.s3, config.aws.export_bucket
    table_arn = dynamodb.describe_table(TableName=table)["Table"]["TableArn"]
    started = dynamodb.export_table_to_point_in_time(
        TableArn=table_arn,
        S3Bucket=bucket,
        S3Prefix=config.aws.export_prefix,
        ExportTime=dt.datetime.now(dt.UTC) - dt.timedelta(days=1),  # before any mutate
    )["ExportDescription"]
    done = wait_export(dynamodb, started["ExportArn"])
    assert done["ExportStatus"] == "COMPLETED"
    summary = json.loads(s3.get_object(Bucket=bucket, Key=done["ExportManifest"])["Body"].read())
    files = s3.get_object(Bucket=bucket, Key=summary["manifestFilesS3Key"])["Body"].read()
    items = []
    for line in files.splitlines():
        entry = json.loads(line)
        body = s3.get_object(Bucket=bucket, Key=entry["dataFileS3Key"])["Body"].read()
        records = gzip.decompress(body).splitlines() if body else []
        assert len(records) == entry["itemCount"]
        items += [json.loads(record)["Item"] for record in records]
    return done, items


def test_seeded_data_exercises_every_type_and_awkward_name(
    demo_cloud: tuple[AwsClients, LocalCloudSettings], pipeline_config: PipelineConfig
) -> None:
    clients, _ = demo_cloud
    _, orders = seeded_items(clients, pipeline_config, "Orders")
    _, products = seeded_items(clients, pipeline_config, "Products")
    assert len(orders) == demo_dynamodb.ORDER_COUNT
    assert len(products) == demo_dynamodb.PRODUCT_COUNT
    every_type = {"S", "N", "BOOL", "NULL", "B", "SS", "NS", "BS", "M", "L"}
    for items, expected in ((orders, every_type), (products, every_type - {"BS"})):
        codes = set().union(*(type_codes(v) for item in items for v in item.values()))
        assert codes == expected
    names = set().union(*(item.keys() for item in orders))
    assert {"order-date", "Name", "name", "select"} <= names
    status_types = {next(iter(item["status"])) for item in orders}
    assert status_types == {"S", "N"}  # a type that differs between items
    strings = {v["S"] for item in orders for v in item.values() if "S" in v}
    assert "" in strings
    assert any(any(ord(ch) > 0xFFFF for ch in s) for s in strings)  # 4-byte UTF-8
    numbers = {v["N"] for item in orders + products for v in item.values() if "N" in v}
    for edge in (
        "1E-130",
        "9.9999999999999999999999999999999999999E+125",
        "9223372036854775807",
        "-9223372036854775808",
        "12345678901234567890123456789012345678",
    ):
        assert edge in numbers
    assert any("." in n and len(n.replace(".", "").lstrip("-0")) == 38 for n in numbers)


def test_seed_is_idempotent(
    demo_cloud: tuple[AwsClients, LocalCloudSettings], pipeline_config: PipelineConfig
) -> None:
    clients, settings = demo_cloud
    region = pipeline_config.aws.region

    def state() -> tuple[int, Any]:
        log = time_control.change_log(settings.aws_endpoint_url, "Products", region)
        pitr = clients.dynamodb.describe_continuous_backups(TableName="Products")
        return len(log), pitr["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"][
            "EarliestRestorableDateTime"
        ]

    before = state()
    demo_dynamodb.seed(clients, pipeline_config, settings)
    assert state() == before


def test_mutate_changes_land_in_an_incremental_export(
    demo_cloud: tuple[AwsClients, LocalCloudSettings], pipeline_config: PipelineConfig
) -> None:
    clients, settings = demo_cloud
    dynamodb = clients.dynamodb
    region = pipeline_config.aws.region
    log_before = len(time_control.change_log(settings.aws_endpoint_url, "Orders", region))
    window_start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=20)
    counts = demo_dynamodb.mutate(clients, pipeline_config, settings, seed=7)
    assert set(counts) == {"Orders", "Products"}
    orders = counts["Orders"]
    assert orders["created"] > 0 and orders["updated"] > 0 and orders["deleted"] > 0
    changed = orders["created"] + orders["updated"] + orders["deleted"]
    assert 20 <= changed + sum(counts["Products"].values()) <= 100  # "a few dozen"
    log_after = len(time_control.change_log(settings.aws_endpoint_url, "Orders", region))
    assert log_after - log_before == changed

    table_arn = dynamodb.describe_table(TableName="Orders")["Table"]["TableArn"]
    started = dynamodb.export_table_to_point_in_time(
        TableArn=table_arn,
        S3Bucket=pipeline_config.aws.export_bucket,
        S3Prefix=pipeline_config.aws.export_prefix,
        ExportType="INCREMENTAL_EXPORT",
        IncrementalExportSpecification={"ExportFromTime": window_start},
    )["ExportDescription"]
    done = wait_export(dynamodb, started["ExportArn"])
    assert done["ExportStatus"] == "COMPLETED"
    assert done["ItemCount"] == changed
    s3 = clients.s3
    bucket = pipeline_config.aws.export_bucket
    files_key = json.loads(s3.get_object(Bucket=bucket, Key=done["ExportManifest"])["Body"].read())[
        "manifestFilesS3Key"
    ]
    kinds = {"insert": 0, "update": 0, "delete": 0}
    for line in s3.get_object(Bucket=bucket, Key=files_key)["Body"].read().splitlines():
        body = s3.get_object(Bucket=bucket, Key=json.loads(line)["dataFileS3Key"])["Body"].read()
        for record in gzip.decompress(body).splitlines() if body else []:
            record = json.loads(record)
            kind = (
                "delete"
                if "NewImage" not in record
                else ("update" if "OldImage" in record else "insert")
            )
            kinds[kind] += 1
    assert kinds == {
        "insert": orders["created"],
        "update": orders["updated"],
        "delete": orders["deleted"],
    }


def test_full_export_of_seeded_orders_spreads_partitions(
    demo_cloud: tuple[AwsClients, LocalCloudSettings], pipeline_config: PipelineConfig
) -> None:
    clients, _ = demo_cloud
    done, items = seeded_items(clients, pipeline_config, "Orders")
    assert done["ItemCount"] == len(items) == demo_dynamodb.ORDER_COUNT
    summary = json.loads(
        clients.s3.get_object(Bucket=pipeline_config.aws.export_bucket, Key=done["ExportManifest"])[
            "Body"
        ].read()
    )
    files = clients.s3.get_object(
        Bucket=pipeline_config.aws.export_bucket, Key=summary["manifestFilesS3Key"]
    )["Body"].read()
    counts = [json.loads(line)["itemCount"] for line in files.splitlines()]
    assert len(counts) >= 2 and sum(counts) == demo_dynamodb.ORDER_COUNT
    assert all(count > 0 for count in counts)  # 200 customers spread over every partition


def test_demo_data_in_the_session_local_cloud(
    aws_clients: AwsClients, pipeline_config: PipelineConfig
) -> None:
    """The real local cloud (aws_server process, seeded by `control.up`) has the demo,
    and its exports are the emulation's (install() ran in that process)."""
    dynamodb = aws_clients.dynamodb
    for name, count in (("Orders", demo_dynamodb.ORDER_COUNT), ("Products", 300)):
        description = dynamodb.describe_table(TableName=name)["Table"]
        assert description["ItemCount"] >= count - 50  # other tests may have run mutate
        pitr = dynamodb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
        assert pitr["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"
        # The seed's time shift reached the server process's history.
        earliest = pitr["PointInTimeRecoveryDescription"]["EarliestRestorableDateTime"]
        assert dt.datetime.now(dt.UTC) - earliest >= dt.timedelta(days=2)
    table_arn = dynamodb.describe_table(TableName="Products")["Table"]["TableArn"]
    started = dynamodb.export_table_to_point_in_time(
        TableArn=table_arn,
        S3Bucket=pipeline_config.aws.export_bucket,
        S3Prefix=f"{pipeline_config.aws.export_prefix}/demo-test",
        ExportTime=dt.datetime.now(dt.UTC) - dt.timedelta(days=1),
    )["ExportDescription"]
    assert started["ExportArn"].startswith(f"{table_arn}/export/")
    done = wait_export(dynamodb, started["ExportArn"])
    assert done["ExportStatus"] == "COMPLETED"
    assert done["ItemCount"] == demo_dynamodb.PRODUCT_COUNT
    assert done["ExportManifest"].endswith("/manifest-summary.json")
