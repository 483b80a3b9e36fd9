"""The embedded PostgreSQL demo (Aurora PostgreSQL cluster `appdb`, no server needed).

Its text forms are checked against the real PostgreSQL server, value by value,
so the embedded source cannot drift from what PostgreSQL writes; then the demo
cluster runs through the pipeline: types, row counts, the reload path by
export task id, and a second snapshot with new rows.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import uuid
from decimal import Decimal
from typing import Any

import psycopg2
import pytest
from dagster import AssetKey, DagsterInstance

from export_pipeline.local_cloud import demo_postgres
from export_pipeline.local_cloud.postgres_store import PgColumn
from export_pipeline.local_cloud.rds_client import live_pg_store, take_automated_snapshot
from export_pipeline.postgres.source import PostgresSource
from export_pipeline_tests.support.bigquery import rows
from export_pipeline_tests.support.rds import config_for, run_rds

EXPORT_KEY = AssetKey(["rds", "appdb_snapshot_export"])


def _metadata(result, key: AssetKey) -> dict[str, Any]:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_demo_text_forms_are_postgresqls_own() -> None:
    """Every text value of the demo's type_zoo is what the server outputs for it."""
    connection = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test")
    checked = 0
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SET TimeZone TO 'UTC'; SET DateStyle TO 'ISO, YMD'; "
                "SET IntervalStyle TO 'iso_8601'; "
                "CREATE TYPE order_status AS ENUM ('new', 'paid', 'shipped'); "
                "CREATE EXTENSION IF NOT EXISTS hstore"
            )
            for name, pg_type, *values in demo_postgres.TYPE_ZOO:
                if PgColumn(name, pg_type).storage != "text":
                    continue  # written natively, not as text
                for value in values:
                    cursor.execute(f"SELECT format('%%s', %s::{pg_type})", (value,))
                    assert cursor.fetchone()[0] == value, (name, pg_type, value)
                    checked += 1
    finally:
        connection.rollback()
        connection.close()
    assert checked >= 40


@pytest.fixture(scope="module")
def demo_run(local_cloud, pipeline_config, bigquery_client):
    """The demo's PostgreSQL source materialized once into a dataset of this module's own."""
    dataset = "pg_demo_" + uuid.uuid4().hex[:8]
    bigquery_client.create_dataset(f"{local_cloud.bigquery_project}.{dataset}")
    config = config_for(pipeline_config, dataset)
    instance = DagsterInstance.ephemeral()
    result = run_rds(config, instance, source=PostgresSource)
    yield config, instance, result, dataset
    bigquery_client.delete_dataset(
        f"{local_cloud.bigquery_project}.{dataset}", delete_contents=True, not_found_ok=True
    )


def test_aurora_postgresql_cluster_exports_with_its_engine(demo_run) -> None:
    _config, _instance, result, dataset = demo_run
    export = _metadata(result, EXPORT_KEY)
    assert export["engine"] == "aurora-postgresql"
    assert export["source"] == "cluster:appdb"
    keys = {e.asset_key for e in result.get_asset_materialization_events()}
    assert {
        AssetKey(["bigquery", dataset, name])
        for name in ("rds_app_public_accounts", "rds_app_public_type_zoo", "rds_app_sales_orders")
    } <= keys
    # The MySQL demo instance is not this source's.
    assert not any("shop" in "/".join(k.path) for k in keys)


def test_embedded_type_zoo_in_bigquery(demo_run, local_cloud, bigquery_client) -> None:
    _config, _instance, result, dataset = demo_run
    table = f"{local_cloud.bigquery_project}.{dataset}.rds_app_public_type_zoo"
    zoo = {r["id"]: r for r in rows(bigquery_client, f"SELECT * FROM `{table}`")}
    one, two, three = zoo[1], zoo[2], zoo[3]
    assert (one["si"], one["i"], one["bi"], one["o"]) == (7, 2147483647, 42, 4000000000)
    assert (two["si"], two["i"], two["bi"]) == (-32768, -2147483648, 9223372036854775807)
    assert math.isnan(two["r"]) and two["d"] == -math.inf
    assert one["n"] == Decimal("1234.56") and two["n__raw"] == "NaN" and two["n"] is None
    assert (one["nu"], two["nu"]) == ("0.1", "12345678901234567890123456789012.5")
    assert one["nwide"] == "123456789012345678901234567890.0123456789"
    assert (one["m"], two["m"]) == (Decimal("1234.5"), Decimal("-0.01"))
    assert (one["by"], two["by"], one["b"]) == (b"\x00\xff", b"", True)
    assert (one["ch"], two["ch"]) == ("ab   ", "     ")
    assert one["j"] == {"k": [1, 2.5, "x"]} and one["jb"] == {"a": None, "b": 1}
    assert one["jdup"] == {"a": 1, "b": {"a": 2}} and one["jdup__raw"] is None
    assert two["jdup"] is None and two["jdup__raw"] == '{"a": 1, "b": {"c": 1, "c": 2}}'
    # hstore → a JSON object of strings and nulls; the empty hstore ('') → {}.
    assert one["hs"] == {
        "": "",
        "a": "1",
        "=>": "NULL",
        "b c": None,
        "é, x": "tab\tx",
        'q"uote': "back\\slash",
    }
    assert two["hs"] == {} and "hs__raw" not in one
    assert one["dt"] == dt.date(2024, 2, 29) and two["dt__raw"] == "0044-03-15 BC"
    assert two["ts__raw"] == "infinity" and two["tm__raw"] == "24:00:00"
    assert one["tstz"] == dt.datetime(2024, 5, 6, 5, 8, 9, 500000, tzinfo=dt.UTC)
    assert one["iv"] == "P1Y2M-3DT4H5M6.5S"
    # Ranges → JSON objects (unbounded: null; an infinity bound: its text).
    flags = {"lower_inc": True, "upper_inc": False}
    assert one["rng"] == {"empty": False, "lower": 1, "upper": 10, **flags}
    assert two["rng"] == {"empty": True, "lower": None, "upper": None, **flags, "lower_inc": False}
    assert one["nr"]["lower"] == "1.5" and one["nr"]["upper"] is None
    assert two["nr"] == {
        "empty": False,
        "lower": None,
        "upper": None,
        "lower_inc": False,
        "upper_inc": False,
    }
    assert one["tsr"] == {
        "empty": False,
        "lower": "2024-01-01 00:00:00+00",
        "upper": "2024-02-01 00:00:00+00",
        **flags,
    }
    assert (two["tsr"]["lower"], two["tsr"]["upper"]) == ("-infinity", "infinity")
    # Arrays. NULL (row 3) and {} in one column, or a NULL element: JSON arrays.
    assert (one["arr"], two["arr"], three["arr"]) == ([1, 2, 3], [], None)
    assert (one["tarr"], two["tarr"], three["tarr"]) == (["a b", None, 'c"d'], [], None)
    # One-dimensional without NULL elements: ARRAY<T>; row 3's NULL is [] (no {} in the column).
    assert (one["ai"], two["ai"], three["ai"]) == ([1, 2, 3], [-2147483648, 2147483647], [])
    assert one["atext"] == ["a b", 'c"d', "back\\slash", "NULL", "é", "{x}", "日本"]
    assert two["atext"] == ["", ",", "tab\tx"]
    # NUMERIC elements keep all 9 decimals (bqemulator's bare NUMERIC would keep 3).
    assert one["anum"] == [Decimal("0.123456789"), Decimal("-2.25")]
    assert two["anum"] == [Decimal("99999999999.999999999")]
    assert (one["abool"], two["abool"]) == ([True, False], [False])
    assert (one["abox"], two["abox"]) == (["(1,1),(0,0)", "(3,3),(2,2)"], ["(0,0),(0,0)"])
    # An element that is no DATE (infinity): the column is JSON, elements as PostgreSQL's text.
    assert (one["adate"], two["adate"]) == (["2024-02-29"], ["infinity"])
    # Two dimensions: JSON; a lower bound other than 1: __raw.
    assert one["amd"] == [[1, 2], [3, 4]] and one["amd__raw"] is None
    assert two["amd"] is None and two["amd__raw"] == "[0:1]={5,6}"
    repeated = {"ai", "atext", "anum", "abool", "abox"}
    assert all(three[k] == [] for k in repeated)
    assert all(v is None for k, v in three.items() if k not in ("id", "_exported_at", *repeated))
    schema = {f.name: f for f in bigquery_client.get_table(table).schema}
    assert {k: (schema[k].field_type, schema[k].mode) for k in sorted(repeated)} == {
        "abool": ("BOOLEAN", "REPEATED"),
        "abox": ("STRING", "REPEATED"),
        "ai": ("INTEGER", "REPEATED"),
        "anum": ("NUMERIC", "REPEATED"),
        "atext": ("STRING", "REPEATED"),
    }
    assert "an empty array is a NULL of the source" in schema["ai"].description
    assert "JSON because 1 value(s) do not fit ARRAY<DATE>" in schema["adate"].description
    meta = _metadata(result, AssetKey(["bigquery", dataset, "rds_app_public_type_zoo"]))
    assert meta["unrepresentable_values"] == {
        "n": 1,
        "nu": 1,
        "dt": 1,
        "ts": 1,
        "tstz": 1,
        "tm": 1,
        "jdup": 1,
        "arr": 1,  # the empty array, in a column with NULLs
        "tarr": 2,  # one with a NULL element, one empty array
        "adate": 1,
        "amd": 2,
        "amd__raw": 1,
    }


def test_reload_by_export_task_identifier(demo_run, local_cloud, bigquery_client) -> None:
    config, _instance, result, dataset = demo_run
    key = AssetKey(["bigquery", dataset, "rds_app_sales_orders"])
    export_id = _metadata(result, EXPORT_KEY)["export_task_identifier"]
    table = f"{local_cloud.bigquery_project}.{dataset}.rds_app_sales_orders"
    before = rows(bigquery_client, f"SELECT * FROM `{table}` ORDER BY id")
    assert len(before) == _metadata(result, key)["dagster/row_count"]
    bigquery_client.query(f"DELETE FROM `{table}` WHERE id <= 10").result()
    reload = run_rds(
        config,
        DagsterInstance.ephemeral(),  # knows no materialization at all
        selection=[key],
        run_config={
            "ops": {key.to_python_identifier(): {"config": {"export_task_identifier": export_id}}}
        },
        source=PostgresSource,
    )
    assert _metadata(reload, key)["export_task_identifier"] == export_id
    assert rows(bigquery_client, f"SELECT * FROM `{table}` ORDER BY id") == before


def test_new_snapshot_brings_new_rows(
    local_cloud, aws_clients, pipeline_config, pg_dataset, bigquery_client
) -> None:
    """A cluster of this test's own, seeded by the demo code, then a day of new orders."""
    demo = next(i for i in pipeline_config.rds.instances if i.engine_family == "postgres")
    identifier = "pg-" + uuid.uuid4().hex[:8]
    source = demo.model_copy(update={"identifier": identifier, "export_only": ["app.sales.orders"]})
    store = live_pg_store(local_cloud.state_dir, pipeline_config.aws.region, identifier, "cluster")
    demo_postgres.seed_store(store)
    from export_pipeline.local_cloud.rds_client import create_postgres_source

    create_postgres_source(aws_clients.rds, identifier, kind="cluster")
    config = config_for(pipeline_config, pg_dataset, [source])
    table = f"{local_cloud.bigquery_project}.{pg_dataset}.rds_app_sales_orders"
    run_rds(config, DagsterInstance.ephemeral(), source=PostgresSource)
    first = rows(bigquery_client, f"SELECT COUNT(*) AS n FROM `{table}`")[0]["n"]
    assert first == demo_postgres.ORDER_COUNT

    added = demo_postgres.mutate_store(store, random.Random(7))["orders"]["inserted"]
    take_automated_snapshot(aws_clients.rds, identifier, "cluster")
    run_rds(config, DagsterInstance.ephemeral(), source=PostgresSource)
    second = rows(bigquery_client, f"SELECT COUNT(*) AS n FROM `{table}`")[0]["n"]
    assert added > 0 and second == first + added
