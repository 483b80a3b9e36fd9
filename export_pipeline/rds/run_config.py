"""Run config of the RDS assets: what an operator (or a sensor) can ask of one run."""

from __future__ import annotations

from pydantic import Field

from export_pipeline.contract import ExportRunConfig, LoadRunConfig


class SnapshotExportConfig(ExportRunConfig):
    """Run config of an RDS export asset: which snapshot, which attempt, how to wait."""

    snapshot_identifier: str | None = Field(
        default=None,
        description="Export this snapshot instead of the newest available one.",
    )
    export_attempt: int = Field(
        default=1,
        ge=1,
        description="Raise to 2, 3, … to start a fresh export after a FAILED or CANCELED one "
        "for the same snapshot (AWS never reuses an export task identifier).",
    )


class RdsTableLoadConfig(LoadRunConfig):
    export_task_identifier: str | None = Field(
        default=None,
        description="Load from this existing export task instead of the export asset's latest "
        "materialization (reload without a new export).",
    )
