"""The README's commands as a new user runs them: a checkout folder, real CLIs.

`start_tour` gives a folder holding a copy of the repository's `dagster.yaml`
and no DAGSTER_HOME, with a private local cloud (free ports, its own state
folder) that the first `dagster job execute` starts, as in the README; the
cloud is stopped with `export-pipeline local down` when the tour ends. The
session fixtures `tour` and `first_run` (conftest) share one tour between the
README tests and the UI tests, so the demo job runs once for both.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from export_pipeline.config import REPO_ROOT
from export_pipeline.environment import LOCAL_ACCESS_KEY_ENV, LOCAL_SECRET_KEY_ENV
from export_pipeline.local_cloud.dynamodb_exports import EXPORT_SECONDS_ENV
from export_pipeline.local_cloud.settings import (
    AWS_PORT_ENV,
    BIGQUERY_GRPC_PORT_ENV,
    BIGQUERY_PORT_ENV,
    GCS_PORT_ENV,
    IAM_ENV,
    STATE_DIR_ENV,
    STORAGE_TRANSFER_PORT_ENV,
)
from export_pipeline_tests.support.local_cloud import fresh_local_cloud_settings

BIN = Path(sys.executable).parent
JOB = ["dagster", "job", "execute", "-m", "export_pipeline", "-j", "aws_to_bigquery"]

# Lists, as JSON, what the instance `dagster dev` opens in this folder holds:
# the same function Dagster's `dev` command calls to find its instance.
READ_INSTANCE = """
import json
from dagster import DagsterEventType, EventRecordsFilter
from dagster._cli.utils import get_possibly_temporary_instance_for_cli
with get_possibly_temporary_instance_for_cli("dagster dev") as instance:
    runs = instance.get_runs()
    records = instance.get_event_records
    materialized = sorted({
        "/".join(r.event_log_entry.dagster_event.asset_key.path)
        for r in records(EventRecordsFilter(DagsterEventType.ASSET_MATERIALIZATION))
    })
    checks = [
        [
            "/".join(r.event_log_entry.dagster_event.asset_check_evaluation_data.asset_key.path),
            r.event_log_entry.dagster_event.asset_check_evaluation_data.check_name,
            r.event_log_entry.dagster_event.asset_check_evaluation_data.passed,
        ]
        for r in records(EventRecordsFilter(DagsterEventType.ASSET_CHECK_EVALUATION))
    ]
    latest = {}
    for r in records(EventRecordsFilter(DagsterEventType.ASSET_MATERIALIZATION)):
        m = r.event_log_entry.dagster_event.step_materialization_data.materialization
        latest["/".join(m.asset_key.path)] = {k: str(v.value) for k, v in m.metadata.items()}
    print(json.dumps({
        "runs": [[r.job_name, r.status.value] for r in runs],
        "materialized": materialized,
        "checks": checks,
        "metadata": latest,
    }))
"""


class Tour:
    """The environment and folder the README's commands run in."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.env = env

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(BIN / command[0]), *command[1:]],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=420,
        )
        if check:
            assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
        return result

    def instance_contents(self) -> dict:
        result = self.run("python", "-c", READ_INSTANCE)
        return json.loads(result.stdout.strip().splitlines()[-1])


def start_tour(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tour]:
    """A tour folder and environment; its cloud is stopped when the generator ends."""
    folder = tmp_path_factory.mktemp("checkout")
    shutil.copy(REPO_ROOT / "dagster.yaml", folder / "dagster.yaml")
    settings = replace(
        fresh_local_cloud_settings(tmp_path_factory.mktemp("tour_cloud")), enforce_iam=False
    )
    # The README's commands as a newcomer types them: the cloud they start checks no
    # IAM and the pipeline signs with its own keys (the README does not switch IAM on;
    # the rest of the suite runs against the session's IAM-enforcing cloud).
    unset = {"DAGSTER_HOME", IAM_ENV, LOCAL_ACCESS_KEY_ENV, LOCAL_SECRET_KEY_ENV}
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(
        {
            STATE_DIR_ENV: str(settings.state_dir),
            AWS_PORT_ENV: str(settings.aws_port),
            BIGQUERY_PORT_ENV: str(settings.bigquery_port),
            BIGQUERY_GRPC_PORT_ENV: str(settings.bigquery_grpc_port),
            GCS_PORT_ENV: str(settings.gcs_port),
            STORAGE_TRANSFER_PORT_ENV: str(settings.storage_transfer_port),
            EXPORT_SECONDS_ENV: "0.5",
            "EXPORT_PIPELINE_CONFIG": str(REPO_ROOT / "pipeline.yaml"),
        }
    )
    tour = Tour(folder, env)
    try:
        yield tour
    finally:
        tour.run("export-pipeline", "local", "down", check=False)
