"""One place that turns boto3 resource configuration into a client."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from dagster_aws.utils import ResourceWithBoto3Configuration


def boto3_client(
    resource: ResourceWithBoto3Configuration, service: str, *, retry_mode: str = "standard"
) -> Any:
    """A client for `service` configured from `resource` (unset credentials: default chain)."""
    session = boto3.session.Session(profile_name=resource.profile_name)
    return session.client(
        service,
        region_name=resource.region_name,
        endpoint_url=resource.endpoint_url,
        use_ssl=resource.use_ssl,
        verify=resource.verify,
        aws_access_key_id=resource.aws_access_key_id,
        aws_secret_access_key=resource.aws_secret_access_key,
        aws_session_token=resource.aws_session_token,
        config=Config(retries={"max_attempts": resource.max_attempts or 5, "mode": retry_mode}),
    )
