"""The SQL of DynamoDB widenings gives the converter's JSON, on the local BigQuery.

Every value is converted twice: by the converter's own rule
(`values.plain_value`) and by the SQL `widening` writes for a
column of that type, evaluated by the emulator; the two must be equal.
The last tests show the emulator's own differences the SQL avoids (listed
in docs/local-cloud.md); if bqemulator changes, they fail and the list is
updated.
"""

from __future__ import annotations

import base64

import pytest
from google.cloud.bigquery import SchemaField
from hypothesis import given, settings
from hypothesis import strategies as st

from export_pipeline.dynamodb.column_names import describe
from export_pipeline.dynamodb.convert.values import plain_value
from export_pipeline.dynamodb.types import number_kind
from export_pipeline.dynamodb.widening import json_sql, numeric_text

NUMBERS = [
    "0",
    "-7",
    "2.5",
    "0.1",
    "-0.001",
    "3.14159265358979",
    "0.123456789",
    "9007199254740992",
    "9007199254740993",
    "-9223372036854775808",
    "9223372036854775807",
    "12345678901234567890",
    "12345678901234567890123.5",
]
WIDE_TEXT = ["0.30000000000000004", "1" * 38, "1E-130", "-12.5", "42"]


@pytest.fixture(scope="module")
def dataset(bigquery_client):
    """A dataset of this module's tables (deleted afterwards)."""
    import uuid

    name = f"{bigquery_client.project}.widening_{uuid.uuid4().hex[:10]}"
    bigquery_client.create_dataset(name)
    yield name
    bigquery_client.delete_dataset(name, delete_contents=True, not_found_ok=True)


def _query_one(client, sql: str):
    (row,) = list(client.query(sql).result())
    return row["v"]


def _converted(client, dataset: str, value_sql: str, field: SchemaField):
    """`json_sql` over a stored column holding `value_sql`, as a widening reads it.

    The value is stored first: the conversion query then holds no NUMERIC
    cast (see docs/local-cloud.md on bqemulator's DECIMAL(18,3)).
    """
    import uuid

    table = f"`{dataset}.t{uuid.uuid4().hex[:10]}`"
    client.query(f"CREATE TABLE {table} AS SELECT {value_sql} AS x").result()
    return _query_one(client, f"SELECT {json_sql('x', field)} AS v FROM {table}")


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


@pytest.mark.parametrize("text", NUMBERS)
def test_number_columns_become_the_converters_json(bigquery_client, dataset, text: str) -> None:
    kind = number_kind(text)  # the column type a full export gives this number
    cast = {"INT64": "INT64", "NUMERIC": "NUMERIC(38, 9)", "STRING": "STRING"}[kind]
    field = SchemaField("x", kind, description=describe("x", ["N"]))
    got = _converted(bigquery_client, dataset, f"CAST({_literal(text)} AS {cast})", field)
    want = plain_value("N", text)
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize("text", NUMBERS + WIDE_TEXT)
def test_number_text_becomes_the_converters_json(bigquery_client, text: str) -> None:
    field = SchemaField("x", "STRING", description=describe("x", ["N"]))
    sql = f"SELECT {json_sql('x', field)} AS v FROM (SELECT {_literal(text)} AS x)"
    got = _query_one(bigquery_client, sql)
    want = plain_value("N", text)
    assert got == want and type(got) is type(want)


def test_strings_stay_strings(bigquery_client) -> None:
    field = SchemaField("x", "STRING", description=describe("x", ["S"]))
    sql = f"SELECT {json_sql('x', field)} AS v FROM (SELECT '1' AS x)"
    assert _query_one(bigquery_client, sql) == "1"


def test_bytes_and_sets_become_base64_and_arrays(bigquery_client) -> None:
    raw = [b"\x10\x80", b"\xff\x00"]
    texts = [base64.b64encode(r).decode() for r in raw]
    blob = SchemaField("x", "BYTES")
    blobs = SchemaField("x", "BYTES", mode="REPEATED")
    numbers = SchemaField("x", "INT64", mode="REPEATED")
    sql = f"SELECT {json_sql('x', blob)} AS v FROM (SELECT FROM_BASE64('{texts[0]}') AS x)"
    assert _query_one(bigquery_client, sql) == texts[0]
    array = ", ".join(f"FROM_BASE64('{t}')" for t in texts)
    sql = f"SELECT {json_sql('x', blobs)} AS v FROM (SELECT [{array}] AS x)"
    assert _query_one(bigquery_client, sql) == plain_value("BS", texts)
    wide = ["-9223372036854775808", "7"]
    sql = f"SELECT {json_sql('x', numbers)} AS v FROM (SELECT [{', '.join(wide)}] AS x)"
    assert _query_one(bigquery_client, sql) == plain_value("NS", wide)
    sql = f"SELECT {json_sql('x', numbers)} AS v FROM (SELECT CAST([] AS ARRAY<INT64>) AS x)"
    assert _query_one(bigquery_client, sql) is None  # an absent set: NULL, as in a full export


def test_null_stays_sql_null(bigquery_client) -> None:
    sql = f"SELECT {json_sql('x', SchemaField('x', 'INT64'))} AS v FROM (SELECT NULL AS x)"
    assert _query_one(bigquery_client, sql) is None


@settings(max_examples=25, deadline=None)
@given(
    st.decimals(
        min_value=-(10**28), max_value=10**28, places=9, allow_nan=False, allow_infinity=False
    )
)
def test_numeric_text_is_canonical(bigquery_client, value) -> None:
    sql = f"SELECT {numeric_text('x')} AS v FROM (SELECT CAST('{value}' AS NUMERIC(38, 9)) AS x)"
    text = format(value, "f")
    want = text.rstrip("0").rstrip(".") if "." in text else text
    assert _query_one(bigquery_client, sql) == (want if value else "0")


# -- differences of the emulator that the SQL above avoids -----------------------------


def test_emulator_gap_to_json_of_bytes_is_not_base64(bigquery_client) -> None:
    """BigQuery documents TO_JSON(BYTES) as base64 text; bqemulator 1.4.0 does not."""
    got = _query_one(bigquery_client, "SELECT TO_JSON(FROM_BASE64('EIA=')) AS v")
    assert got != "EIA="


def test_emulator_gap_numeric_to_string_keeps_trailing_zeros(bigquery_client) -> None:
    """BigQuery gives '1.5'; bqemulator 1.4.0 gives '1.500000000'."""
    got = _query_one(bigquery_client, "SELECT CAST(CAST('1.5' AS NUMERIC(38, 9)) AS STRING) AS v")
    assert got == "1.500000000"


def test_emulator_gap_to_json_makes_numeric_casts_decimal_18_3(bigquery_client) -> None:
    """In bqemulator 1.4.0 a TO_JSON anywhere in a query rounds its NUMERIC(38, 9) casts
    to 3 decimals (so conversions to JSON get a rewrite of their own, `evolve`)."""
    sql = "SELECT CAST(CAST('3.14159' AS NUMERIC(38, 9)) AS STRING) AS v, TO_JSON('a') AS w"
    assert _query_one(bigquery_client, sql) == "3.142"
