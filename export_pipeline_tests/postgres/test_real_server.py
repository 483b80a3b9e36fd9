"""The real PostgreSQL server as an RDS PostgreSQL instance: export → BigQuery.

Uses 127.0.0.1:5432 (user postgres, trust) with a database made for this test
only and dropped afterwards. The local RDS instance reads it whenever a
snapshot is taken (tag `local-cloud:source-url`), so every text form in the
export is PostgreSQL's own; the expected BigQuery values are computed here
from what the server itself returns.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from decimal import Decimal
from typing import Any

import psycopg2
import pytest
from dagster import AssetKey, DagsterInstance

from export_pipeline.config import RdsInstanceConfig
from export_pipeline.local_cloud.rds_client import create_postgres_source, take_automated_snapshot
from export_pipeline.postgres.source import PostgresSource
from export_pipeline_tests.support.bigquery import rows
from export_pipeline_tests.support.rds import config_for, run_rds

DDL = """
CREATE EXTENSION hstore;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN positive AS integer CHECK (VALUE > 0);
CREATE SCHEMA sales;
CREATE TABLE zoo (
    id integer PRIMARY KEY, si smallint, bi bigint, o oid, pos positive,
    r real, d double precision,
    n numeric(12,2), nu numeric, nwide numeric(40,10), m money,
    b boolean, by bytea, ch char(5), vc varchar(10), t text, u uuid, ip inet, mac macaddr,
    bits bit(4), e mood, j json, jb jsonb,
    dt date, ts timestamp, tstz timestamptz, tm time, tmtz timetz, iv interval,
    arr integer[], tarr text[], rng int4range, pt point,
    jd json, ai bigint[], atx text[], an numeric(6,3)[], ats timestamptz[], amd integer[],
    nr numrange, tr tstzrange, dr daterange, ae integer[] NOT NULL DEFAULT '{}',
    hs hstore
);
CREATE TABLE sales.orders (id bigint PRIMARY KEY, amount numeric(10,2), placed timestamptz);
CREATE UNLOGGED TABLE scratch (id integer);
CREATE TABLE odd_names ("first name" text, id integer);
"""
INSERTS = [
    """INSERT INTO zoo VALUES (1, 7, 42, 4000000000, 5, 1.5, 2.25,
        1234.56, 0.1, 123456789012345678901234567890.0123456789, 1234.5,
        true, '\\x00ff'::bytea, 'ab', 'hé', 'line
two', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '192.168.0.1/24', '08:00:2b:01:02:03',
        B'1010', 'happy', '{"k": [1, 2.5, "x"]}', '{"b": 1, "a": null}',
        '2024-02-29', '2024-05-06 07:08:09.123456', '2024-05-06 07:08:09.5+02', '23:59:59.999999',
        '10:11:12+05:30', '1 year 2 months -3 days 04:05:06.5',
        '{1,2,3}', '{"a b",NULL,"c\\"d"}', '[1,10)', '(1.5,-2)',
        '{"a": 1, "b": {"a": 2}}',
        '{9223372036854775807}', ARRAY['a,b', '{', 'NULL', '', 'q"\\', 'é'],
        '{1.5,-0.001}', '{"2024-05-06 07:08:09.5+02"}', '{{1,2},{3,4}}',
        '(1.5,)', '[2024-01-01 02:00:00+02,2024-02-01)', '[2024-01-01,infinity]', '{7}',
        hstore(ARRAY['a', 'b c', 'q"uote', '', '=>', 'é, x'], ARRAY['1', NULL, 'back\\slash', '',
        'NULL', E'tab\\tx']))""",
    """INSERT INTO zoo VALUES (2, -32768, 9223372036854775807, 0, 1, 'NaN', '-Infinity',
        'NaN', '12345678901234567890123456789012.5', -1, -0.01,
        false, '', '', '', '', NULL, '::1', NULL,
        B'0000', 'sad', '[]', '{}',
        '0044-03-15 BC', 'infinity', '10000-01-01 00:00:00+00', '24:00:00',
        '00:00:00-12', '-2 days',
        '{}', '{}', 'empty', '(0,0)',
        '{"a": 1, "b": [{"c": 1, "c": 2}]}',
        '{-9223372036854775808,0}', ARRAY[' x', 'null'], '{999.999}', '{infinity}',
        '[0:1]={5,6}', '(,)', '[-infinity,infinity]', '[2024-01-01,2024-01-01]', '{}', '')""",
    "INSERT INTO zoo (id) VALUES (3)",
    "INSERT INTO sales.orders VALUES (1, 10.50, '2024-01-01 00:00:00+00'), (2, -3.00, NULL)",
    "INSERT INTO scratch VALUES (1)",
    "INSERT INTO odd_names VALUES ('x', 1)",
]


def _connect(database: str):  # -> psycopg2 connection
    connection = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname=database)
    connection.autocommit = True
    return connection


@pytest.fixture
def pg_database():
    name = "pgtest_" + uuid.uuid4().hex[:10]
    admin = _connect("test")
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    admin.close()
    try:
        connection = _connect(name)
        with connection.cursor() as cursor:
            cursor.execute(DDL)
            for statement in INSERTS:
                cursor.execute(statement)
        connection.close()
        yield name
    finally:
        admin = _connect("test")
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def _server_texts(database: str) -> dict[int, dict[str, str | None]]:
    """Each zoo row's values as the server writes them (the session settings of the export)."""
    connection = _connect(database)
    with connection.cursor() as cursor:
        cursor.execute(
            "SET TimeZone TO 'UTC'; SET DateStyle TO 'ISO, YMD'; SET IntervalStyle TO 'iso_8601'"
        )
        cursor.execute("SELECT * FROM zoo LIMIT 0")
        names = [c.name for c in cursor.description]
        # format('%s', …) is each type's output function (a cast would strip char's padding).
        texts = ", ".join(f"CASE WHEN {n} IS NOT NULL THEN format('%s', {n}) END" for n in names)
        cursor.execute(f"SELECT {texts} FROM zoo ORDER BY id")
        found = {int(r[0]): dict(zip(names, r, strict=True)) for r in cursor.fetchall()}
    connection.close()
    return found


def _server_json(database: str, expression: str, row_id: int) -> Any:
    """A JSON-valued expression over one zoo row, as the server computes it."""
    connection = _connect(database)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT ({expression})::text FROM zoo WHERE id = %s", (row_id,))
        [value] = cursor.fetchone()
    connection.close()
    return json.loads(value)


def test_every_type_from_the_real_server_reaches_bigquery_losslessly(
    local_cloud, aws_clients, bigquery_client, pipeline_config, pg_database, pg_dataset
) -> None:
    identifier = "pg-" + uuid.uuid4().hex[:8]
    create_postgres_source(
        aws_clients.rds,
        identifier,
        source_url=f"postgresql://postgres@127.0.0.1:5432/{pg_database}",
    )
    base = pipeline_config.rds.instances[0]
    tables = ["public.zoo", "sales.orders", "public.scratch", "public.odd_names"]
    source = RdsInstanceConfig(
        identifier=identifier,
        export_only=[f"{pg_database}.{t}" for t in tables],
        iam_role_arn=base.iam_role_arn,
        kms_key_id=base.kms_key_id,
    )
    assert source.engine_family == "postgres"
    config = config_for(pipeline_config, pg_dataset, [source])
    result = run_rds(
        config, DagsterInstance.ephemeral(), source=PostgresSource, raise_on_error=False
    )

    # Unlogged tables and tables with a space in a column name are skipped by
    # AWS: exactly their assets fail, saying so.
    failed = {
        event.step_key for event in result.all_events if event.event_type_value == "STEP_FAILURE"
    }
    prefix = f"rds_{pg_database}_public_"
    assert any("scratch" in f for f in failed) and any("odd_names" in f for f in failed)
    assert not any("zoo" in f or "orders" in f for f in failed)

    project = local_cloud.bigquery_project
    zoo = {
        r["id"]: r
        for r in rows(bigquery_client, f"SELECT * FROM `{project}.{pg_dataset}.{prefix}zoo`")
    }
    texts = _server_texts(pg_database)
    assert sorted(zoo) == [1, 2, 3]
    one, two, three = zoo[1], zoo[2], zoo[3]

    # Integers and floats, natively typed in the export.
    assert (one["si"], one["bi"], one["o"], one["pos"]) == (7, 42, 4000000000, 5)
    assert (two["si"], two["bi"]) == (-32768, 9223372036854775807)
    assert (one["r"], one["d"]) == (1.5, 2.25)
    assert math.isnan(two["r"]) and two["d"] == -math.inf
    # numeric(12,2) → NUMERIC; its NaN is kept in n__raw.
    assert one["n"] == Decimal("1234.56") and two["n"] is None and two["n__raw"] == "NaN"
    assert one["n__raw"] is None and three["n__raw"] is None
    # Unconstrained numeric with a value beyond NUMERIC: the column is exact text.
    assert (one["nu"], two["nu"]) == (texts[1]["nu"], texts[2]["nu"])
    assert isinstance(one["nwide"], str) and one["nwide"] == texts[1]["nwide"]
    assert (one["m"], two["m"]) == (Decimal("1234.50"), Decimal("-0.01"))
    assert (one["b"], two["b"]) == (True, False)
    assert (one["by"], two["by"]) == (b"\x00\xff", b"")
    # Text types as PostgreSQL returns them (char keeps its padding).
    for column in ("ch", "vc", "t", "u", "ip", "mac", "bits", "e", "tmtz", "iv", "pt"):
        assert one[column] == texts[1][column], column
        assert two[column] == texts[2][column], column
        assert three[column] is None
    assert one["ch"] == "ab   " and one["iv"].startswith("P1Y2M")
    # Arrays. NULL and {} in one column, or NULL elements: JSON arrays.
    assert (one["arr"], two["arr"], three["arr"]) == ([1, 2, 3], [], None)
    assert (one["tarr"], two["tarr"], three["tarr"]) == (["a b", None, 'c"d'], [], None)
    # One-dimensional without NULL elements: ARRAY<T> (row 3's NULL is []).
    assert (one["ai"], two["ai"], three["ai"]) == (
        [9223372036854775807],
        [-9223372036854775808, 0],
        [],
    )
    assert (one["atx"], two["atx"]) == (["a,b", "{", "NULL", "", 'q"\\', "é"], [" x", "null"])
    assert (one["an"], two["an"]) == ([Decimal("1.500"), Decimal("-0.001")], [Decimal("999.999")])
    # Never NULL, empty in rows 2 and 3: ARRAY<INT64>, its [] being PostgreSQL's {}.
    assert (one["ae"], two["ae"], three["ae"]) == ([7], [], [])
    table = f"{project}.{pg_dataset}.{prefix}zoo"
    descriptions = {f.name: f.description for f in bigquery_client.get_table(table).schema}
    assert "an empty array is an empty array of the source" in descriptions["ae"]
    assert "an empty array is a NULL of the source" in descriptions["ai"]
    # An element no TIMESTAMP holds (infinity): JSON, elements as the server's text.
    assert (one["ats"], two["ats"]) == (["2024-05-06 05:08:09.5+00"], ["infinity"])
    assert texts[1]["ats"] == '{"2024-05-06 05:08:09.5+00"}'
    # Two dimensions: JSON; a lower bound other than 1: __raw with the server's text.
    assert one["amd"] == [[1, 2], [3, 4]]
    assert two["amd"] is None and two["amd__raw"] == texts[2]["amd"] == "[0:1]={5,6}"

    # Ranges → JSON objects; an unbounded side is null, an infinity bound its text.
    def bounds(lower, upper, lower_inc, upper_inc):
        return {
            "empty": False,
            "lower": lower,
            "upper": upper,
            "lower_inc": lower_inc,
            "upper_inc": upper_inc,
        }

    empty = {"empty": True, "lower": None, "upper": None, "lower_inc": False, "upper_inc": False}
    assert (one["rng"], two["rng"], three["rng"]) == (bounds(1, 10, True, False), empty, None)
    assert (one["nr"], two["nr"]) == (
        bounds("1.5", None, False, False),
        bounds(None, None, False, False),
    )
    assert texts[1]["tr"] == '["2024-01-01 00:00:00+00","2024-02-01 00:00:00+00")'
    assert (one["tr"], two["tr"]) == (
        bounds("2024-01-01 00:00:00+00", "2024-02-01 00:00:00+00", True, False),
        bounds("-infinity", "infinity", True, True),
    )
    assert (one["dr"], two["dr"]) == (
        bounds("2024-01-01", "infinity", True, True),
        bounds("2024-01-01", "2024-01-02", True, False),  # PostgreSQL's canonical form
    )
    # json / jsonb → JSON.
    assert one["j"] == {"k": [1, 2.5, "x"]} and two["j"] == []
    assert one["jb"] == {"a": None, "b": 1} and two["jb"] == {}
    # json keeps duplicate keys, BigQuery's JSON cannot: that value → __raw, as the server wrote it.
    assert one["jd"] == {"a": 1, "b": {"a": 2}} and one["jd__raw"] is None
    assert (
        two["jd"] is None
        and two["jd__raw"] == texts[2]["jd"] == '{"a": 1, "b": [{"c": 1, "c": 2}]}'
    )
    # hstore → JSON objects {key: string or null}, as the server's own hstore_to_json().
    assert texts[1]["hs"].startswith('""=>"", "a"=>"1", "=>"=>"NULL", "b c"=>NULL')
    assert one["hs"] == _server_json(pg_database, "hstore_to_json(hs)", 1)
    assert one["hs"] == {
        "a": "1",
        "b c": None,
        'q"uote': "back\\slash",
        "": "",
        "=>": "NULL",
        "é, x": "tab\tx",
    }
    assert (two["hs"], three["hs"], texts[2]["hs"]) == ({}, None, "")
    # Dates and times: what BigQuery cannot hold goes to __raw.
    assert one["dt"] == dt.date(2024, 2, 29)
    assert two["dt"] is None and two["dt__raw"] == "0044-03-15 BC"
    assert one["ts"] == dt.datetime(2024, 5, 6, 7, 8, 9, 123456)
    assert two["ts"] is None and two["ts__raw"] == "infinity"
    assert one["tstz"] == dt.datetime(2024, 5, 6, 5, 8, 9, 500000, tzinfo=dt.UTC)
    assert two["tstz"] is None and two["tstz__raw"] == texts[2]["tstz"]
    assert one["tm"] == dt.time(23, 59, 59, 999999)
    assert two["tm"] is None and two["tm__raw"] == "24:00:00"

    # The table asset says how many values went to __raw, per column.
    [zoo_event] = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key == AssetKey(["bigquery", pg_dataset, f"{prefix}zoo"])
    ]
    metadata = zoo_event.materialization.metadata
    assert metadata["unrepresentable_values"].value == {
        "n": 1,
        "nu": 1,
        "dt": 1,
        "ts": 1,
        "tstz": 1,
        "tm": 1,
        "jd": 1,
        "arr": 1,
        "tarr": 2,
        "ats": 1,
        "amd": 2,
        "amd__raw": 1,
    }
    assert metadata["dagster/row_count"].value == 3
    orders = rows(
        bigquery_client,
        f"SELECT id, amount, placed FROM `{project}.{pg_dataset}.rds_{pg_database}_sales_orders`"
        " ORDER BY id",
    )
    assert [(r["id"], r["amount"]) for r in orders] == [(1, Decimal("10.50")), (2, Decimal("-3"))]
    assert orders[0]["placed"] == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def test_schema_drift_between_snapshots(
    local_cloud, aws_clients, bigquery_client, pipeline_config, pg_database, pg_dataset
) -> None:
    """A column added, one dropped and one retyped on the server: the next load mirrors it."""
    identifier = "pg-" + uuid.uuid4().hex[:8]
    create_postgres_source(
        aws_clients.rds,
        identifier,
        source_url=f"postgresql://postgres@127.0.0.1:5432/{pg_database}",
    )
    base = pipeline_config.rds.instances[0]
    source = RdsInstanceConfig(
        identifier=identifier,
        export_only=[f"{pg_database}.sales.orders"],
        iam_role_arn=base.iam_role_arn,
        kms_key_id=base.kms_key_id,
    )
    config = config_for(pipeline_config, pg_dataset, [source])
    table = f"{local_cloud.bigquery_project}.{pg_dataset}.rds_{pg_database}_sales_orders"
    run_rds(config, DagsterInstance.ephemeral(), source=PostgresSource)
    first = {f.name: f.field_type for f in bigquery_client.get_table(table).schema}
    assert first["amount"] == "NUMERIC" and "note" not in first

    connection = _connect(pg_database)
    with connection.cursor() as cursor:
        cursor.execute(
            "ALTER TABLE sales.orders ADD COLUMN note text; "
            "ALTER TABLE sales.orders DROP COLUMN placed; "
            "ALTER TABLE sales.orders ALTER COLUMN amount TYPE numeric(50,10); "
            "UPDATE sales.orders SET note = 'n' || id"
        )
    connection.close()
    take_automated_snapshot(aws_clients.rds, identifier)
    second = run_rds(config, DagsterInstance.ephemeral(), source=PostgresSource)
    schema = {f.name: f.field_type for f in bigquery_client.get_table(table).schema}
    assert "placed" not in schema and schema["note"] == "STRING"
    assert schema["amount"] == "STRING"  # numeric(50,10) is beyond NUMERIC: exact text
    found = rows(bigquery_client, f"SELECT id, amount, note FROM `{table}` ORDER BY id")
    assert [(r["amount"], r["note"]) for r in found] == [
        ("10.5000000000", "n1"),
        ("-3.0000000000", "n2"),
    ]
    [event] = [
        e
        for e in second.get_asset_materialization_events()
        if e.asset_key.path[-1] == f"rds_{pg_database}_sales_orders"
    ]
    assert event.materialization.metadata["columns_removed"].value == ["placed"]
