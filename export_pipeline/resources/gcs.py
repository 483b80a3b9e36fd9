"""Google Cloud Storage resource: where Parquet is staged, and a client to stage it with.

The resource is always present under the key `gcs`; `staging_bucket` is None
when the configuration has no `gcs` section, and the loaders then upload
Parquet to BigQuery through the worker as before. Production leaves
`api_endpoint` unset and authenticates with Application Default Credentials
(or a base64 key in `gcp_credentials`, as the BigQuery resource does); the
local cloud sets `api_endpoint` to its GCS server and `anonymous_credentials`,
the knobs the official client offers for any endpoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dagster import ConfigurableResource
from google.cloud import storage
from pydantic import Field

from export_pipeline.bigquery.gcs_staging import GcsStaging


class GcsResource(ConfigurableResource):
    project: str | None = Field(default=None, description="Project billed for GCS requests.")
    staging_bucket: str | None = Field(
        default=None, description="Bucket Parquet is staged in (configuration gcs.staging_bucket)."
    )
    staging_prefix: str = Field(
        default="staging", description="Object-name prefix (configuration gcs.staging_prefix)."
    )
    api_endpoint: str | None = Field(
        default=None, description="GCS JSON API root (e.g. the local cloud's); unset for Google's."
    )
    anonymous_credentials: bool = Field(
        default=False, description="Send no credentials (only for a local endpoint)."
    )
    gcp_credentials: str | None = Field(
        default=None, description="A base64 service-account key; unset: Application Default."
    )

    def get_object_to_set_on_execution_context(self) -> Any:
        """This resource itself in `context.resources`: the loaders need the bucket and prefix."""
        return self

    @property
    def staging_enabled(self) -> bool:
        return self.staging_bucket is not None

    @contextmanager
    def staging(self, run: str) -> Iterator[GcsStaging | None]:
        """Where run `run` stages its Parquet, with a client; None without a staging bucket."""
        if self.staging_bucket is None:
            yield None
            return
        with self.get_client() as client:
            yield GcsStaging(client, self.staging_bucket, self.staging_prefix, run)

    @contextmanager
    def get_client(self) -> Iterator[storage.Client]:
        client_options = {"api_endpoint": self.api_endpoint} if self.api_endpoint else None
        if self.gcp_credentials:
            from dagster_gcp.bigquery.utils import setup_gcp_creds

            with setup_gcp_creds(self.gcp_credentials):
                client = storage.Client(project=self.project, client_options=client_options)
        else:
            credentials = None
            if self.anonymous_credentials:
                from google.auth.credentials import AnonymousCredentials

                credentials = AnonymousCredentials()
            client = storage.Client(
                project=self.project, credentials=credentials, client_options=client_options
            )
        try:
            yield client
        finally:
            client.close()
