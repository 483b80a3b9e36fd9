"""PostgreSQL arrays → BigQuery ARRAY<T> or JSON, on the real server's own text forms.

Each array is written by the real PostgreSQL server at 127.0.0.1:5432
(`format('%s', …)`, its output function, with the export's session settings),
then read by the SQL `export_pipeline.postgres.types` builds, run in the local
BigQuery over the texts as query parameters. The expected values are the
arrays given to the server, so the test fails if either form changes a value.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from operator import eq
from typing import Any

import psycopg2
import pytest
from google.cloud import bigquery
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from export_pipeline.postgres import types
from export_pipeline_tests.postgres.profile import ROUND_TRIP_EXAMPLES

NOT_AN_ARRAY = object()  # neither form holds the text: it goes to `__raw`


@pytest.fixture(scope="module")
def pg_cursor():
    connection = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test")
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(
            "SET TimeZone TO 'UTC'; SET DateStyle TO 'ISO, YMD'; SET IntervalStyle TO 'iso_8601'"
        )
        yield cursor
    connection.close()


def server_text(cursor: Any, value: Any, pg_type: str) -> str:
    """The server's text form of `value` (a Python list, or SQL text) as `pg_type`."""
    if isinstance(value, str):  # no parameters: psycopg2 leaves '%' as it is
        cursor.execute(f"SELECT format('%s', ({value})::{pg_type})")
    else:
        cursor.execute(f"SELECT format('%%s', %s::{pg_type})", (value,))
    return cursor.fetchone()[0]


def read(client: bigquery.Client, original_type: str, texts: list[str]) -> list[tuple[Any, Any]]:
    """Per text: (the ARRAY<T> value or None where that form does not fit, the JSON value)."""
    mapping = types.map_column("c", original_type, "STRING")
    if mapping.conversion is types.Conversion.ARRAY_TYPED:
        fits = types.fits_expression(mapping, "c")
        typed = f"IF({fits}, {types.typed_expression(mapping, 'c')}, NULL)"
        fits_sql = fits
        as_json = mapping.fallback
    else:
        typed, fits_sql, as_json = "CAST(NULL AS ARRAY<STRING>)", "FALSE", mapping
    assert as_json is not None and as_json.conversion is types.Conversion.ARRAY_JSON
    sql = (
        f"SELECT {fits_sql} AS fits, {typed} AS typed, {types.typed_expression(as_json, 'c')} "
        "AS js FROM UNNEST(@texts) AS c WITH OFFSET AS o ORDER BY o"
    )
    config = bigquery.QueryJobConfig(
        query_parameters=[bigquery.ArrayQueryParameter("texts", "STRING", texts)]
    )
    found = [dict(r.items()) for r in client.query(sql, job_config=config).result()]
    return [(r["typed"] if r["fits"] else None, r["js"]) for r in found]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b and type(a) is type(b)


HOSTILE_TEXTS = [
    "a b",
    'c"d',
    "back\\slash",
    "com,ma",
    "semi;colon",
    "{brace}",
    "}",
    "NULL",
    "null",
    "",
    " lead",
    "trail ",
    "tab\there",
    "new\nline",
    "ctl\x01x",
    "ünïcödé",
    "日本語",
    "emoji 🎉",
    '\\"',
    "[0:1]=",
]

# (PostgreSQL type, value given to the server, the ARRAY<T> value, the JSON value).
CASES: list[tuple[str, Any, Any, Any]] = [
    ("integer[]", [1, 2, 3], [1, 2, 3], [1, 2, 3]),
    ("integer[]", [], [], []),
    ("bigint[]", [-(2**63), 2**63 - 1], [-(2**63), 2**63 - 1], [-(2**63), 2**63 - 1]),
    ("smallint[]", [-32768], [-32768], [-32768]),
    ("text[]", HOSTILE_TEXTS, HOSTILE_TEXTS, HOSTILE_TEXTS),
    ("character varying(5)[]", ["a", "b c"], ["a", "b c"], ["a", "b c"]),
    ("boolean[]", [True, False], [True, False], [True, False]),
    (
        "numeric(5,2)[]",
        [Decimal("1.5"), Decimal("-999.99")],
        [Decimal("1.50"), Decimal("-999.99")],
        ["1.50", "-999.99"],
    ),
    ("numeric[]", "'{NaN,1}'", None, ["NaN", "1"]),  # NaN is no NUMERIC: JSON
    (
        "numeric[]",
        [Decimal("12345678901234567890123456789012.5")],
        None,
        ["12345678901234567890123456789012.5"],
    ),
    (
        "double precision[]",
        "ARRAY[1.5::float8, 'NaN', 'Infinity', '-Infinity', 1e300, 0.1]",
        [1.5, math.nan, math.inf, -math.inf, 1e300, 0.1],
        ["1.5", "NaN", "Infinity", "-Infinity", "1e+300", "0.1"],
    ),
    ("date[]", [dt.date(2024, 2, 29)], [dt.date(2024, 2, 29)], ["2024-02-29"]),
    ("date[]", "'{2024-02-29,infinity}'", None, ["2024-02-29", "infinity"]),
    (
        "timestamp without time zone[]",
        [dt.datetime(2024, 5, 6, 7, 8, 9, 123456)],
        [dt.datetime(2024, 5, 6, 7, 8, 9, 123456)],
        ["2024-05-06 07:08:09.123456"],
    ),
    (
        "timestamp with time zone[]",
        "'{\"2024-05-06 07:08:09.5+02\"}'",
        [dt.datetime(2024, 5, 6, 5, 8, 9, 500000, tzinfo=dt.UTC)],
        ["2024-05-06 05:08:09.5+00"],
    ),
    ("bytea[]", [b"\x00\xff", b""], [b"\x00\xff", b""], ["\\x00ff", "\\x"]),
    ("uuid[]", "'{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}'", None, None),  # filled below
    # box's delimiter is ';' (its elements hold commas).
    ("box[]", "ARRAY[box '(0,0),(1,1)', box '(2,2),(3,3)']", None, None),
    # NULL elements and more than one dimension: JSON only.
    ("integer[]", [1, None], None, [1, None]),
    ("text[]", ["a", None, "NULL", ""], None, ["a", None, "NULL", ""]),
    ("integer[]", [[1, 2], [3, 4]], None, [[1, 2], [3, 4]]),
    ("text[]", [["a,b", None], ['"', "{}"]], None, [["a,b", None], ['"', "{}"]]),
    ("boolean[]", [[True], [None]], None, [[True], [None]]),
    ("jsonb[]", "ARRAY['{\"a\": [1]}'::jsonb]", None, ['{"a": [1]}']),
    # Range elements (JSON objects as columns) are no ARRAY element: JSON of their text.
    ("int4range[]", "ARRAY[int4range(1, 10), 'empty']", None, ["[1,10)", "empty"]),
    # A lower bound other than 1 is printed with its dimensions: neither form.
    ("integer[]", "'[0:1]={5,6}'", None, NOT_AN_ARRAY),
]


def test_arrays_from_the_real_server(pg_cursor, bigquery_client) -> None:
    by_type: dict[str, list[tuple[str, Any, Any]]] = {}
    for pg_type, value, typed, as_json in CASES:
        text = server_text(pg_cursor, value, pg_type)
        if pg_type in ("uuid[]", "box[]"):
            # Elements are the server's own element texts (box: '(1,1),(0,0)').
            pg_cursor.execute(f"SELECT format('%s', e) FROM unnest(({value})::{pg_type}) AS e")
            elements = [r[0] for r in pg_cursor.fetchall()]
            typed, as_json = elements, elements
        by_type.setdefault(pg_type, []).append((text, typed, as_json))
    for pg_type, cases in by_type.items():
        found = read(bigquery_client, pg_type, [text for text, _, _ in cases])
        for (text, typed, as_json), (got_typed, got_json) in zip(cases, found, strict=True):
            assert _same(typed, got_typed), (pg_type, text, got_typed)
            if as_json is NOT_AN_ARRAY:
                assert got_json is None, (pg_type, text, got_json)
            else:
                assert _same(as_json, got_json), (pg_type, text, got_json)


def test_box_arrays_split_on_semicolons(pg_cursor, bigquery_client) -> None:
    text = server_text(pg_cursor, "ARRAY[box '(0,0),(1,1)', box '(2,2),(3,3)']", "box[]")
    assert text == "{(1,1),(0,0);(3,3),(2,2)}"
    [(typed, as_json)] = read(bigquery_client, "box[]", [text])
    assert typed == as_json == ["(1,1),(0,0)", "(3,3),(2,2)"]


# PostgreSQL text holds any character but NUL; surrogates are not UTF-8.
element_texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))
ints = st.integers(min_value=-(2**31), max_value=2**31 - 1)


def _arrays(elements: st.SearchStrategy) -> st.SearchStrategy:
    """One- or two-dimensional (rectangular) arrays, NULL elements included."""
    maybe = st.one_of(st.none(), elements)
    one = st.lists(maybe, max_size=6)
    two = st.integers(1, 3).flatmap(
        lambda width: st.lists(st.lists(maybe, min_size=width, max_size=width), min_size=1)
    )
    return st.one_of(one, two)


numerics = st.decimals(
    min_value=Decimal("-99999999999.999999999"),
    max_value=Decimal("99999999999.999999999"),
    places=9,
    allow_nan=False,
)


def _json_form(value: Any, element_json: Any) -> Any:
    """The JSON form of an array: each non-NULL element mapped by `element_json`."""
    if isinstance(value, list):
        return [_json_form(e, element_json) for e in value]
    return None if value is None else element_json(value)


def _same_numbers(a: Any, b: Any) -> bool:
    """Equal, reading JSON strings of decimals as the decimals they spell."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_numbers(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, str) and isinstance(b, str):
        return Decimal(a) == Decimal(b)
    return a == b


@settings(
    max_examples=ROUND_TRIP_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    text_arrays=st.lists(_arrays(element_texts), min_size=1, max_size=5),
    int_arrays=st.lists(_arrays(ints), min_size=1, max_size=5),
    bool_arrays=st.lists(_arrays(st.booleans()), min_size=1, max_size=3),
    numeric_arrays=st.lists(_arrays(numerics), min_size=1, max_size=3),
)
def test_any_array_reads_back_equal(
    pg_cursor, bigquery_client, text_arrays, int_arrays, bool_arrays, numeric_arrays
) -> None:
    """Random arrays → the server's text → our reading: equal to the original.

    JSON always holds the array (numeric elements as strings of their exact
    decimal); ARRAY<T> holds it exactly when it is one-dimensional without
    NULL elements, and never otherwise.
    """
    for pg_type, arrays, element_json, same_json in (
        ("text[]", text_arrays, lambda e: e, eq),
        ("integer[]", int_arrays, lambda e: e, eq),
        ("boolean[]", bool_arrays, lambda e: e, eq),
        ("numeric(20,9)[]", numeric_arrays, str, _same_numbers),
    ):
        texts = [server_text(pg_cursor, array, pg_type) for array in arrays]
        for array, text, (typed, as_json) in zip(
            arrays, texts, read(bigquery_client, pg_type, texts), strict=True
        ):
            assert same_json(as_json, _json_form(array, element_json)), (text, as_json)
            flat = all(not isinstance(e, list) for e in array)
            if flat and None not in array:
                assert typed == array, (text, typed)
            else:
                assert typed is None, (text, typed)
