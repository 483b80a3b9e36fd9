from __future__ import annotations

import pytest

from export_pipeline.bigquery.tables import DatasetNotFoundError, TableId, require_dataset


def test_table_id_sql_and_link() -> None:
    t = TableId("my-project-1", "analytics", "dynamodb_orders")
    assert t.sql == "`my-project-1`.`analytics`.`dynamodb_orders`"
    assert t.dotted == "my-project-1.analytics.dynamodb_orders"
    assert t.console_url == (
        "https://console.cloud.google.com/bigquery?project=my-project-1"
        "&ws=!1m5!1m4!4m3!1smy-project-1!2sanalytics!3sdynamodb_orders"
    )
    assert TableId.parse("my-project-1.analytics.x") == t.sibling("x")


@pytest.mark.parametrize(
    ("project", "dataset", "table"),
    [
        ("My-Project", "d", "t"),  # upper case project
        ("proj-ok-1", "d-x", "t"),  # hyphen in dataset
        ("proj-ok-1", "d", "t`; DROP TABLE x; --"),  # injection attempt
        ("proj-ok-1", "d", ""),
    ],
)
def test_table_id_rejects_invalid_parts(project: str, dataset: str, table: str) -> None:
    with pytest.raises(ValueError, match="invalid BigQuery"):
        TableId(project, dataset, table)


def test_require_dataset_missing_names_it_and_the_fix(bigquery_client, unique_name) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        require_dataset(bigquery_client, bigquery_client.project, unique_name)
    message = str(info.value)
    assert f"{bigquery_client.project}.{unique_name}" in message
    assert "bq mk --dataset" in message


def test_require_dataset_existing(bigquery_client, dataset) -> None:
    found = require_dataset(bigquery_client, bigquery_client.project, dataset)
    assert found.dataset_id == dataset
