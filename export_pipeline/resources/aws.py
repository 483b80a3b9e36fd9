"""AWS clients as Dagster resources.

S3 and RDS come from dagster-aws as they are; DynamoDB has no resource there,
so it is built the same way (`ResourceWithBoto3Configuration`): region,
endpoint URL, retries and credentials are configuration, and credentials left
unset fall back to boto3's default chain (environment, profile, instance or
task role), which is how production should run.
"""

from __future__ import annotations

from typing import Any

from dagster_aws.utils import ResourceWithBoto3Configuration
from pydantic import Field


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
