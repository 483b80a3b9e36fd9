"""Two overlapping runs loading one BigQuery table: one waits for the other, and says so.

Each BigQuery table asset runs in a pool named after its table
(`bigquery_<dataset>_<table>`); with the pool limit 1 (deploy/dagster.yaml:
`concurrency: pools: default_limit: 1`) Dagster lets one step of that pool
run at a time across all runs, and the waiting step logs an engine event
"Step blocked by limit for pool <pool>". The test runs on the instance
deploy/dagster.yaml configures (storage in the PostgreSQL server on
127.0.0.1:5432, a scratch database): slots are claimed with row locks there,
while Dagster's SQLite storage can hand one slot to two processes that
claim it at the same moment (seen under load), so SQLite is no place to
prove the pool.

The two runs start together, each in its own process as Dagster's run
launcher would start them, both loading the same export; the
first one's manifest read is held up 3 s by the fault proxy (a `delay`, the
only stand-in) so that the runs overlap for certain.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from dagster import DagsterEventType, DagsterInstance, materialize

from export_pipeline.dynamodb.source import DynamoDBSource
from export_pipeline.graph.assets import build_source_assets
from export_pipeline.pools_cli import set_pools
from export_pipeline.rds.source import RdsSource
from export_pipeline_tests.dynamodb._pipeline_helpers import (
    assets_for,
    bigquery_rows,
    create_table,
    make_config,
    materialization_metadata,
    op_pools,
    publish_step_key,
)
from export_pipeline_tests.faults.proxy import delay, fault_proxy
from export_pipeline_tests.support.dagster_postgres import deployed_home, scratch_database
from export_pipeline_tests.support.principals import pipeline_resources


def _step_window(instance, run_id, step_key) -> tuple[float, float]:
    logs = instance.all_logs(run_id)
    start = next(
        e.timestamp
        for e in logs
        if e.dagster_event_type == DagsterEventType.STEP_START and e.step_key == step_key
    )
    end = next(
        e.timestamp
        for e in logs
        if e.dagster_event_type == DagsterEventType.STEP_SUCCESS and e.step_key == step_key
    )
    return start, end


# One load run, in its own process (as the daemon would launch it): the arguments are the
# DynamoDB table, the export ARN and the fault proxy's URL; DAGSTER_HOME names the instance.
_LOAD_ONE = """
import sys
from dagster import DagsterInstance, materialize
from export_pipeline_tests.support.principals import pipeline_resources
from export_pipeline_tests.dynamodb._pipeline_helpers import assets_for, make_config
from export_pipeline_tests.faults.proxy import _with_fields

table, arn, proxy_url = sys.argv[1:4]
config = make_config(table)
export_asset, bigquery_asset = assets_for(config)
resources = pipeline_resources(config)
for key in ("s3", "dynamodb"):
    resources[key] = _with_fields(resources[key], endpoint_url=proxy_url)
with DagsterInstance.get() as instance:
    result = materialize(
        [export_asset, bigquery_asset],
        selection=[bigquery_asset.key],
        resources=resources,
        instance=instance,
        run_config={"ops": {bigquery_asset.node_def.name: {"config": {"export_arn": arn}}}},
        raise_on_error=False,
    )
print("RUN", result.run_id, result.success)
"""


@pytest.mark.needs("postgresql")
def test_two_runs_loading_one_table_take_turns_and_the_second_says_why(
    tmp_path, local_cloud, aws_clients, bigquery_client, unique_name, monkeypatch
):
    table = f"conc-{unique_name}"
    create_table(aws_clients.dynamodb, table, [{"pk": {"S": k}} for k in ("a", "b", "c")])
    config = make_config(table)
    export_asset, bigquery_asset = assets_for(config)
    with scratch_database() as database, monkeypatch.context() as patched:
        settings = deployed_home(tmp_path / "dagster_home", database)
        for name, value in settings.items():
            patched.setenv(name, value)
        _take_turns(table, config, export_asset, bigquery_asset, local_cloud)
    # One consistent result: every item once.
    assert sorted(bigquery_rows(bigquery_client, table)) == ["a", "b", "c"]


def _take_turns(table, config, export_asset, bigquery_asset, local_cloud) -> None:
    (pool,) = op_pools(bigquery_asset)
    with DagsterInstance.get() as instance:
        exported = materialize(
            [export_asset], resources=pipeline_resources(config), instance=instance
        )
        environment = dict(os.environ)  # with the principal's keys, for the runs to inherit
        arn = materialization_metadata(exported, export_asset.key)["export_arn"]
        # As a deployment does (`export-pipeline pools --set`): created on first use
        # instead, two steps starting together could both create a slot, and both run.
        set_pools(instance, [pool])
        with fault_proxy(local_cloud.host, local_cloud.aws_port) as proxy:
            # Every read of the export's summary is slow: the publish step reads it
            # too, holding the table's pool, while the other run's publish waits.
            held = proxy.add(delay(3), method="GET", path=r"/manifest-summary\.json$", times=1000)
            runs = [
                subprocess.Popen(
                    [sys.executable, "-c", _LOAD_ONE, table, arn, proxy.url],
                    env=environment,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
                for _ in range(2)
            ]
            outputs = [run.communicate(timeout=120)[0] for run in runs]
        assert held.fired >= 4  # at least prepare and publish in each run
        finished = [line.split() for out in outputs for line in out.splitlines()]
        finished = [line for line in finished if line and line[0] == "RUN"]
        assert [line[2] for line in finished] == ["True", "True"], outputs
        run_ids = [line[1] for line in finished]

        step = publish_step_key(bigquery_asset)
        windows = sorted(_step_window(instance, run_id, step) for run_id in run_ids)
        assert windows[0][1] <= windows[1][0] + 0.5, f"the loads overlapped: {windows}"
        blocked = {
            run_id: [
                e.dagster_event.message
                for e in instance.all_logs(run_id)
                if e.dagster_event_type == DagsterEventType.ENGINE_EVENT
                and "blocked by limit for pool" in str(e.dagster_event.message)
            ]
            for run_id in run_ids
        }
        waited = [run_id for run_id, messages in blocked.items() if messages]
        assert len(waited) == 1, blocked
        assert pool in blocked[waited[0]][0]


def test_every_bigquery_table_has_a_pool_of_its_own(pipeline_config):
    pools = {}
    for source in (DynamoDBSource(pipeline_config), RdsSource(pipeline_config)):
        for definition in build_source_assets(source):
            (pools[definition.key.to_user_string()],) = op_pools(definition)
    assert all(pools.values()) and len(set(pools.values())) == len(pools)
    assert pools["bigquery/aws_raw/dynamodb_orders"] == "bigquery_aws_raw_dynamodb_orders"
    assert pools["bigquery/aws_raw/rds_shop_orders"] == "bigquery_aws_raw_rds_shop_orders"
    assert pools["dynamodb/Orders_export"] == "dynamodb_export_Orders"
    assert pools["rds/shopdb_snapshot_export"] == "rds_export_shopdb"


def test_pools_set_creates_every_pool_of_the_graph_once(tmp_path, pipeline_config):
    """`export-pipeline pools --set` on an instance: each pool of the configured graph
    gets one slot (the instance's default limit), and running it again changes nothing."""
    from export_pipeline.pools_cli import pool_names

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("concurrency:\n  pools:\n    default_limit: 1\n")
    command = [sys.executable, "-m", "export_pipeline.cli", "pools", "--set"]
    environment = {**os.environ, "DAGSTER_HOME": str(home)}
    for _ in range(2):
        done = subprocess.run(command, env=environment, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    pools = pool_names(pipeline_config)
    assert done.stdout.splitlines() == [f"{pool}: limit 1" for pool in pools]
    assert {"bigquery_aws_raw_dynamodb_orders", "rds_export_shopdb"} <= set(pools)
    with DagsterInstance.from_config(str(home)) as instance:
        for pool in pools:
            assert instance.event_log_storage.get_concurrency_info(pool).slot_count == 1, pool
