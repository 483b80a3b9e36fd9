"""The local cloud's DynamoDB exports, checked against AWS's documented behaviour.

Everything goes through boto3 over HTTP to moto's real server with the
emulation installed (`in_process_aws_server`: same code as the local cloud's
server process, but exports finish in 0.3 s and tables are throw-away).
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import json
import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from export_pipeline.local_cloud import dynamodb_time_control as time_control
from export_pipeline.local_cloud.dynamodb_exports import SHIFT_HISTORY_PATH
from export_pipeline_tests.support.aws_samples import AwsSamples
from export_pipeline_tests.support.local_cloud import in_process_aws_server

REGION = "eu-west-1"
ACCOUNT = "123456789012"
EXPORT_ID = re.compile(r"^\d{14}-[0-9a-f]{8}$")
DATA_FILE = re.compile(r"/data/[a-z2-7]{26}\.json\.gz$")
HOUR = 3600


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with in_process_aws_server(tmp_path_factory.mktemp("aws"), export_seconds=0.3) as url:
        yield url


def _client(service: str, endpoint: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="AKIAEXPORTTESTS00001",
        aws_secret_access_key="fake",
    )


@pytest.fixture(scope="module")
def ddb(endpoint: str) -> Any:
    return _client("dynamodb", endpoint)


@pytest.fixture(scope="module")
def s3(endpoint: str) -> Any:
    return _client("s3", endpoint)


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"exp-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    return name


def make_table(ddb: Any, *, range_key: bool = True, pitr: bool = True) -> tuple[str, str]:
    name = f"T{uuid.uuid4().hex[:10]}"
    keys = [{"AttributeName": "pk", "KeyType": "HASH"}]
    attrs = [{"AttributeName": "pk", "AttributeType": "S"}]
    if range_key:
        keys.append({"AttributeName": "sk", "KeyType": "RANGE"})
        attrs.append({"AttributeName": "sk", "AttributeType": "S"})
    arn = ddb.create_table(
        TableName=name, KeySchema=keys, AttributeDefinitions=attrs, BillingMode="PAY_PER_REQUEST"
    )["TableDescription"]["TableArn"]
    if pitr:
        ddb.update_continuous_backups(
            TableName=name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
        )
    return name, arn


def wait_export(ddb: Any, arn: str, timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        description = ddb.describe_export(ExportArn=arn)["ExportDescription"]
        if description["ExportStatus"] != "IN_PROGRESS":
            return description
        if time.monotonic() > deadline:
            raise AssertionError(f"export {arn} still IN_PROGRESS after {timeout}s")
        time.sleep(0.1)


def error_code(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    return excinfo.value.response["Error"]["Code"]


ALL_TYPES_ITEM = {
    "pk": {"S": "all-types"},
    "sk": {"S": "0"},
    "empty": {"S": ""},
    "emoji": {"S": "🚀 𝄞"},
    "int64max": {"N": "9223372036854775807"},
    "tiny": {"N": "1E-130"},
    "huge": {"N": "9.9999999999999999999999999999999999999E+125"},
    "digits38": {"N": "1234567890.1234567890123456789012345678"},
    "flag": {"BOOL": False},
    "nothing": {"NULL": True},
    "bin": {"B": b"\x00\x01\xff"},
    "ss": {"SS": ["a", "b"]},
    "ns": {"NS": ["1", "2.5"]},
    "bs": {"BS": [b"\x01", b"\x02"]},
    "m": {"M": {"inner": {"L": [{"S": "x"}, {"M": {"b": {"B": b"\xfe"}}}, {"NULL": True}]}}},
}
# The same item as DynamoDB JSON in an export (binary as base64 text).
ALL_TYPES_JSON = {
    **{k: v for k, v in ALL_TYPES_ITEM.items() if k not in ("bin", "bs", "m")},
    "bin": {"B": "AAH/"},
    "bs": {"BS": ["AQ==", "Ag=="]},
    "m": {"M": {"inner": {"L": [{"S": "x"}, {"M": {"b": {"B": "/g=="}}}, {"NULL": True}]}}},
}


# --------------------------------------------------------------------------- a reader


def read_export(get: Any, summary_key: str) -> dict[str, Any]:
    """A reader written to the documented format (and the AWS-format samples of `aws_samples`).

    `get(key) -> bytes` fetches an object. Data files come from
    manifest-files.json only; a zero-byte file is an empty partition.
    """
    summary = json.loads(get(summary_key))
    files = [json.loads(line) for line in get(summary["manifestFilesS3Key"]).splitlines() if line]
    lines = []
    for entry in files:
        body = get(entry["dataFileS3Key"])
        assert base64.b64encode(hashlib.md5(body).digest()).decode() == entry["md5Checksum"]
        assert hashlib.md5(body).hexdigest() == entry["etag"]
        text = gzip.decompress(body).decode("utf-8") if body else ""
        records = [json.loads(line) for line in text.splitlines() if line]
        assert len(records) == entry["itemCount"]
        lines.extend(records)
    return {"summary": summary, "files": files, "lines": lines}


def s3_getter(s3: Any, bucket: str) -> Any:
    return lambda key: s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def sample_getter(root: Path) -> Any:
    return lambda key: (root / key).read_bytes()


def sample_summary_key(root: Path) -> str:
    (path,) = root.rglob("manifest-summary.json")
    return str(path.relative_to(root))


# --------------------------------------------------------------------------- change log


def test_change_log_records_every_kind_of_write(ddb: Any, endpoint: str) -> None:
    name, _ = make_table(ddb)

    def key(pk: str, sk: str = "1") -> dict[str, Any]:
        return {"pk": {"S": pk}, "sk": {"S": sk}}

    ddb.put_item(TableName=name, Item={**key("a"), "v": {"N": "1"}})
    ddb.put_item(TableName=name, Item={**key("a"), "v": {"N": "2"}})  # overwrite
    ddb.update_item(
        TableName=name,
        Key=key("a"),
        UpdateExpression="SET v = :v",
        ExpressionAttributeValues={":v": {"N": "3"}},
    )
    ddb.update_item(  # creates the item
        TableName=name,
        Key=key("u"),
        UpdateExpression="SET v = :v",
        ExpressionAttributeValues={":v": {"N": "9"}},
    )
    ddb.batch_write_item(
        RequestItems={
            name: [
                {"PutRequest": {"Item": {**key("b"), "v": {"N": "1"}}}},
                {"PutRequest": {"Item": {**key("c"), "v": {"N": "1"}}}},
            ]
        }
    )
    ddb.batch_write_item(RequestItems={name: [{"DeleteRequest": {"Key": key("c")}}]})
    ddb.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": name, "Item": {**key("t"), "v": {"N": "1"}}}},
            {"Delete": {"TableName": name, "Key": key("b")}},
        ]
    )
    with pytest.raises(ClientError) as cancelled:  # a failed transaction logs nothing
        ddb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": name, "Item": {**key("x"), "v": {"N": "1"}}}},
                {
                    "ConditionCheck": {
                        "TableName": name,
                        "Key": key("a"),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
            ]
        )
    assert error_code(cancelled) == "TransactionCanceledException"
    with pytest.raises(ClientError):  # a failed conditional write logs nothing
        ddb.put_item(TableName=name, Item=key("a"), ConditionExpression="attribute_not_exists(pk)")
    ddb.execute_statement(Statement=f"INSERT INTO \"{name}\" VALUE {{'pk': 'p', 'sk': '1'}}")
    ddb.delete_item(TableName=name, Key=key("a"))
    ddb.delete_item(TableName=name, Key=key("nope"))  # deletes nothing: no entry

    log = time_control.change_log(endpoint, name, REGION)
    compact = [
        (
            e["Keys"]["pk"]["S"],
            e["OldImage"] and e["OldImage"].get("v", {}).get("N"),
            e["NewImage"] and e["NewImage"].get("v", {}).get("N"),
        )
        for e in log
    ]
    assert compact == [
        ("a", None, "1"),
        ("a", "1", "2"),
        ("a", "2", "3"),
        ("u", None, "9"),
        ("b", None, "1"),
        ("c", None, "1"),
        ("c", "1", None),
        ("t", None, "1"),
        ("b", "1", None),
        ("p", None, None),
        ("a", "3", None),
    ]
    assert log[9]["OldImage"] is None and log[9]["NewImage"] == {"pk": {"S": "p"}, "sk": {"S": "1"}}
    stamps = [e["WriteTimestampMicros"] for e in log]
    assert stamps == sorted(set(stamps))  # strictly increasing
    assert abs(stamps[-1] / 1e6 - time.time()) < 60  # microseconds of the epoch


# --------------------------------------------------------------------------- full exports


def test_full_export_layout_manifests_and_data(ddb: Any, s3: Any, bucket: str) -> None:
    name, table_arn = make_table(ddb)
    items = [
        {"pk": {"S": f"c{i % 7}"}, "sk": {"S": f"{i:03d}"}, "v": {"N": str(i)}} for i in range(40)
    ]
    for item in [*items, ALL_TYPES_ITEM]:
        ddb.put_item(TableName=name, Item=item)

    started = ddb.export_table_to_point_in_time(
        TableArn=table_arn, S3Bucket=bucket, S3Prefix="exports/ddb", S3SseAlgorithm="AES256"
    )["ExportDescription"]
    export_arn = started["ExportArn"]
    export_id = export_arn.rsplit("/", 1)[1]
    assert re.fullmatch(
        rf"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}/export/\d{{14}}-[0-9a-f]{{8}}",
        export_arn,
    )
    assert EXPORT_ID.match(export_id)
    # The id's millis are the export time's.
    assert int(export_id[:14]) == int(started["ExportTime"].timestamp() * 1000)
    assert started["ExportStatus"] == "IN_PROGRESS"
    root = f"exports/ddb/AWSDynamoDB/{export_id}"
    keys_now = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys_now == [f"{root}/_started"]  # data and manifests come at the end

    done = wait_export(ddb, export_arn)
    assert done["ExportStatus"] == "COMPLETED"
    assert done["ExportManifest"] == f"{root}/manifest-summary.json"
    assert done["ItemCount"] == 41
    assert done["S3SseAlgorithm"] == "AES256"
    assert done["StartTime"] <= done["EndTime"]
    assert done["TableId"] == started["TableId"]
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", done["TableId"]
    )

    listed = {o["Key"]: o for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    fixed = {
        f"{root}/{leaf}"
        for leaf in (
            "_started",
            "manifest-summary.json",
            "manifest-summary.md5",
            "manifest-files.json",
            "manifest-files.md5",
        )
    }
    assert fixed <= set(listed)
    data_keys = set(listed) - fixed
    assert data_keys and all(
        k.startswith(f"{root}/data/") and DATA_FILE.search(k) for k in data_keys
    )
    assert listed[f"{root}/_started"]["Size"] == 0

    get = s3_getter(s3, bucket)
    for manifest in ("manifest-summary", "manifest-files"):
        body = get(f"{root}/{manifest}.json")
        assert get(f"{root}/{manifest}.md5") == base64.b64encode(hashlib.md5(body).digest())

    export = read_export(get, done["ExportManifest"])
    summary = export["summary"]
    assert summary == {
        "version": "2020-06-30",
        "exportArn": export_arn,
        "startTime": summary["startTime"],
        "endTime": summary["endTime"],
        "tableArn": table_arn,
        "tableId": done["TableId"],
        "exportTime": done["ExportTime"].astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        + "Z",
        "s3Bucket": bucket,
        "s3Prefix": "exports/ddb",
        "s3SseAlgorithm": "AES256",
        "s3SseKmsKeyId": None,
        "manifestFilesS3Key": f"{root}/manifest-files.json",
        "billedSizeBytes": done["BilledSizeBytes"],
        "itemCount": 41,
        "outputFormat": "DYNAMODB_JSON",
    }
    assert done["BilledSizeBytes"] > 0
    files = export["files"]
    assert {f["dataFileS3Key"] for f in files} == data_keys
    assert all(set(f) == {"itemCount", "md5Checksum", "etag", "dataFileS3Key"} for f in files)
    assert sum(f["itemCount"] for f in files) == 41
    for entry in files:  # the manifest's ETag is S3's own
        head = s3.head_object(Bucket=bucket, Key=entry["dataFileS3Key"])
        assert head["ETag"].strip('"') == entry["etag"]
        assert head["ServerSideEncryption"] == "AES256"
        if entry["itemCount"] == 0:
            assert head["ContentLength"] == 0  # empty partition: zero-byte file
    # Items of one partition key land in one file (one file per simulated partition).
    file_of: dict[str, set[str]] = {}
    for entry in files:
        body = get(entry["dataFileS3Key"])
        for line in gzip.decompress(body).decode().splitlines() if body else []:
            file_of.setdefault(json.loads(line)["Item"]["pk"]["S"], set()).add(
                entry["dataFileS3Key"]
            )
    assert all(len(f) == 1 for f in file_of.values())
    assert len(files) >= 4

    assert all(set(line) == {"Item"} for line in export["lines"])
    exported = {(i["Item"]["pk"]["S"], i["Item"]["sk"]["S"]): i["Item"] for i in export["lines"]}
    expected = {(i["pk"]["S"], i["sk"]["S"]): i for i in items}
    expected[("all-types", "0")] = ALL_TYPES_JSON
    assert exported == expected


def test_zero_byte_files_for_empty_partitions(ddb: Any, s3: Any, bucket: str) -> None:
    name, table_arn = make_table(ddb)
    for i in range(3):  # one partition key: one partition holds everything
        ddb.put_item(TableName=name, Item={"pk": {"S": "same"}, "sk": {"S": str(i)}})
    arn = ddb.export_table_to_point_in_time(TableArn=table_arn, S3Bucket=bucket)[
        "ExportDescription"
    ]["ExportArn"]
    done = wait_export(ddb, arn)
    export_id = arn.rsplit("/", 1)[1]
    assert done["ExportManifest"] == f"AWSDynamoDB/{export_id}/manifest-summary.json"  # no prefix
    assert "S3Prefix" not in done
    export = read_export(s3_getter(s3, bucket), done["ExportManifest"])
    counts = sorted(f["itemCount"] for f in export["files"])
    assert counts[-1] == 3 and counts[:-1] == [0] * (len(counts) - 1) and len(counts) >= 2
    assert export["summary"]["s3Prefix"] is None


def test_export_time_is_honoured(ddb: Any, s3: Any, bucket: str, endpoint: str) -> None:
    name, table_arn = make_table(ddb, range_key=False)
    for i in range(6):
        ddb.put_item(TableName=name, Item={"pk": {"S": f"k{i}"}, "v": {"N": str(i)}})
    time_control.shift_history(endpoint, name, 2 * HOUR, REGION)
    # Changes "now", i.e. after the export time chosen below.
    ddb.put_item(TableName=name, Item={"pk": {"S": "k0"}, "v": {"N": "100"}})
    ddb.delete_item(TableName=name, Key={"pk": {"S": "k1"}})
    ddb.put_item(TableName=name, Item={"pk": {"S": "late"}, "v": {"N": "7"}})
    ddb.update_item(
        TableName=name,
        Key={"pk": {"S": "k2"}},
        UpdateExpression="REMOVE v SET w = :w",
        ExpressionAttributeValues={":w": {"S": "x"}},
    )

    export_time = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    past = ddb.export_table_to_point_in_time(
        TableArn=table_arn, S3Bucket=bucket, ExportTime=export_time
    )["ExportDescription"]
    current = ddb.export_table_to_point_in_time(TableArn=table_arn, S3Bucket=bucket)[
        "ExportDescription"
    ]
    assert abs(past["ExportTime"].timestamp() - export_time.timestamp()) < 0.001

    def items(arn: str) -> dict[str, Any]:
        done = wait_export(ddb, arn)
        lines = read_export(s3_getter(s3, bucket), done["ExportManifest"])["lines"]
        return {line["Item"]["pk"]["S"]: line["Item"] for line in lines}

    assert items(past["ExportArn"]) == {
        f"k{i}": {"pk": {"S": f"k{i}"}, "v": {"N": str(i)}} for i in range(6)
    }
    now_items = items(current["ExportArn"])
    assert set(now_items) == {"k0", "k2", "k3", "k4", "k5", "late"}
    assert now_items["k0"]["v"] == {"N": "100"}
    assert now_items["k2"] == {"pk": {"S": "k2"}, "w": {"S": "x"}}


def test_export_refusals_match_aws(ddb: Any, bucket: str) -> None:
    _, no_pitr_arn = make_table(ddb, pitr=False)
    with pytest.raises(ClientError) as excinfo:
        ddb.export_table_to_point_in_time(TableArn=no_pitr_arn, S3Bucket=bucket)
    assert error_code(excinfo) == "PointInTimeRecoveryUnavailableException"

    _, table_arn = make_table(ddb)
    future = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    before_pitr = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    for export_time in (future, before_pitr):
        with pytest.raises(ClientError) as excinfo:
            ddb.export_table_to_point_in_time(
                TableArn=table_arn, S3Bucket=bucket, ExportTime=export_time
            )
        assert error_code(excinfo) == "InvalidExportTimeException"
        assert "ExportTime" in excinfo.value.response["Error"]["Message"]

    with pytest.raises(ClientError) as excinfo:
        ddb.export_table_to_point_in_time(
            TableArn=table_arn.replace("table/", "table/Missing"), S3Bucket=bucket
        )
    assert error_code(excinfo) == "TableNotFoundException"

    with pytest.raises(ClientError) as excinfo:
        ddb.export_table_to_point_in_time(TableArn=table_arn, S3Bucket=bucket, ExportFormat="ION")
    assert error_code(excinfo) == "ValidationException"
    assert "ION" in excinfo.value.response["Error"]["Message"]

    with pytest.raises(ClientError) as excinfo:
        ddb.describe_export(ExportArn=f"{table_arn}/export/01700000000000-deadbeef")
    assert error_code(excinfo) == "ExportNotFoundException"


def test_client_token_idempotency(ddb: Any, bucket: str) -> None:
    _, table_arn = make_table(ddb)
    token = uuid.uuid4().hex
    first = ddb.export_table_to_point_in_time(
        TableArn=table_arn, S3Bucket=bucket, S3Prefix="a", ClientToken=token
    )["ExportDescription"]
    again = ddb.export_table_to_point_in_time(
        TableArn=table_arn, S3Bucket=bucket, S3Prefix="a", ClientToken=token
    )["ExportDescription"]
    assert again["ExportArn"] == first["ExportArn"]
    assert again["ClientToken"] == token
    with pytest.raises(ClientError) as excinfo:
        ddb.export_table_to_point_in_time(
            TableArn=table_arn, S3Bucket=bucket, S3Prefix="b", ClientToken=token
        )
    # botocore's model: "same client token but a change in other parameters ...
    # DynamoDB returns an ExportConflictException".
    assert error_code(excinfo) == "ExportConflictException"
    other = ddb.export_table_to_point_in_time(
        TableArn=table_arn, S3Bucket=bucket, S3Prefix="a", ClientToken=uuid.uuid4().hex
    )["ExportDescription"]
    assert other["ExportArn"] != first["ExportArn"]
    assert wait_export(ddb, first["ExportArn"])["ExportStatus"] == "COMPLETED"
    summaries = ddb.list_exports(TableArn=table_arn)["ExportSummaries"]
    assert len(summaries) == 2


def test_missing_bucket_gives_failed_export(ddb: Any) -> None:
    _, table_arn = make_table(ddb)
    started = ddb.export_table_to_point_in_time(
        TableArn=table_arn, S3Bucket=f"missing-{uuid.uuid4().hex[:8]}"
    )["ExportDescription"]
    assert started["ExportStatus"] == "IN_PROGRESS"
    done = wait_export(ddb, started["ExportArn"])
    assert done["ExportStatus"] == "FAILED"
    assert done["FailureCode"] == "S3NoSuchBucket"
    assert done["FailureMessage"]
    assert "ExportManifest" not in done and "ItemCount" not in done


# --------------------------------------------------------------------------- incremental


def _incremental_fixture(ddb: Any, endpoint: str) -> tuple[str, str, float]:
    """A table with history: base items 4 h ago, changes 1 h ago, one more now.

    Returns (name, arn, time of the changes).
    """
    name, table_arn = make_table(ddb, range_key=False)

    def put(pk: str, v: str, **extra: Any) -> None:
        ddb.put_item(TableName=name, Item={"pk": {"S": pk}, "v": {"N": v}, **extra})

    for pk in ("upd", "del", "same", "recreate"):
        put(pk, "1")
    time_control.shift_history(endpoint, name, 3 * HOUR, REGION)
    put("upd", "2")
    ddb.update_item(
        TableName=name,
        Key={"pk": {"S": "upd"}},
        UpdateExpression="SET v = :v",
        ExpressionAttributeValues={":v": {"N": "3"}},
    )
    ddb.delete_item(TableName=name, Key={"pk": {"S": "del"}})
    put("ins", "1", b={"B": b"\x01"})
    put("flash", "1")  # created and deleted inside the window: absent
    ddb.delete_item(TableName=name, Key={"pk": {"S": "flash"}})
    ddb.delete_item(TableName=name, Key={"pk": {"S": "recreate"}})
    put("recreate", "5")  # deleted then re-created: an update
    time_control.shift_history(endpoint, name, HOUR, REGION)
    changes_at = time.time() - HOUR
    put("after", "1")  # after the window
    return name, table_arn, changes_at


def test_incremental_export_compacts_changes(ddb: Any, s3: Any, bucket: str, endpoint: str) -> None:
    name, table_arn, changes_at = _incremental_fixture(ddb, endpoint)
    window = {
        "ExportFromTime": dt.datetime.fromtimestamp(changes_at - 30 * 60, dt.UTC),
        "ExportToTime": dt.datetime.fromtimestamp(changes_at + 30 * 60, dt.UTC),
    }
    log = {
        e["Keys"]["pk"]["S"]: e["WriteTimestampMicros"]
        for e in time_control.change_log(endpoint, name, REGION)
    }
    exports = {}
    for view in ("NEW_AND_OLD_IMAGES", "NEW_IMAGE"):
        exports[view] = ddb.export_table_to_point_in_time(
            TableArn=table_arn,
            S3Bucket=bucket,
            S3Prefix="inc",
            ExportType="INCREMENTAL_EXPORT",
            IncrementalExportSpecification={**window, "ExportViewType": view},
        )["ExportDescription"]
    default_view = ddb.export_table_to_point_in_time(
        TableArn=table_arn,
        S3Bucket=bucket,
        S3Prefix="inc",
        ExportType="INCREMENTAL_EXPORT",
        IncrementalExportSpecification=window,
    )["ExportDescription"]
    assert default_view["IncrementalExportSpecification"]["ExportViewType"] == "NEW_AND_OLD_IMAGES"
    assert "ExportTime" not in default_view

    def by_key(view: str) -> tuple[dict[str, Any], dict[str, Any]]:
        done = wait_export(ddb, exports[view]["ExportArn"])
        assert done["ExportStatus"] == "COMPLETED"
        assert done["ExportType"] == "INCREMENTAL_EXPORT"
        export = read_export(s3_getter(s3, bucket), done["ExportManifest"])
        for entry in export["files"]:  # the shared data folder
            assert re.fullmatch(
                r"inc/AWSDynamoDB/data/[a-z2-7]{26}\.json\.gz", entry["dataFileS3Key"]
            )
        assert done["ItemCount"] == export["summary"]["itemCount"] == len(export["lines"])
        return {line["Keys"]["pk"]["S"]: line for line in export["lines"]}, export["summary"]

    lines, summary = by_key("NEW_AND_OLD_IMAGES")
    assert set(lines) == {"upd", "del", "ins", "recreate"}
    assert lines["upd"] == {
        "Metadata": {"WriteTimestampMicros": {"N": str(log["upd"])}},
        "Keys": {"pk": {"S": "upd"}},
        "NewImage": {"pk": {"S": "upd"}, "v": {"N": "3"}},
        "OldImage": {"pk": {"S": "upd"}, "v": {"N": "1"}},  # before the window
    }
    assert lines["del"] == {
        "Metadata": {"WriteTimestampMicros": {"N": str(log["del"])}},
        "Keys": {"pk": {"S": "del"}},
        "OldImage": {"pk": {"S": "del"}, "v": {"N": "1"}},
    }
    assert lines["ins"] == {
        "Metadata": {"WriteTimestampMicros": {"N": str(log["ins"])}},
        "Keys": {"pk": {"S": "ins"}},
        "NewImage": {"pk": {"S": "ins"}, "v": {"N": "1"}, "b": {"B": "AQ=="}},
    }
    assert lines["recreate"]["NewImage"] == {"pk": {"S": "recreate"}, "v": {"N": "5"}}
    assert lines["recreate"]["OldImage"] == {"pk": {"S": "recreate"}, "v": {"N": "1"}}
    assert summary["version"] == "2023-08-01"
    assert summary["outputView"] == "NEW_AND_OLD_IMAGES"
    assert summary["exportType"] == "INCREMENTAL_EXPORT"
    assert "exportTime" not in summary
    assert (
        summary["exportFromTime"]
        == window["ExportFromTime"].strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    )
    assert summary["billedSizeBytes"] >= 10 * 1024 * 1024  # AWS's 10 MB minimum

    new_only, summary = by_key("NEW_IMAGE")
    assert summary["outputView"] == "NEW_IMAGE"
    assert set(new_only) == set(lines)
    assert all("OldImage" not in line for line in new_only.values())
    assert new_only["del"] == {
        "Metadata": {"WriteTimestampMicros": {"N": str(log["del"])}},
        "Keys": {"pk": {"S": "del"}},
    }
    assert new_only["upd"]["NewImage"] == lines["upd"]["NewImage"]


def test_incremental_window_validation(ddb: Any, bucket: str, endpoint: str) -> None:
    name, table_arn = make_table(ddb)
    time_control.shift_history(endpoint, name, 30 * HOUR, REGION)
    now = dt.datetime.now(dt.UTC)

    def export(spec: dict[str, Any] | None, **extra: Any) -> str:
        kwargs: dict[str, Any] = {"ExportType": "INCREMENTAL_EXPORT", **extra}
        if spec is not None:
            kwargs["IncrementalExportSpecification"] = spec
        with pytest.raises(ClientError) as excinfo:
            ddb.export_table_to_point_in_time(TableArn=table_arn, S3Bucket=bucket, **kwargs)
        return error_code(excinfo)

    hour = dt.timedelta(hours=1)
    assert export(None) == "ValidationException"
    assert export({"ExportToTime": now - hour}) == "ValidationException"
    too_short = {
        "ExportFromTime": now - hour,
        "ExportToTime": now - hour + dt.timedelta(minutes=14),
    }
    assert export(too_short) == "ValidationException"
    assert export({"ExportFromTime": now - 26 * hour, "ExportToTime": now - hour}) == (
        "ValidationException"
    )
    assert export({"ExportFromTime": now - 2 * hour, "ExportToTime": now - 3 * hour}) == (
        "ValidationException"
    )
    assert export({"ExportFromTime": now - 31 * hour, "ExportToTime": now - 29 * hour}) == (
        "InvalidExportTimeException"  # starts before PITR was enabled
    )
    assert export({"ExportFromTime": now - hour, "ExportToTime": now + hour}) == (
        "InvalidExportTimeException"  # ends in the future
    )
    # Exactly 15 minutes and exactly 24 hours are accepted; no ExportToTime means "now".
    for spec in (
        {"ExportFromTime": now - hour, "ExportToTime": now - hour + dt.timedelta(minutes=15)},
        {"ExportFromTime": now - 25 * hour, "ExportToTime": now - hour},
        {"ExportFromTime": now - hour},
    ):
        started = ddb.export_table_to_point_in_time(
            TableArn=table_arn,
            S3Bucket=bucket,
            ExportType="INCREMENTAL_EXPORT",
            IncrementalExportSpecification=spec,
        )["ExportDescription"]
        assert wait_export(ddb, started["ExportArn"])["ExportStatus"] == "COMPLETED"


# --------------------------------------------------------------------------- listing


def test_list_exports_filters_and_pages(ddb: Any, bucket: str) -> None:
    _, table_arn = make_table(ddb)
    _, other_arn = make_table(ddb)
    arns = [
        ddb.export_table_to_point_in_time(TableArn=table_arn, S3Bucket=bucket)["ExportDescription"][
            "ExportArn"
        ]
        for _ in range(3)
    ]
    other = ddb.export_table_to_point_in_time(TableArn=other_arn, S3Bucket=bucket)[
        "ExportDescription"
    ]["ExportArn"]

    first = ddb.list_exports(TableArn=table_arn, MaxResults=2)
    assert len(first["ExportSummaries"]) == 2 and first["NextToken"]
    second = ddb.list_exports(TableArn=table_arn, MaxResults=2, NextToken=first["NextToken"])
    assert "NextToken" not in second
    summaries = first["ExportSummaries"] + second["ExportSummaries"]
    assert [s["ExportArn"] for s in summaries] == sorted(arns, reverse=True)
    assert all(set(s) == {"ExportArn", "ExportStatus", "ExportType"} for s in summaries)
    assert {s["ExportType"] for s in summaries} == {"FULL_EXPORT"}

    every = []
    kwargs: dict[str, Any] = {"MaxResults": 25}
    while True:
        page = ddb.list_exports(**kwargs)
        every += [s["ExportArn"] for s in page["ExportSummaries"]]
        if "NextToken" not in page:
            break
        kwargs["NextToken"] = page["NextToken"]
    assert set(arns) | {other} <= set(every)

    with pytest.raises(ClientError) as excinfo:
        ddb.list_exports(TableArn=table_arn, MaxResults=26)
    assert error_code(excinfo) == "ValidationException"
    for arn in [*arns, other]:
        wait_export(ddb, arn)
    statuses = {s["ExportStatus"] for s in ddb.list_exports(TableArn=table_arn)["ExportSummaries"]}
    assert statuses == {"COMPLETED"}


# --------------------------------------------------------------------------- samples


@pytest.mark.parametrize("export_type", ["dynamodb_full", "dynamodb_incremental"])
def test_reader_reads_the_aws_format_samples(export_type: str, aws_samples: AwsSamples) -> None:
    root = getattr(aws_samples, export_type)
    export = read_export(sample_getter(root), sample_summary_key(root))
    assert export["lines"]
    assert sum(f["itemCount"] for f in export["files"]) == len(export["lines"])


def test_output_has_the_samples_shape(
    ddb: Any, s3: Any, bucket: str, endpoint: str, aws_samples: AwsSamples
) -> None:
    """A reader built on the samples finds the same fields in our output."""
    _, table_arn, changes_at = _incremental_fixture(ddb, endpoint)
    full = ddb.export_table_to_point_in_time(TableArn=table_arn, S3Bucket=bucket, S3Prefix="x")
    incremental = ddb.export_table_to_point_in_time(
        TableArn=table_arn,
        S3Bucket=bucket,
        S3Prefix="x",
        ExportType="INCREMENTAL_EXPORT",
        IncrementalExportSpecification={
            "ExportFromTime": changes_at - 1800,
            "ExportToTime": changes_at + 1800,
        },
    )
    for root, started in (
        (aws_samples.dynamodb_full, full),
        (aws_samples.dynamodb_incremental, incremental),
    ):
        sample = read_export(sample_getter(root), sample_summary_key(root))
        done = wait_export(ddb, started["ExportDescription"]["ExportArn"])
        ours = read_export(s3_getter(s3, bucket), done["ExportManifest"])
        assert set(ours["summary"]) == set(sample["summary"])
        # Optional settings not requested (SSE here) are null, as s3SseKmsKeyId is in the samples.
        optional = {"s3SseAlgorithm", "s3SseKmsKeyId"}
        assert {type(v) for k, v in ours["summary"].items() if k not in optional} <= {str, int}
        assert {tuple(sorted(f)) for f in ours["files"]} == {
            tuple(sorted(f)) for f in sample["files"]
        }
        sample_shapes = {tuple(line) for line in sample["lines"]}
        our_shapes = {tuple(line) for line in ours["lines"]}
        assert our_shapes == sample_shapes  # same top-level keys, same order


# --------------------------------------------------------------------------- time control


def test_shift_history_moves_the_pitr_window(ddb: Any, endpoint: str) -> None:
    name, _ = make_table(ddb)
    before = ddb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
    earliest = before["PointInTimeRecoveryDescription"]["EarliestRestorableDateTime"]
    created = ddb.describe_table(TableName=name)["Table"]["CreationDateTime"]
    result = time_control.shift_history(endpoint, name, 86400, REGION)
    assert result["TableName"] == name
    after = ddb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
    shifted = after["PointInTimeRecoveryDescription"]["EarliestRestorableDateTime"]
    assert abs((earliest - shifted).total_seconds() - 86400) < 1
    latest = after["PointInTimeRecoveryDescription"]["LatestRestorableDateTime"]
    assert 290 < time.time() - latest.timestamp() < 330  # "typically 5 minutes before now"
    moved = ddb.describe_table(TableName=name)["Table"]["CreationDateTime"]
    assert abs((created - moved).total_seconds() - 86400) < 1


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        ({"TableName": "NoSuchTable", "Seconds": 5, "Region": REGION}, 404),
        ({"TableName": "x", "Seconds": "five", "Region": REGION}, 400),
        ({"Seconds": 5, "Region": REGION}, 400),
    ],
)
def test_shift_history_route_rejects_bad_requests(
    endpoint: str, payload: dict[str, Any], status: int
) -> None:
    request = urllib.request.Request(
        endpoint + SHIFT_HISTORY_PATH, data=json.dumps(payload).encode(), method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(request, timeout=10)
    assert excinfo.value.code == status
    assert json.loads(excinfo.value.read())["error"]


def test_negative_shift_is_refused(ddb: Any, endpoint: str) -> None:
    name, _ = make_table(ddb)
    with pytest.raises(time_control.TimeControlError, match="HTTP 400"):
        time_control.shift_history(endpoint, name, -10, REGION)


def test_disabling_pitr_breaks_the_history(ddb: Any, bucket: str, endpoint: str) -> None:
    name, table_arn = make_table(ddb)
    time_control.shift_history(endpoint, name, 2 * HOUR, REGION)
    two_hours_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=110)
    ddb.export_table_to_point_in_time(TableArn=table_arn, S3Bucket=bucket, ExportTime=two_hours_ago)
    off = {"PointInTimeRecoveryEnabled": False}
    ddb.update_continuous_backups(TableName=name, PointInTimeRecoverySpecification=off)
    with pytest.raises(ClientError) as excinfo:
        ddb.export_table_to_point_in_time(TableArn=table_arn, S3Bucket=bucket)
    assert error_code(excinfo) == "PointInTimeRecoveryUnavailableException"
    on = {"PointInTimeRecoveryEnabled": True}
    ddb.update_continuous_backups(TableName=name, PointInTimeRecoverySpecification=on)
    with pytest.raises(ClientError) as excinfo:  # the window restarts at the re-enable
        ddb.export_table_to_point_in_time(
            TableArn=table_arn, S3Bucket=bucket, ExportTime=two_hours_ago
        )
    assert error_code(excinfo) == "InvalidExportTimeException"


def test_export_after_a_rolled_back_transaction(ddb: Any, s3: Any, bucket: str) -> None:
    """moto undoes a failed transaction by swapping in a copy of the table: the
    export must read the table that is there now, and the log must not fork."""
    name, table_arn = make_table(ddb, range_key=False)
    ddb.put_item(TableName=name, Item={"pk": {"S": "a"}, "v": {"N": "1"}})
    with pytest.raises(ClientError):
        ddb.transact_write_items(
            TransactItems=[
                {
                    "Update": {
                        "TableName": name,
                        "Key": {"pk": {"S": "a"}},
                        "UpdateExpression": "SET v = :v",
                        "ExpressionAttributeValues": {":v": {"N": "2"}},
                    }
                },
                {
                    "ConditionCheck": {
                        "TableName": name,
                        "Key": {"pk": {"S": "zz"}},
                        "ConditionExpression": "attribute_exists(pk)",
                    }
                },
            ]
        )
    ddb.put_item(TableName=name, Item={"pk": {"S": "b"}, "v": {"N": "3"}})
    arn = ddb.export_table_to_point_in_time(TableArn=table_arn, S3Bucket=bucket)[
        "ExportDescription"
    ]["ExportArn"]
    done = wait_export(ddb, arn)
    lines = read_export(s3_getter(s3, bucket), done["ExportManifest"])["lines"]
    assert sorted((i["Item"]["pk"]["S"], i["Item"]["v"]["N"]) for i in lines) == [
        ("a", "1"),
        ("b", "3"),
    ]
