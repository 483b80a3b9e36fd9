"""The fault proxy itself: it forwards faithfully and fires each fault as told."""

from __future__ import annotations

import threading
import time

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from export_pipeline_tests.faults.proxy import bigquery_error, dynamodb_error, reset, s3_error


def _s3(local_cloud, endpoint: str, attempts: int):
    return boto3.client(
        "s3",
        region_name="eu-west-1",
        endpoint_url=endpoint,
        aws_access_key_id=local_cloud.aws_access_key_id,
        aws_secret_access_key=local_cloud.aws_secret_access_key,
        config=Config(retries={"total_max_attempts": attempts, "mode": "standard"}),
    )


def test_forwards_and_fails_first_n(local_cloud, aws_proxy, unique_name, pipeline_config):
    bucket = pipeline_config.aws.export_bucket
    s3 = _s3(local_cloud, aws_proxy.url, attempts=1)
    s3.put_object(Bucket=bucket, Key=f"{unique_name}/a", Body=b"x" * 5000)
    aws_proxy.add(s3_error(503, "SlowDown"), method="GET", path=rf"/{unique_name}/a$", times=1)
    with pytest.raises(ClientError) as raised:
        s3.get_object(Bucket=bucket, Key=f"{unique_name}/a")
    assert raised.value.response["Error"]["Code"] == "SlowDown"
    assert s3.get_object(Bucket=bucket, Key=f"{unique_name}/a")["Body"].read() == b"x" * 5000
    assert [f.action for f in aws_proxy.faults()] == ["respond 503"]


def test_reset_mid_body_breaks_the_stream(local_cloud, aws_proxy, unique_name, pipeline_config):
    bucket = pipeline_config.aws.export_bucket
    s3 = _s3(local_cloud, aws_proxy.url, attempts=1)
    s3.put_object(Bucket=bucket, Key=f"{unique_name}/b", Body=b"y" * 100_000)
    aws_proxy.add(reset("mid_body", after_bytes=1000), method="GET", path=rf"/{unique_name}/b$")
    with pytest.raises(Exception) as raised:
        s3.get_object(Bucket=bucket, Key=f"{unique_name}/b")["Body"].read()
    assert "reset" in repr(raised.value).lower() or "incomplete" in repr(raised.value).lower()


def test_dynamodb_throttle_shape(local_cloud, aws_proxy):
    ddb = boto3.client(
        "dynamodb",
        region_name="eu-west-1",
        endpoint_url=aws_proxy.url,
        aws_access_key_id=local_cloud.aws_access_key_id,
        aws_secret_access_key=local_cloud.aws_secret_access_key,
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )
    aws_proxy.add(dynamodb_error(), target=r"\.ListTables$")
    with pytest.raises(ClientError) as raised:
        ddb.list_tables()
    assert raised.value.response["Error"]["Code"] == "ThrottlingException"
    assert "TableNames" in ddb.list_tables()


def test_bigquery_query_retried_after_503_and_reset(local_cloud, bigquery_proxy):
    client = bigquery.Client(
        project=local_cloud.bigquery_project,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": bigquery_proxy.url},
    )
    bigquery_proxy.add(bigquery_error(503), method="POST", path=r"/jobs", times=1)
    bigquery_proxy.add(reset("after"), method="GET", path=r"/queries/|/jobs/", times=1)
    rows = list(client.query("SELECT 41 + 1 AS answer").result())
    assert rows[0]["answer"] == 42
    assert [f.action for f in bigquery_proxy.faults()] == ["respond 503", "reset after"]


@pytest.mark.parametrize("when", ["before", "after"])
def test_hold_keeps_the_request_until_released(
    local_cloud, aws_proxy, unique_name, pipeline_config, when
):
    """`before`: the cloud never sees the request; `after`: it did the work, no answer came."""
    bucket = pipeline_config.aws.export_bucket
    s3 = _s3(local_cloud, aws_proxy.url, attempts=1)
    gate = aws_proxy.hold(when, method="PUT", path=rf"/{unique_name}/held$")
    outcome: list[BaseException | None] = []

    def put() -> None:
        try:
            s3.put_object(Bucket=bucket, Key=f"{unique_name}/held", Body=b"z")
            outcome.append(None)
        except Exception as exc:  # the connection is reset on release
            outcome.append(exc)

    worker = threading.Thread(target=put)
    worker.start()
    assert gate.wait(10)
    time.sleep(0.3)
    assert worker.is_alive() and not outcome  # still waiting for its answer
    gate.release()
    worker.join(10)
    assert outcome and outcome[0] is not None  # it never got one
    direct = _s3(local_cloud, local_cloud.aws_endpoint_url, attempts=1)
    stored = direct.list_objects_v2(Bucket=bucket, Prefix=f"{unique_name}/held")
    assert stored.get("KeyCount", 0) == (1 if when == "after" else 0)
    assert [f.action for f in aws_proxy.faults()] == [f"hold {when}"]
