"""The sources this project moves to BigQuery: one line each.

A source is a folder of its own holding a `export_pipeline.contract.Source`
subclass; registering it here is all the graph needs to give it export and
table assets, the completion sensor, freshness checks, pools and a job.
"""

from __future__ import annotations

from export_pipeline.config import PipelineConfig
from export_pipeline.contract import Source
from export_pipeline.dynamodb.source import DynamoDBSource
from export_pipeline.postgres.source import PostgresSource
from export_pipeline.rds.source import RdsSource

SOURCES: tuple[type[Source], ...] = (
    DynamoDBSource,
    RdsSource,
    PostgresSource,
)


def configured_sources(config: PipelineConfig) -> list[Source]:
    """Every registered source, for this configuration (whether or not it has units)."""
    return [source(config) for source in SOURCES]
