"""Fixtures of the fault tests: proxies in front of the session's local cloud."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from export_pipeline.local_cloud.settings import LocalCloudSettings
from export_pipeline_tests.faults import _runs
from export_pipeline_tests.faults.proxy import FaultProxy, fault_proxy


@pytest.fixture
def aws_proxy(local_cloud: LocalCloudSettings) -> Iterator[FaultProxy]:
    """A fault proxy in front of the local cloud's AWS endpoint (moto)."""
    with fault_proxy(local_cloud.host, local_cloud.aws_port) as proxy:
        yield proxy


@pytest.fixture
def bigquery_proxy(local_cloud: LocalCloudSettings) -> Iterator[FaultProxy]:
    """A fault proxy in front of the local cloud's BigQuery endpoint (bqemulator)."""
    with fault_proxy(local_cloud.host, local_cloud.bigquery_port) as proxy:
        yield proxy


@pytest.fixture
def gcs_proxy(local_cloud: LocalCloudSettings) -> Iterator[FaultProxy]:
    """A fault proxy in front of the local cloud's GCS server."""
    with fault_proxy(local_cloud.host, local_cloud.gcs_port) as proxy:
        yield proxy


@pytest.fixture
def clean(local_cloud, aws_clients, bigquery_client, pipeline_config) -> _runs.CleanRun:
    """The session's fault-free run (see `_runs.CleanRun`)."""
    return _runs.clean_run(local_cloud, aws_clients, bigquery_client, pipeline_config)


@pytest.fixture
def scratch_dataset(local_cloud, bigquery_client) -> Iterator[str]:
    """An empty BigQuery dataset of the test's own, removed afterwards."""
    name = "faults_" + uuid.uuid4().hex[:10]
    bigquery_client.create_dataset(f"{local_cloud.bigquery_project}.{name}")
    yield name
    bigquery_client.delete_dataset(
        f"{local_cloud.bigquery_project}.{name}", delete_contents=True, not_found_ok=True
    )
