"""Export task lifecycle against the local cloud: reuse, CANCELED, waiting, skipped tables.

Each test uses a DB instance of its own (fresh live data + automated
snapshot), so nothing depends on the shared demo instance.
"""

from __future__ import annotations

import uuid

import pytest
from dagster import AssetKey, DagsterInstance

from export_pipeline.local_cloud.clients import AwsClients
from export_pipeline.local_cloud.rds_client import live_store, take_automated_snapshot
from export_pipeline.local_cloud.rds_store import Column
from export_pipeline.rds.exports import (
    RdsExportError,
    ensure_export_task,
    find_snapshot,
    wait_for_export,
)
from export_pipeline.rds.identifiers import export_task_identifier
from export_pipeline.rds.source import export_s3_prefix
from export_pipeline_tests.support.rds import config_for, create_mysql_instance, run_rds

GOOD = [
    Column("id", "int", nullable=False),
    Column("order-id", "varchar(20)"),  # not a BigQuery column name
    Column("Name", "varchar(20)"),  # valid as it is: kept
    Column("café au lait", "varchar(20)"),  # space and non-ASCII
    Column("2nd", "int"),  # starts with a digit
    Column("_exported_at", "varchar(10)"),  # the pipeline's own column name
]
BAD = [Column("id", "int", nullable=False), Column("a,b", "int")]  # AWS skips this table


@pytest.fixture
def private_source(local_cloud, pipeline_config, rds_dataset):
    """An instance `db<hex>` with database `app`: tables `good` and `bad`, one snapshot."""
    demo = pipeline_config.rds.instances[0]  # its IAM role and KMS key exist (seeded)
    identifier = "db" + uuid.uuid4().hex[:10]
    source = demo.model_copy(
        update={"identifier": identifier, "export_only": ["app.good", "app.bad"], "tables": {}}
    )
    config = config_for(pipeline_config, rds_dataset, [source])
    clients = AwsClients.for_config(local_cloud, config)
    store = live_store(local_cloud.state_dir, config.aws.region, identifier)
    store.create_table("app", "good", GOOD)
    store.insert(
        "app",
        "good",
        [
            {"id": 1, "order-id": "A-1", "Name": "Upper", "café au lait": "☕", "2nd": 2},
            {"id": 2, "_exported_at": "mine"},
        ],
    )
    store.create_table("app", "bad", BAD)
    store.insert("app", "bad", [{"id": 1, "a,b": 5}])
    create_mysql_instance(clients.rds, identifier)
    take_automated_snapshot(clients.rds, identifier)
    return config, clients


def _identifier_for(config, clients, attempt: int = 1) -> tuple[str, str]:
    source = config.rds.instances[0]
    snapshot = find_snapshot(clients.rds, source)
    return (
        export_task_identifier(source.identifier, snapshot.identifier, source.export_only, attempt),
        snapshot.arn,
    )


def _start(config, clients, identifier: str, arn: str) -> None:
    source = config.rds.instances[0]
    ensure_export_task(
        clients.rds,
        identifier=identifier,
        source_arn=arn,
        bucket=config.aws.export_bucket,
        prefix=export_s3_prefix(config),
        iam_role_arn=source.iam_role_arn,
        kms_key_id=source.kms_key_id,
        export_only=source.export_only,
        retry_hint="(test)",
    )


def _error_text(result) -> str:
    return "\n".join(str(e.event_specific_data.error) for e in result.get_step_failure_events())


def test_skipped_table_fails_its_asset_only_and_awkward_names_are_mapped(
    private_source, local_cloud, bigquery_client
):
    config, _ = private_source
    source = config.rds.instances[0]
    result = run_rds(config, DagsterInstance.ephemeral(), raise_on_error=False)
    export_key = AssetKey(["rds", f"{source.identifier}_snapshot_export"])
    [export] = [e for e in result.get_asset_materialization_events() if e.asset_key == export_key]
    assert export.materialization.metadata["skipped_tables"].value == ["app.bad"]
    # The bad table's asset fails naming it; the good one loads.
    failures = result.get_step_failure_events()
    assert [f.step_key for f in failures] == [f"bigquery__{config.bigquery.dataset}__rds_app_bad"]
    assert "app.bad" in _error_text(result) and "skipped" in _error_text(result)

    table = bigquery_client.get_table(
        f"{local_cloud.bigquery_project}.{config.bigquery.dataset}.rds_app_good"
    )
    by_description = {
        f.description.split("`")[1]: f.name for f in table.schema if "`" in f.description
    }
    assert set(by_description) >= {"id", "order-id", "Name", "café au lait", "2nd", "_exported_at"}
    assert by_description["Name"] == "Name"
    assert by_description["café au lait"].startswith("cafe_au_lait")
    assert by_description["2nd"][0] == "_"
    assert by_description["_exported_at"] != "_exported_at"
    rows = {
        r["id"]: dict(r)
        for r in bigquery_client.query(
            f"SELECT * FROM `{table.full_table_id.replace(':', '.')}`"
        ).result()
    }
    assert rows[1][by_description["order-id"]] == "A-1"
    assert rows[1][by_description["Name"]] == "Upper"
    assert rows[1][by_description["café au lait"]] == "☕"
    assert rows[1][by_description["2nd"]] == 2
    assert rows[2][by_description["_exported_at"]] == "mine"
    assert rows[2]["_exported_at"] is not None  # the snapshot time, not the source column


def test_rerun_reuses_a_running_export(private_source):
    config, clients = private_source
    identifier, arn = _identifier_for(config, clients)
    _start(config, clients, identifier, arn)  # "another run" started it a moment ago
    export_key = AssetKey(["rds", f"{config.rds.instances[0].identifier}_snapshot_export"])
    result = run_rds(config, DagsterInstance.ephemeral(), selection=[export_key])
    [event] = result.get_asset_materialization_events()
    metadata = event.materialization.metadata
    assert metadata["export_task_identifier"].value == identifier
    assert metadata["export_reused"].value is True
    assert metadata["status"].value == "COMPLETE"
    tasks = clients.rds.describe_export_tasks(SourceArn=arn)["ExportTasks"]
    assert [t["ExportTaskIdentifier"] for t in tasks] == [identifier]  # paid once


def test_canceled_export_is_a_clear_error_and_a_new_attempt_retries(private_source):
    config, clients = private_source
    identifier, arn = _identifier_for(config, clients)
    _start(config, clients, identifier, arn)
    clients.rds.cancel_export_task(ExportTaskIdentifier=identifier)
    sleeps: list[float] = []
    with pytest.raises(RdsExportError, match="CANCEL") as raised:
        wait_for_export(
            clients.rds,
            identifier,
            max_interval_seconds=0.2,
            timeout_seconds=60,
            retry_hint="retry hint here",
            sleep=sleeps.append,
        )
    assert "retry hint here" in str(raised.value)
    assert len(sleeps) <= 3  # stops as soon as CANCELING/CANCELED is seen

    export_key = AssetKey(["rds", f"{config.rds.instances[0].identifier}_snapshot_export"])
    failed = run_rds(
        config, DagsterInstance.ephemeral(), selection=[export_key], raise_on_error=False
    )
    assert not failed.success
    text = _error_text(failed)
    assert identifier in text and "CANCEL" in text and "export_attempt" in text

    retried = run_rds(
        config,
        DagsterInstance.ephemeral(),
        selection=[export_key],
        run_config={"ops": {export_key.to_python_identifier(): {"config": {"export_attempt": 2}}}},
    )
    [event] = retried.get_asset_materialization_events()
    new_id = event.materialization.metadata["export_task_identifier"].value
    assert new_id == _identifier_for(config, clients, attempt=2)[0] != identifier


def test_wait_backs_off_exponentially_up_to_the_cap_and_times_out(private_source):
    config, clients = private_source
    identifier, arn = _identifier_for(config, clients)
    _start(config, clients, identifier, arn)
    now = [0.0]
    sleeps: list[float] = []

    def fake_sleep(seconds: float) -> None:  # time passes only in the waiter's own clock
        sleeps.append(seconds)
        now[0] += seconds

    with pytest.raises(RdsExportError, match="export_timeout_minutes"):
        wait_for_export(
            clients.rds,
            identifier,
            max_interval_seconds=4,
            timeout_seconds=20,
            retry_hint="",
            sleep=fake_sleep,
            clock=lambda: now[0],
            first_interval_seconds=0.5,
        )
    assert sleeps[:5] == [0.5, 1, 2, 4, 4]
    assert max(sleeps) == 4
    assert sum(sleeps) == pytest.approx(20)
    # The real export still finishes; a later wait picks it up.
    task = wait_for_export(
        clients.rds, identifier, max_interval_seconds=0.2, timeout_seconds=60, retry_hint=""
    )
    assert task["Status"] == "COMPLETE"


def test_table_missing_from_the_export_is_an_error_naming_it(
    private_source, local_cloud, pipeline_config
):
    config, clients = private_source
    identifier, arn = _identifier_for(config, clients)
    source = config.rds.instances[0]
    # An export of `app.good` only ...
    ensure_export_task(
        clients.rds,
        identifier=identifier,
        source_arn=arn,
        bucket=config.aws.export_bucket,
        prefix=export_s3_prefix(config),
        iam_role_arn=source.iam_role_arn,
        kms_key_id=source.kms_key_id,
        export_only=["app.good"],
        retry_hint="",
    )
    wait_for_export(
        clients.rds, identifier, max_interval_seconds=0.2, timeout_seconds=60, retry_hint=""
    )
    # ... loaded for a configuration that also lists `app.other`.
    wider = source.model_copy(update={"export_only": ["app.good", "app.other"]})
    config = config_for(pipeline_config, config.bigquery.dataset, [wider])
    key = AssetKey(["bigquery", config.bigquery.dataset, "rds_app_other"])
    result = run_rds(
        config,
        DagsterInstance.ephemeral(),
        selection=[key],
        run_config={
            "ops": {key.to_python_identifier(): {"config": {"export_task_identifier": identifier}}}
        },
        raise_on_error=False,
    )
    assert not result.success
    assert "app.other is not in export" in _error_text(result)


def test_aurora_cluster_and_the_choice_of_snapshot(local_cloud, pipeline_config, rds_dataset):
    from export_pipeline.config import SnapshotType
    from export_pipeline.local_cloud import demo_rds

    demo = pipeline_config.rds.instances[0]
    cluster = demo.model_copy(
        update={
            "identifier": "aurora" + uuid.uuid4().hex[:8],
            "kind": "cluster",
            "export_only": ["shop.type_zoo"],
            "tables": {},
        }
    )
    config = config_for(pipeline_config, rds_dataset, [cluster])
    clients = AwsClients.for_config(local_cloud, config)
    demo_rds.seed(clients, config, local_cloud)  # cluster + automated snapshot
    automated = find_snapshot(clients.rds, cluster)
    assert (
        automated.snapshot_type == "automated" and automated.arn.split(":")[5] == "cluster-snapshot"
    )
    manual_id = "manual-" + uuid.uuid4().hex[:6]
    clients.rds.create_db_cluster_snapshot(
        DBClusterIdentifier=cluster.identifier, DBClusterSnapshotIdentifier=manual_id
    )
    assert find_snapshot(clients.rds, cluster).identifier == manual_id  # newest of any type
    only_automated = cluster.model_copy(update={"snapshot_type": SnapshotType.AUTOMATED})
    assert find_snapshot(clients.rds, only_automated).identifier == automated.identifier
    with pytest.raises(RdsExportError, match="not found"):
        find_snapshot(clients.rds, cluster, "no-such-snapshot")

    # Run config names the (older) automated snapshot explicitly.
    export_key = AssetKey(["rds", f"{cluster.identifier}_snapshot_export"])
    result = run_rds(
        config,
        DagsterInstance.ephemeral(),
        run_config={
            "ops": {
                export_key.to_python_identifier(): {
                    "config": {"snapshot_identifier": automated.identifier}
                }
            }
        },
    )
    export = [e for e in result.get_asset_materialization_events() if e.asset_key == export_key]
    assert export[0].materialization.metadata["snapshot_identifier"].value == automated.identifier
    assert all(c.passed for c in result.get_asset_check_evaluations())
