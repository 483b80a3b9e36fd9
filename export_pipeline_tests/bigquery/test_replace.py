"""replace_table: one atomic statement; descriptions and labels; failure keeps the old table."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal

import pyarrow as pa
import pytest
from google.cloud.bigquery import SchemaField

from export_pipeline.bigquery.publish import SelectColumn, replace_table
from export_pipeline.bigquery.staging import load_parquet_to_staging, staging_table_id
from export_pipeline.bigquery.tables import BigQueryPublishError
from export_pipeline_tests.support.bigquery import rows

STAGING_SCHEMA = [SchemaField("pk", "STRING"), SchemaField("amount", "STRING")]


def _columns(description: str = "Amount in cents.") -> list[SelectColumn]:
    return [
        SelectColumn("pk", "`pk`", "STRING", description="Partition key."),
        SelectColumn("amount", "CAST(`amount` AS INT64)", "INT64", description=description),
    ]


def _stage(client, table_id, write_parquet, name, data):
    staging = table_id(name)
    path = write_parquet([{"pk": k, "amount": v} for k, v in data])
    load_parquet_to_staging(client, [path], staging, STAGING_SCHEMA)
    return staging


def test_replace_creates_table_with_descriptions_and_labels(
    bigquery_client, table_id, write_parquet
):
    target = table_id("dynamodb_orders")
    staging = _stage(bigquery_client, table_id, write_parquet, "_s1", [("a", "1"), ("b", "2")])
    result = replace_table(
        bigquery_client,
        staging=staging,
        target=target,
        select_columns=_columns(),
        table_description='Orders from DynamoDB "Orders".\nLoaded by export_pipeline.',
        labels={"source": "dynamodb", "export_pipeline": "managed"},
    )
    assert result.rows == 2 and result.console_url == target.console_url
    table = bigquery_client.get_table(target.reference)
    assert table.description == 'Orders from DynamoDB "Orders".\nLoaded by export_pipeline.'
    assert table.labels == {"source": "dynamodb", "export_pipeline": "managed"}
    assert [(f.name, f.field_type, f.description) for f in table.schema] == [
        ("pk", "STRING", "Partition key."),
        ("amount", "INTEGER", "Amount in cents."),
    ]
    assert rows(bigquery_client, f"SELECT * FROM {target.sql} ORDER BY pk") == [
        {"pk": "a", "amount": 1},
        {"pk": "b", "amount": 2},
    ]
    # The staging table is gone after success.
    assert staging.table not in {t.table_id for t in bigquery_client.list_tables(target.dataset)}

    # A second replace swaps the content and the metadata.
    staging = _stage(bigquery_client, table_id, write_parquet, "_s2", [("c", "3")])
    replace_table(
        bigquery_client,
        staging=staging,
        target=target,
        select_columns=_columns("Amount, changed."),
        table_description="v2",
        labels={"source": "dynamodb-v2"},
    )
    table = bigquery_client.get_table(target.reference)
    assert (table.description, table.num_rows) == ("v2", 1)
    assert table.labels["source"] == "dynamodb-v2"
    assert table.schema[1].description == "Amount, changed."


def test_failing_replace_keeps_the_old_table(bigquery_client, table_id, write_parquet):
    target = table_id("rds_shop_orders")
    good = _stage(bigquery_client, table_id, write_parquet, "_good", [("a", "1"), ("b", "2")])
    replace_table(
        bigquery_client,
        staging=good,
        target=target,
        select_columns=_columns(),
        table_description="old",
    )
    # One value does not cast: the statement fails as a whole.
    bad = _stage(bigquery_client, table_id, write_parquet, "_bad", [("x", "9"), ("y", "oops")])
    with pytest.raises(BigQueryPublishError, match=r"replacing .*rds_shop_orders"):
        replace_table(
            bigquery_client,
            staging=bad,
            target=target,
            select_columns=_columns(),
            table_description="new",
        )
    table = bigquery_client.get_table(target.reference)
    assert table.description == "old"
    assert rows(bigquery_client, f"SELECT pk FROM {target.sql} ORDER BY pk") == [
        {"pk": "a"},
        {"pk": "b"},
    ]
    # The failed attempt's staging table is kept for diagnosis.
    assert bigquery_client.get_table(bad.reference).num_rows == 2


def test_reader_during_replace_sees_old_or_new(bigquery_client, table_id, write_parquet):
    target = table_id("dynamodb_big")
    old = [(f"o{i}", str(i)) for i in range(50)]
    new = [(f"n{i}", str(i)) for i in range(80)]
    first = _stage(bigquery_client, table_id, write_parquet, "_old", old)
    replace_table(
        bigquery_client,
        staging=first,
        target=target,
        select_columns=_columns(),
        table_description="t",
    )
    second = _stage(bigquery_client, table_id, write_parquet, "_new", new)
    seen: list[tuple[int, int]] = []
    stop = threading.Event()

    errors: list[Exception] = []

    def read() -> None:
        while not stop.is_set():
            try:
                got = rows(
                    bigquery_client,
                    f"SELECT COUNT(*) AS n, COUNTIF(STARTS_WITH(pk, 'n')) AS new FROM {target.sql}",
                )
            except Exception as error:  # e.g. the table missing for a moment
                errors.append(error)
                return
            seen.append((got[0]["n"], got[0]["new"]))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(3):
            replace_table(
                bigquery_client,
                staging=second,
                target=target,
                select_columns=_columns(),
                table_description="t",
                drop_staging=False,
            )
    finally:
        stop.set()
        reader.join()
    assert not errors, errors
    assert seen, "the reader never ran"
    assert set(seen) <= {(50, 0), (80, 80)}, sorted(set(seen))
    assert seen[-1] == (80, 80)


def test_rds_sample_passes_through_unchanged(bigquery_client, table_id, aws_samples):
    """AWS's Parquet as-is: schema from the files, every column published as loaded."""
    files = sorted(aws_samples.rds_mysql.glob("**/shop.orders/**/*.parquet"))
    target = table_id("rds_shop_orders")
    staging = staging_table_id(target, "run-1")
    loaded = load_parquet_to_staging(bigquery_client, files, staging, schema=None)
    result = replace_table(
        bigquery_client,
        staging=staging,
        target=target,
        select_columns=[SelectColumn.passthrough(f) for f in loaded.schema],
        table_description="MySQL shop.orders from snapshot export",
        labels={"source": "rds"},
    )
    assert result.rows == loaded.rows == 3
    assert [(f.name, f.field_type) for f in result.schema] == [
        ("id", "INTEGER"),
        ("customer_id", "INTEGER"),
        ("amount", "NUMERIC"),
        ("fx_rate", "STRING"),
        ("status", "STRING"),
        ("ship_time", "STRING"),
        ("note", "BYTES"),
        ("year", "INTEGER"),
    ]
    got = {r["id"]: r for r in rows(bigquery_client, f"SELECT * FROM {target.sql}")}
    assert got[10]["amount"] == Decimal("1999.50") and got[12]["amount"] == Decimal("-5.00")
    assert got[10]["fx_rate"] == "0.0067123456" and got[11]["note"] == b"\x00\x01"


def test_exact_numeric_json_and_constant_columns_survive_the_replace(
    bigquery_client, table_id, write_parquet
):
    """NUMERIC keeps all its digits next to SAFE.PARSE_JSON and a constant; JSON stays JSON.

    (bqemulator rounds NUMERIC(38, 9) casts to DECIMAL(18,3) in a query that
    calls a SAFE. function or TIMESTAMP_MICROS, and reports a CTAS's JSON
    columns as STRING.)
    """
    big = Decimal("12345678901234567890123456789.123456789")
    target = table_id("exact")
    staging = table_id("_s_exact")
    arrow = pa.schema([("pk", pa.string()), ("n", pa.decimal128(38, 9)), ("doc", pa.string())])
    path = write_parquet([{"pk": "a", "n": big, "doc": '{"k": [1, "x"]}'}], arrow)
    schema = [
        SchemaField("pk", "STRING"),
        SchemaField("n", "NUMERIC"),
        SchemaField("doc", "STRING"),
    ]
    load_parquet_to_staging(bigquery_client, [path], staging, schema)
    exported_at = dt.datetime(2026, 11, 26, 1, 2, 3, 456789, tzinfo=dt.UTC)
    result = replace_table(
        bigquery_client,
        staging=staging,
        target=target,
        select_columns=[
            SelectColumn.passthrough(schema[0]),
            SelectColumn.passthrough(schema[1]),
            SelectColumn("n_text", "CAST(n AS STRING)", "STRING"),
            SelectColumn("doc", "SAFE.PARSE_JSON(doc)", "JSON"),
            SelectColumn.absent(SchemaField("tags", "STRING", mode="REPEATED")),
            SelectColumn.absent(SchemaField("missing", "NUMERIC")),
            SelectColumn.timestamp("_exported_at", exported_at, "Export time."),
        ],
        table_description="t",
    )
    assert {f.name: f.field_type for f in result.schema} == {
        "pk": "STRING",
        "n": "NUMERIC",
        "n_text": "STRING",
        "doc": "JSON",
        "tags": "STRING",
        "missing": "NUMERIC",
        "_exported_at": "TIMESTAMP",
    }
    (got,) = rows(bigquery_client, f"SELECT * FROM {target.sql}")
    assert Decimal(got.pop("n_text")) == big  # text differs: '…789' vs '…789.123456789'
    assert got == {
        "pk": "a",
        "n": big,
        "doc": {"k": [1, "x"]},
        "tags": [],
        "missing": None,
        "_exported_at": exported_at,
    }
