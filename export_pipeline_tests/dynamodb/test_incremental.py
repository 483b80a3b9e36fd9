"""Incremental mode end to end: seed, changes (deletes included), widening, catch-up, fallback."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer
from dagster import DagsterInstance

from export_pipeline import bigquery as core
from export_pipeline.local_cloud.dynamodb_time_control import shift_history
from export_pipeline_tests.dynamodb._pipeline_helpers import (
    REGION,
    assets_for,
    bigquery_rows,
    create_table,
    make_config,
    materialization_metadata,
    plain,
    run,
    table_id,
)

BIG = "12345678901234567890123456789012345678"  # 38 digits: beyond NUMERIC
SEED = [
    {
        "pk": {"S": "a"},
        "qty": {"N": "1"},
        "paid": {"BOOL": True},
        "meta": {"M": {"tags": {"L": [{"S": "x"}, {"N": "2"}]}}},  # a JSON column
    },
    {"pk": {"S": "b"}, "qty": {"N": "2"}, "paid": {"BOOL": False}},
    {"pk": {"S": "c"}, "qty": {"N": "3"}},
]


def _dynamodb_state(ddb: Any, table: str) -> dict[str, dict[str, Any]]:
    deserializer = TypeDeserializer()
    items = ddb.scan(TableName=table, ConsistentRead=True)["Items"]
    return {
        item["pk"]["S"]: {k: deserializer.deserialize(v) for k, v in item.items()} for item in items
    }


def _json_ready(value: Any) -> Any:
    """A deserialized DynamoDB value as BigQuery returns it (numbers as int / Decimal)."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    return plain(value) if isinstance(value, Decimal) else value


def _assert_bigquery_equals_dynamodb(ddb: Any, bigquery_client: Any, table: str) -> None:
    expected = _dynamodb_state(ddb, table)
    rows = bigquery_rows(bigquery_client, table)
    assert sorted(rows) == sorted(expected)
    for key, item in expected.items():
        row = rows[key]
        for name, value in item.items():
            got = plain(row[name])
            want = _json_ready(value)
            if isinstance(got, str) and not isinstance(want, str):
                want = str(want)  # a column widened to STRING holds the exact text
            assert got == want, f"{key}.{name}: BigQuery {got!r} != DynamoDB {want!r}"
        pipeline_columns = {"_exported_at", "_write_timestamp_micros"}
        extra = {
            k
            for k in row
            if k not in item and k not in pipeline_columns and row[k] not in (None, [])
        }
        assert not extra, f"{key}: BigQuery has attributes DynamoDB lacks: {extra}"


def _seed(aws_clients, bigquery_client, table: str, shift_seconds: float):
    create_table(aws_clients.dynamodb, table, SEED)
    shift_history(aws_clients.dynamodb.meta.endpoint_url, table, shift_seconds, REGION)
    config = make_config(table, mode="incremental")
    instance = DagsterInstance.ephemeral()
    result = run(config, instance)
    assert result.success
    export_asset, _ = assets_for(config)
    assert materialization_metadata(result, export_asset.key)["export_strategy"] == "full_seed"
    _assert_bigquery_equals_dynamodb(aws_clients.dynamodb, bigquery_client, table)
    return config, instance


def _mutate(ddb: Any, table: str) -> None:
    ddb.put_item(
        TableName=table,
        Item={
            "pk": {"S": "d"},
            "qty": {"N": "4"},
            "color": {"S": "red"},
            "meta": {"M": {"ok": {"BOOL": True}}},
        },
    )
    ddb.update_item(
        TableName=table,
        Key={"pk": {"S": "a"}},
        UpdateExpression="SET qty = :q REMOVE paid",
        ExpressionAttributeValues={":q": {"N": "2.5"}},  # INT64 -> NUMERIC
    )
    ddb.delete_item(TableName=table, Key={"pk": {"S": "b"}})


def _mark(aws_clients: Any, bigquery_client: Any, table: str) -> Any:
    arn = aws_clients.dynamodb.describe_table(TableName=table)["Table"]["TableArn"]
    return core.read_watermark(bigquery_client, core.TableId.parse(table_id(table)), arn)


def _move_mark_back(aws_clients: Any, bigquery_client: Any, table: str, by: timedelta) -> None:
    """Test-only: make the seed look older (as if the last run had been `by` ago)."""
    mark = _mark(aws_clients, bigquery_client, table)
    assert mark is not None
    state = core.state_table_for(core.TableId.parse(table_id(table)))
    earlier = (mark.exported_to - by).strftime("%Y-%m-%d %H:%M:%S.%f")
    bigquery_client.query(
        f"UPDATE {state.sql} SET exported_to = TIMESTAMP '{earlier}+00' "
        f"WHERE source_key = '{mark.source_key}'"
    ).result()


def test_seed_then_changes_in_one_window(aws_clients, bigquery_client, unique_name):
    table = f"inc-{unique_name}"
    config, instance = _seed(aws_clients, bigquery_client, table, shift_seconds=2 * 3600)
    _move_mark_back(aws_clients, bigquery_client, table, timedelta(hours=1))
    _mutate(aws_clients.dynamodb, table)

    result = run(config, instance)
    assert result.success
    export_asset, bigquery_asset = assets_for(config)
    export_meta = materialization_metadata(result, export_asset.key)
    assert export_meta["export_strategy"] == "incremental"
    assert export_meta["export_count"] == 1
    _assert_bigquery_equals_dynamodb(aws_clients.dynamodb, bigquery_client, table)
    rows = bigquery_rows(bigquery_client, table)
    assert "b" not in rows  # the delete reached BigQuery
    assert rows["a"]["qty"] == Decimal("2.5") and rows["a"]["paid"] is None
    assert rows["d"]["color"] == "red"
    schema = {f.name: f.field_type for f in bigquery_client.get_table(table_id(table)).schema}
    assert schema["qty"] == "NUMERIC" and schema["color"] == "STRING"
    mark = _mark(aws_clients, bigquery_client, table)
    assert mark is not None and mark.exported_to.isoformat() == export_meta["export_to_time"]
    assert mark.export_arn == export_meta["export_arn"]
    meta = materialization_metadata(result, bigquery_asset.key)
    assert meta["dagster/row_count"] == 3
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["row_count_matches_export"].passed
    # The changes added `color` and made `qty` NUMERIC: the schema check warns, naming both.
    schema_check = checks["schema_unchanged"]
    assert not schema_check.passed and schema_check.severity.value == "WARN"
    assert schema_check.metadata["added"].value == ["color"]
    assert schema_check.metadata["removed"].value == []  # a change set cannot tell
    assert schema_check.metadata["retyped"].value == [
        {"column": "qty", "old_type": "INT64", "new_type": "NUMERIC"}
    ]


def test_too_soon_widens_the_window_back_to_fifteen_minutes(
    aws_clients, bigquery_client, unique_name
):
    table = f"soon-{unique_name}"
    config, instance = _seed(aws_clients, bigquery_client, table, shift_seconds=3600)
    _move_mark_back(aws_clients, bigquery_client, table, timedelta(hours=1))
    _mutate(aws_clients.dynamodb, table)  # d is created here
    first = run(config, instance)
    export_asset, _ = assets_for(config)
    assert materialization_metadata(first, export_asset.key)["export_strategy"] == "incremental"
    assert "d" in bigquery_rows(bigquery_client, table)

    # Seconds later: c gets a number NUMERIC cannot hold (the column widens to
    # STRING, exact text), d is deleted.
    ddb = aws_clients.dynamodb
    ddb.put_item(TableName=table, Item={"pk": {"S": "c"}, "qty": {"N": BIG}})
    ddb.delete_item(TableName=table, Key={"pk": {"S": "d"}})
    result = run(config, instance)
    assert result.success
    meta = materialization_metadata(result, export_asset.key)
    assert meta["export_strategy"] == "incremental_widened"
    assert "widened" in meta["export_strategy_reason"]
    # d was created and deleted inside the widened window: AWS leaves it out of
    # the export, and the loader still removes it from BigQuery.
    _assert_bigquery_equals_dynamodb(ddb, bigquery_client, table)
    schema = {f.name: f.field_type for f in bigquery_client.get_table(table_id(table)).schema}
    assert schema["qty"] == "STRING"
    rows = bigquery_rows(bigquery_client, table)
    assert rows["a"]["qty"] == "2.5" and rows["c"]["qty"] == BIG


def test_too_soon_after_the_seed_exports_in_full_again(aws_clients, bigquery_client, unique_name):
    table = f"seedsoon-{unique_name}"
    config, instance = _seed(aws_clients, bigquery_client, table, shift_seconds=3600)
    _mutate(aws_clients.dynamodb, table)
    result = run(config, instance)
    assert result.success
    export_asset, _ = assets_for(config)
    meta = materialization_metadata(result, export_asset.key)
    assert meta["export_strategy"] == "full_fallback"
    assert "full export again" in meta["export_strategy_reason"]
    _assert_bigquery_equals_dynamodb(aws_clients.dynamodb, bigquery_client, table)


def test_catch_up_in_several_windows(aws_clients, bigquery_client, unique_name):
    table = f"catch-{unique_name}"
    config, instance = _seed(aws_clients, bigquery_client, table, shift_seconds=31 * 3600)
    _move_mark_back(aws_clients, bigquery_client, table, timedelta(hours=30))
    _mutate(aws_clients.dynamodb, table)
    result = run(config, instance)
    assert result.success
    export_asset, _ = assets_for(config)
    meta = materialization_metadata(result, export_asset.key)
    assert meta["export_strategy"] == "incremental"
    assert meta["export_count"] == 2
    _assert_bigquery_equals_dynamodb(aws_clients.dynamodb, bigquery_client, table)


def test_chain_broken_by_pitr_reenable_falls_back_to_full(
    aws_clients, bigquery_client, unique_name
):
    table = f"fb-{unique_name}"
    config, instance = _seed(aws_clients, bigquery_client, table, shift_seconds=3600)
    ddb = aws_clients.dynamodb
    for enabled in (False, True):
        ddb.update_continuous_backups(
            TableName=table,
            PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": enabled},
        )
    _mutate(ddb, table)
    result = run(config, instance)
    assert result.success
    export_asset, _ = assets_for(config)
    meta = materialization_metadata(result, export_asset.key)
    assert meta["export_strategy"] == "full_fallback"
    assert "chain is broken" in meta["export_strategy_reason"]
    _assert_bigquery_equals_dynamodb(ddb, bigquery_client, table)


def test_mark_survives_a_new_dagster_instance(aws_clients, bigquery_client, unique_name):
    table = f"inst-{unique_name}"
    config, _ = _seed(aws_clients, bigquery_client, table, shift_seconds=2 * 3600)
    _move_mark_back(aws_clients, bigquery_client, table, timedelta(hours=1))
    _mutate(aws_clients.dynamodb, table)
    result = run(config, DagsterInstance.ephemeral())  # no history of the seed run
    assert result.success
    export_asset, _ = assets_for(config)
    meta = materialization_metadata(result, export_asset.key)
    assert meta["export_strategy"] == "incremental"
    _assert_bigquery_equals_dynamodb(aws_clients.dynamodb, bigquery_client, table)
