"""A brand-new run while another run's export of the table is IN_PROGRESS waits for that one.

The other run's export is started as the other run starts it
(`start_export` with its own root run id, so its own ClientToken). It must
still be running when the new run looks, so these tests use an in-process
local-cloud AWS server (the same emulation code over real HTTP), where one
export can be made to run for seconds while the others finish at once;
BigQuery is the session's emulator.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from dagster import DagsterInstance, materialize
from hypothesis import given
from hypothesis import strategies as st

from export_pipeline import bigquery as core
from export_pipeline.dynamodb.export_files import INCREMENTAL_EXPORT
from export_pipeline.dynamodb.exports import ExportRequest, start_export
from export_pipeline.local_cloud import dynamodb_exports
from export_pipeline.local_cloud.dynamodb_time_control import shift_history
from export_pipeline.s3_locations import S3Location
from export_pipeline_tests.dynamodb._pipeline_helpers import (
    BUCKET,
    REGION,
    assets_for,
    bigquery_rows,
    create_table,
    make_config,
    materialization_metadata,
    table_id,
)
from export_pipeline_tests.faults.proxy import dynamodb_error, fault_proxy, resources_through
from export_pipeline_tests.support.local_cloud import in_process_aws_server
from export_pipeline_tests.support.principals import pipeline_resources

# Long enough for the new run to reach its ListExports call; the other exports take 0.2 s.
OTHER_EXPORT_SECONDS = 5.0
QUICK_EXPORT_SECONDS = 0.2


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with in_process_aws_server(
        tmp_path_factory.mktemp("aws"), export_seconds=QUICK_EXPORT_SECONDS
    ) as url:
        boto3.client("s3", **_client_settings(url)).create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        yield url


def _client_settings(url: str) -> dict[str, Any]:
    return {
        "endpoint_url": url,
        "region_name": REGION,
        "aws_access_key_id": "AKIARUNNINGEXPORTS01",
        "aws_secret_access_key": "fake",
    }


@pytest.fixture(scope="module")
def ddb(endpoint: str) -> Any:
    return boto3.client("dynamodb", **_client_settings(endpoint))


@contextmanager
def _slow_exports() -> Iterator[None]:
    """Exports started inside stay IN_PROGRESS for OTHER_EXPORT_SECONDS (read per export)."""
    previous = dynamodb_exports.export_seconds_override
    dynamodb_exports.export_seconds_override = OTHER_EXPORT_SECONDS
    try:
        yield
    finally:
        dynamodb_exports.export_seconds_override = previous


def _run(config, instance: DagsterInstance, endpoint: str):
    return materialize(
        list(assets_for(config)),
        resources=resources_through(pipeline_resources(config), aws=endpoint, bigquery=None),
        instance=instance,
    )


def _messages(instance: DagsterInstance, run_id: str) -> list[str]:
    return [entry.user_message for entry in instance.all_logs(run_id)]


def _export_arns(ddb: Any, table: str) -> list[str]:
    arn = ddb.describe_table(TableName=table)["Table"]["TableArn"]
    return [s["ExportArn"] for s in ddb.list_exports(TableArn=arn)["ExportSummaries"]]


def _items(*keys: str) -> list[dict]:
    return [{"pk": {"S": k}, "n": {"N": str(i)}} for i, k in enumerate(keys)]


def _mark(bigquery_client: Any, ddb: Any, table: str) -> core.Watermark:
    arn = ddb.describe_table(TableName=table)["Table"]["TableArn"]
    mark = core.read_watermark(bigquery_client, core.TableId.parse(table_id(table)), arn)
    assert mark is not None
    return mark


def test_running_export_to_another_prefix_is_not_adopted(
    local_cloud, ddb, endpoint, bigquery_client, unique_name
):
    table = f"elsewhere-{unique_name}"
    create_table(ddb, table, _items("a"))
    config = make_config(table)
    table_arn = ddb.describe_table(TableName=table)["Table"]["TableArn"]
    with _slow_exports():
        other = start_export(
            ddb, ExportRequest(table_arn, BUCKET, f"adhoc/{table}"), "an-operator's-export"
        )

    instance = DagsterInstance.ephemeral()
    result = _run(config, instance, endpoint)

    assert result.success
    export_asset, _ = assets_for(config)
    meta = materialization_metadata(result, export_asset.key)
    assert meta["export_arn"] != other["ExportArn"] and meta["adopted_export_arns"] == []
    assert sorted(_export_arns(ddb, table)) == sorted([other["ExportArn"], meta["export_arn"]])
    # The other export was still running when the run started its own.
    other_now = ddb.describe_export(ExportArn=other["ExportArn"])["ExportDescription"]
    own = ddb.describe_export(ExportArn=meta["export_arn"])["ExportDescription"]
    assert own["StartTime"] < other_now.get("EndTime", own["StartTime"] + timedelta(days=1))
    messages = _messages(instance, result.run_id)
    assert not any("already running" in m for m in messages)
    [passed_over] = [m for m in messages if "is not used" in m]
    assert other["ExportArn"] in passed_over and "aws.readable_s3_locations" in passed_over


def test_a_lambdas_running_export_where_the_pipeline_may_read_is_waited_for_and_loaded(
    local_cloud, ddb, endpoint, bigquery_client, unique_name
):
    """The scheduled-Lambda design's export (bucket root, no token) stands in for the run's."""
    table = f"lambda-{unique_name}"
    create_table(ddb, table, _items("a", "b"))
    table_arn = ddb.describe_table(TableName=table)["Table"]["TableArn"]
    with _slow_exports():
        theirs = ddb.export_table_to_point_in_time(
            TableArn=table_arn, S3Bucket=BUCKET, S3Prefix="", ExportFormat="DYNAMODB_JSON"
        )["ExportDescription"]["ExportArn"]
    base = make_config(table)
    config = base.model_copy(
        update={"aws": base.aws.model_copy(update={"readable_s3_locations": [f"s3://{BUCKET}"]})}
    )

    instance = DagsterInstance.ephemeral()
    result = _run(config, instance, endpoint)

    export_asset, _ = assets_for(config)
    meta = materialization_metadata(result, export_asset.key)
    assert meta["export_arn"] == theirs and meta["adopted_export_arns"] == [theirs]
    assert _export_arns(ddb, table) == [theirs]  # one export of the table, theirs
    assert sorted(bigquery_rows(bigquery_client, table)) == ["a", "b"]


def test_new_incremental_run_adopts_the_window_that_starts_at_the_mark(
    local_cloud, ddb, endpoint, bigquery_client, unique_name
):
    table = f"adoptinc-{unique_name}"
    create_table(ddb, table, _items("a", "b"))
    shift_history(endpoint, table, 2 * 3600, REGION)
    config = make_config(table, mode="incremental")
    instance = DagsterInstance.ephemeral()
    assert _run(config, instance, endpoint).success  # the full seed sets the mark
    # As if the last run had been an hour ago (see test_incremental._move_mark_back).
    mark = _mark(bigquery_client, ddb, table)
    state = core.state_table_for(core.TableId.parse(table_id(table)))
    start = (mark.exported_to - timedelta(hours=1)).replace(microsecond=0)
    bigquery_client.query(
        f"UPDATE {state.sql} SET exported_to = TIMESTAMP '{start:%Y-%m-%d %H:%M:%S}+00' "
        f"WHERE source_key = '{mark.source_key}'"
    ).result()
    ddb.put_item(TableName=table, Item={"pk": {"S": "c"}, "n": {"N": "7"}})
    ddb.delete_item(TableName=table, Key={"pk": {"S": "a"}})
    # AWS keeps milliseconds: an end cut to the delete's own millisecond would fall
    # before the delete and leave it out of the window (seen once in CI).
    time.sleep(0.002)
    # The other run planned [mark, its now) a moment before this run was created.
    now = datetime.now(UTC)
    end = now.replace(microsecond=now.microsecond // 1000 * 1000)  # AWS keeps milliseconds
    table_arn = ddb.describe_table(TableName=table)["Table"]["TableArn"]
    prefix = f"exports/dynamodb/{table}"
    request = ExportRequest(table_arn, BUCKET, prefix, INCREMENTAL_EXPORT, start, end)
    exports_before = _export_arns(ddb, table)
    with _slow_exports():
        other = start_export(ddb, request, f"other-root-{uuid.uuid4().hex[:6]}")

    result = _run(config, instance, endpoint)

    assert result.success
    assert sorted(_export_arns(ddb, table)) == sorted([*exports_before, other["ExportArn"]])
    export_asset, _ = assets_for(config)
    meta = materialization_metadata(result, export_asset.key)
    assert meta["export_strategy"] == "incremental"
    assert meta["export_arns"] == [other["ExportArn"]] == meta["adopted_export_arns"]
    assert meta["export_from_time"] == start.isoformat()
    assert meta["export_to_time"] == end.isoformat()
    assert sorted(bigquery_rows(bigquery_client, table)) == ["b", "c"]
    after = _mark(bigquery_client, ddb, table)
    assert after.exported_to == end  # the mark ends where the adopted window ends
    assert after.export_arn == other["ExportArn"]
    messages = _messages(instance, result.run_id)
    assert any(m.startswith(f"export {other['ExportArn']} of {table} is already") for m in messages)


TABLE_ENV = "EXPORT_PIPELINE_TEST_ADOPT_TABLE"
ENDPOINT_ENV = "EXPORT_PIPELINE_TEST_ADOPT_ENDPOINT"


def adopting_job():
    """The re-execution test's job, importable so Dagster can rebuild it (reconstructable)."""
    from dagster import Definitions, define_asset_job, in_process_executor

    from export_pipeline.dynamodb.source import DynamoDBSource
    from export_pipeline.graph.assets import build_source_assets

    config = make_config(os.environ[TABLE_ENV])
    resources = pipeline_resources(config)
    defs = Definitions(
        assets=build_source_assets(DynamoDBSource(config)),
        jobs=[define_asset_job("adopting", executor_def=in_process_executor)],
        resources=resources_through(resources, aws=os.environ[ENDPOINT_ENV], bigquery=None),
    )
    return defs.resolve_job_def("adopting")


def test_new_run_waits_for_the_running_full_export_and_so_does_its_reexecution(
    local_cloud, ddb, endpoint, bigquery_client, unique_name, monkeypatch, tmp_path
):
    from dagster import ReexecutionOptions, execute_job, reconstructable

    table = f"adopt-{unique_name}"
    create_table(ddb, table, _items("a", "b"))
    monkeypatch.setenv(TABLE_ENV, table)
    monkeypatch.setenv(ENDPOINT_ENV, endpoint)
    table_arn = ddb.describe_table(TableName=table)["Table"]["TableArn"]
    with _slow_exports():
        other = start_export(
            ddb, ExportRequest(table_arn, BUCKET, f"exports/dynamodb/{table}"), "other-root-run"
        )
    export_key = assets_for(make_config(table))[0].key
    with DagsterInstance.local_temp(str(tmp_path)) as instance:
        job = reconstructable(adopting_job)
        with execute_job(job, instance) as first:
            assert first.success
            meta = materialization_metadata(first, export_key)
        assert _export_arns(ddb, table) == [other["ExportArn"]]  # no second export
        assert meta["export_arn"] == other["ExportArn"]
        assert meta["adopted_export_arns"] == [other["ExportArn"]]
        assert sorted(bigquery_rows(bigquery_client, table)) == ["a", "b"]
        expected = f"export {other['ExportArn']} of {table} is already running (started "
        [line] = [m for m in _messages(instance, first.run_id) if m.startswith(expected)]
        assert line.endswith("waiting for it instead of starting a second one")

        # The adopted export is COMPLETED now. A re-execution (the worker died while
        # waiting, say) is the same run: it takes that export again, starts none.
        options = ReexecutionOptions(parent_run_id=first.run_id)
        with execute_job(job, instance, reexecution_options=options) as again:
            assert again.success
            assert materialization_metadata(again, export_key)["export_arn"] == other["ExportArn"]
        messages = _messages(instance, again.run_id)
    assert _export_arns(ddb, table) == [other["ExportArn"]]
    assert any("which an earlier attempt of this run waited for" in m for m in messages)


def test_without_list_exports_permission_the_run_warns_and_starts_its_own(
    local_cloud, ddb, endpoint, bigquery_client, unique_name
):
    """AccessDenied on ListExports (the proxy answers as AWS would): not fatal, but said."""
    table = f"nolist-{unique_name}"
    create_table(ddb, table, _items("a"))
    config = make_config(table)
    host, port = endpoint.removeprefix("http://").split(":")
    with fault_proxy(host, int(port)) as proxy:
        denied = proxy.add(
            dynamodb_error(400, "AccessDeniedException", "not authorized: dynamodb:ListExports"),
            target=r"\.ListExports$",
        )
        instance = DagsterInstance.ephemeral()
        result = _run(config, instance, proxy.url)
    assert result.success and denied.fired == 1
    assert len(_export_arns(ddb, table)) == 1
    warnings = [
        e.user_message
        for e in instance.all_logs(result.run_id)
        if e.level == logging.WARNING and "cannot list the table's exports" in e.user_message
    ]
    assert len(warnings) == 1 and "grant dynamodb:ListExports" in warnings[0]


# --------------------------------------------------------------------------- which exports


ARN = "arn:aws:dynamodb:eu-west-1:123456789012:table/T"
T0 = datetime(2026, 1, 1, 12, 0, 0, 123000, tzinfo=UTC)


def _full(**changes: Any) -> dict[str, Any]:
    description = {
        "TableArn": ARN,
        "S3Bucket": BUCKET,
        "S3Prefix": "exports/dynamodb/T",
        "ExportFormat": "DYNAMODB_JSON",
        "ExportType": "FULL_EXPORT",
        "StartTime": T0,
        "ExportTime": T0,
    }
    return {**description, **changes}


def _incremental(start: datetime, **changes: Any) -> dict[str, Any]:
    spec = {
        "ExportFromTime": start,
        "ExportToTime": start + timedelta(hours=1),
        "ExportViewType": changes.pop("view", "NEW_IMAGE"),
    }
    return _full(ExportType=INCREMENTAL_EXPORT, IncrementalExportSpecification=spec, **changes)


FULL_REQUEST = ExportRequest(ARN, BUCKET, "exports/dynamodb/T")
# The same request as FULL_REQUEST, asked with the whole bucket readable.
READABLE_ROOT_REQUEST = ExportRequest(ARN, BUCKET, "exports/dynamodb/T")
WINDOW_REQUEST = ExportRequest(
    ARN, BUCKET, "exports/dynamodb/T", INCREMENTAL_EXPORT, T0, T0 + timedelta(minutes=30)
)


@pytest.mark.parametrize(
    ("request_", "description", "taken"),
    [
        (FULL_REQUEST, _full(), True),
        (FULL_REQUEST, _full(S3Prefix="exports/dynamodb/T/other"), False),
        (FULL_REQUEST, _full(S3Bucket="another-bucket"), False),
        (READABLE_ROOT_REQUEST, _full(S3Prefix=""), True),  # a Lambda's, where we may read
        (READABLE_ROOT_REQUEST, _full(S3Prefix="2020-Nov"), True),
        (READABLE_ROOT_REQUEST, _full(S3Bucket="another-bucket", S3Prefix=""), False),
        (FULL_REQUEST, _full(TableArn=ARN + "2"), False),
        (FULL_REQUEST, _full(ExportFormat="ION"), False),
        (FULL_REQUEST, _full(S3SseAlgorithm="KMS"), False),
        (FULL_REQUEST, _full(ExportTime=T0 - timedelta(hours=3)), False),  # an older point
        (FULL_REQUEST, _incremental(T0), False),
        (WINDOW_REQUEST, _incremental(T0), True),  # another window end: adopted, end taken
        (WINDOW_REQUEST, _incremental(T0.replace(microsecond=123999)), True),  # same millisecond
        (WINDOW_REQUEST, _incremental(T0 + timedelta(milliseconds=1)), False),
        (WINDOW_REQUEST, _incremental(T0, view="NEW_AND_OLD_IMAGES"), False),
        (WINDOW_REQUEST, _full(), False),
    ],
)
def test_which_running_exports_the_pipeline_would_have_asked_for(request_, description, taken):
    readable = [S3Location(BUCKET)] if request_ is READABLE_ROOT_REQUEST else []
    assert request_.would_ask_for(description, readable) is taken
    assert (request_.misfit(description, readable) is None) is taken


_PART = st.sampled_from(["exports", "dynamodb", "T", "2020-Nov", "team"])
_PREFIX = st.lists(_PART, max_size=3).map("/".join)
_LOCATION = st.builds(S3Location, st.sampled_from([BUCKET, "other-bucket"]), _PREFIX)


@given(
    bucket=st.sampled_from([BUCKET, "other-bucket"]),
    prefix=_PREFIX,
    readable=st.lists(_LOCATION, max_size=3),
    extra=_LOCATION,
)
def test_adoption_follows_the_readable_locations(bucket, prefix, readable, extra) -> None:
    """A fitting export is taken exactly where it may be read; more locations never take less."""
    description = _full(S3Bucket=bucket, S3Prefix=prefix)
    taken = FULL_REQUEST.would_ask_for(description, readable)
    where_we_write = (bucket, prefix) == (BUCKET, FULL_REQUEST.prefix)
    assert taken is (where_we_write or any(loc.holds(bucket, prefix) for loc in readable))
    if taken:
        assert FULL_REQUEST.would_ask_for(description, [*readable, extra])
    else:
        assert "aws.readable_s3_locations" in FULL_REQUEST.misfit(description, readable)
