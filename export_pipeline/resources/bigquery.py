"""BigQuery client resource: dagster-gcp's, plus an API endpoint and anonymous auth.

Production leaves `api_endpoint` unset and authenticates with Application
Default Credentials (or a base64 key in `gcp_credentials`, given through
`dagster.EnvVar`). The local cloud sets `api_endpoint` to the emulator and
`anonymous_credentials`, the two knobs the official client offers for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

from dagster_gcp import BigQueryResource as _DagsterBigQueryResource
from google.cloud import bigquery
from pydantic import Field

from export_pipeline.bigquery.tables import TableId


class BigQueryResource(_DagsterBigQueryResource):
    api_endpoint: str | None = Field(
        default=None,
        description="BigQuery API root (e.g. an emulator's URL); unset for Google's.",
    )
    anonymous_credentials: bool = Field(
        default=False, description="Send no credentials (only for an emulator)."
    )

    def get_object_to_set_on_execution_context(self) -> Any:
        """This resource itself in `context.resources` (dagster-gcp puts a client there).

        The assets read every resource from `context.resources` and ask it for
        a client, and the loaders need the project and location it holds.
        """
        return self

    def table_url(self, dotted_table: str) -> str:
        """A link that opens `project.dataset.table` where this resource's client talks.

        Google's API: the table in the Cloud console. Another endpoint (the
        local cloud's): the table's REST resource there, which a browser shows
        as JSON (the console cannot open a table that is not in Google Cloud).
        """
        table = TableId.parse(dotted_table)
        if self.api_endpoint is None:
            return table.console_url
        p, d, t = (quote(x, safe="") for x in (table.project, table.dataset, table.table))
        return f"{self.api_endpoint.rstrip('/')}/bigquery/v2/projects/{p}/datasets/{d}/tables/{t}"

    @contextmanager
    def get_client(self) -> Iterator[bigquery.Client]:
        if self.api_endpoint is None and not self.anonymous_credentials:
            with super().get_client() as client:
                yield client
            return
        from google.auth.credentials import AnonymousCredentials

        credentials = AnonymousCredentials() if self.anonymous_credentials else None
        client_options = {"api_endpoint": self.api_endpoint} if self.api_endpoint else None
        client = bigquery.Client(
            project=self.project,
            location=self.location,
            credentials=credentials,
            client_options=client_options,
        )
        try:
            yield client
        finally:
            client.close()
