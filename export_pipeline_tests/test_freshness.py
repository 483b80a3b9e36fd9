"""Freshness checks derived from the schedule: wired into the jobs, and right about time.

The checks are Dagster's own (`build_last_update_freshness_checks`), so what
is tested here is what this project decides: which assets get one, the
deadline and lower bound taken from `schedule.cron`, that every job runs them
after the load, and that the sensor re-evaluates them. Time is controlled with
Dagster's `freeze_time`; loads are materialization events in a real
(ephemeral) instance, which is all a freshness check reads.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetMaterialization,
    AssetSelection,
    DagsterInstance,
    Definitions,
    RunRequest,
    SkipReason,
    build_sensor_context,
    define_asset_job,
)
from dagster._core.test_utils import freeze_time

from export_pipeline.config import DEFAULT_CONFIG_PATH, PipelineConfig, ScheduleConfig, load_config
from export_pipeline.graph.freshness import (
    FRESHNESS_CHECK,
    SENSOR_NAME,
    build_freshness_checks,
    build_freshness_sensor,
    longest_tick_interval,
)
from export_pipeline.registry import configured_sources
from export_pipeline_tests.support.principals import pipeline_definitions

DAILY_UTC = ScheduleConfig(cron="0 3 * * *", timezone="UTC")
ORDERS = AssetKey(["bigquery", "aws_raw", "dynamodb_orders"])


def _at(day: int, hour: int, minute: int) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


@pytest.fixture(scope="module")
def demo_config() -> PipelineConfig:
    return load_config(DEFAULT_CONFIG_PATH)


@pytest.mark.parametrize(
    ("cron", "timezone", "expected"),
    [
        ("0 3 * * *", "UTC", timedelta(hours=24)),
        ("*/15 * * * *", "UTC", timedelta(minutes=15)),
        ("0 3 * * 1-5", "UTC", timedelta(days=3)),  # Friday to Monday
        ("0 3 * * *", "Europe/Dublin", timedelta(hours=25)),  # the night clocks go back
    ],
)
def test_lower_bound_is_the_longest_interval_between_ticks(cron, timezone, expected) -> None:
    schedule = ScheduleConfig(cron=cron, timezone=timezone)
    assert longest_tick_interval(schedule, start=_at(1, 0, 0)) == expected


def test_every_bigquery_table_has_a_freshness_check_run_by_its_jobs(demo_config) -> None:
    defs = pipeline_definitions(demo_config)
    repository = defs.get_repository_def()
    tables = {
        key
        for job in repository.get_all_jobs()
        for key in job.asset_layer.executable_asset_keys
        if key.path[0] == "bigquery"
    }
    assert len(tables) == 8
    for job_name in (
        "aws_to_bigquery",
        "dynamodb_to_bigquery",
        "rds_to_bigquery",
        "rds_postgres_to_bigquery",
    ):
        job = repository.get_job(job_name)
        job_tables = {k for k in job.asset_layer.executable_asset_keys if k.path[0] == "bigquery"}
        checks = set(job.asset_layer.asset_graph.asset_check_keys)
        assert {AssetCheckKey(k, FRESHNESS_CHECK) for k in job_tables} <= checks, job_name
        # One check step, whose inputs are the job's table steps: it runs after the loads.
        (check_node,) = [n for n in job.graph.node_dict if n.startswith("freshness_check_")]
        upstream = job.graph.dependency_structure.input_to_upstream_outputs_for_node(check_node)
        assert sorted(o.node_name for outs in upstream.values() for o in outs) == sorted(
            t.to_python_identifier() for t in job_tables
        ), job_name
    specs = [
        spec
        for c in build_freshness_checks(sorted(tables), demo_config.schedule)
        for spec in c.check_specs
    ]
    assert {spec.asset_key for spec in specs} == tables
    for spec in specs:
        params = spec.metadata["dagster/freshness_params"].value
        assert params["deadline_cron"] == demo_config.schedule.cron == "0 3 * * *"
        assert params["timezone"] == demo_config.schedule.timezone == "Europe/Dublin"
        # Daily at 03:00 Dublin: the longest interval is the night the clocks go back.
        assert params["lower_bound_delta_seconds"] == 25 * 3600
    assert SENSOR_NAME in {s.name for s in defs.sensors or []}


def _table_keys(config: PipelineConfig) -> list[AssetKey]:
    return [
        table.key
        for source in configured_sources(config)
        for unit in source.units()
        for table in unit.tables
    ]


def _orders_check_job(config: PipelineConfig):
    checks = build_freshness_checks(_table_keys(config), config.schedule)
    selection = AssetSelection.checks(AssetCheckKey(ORDERS, FRESHNESS_CHECK))
    job = define_asset_job("orders_freshness", selection=selection)
    return Definitions(asset_checks=checks, jobs=[job]).resolve_job_def(job.name), checks


def _evaluate(job, instance: DagsterInstance, when: datetime):
    with freeze_time(when):
        result = job.execute_in_process(instance=instance, raise_on_error=True)
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.asset_check_key == AssetCheckKey(ORDERS, FRESHNESS_CHECK)
    return evaluation


def test_fresh_after_a_load_until_a_scheduled_run_is_missed(demo_config) -> None:
    config = demo_config.model_copy(update={"schedule": DAILY_UTC})
    job, _ = _orders_check_job(config)
    instance = DagsterInstance.ephemeral()

    never = _evaluate(job, instance, _at(10, 3, 21))
    assert not never.passed, "a table never loaded is not fresh"

    with freeze_time(_at(10, 3, 20)):  # the 03:00 run loads the table at 03:20
        instance.report_runless_asset_event(AssetMaterialization(asset_key=ORDERS))
    assert _evaluate(job, instance, _at(10, 3, 21)).passed  # right after the load
    assert _evaluate(job, instance, _at(11, 2, 59)).passed  # before the next tick
    # The next day's run has started but not loaded yet: no false alarm.
    assert _evaluate(job, instance, _at(11, 3, 1)).passed
    # That run never loaded the table: overdue from the tick after it.
    late = _evaluate(job, instance, _at(12, 3, 1))
    assert not late.passed
    lower_bound = late.metadata["dagster/freshness_lower_bound_timestamp"].value
    assert lower_bound == _at(11, 3, 0).timestamp()
    assert late.metadata["dagster/last_updated_timestamp"].value == _at(10, 3, 20).timestamp()
    assert "overdue" in (late.description or "")


def test_sensor_re_evaluates_a_passing_check_once_its_next_deadline_passed(demo_config) -> None:
    config = demo_config.model_copy(update={"schedule": DAILY_UTC})
    job, checks = _orders_check_job(config)
    (sensor,) = build_freshness_sensor(checks)
    instance = DagsterInstance.ephemeral()
    with freeze_time(_at(10, 3, 20)):
        instance.report_runless_asset_event(AssetMaterialization(asset_key=ORDERS))
    assert _evaluate(job, instance, _at(10, 3, 21)).passed
    orders_check = AssetCheckKey(ORDERS, FRESHNESS_CHECK)

    def tick(when: datetime) -> set[AssetCheckKey]:
        with freeze_time(when), build_sensor_context(instance=instance) as context:
            result = sensor(context)
        if isinstance(result, SkipReason):
            return set()
        assert isinstance(result, RunRequest)
        return set(result.asset_check_keys or [])

    assert orders_check not in tick(_at(11, 2, 59))  # fresh until the next tick
    assert orders_check in tick(_at(11, 3, 1))
