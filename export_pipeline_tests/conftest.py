"""Shared fixtures: a private embedded local cloud for the whole test session.

How to use it:

    def test_something(local_cloud, aws_clients, bigquery_client, pipeline_config):
        # local_cloud: LocalCloudSettings of a running cloud (moto + bqemulator),
        #   seeded like `export-pipeline local up` (export bucket, BigQuery
        #   dataset, demo DynamoDB tables / RDS snapshots once those exist).
        aws_clients.s3.list_objects_v2(Bucket=pipeline_config.aws.export_bucket)
        bigquery_client.query("SELECT 1").result()
        # gcs_client: google.cloud.storage.Client of the local GCS server, whose
        #   staging bucket (gcs.staging_bucket) `up` created.

- The cloud starts once per session (a few seconds), on free loopback ports,
  with its state in a pytest tmp folder, and is stopped at the end.
- While it runs, os.environ holds EXPORT_PIPELINE_LOCAL_DIR /
  EXPORT_PIPELINE_LOCAL_AWS_PORT / EXPORT_PIPELINE_LOCAL_BIGQUERY_PORT /
  EXPORT_PIPELINE_LOCAL_BIGQUERY_GRPC_PORT / EXPORT_PIPELINE_LOCAL_GCS_PORT, so
  `LocalCloudSettings.from_env()`
  (and the Dagster resources built from it) point at this private cloud; the
  previous values come back after the session.
- The cloud is shared: give tables / keys / datasets names unique to your test
  (e.g. from `unique_name`) and do not stop it. A test that needs its own
  up/down cycle starts a separate cloud (see
  `export_pipeline_tests.support.local_cloud.fresh_local_cloud_settings`).
- The cloud enforces IAM (`EXPORT_PIPELINE_LOCAL_IAM=enforce` unless the
  caller set the variable; `off` runs it permissive). `aws_clients` hold the
  local cloud's own keys, an administrator's: set up the source team's side
  (tables, items, instances, snapshots, sample exports) with them. Run the
  pipeline as its least-privilege principal, an IAM user holding exactly the
  policy rendered from the configuration it runs: `pipeline_resources(config)`,
  `pipeline_definitions(config)`, `pipeline_environment(config, env)` from
  `support.principals`. The process's default pipeline keys
  (`EXPORT_PIPELINE_LOCAL_AWS_*`) are the demo configuration's principal, so a
  `dagster` command loading pipeline.yaml runs as it too. A test whose pipeline
  must do more than its policy allows is marked
  `@pytest.mark.permissive_iam("why")`.
- Server logs: `<state_dir>/logs/aws.log` and `logs/bigquery.log` (the path is
  `local_cloud.state_dir`).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from export_pipeline.config import PipelineConfig, current_config
from export_pipeline.environment import LOCAL_ACCESS_KEY_ENV, LOCAL_SECRET_KEY_ENV
from export_pipeline.local_cloud import control
from export_pipeline.local_cloud.clients import AwsClients
from export_pipeline.local_cloud.dynamodb_exports import EXPORT_SECONDS_ENV
from export_pipeline.local_cloud.settings import (
    AWS_PORT_ENV,
    BIGQUERY_GRPC_PORT_ENV,
    BIGQUERY_PORT_ENV,
    ENFORCE,
    GCS_PORT_ENV,
    IAM_ENV,
    STATE_DIR_ENV,
    STORAGE_TRANSFER_PORT_ENV,
    LocalCloudSettings,
)
from export_pipeline.local_cloud.storage_transfer_server import OPERATION_SECONDS_ENV
from export_pipeline_tests.support.aws_samples import AwsSamples, write_aws_samples
from export_pipeline_tests.support.local_cloud import (
    fresh_local_cloud_settings,
    restore_environment,
)
from export_pipeline_tests.support.prerequisites import missing_lines
from export_pipeline_tests.support.principals import (
    forget_principals,
    permissive,
    use_pipeline_keys,
)
from export_pipeline_tests.support.readme_tour import JOB, Tour, start_tour

TEST_EXPORT_SECONDS = "0.5"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "needs(name): the test needs a program or server from the machine: chromium, "
        "mariadb, postgresql, rabbitmq or redis (support/prerequisites.py); checked once "
        "before any test runs",
    )
    config.addinivalue_line(
        "markers",
        "permissive_iam(reason): the pipeline signs with the local cloud's own keys instead of "
        "its least-privilege principal (support/principals.py); the reason says why",
    )


def pytest_collection_finish(session: pytest.Session) -> None:
    """Stop the run, before any test, when a selected test's prerequisite is missing."""
    needed = [
        name
        for item in session.items
        for marker in item.iter_markers("needs")
        for name in marker.args
    ]
    lines = missing_lines(needed)
    if lines:
        pytest.exit("\n".join(lines), returncode=pytest.ExitCode.TESTS_FAILED)


def _point_environment_at(settings: LocalCloudSettings) -> None:
    os.environ.update(
        {
            STATE_DIR_ENV: str(settings.state_dir),
            AWS_PORT_ENV: str(settings.aws_port),
            BIGQUERY_PORT_ENV: str(settings.bigquery_port),
            BIGQUERY_GRPC_PORT_ENV: str(settings.bigquery_grpc_port),
            GCS_PORT_ENV: str(settings.gcs_port),
            STORAGE_TRANSFER_PORT_ENV: str(settings.storage_transfer_port),
        }
    )


def _start_private_cloud(
    tmp_path_factory: pytest.TempPathFactory, config: PipelineConfig, attempts: int = 3
) -> LocalCloudSettings:
    """Start a cloud on free ports; try other ports if another program took one meanwhile."""
    for attempt in range(1, attempts + 1):
        settings = fresh_local_cloud_settings(tmp_path_factory.mktemp("local_cloud"))
        _point_environment_at(settings)  # before `up`: the servers inherit it
        try:
            # owner_pid: the servers stop by themselves if this session is killed.
            control.up(settings, config, owner_pid=os.getpid())
            return settings
        except control.LocalCloudError as exc:
            port_race = "in use" in str(exc) or "exited during start-up" in str(exc)
            control.down(settings)
            if not port_race or attempt == attempts:
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def pipeline_config() -> PipelineConfig:
    """The demo configuration (pipeline.yaml, or $EXPORT_PIPELINE_CONFIG)."""
    return current_config()


@pytest.fixture(scope="session")
def local_cloud(
    tmp_path_factory: pytest.TempPathFactory, pipeline_config: PipelineConfig
) -> Iterator[LocalCloudSettings]:
    """A running, seeded, private local cloud for the session (see the module docstring)."""
    variables = (
        STATE_DIR_ENV,
        AWS_PORT_ENV,
        BIGQUERY_PORT_ENV,
        BIGQUERY_GRPC_PORT_ENV,
        GCS_PORT_ENV,
        STORAGE_TRANSFER_PORT_ENV,
        EXPORT_SECONDS_ENV,
        OPERATION_SECONDS_ENV,
        IAM_ENV,
        LOCAL_ACCESS_KEY_ENV,
        LOCAL_SECRET_KEY_ENV,
    )
    previous = {name: os.environ.get(name) for name in variables}
    # Exports take TEST_EXPORT_SECONDS instead of the demo's 2 s (unless the
    # caller chose): the suite starts ~100 of them. A test that needs an
    # export to keep running tags its snapshot or uses its own server.
    os.environ.setdefault(EXPORT_SECONDS_ENV, TEST_EXPORT_SECONDS)
    os.environ.setdefault(OPERATION_SECONDS_ENV, TEST_EXPORT_SECONDS)  # transfer operations
    # The pipeline's calls are checked as on AWS, against its rendered policy.
    os.environ.setdefault(IAM_ENV, ENFORCE)
    settings = None
    try:
        settings = _start_private_cloud(tmp_path_factory, pipeline_config)
        assert LocalCloudSettings.from_env() == settings
        use_pipeline_keys(pipeline_config)
        yield settings
    finally:
        if settings is not None:
            control.down(settings)
        restore_environment(previous)
        forget_principals()


@pytest.fixture(autouse=True)
def _permissive_iam(request: pytest.FixtureRequest) -> Iterator[None]:
    """`@pytest.mark.permissive_iam("why")`: the pipeline signs as the administrator."""
    marker = request.node.get_closest_marker("permissive_iam")
    if marker is None:
        yield
        return
    with permissive(" ".join(marker.args)):
        yield


@pytest.fixture(scope="session")
def aws_clients(local_cloud: LocalCloudSettings, pipeline_config: PipelineConfig) -> AwsClients:
    """boto3 clients (s3, dynamodb, rds, iam, kms, sts) for the session's local cloud."""
    return AwsClients.for_config(local_cloud, pipeline_config)


@pytest.fixture(scope="session")
def bigquery_client(local_cloud: LocalCloudSettings):  # type: ignore[no-untyped-def]
    """A `google.cloud.bigquery.Client` for the session's local BigQuery emulator."""
    client = control.bigquery_client(local_cloud)
    yield client
    client.close()


@pytest.fixture(scope="session")
def gcs_client(local_cloud: LocalCloudSettings):  # type: ignore[no-untyped-def]
    """A `google.cloud.storage.Client` for the session's local GCS server."""
    client = control.gcs_client(local_cloud)
    yield client
    client.close()


@pytest.fixture
def unique_name() -> str:
    """A short name no other test uses (for tables, keys, datasets in the shared cloud)."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture(scope="session")
def aws_samples(tmp_path_factory: pytest.TempPathFactory) -> AwsSamples:
    """Small exports in AWS's documented formats (`support.aws_samples`), written once.

    Each is a folder whose relative paths are S3 keys; tests read them, never change them.
    """
    return write_aws_samples(tmp_path_factory.mktemp("aws_samples"))


@pytest.fixture(scope="session")
def tour(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tour]:
    """The README's checkout folder and private cloud, shared by the README and UI tests."""
    yield from start_tour(tmp_path_factory)


@pytest.fixture(scope="session")
def first_run(tour: Tour) -> subprocess.CompletedProcess[str]:
    """The README's one command (after the install): the main job on a cloud it starts."""
    return tour.run(*JOB)
