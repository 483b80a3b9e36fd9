"""AWS clients as Dagster resources.

S3 and RDS come from dagster-aws; DynamoDB has no resource there, so it is
built the same way (`ResourceWithBoto3Configuration`): region,
endpoint URL, retries and credentials are configuration, and credentials left
unset fall back to boto3's default chain (environment, profile, instance or
task role), which is how production should run.
"""

from __future__ import annotations

from typing import Any

from dagster_aws.s3 import S3Resource as _DagsterS3Resource
from dagster_aws.utils import ResourceWithBoto3Configuration
from pydantic import Field


class S3Resource(_DagsterS3Resource):
    """dagster-aws's S3 resource, seen as itself in `context.resources`.

    dagster-aws puts a client on the context instead; the assets, built the
    same way for every source, read every resource from `context.resources`
    and call its `get_client()`, so each resource must appear as itself.
    """

    def get_object_to_set_on_execution_context(self) -> Any:
        return self


class DynamoDBResource(ResourceWithBoto3Configuration):
    """A boto3 DynamoDB client with the pipeline's retry settings."""

    retry_mode: str = Field(
        default="adaptive",
        description="botocore retry mode ('standard' or 'adaptive'); adaptive also "
        "rate-limits the client when DynamoDB throttles.",
    )

    def get_client(self) -> Any:
        from export_pipeline.resources._boto import boto3_client

        return boto3_client(self, "dynamodb", retry_mode=self.retry_mode)
