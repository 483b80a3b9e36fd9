"""The one place that decides which clouds the pipeline talks to.

`local` (the default) points every client at the embedded local cloud;
`production` leaves endpoints unset so boto3 and the BigQuery client use the
real services and the standard credential chains. Nothing else in the
project looks at the environment.
"""

from __future__ import annotations

from typing import Any

from dagster import EnvVar
from dagster_aws.rds import RDSResource

from export_pipeline.config import Environment, PipelineConfig
from export_pipeline.resources.aws import DynamoDBResource, S3Resource
from export_pipeline.resources.bigquery import BigQueryResource
from export_pipeline.resources.cloud import LocalCloudResource, ProductionCloudResource
from export_pipeline.resources.gcs import GcsResource
from export_pipeline.resources.storage_transfer import StorageTransferResource

GCP_CREDENTIALS_ENV = "GCP_CREDENTIALS"
# The local cloud's (fake) AWS keys reach the resources through these variables,
# so that Dagster shows only their names, never the values, as for real secrets.
LOCAL_ACCESS_KEY_ENV = "EXPORT_PIPELINE_LOCAL_AWS_ACCESS_KEY_ID"
LOCAL_SECRET_KEY_ENV = "EXPORT_PIPELINE_LOCAL_AWS_SECRET_ACCESS_KEY"
# The local demo's HMAC key for hashed columns (`bigquery.hash_key`), set only when the
# environment is local and the variable is unset: a fixed, public, fake key, so the
# demo hashes the same across runs. Production reads the real secret, never this.
LOCAL_DEMO_HASH_KEY = "local-demo-hash-key-NOT-A-SECRET"


def build_resources(
    config: PipelineConfig, *, local_keys_env: tuple[str, str] | None = None
) -> dict[str, Any]:
    """Resources for the environment the configuration resolves to.

    `local_keys_env`: the names of the two variables (access key id, secret)
    holding the keys the pipeline signs with in the local environment; by
    default `LOCAL_ACCESS_KEY_ENV` / `LOCAL_SECRET_KEY_ENV`, which hold the
    local cloud's own keys unless set. Another principal (an IAM user holding
    the rendered policy, against an IAM-enforcing local cloud) is other names.
    """
    if config.resolved_environment() is Environment.PRODUCTION:
        return _production_resources(config)
    return _local_resources(config, local_keys_env or (LOCAL_ACCESS_KEY_ENV, LOCAL_SECRET_KEY_ENV))


def _production_resources(config: PipelineConfig) -> dict[str, Any]:
    import os

    region = config.aws.region
    bigquery_kwargs: dict[str, Any] = {}
    if os.environ.get(GCP_CREDENTIALS_ENV):
        # A base64 service-account key, read at run time and never logged.
        bigquery_kwargs["gcp_credentials"] = EnvVar(GCP_CREDENTIALS_ENV)
    return {
        "cloud": ProductionCloudResource(),
        "s3": S3Resource(region_name=region, max_attempts=8),
        "rds": RDSResource(region_name=region, max_attempts=8),
        "dynamodb": DynamoDBResource(region_name=region, max_attempts=8),
        "bigquery": BigQueryResource(
            project=config.bigquery.project, location=config.bigquery.location, **bigquery_kwargs
        ),
        "storage_transfer": StorageTransferResource(project=config.bigquery.project),
        "gcs": GcsResource(project=config.bigquery.project, **_staging(config), **bigquery_kwargs),
    }


def _staging(config: PipelineConfig) -> dict[str, Any]:
    """The `gcs` resource's staging location; none without a `gcs` section."""
    if config.gcs is None:
        return {}
    return {
        "staging_bucket": config.gcs.staging_bucket,
        "staging_prefix": config.gcs.staging_prefix,
    }


def _local_resources(config: PipelineConfig, keys_env: tuple[str, str]) -> dict[str, Any]:
    import os

    from export_pipeline.local_cloud.api import LocalCloudSettings

    settings = LocalCloudSettings.from_env()
    os.environ.setdefault(LOCAL_ACCESS_KEY_ENV, settings.aws_access_key_id)
    os.environ.setdefault(LOCAL_SECRET_KEY_ENV, settings.aws_secret_access_key)
    os.environ.setdefault(config.bigquery.hash_key.env_var, LOCAL_DEMO_HASH_KEY)
    aws = {
        "region_name": config.aws.region,
        "endpoint_url": settings.aws_endpoint_url,
        "aws_access_key_id": EnvVar(keys_env[0]),
        "aws_secret_access_key": EnvVar(keys_env[1]),
        "max_attempts": 5,
    }
    return {
        "cloud": LocalCloudResource(
            state_dir=str(settings.state_dir),
            aws_port=settings.aws_port,
            bigquery_port=settings.bigquery_port,
            bigquery_grpc_port=settings.bigquery_grpc_port,
            storage_transfer_port=settings.storage_transfer_port,
            gcs_port=settings.gcs_port,
            enforce_iam=settings.enforce_iam,
        ),
        "s3": S3Resource(**aws),
        "rds": RDSResource(**aws),
        "dynamodb": DynamoDBResource(**aws),
        "bigquery": BigQueryResource(
            project=settings.bigquery_project,
            location=config.bigquery.location,
            api_endpoint=settings.bigquery_api_endpoint,
            anonymous_credentials=True,
        ),
        "storage_transfer": StorageTransferResource(
            project=settings.bigquery_project,
            api_endpoint=settings.storage_transfer_endpoint,
            anonymous_credentials=True,
        ),
        "gcs": GcsResource(
            project=settings.bigquery_project,
            **_staging(config),
            api_endpoint=settings.gcs_endpoint,
            anonymous_credentials=True,
        ),
    }
