"""AWS's API, not the files in the bucket, says which export this is and what time it is of.

Someone who can write to the export bucket can rewrite `manifest-summary.json`;
nobody but AWS writes DescribeExport's answer. A manifest that disagrees with
it fails the load, naming the file and the field, and the high-water mark
stays where it was.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest
from dagster import DagsterInstance, materialize
from hypothesis import given
from hypothesis import strategies as st

from export_pipeline import bigquery as core
from export_pipeline.dynamodb.export_files import (
    FULL_EXPORT,
    INCREMENTAL_EXPORT,
    ExportManifest,
    ManifestError,
    checked_against_api,
)
from export_pipeline_tests.dynamodb._pipeline_helpers import (
    BUCKET,
    assets_for,
    create_table,
    make_config,
    materialization_metadata,
    run,
    table_id,
)
from export_pipeline_tests.support.principals import pipeline_resources

TABLE_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/Orders"
EXPORT_ARN = f"{TABLE_ARN}/export/01700000000000-abcdef12"
AT = datetime(2026, 11, 26, 10, 0, 0, 123000, tzinfo=UTC)


def _manifest(incremental: bool) -> ExportManifest:
    return ExportManifest(
        bucket="b",
        summary_key="AWSDynamoDB/01700000000000-abcdef12/manifest-summary.json",
        files_key="AWSDynamoDB/01700000000000-abcdef12/manifest-files.json",
        export_arn=EXPORT_ARN,
        table_arn=TABLE_ARN,
        export_type=INCREMENTAL_EXPORT if incremental else FULL_EXPORT,
        item_count=3,
        billed_size_bytes=10,
        output_format="DYNAMODB_JSON",
        export_time=None if incremental else AT,
        export_from_time=AT - timedelta(hours=1) if incremental else None,
        export_to_time=AT if incremental else None,
        files=(),
    )


def _description(incremental: bool) -> dict:
    description = {
        "ExportArn": EXPORT_ARN,
        "TableArn": TABLE_ARN,
        "ExportType": INCREMENTAL_EXPORT if incremental else FULL_EXPORT,
        "ItemCount": 3,
    }
    # DescribeExport states times to the microsecond in the local cloud, the
    # millisecond in AWS: the manifest's milliseconds must agree.
    if incremental:
        description["IncrementalExportSpecification"] = {
            "ExportFromTime": AT - timedelta(hours=1, microseconds=-456),
            "ExportToTime": AT + timedelta(microseconds=789),
        }
    else:
        description["ExportTime"] = AT + timedelta(microseconds=789)
    return description


@pytest.mark.parametrize("incremental", [False, True])
def test_an_agreeing_manifest_is_kept_with_the_apis_times(incremental: bool) -> None:
    manifest = _manifest(incremental)
    assert checked_against_api(manifest, _description(incremental)) == manifest


_TAMPERED = {
    "exportArn": ("export_arn", EXPORT_ARN.replace("abcdef12", "00000000")),
    "tableArn": ("table_arn", TABLE_ARN + "2"),
    "itemCount": ("item_count", 4),
    "exportTime": ("export_time", datetime(2099, 1, 1, tzinfo=UTC)),
    "exportFromTime": ("export_from_time", AT - timedelta(days=1)),
    "exportToTime": ("export_to_time", datetime(2099, 1, 1, tzinfo=UTC)),
}
_FIELDS = {
    False: ["exportArn", "tableArn", "itemCount", "exportTime", "exportType"],
    True: ["exportArn", "tableArn", "itemCount", "exportFromTime", "exportToTime", "exportType"],
}


@given(data=st.data(), incremental=st.booleans())
def test_a_manifest_that_disagrees_with_describe_export_fails_naming_file_and_field(
    data: st.DataObject, incremental: bool
) -> None:
    fields = data.draw(st.sets(st.sampled_from(_FIELDS[incremental]), min_size=1))
    changes = {}
    for name in fields:
        if name == "exportType":
            changes["export_type"] = FULL_EXPORT if incremental else INCREMENTAL_EXPORT
        else:
            attribute, value = _TAMPERED[name]
            changes[attribute] = value
    tampered = dataclasses.replace(_manifest(incremental), **changes)
    with pytest.raises(ManifestError) as caught:
        checked_against_api(tampered, _description(incremental))
    message = str(caught.value)
    assert message.startswith(f"{tampered.summary_uri}: field '")
    named = message.split("field '", 1)[1].split("'", 1)[0]
    assert named in fields and "DescribeExport" in message


def test_describe_export_without_its_time_fails() -> None:
    description = _description(False)
    del description["ExportTime"]
    with pytest.raises(ManifestError, match="ExportTime"):
        checked_against_api(_manifest(False), description)


def test_a_manifest_exporttime_of_2099_neither_loads_nor_moves_the_mark(
    aws_clients, bigquery_client, unique_name
) -> None:
    """The issue's case: a seed whose manifest says 2099 would have set the mark to 2099."""
    table = f"trust-{unique_name}"
    create_table(aws_clients.dynamodb, table, [{"pk": {"S": "a"}, "n": {"N": "1"}}])
    config = make_config(table, mode="incremental")
    instance = DagsterInstance.ephemeral()
    export_asset, _ = assets_for(config)
    exported = materialize(
        list(assets_for(config)),
        resources=pipeline_resources(config),
        instance=instance,
        selection=[export_asset.key],
    )
    summary_uri = materialization_metadata(exported, export_asset.key)["manifest_uris"][0]
    summary_key = summary_uri.removeprefix(f"s3://{BUCKET}/")
    summary = json.loads(aws_clients.s3.get_object(Bucket=BUCKET, Key=summary_key)["Body"].read())
    summary["exportTime"] = "2099-01-01T00:00:00.000Z"
    aws_clients.s3.put_object(Bucket=BUCKET, Key=summary_key, Body=json.dumps(summary).encode())

    result = run(config, instance, only_bigquery=True, raise_on_error=False)
    assert not result.success
    failures = result.get_step_failure_events()
    text = " ".join(
        f.step_failure_data.error.message for f in failures if f.step_failure_data.error
    )
    assert summary_uri in text and "'exportTime'" in text, text
    arn = aws_clients.dynamodb.describe_table(TableName=table)["Table"]["TableArn"]
    target = core.TableId.parse(table_id(table))
    assert core.read_watermark(bigquery_client, target, arn) is None
