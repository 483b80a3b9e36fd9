"""What only real BigQuery enforces is checked in the requests the client sends.

bqemulator accepts but does not keep CMEK, policy tags, require_partition_filter
or integer-range partitioning, so reading the table back cannot show them.
These tests put a recording HTTP proxy (`faults.proxy`, every rule-free
request forwarded unchanged) between the client and bqemulator and check
the request bodies: the table resources, the load jobs and the query jobs
carry the key, the policy tags and the layout.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery
from google.cloud.bigquery import SchemaField

from export_pipeline.bigquery.layout import TableLayout
from export_pipeline.bigquery.publish import SelectColumn, merge_changes, replace_table
from export_pipeline.bigquery.staging import load_parquet_to_staging
from export_pipeline.bigquery.tables import TableId
from export_pipeline.bigquery.watermark import Watermark
from export_pipeline.table_settings import BigQueryTableSettings
from export_pipeline_tests.faults.proxy import FaultProxy, fault_proxy

KEY = "projects/p/locations/eu/keyRings/r/cryptoKeys/k"
TAG = "projects/p/locations/eu/taxonomies/t/policyTags/email"
SOURCE = "arn:aws:dynamodb:eu-west-1:123456789012:table/Orders"
MARK = Watermark(
    SOURCE, f"{SOURCE}/export/01764115200000-aaaaaaaa", dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
)
SCHEMA = [
    SchemaField("pk", "STRING"),
    SchemaField("n", "INT64"),
    SchemaField("email", "STRING"),
    SchemaField("ts", "INT64"),
    SchemaField("deleted", "BOOL"),
]
COLUMNS = [SelectColumn.passthrough(f) for f in SCHEMA[:3]]
SETTINGS = BigQueryTableSettings(
    partition={"integer_range": {"column": "n", "start": 0, "end": 1000, "interval": 100}},
    cluster_by=["pk"],
    kms_key_name=KEY,
    policy_tags={"email": TAG},
    require_partition_filter=True,
    labels={"domain": "sales"},
)
LAYOUT = TableLayout.from_settings("Orders", SETTINGS, {c.name: c.name for c in COLUMNS})


@pytest.fixture
def proxy(local_cloud) -> Iterator[FaultProxy]:
    with fault_proxy(local_cloud.host, local_cloud.bigquery_port) as running:
        yield running


@pytest.fixture
def client(proxy: FaultProxy, local_cloud) -> Iterator[bigquery.Client]:
    """A client whose every request goes through the recording proxy."""
    through = bigquery.Client(
        project=local_cloud.bigquery_project,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": proxy.url},
    )
    yield through
    through.close()


def _bodies(proxy: FaultProxy, method: str, path: str) -> list[dict]:
    out = []
    for request in proxy.log:
        if request.method == method and path in request.path.split("?")[0] and request.body:
            try:
                out.append(json.loads(request.body))
            except ValueError:
                continue  # a resumable upload's data chunk
    return out


def _staged(client, table_id, write_parquet, name: str) -> TableId:
    staging = table_id(name)
    path = write_parquet([{"pk": "a", "n": 5, "email": "a@example.com", "ts": 1, "deleted": False}])
    load_parquet_to_staging(client, [path], staging, SCHEMA, encryption=LAYOUT.encryption)
    return staging


def _policy_tags(fields: list[dict]) -> dict[str, list[str]]:
    return {f["name"]: f["policyTags"]["names"] for f in fields if "policyTags" in f}


def test_staging_table_and_its_load_jobs_carry_the_key(proxy, client, table_id, write_parquet):
    staging = _staged(client, table_id, write_parquet, "_s")
    [created] = [
        b
        for b in _bodies(proxy, "POST", "/tables")
        if b["tableReference"]["tableId"] == staging.table
    ]
    assert created["encryptionConfiguration"] == {"kmsKeyName": KEY}
    loads = [
        b["configuration"]["load"]
        for b in _bodies(proxy, "POST", "/jobs")
        if "load" in b.get("configuration", {})
    ]
    assert loads
    assert all(load["destinationEncryptionConfiguration"] == {"kmsKeyName": KEY} for load in loads)


def test_full_replace_ddl_carries_key_layout_and_policy_tags(
    proxy, client, table_id, write_parquet
):
    staging = _staged(client, table_id, write_parquet, "_s")
    target = table_id("orders")
    replace_table(
        client,
        staging=staging,
        target=target,
        select_columns=COLUMNS,
        table_description="Orders",
        labels={"export_pipeline_source": "test"},
        layout=LAYOUT,
    )
    queries = [
        b["configuration"]["query"]
        for b in _bodies(proxy, "POST", "/jobs")
        if "CREATE OR REPLACE TABLE" in b.get("configuration", {}).get("query", {}).get("query", "")
    ]
    [ctas] = queries
    # DDL takes the key in its OPTIONS, not as a job-level destination encryption.
    assert "destinationEncryptionConfiguration" not in ctas
    sql = ctas["query"]
    assert "PARTITION BY RANGE_BUCKET(`n`, GENERATE_ARRAY(0, 1000, 100))" in sql
    assert "CLUSTER BY `pk`" in sql
    assert f'kms_key_name="{KEY}"' in sql
    assert "require_partition_filter=TRUE" in sql
    assert '("domain", "sales")' in sql and '("export_pipeline_source", "test")' in sql
    patches = _bodies(proxy, "PATCH", f"/tables/{target.table}")
    tagged = [_policy_tags(p["schema"]["fields"]) for p in patches if "schema" in p]
    assert {"email": [TAG]} in tagged


def test_incremental_target_is_created_with_key_layout_and_policy_tags(
    proxy, client, table_id, write_parquet
):
    staging = _staged(client, table_id, write_parquet, "_s")
    target = table_id("orders")
    merge_changes(
        client,
        staging=staging,
        target=target,
        key_columns=["pk"],
        order_column="ts",
        deleted_column="deleted",
        columns=COLUMNS,
        watermark=MARK,
        expected_previous=None,
        table_description="Orders",
        layout=LAYOUT,
    )
    [created] = [
        b for b in _bodies(proxy, "POST", "/tables") if b["tableReference"]["tableId"] == "orders"
    ]
    assert created["encryptionConfiguration"] == {"kmsKeyName": KEY}
    assert created["rangePartitioning"] == {
        "field": "n",
        "range": {"start": "0", "end": "1000", "interval": "100"},
    }
    assert created["clustering"] == {"fields": ["pk"]}
    assert created["requirePartitionFilter"] is True
    assert created["labels"] == {"domain": "sales"}
    assert _policy_tags(created["schema"]["fields"]) == {"email": [TAG]}
    merges = [
        b["configuration"]["query"]["query"]
        for b in _bodies(proxy, "POST", "/jobs")
        if "MERGE " in b.get("configuration", {}).get("query", {}).get("query", "")
    ]
    # The MERGE prunes on the clustering key: a constant range from staging.
    assert merges and all('AND t.`pk` BETWEEN "a" AND "a"' in m for m in merges)


def _merge(client, staging, target, layout, watermark, previous):
    merge_changes(
        client,
        staging=staging,
        target=target,
        key_columns=["pk"],
        order_column="ts",
        deleted_column="deleted",
        columns=COLUMNS,
        watermark=watermark,
        expected_previous=previous,
        table_description="Orders",
        layout=layout,
    )


def _queries(proxy: FaultProxy) -> list[str]:
    return [
        b["configuration"]["query"]["query"]
        for b in _bodies(proxy, "POST", "/jobs")
        if "query" in b.get("configuration", {})
    ]


LATER = Watermark(
    SOURCE, f"{SOURCE}/export/01764118800000-bbbbbbbb", MARK.exported_to.replace(hour=1)
)


def _plain_layout(**settings) -> TableLayout:
    return TableLayout.from_settings(
        "Orders", BigQueryTableSettings(**settings), {c.name: c.name for c in COLUMNS}
    )


def test_a_layout_change_is_never_a_replace_of_the_differently_laid_out_table(
    proxy, client, table_id, write_parquet
):
    """BigQuery refuses CREATE OR REPLACE across partitioning/clustering specs."""
    target = table_id("orders")
    _merge(
        client,
        _staged(client, table_id, write_parquet, "_s1"),
        target,
        _plain_layout(cluster_by=["pk"]),
        MARK,
        None,
    )
    proxy.log.clear()
    reclustered = _plain_layout(cluster_by=["email", "pk"])
    _merge(
        client, _staged(client, table_id, write_parquet, "_s2"), target, reclustered, LATER, MARK
    )
    patches = _bodies(proxy, "PATCH", f"/tables/{target.table}")
    assert {"clustering": {"fields": ["email", "pk"]}} in patches
    assert any(q.startswith(f"UPDATE {target.sql} SET") for q in _queries(proxy))
    assert not any(f"CREATE OR REPLACE TABLE {target.sql}" in q for q in _queries(proxy))
    proxy.log.clear()
    repartitioned = _plain_layout(
        partition={"integer_range": {"column": "n", "start": 0, "end": 100, "interval": 10}},
        cluster_by=["email", "pk"],
    )
    third = Watermark(
        SOURCE, f"{SOURCE}/export/01764122400000-cccccccc", LATER.exported_to.replace(hour=2)
    )
    _merge(
        client, _staged(client, table_id, write_parquet, "_s3"), target, repartitioned, third, LATER
    )
    queries = _queries(proxy)
    copy = target.sibling("orders__relayout")
    assert any(q.startswith(f"CREATE TABLE {copy.sql}") and "RANGE_BUCKET" in q for q in queries)
    assert any(q.startswith(f"CREATE TABLE {target.sql}") and "RANGE_BUCKET" in q for q in queries)
    assert not any(f"CREATE OR REPLACE TABLE {target.sql}" in q for q in queries)
    deletes = [r.path for r in proxy.log if r.method == "DELETE"]
    assert any(p.split("?")[0].endswith(f"/tables/{target.table}") for p in deletes)
    assert any(p.split("?")[0].endswith(f"/tables/{copy.table}") for p in deletes)
    rows = list(client.query(f"SELECT pk, n FROM {target.sql}").result())
    assert [(r["pk"], r["n"]) for r in rows] == [("a", 5)]
