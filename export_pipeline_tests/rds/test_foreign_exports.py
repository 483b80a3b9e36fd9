"""Exports of a snapshot made outside the pipeline: adopted when they fit, never paid twice.

A team's own tooling (the scheduled-Lambda design: `StartExportTask` with
the snapshot's name as identifier, written to the bucket root) is played
here with boto3 and the same parameters, against the local cloud. Each test
uses a DB instance of its own.
"""

from __future__ import annotations

import re
import uuid

import pytest
from dagster import AssetKey, DagsterInstance
from hypothesis import given
from hypothesis import strategies as st

from export_pipeline.local_cloud.clients import AwsClients
from export_pipeline.local_cloud.rds_client import live_store, take_automated_snapshot
from export_pipeline.local_cloud.rds_store import Column
from export_pipeline.rds.exports import export_covers, find_snapshot, wait_for_export
from export_pipeline.s3_locations import S3Location, UnreadableLocationError, parse_s3_location
from export_pipeline_tests.support.rds import config_for, create_mysql_instance, run_rds

ROWS = [{"id": n, "name": f"n{n}"} for n in range(1, 6)]


# -- the rules, on their own ------------------------------------------------------------

NAME = st.sampled_from(["a", "bkt", "shop", "app"])
TABLE = st.tuples(NAME, NAME).map(".".join)


@given(st.lists(st.one_of(NAME, TABLE), max_size=4), st.lists(TABLE, min_size=1, max_size=4))
def test_export_covers_matches_its_definition(scope, wanted) -> None:
    expected = not scope or all(t in scope or t.split(".")[0] in scope for t in wanted)
    assert export_covers(scope, wanted) is expected


@given(st.lists(st.one_of(NAME, TABLE), min_size=1, max_size=4), st.lists(TABLE, min_size=1), TABLE)
def test_a_wider_scope_never_covers_less(scope, wanted, extra) -> None:
    # (An empty ExportOnly is the whole snapshot: any entry narrows it.)
    if export_covers(scope, wanted):
        assert export_covers([*scope, extra], wanted)


def test_postgresql_scopes_cover_by_leading_parts() -> None:
    assert export_covers(["db"], ["db.public.t"])
    assert export_covers(["db.public"], ["db.public.t"])
    assert not export_covers(["db.other"], ["db.public.t"])


@pytest.mark.parametrize(
    ("location", "bucket", "prefix", "held"),
    [
        ("s3://bkt", "bkt", "", True),
        ("s3://bkt", "bkt", "any/where", True),
        ("s3://bkt/exports", "bkt", "exports", True),
        ("s3://bkt/exports", "bkt", "exports/rds/x", True),
        ("s3://bkt/exports", "bkt", "exports2/rds", False),  # a prefix is a folder, not a string
        ("s3://bkt/exports", "bkt", "", False),
        ("s3://bkt/exports/", "other", "exports", False),
    ],
)
def test_locations_hold_whole_folders(location, bucket, prefix, held) -> None:
    assert parse_s3_location(location).holds(bucket, prefix) is held


@pytest.mark.parametrize("text", ["bkt", "s3://", "s3://UPPER", "s3://bkt/../x", "https://b/x"])
def test_a_malformed_location_is_refused(text) -> None:
    with pytest.raises(ValueError, match="s3://"):
        parse_s3_location(text)


# -- against the local cloud --------------------------------------------------------------


@pytest.fixture
def team_source(local_cloud, pipeline_config, rds_dataset):
    """An instance `db<hex>` with `app.people`, one automated snapshot, and its configuration."""
    demo = pipeline_config.rds.instances[0]  # its IAM role and KMS key exist (seeded)
    identifier = "db" + uuid.uuid4().hex[:10]
    source = demo.model_copy(
        update={"identifier": identifier, "export_only": ["app.people"], "tables": {}}
    )
    config = config_for(pipeline_config, rds_dataset, [source])
    clients = AwsClients.for_config(local_cloud, config)
    store = live_store(local_cloud.state_dir, config.aws.region, identifier)
    create_mysql_instance(clients.rds, identifier)
    store.create_table(
        "app", "people", [Column("id", "int", nullable=False), Column("name", "varchar(20)")]
    )
    store.insert("app", "people", ROWS)
    store.create_table("app", "other", [Column("id", "int", nullable=False)])
    take_automated_snapshot(clients.rds, identifier)
    return config, clients


def lambda_export(config, clients, *, prefix: str = "", export_only=None) -> str:
    """What the Lambda design does: identifier = the snapshot's name, the bucket root."""
    source = config.rds.instances[0]
    snapshot = find_snapshot(clients.rds, source)
    identifier = re.sub(r"[^A-Za-z0-9]+", "-", snapshot.identifier).strip("-")
    clients.rds.start_export_task(
        ExportTaskIdentifier=identifier,
        SourceArn=snapshot.arn,
        S3BucketName=config.aws.export_bucket,
        S3Prefix=prefix,
        IamRoleArn=source.iam_role_arn,
        KmsKeyId=source.kms_key_id,
        **({"ExportOnly": export_only} if export_only else {}),
    )
    return identifier


def finished(clients, identifier: str) -> None:
    wait_for_export(
        clients.rds, identifier, max_interval_seconds=0.2, timeout_seconds=60, retry_hint=""
    )


def tasks_of_snapshot(config, clients) -> list[dict]:
    snapshot = find_snapshot(clients.rds, config.rds.instances[0])
    return clients.rds.describe_export_tasks(SourceArn=snapshot.arn)["ExportTasks"]


def export_metadata(result, config) -> dict:
    key = AssetKey(["rds", f"{config.rds.instances[0].identifier}_snapshot_export"])
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def bigquery_rows(bigquery_client, config) -> int:
    table = f"{config.bigquery.project}.{config.bigquery.dataset}.rds_app_people"
    [row] = bigquery_client.query(f"SELECT COUNT(*) AS n FROM `{table}`").result()
    return row.n


def test_a_running_or_complete_foreign_export_is_adopted_and_loaded(
    team_source, bigquery_client
) -> None:
    config, clients = team_source
    config = config.model_copy(
        update={
            "aws": config.aws.model_copy(
                update={"readable_s3_locations": [f"s3://{config.aws.export_bucket}"]}
            )
        }
    )
    theirs = lambda_export(config, clients)
    result = run_rds(config, DagsterInstance.ephemeral())
    metadata = export_metadata(result, config)
    assert metadata["export_task_identifier"] == theirs
    assert metadata["export_adopted"] is True
    assert [t["ExportTaskIdentifier"] for t in tasks_of_snapshot(config, clients)] == [theirs]
    assert bigquery_rows(bigquery_client, config) == len(ROWS)


def test_a_foreign_export_outside_the_readable_locations_is_passed_over_in_one_line(
    team_source,
) -> None:
    config, clients = team_source
    theirs = lambda_export(config, clients)
    wait_for_export(
        clients.rds, theirs, max_interval_seconds=0.2, timeout_seconds=60, retry_hint=""
    )
    instance = DagsterInstance.ephemeral()
    result = run_rds(config, instance)
    metadata = export_metadata(result, config)
    assert metadata["export_adopted"] is False
    assert metadata["export_task_identifier"] != theirs  # its own: theirs cannot be read
    assert len(tasks_of_snapshot(config, clients)) == 2
    [line] = [
        record.user_message
        for record in instance.all_logs(result.run_id)
        if "is not used" in record.user_message
    ]
    assert theirs in line and "aws.readable_s3_locations" in line


def test_passed_over_export_is_named_in_the_run_log(team_source) -> None:
    config, clients = team_source
    theirs = lambda_export(config, clients, export_only=["app.other"])
    wait_for_export(
        clients.rds, theirs, max_interval_seconds=0.2, timeout_seconds=60, retry_hint=""
    )
    instance = DagsterInstance.ephemeral()
    result = run_rds(config, instance)
    logs = [
        record.user_message
        for record in instance.all_logs(result.run_id)
        if "is not used" in record.user_message
    ]
    assert len(logs) == 1 and theirs in logs[0] and "app.other" in logs[0]


def test_adoption_switched_off_starts_the_pipelines_own(team_source) -> None:
    config, clients = team_source
    config = config.model_copy(
        update={
            "rds": config.rds.model_copy(update={"adopt_foreign_exports": False}),
            "aws": config.aws.model_copy(
                update={"readable_s3_locations": [f"s3://{config.aws.export_bucket}"]}
            ),
        }
    )
    theirs = lambda_export(config, clients)
    wait_for_export(
        clients.rds, theirs, max_interval_seconds=0.2, timeout_seconds=60, retry_hint=""
    )
    metadata = export_metadata(run_rds(config, DagsterInstance.ephemeral()), config)
    assert metadata["export_task_identifier"] != theirs
    assert metadata["export_adopted"] is False


def test_a_running_export_that_does_not_fit_is_an_error_saying_why(team_source) -> None:
    config, clients = team_source
    snapshot = find_snapshot(clients.rds, config.rds.instances[0])
    clients.rds.add_tags_to_resource(  # the local export of this snapshot takes 60 s
        ResourceName=snapshot.arn, Tags=[{"Key": "local-cloud:export-seconds", "Value": "60"}]
    )
    theirs = lambda_export(config, clients, export_only=["app.other"])
    try:
        result = run_rds(config, DagsterInstance.ephemeral(), raise_on_error=False)
        text = "\n".join(str(e.event_specific_data.error) for e in result.get_step_failure_events())
        assert theirs in text and "one export per snapshot" in text and "re-run" in text
        assert [t["ExportTaskIdentifier"] for t in tasks_of_snapshot(config, clients)] == [theirs]
    finally:
        clients.rds.cancel_export_task(ExportTaskIdentifier=theirs)


def test_a_reload_from_an_unreadable_location_fails_before_any_request(
    team_source, bigquery_client
) -> None:
    config, clients = team_source
    theirs = lambda_export(config, clients, prefix="2020-Nov")
    wait_for_export(
        clients.rds, theirs, max_interval_seconds=0.2, timeout_seconds=60, retry_hint=""
    )
    key = AssetKey(["bigquery", config.bigquery.dataset, "rds_app_people"])
    reload = {"ops": {key.to_python_identifier(): {"config": {"export_task_identifier": theirs}}}}
    result = run_rds(
        config,
        DagsterInstance.ephemeral(),
        selection=[key],
        run_config=reload,
        raise_on_error=False,
    )
    text = "\n".join(str(e.event_specific_data.error) for e in result.get_step_failure_events())
    wanted = f"s3://{config.aws.export_bucket}/2020-Nov"
    assert "aws.readable_s3_locations" in text and wanted in text
    readable = config.model_copy(
        update={"aws": config.aws.model_copy(update={"readable_s3_locations": [wanted]})}
    )
    run_rds(readable, DagsterInstance.ephemeral(), selection=[key], run_config=reload)
    assert bigquery_rows(bigquery_client, readable) == len(ROWS)


def test_the_unreadable_location_error_is_permanent() -> None:
    from export_pipeline.errors import classify
    from export_pipeline.s3_locations import check_readable

    with pytest.raises(UnreadableLocationError) as caught:
        check_readable("x", "bkt", "elsewhere", [S3Location("bkt", "exports")])
    assert classify(caught.value).transient is False
