"""Exports that fail, are canceled, never finish or skip a table: clear failure, nothing published.

The local cloud's exports always succeed, so the fault proxy edits the
status answers (DescribeExport, DescribeExportTasks) the way AWS writes them
for these outcomes (see `proxy.rewrite_json` / `rewrite_text`). Each test
then checks the run failed with a message naming the table (and what to
do), and that the BigQuery table loaded by the session's clean run is row
for row unchanged.
"""

from __future__ import annotations

import html
import json

from export_pipeline.naming import dynamodb_table_name, rds_table_name
from export_pipeline_tests.faults import _runs
from export_pipeline_tests.faults.proxy import rewrite_json, rewrite_text

DESCRIBE_EXPORT = r"^DynamoDB_20120810\.DescribeExport$"
DESCRIBE_EXPORT_TASKS = {"method": "POST", "body": r"(^|&)Action=DescribeExportTasks(&|$)"}
ALWAYS = 1000  # a rule that keeps firing for the whole run


def _dynamodb_rows(client, clean) -> list[tuple]:
    return _runs.table_rows(client, clean.table_id(dynamodb_table_name(clean.dynamodb_table)))


def _rds_rows(client, clean) -> list[tuple]:
    database, table = _runs.RDS_TABLE.split(".")
    return _runs.table_rows(client, clean.table_id(rds_table_name(database, table)))


def _failed_with(result, *fragments: str) -> str:
    assert not result.success, "the run succeeded"
    text = _runs.failure_messages(result)
    for fragment in fragments:
        assert fragment in text, f"the failure does not mention {fragment!r}:\n{text}"
    return text


def _no_bigquery_materialization(result) -> None:
    published = [
        e.asset_key
        for e in result.get_asset_materialization_events()
        if e.asset_key.path[0] == "bigquery"
    ]
    assert published == []


def _status(status: str, **extra: str):
    def edit(document) -> None:
        document["ExportDescription"]["ExportStatus"] = status
        document["ExportDescription"].update(extra)

    return edit


def test_dynamodb_export_failed(clean, bigquery_client, aws_proxy):
    clean.require("dynamodb")
    before = _dynamodb_rows(bigquery_client, clean)
    config = _runs.make_config(clean.dataset, dynamodb_table=clean.dynamodb_table)
    edit = _status("FAILED", FailureCode="S3AccessDenied", FailureMessage="Access Denied")
    aws_proxy.add(rewrite_json(edit, "export FAILED"), target=DESCRIBE_EXPORT, times=ALWAYS)

    result = _runs.run(config, aws=aws_proxy)

    _failed_with(result, repr(clean.dynamodb_table), "S3AccessDenied", "Access Denied")
    _no_bigquery_materialization(result)
    assert _dynamodb_rows(bigquery_client, clean) == before


def test_dynamodb_export_that_never_finishes_times_out(clean, bigquery_client, aws_proxy):
    clean.require("dynamodb")
    before = _dynamodb_rows(bigquery_client, clean)
    config = _runs.make_config(clean.dataset, dynamodb_table=clean.dynamodb_table)
    config = config.model_copy(
        update={"dynamodb": config.dynamodb.model_copy(update={"export_timeout_minutes": 0.05})}
    )
    edit = _status("IN_PROGRESS")
    aws_proxy.add(rewrite_json(edit, "export IN_PROGRESS"), target=DESCRIBE_EXPORT, times=ALWAYS)

    result = _runs.run(config, aws=aws_proxy)

    _failed_with(result, clean.dynamodb_table, "export_timeout_minutes")
    _no_bigquery_materialization(result)
    assert _dynamodb_rows(bigquery_client, clean) == before


def test_rds_export_canceled(clean, bigquery_client, aws_proxy):
    """The export asset finds its task CANCELED: fail, say how to retry."""
    clean.require("rds")
    before = _rds_rows(bigquery_client, clean)
    config = _runs.make_config(clean.dataset, rds_instances=[clean.rds])
    aws_proxy.add(
        rewrite_text(r"<Status>[A-Z_]+</Status>", "<Status>CANCELED</Status>", "task CANCELED"),
        times=ALWAYS,
        **DESCRIBE_EXPORT_TASKS,
    )

    result = _runs.run(config, instance=clean.instance, aws=aws_proxy)

    _failed_with(result, clean.rds.identifier, "CANCELED", "export_attempt")
    _no_bigquery_materialization(result)
    assert _rds_rows(bigquery_client, clean) == before


def test_rds_export_failed_seen_by_the_table_load(clean, bigquery_client, aws_proxy):
    """The BigQuery asset re-reads its export task and finds it FAILED."""
    clean.require("rds")
    before = _rds_rows(bigquery_client, clean)
    config = _runs.make_config(clean.dataset, rds_instances=[clean.rds])
    aws_proxy.add(
        rewrite_text(
            r"<Status>[A-Z_]+</Status>",
            "<Status>FAILED</Status><FailureCause>S3 bucket export-pipeline-local is not "
            "accessible</FailureCause>",
            "task FAILED",
        ),
        times=ALWAYS,
        **DESCRIBE_EXPORT_TASKS,
    )

    result = _runs.run_bigquery_steps(config, clean, aws=aws_proxy)

    _failed_with(result, "FAILED", "not accessible")
    _no_bigquery_materialization(result)
    assert _rds_rows(bigquery_client, clean) == before


def test_rds_table_skipped_by_the_export(clean, bigquery_client, aws_proxy):
    """AWS skipped the table (WarningMessage): its load fails naming it, nothing is replaced."""
    clean.require("rds")
    before = _rds_rows(bigquery_client, clean)
    config = _runs.make_config(clean.dataset, rds_instances=[clean.rds])
    warning = json.dumps(
        {"skippedTables": [{"target": _runs.RDS_TABLE, "reason": "unsupported column name"}]}
    )
    aws_proxy.add(
        rewrite_text(
            r"</Status>",
            f"</Status><WarningMessage>{html.escape(warning)}</WarningMessage>",
            "table skipped",
        ),
        times=ALWAYS,
        **DESCRIBE_EXPORT_TASKS,
    )

    result = _runs.run_bigquery_steps(config, clean, aws=aws_proxy)

    _failed_with(result, _runs.RDS_TABLE, "skipped")
    _no_bigquery_materialization(result)
    assert _rds_rows(bigquery_client, clean) == before
