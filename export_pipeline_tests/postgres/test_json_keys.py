"""`json` values with duplicate keys → `__raw`, on the real server's own text.

PostgreSQL's `json` keeps its input text (duplicate keys, spacing, escapes);
the texts here are what the server at 127.0.0.1:5432 returns for them. The
SQL of `export_pipeline.postgres.types` runs in the local BigQuery.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg2
import pytest
from google.cloud import bigquery
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from export_pipeline.postgres import types
from export_pipeline_tests.postgres.profile import ROUND_TRIP_EXAMPLES


@pytest.fixture(scope="module")
def pg_cursor():
    connection = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test")
    connection.autocommit = True
    with connection.cursor() as cursor:
        yield cursor
    connection.close()


def server_json(cursor: Any, text: str) -> str:
    cursor.execute("SELECT format('%%s', %s::json)", (text,))
    return cursor.fetchone()[0]


def typed_json(client: bigquery.Client, original_type: str, texts: list[str]) -> list[Any]:
    """Each text's typed JSON value (None where it goes to `__raw`)."""
    mapping = types.map_column("c", original_type, "STRING")
    sql = (
        f"SELECT {types.typed_expression(mapping, 'c')} AS v "
        "FROM UNNEST(@texts) AS c WITH OFFSET AS o ORDER BY o"
    )
    config = bigquery.QueryJobConfig(
        query_parameters=[bigquery.ArrayQueryParameter("texts", "STRING", texts)]
    )
    return [r["v"] for r in client.query(sql, job_config=config).result()]


# (json text, its value, or None: duplicate keys → __raw)
CASES: list[tuple[str, Any]] = [
    ('{"a": 1, "a": 2}', None),
    ('{"a": 1, "b": {"a": 2}}', {"a": 1, "b": {"a": 2}}),
    ('{"a": [{"x": 1}, {"x": 2}]}', {"a": [{"x": 1}, {"x": 2}]}),
    ('{"a": [{"x": 1, "x": 2}]}', None),
    ('{"a": {"b": 1, "c": {"e": 1}, "b": 2}}', None),
    ('{"k": "\\"a\\": 1, \\"a\\":", "a": 1}', {"k": '"a": 1, "a":', "a": 1}),
    ('{"a": 1, "\\u0061": 2}', None),  # one key, spelled twice
    ('{"a b": 1,   "a b"  : 2}', None),
    (
        '{"a": {"b": 1}, "c": {"b": 2, "d": {"b": 3}}}',
        {"a": {"b": 1}, "c": {"b": 2, "d": {"b": 3}}},
    ),
    ('[{"a": 1}, {"a": 1}]', [{"a": 1}, {"a": 1}]),
    ('"a:"', "a:"),
    ("[]", []),
    ("{}", {}),
]


def test_duplicate_keys_from_the_real_server(pg_cursor, bigquery_client) -> None:
    texts = [server_json(pg_cursor, text) for text, _ in CASES]
    assert texts[0] == '{"a": 1, "a": 2}'  # the server keeps them
    found = typed_json(bigquery_client, "json", texts)
    for (text, expected), got in zip(CASES, found, strict=True):
        assert got == expected, (text, got)
    # jsonb removed them on input: its text never holds a duplicate and is parsed as is.
    assert typed_json(bigquery_client, "jsonb", ['{"a": 2}']) == [{"a": 2}]


keys = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=4)
values = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | keys,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=8,
)
objects = st.dictionaries(keys, values, min_size=1, max_size=4)


@settings(
    max_examples=ROUND_TRIP_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.lists(st.tuples(objects, st.booleans(), st.booleans()), min_size=1, max_size=6))
def test_duplicates_found_exactly(pg_cursor, bigquery_client, data) -> None:
    """Random objects, some given one key twice: only those go to `__raw`."""
    texts, expected = [], []
    for obj, duplicate, ascii_only in data:
        text = json.dumps(obj, ensure_ascii=ascii_only)
        if duplicate:
            key = next(iter(obj))
            text = text[:-1] + f", {json.dumps(key, ensure_ascii=not ascii_only)}: 0}}"
        texts.append(server_json(pg_cursor, text))
        expected.append(None if duplicate else obj)
    assert typed_json(bigquery_client, "json", texts) == expected
