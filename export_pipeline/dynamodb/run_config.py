"""Run config of the DynamoDB assets: what an operator (or a sensor) can ask of one run."""

from __future__ import annotations

from pydantic import Field

from export_pipeline.contract import ExportRunConfig, LoadRunConfig

# `export_arn: latest`: the newest completed full export of the table.
LATEST = "latest"


class DynamoDBExportConfig(ExportRunConfig):
    """Run config of a DynamoDB export asset: only the shared `wait_for_completion`."""


class DynamoDBLoadConfig(LoadRunConfig):
    """Run config of a BigQuery table asset: which export(s) to load."""

    export_arn: str | None = Field(
        default=None,
        description="Load this existing export (full: replace; incremental: merge) instead of "
        "the one the export asset last produced. Starts no new export: the reload/backfill path. "
        f"'{LATEST}': the table's newest COMPLETED full export, whoever made it (ListExports).",
    )
    export_arns: list[str] | None = Field(
        default=None,
        description="Load these exports, in order (a chain of incremental windows, or one full "
        "export). export_completion_sensor sets it to the exports it saw complete.",
    )
