"""What the local cloud reads of a pipeline configuration, as structural types.

The local cloud imports nothing of the pipeline: it is the embedded stand-in
for AWS and BigQuery, and the pipeline must not be able to lean on it. The
pipeline's `PipelineConfig` satisfies `CloudConfiguration` by its shape;
these protocols name exactly the fields the seeders and mutators read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class AwsSettings(Protocol):
    @property
    def region(self) -> str: ...

    @property
    def export_bucket(self) -> str: ...


class BigQuerySettings(Protocol):
    @property
    def project(self) -> str: ...

    @property
    def dataset(self) -> str: ...

    @property
    def location(self) -> str: ...


class DynamoDBTable(Protocol):
    @property
    def name(self) -> str: ...


class DynamoDBSettings(Protocol):
    @property
    def tables(self) -> Sequence[DynamoDBTable]: ...


class RdsSource(Protocol):
    """An RDS instance or Aurora cluster the demo creates, with its export role and key."""

    @property
    def identifier(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def engine_family(self) -> str:
        """'mysql' or 'postgres'."""

    @property
    def iam_role_arn(self) -> str: ...

    @property
    def kms_key_id(self) -> str: ...


class RdsSettings(Protocol):
    @property
    def instances(self) -> Sequence[RdsSource]: ...


class GcsSettings(Protocol):
    @property
    def staging_bucket(self) -> str: ...


class CloudConfiguration(Protocol):
    """The sources, buckets and dataset the local cloud creates and seeds."""

    @property
    def aws(self) -> AwsSettings: ...

    @property
    def bigquery(self) -> BigQuerySettings: ...

    @property
    def dynamodb(self) -> DynamoDBSettings: ...

    @property
    def rds(self) -> RdsSettings: ...

    @property
    def gcs(self) -> GcsSettings | None:
        """The staging bucket to create, if any."""
