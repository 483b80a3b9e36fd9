"""Two runs loading the same table at once: BigQuery ends with one export's rows, never a mix.

Two exports of one DynamoDB table, taken before and after a change (keys
and a `version` attribute differ), are loaded into the same BigQuery table
by two runs started together (threads, each its own Dagster instance, the
reload path: `export_arn` in run config). Whatever the interleaving, the
table must afterwards hold exactly one export's rows; a run that loses a
race may fail, but must say so.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from dagster import DagsterInstance

from export_pipeline.dynamodb.exports import wait_for_export
from export_pipeline.naming import dynamodb_table_name
from export_pipeline_tests.faults import _runs


def _items(version: int, keys: str) -> list[dict[str, Any]]:
    return [{"pk": {"S": k}, "version": {"N": str(version)}} for k in keys]


def _export(ddb: Any, table_arn: str, prefix: str) -> str:
    arn = ddb.export_table_to_point_in_time(
        TableArn=table_arn, S3Bucket=_runs.BUCKET, S3Prefix=prefix, ExportFormat="DYNAMODB_JSON"
    )["ExportDescription"]["ExportArn"]
    wait_for_export(ddb, arn, timeout_seconds=60, max_interval_seconds=0.5)
    return arn


def test_two_simultaneous_loads_leave_one_whole_result(
    local_cloud, aws_clients, bigquery_client, scratch_dataset
):
    ddb = aws_clients.dynamodb
    table = f"race-{uuid.uuid4().hex[:10]}"
    before, after = _items(1, "abcd"), _items(2, "bcdefg")
    _runs.create_dynamodb_table(ddb, table, before)
    table_arn = ddb.describe_table(TableName=table)["Table"]["TableArn"]
    prefix = f"exports/dynamodb/{table}"
    first = _export(ddb, table_arn, prefix)
    ddb.delete_item(TableName=table, Key={"pk": {"S": "a"}})
    for item in after:
        ddb.put_item(TableName=table, Item=item)
    second = _export(ddb, table_arn, prefix)

    config = _runs.make_config(scratch_dataset, dynamodb_table=table)
    [key] = _runs.bigquery_keys(config)
    op = "__".join(key.path)
    outcomes: dict[str, Any] = {}
    spans: dict[str, tuple[float, float]] = {}
    start = threading.Barrier(2)

    def load(arn: str) -> None:
        start.wait()
        began = time.monotonic()
        outcomes[arn] = _runs.run(
            config,
            instance=DagsterInstance.ephemeral(),
            selection=[key],
            run_config={"ops": {op: {"config": {"export_arn": arn}}}},
        )
        spans[arn] = (began, time.monotonic())

    threads = [threading.Thread(target=load, args=(arn,)) for arn in (first, second)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a load hung"
    assert len(outcomes) == 2
    starts, ends = zip(*spans.values(), strict=True)
    assert max(starts) < min(ends), "the two loads did not overlap: the test proved nothing"
    succeeded = [arn for arn, result in outcomes.items() if result.success]
    for arn, result in outcomes.items():
        if not result.success:
            assert _runs.failure_messages(result), f"{arn}: failed without saying why"
    assert succeeded, [_runs.failure_messages(r) for r in outcomes.values()]

    rows = bigquery_client.query(
        f"SELECT pk, version FROM `{local_cloud.bigquery_project}.{scratch_dataset}."
        f"{dynamodb_table_name(table)}`"
    ).result()
    content = sorted((row["pk"], int(row["version"])) for row in rows)
    whole = {
        first: sorted((i["pk"]["S"], 1) for i in before),
        second: sorted((i["pk"]["S"], 2) for i in after),
    }
    assert content in whole.values(), f"a mix of both exports after {time.monotonic() - began:.1f}s"
    winner = next(arn for arn, rows in whole.items() if rows == content)
    assert winner in succeeded, "BigQuery holds the export of the run that failed"
