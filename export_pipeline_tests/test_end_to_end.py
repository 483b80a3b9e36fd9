"""The README's demo, end to end: run, change the sources, run again, BigQuery matches.

This runs the shipped definitions (`build_definitions` on the shipped
`pipeline.yaml`) against a private local cloud of its own, because
`local mutate` changes the demo sources that other tests read. It checks what
the issues promise for the demo: after a first run every demo table is in
BigQuery; after `mutate` (creates, updates, deletes in DynamoDB and in the
RDS instance, plus a new automated snapshot) a second run makes BigQuery equal
the sources again, deletes included.
"""

from __future__ import annotations

import hashlib
import hmac
from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.types import TypeDeserializer

from export_pipeline.config import DEFAULT_CONFIG_PATH, PipelineConfig, load_config
from export_pipeline.environment import LOCAL_DEMO_HASH_KEY
from export_pipeline.local_cloud import control
from export_pipeline.local_cloud.clients import AwsClients
from export_pipeline.local_cloud.rds_client import live_store
from export_pipeline.local_cloud.settings import (
    AWS_PORT_ENV,
    BIGQUERY_GRPC_PORT_ENV,
    BIGQUERY_PORT_ENV,
    GCS_PORT_ENV,
    STATE_DIR_ENV,
    STORAGE_TRANSFER_PORT_ENV,
    LocalCloudSettings,
)
from export_pipeline_tests.support.local_cloud import fresh_local_cloud_settings
from export_pipeline_tests.support.principals import pipeline_definitions


@pytest.fixture(scope="module")
def demo_cloud(tmp_path_factory: pytest.TempPathFactory):
    """A private cloud seeded with the demo, with the environment pointing at it."""
    settings = fresh_local_cloud_settings(tmp_path_factory.mktemp("demo_cloud"))
    config = load_config(DEFAULT_CONFIG_PATH)
    patch = pytest.MonkeyPatch()
    patch.setenv(STATE_DIR_ENV, str(settings.state_dir))
    patch.setenv(AWS_PORT_ENV, str(settings.aws_port))
    patch.setenv(BIGQUERY_PORT_ENV, str(settings.bigquery_port))
    patch.setenv(BIGQUERY_GRPC_PORT_ENV, str(settings.bigquery_grpc_port))
    patch.setenv(GCS_PORT_ENV, str(settings.gcs_port))
    patch.setenv(STORAGE_TRANSFER_PORT_ENV, str(settings.storage_transfer_port))
    patch.setenv("EXPORT_PIPELINE_CONFIG", str(DEFAULT_CONFIG_PATH))
    control.up(settings, config)
    try:
        yield settings, config
    finally:
        control.down(settings)
        patch.undo()


def _run_everything(config: PipelineConfig) -> tuple[list[Any], set[str]]:
    """Run the main job; the checks that did not pass, and the keys of the steps that ran."""
    job = pipeline_definitions(config).resolve_job_def("aws_to_bigquery")
    result = job.execute_in_process()
    assert result.success
    failed = [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and not e.asset_check_evaluation_data.passed
    ]
    return failed, {e.step_key for e in result.all_events if e.is_step_success and e.step_key}


def _assert_loaded_through_gcs(settings: LocalCloudSettings, config: PipelineConfig) -> None:
    """Every table went through GCS: BigQuery's load jobs all read gs:// URIs, none is left.

    A media upload through the worker is a load job without source URIs; the
    local BigQuery's job list records both kinds.
    """
    assert config.gcs is not None
    client = control.bigquery_client(settings)
    try:
        loads = [j for j in client.list_jobs(all_users=True) if j.job_type == "load"]
        tables = [t.table_id for t in client.list_tables(config.bigquery.dataset)]
    finally:
        client.close()
    assert loads
    for job in loads:
        assert job.source_uris, f"load job {job.job_id} into {job.destination} was a media upload"
        prefix = f"gs://{config.gcs.staging_bucket}/{config.gcs.staging_prefix}/"
        assert all(uri.startswith(prefix) for uri in job.source_uris), job.source_uris
    staged_into = {j.destination.table_id.rsplit("_", 1)[0] for j in loads}
    demo_tables = [t for t in tables if t.startswith(("dynamodb_", "rds_"))]
    demo_tables = [t for t in demo_tables if not t.endswith("_history")]
    assert demo_tables and {f"_staging_{t}" for t in demo_tables} <= staged_into
    # rds.transfer: storage_transfer: the exports' own files, copied by Storage Transfer.
    transferred = {
        uri.split("/rds-transfer/", 1)[1].split("/")[2]
        for job in loads
        for uri in job.source_uris
        if "/rds-transfer/" in uri
    }
    assert {"shop.orders", "shop.type_zoo"} <= transferred, transferred
    storage = control.gcs_client(settings)
    try:
        left = list(storage.list_blobs(config.gcs.staging_bucket))
    finally:
        storage.close()
    assert left == [], [b.name for b in left]  # deleted after each table was published


def _bigquery_rows(
    settings: LocalCloudSettings, config: PipelineConfig, table: str, *, deleted: bool = False
) -> list[dict]:
    """The rows of `table` the source holds (`deleted`: those kept as deleted, `deletes: soft`)."""
    client = control.bigquery_client(settings)
    try:
        sql = f"SELECT * FROM `{settings.bigquery_project}.{config.bigquery.dataset}.{table}`"
        rows = [dict(row.items()) for row in client.query(sql).result()]
        return [r for r in rows if (r.get("_deleted_at") is not None) == deleted]
    finally:
        client.close()


def _dynamodb_items(clients: AwsClients, table: str) -> list[dict[str, Any]]:
    deserialize = TypeDeserializer().deserialize
    items: list[dict[str, Any]] = []
    for page in clients.dynamodb.get_paginator("scan").paginate(TableName=table):
        items += [{k: deserialize(v) for k, v in item.items()} for item in page["Items"]]
    return items


def _assert_dynamodb_matches(
    settings: LocalCloudSettings, config: PipelineConfig, table: str, keys: list[str]
) -> None:
    clients = AwsClients.for_config(settings, config)
    source = {tuple(item[k] for k in keys): item for item in _dynamodb_items(clients, table)}
    loaded = {
        tuple(row[k] for k in keys): row
        for row in _bigquery_rows(settings, config, f"dynamodb_{table.lower()}")
    }
    assert len(loaded) == len(_bigquery_rows(settings, config, f"dynamodb_{table.lower()}"))
    assert sorted(loaded) == sorted(source)
    # Every plain string and integer attribute arrives unchanged (the type
    # mapping's own tests cover every other type with edge values).
    excluded = next(t for t in config.dynamodb.tables if t.name == table).excluded_columns
    for key, item in source.items():
        row = loaded[key]
        assert not set(excluded) & set(row), (table, key)  # pipeline.yaml's `exclude`
        for name, value in item.items():
            if name in row and isinstance(value, str) and isinstance(row[name], str):
                assert row[name] == value, (table, key, name)
            if name in row and isinstance(value, Decimal) and isinstance(row[name], int):
                assert Decimal(row[name]) == value, (table, key, name)


def _demo_hash(value: str | None) -> str | None:
    if value is None:
        return None
    return hmac.new(LOCAL_DEMO_HASH_KEY.encode(), value.encode(), hashlib.sha256).hexdigest()


def _assert_rds_matches(settings: LocalCloudSettings, config: PipelineConfig, table: str) -> None:
    store = live_store(settings.state_dir, config.aws.region, "shopdb")
    source = {int(row["id"]): row for row in store.read_all("shop", table)}
    loaded = {row["id"]: row for row in _bigquery_rows(settings, config, f"rds_shop_{table}")}
    assert sorted(loaded) == sorted(source)
    for key, row in source.items():
        if table == "customers":
            # pipeline.yaml: `name` excluded, `email` hashed with the demo's key.
            assert "name" not in loaded[key]
            assert loaded[key]["email"] == _demo_hash(row["email"]), key
        else:
            assert loaded[key]["customer_id"] is not None
        if table == "orders" and row["amount"] is not None:
            assert loaded[key]["amount"] == Decimal(row["amount"]), key


def test_demo_run_mutate_run_keeps_bigquery_equal_to_the_sources(demo_cloud) -> None:
    settings, config = demo_cloud
    failed, steps = _run_everything(config)
    assert failed == []
    _assert_loaded_through_gcs(settings, config)
    # The Orders full export (4 data files, dynamodb.files_per_step 2) converts in steps.
    for op in ("learn", "convert"):
        mapped = [s for s in steps if f"dynamodb_orders__{op}[group_" in s]
        assert len(mapped) >= 2, sorted(steps)
    _assert_dynamodb_matches(settings, config, "Orders", ["customerId", "orderId"])
    _assert_dynamodb_matches(settings, config, "Products", ["sku"])
    for table in ("customers", "orders"):
        _assert_rds_matches(settings, config, table)
    orders_before = len(_bigquery_rows(settings, config, "dynamodb_orders"))

    changes = control.mutate(settings, config, seed=11)
    assert changes["dynamodb"]["Orders"]["deleted"] > 0
    assert changes["rds"]["shopdb"]["tables"]["orders"]["deleted"] > 0

    warned, _steps = _run_everything(config)
    _assert_loaded_through_gcs(settings, config)
    # `mutate` sets a new attribute, updatedAt, on DynamoDB items: the schema check warns
    # (WARN, the run succeeds) on both DynamoDB tables, and no other check fails.
    assert sorted(w.asset_key.path[-1] for w in warned) == ["dynamodb_orders", "dynamodb_products"]
    for warning in warned:
        assert warning.check_name == "schema_unchanged", warning
        assert warning.severity.value == "WARN" and "added updatedAt" in warning.description
    _assert_dynamodb_matches(settings, config, "Orders", ["customerId", "orderId"])
    _assert_dynamodb_matches(settings, config, "Products", ["sku"])
    for table in ("customers", "orders"):
        _assert_rds_matches(settings, config, table)
    created, deleted = (changes["dynamodb"]["Orders"][k] for k in ("created", "deleted"))
    assert len(_bigquery_rows(settings, config, "dynamodb_orders")) == (
        orders_before + created - deleted
    )
    # Orders has `deletes: soft` in the demo: the deleted items are still there, dated.
    kept = _bigquery_rows(settings, config, "dynamodb_orders", deleted=True)
    assert len(kept) == deleted
    assert all(row["_deleted_at"] is not None for row in kept)
