"""merge_changes and the full reseed: data and high-water mark move together or not at all."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pyarrow as pa
import pytest
from google.cloud.bigquery import SchemaField

from export_pipeline.bigquery.publish import SelectColumn, replace_table
from export_pipeline.bigquery.staging import load_parquet_to_staging
from export_pipeline.bigquery.tables import BigQueryPublishError
from export_pipeline.bigquery.watermark import (
    Watermark,
    WatermarkConflictError,
    read_watermark,
    state_table_for,
)
from export_pipeline_tests.support.bigquery import merge_by_pk, rows

SOURCE = "arn:aws:dynamodb:eu-west-1:123456789012:table/Orders"
T0 = dt.datetime(2026, 11, 26, 0, 0, tzinfo=dt.UTC)
FULL = Watermark(SOURCE, f"{SOURCE}/export/01764115200000-aaaaaaaa", T0)
INC1 = Watermark(SOURCE, f"{SOURCE}/export/01764118800000-bbbbbbbb", T0 + dt.timedelta(hours=1))
INC2 = Watermark(SOURCE, f"{SOURCE}/export/01764122400000-cccccccc", T0 + dt.timedelta(hours=2))

STAGING_SCHEMA = [
    SchemaField("pk", "STRING"),
    SchemaField("qty", "STRING"),
    SchemaField("ts", "INT64"),
    SchemaField("deleted", "BOOL"),
]
COLUMNS = [
    SelectColumn("pk", "`pk`", "STRING", description="Key."),
    SelectColumn("qty", "CAST(`qty` AS INT64)", "INT64", description="Quantity."),
]


def _stage(client, table_id, write_parquet, name, changes):
    """changes: (pk, qty, ts, deleted)."""
    staging = table_id(name)
    path = write_parquet([{"pk": p, "qty": q, "ts": t, "deleted": d} for p, q, t, d in changes])
    load_parquet_to_staging(client, [path], staging, STAGING_SCHEMA)
    return staging


def _merge(client, staging, target, watermark, expected_previous):
    """The orders changes in `staging` merged into `target` (key pk, latest ts wins)."""
    return merge_by_pk(client, staging, target, COLUMNS, watermark, expected_previous, "deleted")


def _reseed(client, staging, target, watermark, expected_previous, **options):
    """`target` replaced by the orders in `staging`, the mark moving with it."""
    return replace_table(
        client,
        staging=staging,
        target=target,
        select_columns=COLUMNS,
        table_description="Orders",
        watermark=watermark,
        expected_previous=expected_previous,
        **options,
    )


def _table(client, target):
    return {r["pk"]: r["qty"] for r in rows(client, f"SELECT pk, qty FROM {target.sql}")}


def _seed(client, table_id, write_parquet, target):
    staging = _stage(
        client,
        table_id,
        write_parquet,
        "_seed",
        [("a", "1", 0, False), ("b", "2", 0, False), ("c", "3", 0, False)],
    )
    _reseed(client, staging, target, FULL, None, labels={"source": "dynamodb"})


def test_reseed_writes_data_and_mark_together(bigquery_client, table_id, write_parquet):
    target = table_id("dynamodb_orders")
    assert read_watermark(bigquery_client, target, SOURCE) is None
    _seed(bigquery_client, table_id, write_parquet, target)
    assert _table(bigquery_client, target) == {"a": 1, "b": 2, "c": 3}
    assert read_watermark(bigquery_client, target, SOURCE) == FULL
    table = bigquery_client.get_table(target.reference)
    assert table.description == "Orders" and table.labels == {"source": "dynamodb"}
    assert [f.description for f in table.schema] == ["Key.", "Quantity."]

    # A reseed replaces every row (including ones the new export lacks).
    staging = _stage(bigquery_client, table_id, write_parquet, "_reseed", [("z", "9", 0, False)])
    later = Watermark(SOURCE, f"{SOURCE}/export/full-2", T0 + dt.timedelta(days=1))
    _reseed(bigquery_client, staging, target, later, FULL)
    assert _table(bigquery_client, target) == {"z": 9}
    assert read_watermark(bigquery_client, target, SOURCE) == later


def test_merge_dedupes_updates_inserts_and_deletes(bigquery_client, table_id, write_parquet):
    target = table_id("dynamodb_orders")
    _seed(bigquery_client, table_id, write_parquet, target)
    staging = _stage(
        bigquery_client,
        table_id,
        write_parquet,
        "_inc1",
        [
            ("a", "10", 5, False),  # older change to a ...
            ("a", "11", 7, False),  # ... the latest wins
            ("a", "12", 6, False),
            ("b", None, 3, True),  # delete b
            ("d", "4", 1, False),  # insert d
            ("e", "5", 1, False),  # inserted then deleted: never appears
            ("e", None, 2, True),
            ("x", None, 1, True),  # delete of an unknown key: no-op
        ],
    )
    result = _merge(bigquery_client, staging, target, INC1, FULL)
    assert _table(bigquery_client, target) == {"a": 11, "c": 3, "d": 4}
    assert result.rows == 3
    assert read_watermark(bigquery_client, target, SOURCE) == INC1
    assert staging.table not in {t.table_id for t in bigquery_client.list_tables(target.dataset)}
    # One mark row per source, updated in place.
    state = rows(bigquery_client, f"SELECT * FROM {state_table_for(target).sql}")
    assert len(state) == 1 and state[0]["target_table"] == target.dotted


@pytest.mark.parametrize(
    ("publish", "mark"), [(_merge, INC1), (_reseed, INC2)], ids=["merge", "reseed"]
)
def test_failing_publish_moves_neither_data_nor_mark(
    bigquery_client, table_id, write_parquet, publish, mark
):
    target = table_id("dynamodb_orders")
    _seed(bigquery_client, table_id, write_parquet, target)
    staging = _stage(
        bigquery_client,
        table_id,
        write_parquet,
        "_bad",
        [("a", "100", 1, False), ("q", "not-a-number", 1, False)],
    )
    with pytest.raises(BigQueryPublishError, match="rolled back"):
        publish(bigquery_client, staging, target, mark, FULL)
    assert _table(bigquery_client, target) == {"a": 1, "b": 2, "c": 3}
    assert read_watermark(bigquery_client, target, SOURCE) == FULL


def test_stale_mark_is_refused(bigquery_client, table_id, write_parquet):
    """Two runs that read the same mark: the second to commit is refused, nothing applied twice."""
    target = table_id("dynamodb_orders")
    _seed(bigquery_client, table_id, write_parquet, target)
    first = _stage(bigquery_client, table_id, write_parquet, "_i1", [("a", "7", 1, False)])
    second = _stage(bigquery_client, table_id, write_parquet, "_i2", [("a", "8", 1, False)])
    _merge(bigquery_client, first, target, INC1, FULL)
    with pytest.raises(WatermarkConflictError, match="changed since this run read it"):
        _merge(bigquery_client, second, target, INC1, FULL)
    assert _table(bigquery_client, target)["a"] == 7
    assert read_watermark(bigquery_client, target, SOURCE) == INC1


def test_mark_of_a_dropped_table_is_not_returned(bigquery_client, table_id, write_parquet):
    target = table_id("dynamodb_orders")
    _seed(bigquery_client, table_id, write_parquet, target)
    bigquery_client.delete_table(target.reference)
    assert read_watermark(bigquery_client, target, SOURCE) is None


def test_merge_carries_arrays_bytes_json_and_numbers(bigquery_client, table_id, write_parquet):
    """The column kinds a DynamoDB item produces survive the staging → MERGE path exactly."""
    target = table_id("dynamodb_items")
    schema = [
        SchemaField("pk", "STRING"),
        SchemaField("tags", "STRING", mode="REPEATED"),
        SchemaField("blob", "BYTES"),
        SchemaField("doc", "STRING"),
        SchemaField("n", "NUMERIC"),
        SchemaField("ts", "INT64"),
    ]
    arrow = pa.schema(
        [
            ("pk", pa.string()),
            ("tags", pa.list_(pa.string())),
            ("blob", pa.binary()),
            ("doc", pa.string()),
            ("n", pa.decimal128(38, 9)),
            ("ts", pa.int64()),
        ]
    )
    staging = table_id("_items")
    path = write_parquet(
        [
            {
                "pk": "a",
                "tags": ["x", "y"],
                "blob": b"\x00\xff",
                "doc": '{"k": [1, "two"]}',
                "n": Decimal("12345678901234567890123456789.123456789"),
                "ts": 2,
            },
            {"pk": "a", "tags": ["old"], "blob": b"", "doc": "{}", "n": Decimal(0), "ts": 1},
            {"pk": "b", "tags": [], "blob": None, "doc": None, "n": None, "ts": 1},
        ],
        arrow,
    )
    load_parquet_to_staging(bigquery_client, [path], staging, schema)
    columns = [
        SelectColumn("pk", "pk", "STRING"),
        SelectColumn("tags", "tags", "STRING", mode="REPEATED"),
        SelectColumn("blob", "blob", "BYTES"),
        SelectColumn("doc", "PARSE_JSON(doc)", "JSON"),
        SelectColumn("n", "n", "NUMERIC"),
    ]
    merge_by_pk(bigquery_client, staging, target, columns, INC1, None)
    got = {
        r["pk"]: r
        for r in rows(
            bigquery_client,
            f"SELECT pk, tags, blob, TO_JSON_STRING(doc) AS doc, n FROM {target.sql}",
        )
    }
    assert got["a"]["tags"] == ["x", "y"] and got["b"]["tags"] == []
    assert got["a"]["blob"] == b"\x00\xff" and got["b"]["blob"] is None
    assert json.loads(got["a"]["doc"]) == {"k": [1, "two"]}
    assert got["a"]["n"] == Decimal("12345678901234567890123456789.123456789")
    assert bigquery_client.get_table(target.reference).schema[3].field_type == "JSON"
