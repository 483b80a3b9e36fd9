"""An RDS table's configured layout: source column names, `key` clustering, one-line errors."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pytest

from export_pipeline.rds.export_files import read_tables_info
from export_pipeline.rds.loading import RdsLoadError, load_export_table
from export_pipeline.table_settings import RdsTableSettings
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
