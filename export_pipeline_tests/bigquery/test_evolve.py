"""Schema evolution of live tables: new columns, widened types, no value lost."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from google.cloud import bigquery
from google.cloud.bigquery import SchemaField

from export_pipeline.bigquery.evolve import (
    SchemaEvolutionError,
    convert_sql,
    reconcile_schema,
    widened_field,
)
from export_pipeline.bigquery.publish import SelectColumn
from export_pipeline.bigquery.staging import load_parquet_to_staging
from export_pipeline.bigquery.watermark import Watermark, read_watermark
from export_pipeline_tests.support.bigquery import merge_by_pk, rows


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


def test_reconcile_adds_columns_and_keeps_rows(bigquery_client, table_id) -> None:
    target = table_id("t")
    bigquery_client.create_table(bigquery.Table(target.reference, schema=[_f("INT64")]))
    bigquery_client.query(f"INSERT INTO {target.sql} (c) VALUES (1), (2)").result()
    schema = reconcile_schema(
        bigquery_client,
        target,
        [
            _f("INT64"),
            SchemaField("extra", "STRING"),
            SchemaField("tags", "STRING", mode="REPEATED"),
            SchemaField("doc", "JSON"),
        ],
    )
    assert [(f.name, f.field_type, f.mode) for f in schema] == [
        ("c", "INTEGER", "NULLABLE"),
        ("extra", "STRING", "NULLABLE"),
        ("tags", "STRING", "REPEATED"),
        ("doc", "JSON", "NULLABLE"),
    ]
    assert rows(bigquery_client, f"SELECT c, extra, tags, doc FROM {target.sql} ORDER BY c") == [
        {"c": 1, "extra": None, "tags": [], "doc": None},
        {"c": 2, "extra": None, "tags": [], "doc": None},
    ]
    # Nothing left to do: no rewrite, same schema.
    again = reconcile_schema(bigquery_client, target, [SchemaField("C", "INT64")])
    assert [f.to_api_repr() for f in again] == [f.to_api_repr() for f in schema]


def test_reconcile_keeps_json_numeric_values_and_types_across_rewrites(
    bigquery_client, table_id
) -> None:
    """A rewrite for a new column must not touch a JSON or NUMERIC column's type or values.

    (On bqemulator a CTAS reports JSON as STRING and a listed NUMERIC rounds
    to 3 decimals; the shared rewrite keeps both what was declared.)
    """
    target = table_id("t")
    bigquery_client.create_table(
        bigquery.Table(
            target.reference,
            schema=[SchemaField("k", "STRING"), SchemaField("n", "NUMERIC"), _f("JSON")],
        )
    )
    bigquery_client.query(
        f"INSERT INTO {target.sql} (k, n, c) VALUES "
        """('a', NUMERIC '12345678901234567890.123456789', JSON '{"x": [1, "two"]}')"""
    ).result()
    for column in ("first", "second"):
        schema = reconcile_schema(
            bigquery_client, target, [_f("JSON"), SchemaField(column, "STRING")]
        )
        assert {f.name: f.field_type for f in schema}["c"] == "JSON"
        assert {f.name: f.field_type for f in schema}["n"] == "NUMERIC"
    got = rows(bigquery_client, f"SELECT n, c, second FROM {target.sql}")
    assert got == [
        {
            "n": Decimal("12345678901234567890.123456789"),
            "c": {"x": [1, "two"]},
            "second": None,
        }
    ]


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

    reconcile_schema(bigquery_client, target, [SchemaField("n", "NUMERIC")])
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
    reconcile_schema(bigquery_client, target, [SchemaField("n", "STRING")])
    got = {r["k"]: r["n"] for r in rows(bigquery_client, f"SELECT * FROM {target.sql}")}
    assert {k: Decimal(v) for k, v in got.items()} == {
        "max": Decimal("9223372036854775807"),
        "neg": Decimal(-5),
    }

    schema = reconcile_schema(bigquery_client, target, [SchemaField("n", "BYTES")])
    assert {f.name: f.field_type for f in schema}["n"] == "JSON"
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

    def merge(pk: str, n: str, n_column: SelectColumn, mark: Watermark, previous) -> None:
        staging = table_id(f"_s_{pk}")
        path = write_parquet([{"pk": pk, "n": n, "ts": 1}])
        load_parquet_to_staging(bigquery_client, [path], staging, staging_schema)
        columns = [SelectColumn("pk", "pk", "STRING"), n_column]
        merge_by_pk(bigquery_client, staging, target, columns, mark, previous)

    merge("a", "7", SelectColumn("n", "CAST(n AS INT64)", "INT64"), mark1, None)
    big = "123456789012345678901234567.5"
    merge("b", big, SelectColumn("n", "n", "NUMERIC"), mark2, mark1)
    assert bigquery_client.get_table(target.reference).schema[1].field_type == "NUMERIC"
    got = {r["pk"]: r["n"] for r in rows(bigquery_client, f"SELECT * FROM {target.sql}")}
    assert got == {"a": Decimal(7), "b": Decimal(big)}
    assert read_watermark(bigquery_client, target, source) == mark2


def test_widening_to_json_and_adding_numeric_keeps_numeric_exact(bigquery_client, table_id) -> None:
    """A column widened to JSON and a NUMERIC (and ARRAY<NUMERIC>) column added in one
    reconcile: the new columns still hold 38 digits (in bqemulator 1.4.0 a TO_JSON in
    the rewrite would have made them DECIMAL(18,3); see `reconcile_schema`)."""
    target = table_id("t")
    bigquery_client.create_table(bigquery.Table(target.reference, schema=[_f("BOOL")]))
    bigquery_client.query(f"INSERT INTO {target.sql} (c) VALUES (TRUE)").result()
    reconcile_schema(
        bigquery_client,
        target,
        [_f("JSON"), SchemaField("n", "NUMERIC"), SchemaField("ns", "NUMERIC", mode="REPEATED")],
    )
    wide = "12345678901234567890.123456789"
    bigquery_client.query(
        f"INSERT INTO {target.sql} (c, n, ns) SELECT JSON 'false', "
        f"CAST('{wide}' AS NUMERIC(38, 9)), [CAST('{wide}' AS NUMERIC(38, 9))]"
    ).result()
    got = rows(bigquery_client, f"SELECT c, n, ns FROM {target.sql} ORDER BY n NULLS FIRST")
    assert got == [
        {"c": True, "n": None, "ns": []},
        {"c": False, "n": Decimal(wide), "ns": [Decimal(wide)]},
    ]
