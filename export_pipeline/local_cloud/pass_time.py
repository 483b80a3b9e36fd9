"""`export-pipeline local pass-time`: let N minutes pass for the demo, without waiting.

An incremental DynamoDB export covers at least 15 minutes (AWS's rule), so a
run within 15 minutes of the full export that seeded a table exports the
whole table again (`full_fallback`, docs/dynamodb.md). To show an
incremental MERGE in the tour, this moves everything the local cloud has
recorded N minutes into the past, consistently:

- each configured DynamoDB table's history (change log, point-in-time
  recovery start, creation time), through the local AWS server's
  time-control route (`dynamodb_time_control.shift_history`);
- each high-water mark the pipeline keeps in the local BigQuery
  (`_export_pipeline_state.exported_to`, see `export_pipeline.bigquery.watermark`).

Afterwards the world looks as if the last run had been N minutes earlier;
the next run plans its windows from the moved mark, exactly as it would
after real waiting. AWS has no such thing: the pipeline never calls this.
"""

from __future__ import annotations

from typing import Any

from google.api_core import exceptions as google_exceptions

from export_pipeline.bigquery.watermark import STATE_TABLE
from export_pipeline.local_cloud.configuration import CloudConfiguration
from export_pipeline.local_cloud.dynamodb_time_control import shift_history
from export_pipeline.local_cloud.settings import LocalCloudSettings

DEFAULT_MINUTES = 20.0


def pass_time(
    settings: LocalCloudSettings, config: CloudConfiguration, minutes: float
) -> dict[str, Any]:
    """Move the demo's recorded past `minutes` back; what was moved, per source."""
    from export_pipeline.local_cloud.control import bigquery_client

    if minutes <= 0:
        raise ValueError(f"--minutes: expected a positive number, got {minutes}")
    seconds = minutes * 60
    tables = [table.name for table in config.dynamodb.tables]
    for table in tables:
        shift_history(settings.aws_endpoint_url, table, seconds, config.aws.region)
    state = f"`{settings.bigquery_project}.{config.bigquery.dataset}.{STATE_TABLE}`"
    client = bigquery_client(settings)
    try:
        job = client.query(
            f"UPDATE {state} SET exported_to = TIMESTAMP_SUB(exported_to, "
            f"INTERVAL {round(seconds)} SECOND) WHERE exported_to IS NOT NULL"
        )
        job.result()
        marks = job.num_dml_affected_rows or 0
    except google_exceptions.NotFound:
        marks = 0  # no incremental table loaded yet: nothing to move
    finally:
        client.close()
    return {"minutes": minutes, "dynamodb_tables": tables, "high_water_marks_moved": marks}
