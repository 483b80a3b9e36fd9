"""`deletes: soft` and `history` for DynamoDB tables, end to end through the assets."""

from __future__ import annotations

import datetime as dt
from datetime import timedelta
from typing import Any

from dagster import DagsterInstance

from export_pipeline.local_cloud.dynamodb_time_control import shift_history
from export_pipeline_tests.dynamodb._pipeline_helpers import (
    REGION,
    assets_for,
    bigquery_rows,
    create_table,
    make_config,
    materialization_metadata,
    run,
    table_id,
)
from export_pipeline_tests.dynamodb.test_incremental import _move_mark_back
from export_pipeline_tests.support.bigquery import rows as query_rows

SEED = [
    {"pk": {"S": "a"}, "qty": {"N": "1"}},
    {"pk": {"S": "b"}, "qty": {"N": "2"}},
    {"pk": {"S": "c"}, "qty": {"N": "3"}},
]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _deleted_at(client: Any, table: str) -> dict[str, dt.datetime | None]:
    return {k: r["_deleted_at"] for k, r in bigquery_rows(client, table).items()}


def _seed(aws_clients, table: str, mode: str, deletes: str):
    create_table(aws_clients.dynamodb, table, SEED)
    shift_history(aws_clients.dynamodb.meta.endpoint_url, table, 2 * 3600, REGION)
    config = make_config(table, mode=mode, deletes=deletes)
    instance = DagsterInstance.ephemeral()
    assert run(config, instance).success
    return config, instance


def _export_arn(result, config) -> str:
    _, bigquery_asset = assets_for(config)
    return materialization_metadata(result, bigquery_asset.key)["export_arn"]


def test_incremental_soft_deletes_at_the_change_time_and_clears_on_return(
    aws_clients, bigquery_client, unique_name
):
    table = f"softinc-{unique_name}"
    ddb = aws_clients.dynamodb
    config, instance = _seed(aws_clients, table, "incremental", "soft")
    assert _deleted_at(bigquery_client, table) == {"a": None, "b": None, "c": None}
    _move_mark_back(aws_clients, bigquery_client, table, timedelta(hours=1))
    before = _now()
    ddb.delete_item(TableName=table, Key={"pk": {"S": "b"}})
    after = _now()
    result = run(config, instance)
    assert result.success
    deleted = _deleted_at(bigquery_client, table)
    assert deleted["a"] is None and deleted["c"] is None
    # The delete's own WriteTimestampMicros, not the export's time (later than `after`).
    assert deleted["b"] is not None and before <= deleted["b"] <= after
    assert bigquery_rows(bigquery_client, table)["b"]["qty"] == 2  # the last values stay
    # The asset's check counts one row per key, deleted ones included.
    assert {c.check_name: c.passed for c in result.get_asset_check_evaluations()} == {
        "row_count_matches_export": True,
        "schema_unchanged": True,
    }

    # Re-applying the same export changes nothing.
    again = run(config, instance, only_bigquery=True, export_arn=_export_arn(result, config))
    assert again.success
    assert _deleted_at(bigquery_client, table) == deleted

    # b comes back: cleared.
    ddb.put_item(TableName=table, Item={"pk": {"S": "b"}, "qty": {"N": "20"}})
    assert run(config, instance).success
    rows = bigquery_rows(bigquery_client, table)
    assert rows["b"]["_deleted_at"] is None and rows["b"]["qty"] == 20


def test_incremental_history_versions(aws_clients, bigquery_client, unique_name):
    table = f"histinc-{unique_name}"
    ddb = aws_clients.dynamodb
    config, instance = _seed(aws_clients, table, "incremental", "history")
    seeded = {r["pk"]: r["_valid_from"] for r in _history(bigquery_client, table)}
    _move_mark_back(aws_clients, bigquery_client, table, timedelta(hours=1))
    ddb.put_item(TableName=table, Item={"pk": {"S": "a"}, "qty": {"N": "10"}})
    ddb.delete_item(TableName=table, Key={"pk": {"S": "b"}})
    result = run(config, instance)
    assert result.success
    versions = _history(bigquery_client, table)
    by_key: dict[str, list[dict]] = {}
    for v in versions:
        by_key.setdefault(v["pk"], []).append(v)
    a_old, a_new = sorted(by_key["a"], key=lambda v: v["_valid_from"])
    assert (a_old["qty"], a_old["_valid_from"], a_old["_is_current"]) == (1, seeded["a"], False)
    assert a_old["_valid_to"] == a_new["_valid_from"] and a_old["_deleted_at"] is None
    assert (a_new["qty"], a_new["_valid_to"], a_new["_is_current"]) == (10, None, True)
    (b,) = by_key["b"]
    deleted = bigquery_rows(bigquery_client, table)["b"]["_deleted_at"]
    assert b["_is_current"] is False and b["_valid_to"] == b["_deleted_at"] == deleted
    (c,) = by_key["c"]
    assert c["_is_current"] and c["_valid_to"] is None
    # No bookkeeping columns in the history.
    assert "_exported_at" not in a_new and "_write_timestamp_micros" not in a_new
    # Re-applying the same export adds no version.
    arn = _export_arn(result, config)
    assert run(config, instance, only_bigquery=True, export_arn=arn).success
    assert _history(bigquery_client, table) == versions


def _history(client: Any, table: str) -> list[dict]:
    return sorted(
        query_rows(client, f"SELECT * FROM `{table_id(table)}_history`"),
        key=lambda r: (r["pk"], r["_valid_from"]),
    )


def test_full_mode_soft_and_history_date_deletes_at_the_export(
    aws_clients, bigquery_client, unique_name
):
    table = f"softfull-{unique_name}"
    ddb = aws_clients.dynamodb
    config, instance = _seed(aws_clients, table, "full", "history")
    ddb.delete_item(TableName=table, Key={"pk": {"S": "b"}})
    result = run(config, instance)
    assert result.success
    _, bigquery_asset = assets_for(config)
    as_of = dt.datetime.fromisoformat(
        materialization_metadata(result, bigquery_asset.key)["data_as_of"]
    )
    assert _deleted_at(bigquery_client, table) == {"a": None, "b": as_of, "c": None}
    # The full export's row-count check counts the rows the source holds.
    assert {c.check_name: c.passed for c in result.get_asset_check_evaluations()} == {
        "row_count_matches_export": True,
        "schema_unchanged": True,
    }
    versions = _history(bigquery_client, table)
    assert [(v["pk"], v["_valid_to"], v["_deleted_at"]) for v in versions] == [
        ("a", None, None),
        ("b", as_of, as_of),
        ("c", None, None),
    ]
    # Re-loading the same export changes nothing.
    arn = _export_arn(result, config)
    assert run(config, instance, only_bigquery=True, export_arn=arn).success
    assert _deleted_at(bigquery_client, table) == {"a": None, "b": as_of, "c": None}
    assert _history(bigquery_client, table) == versions
    # b comes back: cleared, and a new version opens.
    ddb.put_item(TableName=table, Item={"pk": {"S": "b"}, "qty": {"N": "2"}})
    assert run(config, instance).success
    assert _deleted_at(bigquery_client, table)["b"] is None
    b_versions = [v for v in _history(bigquery_client, table) if v["pk"] == "b"]
    assert [v["_is_current"] for v in b_versions] == [False, True]


def test_switching_a_table_from_hard_to_soft(aws_clients, bigquery_client, unique_name):
    table = f"switch-{unique_name}"
    ddb = aws_clients.dynamodb
    _, instance = _seed(aws_clients, table, "incremental", "hard")
    assert "_deleted_at" not in bigquery_rows(bigquery_client, table)["a"]
    _move_mark_back(aws_clients, bigquery_client, table, timedelta(hours=1))
    ddb.delete_item(TableName=table, Key={"pk": {"S": "c"}})
    soft = make_config(table, mode="incremental", deletes="soft")
    assert run(soft, instance).success
    deleted = _deleted_at(bigquery_client, table)
    assert deleted["a"] is None and deleted["b"] is None and deleted["c"] is not None
