"""Watermark SQL pieces and the transaction runner's handling of failures."""

from __future__ import annotations

import datetime as dt

import pytest
from google.api_core import exceptions as google_exceptions

from export_pipeline.bigquery.sql import string_literal
from export_pipeline.bigquery.tables import BigQueryPublishError, TableId
from export_pipeline.bigquery.watermark import (
    Statement,
    Watermark,
    guard_statement,
    run_transaction,
    timestamp_literal,
    upsert_statement,
)


def test_timestamp_literal_is_exact() -> None:
    ts = dt.datetime(2026, 11, 26, 1, 2, 3, 456789, tzinfo=dt.UTC)
    assert timestamp_literal(ts) == "TIMESTAMP '2026-11-26 01:02:03.456789+00'"
    tokyo = dt.timezone(dt.timedelta(hours=9))
    early = dt.datetime(900, 1, 1, 9, 0, 0, 1, tzinfo=tokyo)  # converted to UTC, year padded
    assert timestamp_literal(early) == "TIMESTAMP '0900-01-01 00:00:00.000001+00'"
    with pytest.raises(ValueError):
        timestamp_literal(dt.datetime(2026, 1, 1))


def test_string_literal_escapes_everything_that_could_end_it() -> None:
    assert string_literal('a"b\\c\nd\x01') == '"a\\"b\\\\c\\nd\\u0001"'


def test_watermark_needs_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Watermark("k", "arn", dt.datetime(2026, 1, 1))


class _FlakyJob:
    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def result(self):
        if self.error:
            raise self.error
        return []


class _FlakyClient:
    """Stand-in for a BigQuery client: no local server can abort a transaction on demand
    because of a concurrent update, so this injects that fault."""

    def __init__(self, errors: list[Exception | None]) -> None:
        self.errors = errors
        self.queries: list[str] = []

    def query(self, sql, job_config=None):
        self.queries.append(sql)
        return _FlakyJob(self.errors.pop(0))


def test_concurrent_update_abort_is_retried() -> None:
    aborted = google_exceptions.BadRequest(
        "Transaction is aborted due to concurrent update against table x"
    )
    client = _FlakyClient([aborted, aborted, None])
    slept: list[float] = []
    run_transaction(client, [Statement("SELECT 1")], description="t", sleep=slept.append)
    assert len(client.queries) == 3 and slept == [1, 2]
    assert client.queries[0].startswith("BEGIN TRANSACTION;")
    assert client.queries[0].endswith("COMMIT TRANSACTION;")


def test_other_errors_are_not_retried_and_name_the_work() -> None:
    client = _FlakyClient([google_exceptions.BadRequest("Bad int64 value: oops")])
    with pytest.raises(BigQueryPublishError, match="merging x failed and was rolled back"):
        run_transaction(client, [Statement("SELECT 1")], description="merging x", sleep=print)
    assert len(client.queries) == 1


def test_table_id_in_watermark_sql_is_quoted() -> None:
    target = TableId("proj-ok-1", "ds", "t")
    mark = Watermark("arn:aws:dynamodb:x'\"", "e", dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    for statement in (
        guard_statement(target, mark.source_key, mark),
        upsert_statement(target, mark),
    ):
        assert "`proj-ok-1`.`ds`.`_export_pipeline_state`" in statement.sql
        assert string_literal(mark.source_key) in statement.sql


def test_a_mark_in_the_future_aborts_the_transaction(bigquery_client, table_id) -> None:
    """BigQuery's own clock decides: a mark beyond CURRENT_TIMESTAMP() is never written."""
    from export_pipeline.bigquery.watermark import (
        WatermarkInFutureError,
        ensure_state_table,
        read_watermark,
    )

    target = table_id("orders")
    bigquery_client.create_table(target.reference)
    ensure_state_table(bigquery_client, target)
    future = Watermark("src", "arn:e", dt.datetime(2099, 1, 1, tzinfo=dt.UTC))
    with pytest.raises(WatermarkInFutureError, match="2099-01-01"):
        run_transaction(bigquery_client, [upsert_statement(target, future)], description="t")
    assert read_watermark(bigquery_client, target, "src") is None
    past = Watermark("src", "arn:e", dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    run_transaction(bigquery_client, [upsert_statement(target, past)], description="t")
    assert read_watermark(bigquery_client, target, "src") == past
