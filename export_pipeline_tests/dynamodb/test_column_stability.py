"""Regression tests: an attribute keeps its column, and widening keeps values exact.

Each test seeds an incremental table (full export), writes, runs one true
incremental export, and checks BigQuery against what a full export of the
same moment gives under the table's recorded mapping (attribute -> column,
read from the column descriptions).
"""

from __future__ import annotations

import base64
import re
from datetime import timedelta
from typing import Any

from dagster import DagsterInstance
from google.cloud.bigquery import SchemaField

from export_pipeline import bigquery as core
from export_pipeline.dynamodb.column_names import attribute_of_description
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

WIDE = "-9223372036854775808"


def seed(aws_clients: Any, bigquery_client: Any, table: str, items: list[dict]) -> tuple:
    """Create `table` with `items`, load it in full (incremental mode), make the mark older."""
    create_table(aws_clients.dynamodb, table, items)
    shift_history(aws_clients.dynamodb.meta.endpoint_url, table, 2 * 3600, REGION)
    config = make_config(table, mode="incremental")
    instance = DagsterInstance.ephemeral()
    result = run(config, instance)
    assert result.success
    move_mark_back(aws_clients, bigquery_client, table, timedelta(hours=1))
    return config, instance


def move_mark_back(aws_clients: Any, bigquery_client: Any, table: str, by: timedelta) -> None:
    """Test-only: make the last load look `by` older, so the next run exports incrementally."""
    arn = aws_clients.dynamodb.describe_table(TableName=table)["Table"]["TableArn"]
    target = core.TableId.parse(table_id(table))
    mark = core.read_watermark(bigquery_client, target, arn)
    assert mark is not None
    earlier = (mark.exported_to - by).strftime("%Y-%m-%d %H:%M:%S.%f")
    bigquery_client.query(
        f"UPDATE {core.state_table_for(target).sql} SET exported_to = TIMESTAMP '{earlier}+00' "
        f"WHERE source_key = '{mark.source_key}'"
    ).result()


def run_incremental(config: Any, instance: Any) -> None:
    result = run(config, instance)
    assert result.success
    export_asset, _ = assets_for(config)
    strategy = materialization_metadata(result, export_asset.key)["export_strategy"]
    assert strategy == "incremental"


def columns_of(bigquery_client: Any, table: str) -> dict[str, list[str]]:
    """attribute -> every column whose description names it (exactly one is right)."""
    out: dict[str, list[str]] = {}
    for field in bigquery_client.get_table(table_id(table)).schema:
        attribute = attribute_of_description(field.description or "")
        if attribute is not None:
            out.setdefault(attribute, []).append(field.name)
    return out


def json_columns(bigquery_client: Any, table: str) -> set[str]:
    """Names of the table's JSON columns (the client returns their values parsed)."""
    schema = bigquery_client.get_table(table_id(table)).schema
    return {f.name for f in schema if f.field_type == "JSON"}


def json_value(value: Any) -> Any:
    return value


def test_case_only_twins_keep_their_columns_when_a_window_holds_one(
    aws_clients, bigquery_client, unique_name
):
    table = f"twins-{unique_name}"
    config, instance = seed(
        aws_clients,
        bigquery_client,
        table,
        [{"pk": {"S": "a"}, "Name": {"S": "upper"}, "name": {"S": "lower"}}],
    )
    before = columns_of(bigquery_client, table)
    # The window holds only `name`.
    aws_clients.dynamodb.put_item(
        TableName=table, Item={"pk": {"S": "b"}, "name": {"S": "only-lower"}}
    )
    run_incremental(config, instance)
    after = columns_of(bigquery_client, table)
    assert after == before and len(after["name"]) == 1
    rows = bigquery_rows(bigquery_client, table)
    assert rows["b"][after["name"][0]] == "only-lower"
    assert rows["b"][after["Name"][0]] is None
    assert rows["a"][after["name"][0]] == "lower" and rows["a"][after["Name"][0]] == "upper"


def test_attribute_named_deleted_keeps_its_column(aws_clients, bigquery_client, unique_name):
    table = f"amplify-{unique_name}"
    config, instance = seed(
        aws_clients,
        bigquery_client,
        table,
        [{"pk": {"S": "a"}, "_deleted": {"BOOL": False}, "_exported_at": {"S": "x"}}],
    )
    aws_clients.dynamodb.put_item(
        TableName=table,
        Item={"pk": {"S": "a"}, "_deleted": {"BOOL": True}, "_exported_at": {"S": "y"}},
    )
    run_incremental(config, instance)
    columns = columns_of(bigquery_client, table)
    assert len(columns["_deleted"]) == 1 and len(columns["_exported_at"]) == 1
    assert columns["_deleted"] == ["_deleted"]  # readable: nothing else takes the name
    row = bigquery_rows(bigquery_client, table)["a"]
    assert row[columns["_deleted"][0]] is True
    assert row[columns["_exported_at"][0]] == "y"


def test_readable_names_without_collision(aws_clients, bigquery_client, unique_name):
    table = f"readable-{unique_name}"
    seed(
        aws_clients,
        bigquery_client,
        table,
        [{"pk": {"S": "a"}, "order-date": {"S": "2024-01-01"}, "1st": {"N": "1"}}],
    )
    columns = columns_of(bigquery_client, table)
    assert columns["order-date"] == ["order_date"]
    assert columns["1st"] == ["_1st"]


def test_bytes_widened_to_json_are_base64(aws_clients, bigquery_client, unique_name):
    table = f"bytes-{unique_name}"
    raw = b"\x10\x80\xff"
    config, instance = seed(
        aws_clients,
        bigquery_client,
        table,
        [{"pk": {"S": "a"}, "blob": {"B": raw}, "blobs": {"BS": [raw]}}],
    )
    # A string in each column: both become JSON.
    aws_clients.dynamodb.put_item(
        TableName=table, Item={"pk": {"S": "b"}, "blob": {"S": "text"}, "blobs": {"S": "t"}}
    )
    run_incremental(config, instance)
    assert {"blob", "blobs"} <= json_columns(bigquery_client, table)
    rows = bigquery_rows(bigquery_client, table)
    text = base64.b64encode(raw).decode()
    assert json_value(rows["a"]["blob"]) == text
    assert json_value(rows["a"]["blobs"]) == [text]
    assert json_value(rows["b"]["blob"]) == "text"


def test_wide_numbers_in_a_set_stay_exact_in_json(aws_clients, bigquery_client, unique_name):
    table = f"wideset-{unique_name}"
    config, instance = seed(
        aws_clients,
        bigquery_client,
        table,
        [{"pk": {"S": "a"}, "ns": {"NS": [WIDE, "7"]}, "n": {"N": WIDE}, "m": {"N": "5"}}],
    )
    aws_clients.dynamodb.put_item(
        TableName=table,
        Item={"pk": {"S": "b"}, "ns": {"S": "s"}, "n": {"S": "s"}, "m": {"S": "s"}},
    )
    run_incremental(config, instance)
    assert {"ns", "n", "m"} <= json_columns(bigquery_client, table)
    row = bigquery_rows(bigquery_client, table)["a"]
    # As a full export writes a number inside JSON: exact text beyond 2^53, else a number.
    assert sorted(json_value(row["ns"]), key=str) == sorted([WIDE, 7], key=str)
    assert json_value(row["n"]) == WIDE
    assert json_value(row["m"]) == 5


def test_string_then_number_becomes_json_as_in_a_full_export(
    aws_clients, bigquery_client, unique_name
):
    table = f"strnum-{unique_name}"
    config, instance = seed(
        aws_clients, bigquery_client, table, [{"pk": {"S": "a"}, "v": {"S": "1"}}]
    )
    aws_clients.dynamodb.put_item(TableName=table, Item={"pk": {"S": "b"}, "v": {"N": "1"}})
    run_incremental(config, instance)
    field = next(f for f in bigquery_client.get_table(table_id(table)).schema if f.name == "v")
    assert field.field_type == "JSON"
    rows = bigquery_rows(bigquery_client, table)
    assert json_value(rows["a"]["v"]) == "1" and json_value(rows["b"]["v"]) == 1


def test_naming_is_injective_case_insensitively():
    import hashlib

    from export_pipeline.naming import column_names

    suffix = hashlib.sha1(b"ab").hexdigest()[:6]
    names = ["Ab", "ab", f"ab_{suffix}", "a-b", "a_b", "A_B"]
    mapped = column_names(names)
    folded = [c.lower() for c in mapped.values()]
    assert len(set(folded)) == len(names), mapped
    assert all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", c) for c in mapped.values())


def test_table_loaded_before_keeps_its_columns(aws_clients, bigquery_client, unique_name):
    """A table whose columns were named by the earlier rule (hash on any change) keeps them."""
    table = f"upgrade-{unique_name}"
    config, instance = seed(
        aws_clients, bigquery_client, table, [{"pk": {"S": "a"}, "order-date": {"S": "d1"}}]
    )
    # Make the table what the earlier code wrote: `order_date_54fe33`, same description.
    target = table_id(table)
    before = bigquery_client.get_table(target)
    descriptions = {f.name: f.description for f in before.schema}
    descriptions["order_date_54fe33"] = descriptions.pop("order_date")
    bigquery_client.query(
        f"CREATE OR REPLACE TABLE `{target}` AS SELECT * EXCEPT (order_date), "
        f"order_date AS order_date_54fe33 FROM `{target}`"
    ).result()
    legacy = bigquery_client.get_table(target)
    legacy.schema = [
        SchemaField(f.name, f.field_type, f.mode, description=descriptions[f.name])
        for f in legacy.schema
    ]
    bigquery_client.update_table(legacy, ["schema"])
    aws_clients.dynamodb.put_item(
        TableName=table, Item={"pk": {"S": "b"}, "order-date": {"S": "d2"}}
    )
    run_incremental(config, instance)
    assert columns_of(bigquery_client, table)["order-date"] == ["order_date_54fe33"]
    names = {f.name for f in bigquery_client.get_table(target).schema}
    assert "order_date" not in names
    rows = bigquery_rows(bigquery_client, table)
    assert rows["a"]["order_date_54fe33"] == "d1" and rows["b"]["order_date_54fe33"] == "d2"


def test_recorded_columns_read_back_from_descriptions():
    from export_pipeline.dynamodb.column_names import describe, recorded_columns
    from export_pipeline.naming import readable_column_name

    long_name = "x" * 2000
    schema = [
        SchemaField("pk", "STRING"),  # description lost: adopted by `pk`, not duplicated
        SchemaField("Name", "STRING", description=describe("Name", ["S"])),
        SchemaField("name_6ae999", "JSON", description=describe("name", ["N", "S"])),
        SchemaField("odd", "STRING", description=describe('it\'s "odd"\n', ["S"])),
        SchemaField("long", "BYTES", description=describe(long_name, ["B"])),
        SchemaField("_exported_at", "TIMESTAMP", description="Time of the export"),
    ]
    recorded = recorded_columns(schema, internal=["_exported_at"])
    assert len(describe(long_name, ["B"])) < 1024
    attributes = ["pk", "Name", "name", 'it\'s "odd"\n', long_name, "new"]
    got = recorded.resolve(attributes, readable_column_name)
    assert {a: c.name for a, c in got.items()} == {
        "pk": "pk",
        "Name": "Name",
        "name": "name_6ae999",
        'it\'s "odd"\n': "odd",
        long_name: "long",
    }
    assert got["name"].tags == {"N", "S"}
    assert recorded.taken == {"pk", "name", "name_6ae999", "odd", "long", "_exported_at"}
