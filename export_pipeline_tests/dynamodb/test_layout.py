"""A DynamoDB table's layout through the whole asset: key clustering, attribute names, errors."""

from __future__ import annotations

import json

from dagster import DagsterInstance, materialize

from export_pipeline.config import DynamoDBTableConfig
from export_pipeline.local_cloud.dynamodb_time_control import shift_history
from export_pipeline_tests.dynamodb._pipeline_helpers import (
    REGION,
    assets_for,
    bigquery_rows,
    create_table,
    make_config,
    run,
    table_id,
)
from export_pipeline_tests.faults.proxy import fault_proxy, resources_through
from export_pipeline_tests.support.principals import pipeline_resources

ITEMS = [
    {"pk": {"S": "a"}, "sk": {"N": "1"}, "order-date": {"S": "2026-01-01"}, "qty": {"N": "5"}},
    {"pk": {"S": "b"}, "sk": {"N": "2"}, "order-date": {"S": "2026-01-02"}, "qty": {"N": "7"}},
    {"pk": {"S": "c"}, "sk": {"N": "3"}, "qty": {"N": "9"}},
]


def _config(table: str, mode: str, **settings):
    config = make_config(table, mode=mode)
    entry = DynamoDBTableConfig.model_validate({"name": table, "mode": mode, **settings})
    return config.model_copy(
        update={"dynamodb": config.dynamodb.model_copy(update={"tables": [entry]})}
    )


def test_full_mode_partitions_on_exported_at_and_clusters_on_attribute_names(
    aws_clients, bigquery_client, unique_name
):
    table = f"layout-{unique_name}"
    create_table(aws_clients.dynamodb, table, ITEMS, range_key="sk")
    settings = {
        "bigquery": {
            "partition": {"column": "_exported_at", "granularity": "DAY"},
            "cluster_by": ["order-date", "qty"],
            "labels": {"domain": "sales"},
        }
    }
    assert run(_config(table, "full", **settings), DagsterInstance.ephemeral()).success
    bq_table = bigquery_client.get_table(table_id(table))
    assert bq_table.time_partitioning.field == "_exported_at"
    assert bq_table.clustering_fields == ["order_date", "qty"]
    assert bq_table.labels["domain"] == "sales"
    assert sorted(bigquery_rows(bigquery_client, table)) == ["a", "b", "c"]


def test_incremental_table_is_clustered_on_its_key_schema_then_rebuilt_on_change(
    aws_clients, bigquery_client, unique_name
):
    table = f"layout-{unique_name}"
    create_table(aws_clients.dynamodb, table, ITEMS, range_key="sk")
    shift_history(aws_clients.dynamodb.meta.endpoint_url, table, 2 * 3600, REGION)
    instance = DagsterInstance.ephemeral()
    assert run(_config(table, "incremental"), instance).success
    assert bigquery_client.get_table(table_id(table)).clustering_fields == ["pk", "sk"]
    before = bigquery_rows(bigquery_client, table)
    changed = _config(table, "incremental", bigquery={"cluster_by": ["qty"]})
    assert run(changed, instance).success
    assert bigquery_client.get_table(table_id(table)).clustering_fields == ["qty"]
    after = bigquery_rows(bigquery_client, table)
    assert {k: (r["qty"], r["order_date"]) for k, r in after.items()} == {
        k: (r["qty"], r["order_date"]) for k, r in before.items()
    }


def test_unknown_attribute_fails_in_one_line_before_anything_is_loaded(
    aws_clients, bigquery_client, unique_name
):
    table = f"layout-{unique_name}"
    create_table(aws_clients.dynamodb, table, ITEMS, range_key="sk")
    assert run(_config(table, "full"), DagsterInstance.ephemeral()).success
    bad = _config(table, "full", bigquery={"cluster_by": ["colour"]})
    result = run(bad, DagsterInstance.ephemeral(), raise_on_error=False)
    assert not result.success
    [failure] = [
        e.step_failure_data.user_failure_data.description
        for e in result.all_events
        if e.is_step_failure and e.step_failure_data.user_failure_data is not None
    ]
    assert failure.startswith(f"{table}: bigquery.cluster_by: column 'colour' does not exist")
    assert failure.endswith("nothing was loaded") and "\n" not in failure
    assert bigquery_client.get_table(table_id(table)).clustering_fields is None
    assert sorted(bigquery_rows(bigquery_client, table)) == ["a", "b", "c"]


def test_the_load_sends_the_key_with_the_staging_table_and_its_load_jobs(
    aws_clients, local_cloud, unique_name
):
    """Through a recording proxy (bqemulator keeps no CMEK): what the asset sends."""
    table = f"layout-{unique_name}"
    create_table(aws_clients.dynamodb, table, ITEMS, range_key="sk")
    key = "projects/p/locations/eu/keyRings/r/cryptoKeys/k"
    config = _config(table, "incremental", bigquery={"kms_key_name": key})
    shift_history(aws_clients.dynamodb.meta.endpoint_url, table, 2 * 3600, REGION)
    with fault_proxy(local_cloud.host, local_cloud.bigquery_port) as proxy:
        resources = resources_through(pipeline_resources(config), aws=None, bigquery=proxy)
        result = materialize(
            list(assets_for(config)), resources=resources, instance=DagsterInstance.ephemeral()
        )
    assert result.success
    bodies = [
        (r.method, r.path.split("?")[0], json.loads(r.body))
        for r in proxy.log
        if r.body.startswith(b"{")
    ]
    created = {
        b["tableReference"]["tableId"]: b
        for m, p, b in bodies
        if m == "POST" and p.endswith("/tables")
    }
    staging = [b for name, b in created.items() if name.startswith("_staging_")]
    assert staging and all(b["encryptionConfiguration"] == {"kmsKeyName": key} for b in staging)
    target = created[table_id(table).rsplit(".", 1)[1]]
    assert target["encryptionConfiguration"] == {"kmsKeyName": key}
    assert target["clustering"] == {"fields": ["pk", "sk"]}
    loads = [
        b["configuration"]["load"] for _m, _p, b in bodies if "load" in b.get("configuration", {})
    ]
    assert loads
    assert all(load["destinationEncryptionConfiguration"] == {"kmsKeyName": key} for load in loads)
