"""Naming BigQuery tables safely, linking to them, and checking their dataset exists.

Every table the pipeline touches is a `TableId`: three validated parts, so
that SQL built from it (`.sql`) can never carry anything but a back-quoted,
checked identifier. Datasets are not created by the pipeline in production
(creating one needs `bigquery.datasets.create`, which a loader should not
hold, and picks a location/retention nobody reviewed), so a missing dataset
is an error that says what to create and with which command.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

from google.api_core import exceptions as google_exceptions
from google.cloud import bigquery

# Project ids: 6-30 of lower-case letters, digits, hyphens (legacy domain-scoped
# ids "example.com:proj" are not supported here). Datasets: letters, digits,
# underscores. Tables: the pipeline only makes names of letters, digits and
# underscores (export_pipeline.naming), which is what is accepted here.
_PROJECT = re.compile(r"^[a-z][a-z0-9\-]{4,28}[a-z0-9]$")
_DATASET = re.compile(r"^[A-Za-z0-9_]{1,1024}$")
_TABLE = re.compile(r"^[A-Za-z0-9_]{1,1024}$")


class BigQueryPublishError(RuntimeError):
    """Base of the errors raised by export_pipeline.bigquery; messages name the table."""


class DatasetNotFoundError(BigQueryPublishError):
    """The target dataset does not exist (the pipeline does not create datasets)."""


@dataclass(frozen=True, order=True)
class TableId:
    """A fully qualified BigQuery table: project, dataset, table (each validated)."""

    project: str
    dataset: str
    table: str

    def __post_init__(self) -> None:
        for part, pattern, what in (
            (self.project, _PROJECT, "project id"),
            (self.dataset, _DATASET, "dataset id"),
            (self.table, _TABLE, "table name"),
        ):
            if not isinstance(part, str) or not pattern.fullmatch(part):
                raise ValueError(
                    f"invalid BigQuery {what} {part!r} in "
                    f"{self.project}.{self.dataset}.{self.table}"
                )

    @classmethod
    def parse(cls, text: str) -> TableId:
        """`project.dataset.table` → TableId (validated)."""
        parts = text.split(".")
        if len(parts) != 3:
            raise ValueError(f"expected 'project.dataset.table', got {text!r}")
        return cls(*parts)

    @property
    def dotted(self) -> str:
        """`project.dataset.table`, the form the client library takes."""
        return f"{self.project}.{self.dataset}.{self.table}"

    @property
    def sql(self) -> str:
        """The table as a back-quoted SQL path: `` `project`.`dataset`.`table` ``."""
        return f"`{self.project}`.`{self.dataset}`.`{self.table}`"

    @property
    def reference(self) -> bigquery.TableReference:
        return bigquery.TableReference.from_string(self.dotted)

    @property
    def console_url(self) -> str:
        """Link to the table in the Google Cloud console (BigQuery Studio explorer).

        The `ws=!1m5!1m4!4m3!1s<project>!2s<dataset>!3s<table>` fragment is
        the form the console itself produces when sharing a table.
        """
        p, d, t = (quote(x, safe="") for x in (self.project, self.dataset, self.table))
        return f"https://console.cloud.google.com/bigquery?project={p}&ws=!1m5!1m4!4m3!1s{p}!2s{d}!3s{t}"

    def sibling(self, table: str) -> TableId:
        """Another table in the same dataset."""
        return TableId(self.project, self.dataset, table)

    def __str__(self) -> str:
        return self.dotted


def count_rows(client: bigquery.Client, target: TableId) -> int:
    """The table's row count, by `SELECT COUNT(*)`.

    Not the table's `numRows`: bqemulator 1.4.0 does not update it after DML.
    On BigQuery COUNT(*) is answered from metadata, at no cost.
    """
    rows = list(client.query(f"SELECT COUNT(*) AS n FROM {target.sql}").result())
    return int(rows[0]["n"])


def require_dataset(client: bigquery.Client, project: str, dataset: str) -> bigquery.Dataset:
    """Return the dataset, or raise `DatasetNotFoundError` saying how to create it.

    Raised instead of creating it: in production the pipeline's service
    account should only need table-level rights inside an existing dataset.
    """
    TableId(project, dataset, "x")  # validates both parts
    try:
        return client.get_dataset(f"{project}.{dataset}")
    except google_exceptions.NotFound as error:
        raise DatasetNotFoundError(
            f"BigQuery dataset {project}.{dataset} does not exist. The pipeline does not "
            f"create datasets: create it once (choosing its location), e.g. "
            f"`bq mk --dataset --location=<LOCATION> {project}:{dataset}`, and grant the "
            f"pipeline's service account roles/bigquery.dataEditor on it "
            f"(and roles/bigquery.jobUser on project {project})."
        ) from error
    except google_exceptions.Forbidden as error:
        raise DatasetNotFoundError(
            f"No access to BigQuery dataset {project}.{dataset}: grant the pipeline's service "
            f"account roles/bigquery.dataEditor on it ({error.message})."
        ) from error
