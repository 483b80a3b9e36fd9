"""RDS snapshot exports through the real moto server over HTTP, with `rds_exports.install()`.

The server runs in this process (moto's `ThreadedMotoServer` on a free loopback
port) so that a test can set the export duration and file sizes through the
environment; every call goes through boto3 over HTTP, as production code's do.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pyarrow.parquet as pq
import pymysql
import pytest
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

from export_pipeline.config import current_config
from export_pipeline.local_cloud import demo_rds, rds_export_worker, rds_exports
from export_pipeline.local_cloud.clients import AwsClients
from export_pipeline.local_cloud.mysql_types import MySQLType
from export_pipeline.local_cloud.rds_client import (
    create_mysql_backed_instance,
    live_store,
    take_automated_snapshot,
)
from export_pipeline.local_cloud.rds_store import Column
from export_pipeline.local_cloud.settings import LocalCloudSettings
from export_pipeline_tests.support.aws_samples import AwsSamples

REGION = "eu-west-1"
BUCKET = "rds-export-tests"
TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "export.rds.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


@dataclass
class Cloud:
    settings: LocalCloudSettings
    clients: AwsClients
    role_arn: str
    key_id: str
    key_arn: str

    @property
    def rds(self) -> Any:
        return self.clients.rds

    @property
    def s3(self) -> Any:
        return self.clients.s3


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    state_dir = tmp_path_factory.mktemp("rds_local_cloud")
    rds_exports.install(state_dir)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    previous = {k: os.environ.get(k) for k in (rds_exports.EXPORT_SECONDS_ENV,)}
    os.environ[rds_exports.EXPORT_SECONDS_ENV] = "0.4"
    try:
        _host, port = server.get_host_and_port()
        settings = LocalCloudSettings(state_dir=state_dir, aws_port=port)
        clients = AwsClients.create(settings, REGION)
        clients.s3.create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        role = clients.iam.create_role(
            RoleName="rds-export-tests", AssumeRolePolicyDocument=json.dumps(TRUST)
        )["Role"]["Arn"]
        key = clients.kms.create_key()["KeyMetadata"]
        clients.kms.create_alias(AliasName="alias/rds-export-tests", TargetKeyId=key["KeyId"])
        yield Cloud(settings, clients, role, key["KeyId"], key["Arn"])
    finally:
        server.stop()
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def unique(prefix: str = "db") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def make_instance(
    cloud: Cloud, tables: dict[tuple[str, str], tuple[list[Column], list[Any]]]
) -> tuple[str, str]:
    """A DB instance whose live data holds `tables`: (identifier, automated snapshot ARN)."""
    ident = unique("inst")
    store = live_store(cloud.settings.state_dir, REGION, ident)
    for (database, name), (columns, rows) in tables.items():
        store.create_table(database, name, columns)
        store.insert(database, name, rows)
    cloud.rds.create_db_instance(
        DBInstanceIdentifier=ident,
        Engine="mysql",
        DBInstanceClass="db.t3.micro",
        AllocatedStorage=20,
        MasterUsername="admin",
        MasterUserPassword="password1",
    )
    snaps = cloud.rds.describe_db_snapshots(DBInstanceIdentifier=ident)["DBSnapshots"]
    assert [s["SnapshotType"] for s in snaps] == ["automated"]
    return ident, snaps[0]["DBSnapshotArn"]


SIMPLE = {
    ("app", "items"): (
        [Column("id", "int", False), Column("label", "varchar(20)")],
        [(i, f"item {i}") for i in range(1, 51)],
    )
}


def start(cloud: Cloud, source_arn: str, **overrides: Any) -> str:
    params = {
        "ExportTaskIdentifier": unique("exp"),
        "SourceArn": source_arn,
        "S3BucketName": BUCKET,
        "IamRoleArn": cloud.role_arn,
        "KmsKeyId": cloud.key_arn,
        "S3Prefix": "exports",
        **overrides,
    }
    params = {k: v for k, v in params.items() if v is not None}
    cloud.rds.start_export_task(**params)
    return params["ExportTaskIdentifier"]


def wait(cloud: Cloud, identifier: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = cloud.rds.describe_export_tasks(ExportTaskIdentifier=identifier)["ExportTasks"][0]
        if task["Status"] in ("COMPLETE", "CANCELED", "FAILED"):
            return task
        time.sleep(0.05)
    raise AssertionError(f"export {identifier} did not finish")


def keys(cloud: Cloud, prefix: str) -> list[str]:
    pages = cloud.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def get(cloud: Cloud, key: str) -> bytes:
    return cloud.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def read_table(cloud: Cloud, export_prefix: str, target: str) -> list[dict[str, Any]]:
    database = target.split(".")[0]
    files = [
        k for k in keys(cloud, f"{export_prefix}/{database}/{target}/") if k.endswith(".parquet")
    ]
    assert files, target
    rows: list[dict[str, Any]] = []
    for key in files:
        rows.extend(pq.read_table(io.BytesIO(get(cloud, key))).to_pylist())
    return rows


def error_code(call: Any) -> tuple[str, int]:
    with pytest.raises(ClientError) as info:
        call()
    return info.value.response["Error"]["Code"], info.value.response["ResponseMetadata"][
        "HTTPStatusCode"
    ]


# --- the demo database, exported once for several tests --------------------------


@dataclass
class DemoExport:
    prefix: str
    task: dict[str, Any]
    snapshot_arn: str


@pytest.fixture(scope="module")
def demo_export(cloud: Cloud) -> DemoExport:
    config = current_config()
    config = config.model_copy(update={"aws": config.aws.model_copy(update={"region": REGION})})
    demo_rds.seed(cloud.clients, config, cloud.settings)
    instance = config.rds.instances[0]
    snaps = cloud.rds.describe_db_snapshots(
        DBInstanceIdentifier=instance.identifier, SnapshotType="automated"
    )["DBSnapshots"]
    arn = snaps[-1]["DBSnapshotArn"]
    ident = start(
        cloud,
        arn,
        IamRoleArn=instance.iam_role_arn,
        KmsKeyId=instance.kms_key_id,
        ExportOnly=instance.export_only,
        S3Prefix="demo/exports",
    )
    task = wait(cloud, ident)
    assert task["Status"] == "COMPLETE", task
    return DemoExport(f"demo/exports/{ident}", task, arn)


def test_demo_export_layout(cloud: Cloud, demo_export: DemoExport, aws_samples: AwsSamples) -> None:
    ident = demo_export.task["ExportTaskIdentifier"]
    found = keys(cloud, demo_export.prefix + "/")
    assert f"{demo_export.prefix}/export_info_{ident}.json" in found
    assert f"{demo_export.prefix}/export_tables_info_{ident}_from_1_to_3.json" in found
    parquet = [k for k in found if k.endswith(".parquet")]
    for key in parquet:
        relative = key[len(demo_export.prefix) + 1 :].split("/")
        assert relative[0] == "shop" and relative[1].startswith("shop.")
        assert relative[2].isdigit()
        assert relative[3].startswith("part-") and relative[3].endswith(".c000.gz.parquet")
        metadata = pq.ParquetFile(io.BytesIO(get(cloud, key))).metadata
        assert all(
            metadata.row_group(g).column(c).compression == "GZIP"
            for g in range(metadata.num_row_groups)
            for c in range(metadata.num_columns)
        )
    orders = [k for k in parquet if "/shop.orders/" in k]
    batches = {k.split("/")[-2] for k in orders}
    parts = sorted(int(k.split("/")[-1].split("-")[1]) for k in orders)
    assert batches == {"1", "2"} and len(orders) == 3  # 3000 rows, 1000 a file, 2 a folder
    assert parts != list(range(len(parts)))  # numbers with a gap, as AWS warns
    head = cloud.s3.head_object(Bucket=BUCKET, Key=orders[0])
    assert head["ServerSideEncryption"] == "aws:kms"

    info = json.loads(get(cloud, f"{demo_export.prefix}/export_info_{ident}.json"))
    assert info["exportTaskIdentifier"] == ident
    assert info["sourceArn"] == demo_export.snapshot_arn
    assert info["exportOnly"] == ["shop.customers", "shop.orders", "shop.type_zoo"]
    assert info["status"] == "COMPLETE" and info["percentProgress"] == 100
    assert info["s3Bucket"] == BUCKET and info["s3Prefix"] == "demo/exports"
    assert info["exportedFilesPath"] == demo_export.prefix
    assert info["snapshotTime"].endswith("Z") and info["totalExportedDataInGB"] > 0
    sample_info = json.loads(next(aws_samples.rds_mysql.rglob("export_info_*.json")).read_text())
    assert set(sample_info) == set(info)


def test_demo_export_types_match_samples(
    cloud: Cloud, demo_export: DemoExport, aws_samples: AwsSamples
) -> None:
    """Same MySQL type → same Parquet physical/logical type (and width) as the samples."""
    ident = demo_export.task["ExportTaskIdentifier"]
    tables_info = json.loads(
        get(cloud, f"{demo_export.prefix}/export_tables_info_{ident}_from_1_to_3.json")
    )
    ours = {t["target"]: t for t in tables_info["perTableStatus"]}
    sample_info = json.loads(
        next(aws_samples.rds_mysql.rglob("export_tables_info_*.json")).read_text()
    )
    compared = 0
    for sample_table in sample_info["perTableStatus"]:
        target = sample_table["target"]
        assert ours[target]["status"] == "COMPLETE"
        our_types = {
            m["columnName"]: m["originalType"]
            for m in ours[target]["schemaMetadata"]["originalTypeMappings"]
        }
        sample_file = next(aws_samples.rds_mysql.rglob(f"{target}/*/*.parquet"))
        sample_schema = pq.ParquetFile(sample_file).schema
        our_key = next(
            k for k in keys(cloud, f"{demo_export.prefix}/shop/{target}/") if k.endswith("parquet")
        )
        our_schema = pq.ParquetFile(io.BytesIO(get(cloud, our_key))).schema
        for mapping in sample_table["schemaMetadata"]["originalTypeMappings"]:
            name = mapping["columnName"]
            if our_types.get(name) != mapping["originalType"]:
                continue
            theirs = sample_schema.column(sample_schema.names.index(name))
            mine = our_schema.column(our_schema.names.index(name))
            assert (mine.physical_type, str(mine.logical_type), mine.length) == (
                theirs.physical_type,
                str(theirs.logical_type),
                theirs.length,
            ), name
            compared += 1
    assert compared >= 14  # every sample column but orders.ship_time's twin types


def test_type_zoo_values_are_exact(cloud: Cloud, demo_export: DemoExport) -> None:
    rows = {r["id"]: r for r in read_table(cloud, demo_export.prefix, "shop.type_zoo")}
    types = {c.name: c.mysql_type for c in demo_rds.TYPE_ZOO}
    assert sorted(rows) == [1, 2, 3, 4]
    for given in demo_rds.type_zoo_rows():
        exported = rows[given["id"]]
        for name, mysql_type in types.items():
            expected = _expected_export(mysql_type, given.get(name))
            assert exported[name] == expected, (given["id"], name)
    # the edges spelled out, so a wrong helper cannot hide them
    assert rows[2]["c_bigint_u"] == Decimal("18446744073709551615")
    assert rows[2]["c_decimal_65_30"] == "9" * 35 + "." + "9" * 30
    assert rows[1]["c_time"] == "-838:59:59" and rows[2]["c_time"] == "838:59:59"
    assert rows[4]["c_date"] == "0000-00-00" and rows[4]["c_datetime"] is None
    assert rows[2]["c_char"] == "日本😀é".encode()  # bytes, trailing spaces dropped
    assert rows[4]["c_binary"] == b"a\x00\x00\x00"
    assert rows[2]["c_bit12"] == b"\x0f\xff"
    assert rows[2]["c_datetime6"] == dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC)
    assert all(v is None for k, v in rows[3].items() if k != "id")


def _expected_export(mysql_type: MySQLType, value: Any) -> Any:
    """What the export must hold for a given input, derived independently of the writer."""
    if value is None:
        return None
    b = mysql_type.base
    if b == "bigint" and mysql_type.unsigned:
        return Decimal(value)
    if b == "decimal":
        text = f"{Decimal(value):.{mysql_type.scale}f}"
        return text if (mysql_type.length or 0) > 38 else Decimal(text)
    if b == "float":
        import struct

        return struct.unpack("<f", struct.pack("<f", value))[0]
    if b == "bit":
        return int(value).to_bytes(((mysql_type.length or 1) + 7) // 8, "big")
    if b == "char":
        return value.rstrip(" ").encode()
    if b == "binary":
        return value.ljust(mysql_type.length, b"\x00")
    if b == "set":
        return ",".join(m for m in mysql_type.members if m in value.split(","))
    if b in ("datetime", "timestamp"):
        if value.startswith("0000"):
            return None
        return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC)
    return value


def test_demo_tables_info_original_types(cloud: Cloud, demo_export: DemoExport) -> None:
    ident = demo_export.task["ExportTaskIdentifier"]
    info = json.loads(
        get(cloud, f"{demo_export.prefix}/export_tables_info_{ident}_from_1_to_3.json")
    )
    zoo = next(t for t in info["perTableStatus"] if t["target"] == "shop.type_zoo")
    mapping = {m["columnName"]: m for m in zoo["schemaMetadata"]["originalTypeMappings"]}
    assert [m for m in mapping] == [c.name for c in demo_rds.TYPE_ZOO]
    assert mapping["c_bigint_u"]["originalType"] == "bigint unsigned"
    assert mapping["c_decimal_65_30"]["originalType"] == "decimal(65,30)"
    assert mapping["c_decimal_65_30"]["originalNumPrecision"] == 65
    assert mapping["c_datetime6"]["originalDateTimePrecision"] == 6
    assert mapping["c_char"]["originalCharMaxLength"] == 10
    assert zoo["tableStatistics"]["partitioningInfo"]["numberOfPartitions"] == 1
    orders = next(t for t in info["perTableStatus"] if t["target"] == "shop.orders")
    assert orders["tableStatistics"]["partitioningInfo"]["numberOfCompletedPartitions"] == 3


def test_demo_row_counts(cloud: Cloud, demo_export: DemoExport) -> None:
    customers = read_table(cloud, demo_export.prefix, "shop.customers")
    orders = read_table(cloud, demo_export.prefix, "shop.orders")
    assert len(customers) == demo_rds.CUSTOMER_COUNT
    assert len(orders) == demo_rds.ORDER_COUNT
    assert sorted(r["id"] for r in orders) == list(range(1, demo_rds.ORDER_COUNT + 1))


def test_demo_seed_is_idempotent_and_mutate_takes_a_nightly_backup(
    cloud: Cloud, demo_export: DemoExport
) -> None:
    config = current_config()
    config = config.model_copy(update={"aws": config.aws.model_copy(update={"region": REGION})})
    ident = config.rds.instances[0].identifier
    before = cloud.rds.describe_db_snapshots(DBInstanceIdentifier=ident)["DBSnapshots"]
    demo_rds.seed(cloud.clients, config, cloud.settings)
    assert cloud.rds.describe_db_snapshots(DBInstanceIdentifier=ident)["DBSnapshots"] == before

    summary = demo_rds.mutate(cloud.clients, config, cloud.settings, seed=7)[ident]
    orders = summary["tables"]["orders"]
    assert orders["inserted"] > 0 and orders["updated"] > 0 and orders["deleted"] > 0
    after = cloud.rds.describe_db_snapshots(DBInstanceIdentifier=ident)["DBSnapshots"]
    new = [
        s
        for s in after
        if s["DBSnapshotIdentifier"] not in {b["DBSnapshotIdentifier"] for b in before}
    ]
    assert [s["DBSnapshotIdentifier"] for s in new] == [summary["snapshot"]]
    assert new[0]["SnapshotType"] == "automated"
    assert new[0]["DBSnapshotIdentifier"].startswith(f"rds:{ident}-")

    task = wait(cloud, start(cloud, new[0]["DBSnapshotArn"], ExportOnly=["shop.orders"]))
    rows = read_table(cloud, f"exports/{task['ExportTaskIdentifier']}", "shop.orders")
    expected = demo_rds.ORDER_COUNT + orders["inserted"] - orders["deleted"]
    assert len(rows) == expected
    # the earlier export (older snapshot) is untouched by the changes
    assert len(read_table(cloud, demo_export.prefix, "shop.orders")) == demo_rds.ORDER_COUNT


# --- validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    "identifier",
    [
        "1starts-with-digit",
        "ends-with-",
        "two--hyphens",
        "has_underscore",
        "rds:colon",
        "x" * 61,
        "",
    ],
)
def test_invalid_identifiers(cloud: Cloud, identifier: str) -> None:
    _ident, arn = make_instance(cloud, SIMPLE)
    assert error_code(lambda: start(cloud, arn, ExportTaskIdentifier=identifier or " "))[0] == (
        "InvalidParameterValue"
    )


def test_validation_errors(cloud: Cloud) -> None:
    ident, arn = make_instance(cloud, SIMPLE)
    missing_snapshot = arn.rsplit(":", 1)[0] + ":rds:nope-2020-01-01-00-00"
    missing_cluster_snapshot = arn.replace(":snapshot:", ":cluster-snapshot:")
    role_without_trust = cloud.clients.iam.create_role(
        RoleName=unique("role"),
        AssumeRolePolicyDocument=json.dumps(
            {
                **TRUST,
                "Statement": [
                    {**TRUST["Statement"][0], "Principal": {"Service": "ec2.amazonaws.com"}}
                ],
            }
        ),
    )["Role"]["Arn"]
    disabled = cloud.clients.kms.create_key()["KeyMetadata"]["KeyId"]
    cloud.clients.kms.disable_key(KeyId=disabled)
    cases = {
        "DBSnapshotNotFound": {"SourceArn": missing_snapshot},
        "DBClusterSnapshotNotFoundFault": {"SourceArn": missing_cluster_snapshot},
        "DBClusterNotFoundFault": {"SourceArn": arn.split(":snapshot:")[0] + ":cluster:nope"},
        "IamRoleNotFound": {"IamRoleArn": "arn:aws:iam::123456789012:role/does-not-exist"},
        "IamRoleMissingPermissions": {"IamRoleArn": role_without_trust},
        "KMSKeyNotAccessibleFault": {"KmsKeyId": "alias/does-not-exist"},
        "InvalidS3BucketFault": {"S3BucketName": "no-such-bucket-here"},
        "InvalidExportOnly": {"ExportOnly": ["app.missing"]},
    }
    for code, overrides in cases.items():
        assert error_code(lambda o=overrides: start(cloud, arn, **o))[0] == code, overrides
    other_region = unique("bucket-")
    AwsClients.create(cloud.settings, "eu-central-1").s3.create_bucket(
        Bucket=other_region, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"}
    )
    assert error_code(lambda: start(cloud, arn, S3BucketName=other_region))[0] == (
        "InvalidS3BucketFault"
    )
    for bad in (["nodb"], ["app.items.extra"], ["app."], ["other.items"]):
        assert error_code(lambda b=bad: start(cloud, arn, ExportOnly=b))[0] == "InvalidExportOnly"
    for key in (disabled, "0000-not-a-key", f"arn:aws:kms:us-east-1:123456789012:key/{disabled}"):
        assert error_code(lambda k=key: start(cloud, arn, KmsKeyId=k))[0] == (
            "KMSKeyNotAccessibleFault"
        )
    # status codes as botocore's model says
    assert error_code(lambda: start(cloud, missing_snapshot)) == ("DBSnapshotNotFound", 404)
    assert error_code(lambda: start(cloud, arn, IamRoleArn="arn:aws:iam::123456789012:role/x")) == (
        "IamRoleNotFound",
        404,
    )
    # every accepted KMS spelling works: id, ARN, alias name, alias ARN
    alias_arn = f"arn:aws:kms:{REGION}:123456789012:alias/rds-export-tests"
    for key in (cloud.key_id, cloud.key_arn, "alias/rds-export-tests", alias_arn):
        assert wait(cloud, start(cloud, arn, KmsKeyId=key))["Status"] == "COMPLETE"
    assert ident


def test_identifier_unique_one_task_per_snapshot_and_five_at_a_time(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(rds_exports.EXPORT_SECONDS_ENV, "3")
    _ident, arn = make_instance(cloud, SIMPLE)
    first = start(cloud, arn)
    assert error_code(lambda: start(cloud, arn))[0] == "ExportTaskAlreadyExists"
    snapshots = [make_instance(cloud, SIMPLE)[1] for _ in range(5)]
    running = [first] + [start(cloud, s) for s in snapshots[:4]]
    assert error_code(lambda: start(cloud, snapshots[4]))[0] == "ExportTaskLimitReached"
    for task in running:
        cloud.rds.cancel_export_task(ExportTaskIdentifier=task)
    for task in running:
        assert wait(cloud, task)["Status"] == "CANCELED"
    assert error_code(lambda: start(cloud, arn, ExportTaskIdentifier=first))[0] == (
        "ExportTaskAlreadyExists"
    )
    assert wait(cloud, start(cloud, snapshots[4]))["Status"] == "COMPLETE"


# --- progress, cancel, describe -------------------------------------------------------


def test_status_progression(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(rds_exports.EXPORT_SECONDS_ENV, "1.5")
    monkeypatch.setenv(rds_export_worker.ROWS_PER_FILE_ENV, "10")
    _ident, arn = make_instance(cloud, SIMPLE)
    task_id = start(cloud, arn)
    seen: list[tuple[str, int]] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        task = cloud.rds.describe_export_tasks(ExportTaskIdentifier=task_id)["ExportTasks"][0]
        seen.append((task["Status"], task["PercentProgress"]))
        if task["Status"] == "COMPLETE":
            break
        time.sleep(0.03)
    statuses = [s for s, _ in seen]
    assert statuses[0] == "STARTING" and statuses[-1] == "COMPLETE"
    order = {"STARTING": 0, "IN_PROGRESS": 1, "COMPLETE": 2}
    assert [order[s] for s in statuses] == sorted(order[s] for s in statuses)
    percents = [p for _, p in seen]
    assert percents == sorted(percents) and percents[-1] == 100
    assert any(0 < p < 100 for s, p in seen if s == "IN_PROGRESS")
    final = cloud.rds.describe_export_tasks(ExportTaskIdentifier=task_id)["ExportTasks"][0]
    assert final["TaskEndTime"] >= final["TaskStartTime"]
    assert final["SourceType"] == "SNAPSHOT"
    # 50 rows, 10 a file, 2 files a folder: folders 1..3, parts 0,1 | 3,4 | 6
    parquet = [k for k in keys(cloud, f"exports/{task_id}/") if k.endswith(".parquet")]
    assert sorted((k.split("/")[-2], k.split("/")[-1][:10]) for k in parquet) == [
        ("1", "part-00000"),
        ("1", "part-00001"),
        ("2", "part-00003"),
        ("2", "part-00004"),
        ("3", "part-00006"),
    ]


def test_cancel_keeps_written_files(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(rds_exports.EXPORT_SECONDS_ENV, "4")
    monkeypatch.setenv(rds_export_worker.ROWS_PER_FILE_ENV, "5")
    _ident, arn = make_instance(cloud, SIMPLE)
    task_id = start(cloud, arn)
    deadline = time.monotonic() + 10
    while not [k for k in keys(cloud, f"exports/{task_id}/") if k.endswith(".parquet")]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    answer = cloud.rds.cancel_export_task(ExportTaskIdentifier=task_id)
    assert answer["Status"] == "CANCELING"
    task = wait(cloud, task_id)
    assert task["Status"] == "CANCELED" and task["PercentProgress"] < 100
    written = keys(cloud, f"exports/{task_id}/")
    assert written and all(k.endswith(".parquet") for k in written)  # no export_info
    assert len(written) < 10  # stopped before the end (50 rows at 5 a file)
    assert error_code(lambda: cloud.rds.cancel_export_task(ExportTaskIdentifier=task_id)) == (
        "InvalidExportTaskStateFault",
        400,
    )
    assert error_code(lambda: cloud.rds.cancel_export_task(ExportTaskIdentifier="nope-x"))[0] == (
        "ExportTaskNotFound"
    )


def test_describe_filters(cloud: Cloud) -> None:
    _ident, arn = make_instance(cloud, SIMPLE)
    _ident2, arn2 = make_instance(cloud, SIMPLE)
    a = wait(cloud, start(cloud, arn))["ExportTaskIdentifier"]
    b = wait(cloud, start(cloud, arn2))["ExportTaskIdentifier"]
    by_source = cloud.rds.describe_export_tasks(SourceArn=arn)["ExportTasks"]
    assert [t["ExportTaskIdentifier"] for t in by_source] == [a]
    by_filter = cloud.rds.describe_export_tasks(
        Filters=[
            {"Name": "source-arn", "Values": [arn2]},
            {"Name": "status", "Values": ["complete"]},
        ]
    )["ExportTasks"]
    assert [t["ExportTaskIdentifier"] for t in by_filter] == [b]
    assert (
        error_code(lambda: cloud.rds.describe_export_tasks(ExportTaskIdentifier="nope-y"))[0]
        == "ExportTaskNotFound"
    )
    no_prefix = wait(cloud, start(cloud, arn, S3Prefix=None, ExportOnly=["app.items"]))
    ident = no_prefix["ExportTaskIdentifier"]
    assert "S3Prefix" not in no_prefix or no_prefix["S3Prefix"] == ""
    assert f"{ident}/export_info_{ident}.json" in keys(cloud, f"{ident}/")
    info = json.loads(get(cloud, f"{ident}/export_info_{ident}.json"))
    assert info["exportedFilesPath"] == ident and info["exportOnly"] == ["app.items"]
    everything = cloud.rds.get_paginator("describe_export_tasks").paginate(
        PaginationConfig={"PageSize": 20}
    )
    ids = [t["ExportTaskIdentifier"] for page in everything for t in page["ExportTasks"]]
    assert a in ids and b in ids and len(ids) == len(set(ids))


# --- what gets exported ------------------------------------------------------------


def test_skipped_tables_are_listed_in_warning(cloud: Cloud) -> None:
    tables = {
        ("app", "good"): ([Column("id", "int")], [(1,)]),
        ("app", "bad"): ([Column("id", "int"), Column("a,b", "int")], [(1, 2)]),
        ("app", "worse"): ([Column("x=y", "int"), Column("tab\there", "int")], [(1, 2)]),
        ("app", "empty"): ([Column("id", "int"), Column("when", "datetime")], []),
    }
    _ident, arn = make_instance(cloud, tables)
    task = wait(cloud, start(cloud, arn, ExportOnly=["app"]))
    assert task["Status"] == "COMPLETE"
    warning = json.loads(task["WarningMessage"])
    assert sorted(t["target"] for t in warning["skippedTables"]) == ["app.bad", "app.worse"]
    prefix = f"exports/{task['ExportTaskIdentifier']}"
    found = keys(cloud, prefix + "/")
    assert not [k for k in found if "/app.bad/" in k or "/app.worse/" in k]
    assert read_table(cloud, prefix, "app.good") == [{"id": 1}]
    # an empty table still has one (schema-only) Parquet file
    empty = [k for k in found if "/app.empty/" in k]
    assert len(empty) == 1
    schema = pq.ParquetFile(io.BytesIO(get(cloud, empty[0]))).schema
    assert schema.column(1).physical_type == "INT64"
    tables_info = json.loads(get(cloud, next(k for k in found if "export_tables_info" in k)))
    status = {t["target"]: t["status"] for t in tables_info["perTableStatus"]}
    assert status == {
        "app.good": "COMPLETE",
        "app.empty": "COMPLETE",
        "app.bad": "SKIPPED",
        "app.worse": "SKIPPED",
    }


def test_snapshots_are_point_in_time(cloud: Cloud) -> None:
    ident, first = make_instance(cloud, SIMPLE)
    store = live_store(cloud.settings.state_dir, REGION, ident)
    store.insert("app", "items", [(51, "late")])
    store.update("app", "items", "id", {1: {"label": "changed"}})
    manual = cloud.rds.create_db_snapshot(
        DBInstanceIdentifier=ident, DBSnapshotIdentifier=f"{ident}-manual"
    )["DBSnapshot"]
    assert manual["SnapshotType"] == "manual" and manual["Status"] == "available"
    store.delete("app", "items", "id", [2, 3])
    nightly = take_automated_snapshot(cloud.rds, ident)
    assert nightly["SnapshotType"] == "automated"
    assert nightly["DBSnapshotIdentifier"].startswith(f"rds:{ident}-")
    copied = cloud.rds.copy_db_snapshot(
        SourceDBSnapshotIdentifier=f"{ident}-manual", TargetDBSnapshotIdentifier=f"{ident}-copy"
    )["DBSnapshot"]

    def exported(arn: str) -> dict[int, str]:
        task = wait(cloud, start(cloud, arn))
        rows = read_table(cloud, f"exports/{task['ExportTaskIdentifier']}", "app.items")
        return {r["id"]: r["label"] for r in rows}

    at_first = exported(first)
    at_manual = exported(manual["DBSnapshotArn"])
    at_nightly = exported(nightly["DBSnapshotArn"])
    assert len(at_first) == 50 and at_first[1] == "item 1" and 51 not in at_first
    assert len(at_manual) == 51 and at_manual[1] == "changed"
    assert len(at_nightly) == 49 and 2 not in at_nightly
    assert exported(copied["DBSnapshotArn"]) == at_manual


def test_aurora_cluster_snapshots_and_cluster_export(cloud: Cloud) -> None:
    ident = unique("aurora")
    store = live_store(cloud.settings.state_dir, REGION, ident, kind="cluster")
    store.create_table("app", "items", SIMPLE[("app", "items")][0])
    store.insert("app", "items", SIMPLE[("app", "items")][1])
    cluster = cloud.rds.create_db_cluster(
        DBClusterIdentifier=ident,
        Engine="aurora-mysql",
        MasterUsername="admin",
        MasterUserPassword="password1",
    )["DBCluster"]
    automated = cloud.rds.describe_db_cluster_snapshots(
        DBClusterIdentifier=ident, SnapshotType="automated"
    )["DBClusterSnapshots"]
    assert len(automated) == 1 and automated[0]["DBClusterSnapshotIdentifier"].startswith("rds:")
    store.insert("app", "items", [(51, "after the snapshot")])
    nightly = take_automated_snapshot(cloud.rds, ident, kind="cluster")
    assert nightly["SnapshotType"] == "automated"

    snap_task = wait(cloud, start(cloud, automated[0]["DBClusterSnapshotArn"]))
    assert snap_task["SourceType"] == "SNAPSHOT" and snap_task["Status"] == "COMPLETE"
    rows = read_table(cloud, f"exports/{snap_task['ExportTaskIdentifier']}", "app.items")
    assert len(rows) == 50
    live_task = wait(cloud, start(cloud, cluster["DBClusterArn"]))
    assert live_task["SourceType"] == "CLUSTER" and live_task["Status"] == "COMPLETE"
    rows = read_table(cloud, f"exports/{live_task['ExportTaskIdentifier']}", "app.items")
    assert len(rows) == 51


# --- a real MariaDB as the data behind an instance -----------------------------------


MARIADB_TABLE = """
CREATE TABLE {db}.zoo (
  id INT NOT NULL PRIMARY KEY,
  u BIGINT UNSIGNED, ti TINYINT UNSIGNED, si SMALLINT, mi MEDIUMINT UNSIGNED,
  d1 DECIMAL(10,2), d2 DECIMAL(65,30), f FLOAT, db DOUBLE, b BIT(10),
  c CHAR(5), v VARCHAR(50), t TEXT, e ENUM('x','y'), s SET('a','b','c'), j JSON,
  bin BINARY(3), vb VARBINARY(10), bl BLOB,
  dt DATE, dtt DATETIME(6), ts TIMESTAMP NULL, tm TIME, yr YEAR, g GEOMETRY
) DEFAULT CHARSET=utf8mb4
"""


@pytest.fixture
def mariadb_database() -> Iterator[str]:
    name = unique("lc_rds_")
    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", charset="utf8mb4")
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}`")
        yield name
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


@pytest.mark.needs("mariadb")
def test_mariadb_backed_instance(cloud: Cloud, mariadb_database: str) -> None:
    db = mariadb_database
    conn = pymysql.connect(host="127.0.0.1", user="root", charset="utf8mb4", autocommit=True)
    with conn.cursor() as cur:
        cur.execute("SET SESSION sql_mode = ''")  # allow zero dates, like many old schemas
        cur.execute("SET SESSION time_zone = '+00:00'")
        cur.execute(MARIADB_TABLE.format(db=db))
        cur.execute(
            f"INSERT INTO {db}.zoo VALUES (1, 18446744073709551615, 255, -32768, 16777215, "
            "-99999999.99, '-99999999999999999999999999999999999.999999999999999999999999999999',"
            " 3.4e38, -1.7976931348623157e308, b'1111111111', 'ab   ', '🚀 ü', 'long text',"
            " 'y', 'c,a', '{\"k\": [1, null]}', 'a', x'00ff', x'000102',"
            " '0000-00-00', '9999-12-31 23:59:59.999999', '2038-01-19 03:14:07', '-838:59:59',"
            " 2155, ST_GeomFromText('POINT(1 2)'))"
        )
        cur.execute(f"INSERT INTO {db}.zoo (id) VALUES (2)")
        cur.execute(f"CREATE TABLE {db}.other (id INT, name VARCHAR(10))")
        cur.execute(f"INSERT INTO {db}.other VALUES (1, 'one'), (2, 'two')")
    ident = unique("maria")
    create_mysql_backed_instance(cloud.rds, ident, f"mysql://root@127.0.0.1:3306/{db}")
    snapshot = cloud.rds.describe_db_snapshots(DBInstanceIdentifier=ident)["DBSnapshots"][0]
    with conn.cursor() as cur:  # changes after the snapshot must not show in its export
        cur.execute(f"INSERT INTO {db}.other VALUES (3, 'three')")
        cur.execute(f"UPDATE {db}.zoo SET v = 'changed' WHERE id = 1")
    task = wait(cloud, start(cloud, snapshot["DBSnapshotArn"], ExportOnly=[db]))
    assert task["Status"] == "COMPLETE", task
    prefix = f"exports/{task['ExportTaskIdentifier']}"
    assert sorted(r["id"] for r in read_table(cloud, prefix, f"{db}.other")) == [1, 2]
    rows = {r["id"]: r for r in read_table(cloud, prefix, f"{db}.zoo")}
    one = rows[1]
    assert one["u"] == Decimal("18446744073709551615") and one["ti"] == 255
    assert one["si"] == -32768 and one["mi"] == 16777215
    assert one["d1"] == Decimal("-99999999.99")
    assert one["d2"] == "-99999999999999999999999999999999999.999999999999999999999999999999"
    assert one["f"] == pytest.approx(3.4e38, rel=1e-6) and one["db"] == -1.7976931348623157e308
    assert one["b"] == b"\x03\xff" and one["c"] == b"ab" and one["v"] == "🚀 ü"
    assert one["e"] == "y" and one["s"] == "a,c" and json.loads(one["j"]) == {"k": [1, None]}
    assert one["bin"] == b"a\x00\x00" and one["vb"] == b"\x00\xff" and one["bl"] == b"\x00\x01\x02"
    assert one["dt"] == "0000-00-00" and one["tm"] == "-838:59:59" and one["yr"] == 2155
    assert one["dtt"] == dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC)
    assert one["ts"] == dt.datetime(2038, 1, 19, 3, 14, 7, tzinfo=dt.UTC)
    assert one["g"][:4] == b"\x00\x00\x00\x00" and len(one["g"]) == 25  # SRID + WKB point
    assert all(v is None for k, v in rows[2].items() if k != "id")
    info_key = next(k for k in keys(cloud, prefix + "/") if "export_tables_info" in k)
    tables_info = json.loads(get(cloud, info_key))
    zoo = next(t for t in tables_info["perTableStatus"] if t["target"] == f"{db}.zoo")
    types = {
        m["columnName"]: m["originalType"] for m in zoo["schemaMetadata"]["originalTypeMappings"]
    }
    assert types["u"].startswith("bigint") and types["u"].endswith("unsigned")
    assert types["d2"] == "decimal(65,30)" and types["dtt"] == "datetime(6)"
    schema = pq.ParquetFile(
        io.BytesIO(
            get(
                cloud,
                next(k for k in keys(cloud, f"{prefix}/{db}/{db}.zoo/") if k.endswith(".parquet")),
            )
        )
    ).schema
    assert schema.column(schema.names.index("u")).physical_type == "FIXED_LEN_BYTE_ARRAY"
    assert str(schema.column(schema.names.index("ti")).logical_type) == (
        "Int(bitWidth=16, isSigned=true)"
    )
    conn.close()


def test_unreachable_mariadb_fails_the_snapshot_clearly(cloud: Cloud) -> None:
    ident = unique("gone")
    with pytest.raises(ClientError) as info:
        create_mysql_backed_instance(cloud.rds, ident, "mysql://root@127.0.0.1:1/none")
    assert info.value.response["Error"]["Code"] == "InvalidParameterValue"
    assert "mysql://root@127.0.0.1:1/none" in info.value.response["Error"]["Message"]
    assert error_code(lambda: cloud.rds.describe_db_instances(DBInstanceIdentifier=ident))[0] == (
        "DBInstanceNotFound"
    )


def test_gzip_is_inside_parquet_not_around_it(cloud: Cloud, demo_export: DemoExport) -> None:
    key = next(k for k in keys(cloud, demo_export.prefix + "/") if k.endswith(".parquet"))
    body = get(cloud, key)
    assert body[:4] == b"PAR1" and body[-4:] == b"PAR1"
    with pytest.raises(gzip.BadGzipFile):
        gzip.decompress(body)
