"""The schedule and the sensors in a real daemon run: runs, cursors, a restart.

One scenario on one temporary Dagster instance (SQLite under a temporary
DAGSTER_HOME, queued runs), against the session's local cloud, with a small
configuration: one RDS instance of this test with one table, `wait: sensor`,
a schedule every minute. Dagster runs as subprocesses: first `dagster dev`
(webserver, daemon, code server), then, restarted, `dagster-daemon run` alone.

1. The snapshot sensor has seen the instance's first snapshot (its cursor is
   set, as after earlier ticks); a new snapshot is taken and the sensor is
   switched on through the webserver's GraphQL API (what the UI's toggle
   does). The daemon's tick requests exactly one run (run key per snapshot)
   and advances the cursor; a further tick requests nothing.
2. That run only starts the export (sensor mode). The schedule is switched on
   and the daemon stopped while the export still runs (the snapshot is tagged
   so that the local cloud takes 40 s over it).
3. After the restart the schedule ticks (its run reuses the export), and the
   completion sensor requests the load exactly once: one export task for the
   snapshot, one load with the source's rows, row-count and freshness checks
   passing, no further request.

The sensors' minimum intervals (300 s, 60 s) are the daemon's to enforce. To
get a tick without waiting, the test moves the sensor's recorded last tick back
an hour in the instance (only between ticks, when the daemon is not writing
that state): the daemon then ticks at its next loop, as it would later anyway.
The processes are started in a session of their own and all killed at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from dagster import AssetCheckKey, DagsterEventType, DagsterInstance, RunsFilter
from dagster._core.definitions.run_request import InstigatorType
from dagster._core.scheduler.instigation import InstigatorState, InstigatorTick, TickStatus
from dagster._core.storage.dagster_run import DagsterRunStatus

from export_pipeline.config import REPO_ROOT, PipelineConfig
from export_pipeline.contract import ROW_COUNT_CHECK
from export_pipeline.graph.completion_sensor import SENSOR_NAME as COMPLETION_SENSOR
from export_pipeline.graph.freshness import FRESHNESS_CHECK
from export_pipeline.local_cloud.rds_client import live_store
from export_pipeline.local_cloud.rds_store import Column
from export_pipeline.rds.snapshot_sensor import SnapshotCursor, run_key, sensor_name
from export_pipeline.rds.source import EXPORT_ID_METADATA, table_asset_key
from export_pipeline_tests.support.local_cloud import free_ports
from export_pipeline_tests.support.principals import pipeline_environment
from export_pipeline_tests.support.rds import create_mysql_instance

DAGSTER = Path(sys.executable).with_name("dagster")
DAGSTER_DAEMON = Path(sys.executable).with_name("dagster-daemon")
SCHEDULE = "aws_to_bigquery_schedule"
LOCATION = "export_pipeline"  # workspace.yaml
DATABASE, TABLE = "daemondb", "items"
ROWS = [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}, {"id": 3, "name": None}]
EXPORT_SECONDS = 40  # long enough to stop the daemon while the export runs
TIMEOUT = 90.0
POLL = 0.5
T = TypeVar("T")

INSTANCE_YAML = """\
# Like deploy/dagster.yaml, on SQLite: queued runs, sensors and schedules in threads.
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
sensors:
  use_threads: true
  num_workers: 4
schedules:
  use_threads: true
  num_workers: 2
telemetry:
  enabled: false
"""


class DagsterDev:
    """`dagster dev` (or `dagster-daemon run`) in its own session; all of it killed on stop."""

    def __init__(self, home: Path, env: dict[str, str], log: Path) -> None:
        self.home, self.env, self.log = home, env, log
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, webserver: bool = True) -> None:
        """`dagster dev` with the webserver, else the daemon alone (`dagster-daemon run`)."""
        (self.port,) = free_ports(1)
        workspace = ["-w", str(REPO_ROOT / "workspace.yaml")]
        command = (
            [str(DAGSTER), "dev", *workspace, "-p", str(self.port)]
            if webserver
            else [str(DAGSTER_DAEMON), "run", *workspace]
        )
        with self.log.open("ab") as out:
            out.write(f"\n=== {' '.join(command)} ===\n".encode())
            self.process = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def tail(self, lines: int = 60) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def graphql(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/graphql",
            data=json.dumps({"query": query, "variables": variables}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def _members(self) -> list[int]:
        """Processes of the session `dagster dev` leads (run workers included)."""
        if self.process is None:
            return []
        members = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[3]) == self.process.pid:
                members.append(int(entry))
        return members

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM (dagster dev shuts its children down), then SIGKILL what is left."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and (self.process.poll() is None or self._members()):
            time.sleep(0.2)
        for pid in self._members():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None


def _wait(what: str, probe: Callable[[], T | None], dev: DagsterDev, timeout: float = TIMEOUT) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if dev.process is not None and dev.process.poll() is not None:
            raise AssertionError(f"dagster dev exited while waiting for {what}:\n{dev.tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout:.0f} s; dagster dev log:\n{dev.tail()}")
        time.sleep(POLL)


def _state(instance: DagsterInstance, name: str) -> InstigatorState | None:
    for kind in (InstigatorType.SENSOR, InstigatorType.SCHEDULE):
        for state in instance.all_instigator_state(instigator_type=kind):
            if state.name == name:
                return state
    return None


def _ticks(instance: DagsterInstance, name: str) -> list[InstigatorTick]:
    """Newest first."""
    state = _state(instance, name)
    if state is None:
        return []
    return list(instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=20))


def _done(tick: InstigatorTick) -> bool:
    return tick.status in (TickStatus.SUCCESS, TickStatus.SKIPPED, TickStatus.FAILURE)


def _settled(instance: DagsterInstance, name: str) -> InstigatorTick | None:
    """The sensor's latest tick once it is complete AND its cursor is written.

    The daemon marks the tick done before it writes the sensor's state.
    """
    state = _state(instance, name)
    ticks = _ticks(instance, name)
    data = state.instigator_data if state else None
    if data is None or not ticks or not _done(ticks[0]):
        return None
    return ticks[0] if data.last_tick_timestamp == ticks[0].timestamp else None


def _tick_now(instance: DagsterInstance, name: str) -> bool:
    """Move the sensor's last tick back an hour (only between ticks: see `_settled`)."""
    latest = _settled(instance, name)
    state = _state(instance, name)
    if latest is None or state is None:
        return False
    back = latest.timestamp - 3600
    data = state.instigator_data
    instance.update_instigator_state(
        state.with_data(data._replace(last_tick_timestamp=back, last_tick_start_timestamp=back))
    )
    return True


def _next_tick(
    instance: DagsterInstance, dev: DagsterDev, name: str, after: int | None
) -> InstigatorTick:
    """The sensor's next completed tick after tick id `after`, asked for without waiting."""

    def probe() -> InstigatorTick | None:
        latest = _settled(instance, name)
        if latest is not None and (after is None or latest.tick_id > after):
            return latest
        if latest is not None:
            _tick_now(instance, name)
        return None

    return _wait(f"new tick of {name}", probe, dev)


def _latest_tick_id(instance: DagsterInstance, name: str) -> int | None:
    ticks = _ticks(instance, name)
    return ticks[0].tick_id if ticks else None


def _runs(instance: DagsterInstance, **tags: str):
    return instance.get_runs(filters=RunsFilter(tags=tags))


def _finished(instance: DagsterInstance, run_ids: list[str]) -> list[Any] | None:
    runs = [instance.get_run_by_id(i) for i in run_ids]
    return runs if all(r is not None and r.is_finished for r in runs) else None


def _start(dev: DagsterDev, kind: str, name: str) -> None:
    selector = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__"}
    if kind == "sensor":
        query = (
            "mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) { __typename "
            "... on PythonError { message } } }"
        )
        variables = {"s": {**selector, "sensorName": name}}
        expected = "Sensor"
    else:
        query = (
            "mutation($s: ScheduleSelector!) { startSchedule(scheduleSelector: $s) { "
            "__typename ... on PythonError { message } } }"
        )
        variables = {"s": {**selector, "scheduleName": name}}
        expected = "ScheduleStateResult"
    answer = dev.graphql(query, variables)
    result = next(iter(answer["data"].values()))
    assert result["__typename"] == expected, (answer, dev.tail())


def _set_cursor(dev: DagsterDev, name: str, cursor: str) -> None:
    query = (
        "mutation($s: SensorSelector!, $c: String) { setSensorCursor(sensorSelector: $s, "
        "cursor: $c) { __typename ... on PythonError { message } } }"
    )
    selector = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__"}
    answer = dev.graphql(query, {"s": {**selector, "sensorName": name}, "c": cursor})
    assert answer["data"]["setSensorCursor"]["__typename"] == "Sensor", (answer, dev.tail())


def _location_loaded(dev: DagsterDev) -> bool:
    query = "{ workspaceOrError { ... on Workspace { locationEntries { name "
    query += "locationOrLoadError { __typename } } } } }"
    try:
        answer = dev.graphql(query, {})
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False
    entries = answer.get("data", {}).get("workspaceOrError", {}).get("locationEntries", [])
    return any(
        e["name"] == LOCATION
        and (e.get("locationOrLoadError") or {}).get("__typename") == "RepositoryLocation"
        for e in entries
    )


def _export_tasks(aws_clients, snapshot_arn: str) -> list[dict[str, Any]]:
    return aws_clients.rds.describe_export_tasks(SourceArn=snapshot_arn)["ExportTasks"]


@pytest.fixture
def scenario(
    local_cloud, aws_clients, pipeline_config: PipelineConfig, unique_name: str, tmp_path: Path
) -> Iterator[tuple[DagsterDev, DagsterInstance, PipelineConfig, str]]:
    """An RDS instance with one table, its configuration, a DAGSTER_HOME; dagster dev stopped."""
    identifier = "d" + unique_name
    store = live_store(local_cloud.state_dir, aws_clients.region, identifier)
    store.create_table(
        DATABASE,
        TABLE,
        [Column("id", "int", nullable=False), Column("name", "varchar(20)", nullable=True)],
    )
    store.insert(DATABASE, TABLE, ROWS)
    create_mysql_instance(aws_clients.rds, identifier)  # with an automated snapshot
    template = pipeline_config.rds.instances[0]
    raw = pipeline_config.model_dump(mode="json", exclude_none=True)
    raw["dynamodb"] = {"tables": []}
    raw["rds"] = {
        "instances": [
            {
                "identifier": identifier,
                "export_only": [f"{DATABASE}.{TABLE}"],
                "iam_role_arn": template.iam_role_arn,
                "kms_key_id": template.kms_key_id,
                "wait": "sensor",
            }
        ]
    }
    raw["schedule"] = {"cron": "* * * * *", "timezone": "UTC"}
    config_file = tmp_path / "pipeline.yaml"
    config_file.write_text(yaml.safe_dump(raw), encoding="utf-8")
    config = PipelineConfig.model_validate(raw)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML, encoding="utf-8")
    env = pipeline_environment(
        config,
        {**os.environ, "DAGSTER_HOME": str(home), "EXPORT_PIPELINE_CONFIG": str(config_file)},
    )
    dev = DagsterDev(home, env, tmp_path / "dagster-dev.log")
    instance = DagsterInstance.from_config(str(home))
    try:
        yield dev, instance, config, identifier
    finally:
        dev.stop()
        instance.dispose()


def test_schedule_and_sensors_in_a_real_dagster_dev_run(scenario, aws_clients, bigquery_client):
    dev, instance, config, identifier = scenario
    source = config.rds.instances[0]
    snapshot_sensor = sensor_name(source)
    table_key = table_asset_key(config, DATABASE, TABLE)

    # 1. The sensor has seen the first snapshot; a new one is taken; the daemon notices it.
    (first,) = aws_clients.rds.describe_db_snapshots(DBInstanceIdentifier=identifier)["DBSnapshots"]
    seen = SnapshotCursor(first["SnapshotCreateTime"], frozenset({first["DBSnapshotIdentifier"]}))
    new = aws_clients.rds.create_db_snapshot(
        DBInstanceIdentifier=identifier,
        DBSnapshotIdentifier=f"{identifier}-new",
        Tags=[{"Key": "local-cloud:export-seconds", "Value": str(EXPORT_SECONDS)}],
    )["DBSnapshot"]
    dev.start()
    _wait("code location loaded in the webserver", lambda: _location_loaded(dev), dev)
    _set_cursor(dev, snapshot_sensor, seen.to_json())
    _start(dev, "sensor", snapshot_sensor)

    tick = _wait("snapshot sensor tick", lambda: _settled(instance, snapshot_sensor), dev)
    assert tick.status == TickStatus.SUCCESS, (tick, dev.tail())
    assert tick.run_keys == [run_key(source, new["DBSnapshotIdentifier"])]
    assert len(tick.run_ids) == 1
    state = _state(instance, snapshot_sensor)
    cursor = SnapshotCursor.from_json(state.instigator_data.cursor)
    assert new["DBSnapshotIdentifier"] in cursor.ids_at_newest
    assert cursor.newest > seen.newest

    again = _next_tick(instance, dev, snapshot_sensor, tick.tick_id)
    assert again.status == TickStatus.SKIPPED and not again.run_ids, again
    assert len(_runs(instance, **{"dagster/sensor_name": snapshot_sensor})) == 1

    # 2. The run only starts the export; the daemon is stopped while it runs.
    (export_run,) = _wait("the export run", lambda: _finished(instance, tick.run_ids), dev)
    assert export_run.status == DagsterRunStatus.SUCCESS, dev.tail()
    (task,) = _export_tasks(aws_clients, new["DBSnapshotArn"])
    export_id = task["ExportTaskIdentifier"]
    assert instance.get_latest_materialization_event(table_key) is None  # not loaded yet
    # The schedule's first tick (next minute) must come after the stop, so its run is not
    # killed with the daemon: it is caught up on restart, or ticks live after it.
    left = 60 - time.time() % 60
    if left < 15:
        time.sleep(left + 1)
    _start(dev, "schedule", SCHEDULE)
    completion_before = _latest_tick_id(instance, COMPLETION_SENSOR)
    dev.stop()
    status = _export_tasks(aws_clients, new["DBSnapshotArn"])[0]["Status"]
    assert status in ("STARTING", "IN_PROGRESS"), f"export {export_id} no longer running: {status}"

    # 3. Restarted (the daemon alone, as in production), the completion sensor loads it once;
    # the schedule ticks (a tick missed while the daemon was down is caught up on restart).
    dev.start(webserver=False)
    schedule_tick = _wait(
        "schedule tick with a run",
        lambda: next((t for t in _ticks(instance, SCHEDULE) if t.run_ids), None),
        dev,
    )
    schedule_state = _state(instance, SCHEDULE)
    instance.stop_schedule(schedule_state.instigator_origin_id, schedule_state.selector_id, None)
    _wait(
        f"export {export_id} COMPLETE",
        lambda: _export_tasks(aws_clients, new["DBSnapshotArn"])[0]["Status"] == "COMPLETE",
        dev,
    )

    def load_tick() -> InstigatorTick | None:
        ticks = [
            t
            for t in _ticks(instance, COMPLETION_SENSOR)
            if completion_before is None or t.tick_id > completion_before
        ]
        requested = [t for t in ticks if _done(t) and t.run_ids]
        if requested:
            return requested[0]
        _tick_now(instance, COMPLETION_SENSOR)  # still waiting: tick again
        return None

    loaded_tick = _wait("completion sensor requesting the load", load_tick, dev)
    assert loaded_tick.run_keys == [f"load:{export_id}"], loaded_tick
    (load_run,) = _wait("the load run", lambda: _finished(instance, loaded_tick.run_ids), dev)
    assert load_run.status == DagsterRunStatus.SUCCESS, dev.tail()
    after = _next_tick(instance, dev, COMPLETION_SENSOR, loaded_tick.tick_id)
    assert not after.run_ids, after

    # The scheduled run(s) reused the export: no second export, no second load.
    scheduled = _runs(instance, **{"dagster/schedule_name": SCHEDULE})
    assert schedule_tick.run_ids[0] in {r.run_id for r in scheduled}
    scheduled_ids = [r.run_id for r in scheduled]
    finished = _wait("scheduled runs", lambda: _finished(instance, scheduled_ids), dev)
    assert {r.status for r in finished} == {DagsterRunStatus.SUCCESS}, dev.tail()
    assert {r.job_name for r in finished} == {"aws_to_bigquery"}

    # Exactly one export task for the snapshot and one load, with the source's rows.
    assert len(_export_tasks(aws_clients, new["DBSnapshotArn"])) == 1
    loads = instance.fetch_materializations(table_key, limit=10).records
    assert len(loads) == 1, loads
    metadata = loads[0].asset_materialization.metadata
    assert metadata[EXPORT_ID_METADATA].value == export_id
    assert metadata["dagster/row_count"].value == len(ROWS)
    table = metadata["dagster/table_name"].value
    (count,) = bigquery_client.query(f"SELECT COUNT(*) AS n FROM `{table}`").result()
    assert count["n"] == len(ROWS)
    evaluations = {
        e.dagster_event.event_specific_data.asset_check_key: e.dagster_event.event_specific_data
        for e in instance.all_logs(load_run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
    }
    for check in (ROW_COUNT_CHECK, FRESHNESS_CHECK):
        evaluation = evaluations[AssetCheckKey(table_key, check)]
        assert evaluation.passed, (check, evaluation)
