"""Per-table governed settings: the issue's shape loads, mistakes name table and field."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from export_pipeline.config import ConfigError, parse_config
from export_pipeline.table_settings import (
    HASH_KEY_ENV_VAR,
    ColumnTreatment,
    DeletesMode,
    Granularity,
    SchemaChanges,
)

RDS_INSTANCE = {
    "identifier": "shopdb",
    "export_only": ["shop.customers", "shop.orders"],
    "iam_role_arn": "arn:aws:iam::123456789012:role/export",
    "kms_key_id": "alias/k",
}
BASE = {
    "aws": {"region": "eu-west-1", "export_bucket": "my-bucket"},
    "bigquery": {"project": "my-project-1"},
    "dynamodb": {
        "tables": [
            {
                "name": "Orders",
                "mode": "incremental",
                "deletes": "soft",
                "schema_changes": "allow_columns",
                "columns": {"Name": "exclude"},
                "bigquery": {
                    "partition": {"column": "created_at", "granularity": "DAY"},
                    "labels": {"domain": "sales"},
                    "kms_key_name": "projects/p/locations/l/keyRings/r/cryptoKeys/k",
                    "policy_tags": {"email": "projects/p/locations/l/taxonomies/t/policyTags/x"},
                    "require_partition_filter": False,
                    "partition_expiration_days": None,
                },
            }
        ]
    },
    "rds": {
        "instances": [
            {
                **RDS_INSTANCE,
                "tables": {
                    "shop.customers": {
                        "key": ["id"],
                        "deletes": "soft",
                        "columns": {"email": "hash", "name": "exclude"},
                        "bigquery": {
                            "partition": {"column": "created_at", "granularity": "DAY"},
                            "cluster_by": ["country"],
                        },
                    }
                },
            }
        ]
    },
}


def _parse(raw: dict):
    return parse_config(yaml.safe_dump(raw), Path("/tmp/p.yaml"))


def _error(raw: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        _parse(raw)
    return str(caught.value)


def test_the_documented_shape_loads() -> None:
    config = _parse(BASE)
    orders = config.dynamodb.tables[0]
    assert orders.deletes is DeletesMode.SOFT
    assert orders.schema_changes is SchemaChanges.ALLOW_COLUMNS
    assert orders.excluded_columns == ["Name"]
    assert orders.bigquery.partition.granularity is Granularity.DAY
    customers = config.rds.instances[0].table_settings(("shop", "customers"))
    assert customers.key == ["id"]
    assert customers.columns["email"] is ColumnTreatment.HASH
    assert customers.hashed_columns == ["email"] and customers.excluded_columns == ["name"]
    assert customers.cluster_by == ["country"]
    assert config.bigquery.hash_key.env_var == HASH_KEY_ENV_VAR


def test_defaults_are_todays_behaviour() -> None:
    config = _parse({k: v for k, v in BASE.items() if k != "dynamodb"})
    orders = config.rds.instances[0].table_settings(("shop", "orders"))
    assert orders.deletes is DeletesMode.HARD and orders.schema_changes is SchemaChanges.ALLOW
    assert orders.columns == {} and orders.cluster_by is None and orders.bigquery.labels == {}


def test_rds_cluster_default_is_the_key() -> None:
    raw = copy.deepcopy(BASE)
    raw["rds"]["instances"][0]["tables"]["shop.customers"]["bigquery"].pop("cluster_by")
    raw["rds"]["instances"][0]["tables"]["shop.customers"]["key"] = ["a", "b", "c", "d", "e"]
    customers = _parse(raw).rds.instances[0].table_settings(("shop", "customers"))
    assert customers.cluster_by == ["a", "b", "c", "d"]


def _set(path: list, value) -> dict:
    raw = copy.deepcopy(BASE)
    node = raw
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return raw


ORDERS_BQ = ["dynamodb", "tables", 0, "bigquery"]
CUSTOMERS = ["rds", "instances", 0, "tables", "shop.customers"]


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ([*ORDERS_BQ, "partition"], {"column": "a", "ingestion": "DAY"}, "exactly one of"),
        ([*ORDERS_BQ, "partition"], {"granularity": "DAY"}, "exactly one of"),
        ([*ORDERS_BQ, "partition"], {"column": "a", "granularity": "WEEK"}, "granularity"),
        (
            [*ORDERS_BQ, "partition"],
            {"integer_range": {"column": "n", "start": 10, "end": 0, "interval": 1}},
            "greater than start",
        ),
        ([*ORDERS_BQ, "cluster_by"], ["a", "b", "c", "d", "e"], "1 to 4"),
        ([*ORDERS_BQ, "cluster_by"], ["a", "A"], "twice"),
        ([*ORDERS_BQ, "labels"], {"Domain": "x"}, "label key 'Domain'"),
        ([*ORDERS_BQ, "labels"], {"domain": "Sales Team"}, "label domain="),
        ([*ORDERS_BQ, "kms_key_name"], "alias/mykey", "cryptoKeys"),
        ([*ORDERS_BQ, "policy_tags"], {"email": "tag"}, "policy tag of 'email'"),
        ([*ORDERS_BQ, "partition"], None, "need a partition"),
        (["dynamodb", "tables", 0, "deletes"], "archive", "deletes"),
        (["dynamodb", "tables", 0, "columns"], {"Name": "mask"}, "columns.Name"),
        ([*CUSTOMERS, "key"], None, "deletes: soft needs key"),
        ([*CUSTOMERS, "keys"], ["id"], "did you mean 'key'"),
        (["rds", "instances", 0, "tables", "shop.customer"], {}, "did you mean 'shop.customers'"),
        (["bigquery", "hash_key"], {"env_var": "1BAD"}, "environment variable name"),
    ],
)
def test_mistakes_name_the_table_and_the_field(path: list, value, expected: str) -> None:
    raw = _set(path, value)
    if path == [*ORDERS_BQ, "partition"] and value is None:
        raw["dynamodb"]["tables"][0]["bigquery"]["require_partition_filter"] = True
    message = _error(raw)
    assert message.startswith("/tmp/p.yaml: ")
    assert expected in message
    where = "dynamodb.tables[Orders]" if path[0] == "dynamodb" else path[0]
    assert where in message
