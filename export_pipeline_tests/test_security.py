"""No credential may show up in logs, metadata, errors or what the UI displays.

The local cloud's credentials and the demo's hash key are fake but distinctive
(`export_pipeline.local_cloud.settings`, `environment.LOCAL_DEMO_HASH_KEY`), so
they stand in for real ones:
every place a run leaves text behind is serialized and searched for them,
in the forms a leak could take (raw, URL-encoded, JSON-escaped, base64).
A positive control shows that the search does find a secret that is there.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from dagster import DagsterInstance, MaterializeResult, asset, materialize
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value

from export_pipeline.config import current_config
from export_pipeline.environment import LOCAL_DEMO_HASH_KEY
from export_pipeline.local_cloud.settings import (
    LOCAL_AWS_ACCESS_KEY_ID,
    LOCAL_AWS_SECRET_ACCESS_KEY,
)
from export_pipeline_tests.faults import _runs
from export_pipeline_tests.support.principals import pipeline_definitions

SECRETS = {
    "aws_secret_access_key": LOCAL_AWS_SECRET_ACCESS_KEY,
    "aws_access_key_id": LOCAL_AWS_ACCESS_KEY_ID,
    # The HMAC key of hashed columns (the demo's shop.customers hashes `email`).
    "hash_key": LOCAL_DEMO_HASH_KEY,
}


def _forms(secret: str) -> set[str]:
    return {
        secret,
        quote(secret, safe=""),
        json.dumps(secret)[1:-1],
        secret.replace("/", "\\/"),
        base64.b64encode(secret.encode()).decode(),
        repr(secret)[1:-1],
    }


def leaked(texts: Iterable[str], secrets: dict[str, str] = SECRETS) -> list[str]:
    """'<secret name> in <where>' for every secret form found in the texts."""
    found = []
    for where, text in enumerate(texts):
        for name, secret in secrets.items():
            if any(form in text for form in _forms(secret)):
                found.append(f"{name} in text #{where}: …{_around(text, secret)}…")
    return found


def _around(text: str, secret: str) -> str:
    for form in _forms(secret):
        at = text.find(form)
        if at >= 0:
            return text[max(0, at - 120) : at + len(form) + 40]
    return ""


def run_texts(instance: DagsterInstance, run_id: str) -> list[str]:
    """What the instance keeps about a run's execution, as the UI could show it.

    The event log (log lines, step failures with their causes and stack
    traces, materializations with metadata, check results), the run record
    (run config, tags) and the execution-plan snapshot. (The job snapshot,
    which carries the resources' configuration, is `job_snapshot_text`.)
    """
    texts = [serialize_value(entry) for entry in instance.all_logs(run_id)]
    run = instance.get_run_by_id(run_id)
    assert run is not None
    texts.append(serialize_value(run))
    texts.append(json.dumps(run.run_config, default=str))
    if run.execution_plan_snapshot_id:
        texts.append(
            serialize_value(instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id))
        )
    return texts


def job_snapshot_text(instance: DagsterInstance, run_id: str) -> str:
    """The run's job snapshot: its config schema, resource defaults included (UI: run config)."""
    run = instance.get_run_by_id(run_id)
    assert run is not None and run.job_snapshot_id
    return serialize_value(instance.get_job_snapshot(run.job_snapshot_id))


def test_the_scan_finds_a_secret_that_is_there(capfd):
    """Positive control: a careless asset that logs a secret and records it as metadata."""

    @asset
    def careless(context) -> MaterializeResult:
        context.log.info(f"connecting with {quote(LOCAL_AWS_SECRET_ACCESS_KEY, safe='')}")
        return MaterializeResult(metadata={"key_id": LOCAL_AWS_ACCESS_KEY_ID})

    instance = DagsterInstance.ephemeral()
    result = materialize([careless], instance=instance)
    found = leaked(run_texts(instance, result.run_id))
    assert any(f.startswith("aws_secret_access_key") for f in found)
    assert any(f.startswith("aws_access_key_id") for f in found)
    assert leaked([capfd.readouterr().err])


def test_a_full_materialization_leaks_no_secret(
    local_cloud, aws_clients, bigquery_client, pipeline_config
):
    clean = _runs.clean_run(local_cloud, aws_clients, bigquery_client, pipeline_config)
    clean.require()
    texts, metadata = [], []
    for result in clean.results.values():
        texts += run_texts(clean.instance, result.run_id)
        texts += [serialize_value(event) for event in result.all_events]
        metadata += [
            serialize_value(event.materialization.metadata)
            for event in result.get_asset_materialization_events()
        ]
    assert len(metadata) == 4  # both exports and both tables: the scan covers their metadata
    # The RDS table hashes a column (pipeline.yaml), so the run used the hash key.
    [rds] = clean.config.rds.instances
    assert rds.table_settings(("shop", "customers")).hashed_columns == ["email"]
    assert leaked(texts + metadata) == []


def test_a_failing_materialization_leaks_no_secret(
    local_cloud, aws_clients, bigquery_client, pipeline_config, capfd
):
    """Failures from boto3 (a missing table, a missing snapshot) and from BigQuery."""
    clean = _runs.clean_run(local_cloud, aws_clients, bigquery_client, pipeline_config)
    config = _runs.make_config(
        "dataset_that_does_not_exist",
        dynamodb_table="table-that-does-not-exist",
        rds_instances=[clean.rds],
    )
    instance = DagsterInstance.ephemeral()
    export_op = f"rds__{clean.rds.identifier}_snapshot_export"
    result = _runs.run(
        config,
        instance=instance,
        run_config={"ops": {export_op: {"config": {"snapshot_identifier": "no-such-snapshot"}}}},
    )
    assert not result.success
    failures = _runs.failure_messages(result)
    assert "table-that-does-not-exist" in failures and "no-such-snapshot" in failures
    texts = run_texts(instance, result.run_id)
    texts += [serialize_value(event) for event in result.all_events]
    texts.append(capfd.readouterr().err)
    assert leaked(texts) == []


def _definition_texts() -> list[str]:
    """What the Dagster UI is sent about the code location (resources and their config)."""
    definitions = pipeline_definitions(current_config())
    snap = RepositorySnap.from_def(definitions.get_repository_def())
    return [serialize_value(snap)] + [serialize_value(r) for r in snap.resources]


def test_the_local_resources_shown_in_the_ui_hold_no_secret(
    local_cloud, aws_clients, bigquery_client, pipeline_config
):
    """The code location's resources, and the job snapshot stored with a run."""
    clean = _runs.clean_run(local_cloud, aws_clients, bigquery_client, pipeline_config)
    run_id = clean.results["dynamodb"].run_id
    texts = [*_definition_texts(), job_snapshot_text(clean.instance, run_id)]
    assert leaked(texts) == []


def test_the_production_resources_shown_in_the_ui_hold_no_secret(monkeypatch):
    """Production: AWS from the default chain, Google's key through an EnvVar (name only)."""
    gcp_key = base64.b64encode(b'{"private_key": "fake-gcp-private-key-0001"}').decode()
    aws_secret = "prod/FAKE+secret+from+the+environment+0002"
    monkeypatch.setenv("EXPORT_PIPELINE_ENV", "production")
    monkeypatch.setenv("GCP_CREDENTIALS", gcp_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", aws_secret)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAPRODFAKE00000002")
    texts = _definition_texts()
    secrets = {
        "GCP_CREDENTIALS": gcp_key,
        "AWS_SECRET_ACCESS_KEY": aws_secret,
        "AWS_ACCESS_KEY_ID": "AKIAPRODFAKE00000002",
    }
    assert leaked(texts, secrets) == []
    [bigquery] = [json.loads(serialize_value(r)) for r in _snap_resources() if r.name == "bigquery"]
    assert "GCP_CREDENTIALS" in json.dumps(bigquery["configured_values"]["gcp_credentials"])


def _snap_resources() -> list[Any]:
    definitions = pipeline_definitions(current_config())
    return list(RepositorySnap.from_def(definitions.get_repository_def()).resources)
