"""PostgreSQL ranges → BigQuery JSON objects, on the real server's own text forms.

Each range is written by the server at 127.0.0.1:5432 (`format('%s', …)`,
TimeZone UTC, DateStyle ISO) and read by the SQL of
`export_pipeline.postgres.ranges` in the local BigQuery. The expected bounds
and flags are the server's own `lower()`, `upper()`, `lower_inc()`,
`upper_inc()`, `lower_inf()`, `upper_inf()` and `isempty()`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg2
import pytest
from google.cloud import bigquery
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from export_pipeline.postgres import types
from export_pipeline_tests.postgres.profile import ROUND_TRIP_EXAMPLES

RANGES = [
    ("int4range", "'[1,10)'"),
    ("int4range", "'[1,1)'"),  # empty
    ("int4range", "'(,5]'"),  # unbounded below; canonical [,6)
    ("int4range", "'[-2147483648,2147483647)'"),
    ("int8range", "'[-9223372036854775808,)'"),
    ("int8range", "'(,)'"),
    ("numrange", "'(1.5,)'"),
    ("numrange", "'[0.000000000001,12345678901234567890123456789012345.5]'"),
    ("numrange", "'(,)'"),
    ("daterange", "'[2024-01-01,infinity]'"),
    ("daterange", "'[2024-01-01,2024-01-01]'"),
    ("daterange", "'[-infinity,2024-02-29)'"),
    ("daterange", "'[0044-03-15 BC,)'"),
    ("tsrange", "'[2024-01-01 00:00:00,2024-01-01 00:00:00.5]'"),
    ("tstzrange", "'[2024-01-01 02:00:00+02,2024-02-01)'"),
    ("tstzrange", "'[-infinity,infinity]'"),
    ("tstzrange", "'empty'"),
]


def _described(cursor: Any, range_type: str, literal: str) -> tuple[str, dict[str, Any]]:
    """The server's text of a range and the object its range functions describe."""
    value = f"{literal}::{range_type}"
    cursor.execute(
        f"SELECT format('%s', {value}), isempty({value}), lower({value})::text, "
        f"upper({value})::text, lower_inc({value}), upper_inc({value})"
    )
    text, empty, lower, upper, lower_inc, upper_inc = cursor.fetchone()
    if range_type in ("int4range", "int8range"):
        lower = int(lower) if lower is not None else None
        upper = int(upper) if upper is not None else None
    expected = {
        "empty": empty,
        "lower": lower,
        "upper": upper,
        "lower_inc": lower_inc,
        "upper_inc": upper_inc,
    }
    return text, expected


@pytest.fixture(scope="module")
def pg_cursor():
    connection = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test")
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("SET TimeZone TO 'UTC'; SET DateStyle TO 'ISO, YMD'")
        yield cursor
    connection.close()


@pytest.fixture(scope="module")
def server_ranges(pg_cursor) -> list[tuple[str, str, dict[str, Any]]]:
    """(type, the server's text, the object the server's range functions describe)."""
    return [(t, *_described(pg_cursor, t, literal)) for t, literal in RANGES]


def read(client: bigquery.Client, range_type: str, texts: list[str]) -> list[Any]:
    mapping = types.map_column("c", range_type, "STRING")
    assert mapping.target_type == "JSON"
    sql = (
        f"SELECT {types.typed_expression(mapping, 'c')} AS v "
        "FROM UNNEST(@texts) AS c WITH OFFSET AS o ORDER BY o"
    )
    config = bigquery.QueryJobConfig(
        query_parameters=[bigquery.ArrayQueryParameter("texts", "STRING", texts)]
    )
    return [r["v"] for r in client.query(sql, job_config=config).result()]


def test_ranges_from_the_real_server(server_ranges, bigquery_client) -> None:
    for range_type, text, expected in server_ranges:
        [got] = read(bigquery_client, range_type, [text])
        assert got == expected, (range_type, text, got)


def test_text_of_no_range_form_is_not_typed(bigquery_client) -> None:
    assert read(bigquery_client, "numrange", ["[1,2", "1,2)", "{1}", ""]) == [None] * 4


decimals = st.decimals(allow_nan=False, allow_infinity=False, places=4, min_value=-(10**30))
flags = st.booleans()
numranges = st.tuples(
    st.just("numrange"), st.none() | decimals.map(str), st.none() | decimals.map(str), flags, flags
)
integers = st.none() | st.integers(-(2**31), 2**31 - 2).map(str)
int4ranges = st.tuples(st.just("int4range"), integers, integers, flags, flags)


@settings(
    max_examples=ROUND_TRIP_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ranges=st.lists(numranges | int4ranges, min_size=1, max_size=6))
def test_any_range_reads_as_the_server_describes_it(pg_cursor, bigquery_client, ranges) -> None:
    """Random bounds and flags → the server's text → our JSON: the server's own description."""
    for range_type, lower, upper, lower_inc, upper_inc in ranges:
        if lower is not None and upper is not None and Decimal(lower) > Decimal(upper):
            lower, upper = upper, lower
        brackets = ("[" if lower_inc else "(") + "{},{}" + ("]" if upper_inc else ")")
        literal = "'" + brackets.format(lower or "", upper or "") + "'"
        text, expected = _described(pg_cursor, range_type, literal)
        [got] = read(bigquery_client, range_type, [text])
        assert got == expected, (range_type, text, got)
