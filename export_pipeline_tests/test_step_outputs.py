"""Step outputs in GCS (the distributed executors' IO manager) on the local cloud's GCS server.

A two-step job whose second step fails once: its re-execution from failure
reads the first step's output from the first run's GCS object (the first
step does not run again), as a Kubernetes pod or a Celery worker on another
machine would.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dagster import (
    DagsterInstance,
    In,
    ReexecutionOptions,
    execute_job,
    in_process_executor,
    job,
    op,
    reconstructable,
)

from export_pipeline.config import current_config
from export_pipeline.environment import build_resources
from export_pipeline.resources.step_outputs import STEP_OUTPUTS_FOLDER, GcsStepOutputs

# The file whose absence makes `consume` fail (its first run).
FAIL_UNLESS_ENV = "EXPORT_PIPELINE_TEST_STEP_OUTPUTS_MARKER"


@op
def produce() -> dict[str, Any]:
    return {"groups": [["a.json.gz", "b.json.gz"], ["c.json.gz"]], "items": 3}


@op(ins={"plan": In(dict)})
def consume(plan: dict[str, Any]) -> int:
    marker = Path(os.environ[FAIL_UNLESS_ENV])
    if not marker.exists():
        marker.touch()
        raise RuntimeError("first attempt fails on purpose")
    return plan["items"]


def handover_job():  # type: ignore[no-untyped-def]
    gcs = build_resources(current_config())["gcs"]
    io_manager = GcsStepOutputs(gcs=gcs)

    @job(resource_defs={"io_manager": io_manager}, executor_def=in_process_executor)
    def handover() -> None:
        consume(produce())

    return handover


def test_a_re_executed_step_reads_its_input_from_the_first_runs_object(
    local_cloud: Any, gcs_client: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv(FAIL_UNLESS_ENV, str(tmp_path / "failed-once"))
    staging = current_config().gcs
    assert staging is not None
    recon = reconstructable(handover_job)
    with DagsterInstance.ephemeral() as instance:
        with execute_job(recon, instance) as first:
            assert not first.success
            first_run = first.run_id
        prefix = f"{staging.staging_prefix}/{STEP_OUTPUTS_FOLDER}/{first_run}/"
        names = [b.name for b in gcs_client.list_blobs(staging.staging_bucket, prefix=prefix)]
        assert names == [f"{prefix}produce/result"]

        options = ReexecutionOptions.from_failure(first_run, instance)
        with execute_job(recon, instance, reexecution_options=options) as second:
            assert second.success
            assert second.output_for_node("consume") == 3
            ran = {event.step_key for event in second.all_events if event.is_step_start}
            assert ran == {"consume"}
            second_prefix = f"{staging.staging_prefix}/{STEP_OUTPUTS_FOLDER}/{second.run_id}/"
            written = gcs_client.list_blobs(staging.staging_bucket, prefix=second_prefix)
            assert [b.name for b in written] == [f"{second_prefix}consume/result"]
