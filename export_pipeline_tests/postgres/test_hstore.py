"""PostgreSQL hstore → BigQuery JSON objects, on the real server's own text forms.

Each hstore value is written by the server at 127.0.0.1:5432 (`format('%s', …)`,
its output function, as the export writes it) in a database made for this
module only, and read by the SQL of `export_pipeline.postgres.hstore` in the
local BigQuery. The expected object is the server's own `hstore_to_json()`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
from google.cloud import bigquery
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from export_pipeline.postgres import types
from export_pipeline_tests.postgres.profile import ROUND_TRIP_EXAMPLES

# (keys, values) of hstore(text[], text[]); hostile to a reader of the text form.
HOSTILE: list[tuple[list[str], list[str | None]]] = [
    (["a", "b c", 'q"uote'], ["1", None, "back\\slash"]),
    (["", "NULL", "=>"], ["", "NULL", "=>"]),
    ([', "x"=>"', "a,b", " lead", "trail "], ["v", "c, d", " ", "\\"]),
    (['\\"', "\\\\", '"'], ['"', '\\"', '""']),
    (["é", "日本", "emoji 🦆", "tab\tnewline\nend"], ["ü", "語", "🦆", "cr\r\x01"]),
    (["k"], [None]),
    ([], []),
]


def _connect(database: str) -> Any:
    connection = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname=database)
    connection.autocommit = True
    return connection


@pytest.fixture(scope="module")
def pg_cursor() -> Iterator[Any]:
    """A cursor on a scratch database with the hstore extension, dropped afterwards."""
    name = "pgtest_hstore_" + uuid.uuid4().hex[:10]
    admin = _connect("test")
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    try:
        connection = _connect(name)
        with connection.cursor() as cursor:
            cursor.execute("CREATE EXTENSION IF NOT EXISTS hstore")
            yield cursor
        connection.close()
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def _server(cursor: Any, keys: list[str], values: list[str | None]) -> tuple[str, Any]:
    """The server's text of hstore(keys, values) and its own `hstore_to_json()` of it."""
    cursor.execute(
        "SELECT format('%%s', h), hstore_to_json(h)::text "
        "FROM (SELECT hstore(%s::text[], %s::text[]) AS h) AS v",
        (keys, values),
    )
    text, as_json = cursor.fetchone()
    return text, json.loads(as_json)


def read(client: bigquery.Client, texts: list[str | None]) -> list[Any]:
    """Each text through the hstore column's typed SQL, and whether it fits, in BigQuery."""
    mapping = types.map_column("c", "hstore", "STRING")
    assert (mapping.target_type, mapping.conversion) == ("JSON", types.Conversion.HSTORE_TEXT)
    fits = types.fits_expression(mapping, "c")
    assert fits is not None
    sql = (
        f"SELECT {types.typed_expression(mapping, 'c')} AS v, {fits} AS f "
        "FROM UNNEST(@texts) AS c WITH OFFSET AS o ORDER BY o"
    )
    config = bigquery.QueryJobConfig(
        query_parameters=[bigquery.ArrayQueryParameter("texts", "STRING", texts)]
    )
    found = list(client.query(sql, job_config=config).result())
    # The guard decides: a text fits exactly when its typed value exists.
    for row, text in zip(found, texts, strict=True):
        assert bool(row["f"]) == (row["v"] is not None), text
    return [r["v"] for r in found]


def test_hostile_hstores_from_the_real_server(pg_cursor, bigquery_client) -> None:
    server = [_server(pg_cursor, keys, values) for keys, values in HOSTILE]
    assert server[0][0] == '"a"=>"1", "b c"=>NULL, "q\\"uote"=>"back\\\\slash"'
    assert server[-1] == ("", {})
    got = read(bigquery_client, [text for text, _ in server])
    for (text, expected), value in zip(server, got, strict=True):
        assert value == expected, (text, value)
    assert got[0] == {"a": "1", "b c": None, 'q"uote': "back\\slash"}


def test_sql_null_stays_null(bigquery_client) -> None:
    assert read(bigquery_client, [None, '"k"=>"v"', None]) == [None, {"k": "v"}, None]


def test_text_of_no_hstore_form_is_not_typed(bigquery_client) -> None:
    texts = [
        "a=>1",  # input syntax, never output
        '"a"=>"1",  "b"=>"2"',
        '"a"=>"1",',
        '"a"=>null',
        '"a"=>"1" ',
        '"a\\"=>"1"',
        '{"a": "1"}',
        " ",
    ]
    assert read(bigquery_client, texts) == [None] * len(texts)


text_without_nul = st.text(st.characters(codec="utf-8", blacklist_characters="\x00"), max_size=12)


@settings(
    max_examples=ROUND_TRIP_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(values=st.dictionaries(text_without_nul, st.none() | text_without_nul, max_size=6))
def test_any_hstore_reads_as_the_dict_it_holds(pg_cursor, bigquery_client, values) -> None:
    """Random dict → the server's hstore text → our JSON: the dict, and the server's own JSON."""
    text, server_json = _server(pg_cursor, list(values), list(values.values()))
    [got] = read(bigquery_client, [text])
    assert got == values == server_json, text


@pytest.mark.parametrize("original_type", ["hstore", "extensions.hstore", '"My Schema".hstore'])
def test_hstore_in_any_schema_is_a_json_object(original_type: str) -> None:
    """`format_type()` names the type with its schema when that is not on the search path."""
    mapping = types.map_column("c", original_type, "STRING")
    assert (mapping.target_type, mapping.conversion) == ("JSON", types.Conversion.HSTORE_TEXT)
    assert types.map_column("c", "hstore_like", "STRING").target_type == "STRING"


def test_hstore_array_is_a_json_array_of_the_elements_texts(pg_cursor, bigquery_client) -> None:
    """hstore[]: a JSON array, each element the server's hstore text as a JSON string."""
    pg_cursor.execute(
        "SELECT format('%s', a), format('%s', a[1]) FROM "
        "(SELECT ARRAY[hstore('k\"', 'v, w'), ''::hstore, NULL] AS a) AS v"
    )
    text, first = pg_cursor.fetchone()
    mapping = types.map_column("c", "hstore[]", "STRING")
    assert (mapping.target_type, mapping.conversion) == ("JSON", types.Conversion.ARRAY_JSON)
    sql = f"SELECT {types.typed_expression(mapping, 'c')} AS v FROM UNNEST([@text]) AS c"
    config = bigquery.QueryJobConfig(
        query_parameters=[bigquery.ScalarQueryParameter("text", "STRING", text)]
    )
    [row] = list(bigquery_client.query(sql, job_config=config).result())
    assert row["v"] == [first, "", None], text
    assert first == '"k\\""=>"v, w"'
