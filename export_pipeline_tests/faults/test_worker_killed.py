"""The run worker killed (SIGKILL) at each stage; the re-executed run finishes the job exactly once.

What production does after a worker dies (deploy/dagster.yaml): run
monitoring marks the run FAILED, its concurrency iteration frees the pool
slots the dead run still held (after `free_slots_after_run_end_seconds`), and
run retries re-execute the run FROM_FAILURE — a new run with the same root
run. These tests run the real job in a separate OS process (`_worker`), stop
it from the outside at a chosen stage — the fault proxy holds the request
that marks the stage and tells the test, which then sends SIGKILL — do the
daemon's two steps by hand through the instance API (the daemon itself is
Dagster's and tested by Dagster), and re-execute from failure without
faults. Then:

- exactly one export exists for the table / snapshot (no second export was
  started or paid for: ClientToken from the root run id and the root run's
  creation time; RDS task identifiers deterministic per snapshot);
- BigQuery equals the source: same keys, same values, no duplicate rows;
- incremental: the high-water mark is the export's window end, and a MERGE
  that BigQuery committed just before the worker died is not applied again.

One chain per source, one kill per stage: the run is killed at the first
stage, its re-execution at the next, and so on; the last re-execution runs
without faults (every kill is followed by a re-execution, as with run
retries, and the whole chain keeps one root run).

- DynamoDB full: export started (ExportTableToPointInTime answered, the first
  DescribeExport held), files half read (the 2nd data file's S3 GET held),
  staging loaded (the staging load jobs done, the next BigQuery request
  held), before swap (the CREATE OR REPLACE TABLE held);
- DynamoDB incremental: export started (the start reached DynamoDB, its
  answer never came back), MERGE committed (BigQuery ran the MERGE and moved
  the mark, its answer held);
- RDS: export started (the first DescribeExportTasks poll after
  StartExportTask held), before swap.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.instance.ref import InstanceRef

from export_pipeline import bigquery as core
from export_pipeline.config import PipelineConfig
from export_pipeline.local_cloud.dynamodb_time_control import shift_history
from export_pipeline.local_cloud.rds_client import live_store, take_automated_snapshot
from export_pipeline.local_cloud.rds_store import Column
from export_pipeline.naming import dynamodb_table_name
from export_pipeline_tests.faults import _runs
from export_pipeline_tests.faults._worker import RUN_TAG, WorkerPool, WorkerRequest, WorkerSpec
from export_pipeline_tests.faults.proxy import FaultProxy, Hold
from export_pipeline_tests.support.rds import create_mysql_instance

DEPLOY_INSTANCE = Path(__file__).resolve().parents[2] / "deploy" / "dagster.yaml"
STAGE_TIMEOUT = 60.0
RUN_TIMEOUT = 90.0
ITEMS = [
    {"pk": {"S": f"k{i}"}, "qty": {"N": str(i * 7 - 20)}, "note": {"S": f"note {i} ✓"}}
    for i in range(8)
]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory, local_cloud: Any) -> Iterator[WorkerPool]:
    """The zygote that forks run workers (started after the cloud: it inherits its env)."""
    pool = WorkerPool(tmp_path_factory.mktemp("workers") / "zygote.log")
    yield pool
    pool.close()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A DAGSTER_HOME with deploy/dagster.yaml's pools and run monitoring (SQLite storage).

    Pools matter: every asset runs in a pool of limit 1, and a worker killed
    inside a step still holds that pool's slot.
    """
    deployed = yaml.safe_load(DEPLOY_INSTANCE.read_text())
    settings = {
        "concurrency": {"pools": deployed["concurrency"]["pools"]},
        "run_monitoring": deployed["run_monitoring"],
        "telemetry": {"enabled": False},
    }
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(settings))
    return tmp_path


@dataclass
class Harness:
    """One test's worker runs: start, catch at a stage, kill, recover, re-execute."""

    workers: WorkerPool
    home: Path
    config: PipelineConfig
    tmp: Path

    @cached_property
    def instance(self) -> DagsterInstance:
        """The test's view of the instance the workers write to (SQLite under `home`)."""
        return DagsterInstance.from_ref(InstanceRef.from_dir(str(self.home)))

    def _request(self, spec: WorkerSpec, name: str, reexecute_from: str | None = None):
        return WorkerRequest(
            spec=spec,
            home=str(self.home),
            tag=f"{name}-{uuid.uuid4().hex[:8]}",
            log=str(self.tmp / f"{name}.log"),
            result=str(self.tmp / f"{name}.json"),
            reexecute_from=reexecute_from,
        )

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text()[-4000:] if path.exists() else "(no log)"

    def kill_at(
        self,
        stage: str,
        gate: Hold,
        *,
        aws: FaultProxy,
        bigquery: FaultProxy,
        reexecute_from: str | None = None,
    ) -> str:
        """Run (or re-execute) the job through the proxies, SIGKILL it at `gate`; its run id."""
        spec = WorkerSpec(self.config.model_dump_json(), aws.url, bigquery.url)
        request = self._request(spec, stage, reexecute_from)
        pid = self.workers.start(request)
        if not gate.wait(STAGE_TIMEOUT):
            alive = self.workers.alive(pid)
            if alive:
                self.workers.kill(pid)
            pytest.fail(f"{stage} was never reached (worker alive: {alive}):\n{self.log(stage)}")
        self.workers.kill(pid)
        gate.release()
        [run] = self.instance.get_runs(filters=RunsFilter(tags={RUN_TAG: request.tag}))
        assert run.status == DagsterRunStatus.STARTED, run.status  # died without a word
        self._what_the_daemon_does(run.run_id)
        return run.run_id

    def kill_at_each(
        self, stages: list[tuple[str, Any]], *, aws: FaultProxy, bigquery: FaultProxy, check: Any
    ) -> str:
        """Kill the run at the first stage, its re-execution at the next, …; the last run id.

        `check(stage)` runs after each kill (e.g. "still one export").
        """
        run_id = None
        for stage, make_gate in stages:
            aws.clear()
            bigquery.clear()
            gate = make_gate(aws, bigquery)
            run_id = self.kill_at(stage, gate, aws=aws, bigquery=bigquery, reexecute_from=run_id)
            check(stage)
        assert run_id is not None
        return run_id

    def _what_the_daemon_does(self, run_id: str) -> None:
        """Run monitoring's part, done by hand (the daemon is Dagster's, tested by Dagster).

        1. It finds the worker gone and marks the run FAILED.
        2. Its concurrency iteration frees the pool slots a finished run still
           holds, `run_monitoring.free_slots_after_run_end_seconds` after the
           run ended — only when deploy/dagster.yaml sets it. Without it the
           dead run keeps its slot and the retried step waits for it forever.
        """
        instance = self.instance
        run = instance.get_run_by_id(run_id)
        assert run is not None
        instance.report_run_failed(run, "run worker died (SIGKILL in a test)")
        if instance.run_monitoring_settings.get("free_slots_after_run_end_seconds"):
            instance.event_log_storage.free_concurrency_slots_for_run(run_id)
        storage = instance.event_log_storage
        held = {
            pool: [s.step_key for s in info.claimed_slots if s.run_id == run_id]
            for pool in storage.get_concurrency_keys()
            if (info := storage.get_concurrency_info(pool))
        }
        held = {pool: steps for pool, steps in held.items() if steps}
        assert not held, (
            f"the killed run still holds pool slots {held}: a retried run would wait for them "
            "forever (set run_monitoring.free_slots_after_run_end_seconds in deploy/dagster.yaml)"
        )

    def reexecute(self, run_id: str, root_run_id: str | None = None) -> str:
        """Re-execute `run_id` from failure in a fresh worker, without faults; the new run's id."""
        spec = WorkerSpec(self.config.model_dump_json())
        request = self._request(spec, "reexecuted", reexecute_from=run_id)
        pid = self.workers.start(request)
        deadline = time.monotonic() + RUN_TIMEOUT
        result = Path(request.result)
        while not result.exists():
            if not self.workers.alive(pid):
                time.sleep(0.2)  # the result file may be written just before the exit
                if result.exists():
                    break
                pytest.fail(f"the re-execution died:\n{self.log('reexecuted')}")
            if time.monotonic() > deadline:
                self.workers.kill(pid)
                pytest.fail(f"the re-execution did not finish:\n{self.log('reexecuted')}")
            time.sleep(0.1)
        outcome = json.loads(result.read_text())
        assert outcome["success"], f"the re-execution failed:\n{self.log('reexecuted')}"
        new = self.instance.get_run_by_id(outcome["run_id"])
        assert new is not None and new.parent_run_id == run_id
        if root_run_id is not None:
            assert new.root_run_id == root_run_id  # one chain: the same ClientTokens throughout
        return outcome["run_id"]


@pytest.fixture
def harness(workers: WorkerPool, home: Path, tmp_path: Path) -> Any:
    """`harness(config)`: a `Harness` for this test's runs of `config`."""
    return lambda config: Harness(workers, home, config, tmp_path)


# --------------------------------------------------------------------------- stages


def _held_export_poll(aws: FaultProxy, bigquery: FaultProxy) -> Hold:
    """Export started: ExportTableToPointInTime answered, the first DescribeExport held."""
    return aws.hold(target=r"\.DescribeExport$", name="export started")


def _held_second_file(aws: FaultProxy, bigquery: FaultProxy) -> Hold:
    """Files half read: the first data file downloaded, the second one's GET held."""
    return aws.hold(method="GET", path=r"/data/[^/?]+\.json\.gz", skip=1, name="files half read")


def _held_after_staging(aws: FaultProxy, bigquery: FaultProxy) -> Hold:
    """Staging loaded: the load jobs into staging done, the next BigQuery request held."""
    return bigquery.hold(method="GET", path=r"/tables/_staging_", name="staging loaded")


def _held_swap(aws: FaultProxy, bigquery: FaultProxy) -> Hold:
    """Before swap: the CREATE OR REPLACE TABLE … AS SELECT held before BigQuery sees it."""
    return bigquery.hold(
        method="POST", path=r"/jobs\?", body="CREATE OR REPLACE TABLE", name="before swap"
    )


# --------------------------------------------------------------------------- DynamoDB


def _dynamodb_state(ddb: Any, table: str) -> dict[str, tuple[int, str]]:
    items = ddb.scan(TableName=table, ConsistentRead=True)["Items"]
    return {i["pk"]["S"]: (int(i["qty"]["N"]), i["note"]["S"]) for i in items}


def _assert_bigquery_equals_dynamodb(ddb: Any, client: Any, config: PipelineConfig, table: str):
    expected = _dynamodb_state(ddb, table)
    table_id = f"{config.bigquery.project}.{config.bigquery.dataset}.{dynamodb_table_name(table)}"
    rows = [
        (r["pk"], (r["qty"], r["note"]))
        for r in client.query(f"SELECT pk, qty, note FROM `{table_id}`").result()
    ]
    keys = [k for k, _ in rows]
    assert len(keys) == len(set(keys)), f"duplicate rows in {table_id}: {sorted(keys)}"
    assert dict(rows) == expected


def _exports(ddb: Any, table: str) -> list[dict[str, Any]]:
    arn = ddb.describe_table(TableName=table)["Table"]["TableArn"]
    summaries = ddb.list_exports(TableArn=arn, MaxResults=25)["ExportSummaries"]
    return [ddb.describe_export(ExportArn=s["ExportArn"])["ExportDescription"] for s in summaries]


DYNAMODB_FULL_STAGES = [
    ("export_started", _held_export_poll),
    ("files_half_read", _held_second_file),
    ("staging_loaded", _held_after_staging),
    ("before_swap", _held_swap),
]


def _root(harness: Harness, run_id: str) -> str:
    run = harness.instance.get_run_by_id(run_id)
    assert run is not None
    return run.root_run_id or run.run_id


def test_dynamodb_full_killed_at_each_stage(
    harness, aws_clients, bigquery_client, scratch_dataset, aws_proxy, bigquery_proxy
):
    ddb = aws_clients.dynamodb
    table = f"kill-{uuid.uuid4().hex[:10]}"
    _runs.create_dynamodb_table(ddb, table, ITEMS)
    run = harness(_runs.make_config(scratch_dataset, dynamodb_table=table))

    def one_export(stage: str) -> None:
        exports = _exports(ddb, table)
        assert len(exports) == 1, (stage, [e["ExportArn"] for e in exports])

    last = run.kill_at_each(
        DYNAMODB_FULL_STAGES, aws=aws_proxy, bigquery=bigquery_proxy, check=one_export
    )
    run.reexecute(last, _root(run, last))

    one_export("after the re-execution")
    _assert_bigquery_equals_dynamodb(ddb, bigquery_client, run.config, table)


def _seed_incremental(ddb: Any, client: Any, config: PipelineConfig, table: str) -> None:
    """Full seed (mark set), the mark moved 1 h back, then changes: the next run is incremental."""
    _runs.create_dynamodb_table(ddb, table, ITEMS)
    shift_history(ddb.meta.endpoint_url, table, 2 * 3600, _runs.REGION)
    seed = _runs.run(config)
    assert seed.success, _runs.failure_messages(seed)
    mark = _mark(ddb, client, config, table)
    assert mark is not None
    state = core.state_table_for(_table_id(config, table))
    earlier = (mark.exported_to - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S.%f")
    client.query(
        f"UPDATE {state.sql} SET exported_to = TIMESTAMP '{earlier}+00' "
        f"WHERE source_key = '{mark.source_key}'"
    ).result()
    ddb.put_item(TableName=table, Item={"pk": {"S": "new"}, "qty": {"N": "1"}, "note": {"S": "n"}})
    ddb.update_item(
        TableName=table,
        Key={"pk": {"S": "k1"}},
        UpdateExpression="SET qty = :q",
        ExpressionAttributeValues={":q": {"N": "1000"}},
    )
    ddb.delete_item(TableName=table, Key={"pk": {"S": "k2"}})


def _table_id(config: PipelineConfig, table: str) -> core.TableId:
    return core.TableId.parse(
        f"{config.bigquery.project}.{config.bigquery.dataset}.{dynamodb_table_name(table)}"
    )


def _mark(ddb: Any, client: Any, config: PipelineConfig, table: str) -> Any:
    arn = ddb.describe_table(TableName=table)["Table"]["TableArn"]
    return core.read_watermark(client, _table_id(config, table), arn)


def _held_export_answer(aws: FaultProxy, bigquery: FaultProxy) -> Hold:
    """Export started, the other way: DynamoDB started it, the worker never got the answer.

    (The incremental plan's own DescribeExport of the mark's export comes
    before the start, so "the first DescribeExport" would be too early here.)
    """
    return aws.hold(
        "after", target=r"\.ExportTableToPointInTime$", name="export started, unanswered"
    )


def _held_merge_done(aws: FaultProxy, bigquery: FaultProxy) -> Hold:
    """Before swap, incremental: the MERGE transaction reached BigQuery; its answer is held."""
    return bigquery.hold("after", method="POST", path=r"/jobs\?", body="MERGE", name="merge")


def test_dynamodb_incremental_killed_at_each_stage(
    harness, aws_clients, bigquery_client, scratch_dataset, aws_proxy, bigquery_proxy
):
    ddb = aws_clients.dynamodb
    table = f"killinc-{uuid.uuid4().hex[:10]}"
    config = _runs.make_config(scratch_dataset, dynamodb_table=table, mode="incremental")
    _seed_incremental(ddb, bigquery_client, config, table)
    before = _mark(ddb, bigquery_client, config, table)
    run = harness(config)

    def one_window(stage: str) -> None:
        exports = _exports(ddb, table)
        incremental = [e for e in exports if e.get("ExportType") == "INCREMENTAL_EXPORT"]
        assert len(exports) == 2 and len(incremental) == 1, (stage, exports)
        if stage == "merge_committed":
            # The case that matters: BigQuery committed the MERGE and the mark, the
            # worker never heard. Wait until it shows: the re-execution starts from there.
            deadline = time.monotonic() + 30
            while _mark(ddb, bigquery_client, config, table).exported_to == before.exported_to:
                assert time.monotonic() < deadline, "the held MERGE never committed"
                time.sleep(0.2)

    stages = [("export_started", _held_export_answer), ("merge_committed", _held_merge_done)]
    last = run.kill_at_each(stages, aws=aws_proxy, bigquery=bigquery_proxy, check=one_window)
    run.reexecute(last, _root(run, last))

    one_window("after the re-execution")
    [window] = [e for e in _exports(ddb, table) if e.get("ExportType") == "INCREMENTAL_EXPORT"]
    _assert_bigquery_equals_dynamodb(ddb, bigquery_client, config, table)
    mark = _mark(ddb, bigquery_client, config, table)
    spec = window["IncrementalExportSpecification"]
    assert mark.export_arn == window["ExportArn"]
    assert mark.exported_to == spec["ExportToTime"]
    assert spec["ExportFromTime"] == before.exported_to


# --------------------------------------------------------------------------- RDS

RDS_DATABASE = "killdb"
RDS_COLUMNS = [
    Column("id", "int", nullable=False),
    Column("name", "varchar(20)"),
    Column("amount", "decimal(10,2)"),
]


def _rds_source(local_cloud: Any, aws_clients: Any, pipeline_config: PipelineConfig) -> Any:
    """A DB instance of the test's own with one small table, and its automated snapshot."""
    demo = _runs.rds_source(pipeline_config)
    source = demo.model_copy(
        update={
            "identifier": "kill" + uuid.uuid4().hex[:8],
            "export_only": [f"{RDS_DATABASE}.items"],
            "tables": {},  # the demo's settings are for its own tables
        }
    )
    store = live_store(local_cloud.state_dir, _runs.REGION, source.identifier)
    store.create_table(RDS_DATABASE, "items", RDS_COLUMNS)
    store.insert(
        RDS_DATABASE,
        "items",
        [{"id": i, "name": f"n{i}", "amount": f"{i * 3}.{i:02d}"} for i in range(1, 7)],
    )
    create_mysql_instance(aws_clients.rds, source.identifier)
    take_automated_snapshot(aws_clients.rds, source.identifier)
    return source, store


def _export_tasks(rds: Any, identifier: str) -> list[dict[str, Any]]:
    """Every export task of a snapshot of DB instance `identifier` (unique to the test)."""
    tasks = rds.describe_export_tasks()["ExportTasks"]
    return [t for t in tasks if f":rds:{identifier}-" in t["SourceArn"]]


def _held_task_poll(aws: FaultProxy, bigquery: FaultProxy) -> Hold:
    """Export started: StartExportTask answered, the first status poll held.

    The first two DescribeExportTasks are the look-ups before starting (the
    run's own task, then the snapshot's other tasks that could be adopted);
    the third is the first poll after StartExportTask.
    """
    return aws.hold(method="POST", body="Action=DescribeExportTasks", skip=2, name="export started")


def test_rds_killed_at_each_stage(
    harness,
    local_cloud,
    aws_clients,
    bigquery_client,
    pipeline_config,
    scratch_dataset,
    aws_proxy,
    bigquery_proxy,
):
    source, store = _rds_source(local_cloud, aws_clients, pipeline_config)
    config = _runs.make_config(scratch_dataset, rds_instances=[source])
    run = harness(config)

    def one_task(stage: str) -> None:
        tasks = _export_tasks(aws_clients.rds, source.identifier)
        assert len(tasks) == 1, (stage, [t["ExportTaskIdentifier"] for t in tasks])

    stages = [("export_started", _held_task_poll), ("before_swap", _held_swap)]
    last = run.kill_at_each(stages, aws=aws_proxy, bigquery=bigquery_proxy, check=one_task)
    run.reexecute(last, _root(run, last))

    one_task("after the re-execution")
    expected = {
        int(r["id"]): (r["name"], Decimal(str(r["amount"])))
        for r in store.read_all(RDS_DATABASE, "items")
    }
    table_id = f"{config.bigquery.project}.{config.bigquery.dataset}.rds_{RDS_DATABASE}_items"
    rows = [
        (r["id"], (r["name"], r["amount"]))
        for r in bigquery_client.query(f"SELECT id, name, amount FROM `{table_id}`").result()
    ]
    assert len(rows) == len({k for k, _ in rows}), f"duplicate rows: {rows}"
    assert dict(rows) == expected


def _held_footer_after_transfer(aws: FaultProxy, bigquery: FaultProxy) -> Hold:
    """Transfer done (`rds.transfer: storage_transfer`): the export copied to GCS by the
    table's step, the first Parquet footer read that follows it held."""
    return aws.hold(method="GET", path=r"\.parquet", name="transfer done")


def test_rds_storage_transfer_killed_after_the_transfer_and_before_the_swap(
    harness,
    local_cloud,
    aws_clients,
    bigquery_client,
    pipeline_config,
    scratch_dataset,
    aws_proxy,
    bigquery_proxy,
):
    """The step killed after its transfer, then before the swap: one export, one transfer."""
    from export_pipeline.resources.storage_transfer import StorageTransferResource
    from export_pipeline.storage_transfer import job_name, list_operations

    assert pipeline_config.gcs and pipeline_config.rds.storage_transfer_role_arn
    source, store = _rds_source(local_cloud, aws_clients, pipeline_config)
    plain = _runs.make_config(scratch_dataset, rds_instances=[source])
    rds = plain.rds.model_copy(
        update={
            "transfer": "storage_transfer",
            "storage_transfer_role_arn": pipeline_config.rds.storage_transfer_role_arn,
        }
    )
    config = plain.model_copy(update={"rds": rds, "gcs": pipeline_config.gcs})
    run = harness(config)
    client = StorageTransferResource(
        project=local_cloud.bigquery_project,
        api_endpoint=local_cloud.storage_transfer_endpoint,
        anonymous_credentials=True,
    ).get_client()

    def one_export_one_transfer(stage: str) -> None:
        [task] = _export_tasks(aws_clients.rds, source.identifier)
        name = job_name("export-pipeline-rds", task["ExportTaskIdentifier"])
        operations = list_operations(client, local_cloud.bigquery_project, [name])
        assert len(operations) == 1, (stage, [op.name for op in operations])

    stages = [("transfer_done", _held_footer_after_transfer), ("before_swap", _held_swap)]
    last = run.kill_at_each(
        stages, aws=aws_proxy, bigquery=bigquery_proxy, check=one_export_one_transfer
    )
    run.reexecute(last, _root(run, last))

    one_export_one_transfer("after the re-execution")
    expected = {
        int(r["id"]): (r["name"], Decimal(str(r["amount"])))
        for r in store.read_all(RDS_DATABASE, "items")
    }
    table_id = f"{config.bigquery.project}.{config.bigquery.dataset}.rds_{RDS_DATABASE}_items"
    rows = [
        (r["id"], (r["name"], r["amount"]))
        for r in bigquery_client.query(f"SELECT id, name, amount FROM `{table_id}`").result()
    ]
    assert dict(rows) == expected and len(rows) == len(expected)
