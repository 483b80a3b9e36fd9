"""The multiprocess test's job, loaded by file path in every step process.

Dagster's forkserver processes do not have the tests on their import path,
so this file imports only the installed project, and its table name is fixed
(the test deletes a table of that name left by an earlier session first).
"""

from __future__ import annotations

from dagster import AssetSelection, Definitions, define_asset_job, in_process_executor

from export_pipeline.config import (
    AwsConfig,
    BigQueryConfig,
    DynamoDBConfig,
    DynamoDBTableConfig,
    PipelineConfig,
)
from export_pipeline.definitions import STEP_EXECUTOR
from export_pipeline.dynamodb.source import DynamoDBSource
from export_pipeline.graph.assets import build_source_assets
from export_pipeline.local_cloud.settings import LOCAL_BIGQUERY_PROJECT
from export_pipeline_tests.support.principals import pipeline_resources

TABLE = "fan-out-multiprocess"
REEXECUTED_TABLE = "fan-out-reexecuted"


def stepped_config(table: str = TABLE) -> PipelineConfig:
    return PipelineConfig(
        environment="local",
        aws=AwsConfig(
            region="eu-west-1", export_bucket="export-pipeline-local", export_prefix="exports"
        ),
        dynamodb=DynamoDBConfig(
            tables=[DynamoDBTableConfig(name=table)],
            export_timeout_minutes=2,
            poll_max_interval_seconds=1,
            max_parallel_files=1,
            files_per_step=2,
        ),
        bigquery=BigQueryConfig(project=LOCAL_BIGQUERY_PROJECT, dataset="aws_raw"),
    )


def stepped_job():
    """The table's export and load, run by the definitions' executor (forkserver processes)."""
    config = stepped_config()
    return Definitions(
        assets=build_source_assets(DynamoDBSource(config)),
        jobs=[define_asset_job("stepped", selection=AssetSelection.all())],
        resources=pipeline_resources(config),
        executor=STEP_EXECUTOR,
    ).resolve_job_def("stepped")


def reexecuted_job():
    """Another table's export and load, in this process (re-executed from a failed step)."""
    config = stepped_config(REEXECUTED_TABLE)
    return Definitions(
        assets=build_source_assets(DynamoDBSource(config)),
        jobs=[define_asset_job("reexecuted", executor_def=in_process_executor)],
        resources=pipeline_resources(config),
    ).resolve_job_def("reexecuted")
