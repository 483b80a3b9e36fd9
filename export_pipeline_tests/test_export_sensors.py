"""Sensor mode end to end against the local cloud: start, tick, load, restart, failure.

The export assets run with `wait_for_completion: false`, the completion
sensor is evaluated with `build_sensor_context` (real DynamoDB / RDS
clients on the session's local cloud), and the run it requests is executed
with exactly its run config. The local cloud finishes an export in ~2 s, too
soon to be sure a tick sees it running, so the "still running" tick goes
through REL's fault proxy, which rewrites that one DescribeExport answer to
IN_PROGRESS (a state no local server can be held in on demand).
"""

from __future__ import annotations

import uuid

import dagster as dg
import pytest
from dagster import DagsterInstance, build_sensor_context, materialize

from export_pipeline.dynamodb.exports import wait_for_export
from export_pipeline.graph.assets import build_source_assets
from export_pipeline.graph.completion_sensor import (
    EXPORT_FAILED_TAG,
    SENSOR_NAME,
    build_export_completion_sensor,
)
from export_pipeline.rds.exports import wait_for_export as wait_for_rds_export
from export_pipeline.rds.source import RdsSource
from export_pipeline.registry import configured_sources
from export_pipeline_tests.dynamodb._pipeline_helpers import (
    assets_for,
    bigquery_rows,
    create_table,
    make_config,
)
from export_pipeline_tests.faults.proxy import fault_proxy, resources_through, rewrite_json
from export_pipeline_tests.support.principals import pipeline_resources
from export_pipeline_tests.support.rds import config_for

SENSOR_MODE = {"config": {"wait_for_completion": False}}


@pytest.fixture
def rds_dataset(local_cloud, bigquery_client):
    """A BigQuery dataset of this test's own, removed afterwards."""
    name = "sensors_" + uuid.uuid4().hex[:10]
    bigquery_client.create_dataset(f"{local_cloud.bigquery_project}.{name}")
    yield name
    bigquery_client.delete_dataset(
        f"{local_cloud.bigquery_project}.{name}", delete_contents=True, not_found_ok=True
    )


def _items(*keys: str) -> list[dict]:
    return [{"pk": {"S": k}, "n": {"N": str(i)}} for i, k in enumerate(keys)]


def _tick(sensor, instance, resources, cursor=None):
    with build_sensor_context(
        instance=instance, cursor=cursor, resources=resources, sensor_name=SENSOR_NAME
    ) as context:
        result = sensor.evaluate_tick(context)
    return result


def _start_in_sensor_mode(config, instance):
    export_asset, bigquery_asset = assets_for(config)
    result = materialize(
        [export_asset, bigquery_asset],
        resources=pipeline_resources(config),
        instance=instance,
        run_config={"ops": {export_asset.op.name: SENSOR_MODE}},
        raise_on_error=False,
    )
    return export_asset, bigquery_asset, result


def _execute(config, instance, request, assets):
    """Run what the sensor asked for: its asset selection, its run config, its tags."""
    return materialize(
        assets,
        resources=pipeline_resources(config),
        instance=instance,
        selection=request.asset_selection,
        run_config=request.run_config,
        tags=request.tags,
        raise_on_error=False,
    )


def _messages(instance, result) -> str:
    """Everything the run logged (user log lines included)."""
    return "\n".join(e.user_message for e in instance.all_logs(result.run_id))


def test_dynamodb_sensor_mode_loads_once_when_the_export_completes(
    local_cloud, aws_clients, bigquery_client, unique_name
):
    table = f"sens-{unique_name}"
    create_table(aws_clients.dynamodb, table, _items("a", "b", "c"))
    config = make_config(table)
    instance = DagsterInstance.ephemeral()
    [sensor] = build_export_completion_sensor(configured_sources(config))
    resources = pipeline_resources(config)

    export_asset, bigquery_asset, started = _start_in_sensor_mode(config, instance)

    assert started.success
    [event] = started.get_asset_materialization_events()  # the export only: the load skipped
    assert event.asset_key == export_asset.key
    metadata = {k: v.value for k, v in event.materialization.metadata.items()}
    assert metadata["wait_mode"] == "sensor"
    [arn] = metadata["export_arns"]
    logged = _messages(instance, started)
    assert "not loading now" in logged and "export_completion_sensor requests" in logged

    # Tick 1, the export still running (DescribeExport answer rewritten): no request.
    def running(document):
        document["ExportDescription"]["ExportStatus"] = "IN_PROGRESS"

    with fault_proxy(local_cloud.host, local_cloud.aws_port) as proxy:
        rule = proxy.add(rewrite_json(running, "IN_PROGRESS"), target=r"\.DescribeExport$")
        first = _tick(sensor, instance, resources_through(resources, aws=proxy, bigquery=None))
    assert rule.fired == 1  # exactly one describe call for the one pending export
    assert first.run_requests == []
    assert "waiting for 1 export" in first.skip_message
    assert table in first.skip_message

    # Tick 2, after DynamoDB reports COMPLETED: one request naming the export.
    wait_for_export(
        aws_clients.dynamodb, arn, timeout_seconds=60, max_interval_seconds=0.5, sleep=_sleep
    )
    second = _tick(sensor, instance, resources, cursor=first.cursor)
    [request] = second.run_requests
    assert request.run_key == f"load:{arn}"
    assert request.asset_selection == [bigquery_asset.key]
    assert request.run_config == {
        "ops": {bigquery_asset.node_def.name: {"config": {"export_arns": [arn]}}}
    }
    assert EXPORT_FAILED_TAG not in request.tags

    # A restart with the saved cursor: no second request.
    again = _tick(sensor, instance, resources, cursor=second.cursor)
    assert again.run_requests == []

    loaded = _execute(config, instance, request, [export_asset, bigquery_asset])
    assert loaded.success
    assert sorted(bigquery_rows(bigquery_client, table)) == ["a", "b", "c"]

    # Cursor lost after the load (sensor reset): the load is not requested again.
    reset = _tick(sensor, instance, resources, cursor=None)
    assert reset.run_requests == []
    assert "no export started in sensor mode is waiting" in reset.skip_message


def test_dynamodb_failed_export_is_reported_by_a_failing_load_run(
    aws_clients, bigquery_client, unique_name
):
    """The local cloud fails an export to a missing bucket (S3NoSuchBucket), as AWS does."""
    table = f"sfail-{unique_name}"
    create_table(aws_clients.dynamodb, table, _items("a"))
    config = make_config(table, bucket=f"missing-{unique_name}")
    instance = DagsterInstance.ephemeral()
    [sensor] = build_export_completion_sensor(configured_sources(config))
    resources = pipeline_resources(config)

    export_asset, bigquery_asset, started = _start_in_sensor_mode(config, instance)
    assert started.success  # starting the export succeeds; the export fails afterwards
    [arn] = (
        instance.get_latest_materialization_event(export_asset.key)
        .asset_materialization.metadata["export_arns"]
        .value
    )
    with pytest.raises(Exception, match="S3NoSuchBucket"):
        wait_for_export(
            aws_clients.dynamodb, arn, timeout_seconds=60, max_interval_seconds=0.5, sleep=_sleep
        )

    tick = _tick(sensor, instance, resources)
    [request] = tick.run_requests
    assert "S3NoSuchBucket" in request.tags[EXPORT_FAILED_TAG]
    assert _tick(sensor, instance, resources, cursor=tick.cursor).run_requests == []

    failed = _execute(config, instance, request, [export_asset, bigquery_asset])
    assert not failed.success
    [failure] = failed.get_step_failure_events()
    text = str(failure.step_failure_data.user_failure_data.description)
    assert "FAILED" in text and "S3NoSuchBucket" in text and table in text
    # Permanent: failed once, no step retry.
    assert not [e for e in failed.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]


def test_rds_sensor_mode_requests_every_table_load(
    local_cloud, bigquery_client, pipeline_config, rds_dataset, aws_clients
):
    demo = pipeline_config.rds.instances[0]  # the MySQL demo instance
    source = demo.model_copy(update={"export_only": ["shop.orders"], "tables": {}})
    config = config_for(pipeline_config, rds_dataset, instances=[source])
    instance = DagsterInstance.ephemeral()
    assets = build_source_assets(RdsSource(config))
    export_asset, table_asset = assets[0], assets[1]
    # A fresh export task (attempt number unused so far), so it starts now.
    attempt = 1000 + int(rds_dataset[-6:], 16) % 100000
    started = materialize(
        assets,
        resources=pipeline_resources(config),
        instance=instance,
        run_config={
            "ops": {
                export_asset.op.name: {
                    "config": {"wait_for_completion": False, "export_attempt": attempt}
                }
            }
        },
    )
    [event] = started.get_asset_materialization_events()
    identifier = event.materialization.metadata["export_task_identifier"].value
    assert event.materialization.metadata["wait_mode"].value == "sensor"
    assert event.materialization.metadata["status"].value != "COMPLETE"

    wait_for_rds_export(
        aws_clients.rds,
        identifier,
        max_interval_seconds=0.5,
        timeout_seconds=60,
        retry_hint="",
        sleep=_sleep,
    )
    [sensor] = build_export_completion_sensor(configured_sources(config))
    tick = _tick(sensor, instance, pipeline_resources(config))
    [request] = tick.run_requests
    assert request.run_key == f"load:{identifier}"
    assert request.asset_selection == [table_asset.key]
    ops = request.run_config["ops"]
    assert ops == {table_asset.op.name: {"config": {"export_task_identifier": identifier}}}

    loaded = _execute(config, instance, request, assets)
    assert loaded.success
    [load] = loaded.get_asset_materialization_events()
    assert load.materialization.metadata["dagster/row_count"].value > 0
    assert _tick(sensor, instance, pipeline_resources(config)).run_requests == []


def test_definitions_with_the_sensor_load(pipeline_config):
    """The shipped definitions hold the sensor, and its target covers what it requests."""
    from export_pipeline_tests.support.principals import pipeline_definitions

    defs = pipeline_definitions(pipeline_config)
    sensor = defs.get_sensor_def(SENSOR_NAME)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    defs.validate_loadable(defs)


def _sleep(seconds: float) -> None:
    import time

    time.sleep(min(seconds, 0.5))


def test_run_config_decides_the_wait_then_the_sources_wait_setting(pipeline_config):
    from export_pipeline.config import WaitMode
    from export_pipeline.contract import waits

    [table, *_] = pipeline_config.dynamodb.tables
    assert waits(None, table.wait) is True  # the demo configuration: blocking
    assert waits(False, table.wait) is False
    assert waits(None, WaitMode.SENSOR) is False and waits(True, WaitMode.SENSOR) is True
    source = pipeline_config.rds.instances[0]
    assert waits(None, source.wait) is True
