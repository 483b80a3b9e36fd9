"""Transient faults (throttling, 500/503, connection resets) must not change the result.

Each test materializes real assets with the AWS and BigQuery clients behind
fault proxies (see `proxy.py`), with faults injected at every call the
issue names, and compares the BigQuery tables with those of the session's
fault-free run of the same sources (exact values; rows as a multiset, so a
duplicate or a lost row shows). The proxy's rule counters prove every fault
fired. Faults are spread over different calls (`skip`) rather than stacked
on one, so retries back off from their first step and the tests stay fast.
"""

from __future__ import annotations

from dagster import RetryPolicy

from export_pipeline.errors import TRANSIENT_RETRY_POLICY
from export_pipeline.graph import assets as graph_assets
from export_pipeline.naming import dynamodb_table_name, rds_table_name
from export_pipeline_tests.faults import _runs
from export_pipeline_tests.faults.proxy import (
    FaultProxy,
    bigquery_error,
    dynamodb_error,
    rds_error,
    reset,
    s3_error,
)

# The export time of a full DynamoDB export differs between two runs by design.
RUN_DEPENDENT_COLUMNS = ("_exported_at",)


def _assert_all_fired(*proxies: FaultProxy) -> None:
    unfired = [
        f"{rule.label}: fired {rule.fired} of {rule.times}"
        for proxy in proxies
        for rule in proxy.rules
        if rule.fired != rule.times
    ]
    assert not unfired, f"faults that never fired (the test would prove nothing): {unfired}"


def _bigquery_faults(proxy: FaultProxy, project: str) -> None:
    """Faults on uploads, query jobs and their polling.

    bqemulator answers a load job's upload with the job already DONE, so the
    client never polls load jobs here (with BigQuery it would: GET jobs/<id>);
    query jobs are polled through getQueryResults (GET queries/<id>), which
    the `polling` rules hit.
    """
    upload = {"path": rf"^/upload/bigquery/v2/projects/{project}/jobs\?"}
    proxy.add(bigquery_error(503), method="POST", **upload)  # starting the resumable upload
    proxy.add(bigquery_error(503), method="PUT", skip=1, **upload)  # sending its bytes
    jobs = rf"/bigquery/v2/projects/{project}/jobs"
    insert_query = {"method": "POST", "path": rf"^{jobs}(\?|$)", "body": '"query"'}
    proxy.add(bigquery_error(500, "internalError"), **insert_query)
    # The query job IS created, the answer is lost: the retry must not run it twice.
    proxy.add(reset("after"), skip=2, **insert_query)
    polling = {"method": "GET", "path": rf"/bigquery/v2/projects/{project}/(queries|jobs)/[^/?]+"}
    proxy.add(bigquery_error(503), **polling)
    proxy.add(reset("after"), skip=2, **polling)
    proxy.add(bigquery_error(429, "rateLimitExceeded", "Exceeded rate limits"), skip=4, **polling)


def _same_content(client, clean: _runs.CleanRun, dataset: str, table: str) -> None:
    expected = _runs.table_rows(client, clean.table_id(table), ignore=RUN_DEPENDENT_COLUMNS)
    actual = _runs.table_rows(client, clean.table_id(table, dataset), ignore=RUN_DEPENDENT_COLUMNS)
    assert expected, f"{table}: the fault-free run loaded nothing"
    assert actual == expected


def test_dynamodb_full_load_survives_transient_faults(
    local_cloud, bigquery_client, clean, scratch_dataset, aws_proxy, bigquery_proxy
):
    clean.require("dynamodb")
    table = clean.dynamodb_table
    config = _runs.make_config(scratch_dataset, dynamodb_table=table)
    call = r"^DynamoDB_20120810\."
    aws_proxy.add(dynamodb_error(), target=call + "ExportTableToPointInTime$")
    # The export IS started, the answer is lost: the retry (same ClientToken) must
    # find the same export, not start a second one.
    aws_proxy.add(reset("after"), target=call + "ExportTableToPointInTime$", skip=1)
    aws_proxy.add(dynamodb_error(), target=call + "DescribeExport$")
    aws_proxy.add(reset("before"), target=call + "DescribeExport$", skip=2)
    aws_proxy.add(
        dynamodb_error(500, "InternalServerError", "Internal"), target=call + "DescribeTable$"
    )
    data_file = rf"^/{_runs.BUCKET}/exports/dynamodb/{table}/AWSDynamoDB/.+/data/.+\.json\.gz$"
    aws_proxy.add(s3_error(503, "SlowDown"), method="GET", path=data_file)
    aws_proxy.add(reset("before"), method="GET", path=data_file, skip=1)
    aws_proxy.add(s3_error(500, "InternalError", "internal"), method="GET", path=data_file, skip=2)
    manifest = r"/manifest-(summary|files)\.json$"
    aws_proxy.add(s3_error(503, "SlowDown"), method="GET", path=manifest, times=2)
    _bigquery_faults(bigquery_proxy, local_cloud.bigquery_project)

    result = _runs.run(config, aws=aws_proxy, bigquery=bigquery_proxy)

    assert result.success, _runs.failure_messages(result)
    _assert_all_fired(aws_proxy, bigquery_proxy)
    _same_content(bigquery_client, clean, scratch_dataset, dynamodb_table_name(table))


def test_rds_table_load_survives_transient_faults(
    local_cloud, bigquery_client, clean, scratch_dataset, aws_proxy, bigquery_proxy
):
    clean.require("rds")
    config = _runs.make_config(scratch_dataset, rds_instances=[clean.rds])
    action = lambda name: {"method": "POST", "body": rf"(^|&)Action={name}(&|$)"}  # noqa: E731
    aws_proxy.add(rds_error(), **action("DescribeDBSnapshots"))
    aws_proxy.add(rds_error(), **action("DescribeExportTasks"))
    aws_proxy.add(reset("before"), skip=2, **action("DescribeExportTasks"))
    aws_proxy.add(
        rds_error(500, "InternalFailure", "internal"), skip=4, **action("DescribeExportTasks")
    )
    # The export task IS started, the answer is lost: the retry gets
    # ExportTaskAlreadyExists, and the pipeline must carry on with that task.
    aws_proxy.add(reset("after"), **action("StartExportTask"))
    listing = rf"^/{_runs.BUCKET}\?(.*&)?list-type=2"
    aws_proxy.add(s3_error(503, "SlowDown"), method="GET", path=listing)
    aws_proxy.add(reset("before"), method="GET", path=listing, skip=1)
    parquet = rf"^/{_runs.BUCKET}/exports/rds/.+\.parquet$"
    aws_proxy.add(s3_error(503, "SlowDown"), method="GET", path=parquet)
    aws_proxy.add(s3_error(500, "InternalError", "internal"), method="GET", path=parquet, skip=2)
    info = r"/export_(info|tables_info)_[^/]*\.json$"
    aws_proxy.add(s3_error(503, "SlowDown"), method="GET", path=info)
    _bigquery_faults(bigquery_proxy, local_cloud.bigquery_project)

    # export_attempt 2: a fresh export task, so StartExportTask and the polling run under faults.
    snapshot_export = f"rds__{clean.rds.identifier}_snapshot_export"
    result = _runs.run(
        config,
        aws=aws_proxy,
        bigquery=bigquery_proxy,
        run_config={"ops": {snapshot_export: {"config": {"export_attempt": 2}}}},
    )

    assert result.success, _runs.failure_messages(result)
    _assert_all_fired(aws_proxy, bigquery_proxy)
    database, name = _runs.RDS_TABLE.split(".")
    _same_content(bigquery_client, clean, scratch_dataset, rds_table_name(database, name))


def test_reads_survive_a_reset_mid_body(
    bigquery_client, clean, scratch_dataset, aws_proxy, monkeypatch
):
    """S3 drops the connection half-way through a body: every DynamoDB data file once,
    and a whole-object GET of an RDS Parquet file (streamed to BigQuery) once.

    botocore retries a call only until the response headers arrive, so these
    break the read itself (ResponseStreamingError). Today the pipeline
    survives them through the step's RetryPolicy (export_pipeline/errors.py:
    the step is re-run after ~20 s, all files again), not by retrying the
    file. The test gives the assets the same policy with a 1 s delay so as
    not to wait 20-40 s for it.
    """
    clean.require()
    fast = RetryPolicy(max_retries=TRANSIENT_RETRY_POLICY.max_retries, delay=1)
    monkeypatch.setattr(graph_assets, "TRANSIENT_RETRY_POLICY", fast)
    table = clean.dynamodb_table
    config = _runs.make_config(scratch_dataset, dynamodb_table=table, rds_instances=[clean.rds])
    data_file = rf"^/{_runs.BUCKET}/exports/dynamodb/{table}/AWSDynamoDB/.+/data/.+\.json\.gz$"
    files = _runs.manifest_data_files(clean, table)
    aws_proxy.add(reset("mid_body", after_bytes=64), method="GET", path=data_file, times=files)
    parquet = rf"^/{_runs.BUCKET}/exports/rds/.+\.parquet$"
    # Whole-object GETs only (the footer is read with ranged GETs first).
    aws_proxy.add(
        reset("mid_body", after_bytes=256), method="GET", path=parquet, headers={"Range": "^$"}
    )

    result = _runs.run_bigquery_steps(config, clean, aws=aws_proxy)

    assert result.success, _runs.failure_messages(result)
    _assert_all_fired(aws_proxy)
    retried = {e.step_key for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"}
    assert retried, "expected the reads to break and the steps to be retried"
    _same_content(bigquery_client, clean, scratch_dataset, dynamodb_table_name(table))
    database, name = _runs.RDS_TABLE.split(".")
    _same_content(bigquery_client, clean, scratch_dataset, rds_table_name(database, name))
