"""The Dagster definitions: assembled here from the configuration, built elsewhere.

Assets come from the per-source builders (`dynamodb/`, `rds/`), freshness
checks from `freshness.py`, resources from `environment.py`; this module only
puts them together with the jobs and the schedule (a job selecting a table
also runs its checks, row count and freshness, after the load).
"""

from __future__ import annotations

from typing import Any

from dagster import (
    AssetChecksDefinition,
    AssetSelection,
    Definitions,
    Field,
    ScheduleDefinition,
    define_asset_job,
    multiprocess_executor,
)

from export_pipeline.config import PipelineConfig, current_config
from export_pipeline.dynamodb.assets import build_dynamodb_assets
from export_pipeline.environment import build_resources
from export_pipeline.export_sensors import build_export_completion_sensor
from export_pipeline.freshness import build_freshness_checks, build_freshness_sensor
from export_pipeline.rds.assets import build_rds_assets
from export_pipeline.rds.snapshot_sensor import build_sensors

SOURCE_TAG = "export_pipeline/source"

# Steps run in processes forked from a server that has imported this project
# once (Dagster's `forkserver` start method, preloading the job's module),
# instead of Dagster's default `spawn`, where every step pays for importing
# Dagster, pyarrow and the Google and AWS clients again (seconds per step).
# `max_concurrent` stays settable per run: `execution: {config: {max_concurrent: N}}`.


def _forkserver_config(config: dict[str, Any]) -> dict[str, Any]:
    return {"start_method": {"forkserver": {}}, **config}


STEP_EXECUTOR = multiprocess_executor.configured(
    _forkserver_config,
    name="forkserver_multiprocess",
    config_schema={
        "max_concurrent": Field(
            int, is_required=False, description="Steps at once (default: the CPU count)."
        )
    },
)


def build_definitions(config: PipelineConfig) -> Definitions:
    """Everything Dagster shows and runs, for one configuration."""
    everything = AssetSelection.all()
    aws_to_bigquery = define_asset_job(
        "aws_to_bigquery",
        selection=everything,
        description="Export every configured DynamoDB table and RDS snapshot and load BigQuery.",
    )
    dynamodb_job = define_asset_job(
        "dynamodb_to_bigquery",
        selection=AssetSelection.tag(SOURCE_TAG, "dynamodb"),
        description="Only the DynamoDB tables.",
    )
    rds_job = define_asset_job(
        "rds_to_bigquery",
        selection=AssetSelection.tag(SOURCE_TAG, "rds"),
        description="Only the RDS snapshots.",
    )
    schedule = ScheduleDefinition(
        name="aws_to_bigquery_schedule",
        job=aws_to_bigquery,
        cron_schedule=config.schedule.cron,
        execution_timezone=config.schedule.timezone,
        description="Refreshes the whole graph (configuration: schedule.cron / schedule.timezone).",
    )
    built = [*build_dynamodb_assets(config), *build_rds_assets(config)]
    freshness = build_freshness_checks(config)
    return Definitions(
        assets=[d for d in built if not isinstance(d, AssetChecksDefinition)],
        asset_checks=[d for d in built if isinstance(d, AssetChecksDefinition)] + freshness,
        jobs=[aws_to_bigquery, dynamodb_job, rds_job],
        schedules=[schedule],
        sensors=[
            *build_sensors(config),
            *build_export_completion_sensor(config),
            *build_freshness_sensor(freshness),
        ],
        resources=build_resources(config),
        executor=STEP_EXECUTOR,
    )


defs = build_definitions(current_config())
