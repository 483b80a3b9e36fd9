"""Run workers the worker-kill tests can SIGKILL: real OS processes, started in milliseconds.

Why: a run worker that dies (OOM killer, node drained, `kill -9`) leaves
nothing behind but what it already sent to AWS, BigQuery and the Dagster
instance. Only a separate process killed with SIGKILL shows what the next
run makes of that; an exception in the test process would run `finally`
blocks and context managers that a real crash never runs.

Why a "zygote": importing Dagster and the pipeline takes ~5 s on 2 cores.
`WorkerPool` starts one Python process that imports everything once and then
forks a fresh child for every run it is asked for (`os.fork` from a process
that has started no thread). Each child is a real run worker: it opens the
test's Dagster instance (a SQLite instance in a temporary DAGSTER_HOME,
configured like `deploy/dagster.yaml` for pools and run monitoring), builds
the job with `build_job` and runs it with `execute_job` on the in-process
executor, so the step and the run share the one process that gets killed.

A worker's job is described by a `WorkerSpec` (the pipeline config, and the
fault proxies' URLs for AWS and BigQuery, if any); re-executions get the
spec without proxies (the faults are over, as for the daemon's retry).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

JOB_NAME = "worker_kill_job"
SPEC_ENV = "EXPORT_PIPELINE_TEST_WORKER_SPEC"
RUN_TAG = "export_pipeline_tests/worker"


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker runs: `config` (PipelineConfig JSON) and where its clients connect."""

    config: str
    aws_url: str | None = None
    bigquery_url: str | None = None


@dataclass(frozen=True)
class WorkerRequest:
    """One run for the zygote to fork: a fresh run, or a re-execution from failure."""

    spec: WorkerSpec
    home: str
    tag: str  # RUN_TAG value, to find the run in the instance
    log: str
    result: str  # JSON file written when the run ends: {"run_id", "success"}
    reexecute_from: str | None = None  # run id of the failed run


def build_job() -> Any:
    """The job of the spec in $EXPORT_PIPELINE_TEST_WORKER_SPEC (every asset of the config).

    Module-level and argument-free so `reconstructable(build_job)` can
    rebuild it in any process (Dagster re-executions need that).
    """
    from dagster import Definitions, define_asset_job, in_process_executor

    from export_pipeline.config import PipelineConfig
    from export_pipeline.dynamodb.source import DynamoDBSource
    from export_pipeline.graph.assets import build_source_assets
    from export_pipeline.rds.source import RdsSource
    from export_pipeline_tests.faults.proxy import resources_through
    from export_pipeline_tests.support.principals import pipeline_resources

    spec = WorkerSpec(**json.loads(os.environ[SPEC_ENV]))
    config = PipelineConfig.model_validate_json(spec.config)
    resources = pipeline_resources(config)
    if spec.aws_url or spec.bigquery_url:
        resources = resources_through(resources, aws=spec.aws_url, bigquery=spec.bigquery_url)
    definitions = Definitions(
        assets=[
            *build_source_assets(DynamoDBSource(config)),
            *build_source_assets(RdsSource(config)),
        ],
        resources=resources,
        jobs=[define_asset_job(JOB_NAME)],
        executor=in_process_executor,
    )
    return definitions.resolve_job_def(JOB_NAME)


def _run(request: WorkerRequest) -> bool:
    """In the forked child: execute (or re-execute) the job; True on success."""
    from dagster import DagsterInstance, ReexecutionOptions, execute_job, reconstructable
    from dagster._core.instance.ref import InstanceRef

    os.environ[SPEC_ENV] = json.dumps(asdict(request.spec))
    instance = DagsterInstance.from_ref(InstanceRef.from_dir(request.home))
    options = (
        ReexecutionOptions.from_failure(request.reexecute_from, instance)
        if request.reexecute_from
        else None
    )
    with execute_job(
        reconstructable(build_job),
        instance,
        tags={RUN_TAG: request.tag},
        reexecution_options=options,
    ) as result:
        outcome = {"run_id": result.run_id, "success": result.success}
    Path(request.result).write_text(json.dumps(outcome))
    return bool(outcome["success"])


def _child(request: WorkerRequest) -> None:
    """The forked child's whole life: own log file, run, exit without cleanup handlers."""
    code = 1
    try:
        log = os.open(request.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(0)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        code = 0 if _run(request) else 1
    except BaseException:  # report anything, then die like a worker
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    """The zygote: import once, then fork one child per request line on stdin."""
    # The point is to import (what a run needs) once, before forking.
    import boto3  # noqa: F401
    import dagster
    import dagster._core.execution.api
    import dagster._core.storage.runs.sqlite  # noqa: F401
    import google.cloud.bigquery  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    import export_pipeline.dynamodb.loading
    import export_pipeline.dynamodb.source
    import export_pipeline.environment
    import export_pipeline.graph.assets
    import export_pipeline.rds.loading
    import export_pipeline.rds.source  # noqa: F401
    import export_pipeline_tests.faults.proxy  # noqa: F401

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    print("ready", flush=True)
    for line in sys.stdin:
        raw = json.loads(line)
        request = WorkerRequest(**{**raw, "spec": WorkerSpec(**raw["spec"])})
        pid = os.fork()
        if pid == 0:
            _child(request)
        print(pid, flush=True)


class WorkerPool:
    """The test side of the zygote: `start()` a worker run, get its pid; `kill(pid)`."""

    def __init__(self, log_path: Path) -> None:
        self._stderr = log_path.open("ab")
        self._process = subprocess.Popen(
            [sys.executable, "-c", f"from {__name__} import serve; serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        assert self._process.stdout is not None
        ready = self._process.stdout.readline().strip()
        if ready != "ready":
            raise RuntimeError(f"worker zygote did not start (see {log_path})")

    def start(self, request: WorkerRequest) -> int:
        """Fork a worker for `request`; returns its pid."""
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(json.dumps(asdict(request)) + "\n")
        self._process.stdin.flush()
        return int(self._process.stdout.readline())

    @staticmethod
    def kill(pid: int, timeout: float = 10.0) -> None:
        """SIGKILL the worker and wait until it is gone."""
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)
        raise AssertionError(f"worker {pid} still alive {timeout}s after SIGKILL")

    @staticmethod
    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def close(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._stderr.close()
