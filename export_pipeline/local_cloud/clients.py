"""boto3 clients pointed at the local cloud, handed to the demo seeders and mutators.

They are ordinary boto3 clients with a different endpoint and fake
credentials: what works with them works the same against AWS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config

from export_pipeline.local_cloud.configuration import CloudConfiguration
from export_pipeline.local_cloud.settings import LocalCloudSettings


@dataclass(frozen=True)
class AwsClients:
    """One boto3 client per service the local cloud serves, all in the config's region."""

    region: str
    s3: Any
    dynamodb: Any
    rds: Any
    iam: Any
    kms: Any
    sts: Any

    @classmethod
    def create(cls, settings: LocalCloudSettings, region: str) -> AwsClients:
        session = boto3.session.Session(
            aws_access_key_id=settings.aws_access_key_id,
            aws_secret_access_key=settings.aws_secret_access_key,
            region_name=region,
        )
        # Path-style addressing: a bucket name as a sub-domain of 127.0.0.1 does not resolve.
        config = Config(
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path"},
        )

        def client(service: str) -> Any:
            return session.client(service, endpoint_url=settings.aws_endpoint_url, config=config)

        return cls(
            region=region,
            s3=client("s3"),
            dynamodb=client("dynamodb"),
            rds=client("rds"),
            iam=client("iam"),
            kms=client("kms"),
            sts=client("sts"),
        )

    @classmethod
    def for_config(cls, settings: LocalCloudSettings, config: CloudConfiguration) -> AwsClients:
        return cls.create(settings, config.aws.region)
