"""Jobs on dagster-celery's executor: steps spread over two workers, same BigQuery result.

`EXPORT_PIPELINE_EXECUTOR=celery` (export_pipeline/executors.py) gives every
job dagster-celery's `celery_executor`. Here the DynamoDB job
(`dynamodb_to_bigquery`) on the demo's Orders table, whose conversion is
several steps (learn and convert, one per group of data files), runs twice
on the session's local cloud (with `EXPORT_PIPELINE_CELERY_JOB=aws_to_bigquery`:
the main job on every demo table, about four times as long), each run in a process of its own
as a run launcher would start it, on one Dagster instance in PostgreSQL
(deploy/dagster.yaml, a scratch database) that the runs and the workers share:

1. with the default multiprocess executor, loading into one BigQuery dataset;
2. at the same time, with the Celery executor, on RabbitMQ (broker) and Redis (result
   backend), loading into a second dataset, configured by the shipped
   deploy/celery/executor.yaml (on a queue of this test's own); two Celery
   worker processes, started by the test with `dagster-celery worker start`
   on that file, one task at a time each.

Every step of the Celery run must have run in a Celery worker (the instance's
event log records, per step, the node name of the worker that took its task),
the conversion steps must have run on both workers (a table's learn steps
start together, on idle workers that hold one task at a time:
`task_acks_late` with a prefetch of one), what the steps hand each other
must have gone through GCS (`export_pipeline/resources/step_outputs.py`),
and every table of the second dataset must hold exactly the rows of the
first.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter

from export_pipeline.config import DEFAULT_CONFIG_PATH, load_config
from export_pipeline.dynamodb.bigquery_tables import EXPORTED_AT
from export_pipeline.executors import EXECUTOR_CONFIG_ENV, EXECUTOR_ENV
from export_pipeline.local_cloud.settings import LocalCloudSettings
from export_pipeline.pools_cli import pool_names, set_pools
from export_pipeline.resources.step_outputs import STEP_OUTPUTS_FOLDER
from export_pipeline_tests.support.celery_workers import (
    BIN,
    BROKER_ENV,
    celery_workers,
    executor_file_on_a_queue_of_its_own,
)
from export_pipeline_tests.support.dagster_postgres import deployed_home, scratch_database

pytestmark = pytest.mark.needs("postgresql", "rabbitmq", "redis")

# The DynamoDB job on Orders in the suite; the main job on every demo table when the
# variable says so.
JOB = os.environ.get("EXPORT_PIPELINE_CELERY_JOB", "dynamodb_to_bigquery")
ONLY_ORDERS = JOB == "dynamodb_to_bigquery"
# The mapped steps of a DynamoDB table's conversion (export_pipeline/graph/load_steps.py).
CONVERSION_STEP = re.compile(r"__(learn|convert)\[")
EXECUTOR_TAG = "export_pipeline_test/executor"


def _config_loading_into(dataset: str, folder: Path) -> Path:
    """The demo configuration with every table loaded into `dataset` (only Orders, of
    the DynamoDB tables, when the job is the DynamoDB one)."""
    document = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text(encoding="utf-8"))
    document["bigquery"]["dataset"] = dataset
    if ONLY_ORDERS:
        tables = document["dynamodb"]["tables"]
        document["dynamodb"]["tables"] = [t for t in tables if t["name"] == "Orders"]
    path = folder / f"pipeline-{dataset}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def _execute_together(environments: dict[str, dict[str, str]], folder: Path) -> None:
    """`dagster job execute` of the job once per environment, each run in a process of
    its own, all at once (no run config: the executor's settings come from the
    environment, as for a scheduled run); the runs are tagged with their key."""
    runs = {}
    for tag, env in environments.items():
        command = [str(BIN / "dagster"), "job", "execute", "-m", "export_pipeline", "-j", JOB]
        command += ["--tags", json.dumps({EXECUTOR_TAG: tag})]
        output = (folder / f"run-{tag}.log").open("w")
        runs[tag] = (
            subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT),
            output,
        )
    for tag, (run, output) in runs.items():
        try:
            status = run.wait(timeout=300)
        finally:
            output.close()
        log = (folder / f"run-{tag}.log").read_text(encoding="utf-8")
        assert status == 0, f"{tag} run failed: {log[-2000:]}\n{_errors(tag)}"


def _errors(tag: str) -> str:
    """The errors the instance recorded for the run tagged `tag` (why it failed)."""
    found = []
    with DagsterInstance.get() as instance:
        for run in instance.get_runs(RunsFilter(tags={EXECUTOR_TAG: tag})):
            for record in instance.all_logs(run.run_id):
                data = record.dagster_event and record.dagster_event.event_specific_data
                error = getattr(data, "error", None)
                if error is not None:
                    found.append(error.to_string()[-2000:])
    return "\n".join(found)


def _run_id(instance: DagsterInstance, tag: str) -> str:
    runs = instance.get_runs(RunsFilter(tags={EXECUTOR_TAG: tag}))
    assert [run.status for run in runs] == [DagsterRunStatus.SUCCESS]
    return runs[0].run_id


def _worker_of_each_step(instance: DagsterInstance, run_id: str) -> dict[str, str]:
    """step key -> node name of the Celery worker that ran it (dagster-celery's engine event)."""
    workers = {}
    for record in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        metadata = record.dagster_event.engine_event_data.metadata
        if "Celery worker" in metadata:
            workers[record.step_key] = metadata["Celery worker"].value
    return workers


def _succeeded_steps(instance: DagsterInstance, run_id: str, dataset: str) -> set[str]:
    """The run's steps that succeeded, with the dataset's name in their keys as `<dataset>`."""
    records = instance.all_logs(run_id, of_type=DagsterEventType.STEP_SUCCESS)
    return {_named(record.step_key, dataset) for record in records}


def _named(step_key: str, dataset: str) -> str:
    """`step_key` with the dataset's name, and the hash of the freshness checks, left out."""
    return re.sub(r"^freshness_check_\w+$", "freshness_check", step_key).replace(
        dataset, "<dataset>"
    )


def _tables(client: Any, project: str, dataset: str) -> dict[str, list[str]]:
    """table -> its rows (each as canonical JSON, sorted), for every loaded table of `dataset`.

    Not what differs from run to run by design: the pipeline's bookkeeping
    (`_export_pipeline_state`: which export each table holds, and when it was
    written) and the `_exported_at` column (each run starts a DynamoDB export
    of its own, and the column holds that export's time).
    """
    tables = {}
    for table in client.list_tables(f"{project}.{dataset}"):
        if table.table_id.startswith("_"):
            continue
        rows = client.query(f"SELECT * FROM `{project}.{dataset}.{table.table_id}`").result()
        values = [{k: v for k, v in row.items() if k != EXPORTED_AT} for row in rows]
        tables[table.table_id] = sorted(
            json.dumps(value, sort_keys=True, default=str) for value in values
        )
    return tables


def test_two_celery_workers_share_the_steps_and_load_what_multiprocess_loads(
    local_cloud: LocalCloudSettings,
    bigquery_client: Any,
    gcs_client: Any,
    unique_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project = local_cloud.bigquery_project
    datasets = {"multiprocess": f"{unique_name}_mp", "celery": f"{unique_name}_celery"}
    for dataset in datasets.values():
        bigquery_client.create_dataset(f"{project}.{dataset}")
    home = tmp_path / "dagster_home"
    with scratch_database() as database:
        instance_env = deployed_home(home, database)
        for name, value in instance_env.items():
            monkeypatch.setenv(name, value)
        chosen = (EXECUTOR_ENV, EXECUTOR_CONFIG_ENV)
        base = {name: value for name, value in os.environ.items() if name not in chosen}
        multiprocess_env = {
            **base,
            "EXPORT_PIPELINE_CONFIG": str(_config_loading_into(datasets["multiprocess"], tmp_path)),
        }
        executor_file, queue = executor_file_on_a_queue_of_its_own(tmp_path)
        celery_env = {
            **base,
            **BROKER_ENV,
            "EXPORT_PIPELINE_CONFIG": str(_config_loading_into(datasets["celery"], tmp_path)),
            EXECUTOR_ENV: "celery",
            EXECUTOR_CONFIG_ENV: str(executor_file),
        }
        # As a deployment does (deploy/README.md, `export-pipeline pools --set`): pools
        # created on first use by two runs at once could fail or double a slot.
        with DagsterInstance.get() as instance:
            for env in (multiprocess_env, celery_env):
                set_pools(instance, pool_names(load_config(Path(env["EXPORT_PIPELINE_CONFIG"]))))
        with celery_workers(executor_file, queue, 2, celery_env) as workers:
            # The two runs read the same sources at the same time.
            _execute_together({"multiprocess": multiprocess_env, "celery": celery_env}, tmp_path)

        with DagsterInstance.from_config(str(home)) as instance:
            run_id = _run_id(instance, "celery")
            multiprocess_run_id = _run_id(instance, "multiprocess")
            steps = _succeeded_steps(instance, run_id, datasets["celery"])
            worker_of = {
                _named(step, datasets["celery"]): worker
                for step, worker in _worker_of_each_step(instance, run_id).items()
            }
            multiprocess_steps = _succeeded_steps(
                instance, multiprocess_run_id, datasets["multiprocess"]
            )
    assert steps == multiprocess_steps and len(steps) > 4, steps
    assert set(worker_of) == steps, f"steps with no Celery worker: {steps - set(worker_of)}"
    conversion = {
        step: worker for step, worker in worker_of.items() if CONVERSION_STEP.search(step)
    }
    assert len(conversion) >= 4, f"the conversion is not in several steps: {sorted(steps)}"
    per_worker = Counter(conversion.values())
    assert set(per_worker) == set(workers), f"conversion steps per worker: {dict(per_worker)}"

    # What the steps handed each other went through GCS for the Celery run (workers on
    # other machines share no folder), through the instance's folder for the other.
    staging = load_config(DEFAULT_CONFIG_PATH).gcs
    assert staging is not None
    folder = f"{staging.staging_prefix}/{STEP_OUTPUTS_FOLDER}"
    handed = {
        run: [
            b.name for b in gcs_client.list_blobs(staging.staging_bucket, prefix=f"{folder}/{run}/")
        ]
        for run in (run_id, multiprocess_run_id)
    }
    assert any("__merge/" in name for name in handed[run_id]), handed[run_id]
    assert handed[multiprocess_run_id] == []

    loaded = {
        executor: _tables(bigquery_client, project, dataset)
        for executor, dataset in datasets.items()
    }
    assert loaded["celery"].keys() == loaded["multiprocess"].keys()
    assert "dynamodb_orders" in loaded["celery"]
    for table, rows in loaded["multiprocess"].items():
        assert rows, table
        assert loaded["celery"][table] == rows, table
