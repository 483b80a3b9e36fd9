"""deploy/dagster.yaml works: a real PostgreSQL instance stores runs, events and sensor state.

Uses the PostgreSQL server on 127.0.0.1:5432 (user postgres, trust auth) with a
database of its own, dropped afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    DagsterRunStatus,
    MaterializeResult,
    asset,
    materialize,
)
from dagster._core.run_coordinator import QueuedRunCoordinator

from export_pipeline_tests.support.dagster_postgres import (
    PG,
    deployed_home,
    scratch_database,
)

pytestmark = pytest.mark.needs("postgresql")


@pytest.fixture
def postgres_database() -> Iterator[str]:
    with scratch_database() as name:
        yield name


@pytest.fixture
def deployed_instance(
    postgres_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[DagsterInstance]:
    for name, value in deployed_home(tmp_path / "dagster_home", postgres_database).items():
        monkeypatch.setenv(name, value)
    instance = DagsterInstance.from_config(str(tmp_path / "dagster_home"))
    try:
        yield instance
    finally:
        instance.dispose()


def _tables(database: str) -> set[str]:
    connection = psycopg2.connect(dbname=database, **PG)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            return {row[0] for row in cursor.fetchall()}
    finally:
        connection.close()


def _count(database: str, sql: str) -> int:
    connection = psycopg2.connect(dbname=database, **PG)
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchone()[0]
    finally:
        connection.close()


def test_instance_uses_postgres_and_the_run_queue(
    deployed_instance: DagsterInstance, postgres_database: str
) -> None:
    storage = type(deployed_instance.run_storage).__module__
    assert storage.startswith("dagster_postgres"), storage
    assert type(deployed_instance.event_log_storage).__module__.startswith("dagster_postgres")
    assert type(deployed_instance.schedule_storage).__module__.startswith("dagster_postgres")
    assert isinstance(deployed_instance.run_coordinator, QueuedRunCoordinator)
    settings = deployed_instance.get_concurrency_config()
    assert settings.run_queue_config.max_concurrent_runs == 4
    limits = {
        (limit["key"], str(limit.get("value"))): limit["limit"]
        for limit in settings.run_queue_config.tag_concurrency_limits
    }
    assert limits[("export_pipeline/source", "rds")] == 2
    # One step at a time per pool: every pool is one table or one export source.
    assert settings.pool_config.default_pool_limit == 1
    assert settings.pool_config.pool_granularity.value == "op"
    assert deployed_instance.run_monitoring_enabled
    assert deployed_instance.run_retries_enabled
    assert {"runs", "event_logs", "jobs", "job_ticks"} <= _tables(postgres_database)


def test_materialization_is_stored_in_postgres(
    deployed_instance: DagsterInstance, postgres_database: str
) -> None:
    @asset(key=["ops_check", "trivial"])
    def trivial() -> MaterializeResult:
        return MaterializeResult(metadata={"rows": 3})

    result = materialize([trivial], instance=deployed_instance)
    assert result.success
    run = deployed_instance.get_run_by_id(result.run_id)
    assert run is not None and run.status == DagsterRunStatus.SUCCESS
    event = deployed_instance.get_latest_materialization_event(AssetKey(["ops_check", "trivial"]))
    assert event is not None
    assert event.asset_materialization.metadata["rows"].value == 3
    # Really in PostgreSQL, not in a local file: count the rows with psycopg2.
    assert _count(postgres_database, "SELECT count(*) FROM runs") == 1
    assert (
        _count(
            postgres_database,
            "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'",
        )
        == 1
    )
