"""The new-snapshot sensors, ticked with Dagster's own contexts against the local cloud.

Each test creates a DB instance of its own in the session's local cloud, so
the demo instance's snapshots (which other tests export) are never touched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import (
    AssetMaterialization,
    DagsterInstance,
    SensorResult,
    SkipReason,
    build_sensor_context,
    validate_run_config,
)
from dagster_aws.rds import RDSResource

from export_pipeline.config import PipelineConfig, RdsConfig, RdsInstanceConfig
from export_pipeline.local_cloud.rds_client import live_store, take_automated_snapshot
from export_pipeline.local_cloud.rds_store import Column
from export_pipeline.rds.snapshot_sensor import SNAPSHOT_TAG, SnapshotCursor, sensor_name
from export_pipeline.rds.source import (
    EXPORT_ID_METADATA,
    RdsSource,
    export_asset_key,
    table_asset_key,
)
from export_pipeline_tests.support.principals import (
    pipeline_definitions,
    pipeline_environment,
    pipeline_resources,
)
from export_pipeline_tests.support.rds import create_mysql_instance

DATABASE = "sensordb"
TABLE = "items"


def _source(
    pipeline_config: PipelineConfig, identifier: str, snapshot_type: str
) -> RdsInstanceConfig:
    template = pipeline_config.rds.instances[0]
    return RdsInstanceConfig(
        identifier=identifier,
        kind="instance",
        export_only=[f"{DATABASE}.{TABLE}"],
        iam_role_arn=template.iam_role_arn,
        kms_key_id=template.kms_key_id,
        snapshot_type=snapshot_type,
    )


def _config_with(pipeline_config: PipelineConfig, *sources: RdsInstanceConfig) -> PipelineConfig:
    return pipeline_config.model_copy(update={"rds": RdsConfig(instances=list(sources))})


def _create_instance(local_cloud, aws_clients, identifier: str) -> str:
    """A DB instance with one small table; AWS takes an automated snapshot on creation."""
    store = live_store(local_cloud.state_dir, aws_clients.region, identifier)
    store.create_table(DATABASE, TABLE, [Column("id", "int", nullable=False)])
    store.insert(DATABASE, TABLE, [{"id": 1}, {"id": 2}])
    create_mysql_instance(aws_clients.rds, identifier)
    return _newest(aws_clients, identifier, "automated")


def _newest(aws_clients, identifier: str, snapshot_type: str) -> str:
    snapshots = aws_clients.rds.describe_db_snapshots(
        DBInstanceIdentifier=identifier, SnapshotType=snapshot_type
    )["DBSnapshots"]
    assert snapshots, f"no {snapshot_type} snapshot of {identifier}"
    return max(snapshots, key=lambda s: s["SnapshotCreateTime"])["DBSnapshotIdentifier"]


@pytest.fixture
def rds_resource(local_cloud, pipeline_config, instance_id) -> RDSResource:
    """The sensors' RDS client, signing as the principal of the test's instance's config."""
    config = _config_with(pipeline_config, _source(pipeline_config, instance_id, "automated"))
    return pipeline_resources(config)["rds"]


@pytest.fixture
def instance_id() -> str:
    return "sensor-" + uuid.uuid4().hex[:10]


def _tick(sensor, rds_resource, cursor: str | None, instance: DagsterInstance) -> Any:
    context = build_sensor_context(
        cursor=cursor, instance=instance, resources={"rds": rds_resource}
    )
    return sensor(context), context


def _op_config(result: SensorResult, op_name: str) -> dict[str, Any]:
    (request,) = result.run_requests
    return request.run_config["ops"][op_name]["config"]


def test_first_tick_requests_newest_then_only_new_snapshots(
    local_cloud, aws_clients, pipeline_config, rds_resource, instance_id
):
    first_snapshot = _create_instance(local_cloud, aws_clients, instance_id)
    source = _source(pipeline_config, instance_id, "automated")
    config = _config_with(pipeline_config, source)
    (sensor,) = RdsSource(config).sensors()
    assert (
        sensor.name == sensor_name(source) == f"rds_snapshot_sensor_{instance_id.replace('-', '_')}"
    )
    instance = DagsterInstance.ephemeral()
    op_name = export_asset_key(source).to_python_identifier()

    # First tick: nothing recorded, nothing exported yet -> the newest snapshot is requested.
    result, _ = _tick(sensor, rds_resource, None, instance)
    assert isinstance(result, SensorResult)
    (request,) = result.run_requests
    assert request.run_key == f"rds:{instance_id}:{first_snapshot}"
    assert _op_config(result, op_name) == {"snapshot_identifier": first_snapshot}
    assert set(request.asset_selection) == {
        export_asset_key(source),
        table_asset_key(config, DATABASE, TABLE),
    }
    assert request.tags[SNAPSHOT_TAG] == first_snapshot
    cursor = json.loads(result.cursor)
    assert cursor["ids_at_newest"] == [first_snapshot]

    # Same cursor again (a later tick, or a restart with the saved cursor): nothing new.
    again, _ = _tick(sensor, rds_resource, result.cursor, instance)
    assert isinstance(again, SkipReason)
    assert "no new available snapshot" in again.skip_message

    # A manual snapshot does not count for an `automated` source.
    aws_clients.rds.create_db_snapshot(
        DBInstanceIdentifier=instance_id, DBSnapshotIdentifier=f"{instance_id}-manual"
    )
    ignored, _ = _tick(sensor, rds_resource, result.cursor, instance)
    assert isinstance(ignored, SkipReason)

    # The nightly backup: exactly that snapshot is requested, and the cursor moves to it.
    nightly = take_automated_snapshot(aws_clients.rds, instance_id)
    second, _ = _tick(sensor, rds_resource, result.cursor, instance)
    assert isinstance(second, SensorResult)
    (request,) = second.run_requests
    assert request.run_key == f"rds:{instance_id}:{nightly['DBSnapshotIdentifier']}"
    assert _op_config(second, op_name) == {"snapshot_identifier": nightly["DBSnapshotIdentifier"]}
    restored = SnapshotCursor.from_json(second.cursor)
    assert restored.newest == nightly["SnapshotCreateTime"]
    assert restored.ids_at_newest == {nightly["DBSnapshotIdentifier"]}

    # Restart: a new context (and a new instance) with the saved cursor requests nothing.
    restarted, _ = _tick(sensor, rds_resource, second.cursor, DagsterInstance.ephemeral())
    assert isinstance(restarted, SkipReason)


def test_several_new_snapshots_request_only_the_newest(
    local_cloud, aws_clients, pipeline_config, rds_resource, instance_id
):
    _create_instance(local_cloud, aws_clients, instance_id)
    source = _source(pipeline_config, instance_id, "any")
    (sensor,) = RdsSource(_config_with(pipeline_config, source)).sensors()
    instance = DagsterInstance.ephemeral()
    baseline, _ = _tick(sensor, rds_resource, None, instance)
    assert isinstance(baseline, SensorResult)

    take_automated_snapshot(aws_clients.rds, instance_id)
    manual = aws_clients.rds.create_db_snapshot(
        DBInstanceIdentifier=instance_id, DBSnapshotIdentifier=f"{instance_id}-before-upgrade"
    )["DBSnapshot"]
    result, _ = _tick(sensor, rds_resource, baseline.cursor, instance)
    assert isinstance(result, SensorResult)
    (request,) = result.run_requests
    # `any`: the manual snapshot, taken last, is the newest.
    assert request.run_key == f"rds:{instance_id}:{manual['DBSnapshotIdentifier']}"
    again, _ = _tick(sensor, rds_resource, result.cursor, instance)
    assert isinstance(again, SkipReason)


def test_manual_source_ignores_automated_snapshots(
    local_cloud, aws_clients, pipeline_config, rds_resource, instance_id
):
    _create_instance(local_cloud, aws_clients, instance_id)
    source = _source(pipeline_config, instance_id, "manual")
    (sensor,) = RdsSource(_config_with(pipeline_config, source)).sensors()
    instance = DagsterInstance.ephemeral()
    nothing, _ = _tick(sensor, rds_resource, None, instance)
    assert isinstance(nothing, SkipReason)
    assert "no available manual snapshot" in nothing.skip_message

    manual = aws_clients.rds.create_db_snapshot(
        DBInstanceIdentifier=instance_id, DBSnapshotIdentifier=f"{instance_id}-m1"
    )["DBSnapshot"]
    take_automated_snapshot(aws_clients.rds, instance_id)
    result, _ = _tick(sensor, rds_resource, None, instance)
    (request,) = result.run_requests
    assert request.run_key == f"rds:{instance_id}:{manual['DBSnapshotIdentifier']}"


def test_first_tick_skips_a_snapshot_already_exported(
    local_cloud, aws_clients, pipeline_config, rds_resource, instance_id
):
    newest = _create_instance(local_cloud, aws_clients, instance_id)
    source = _source(pipeline_config, instance_id, "automated")
    (sensor,) = RdsSource(_config_with(pipeline_config, source)).sensors()
    instance = DagsterInstance.ephemeral()
    # What the export asset records when it exported `newest` (see rds/source.py).
    instance.report_runless_asset_event(
        AssetMaterialization(
            export_asset_key(source),
            metadata={"snapshot_identifier": newest, EXPORT_ID_METADATA: "x"},
        )
    )
    result, _ = _tick(sensor, rds_resource, None, instance)
    assert isinstance(result, SensorResult)
    assert not result.run_requests
    assert "already exported" in result.skip_reason.skip_message
    assert SnapshotCursor.from_json(result.cursor).ids_at_newest == {newest}


def test_unreadable_cursor_starts_again_from_the_newest(
    local_cloud, aws_clients, pipeline_config, rds_resource, instance_id
):
    newest = _create_instance(local_cloud, aws_clients, instance_id)
    source = _source(pipeline_config, instance_id, "automated")
    (sensor,) = RdsSource(_config_with(pipeline_config, source)).sensors()
    result, _ = _tick(sensor, rds_resource, "not json", DagsterInstance.ephemeral())
    (request,) = result.run_requests
    assert request.run_key == f"rds:{instance_id}:{newest}"


def test_requested_run_exports_exactly_the_named_snapshot(
    local_cloud, aws_clients, pipeline_config, rds_resource, instance_id
):
    """The request is valid run config for the job, and running it exports that snapshot."""
    _create_instance(local_cloud, aws_clients, instance_id)
    source = _source(pipeline_config, instance_id, "automated")
    config = _config_with(pipeline_config, source)
    (sensor,) = RdsSource(config).sensors()
    instance = DagsterInstance.ephemeral()
    first, _ = _tick(sensor, rds_resource, None, instance)
    # A newer snapshot exists, but the run must export the one the sensor named.
    named = first.run_requests[0].tags[SNAPSHOT_TAG]
    take_automated_snapshot(aws_clients.rds, instance_id)

    # The sensor targets an asset selection: its runs are of Dagster's implicit asset job.
    defs = pipeline_definitions(config)
    job = defs.resolve_implicit_global_asset_job_def()
    (request,) = first.run_requests
    validate_run_config(job, request.run_config)
    export_only = job.get_subset(asset_selection={export_asset_key(source)})
    outcome = export_only.execute_in_process(run_config=request.run_config, instance=instance)
    assert outcome.success
    materialization = instance.get_latest_materialization_event(
        export_asset_key(source)
    ).asset_materialization
    assert materialization.metadata["snapshot_identifier"].value == named


def test_one_sensor_per_configured_source(pipeline_config):
    a = _source(pipeline_config, "alpha-db", "any")
    b = _source(pipeline_config, "beta-db", "manual")
    sensors = RdsSource(_config_with(pipeline_config, a, b)).sensors()
    assert [s.name for s in sensors] == [
        "rds_snapshot_sensor_alpha_db",
        "rds_snapshot_sensor_beta_db",
    ]
    assert all(s.minimum_interval_seconds == 300 for s in sensors)


DEFINITIONS_WITH_SENSORS = '''
"""Test-only code location: the real definitions (sensors included) for this test's config."""
from export_pipeline.config import current_config
from export_pipeline.definitions import build_definitions

defs = build_definitions(current_config())
'''


def test_sensor_ticks_in_a_dagster_process_with_the_real_resources(
    local_cloud, aws_clients, pipeline_config, instance_id, tmp_path
):
    """`dagster sensor preview`: code server, resources from environment.py, one real tick."""
    newest = _create_instance(local_cloud, aws_clients, instance_id)
    source = _source(pipeline_config, instance_id, "automated")
    config = _config_with(pipeline_config, source)
    config_file = tmp_path / "pipeline.yaml"
    config_file.write_text(
        yaml.safe_dump(config.model_dump(mode="json", exclude_none=True)), encoding="utf-8"
    )
    module = tmp_path / "defs_with_sensors.py"
    module.write_text(DEFINITIONS_WITH_SENSORS, encoding="utf-8")
    env = pipeline_environment(
        config,
        {**os.environ, "EXPORT_PIPELINE_CONFIG": str(config_file), "DAGSTER_HOME": str(tmp_path)},
    )
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("dagster")),
            "sensor",
            "preview",
            sensor_name(source),
            "-f",
            str(module),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    # The preview prints the requested runs' config (not their run keys).
    assert "returning run requests for 1 run(s)" in output, output
    op_name = export_asset_key(source).to_python_identifier()
    assert f"{op_name}:" in output and f"snapshot_identifier: {newest}" in output, output
