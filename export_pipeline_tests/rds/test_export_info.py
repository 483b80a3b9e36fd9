"""export_info_<id>.json must agree with DescribeExportTasks, AWS's API, or nothing loads."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from export_pipeline.rds.export_files import (
    ExportFilesError,
    ExportLocation,
    checked_export_info,
)
from export_pipeline_tests.support.aws_samples import (
    ACCOUNT,
    BUCKET,
    PREFIX,
    RDS_EXPORT_ID,
    RDS_SNAPSHOT_TIME,
    REGION,
)

SOURCE_ARN = f"arn:aws:rds:{REGION}:{ACCOUNT}:snapshot:rds:shopdb-2025-11-26-00-05"


def _task() -> dict:
    """The sample export as DescribeExportTasks describes it (times to the microsecond)."""
    return {
        "ExportTaskIdentifier": RDS_EXPORT_ID,
        "SourceArn": SOURCE_ARN,
        "SnapshotTime": RDS_SNAPSHOT_TIME + dt.timedelta(microseconds=250),
        "S3Bucket": BUCKET,
        "S3Prefix": PREFIX,
        "Status": "COMPLETE",
    }


@pytest.fixture
def sample_location(aws_clients, pipeline_config, aws_samples) -> ExportLocation:
    prefix = f"info-{uuid.uuid4().hex[:8]}/exports"
    root = aws_samples.rds_mysql / "exports"
    for path in root.rglob("export_info_*.json"):
        key = f"{prefix}/{path.relative_to(root)}"
        aws_clients.s3.upload_file(str(path), pipeline_config.aws.export_bucket, key)
    return ExportLocation(pipeline_config.aws.export_bucket, prefix, RDS_EXPORT_ID)


def _with_prefix(task: dict, location: ExportLocation) -> dict:
    return {**task, "S3Bucket": location.bucket, "S3Prefix": location.prefix}


def _rewrite(aws_clients, location: ExportLocation, **changes) -> None:
    key = f"{location.root}/export_info_{RDS_EXPORT_ID}.json"
    info = json.loads(aws_clients.s3.get_object(Bucket=location.bucket, Key=key)["Body"].read())
    aws_clients.s3.put_object(
        Bucket=location.bucket, Key=key, Body=json.dumps({**info, **changes}).encode()
    )


def test_the_sample_agrees_with_its_task(aws_clients, sample_location) -> None:
    _rewrite(
        aws_clients,
        sample_location,
        s3Bucket=sample_location.bucket,
        s3Prefix=sample_location.prefix,
    )
    task = _with_prefix(_task(), sample_location)
    checked_export_info(aws_clients.s3, sample_location, task)


_TAMPERED = {
    "snapshotTime": "2099-01-01T00:00:00.000Z",
    "sourceArn": SOURCE_ARN.replace("shopdb", "otherdb"),
    "exportTaskIdentifier": "someone-elses-export",
    "s3Bucket": "another-bucket",
}


@given(st.sampled_from(sorted(_TAMPERED)))
def test_a_disagreeing_field_fails_naming_the_file_and_field(field: str) -> None:
    from export_pipeline.rds.export_files import export_info_disagreement

    info = {
        "exportTaskIdentifier": RDS_EXPORT_ID,
        "sourceArn": SOURCE_ARN,
        "snapshotTime": "2025-11-26T00:05:00.000Z",
        "s3Bucket": BUCKET,
        "s3Prefix": PREFIX,
        field: _TAMPERED[field],
    }
    reason = export_info_disagreement(info, _task())
    assert reason is not None and reason.startswith(f"field {field!r} is ")
    assert "DescribeExportTasks" in reason


def test_a_tampered_snapshot_time_fails_the_load(aws_clients, sample_location) -> None:
    _rewrite(
        aws_clients,
        sample_location,
        s3Bucket=sample_location.bucket,
        s3Prefix=sample_location.prefix,
        snapshotTime="2099-01-01T00:00:00.000Z",
    )
    with pytest.raises(ExportFilesError) as caught:
        checked_export_info(aws_clients.s3, sample_location, _with_prefix(_task(), sample_location))
    message = str(caught.value)
    key = f"{sample_location.root}/export_info_{RDS_EXPORT_ID}.json"
    assert message.startswith(f"s3://{sample_location.bucket}/{key}: field 'snapshotTime'")
    assert "2099" in message and "nothing was loaded" in message
