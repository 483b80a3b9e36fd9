"""The Dagster definitions: assembled here from the configuration, built elsewhere.

Every registered source (`export_pipeline.registry`) gets its export and
BigQuery table assets from the builders in `export_pipeline.graph`, plus
sensors of its own; the completion sensor and the freshness checks cover
every source; resources come from `environment.py`. This module only puts
them together with the jobs and the schedule (a job selecting a table also
runs its checks, row count and freshness, after the load).
"""

from __future__ import annotations

import sys
from typing import Any

from dagster import (
    AssetSelection,
    Definitions,
    ExecutorDefinition,
    Field,
    ScheduleDefinition,
    define_asset_job,
    multiprocess_executor,
)

from export_pipeline.config import ConfigError, PipelineConfig, current_config
from export_pipeline.contract import SOURCE_TAG
from export_pipeline.environment import build_resources
from export_pipeline.executors import chosen_executor, with_shared_step_outputs
from export_pipeline.graph.assets import build_source_assets
from export_pipeline.graph.completion_sensor import build_export_completion_sensor
from export_pipeline.graph.console import LOGGER_RUN_CONFIG, console_logger
from export_pipeline.graph.freshness import build_freshness_checks, build_freshness_sensor
from export_pipeline.registry import configured_sources

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


def build_definitions(
    config: PipelineConfig,
    executor: ExecutorDefinition = STEP_EXECUTOR,
    *,
    resources: dict[str, Any] | None = None,
) -> Definitions:
    """Everything Dagster shows and runs, for one configuration.

    `executor` runs the steps of every job (`export_pipeline.executors`: the
    deployment picks the Celery or Kubernetes one through the environment).
    `resources` default to `build_resources(config)`; a caller running the
    pipeline as another principal hands its own (same keys, other credentials).
    """
    sources = configured_sources(config)
    aws_to_bigquery = define_asset_job(
        "aws_to_bigquery",
        selection=AssetSelection.all(),
        config=LOGGER_RUN_CONFIG,
        description="Export every configured DynamoDB table and RDS snapshot and load BigQuery.",
    )
    source_jobs = [
        define_asset_job(
            f"{source.kind}_to_bigquery",
            selection=AssetSelection.tag(SOURCE_TAG, source.kind),
            config=LOGGER_RUN_CONFIG,
            description=f"Only the {source.title}.",
        )
        for source in sources
    ]
    # Reloads: the tables of a source and their checks, never its export assets, so
    # a reload loads the export named in run config (or the latest) and starts none.
    reload_jobs = [
        define_asset_job(
            f"{source.kind}_reload",
            selection=AssetSelection.tag(SOURCE_TAG, source.kind)
            - AssetSelection.assets(*(unit.key for unit in source.units())),
            description=f"Only the BigQuery tables of the {source.title}, from the export "
            "named in each table's run config (else the latest); no new export.",
            config=LOGGER_RUN_CONFIG,
        )
        for source in sources
    ]
    schedule = ScheduleDefinition(
        name="aws_to_bigquery_schedule",
        job=aws_to_bigquery,
        cron_schedule=config.schedule.cron,
        execution_timezone=config.schedule.timezone,
        description="Refreshes the whole graph (configuration: schedule.cron / schedule.timezone).",
    )
    table_keys = [t.key for source in sources for unit in source.units() for t in unit.tables]
    freshness = build_freshness_checks(table_keys, config.schedule)
    return Definitions(
        assets=[asset for source in sources for asset in build_source_assets(source)],
        asset_checks=freshness,
        jobs=[aws_to_bigquery, *source_jobs, *reload_jobs],
        schedules=[schedule],
        sensors=[
            *(sensor for source in sources for sensor in source.sensors()),
            *build_export_completion_sensor(sources),
            *build_freshness_sensor(freshness),
        ],
        resources=with_shared_step_outputs(
            resources if resources is not None else build_resources(config), executor
        ),
        executor=executor,
        loggers={"console": console_logger},
    )


def _load_definitions() -> Definitions:
    """The definitions of the configuration in force; a bad file stops here in one line.

    A configuration mistake is the user's to fix, not a bug: the command that
    loads this module prints the file, the field and what to do, without a
    traceback, and exits with status 2 (as the `export-pipeline` CLI does).
    """
    try:
        return build_definitions(current_config(), chosen_executor(STEP_EXECUTOR))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


defs = _load_definitions()
