"""An RDS table's configured layout: source column names, `key` clustering, one-line errors."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pyarrow as pa
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from export_pipeline.rds.export_files import read_tables_info
from export_pipeline.rds.loading import RdsLoadError, load_export_table
from export_pipeline.table_settings import RdsTableSettings
from export_pipeline_tests.faults.proxy import fault_proxy
from export_pipeline_tests.rds.test_loading import _write_export
from export_pipeline_tests.support.aws_samples import RDS_SNAPSHOT_TIME

COLUMNS = [
    ("id", "int"),
    ("created_at", "datetime"),
    ("country", "varchar(2)"),
    ("unit-price", "decimal(10,2)"),
]
DATA = pa.table(
    {
        "id": pa.array([1, 2, 3], pa.int32()),
        "created_at": pa.array(
            [dt.datetime(2026, 1, d, 10, 0) for d in (1, 2, 3)], pa.timestamp("us")
        ),
        "country": pa.array(["fr", "de", "fr"], pa.string()),
        "unit-price": pa.array([Decimal("1.50"), None, Decimal("3.00")], pa.decimal128(10, 2)),
    }
)


@pytest.fixture
def export(aws_clients, pipeline_config):
    location = _write_export(aws_clients.s3, pipeline_config, COLUMNS, DATA)
    return location, read_tables_info(aws_clients.s3, location)["app.t"]


@pytest.fixture
def table_ref(local_cloud, rds_dataset) -> str:
    return f"{local_cloud.bigquery_project}.{rds_dataset}.customers"


def _load(aws_clients, bigquery_client, export, table_ref, settings):
    location, info = export
    return load_export_table(
        s3=aws_clients.s3,
        client=bigquery_client,
        location=location,
        info=info,
        table_ref=table_ref,
        exported_at=RDS_SNAPSHOT_TIME,
        description="test",
        settings=RdsTableSettings.model_validate(settings),
    )


def _ids(bigquery_client, table_ref) -> list[int]:
    query = f"SELECT id FROM `{table_ref}` ORDER BY id"
    return [r["id"] for r in bigquery_client.query(query).result()]


def test_partitioned_and_clustered_on_key_then_reclustered_by_source_names(
    aws_clients, bigquery_client, export, table_ref
):
    settings = {
        "key": ["id"],
        "bigquery": {"partition": {"column": "created_at", "granularity": "DAY"}},
    }
    _load(aws_clients, bigquery_client, export, table_ref, settings)
    table = bigquery_client.get_table(table_ref)
    assert (table.time_partitioning.type_, table.time_partitioning.field) == ("DAY", "created_at")
    assert table.clustering_fields == ["id"]  # the key, by default
    settings["bigquery"]["cluster_by"] = ["country", "unit-price"]
    result = _load(aws_clients, bigquery_client, export, table_ref, settings)
    renamed = result.renamed_columns["unit-price"]
    table = bigquery_client.get_table(table_ref)
    assert table.clustering_fields == ["country", renamed]
    assert table.time_partitioning.field == "created_at"
    assert _ids(bigquery_client, table_ref) == [1, 2, 3]


@pytest.mark.parametrize(
    ("bigquery", "message"),
    [
        (
            {"cluster_by": ["nope"]},
            "app.t: bigquery.cluster_by: column 'nope' does not exist in the table",
        ),
        (
            {"partition": {"column": "country"}},
            "app.t: bigquery.partition.column: column 'country' is STRING",
        ),
        (
            {"policy_tags": {"mail": "projects/p/locations/l/taxonomies/t/policyTags/x"}},
            "app.t: bigquery.policy_tags: column 'mail' does not exist in the table",
        ),
    ],
)
def test_bad_layout_column_fails_in_one_line_and_keeps_the_table(
    aws_clients, bigquery_client, export, table_ref, bigquery, message
):
    _load(aws_clients, bigquery_client, export, table_ref, {"key": ["id"]})
    with pytest.raises(RdsLoadError) as failure:
        _load(aws_clients, bigquery_client, export, table_ref, {"bigquery": bigquery})
    text = str(failure.value)
    assert text.startswith(message) and text.endswith("nothing was loaded")
    assert "\n" not in text
    assert bigquery_client.get_table(table_ref).clustering_fields == ["id"]
    assert _ids(bigquery_client, table_ref) == [1, 2, 3]


def test_the_load_sends_the_key_and_policy_tags_with_every_write(
    aws_clients, local_cloud, export, table_ref
):
    """Through a recording proxy (bqemulator keeps neither): staging table, load jobs,
    the replace's DDL and the policy-tag patch all carry what the settings say."""
    key = "projects/p/locations/eu/keyRings/r/cryptoKeys/k"
    tag = "projects/p/locations/eu/taxonomies/t/policyTags/country"
    settings = {"key": ["id"], "bigquery": {"kms_key_name": key, "policy_tags": {"country": tag}}}
    with fault_proxy(local_cloud.host, local_cloud.bigquery_port) as proxy:
        client = bigquery.Client(
            project=local_cloud.bigquery_project,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": proxy.url},
        )
        _load(aws_clients, client, export, table_ref, settings)
        client.close()
    bodies = [
        (r.method, r.path.split("?")[0], json.loads(r.body))
        for r in proxy.log
        if r.body.startswith(b"{")
    ]
    staging = [
        b for m, p, b in bodies if m == "POST" and p.endswith("/tables") and "_staging_" in str(b)
    ]
    assert staging and all(b["encryptionConfiguration"] == {"kmsKeyName": key} for b in staging)
    loads = [
        b["configuration"]["load"] for _m, _p, b in bodies if "load" in b.get("configuration", {})
    ]
    assert loads
    assert all(load["destinationEncryptionConfiguration"] == {"kmsKeyName": key} for load in loads)
    queries = [
        b["configuration"]["query"]["query"]
        for _m, _p, b in bodies
        if "query" in b.get("configuration", {})
    ]
    [ddl] = [q for q in queries if q.startswith("CREATE OR REPLACE TABLE")]
    assert f'kms_key_name="{key}"' in ddl and "CLUSTER BY `id`" in ddl
    tagged = [
        {f["name"]: f["policyTags"]["names"] for f in b["schema"]["fields"] if "policyTags" in f}
        for m, p, b in bodies
        if m == "PATCH" and p.endswith("/tables/customers") and "schema" in b
    ]
    assert {"country": [tag]} in tagged
