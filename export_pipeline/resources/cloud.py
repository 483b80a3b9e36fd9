"""The `cloud` resource: makes sure the clouds a run talks to are there.

Every asset requires it, so its set-up runs once per step before any client
is made. Locally that means starting the embedded local cloud when it is not
running (several run processes share one, behind a file lock); in
production it means failing early, with a message that says what to set,
when no AWS or Google credentials can be found. Asset code never asks which
environment it is in.
"""

from __future__ import annotations

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr


class CloudResource(ConfigurableResource):
    """Base class: what the assets see under the `cloud` key."""

    environment: str = Field(description="'local' or 'production'.")

    def describe(self) -> str:
        return self.environment


class LocalCloudResource(CloudResource):
    """Starts the embedded local cloud on first use (a no-op when it already runs)."""

    environment: str = "local"
    state_dir: str = Field(description="Folder holding the local cloud's state, logs and pids.")
    aws_port: int
    bigquery_port: int
    bigquery_grpc_port: int
    gcs_port: int = Field(default=4443, description="Port of the local GCS JSON API.")
    enforce_iam: bool = Field(
        default=False, description="Start the AWS server checking IAM (EXPORT_PIPELINE_LOCAL_IAM)."
    )

    def setup_for_execution(self, context: InitResourceContext) -> None:
        from export_pipeline.config import current_config
        from export_pipeline.local_cloud.api import FRESH_START_LINE, ensure_running

        config = current_config()
        if ensure_running(self.settings(), config).started_fresh:
            context.log.info(FRESH_START_LINE.format(dataset=config.bigquery.dataset))

    def settings(self):  # -> LocalCloudSettings (import kept lazy: the extra may be absent)
        from pathlib import Path

        from export_pipeline.local_cloud.api import LocalCloudSettings

        return LocalCloudSettings(
            state_dir=Path(self.state_dir),
            aws_port=self.aws_port,
            bigquery_port=self.bigquery_port,
            bigquery_grpc_port=self.bigquery_grpc_port,
            gcs_port=self.gcs_port,
            enforce_iam=self.enforce_iam,
        )


class ProductionCloudResource(CloudResource):
    """Checks that AWS and Google credentials resolve, without logging any of them."""

    environment: str = "production"
    check_credentials: bool = Field(
        default=True, description="Fail at step start when no credentials can be found."
    )
    _identity: str = PrivateAttr(default="")

    def setup_for_execution(self, context: InitResourceContext) -> None:
        if not self.check_credentials:
            return
        import boto3
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError

        if boto3.session.Session().get_credentials() is None:
            raise RuntimeError(
                "No AWS credentials found: run with an instance/task role, set AWS_PROFILE, "
                "or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                "(see docs/operations.md 'Running it for real')."
            )
        try:
            google.auth.default(scopes=["https://www.googleapis.com/auth/bigquery"])
        except DefaultCredentialsError:
            raise RuntimeError(
                "No Google credentials found: set GOOGLE_APPLICATION_CREDENTIALS, run "
                "`gcloud auth application-default login`, or give a key in the "
                "GCP_CREDENTIALS environment variable "
                "(see docs/operations.md 'Running it for real')."
            ) from None
