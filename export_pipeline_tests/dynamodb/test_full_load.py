"""Full mode end to end: DynamoDB -> export in the local S3 -> BigQuery emulator."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from dagster import DagsterInstance

from export_pipeline_tests.dynamodb._pipeline_helpers import (
    assets_for,
    bigquery_rows,
    create_table,
    make_config,
    materialization_metadata,
    run,
    table_id,
)

ITEMS = [
    {
        "pk": {"S": "a"},
        "qty": {"N": "3"},
        "price": {"N": "19.50"},
        "paid": {"BOOL": True},
        "tags": {"SS": ["gift", "express"]},
        "address": {"M": {"city": {"S": "Cork"}, "zip": {"N": "12"}}},
        "blob": {"B": b"\x00\x01\xff"},
        "gone": {"NULL": True},
    },
    {"pk": {"S": "b"}, "qty": {"N": "-7"}, "price": {"N": "0.123456789"}, "paid": {"BOOL": False}},
    {"pk": {"S": "c"}, "qty": {"N": "9223372036854775807"}},
]


def test_full_load_end_to_end_with_exact_values(aws_clients, bigquery_client, unique_name):
    table = f"full-{unique_name}"
    create_table(aws_clients.dynamodb, table, ITEMS)
    config = make_config(table)
    instance = DagsterInstance.ephemeral()
    result = run(config, instance)
    assert result.success
    export_asset, bigquery_asset = assets_for(config)

    export_meta = materialization_metadata(result, export_asset.key)
    assert export_meta["export_strategy"] == "full"
    assert export_meta["item_count"] == 3
    assert export_meta["export_arn"].startswith(
        f"arn:aws:dynamodb:eu-west-1:123456789012:table/{table}/export/"
    )
    assert export_meta["manifest_uris"][0].endswith("/manifest-summary.json")
    assert export_meta["billed_size_bytes"] > 0

    rows = bigquery_rows(bigquery_client, table)
    assert sorted(rows) == ["a", "b", "c"]
    a, b, c = rows["a"], rows["b"], rows["c"]
    assert a["qty"] == 3 and b["qty"] == -7 and c["qty"] == 9223372036854775807
    assert a["price"] == Decimal("19.5") and b["price"] == Decimal("0.123456789")  # 9 decimals
    assert c["price"] is None
    assert a["paid"] is True and b["paid"] is False and c["paid"] is None
    assert sorted(a["tags"]) == ["express", "gift"] and b["tags"] == []
    assert a["address"] == {"city": "Cork", "zip": 12}
    assert a["blob"] == b"\x00\x01\xff"
    assert a["gone"] is None
    exported_at = {r["_exported_at"] for r in rows.values()}
    assert len(exported_at) == 1
    # The manifest states the export time to the millisecond.
    export_time = datetime.fromisoformat(export_meta["export_time"])
    assert abs(exported_at.pop() - export_time) < timedelta(milliseconds=1)

    meta = materialization_metadata(result, bigquery_asset.key)
    assert meta["dagster/row_count"] == 3
    assert meta["dagster/table_name"] == table_id(table)
    assert meta["export_arn"] == export_meta["export_arn"]
    assert meta["bytes_moved"] > 0
    columns = {c.name: c for c in meta["dagster/column_schema"].columns}
    assert columns["qty"].type == "INTEGER" or columns["qty"].type == "INT64"
    assert columns["tags"].type.startswith("ARRAY<")
    assert "qty" in columns["qty"].description and "N" in columns["qty"].description
    assert columns["_exported_at"].type == "TIMESTAMP"

    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert {name: c.passed for name, c in checks.items()} == {
        "row_count_matches_export": True,
        "schema_unchanged": True,  # a first load: nothing to compare with
    }

    bq_table = bigquery_client.get_table(table_id(table))
    assert export_meta["export_arn"] in bq_table.description
    assert f"table/{table}" in bq_table.description
