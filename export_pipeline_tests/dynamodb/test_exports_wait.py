"""Waiting for exports: backoff, cap, timeout, FAILED — and real exports in the local cloud."""

from __future__ import annotations

from typing import Any

import pytest

from export_pipeline.dynamodb.exports import (
    ExportFailedError,
    ExportRequest,
    ExportTimeoutError,
    start_export,
    wait_for_export,
)
from export_pipeline_tests.dynamodb._pipeline_helpers import BUCKET, create_table


class _ScriptedDescribe:
    """Stand-in DescribeExport (no server can be made to stay IN_PROGRESS for minutes on cue)."""

    def __init__(self, statuses: list[dict[str, Any]]) -> None:
        self.statuses = statuses
        self.calls = 0

    def describe_export(self, ExportArn: str) -> dict[str, Any]:
        status = self.statuses[min(self.calls, len(self.statuses) - 1)]
        self.calls += 1
        return {"ExportDescription": {"ExportArn": ExportArn, **status}}


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


ARN = "arn:aws:dynamodb:eu-west-1:123456789012:table/Orders/export/01-ab"


def test_backoff_doubles_up_to_the_cap() -> None:
    client = _ScriptedDescribe(
        [{"ExportStatus": "IN_PROGRESS"}] * 7 + [{"ExportStatus": "COMPLETED"}]
    )
    clock = _Clock()
    result = wait_for_export(
        client,
        ARN,
        timeout_seconds=3600,
        max_interval_seconds=10,
        sleep=clock.sleep,
        clock=lambda: clock.now,
    )
    assert result["ExportStatus"] == "COMPLETED"
    assert clock.sleeps == [1, 2, 4, 8, 10, 10, 10]


def test_timeout_is_honoured() -> None:
    client = _ScriptedDescribe([{"ExportStatus": "IN_PROGRESS"}])
    clock = _Clock()
    with pytest.raises(ExportTimeoutError, match="still IN_PROGRESS"):
        wait_for_export(
            client,
            ARN,
            timeout_seconds=20,
            max_interval_seconds=8,
            sleep=clock.sleep,
            clock=lambda: clock.now,
        )
    assert sum(clock.sleeps) == 20  # the last wait is cut to the deadline


def test_failed_export_stops_at_once_with_code_and_message() -> None:
    client = _ScriptedDescribe(
        [
            {"ExportStatus": "IN_PROGRESS"},
            {
                "ExportStatus": "FAILED",
                "TableArn": "arn:aws:dynamodb:eu-west-1:123456789012:table/Orders",
                "FailureCode": "S3NoSuchBucket",
                "FailureMessage": "The specified bucket does not exist",
            },
        ]
    )
    clock = _Clock()
    with pytest.raises(ExportFailedError) as caught:
        wait_for_export(
            client,
            ARN,
            timeout_seconds=3600,
            max_interval_seconds=60,
            sleep=clock.sleep,
            clock=lambda: clock.now,
        )
    assert caught.value.table == "Orders"
    assert caught.value.failure_code == "S3NoSuchBucket"
    assert "The specified bucket does not exist" in str(caught.value)
    assert client.calls == 2


def test_real_export_completes_and_its_manifest_is_named(aws_clients, unique_name) -> None:
    table = f"wait-{unique_name}"
    create_table(aws_clients.dynamodb, table, [{"pk": {"S": "a"}}])
    ddb = aws_clients.dynamodb
    arn = ddb.describe_table(TableName=table)["Table"]["TableArn"]
    started = start_export(ddb, ExportRequest(arn, BUCKET, f"exports/t/{table}"), "run-x")
    done = wait_for_export(ddb, started["ExportArn"], timeout_seconds=60, max_interval_seconds=1)
    assert done["ExportStatus"] == "COMPLETED" and done["ItemCount"] == 1
    assert done["ExportManifest"].endswith("/manifest-summary.json")
