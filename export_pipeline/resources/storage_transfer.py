"""The Storage Transfer Service client as a Dagster resource.

Production leaves `api_endpoint` unset and authenticates with Application
Default Credentials; the local cloud sets `api_endpoint` to its Storage
Transfer server and `anonymous_credentials`. Both use the REST transport,
the one the official client can point at another endpoint over plain HTTP.
"""

from __future__ import annotations

from typing import Any

from dagster import ConfigurableResource
from pydantic import Field


class StorageTransferResource(ConfigurableResource):
    project: str = Field(description="Google Cloud project the transfer jobs belong to.")
    api_endpoint: str | None = Field(
        default=None, description="Storage Transfer API root (e.g. a local server); unset: Google."
    )
    anonymous_credentials: bool = Field(
        default=False, description="Send no credentials (only for a local server)."
    )

    def get_client(self) -> Any:
        """A `storage_transfer.StorageTransferServiceClient` (REST transport)."""
        from google.cloud import storage_transfer

        credentials = None
        if self.anonymous_credentials:
            from google.auth.credentials import AnonymousCredentials

            credentials = AnonymousCredentials()
        options = {"api_endpoint": self.api_endpoint} if self.api_endpoint else None
        return storage_transfer.StorageTransferServiceClient(
            transport="rest", credentials=credentials, client_options=options
        )
