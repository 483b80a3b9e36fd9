"""The demo instance end to end: snapshot → export → BigQuery, then new data and again.

One session-scoped run of the demo graph (an export costs seconds even
locally) feeds several tests: exact values of every MySQL type, metadata,
the row-count check, the reuse of a finished export, the reload path, and a
second snapshot after a day of changes (inserts, updates, deletes).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import math
import struct
import uuid
from decimal import Decimal
from typing import Any

import pytest
from dagster import AssetKey, DagsterInstance

from export_pipeline.environment import LOCAL_DEMO_HASH_KEY
from export_pipeline.local_cloud import demo_rds
from export_pipeline.local_cloud.clients import AwsClients
from export_pipeline.local_cloud.rds_client import live_store
from export_pipeline_tests.support.rds import config_for, run_rds

EXPORT_KEY = AssetKey(["rds", "shopdb_snapshot_export"])


def _metadata(result, key: AssetKey) -> dict[str, Any]:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _rows(bigquery_client, table_id: str, order_by: str = "id") -> list[dict[str, Any]]:
    return [
        dict(r)
        for r in bigquery_client.query(f"SELECT * FROM `{table_id}` ORDER BY {order_by}").result()
    ]


@pytest.fixture(scope="module")
def demo_run(local_cloud, pipeline_config, bigquery_client):
    """The demo graph materialized once into a dataset of this module's own."""
    dataset = "rds_e2e_" + uuid.uuid4().hex[:8]
    bigquery_client.create_dataset(f"{local_cloud.bigquery_project}.{dataset}")
    config = config_for(pipeline_config, dataset)
    instance = DagsterInstance.ephemeral()
    result = run_rds(config, instance)
    yield config, instance, result, dataset
    bigquery_client.delete_dataset(
        f"{local_cloud.bigquery_project}.{dataset}", delete_contents=True, not_found_ok=True
    )


def _table(local_cloud, dataset: str, name: str) -> str:
    return f"{local_cloud.bigquery_project}.{dataset}.{name}"


def test_export_asset_metadata(demo_run):
    _, _, result, _ = demo_run
    assert result.success
    export = _metadata(result, EXPORT_KEY)
    assert export["snapshot_identifier"].startswith("rds:shopdb-")
    assert export["export_task_identifier"].startswith("rds-shopdb-")
    assert export["status"] == "COMPLETE"
    assert export["skipped_tables"] == []
    assert export["s3_uri"].endswith(f"/{export['export_task_identifier']}/")


def test_row_counts_and_checks(demo_run, local_cloud, bigquery_client, pipeline_config):
    _, _, result, dataset = demo_run
    checks = {
        c.asset_key.path[-1]: c
        for c in result.get_asset_check_evaluations()
        if c.check_name == "row_count_matches_export"
    }
    assert set(checks) == {"rds_shop_customers", "rds_shop_orders", "rds_shop_type_zoo"}
    assert all(c.passed for c in checks.values())
    for table in ("customers", "orders", "type_zoo"):
        meta = _metadata(result, AssetKey(["bigquery", dataset, f"rds_shop_{table}"]))
        table_id = _table(local_cloud, dataset, f"rds_shop_{table}")
        query = bigquery_client.query(f"SELECT COUNT(*) AS n FROM `{table_id}`")
        counted = next(iter(query.result()))["n"]
        assert meta["dagster/row_count"] == counted
        assert checks[f"rds_shop_{table}"].metadata["expected_rows"].value == counted


def _float32(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]


def _bits(value: int | None, width: int) -> bytes | None:
    return None if value is None else value.to_bytes((width + 7) // 8, "big")


def _expected_type_zoo(row: dict[str, Any]) -> dict[str, Any]:
    """MySQL's meaning of a type_zoo row, in BigQuery's Python values (written independently)."""
    get = row.get
    expected: dict[str, Any] = {"id": row["id"]}
    integers = ["c_tinyint", "c_tinyint_u", "c_smallint", "c_smallint_u", "c_mediumint"]
    integers += ["c_mediumint_u", "c_int", "c_int_u", "c_bigint", "c_year"]
    for name in integers:
        expected[name] = get(name)
    expected["c_bigint_u"] = None if get("c_bigint_u") is None else Decimal(get("c_bigint_u"))
    for name in ("c_decimal_10_2", "c_decimal_38_9"):
        expected[name] = None if get(name) is None else Decimal(get(name))
    expected["c_decimal_65_30"] = get("c_decimal_65_30")  # exact text
    expected["c_float"] = None if get("c_float") is None else _float32(get("c_float"))
    expected["c_double"] = get("c_double")
    expected["c_bit1"] = _bits(get("c_bit1"), 1)
    expected["c_bit12"] = _bits(get("c_bit12"), 12)
    expected["c_bit64"] = _bits(get("c_bit64"), 64)
    expected["c_char"] = None if get("c_char") is None else get("c_char").rstrip(" ")
    for name in ["c_varchar", "c_tinytext", "c_text", "c_mediumtext", "c_longtext", "c_enum"]:
        expected[name] = get(name)
    members = None if get("c_set") is None else set(filter(None, get("c_set").split(",")))
    # MySQL returns a SET's members in definition order.
    expected["c_set"] = (
        None if members is None else ",".join(m for m in ("red", "green", "blue") if m in members)
    )
    expected["c_json"] = None if get("c_json") is None else json.loads(get("c_json"))
    binary = get("c_binary")
    expected["c_binary"] = None if binary is None else binary.ljust(4, b"\x00")
    byte_columns = ["c_varbinary", "c_tinyblob", "c_blob", "c_mediumblob", "c_longblob"]
    for name in [*byte_columns, "c_geometry", "c_point"]:
        expected[name] = get(name)
    date = get("c_date")
    valid_date = date is not None and not date.startswith("0000")
    expected["c_date"] = dt.date.fromisoformat(date) if valid_date else None
    expected["c_date__raw"] = date if date is not None and not valid_date else None
    for name in ("c_datetime", "c_datetime6"):
        text = get(name)
        # Zero datetimes arrive as NULL from the export (no TIMESTAMP_MICROS form).
        expected[name] = (
            None if text is None or text.startswith("0000") else dt.datetime.fromisoformat(text)
        )
    ts = get("c_timestamp")
    expected["c_timestamp"] = (
        None if ts is None else dt.datetime.fromisoformat(ts).replace(tzinfo=dt.UTC)
    )
    # Some TIME values lie outside a day, so both TIME columns are MySQL's exact text.
    expected["c_time"] = get("c_time")
    expected["c_time6"] = get("c_time6")
    return expected


def test_demo_customers_hold_no_name_and_email_hashed_with_the_demo_key(
    demo_run, local_cloud, bigquery_client, pipeline_config
):
    """pipeline.yaml: shop.customers `columns: {email: hash, name: exclude}`."""
    _, _, _, dataset = demo_run
    table_id = _table(local_cloud, dataset, "rds_shop_customers")
    schema = {f.name: f.field_type for f in bigquery_client.get_table(table_id).schema}
    assert "name" not in schema and schema["email"] == "STRING"
    store = live_store(local_cloud.state_dir, pipeline_config.aws.region, "shopdb")
    source = {int(r["id"]): r for r in store.read_all("shop", "customers")}
    key = LOCAL_DEMO_HASH_KEY.encode()
    for row in _rows(bigquery_client, table_id):
        email = source[row["id"]]["email"]
        want = None if email is None else hmac.new(key, email.encode(), hashlib.sha256).hexdigest()
        assert row["email"] == want, row["id"]
    # No plaintext e-mail or name in any table of the dataset.
    emails = {r["email"] for r in source.values() if r["email"]}
    names = {r["name"] for r in source.values() if r["name"]}
    for table in bigquery_client.list_tables(f"{local_cloud.bigquery_project}.{dataset}"):
        name = f"{local_cloud.bigquery_project}.{dataset}.{table.table_id}"
        for row in bigquery_client.query(f"SELECT * FROM `{name}`").result():
            texts = {v for v in row.values() if isinstance(v, str)}
            assert not texts & emails and not texts & names, name


def test_every_mysql_type_has_its_exact_value(demo_run, local_cloud, bigquery_client):
    _, _, result, dataset = demo_run
    rows = _rows(bigquery_client, _table(local_cloud, dataset, "rds_shop_type_zoo"))
    snapshot_time = _metadata(result, EXPORT_KEY)["snapshot_time"]
    source = demo_rds.type_zoo_rows()
    assert [r["id"] for r in rows] == [r["id"] for r in source]
    for got, row in zip(rows, source, strict=True):
        want = _expected_type_zoo(row)
        for name, value in want.items():
            assert got[name] == value or (
                isinstance(value, float) and math.isclose(got[name], value, rel_tol=0)
            ), f"row {row['id']} column {name}: {got[name]!r} != {value!r}"
        assert got["_exported_at"].timestamp() == pytest.approx(snapshot_time, abs=1e-3)
    schema = {
        f.name: f.field_type
        for f in bigquery_client.get_table(_table(local_cloud, dataset, "rds_shop_type_zoo")).schema
    }
    assert schema["c_bigint_u"] == "NUMERIC"
    assert schema["c_decimal_38_9"] == "NUMERIC"
    assert schema["c_decimal_65_30"] == "STRING"
    assert schema["c_date"] == "DATE"
    assert schema["c_datetime6"] == "DATETIME"
    assert schema["c_timestamp"] == "TIMESTAMP"
    assert schema["c_time"] == "STRING"
    unrepresentable = _metadata(result, AssetKey(["bigquery", dataset, "rds_shop_type_zoo"]))[
        "unrepresentable_values"
    ]
    assert unrepresentable["c_date"] == 1


def test_rerun_reuses_the_finished_export(demo_run):
    config, instance, result, _ = demo_run
    first = _metadata(result, EXPORT_KEY)
    again = run_rds(config, instance, selection=[EXPORT_KEY])
    meta = _metadata(again, EXPORT_KEY)
    assert meta["export_task_identifier"] == first["export_task_identifier"]
    assert meta["export_reused"] is True
    assert first["export_reused"] is False


def test_table_asset_alone_uses_the_latest_export_and_the_reload_path(
    demo_run, local_cloud, bigquery_client
):
    config, instance, result, dataset = demo_run
    key = AssetKey(["bigquery", dataset, "rds_shop_orders"])
    export_id = _metadata(result, EXPORT_KEY)["export_task_identifier"]
    table_id = _table(local_cloud, dataset, "rds_shop_orders")
    before = _rows(bigquery_client, table_id)
    bigquery_client.query(f"DELETE FROM `{table_id}` WHERE id <= 10").result()

    # (2) no run config: the export asset's latest materialization is used.
    latest = run_rds(config, instance, selection=[key])
    assert _metadata(latest, key)["export_task_identifier"] == export_id
    assert _rows(bigquery_client, table_id) == before

    # (1) reload path: a named export, loaded again with no new export started.
    bigquery_client.query(f"DELETE FROM `{table_id}` WHERE id <= 10").result()
    fresh = DagsterInstance.ephemeral()  # knows no materialization at all
    reload = run_rds(
        config,
        fresh,
        selection=[key],
        run_config={
            "ops": {key.to_python_identifier(): {"config": {"export_task_identifier": export_id}}}
        },
    )
    assert _metadata(reload, key)["export_task_identifier"] == export_id
    assert _rows(bigquery_client, table_id) == before

    # Without either, the asset says what to do.
    failed = run_rds(config, DagsterInstance.ephemeral(), selection=[key], raise_on_error=False)
    assert not failed.success
    message = str(failed.get_step_failure_events()[0].event_specific_data.error)
    assert "export_task_identifier" in message


@pytest.fixture
def private_shop(local_cloud, pipeline_config, rds_dataset):
    """A DB instance of this test's own, seeded by the demo code (so mutate touches only it)."""
    demo = pipeline_config.rds.instances[0]
    # Orders only: it gets inserts, updates and deletes (and keeps the test short).
    source = demo.model_copy(
        update={
            "identifier": "shop" + uuid.uuid4().hex[:8],
            "export_only": ["shop.orders"],
            "tables": {},  # the demo's settings are for shop.customers
        }
    )
    config = config_for(pipeline_config, rds_dataset, [source])
    clients = AwsClients.for_config(local_cloud, config)
    demo_rds.seed(clients, config, local_cloud)
    return config, clients


def test_new_snapshot_after_changes_makes_bigquery_match_the_source(
    private_shop, local_cloud, bigquery_client
):
    config, clients = private_shop
    source = config.rds.instances[0]
    instance = DagsterInstance.ephemeral()
    first = run_rds(config, instance)
    export_key = AssetKey(["rds", f"{source.identifier}_snapshot_export"])
    first_id = _metadata(first, export_key)["export_task_identifier"]

    summary = demo_rds.mutate(clients, config, local_cloud, seed=7)[source.identifier]
    assert summary["tables"]["orders"]["deleted"] > 0
    second = run_rds(config, instance)
    second_meta = _metadata(second, export_key)
    assert second_meta["snapshot_identifier"] == summary["snapshot"]
    assert second_meta["export_task_identifier"] != first_id

    store = live_store(local_cloud.state_dir, config.aws.region, source.identifier)
    expected = {int(r["id"]): r for r in store.read_all("shop", "orders")}
    table_id = _table(local_cloud, config.bigquery.dataset, "rds_shop_orders")
    got = {r["id"]: r for r in _rows(bigquery_client, table_id)}
    assert set(got) == set(expected)  # inserts and deletes
    for key, row in expected.items():  # updates
        want = None if row["amount"] is None else Decimal(str(row["amount"]))
        assert (got[key]["amount"], got[key]["status"]) == (want, row["status"]), key
