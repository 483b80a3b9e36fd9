"""Schema evolution of live tables: new columns, widened types, no value lost."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from google.cloud import bigquery
from google.cloud.bigquery import SchemaField

from export_pipeline.bigquery.evolve import (
    SchemaEvolutionError,
    add_columns,
    convert_sql,
    widen_columns,
    widened_field,
)
from export_pipeline.bigquery.publish import SelectColumn, merge_changes
from export_pipeline.bigquery.staging import load_parquet_to_staging
from export_pipeline.bigquery.watermark import Watermark, read_watermark
from export_pipeline_tests.bigquery.conftest import rows


def _f(type_: str, mode: str = "NULLABLE") -> SchemaField:
    return SchemaField("c", type_, mode=mode)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (_f("INT64"), _f("INT64"), ("INT64", "NULLABLE")),
        (_f("INTEGER"), _f("NUMERIC"), ("NUMERIC", "NULLABLE")),
        (_f("NUMERIC"), _f("INT64"), ("NUMERIC", "NULLABLE")),
        (_f("NUMERIC"), _f("STRING"), ("STRING", "NULLABLE")),
        (_f("BOOL"), _f("INT64"), ("STRING", "NULLABLE")),
        (_f("STRING"), _f("BYTES"), ("JSON", "NULLABLE")),
        (_f("STRING", "REPEATED"), _f("STRING"), ("JSON", "NULLABLE")),
        (_f("INT64", "REQUIRED"), _f("INT64"), ("INT64", "NULLABLE")),
        (_f("JSON"), _f("INT64"), ("JSON", "NULLABLE")),
    ],
)
def test_widened_field(old: SchemaField, new: SchemaField, expected: tuple[str, str]) -> None:
    got = widened_field(old, new)
    assert (got.field_type, got.mode) == expected


def test_convert_sql_refuses_narrowing() -> None:
    with pytest.raises(SchemaEvolutionError, match="column c"):
        convert_sql("x", _f("STRING"), _f("INT64"))


def test_add_columns_keeps_rows(bigquery_client, table_id) -> None:
    target = table_id("t")
    bigquery_client.create_table(bigquery.Table(target.reference, schema=[_f("INT64")]))
    bigquery_client.query(f"INSERT INTO {target.sql} (c) VALUES (1), (2)").result()
    add_columns(
        bigquery_client,
        target,
        [SchemaField("extra", "STRING"), SchemaField("tags", "STRING", mode="REPEATED")],
    )
    assert [f.name for f in bigquery_client.get_table(target.reference).schema] == [
        "c",
        "extra",
        "tags",
    ]
    assert rows(bigquery_client, f"SELECT c, extra FROM {target.sql} ORDER BY c") == [
        {"c": 1, "extra": None},
        {"c": 2, "extra": None},
    ]
    with pytest.raises(SchemaEvolutionError, match="already exists"):
        add_columns(bigquery_client, target, [SchemaField("C", "STRING")])


def test_widen_int_to_numeric_to_string_to_json_keeps_values(bigquery_client, table_id) -> None:
    target = table_id("t")
    table = bigquery.Table(
        target.reference,
        schema=[SchemaField("k", "STRING"), SchemaField("n", "INT64", description="A number.")],
    )
    table.description = "keep me"
    bigquery_client.create_table(table)
    bigquery_client.query(
        f"INSERT INTO {target.sql} (k, n) VALUES ('max', 9223372036854775807), ('neg', -5)"
    ).result()

    widen_columns(bigquery_client, target, [SchemaField("n", "NUMERIC")])
    t = bigquery_client.get_table(target.reference)
    assert (t.schema[1].field_type, t.schema[1].description, t.description) == (
        "NUMERIC",
        "A number.",
        "keep me",
    )
    assert {r["k"]: r["n"] for r in rows(bigquery_client, f"SELECT * FROM {target.sql}")} == {
        "max": Decimal("9223372036854775807"),
        "neg": Decimal("-5"),
    }

    # The text of a NUMERIC differs (BigQuery '-5', bqemulator '-5.000000000'):
    # compared as numbers, which is what "no value lost" means here.
    widen_columns(bigquery_client, target, [SchemaField("n", "STRING")])
    got = {r["k"]: r["n"] for r in rows(bigquery_client, f"SELECT * FROM {target.sql}")}
    assert {k: Decimal(v) for k, v in got.items()} == {
        "max": Decimal("9223372036854775807"),
        "neg": Decimal(-5),
    }

    widen_columns(bigquery_client, target, [SchemaField("n", "JSON")])
    # bqemulator reports the CTAS-made JSON column as STRING holding the JSON
    # text; BigQuery makes it JSON. The values must be the exact numbers either way.
    got = {
        r["k"]: r["n"]
        for r in rows(bigquery_client, f"SELECT k, JSON_VALUE(n) AS n FROM {target.sql}")
    }
    assert {k: Decimal(v) for k, v in got.items()} == {
        "max": Decimal("9223372036854775807"),
        "neg": Decimal(-5),
    }


def test_merge_widens_a_column_and_keeps_old_values(bigquery_client, table_id, write_parquet):
    """An N attribute that outgrows INT64: the MERGE widens the column first."""
    target = table_id("dynamodb_nums")
    source = "arn:aws:dynamodb:eu-west-1:123456789012:table/Nums"
    mark1 = Watermark(source, "e1", dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    mark2 = Watermark(source, "e2", dt.datetime(2026, 1, 2, tzinfo=dt.UTC))
    staging_schema = [
        SchemaField("pk", "STRING"),
        SchemaField("n", "STRING"),
        SchemaField("ts", "INT64"),
    ]
    first = table_id("_s1")
    load_parquet_to_staging(
        bigquery_client, [write_parquet([{"pk": "a", "n": "7", "ts": 1}])], first, staging_schema
    )
    args = dict(target=target, key_columns=["pk"], order_column="ts", deleted_column=None)
    merge_changes(
        bigquery_client,
        staging=first,
        columns=[
            SelectColumn("pk", "pk", "STRING"),
            SelectColumn("n", "CAST(n AS INT64)", "INT64"),
        ],
        watermark=mark1,
        expected_previous=None,
        **args,
    )
    second = table_id("_s2")
    big = "123456789012345678901234567.5"
    load_parquet_to_staging(
        bigquery_client, [write_parquet([{"pk": "b", "n": big, "ts": 1}])], second, staging_schema
    )
    merge_changes(
        bigquery_client,
        staging=second,
        columns=[
            SelectColumn("pk", "pk", "STRING"),
            SelectColumn("n", "n", "NUMERIC"),
        ],
        watermark=mark2,
        expected_previous=mark1,
        **args,
    )
    assert bigquery_client.get_table(target.reference).schema[1].field_type == "NUMERIC"
    got = {r["pk"]: r["n"] for r in rows(bigquery_client, f"SELECT * FROM {target.sql}")}
    assert got == {"a": Decimal(7), "b": Decimal(big)}
    assert read_watermark(bigquery_client, target, source) == mark2
