"""Hostile configuration: rejected at load naming the field, or made harmless everywhere.

A name in pipeline.yaml ends up in S3 keys, BigQuery table names, SQL,
Dagster asset keys and export task identifiers. These tests feed the loader
names with quotes, backticks, spaces, dots, unicode and the like, unknown
fields and wrong types, and check that each is either refused with an error
naming the file and the field (and what is expected), or accepted and then
unable to break anything generated from it. A missing BigQuery dataset must
fail the load with the dataset's name and how to create it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from export_pipeline.bigquery.tables import TableId
from export_pipeline.config import ConfigError, PipelineConfig, parse_config
from export_pipeline.dynamodb.source import DynamoDBSource, export_prefix
from export_pipeline.graph.assets import build_source_assets
from export_pipeline.naming import dynamodb_table_name, rds_table_name
from export_pipeline.rds.export_files import ExportLocation
from export_pipeline.rds.identifiers import export_task_identifier, is_valid_export_task_identifier
from export_pipeline.rds.source import RdsSource
from export_pipeline_tests.faults import _runs

PATH = Path("/etc/export-pipeline/hostile.yaml")
BASE: dict[str, Any] = {
    "aws": {"region": "eu-west-1", "export_bucket": "my-bucket"},
    "bigquery": {"project": "my-project-1"},
}
RDS_SOURCE = {
    "identifier": "shopdb",
    "export_only": ["shop.customers"],
    "iam_role_arn": "arn:aws:iam::123456789012:role/export",
    "kms_key_id": "alias/export",
}
HOSTILE = [
    "Orders'",
    'Or"ders',
    "Ord`ers",
    "Ord ers",
    "Orders; DROP TABLE x",
    "Ördérs",
    "订单表",
    "Orders/../x",
    "ab",
    "",
]


def _load(raw: dict[str, Any]) -> PipelineConfig:
    return parse_config(yaml.safe_dump(raw, allow_unicode=True), PATH)


def _with(**sections: Any) -> dict[str, Any]:
    return {**BASE, **sections}


def _rejected(raw: dict[str, Any], field: str, *hints: str) -> str:
    with pytest.raises(ConfigError) as raised:
        _load(raw)
    message = str(raised.value)
    assert str(PATH) in message
    assert re.search(rf"^{re.escape(str(PATH))}: {re.escape(field)}: ", message, re.M), message
    for hint in hints:
        assert hint in message, message
    return message


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_dynamodb_table_names_are_refused(name):
    raw = _with(dynamodb={"tables": [{"name": name}]})
    _rejected(raw, "dynamodb.tables[0].name", "expected a DynamoDB table name", repr(name))


@pytest.mark.parametrize(
    "entry",
    [
        "shop.cust'omers",
        "shop.`customers`",
        "shop.cust omers",
        "shop.a.b",
        "shöp.customers",
        "shop.",
        "customers",
        "shop.customers; DROP",
    ],
)
def test_hostile_rds_table_names_are_refused(entry):
    raw = _with(rds={"instances": [{**RDS_SOURCE, "engine": "mysql", "export_only": [entry]}]})
    _rejected(raw, "rds.instances[shopdb].export_only", "database.table", repr(entry))


@pytest.mark.parametrize(
    ("section", "field", "value", "hint"),
    [
        ("bigquery", "dataset", "aws-raw", "BigQuery dataset name"),
        ("bigquery", "dataset", "aws raw", "BigQuery dataset name"),
        ("bigquery", "dataset", "aws.raw", "BigQuery dataset name"),
        ("bigquery", "dataset", "aws`raw", "BigQuery dataset name"),
        ("bigquery", "dataset", "データ", "BigQuery dataset name"),
        ("bigquery", "project", "my project", "Google Cloud project id"),
        ("bigquery", "project", "p`roject-1", "Google Cloud project id"),
        ("aws", "export_bucket", "My_Bucket", "S3 bucket name"),
        ("aws", "export_bucket", "bucket..name", "S3 bucket name"),
        ("aws", "export_prefix", "exports/../other", "S3 key prefix"),
        ("aws", "export_prefix", "ex ports", "S3 key prefix"),
        ("aws", "export_prefix", "ex`ports", "S3 key prefix"),
        ("aws", "region", "eu west 1", "AWS region"),
    ],
)
def test_hostile_names_elsewhere_are_refused(section, field, value, hint):
    raw = _with(**{section: {**BASE[section], field: value}})
    _rejected(raw, f"{section}.{field}", hint, repr(value))


def test_hostile_rds_identifier_is_refused():
    raw = _with(rds={"instances": [{**RDS_SOURCE, "identifier": "shop db"}]})
    _rejected(raw, "rds.instances[0].identifier", "RDS identifier")


@pytest.mark.parametrize(
    ("raw", "field", "hint"),
    [
        (_with(dynamo={"tables": []}), "dynamo", "unknown field"),
        (
            _with(dynamodb={"tables": [{"name": "Orders", "nmae": "x"}]}),
            "dynamodb.tables[Orders].nmae",
            "unknown field",
        ),
        (_with(dynamodb={"tables": "Orders"}), "dynamodb.tables", "valid list"),
        (_with(dynamodb={"tables": [42]}), "dynamodb.tables[0]", "valid dictionary"),
        (
            _with(dynamodb={"export_timeout_minutes": "soon"}),
            "dynamodb.export_timeout_minutes",
            "number",
        ),
        (_with(dynamodb={"max_parallel_files": 0}), "dynamodb.max_parallel_files", "greater than"),
        (
            _with(dynamodb={"tables": [{"name": "Orders", "mode": "sometimes"}]}),
            "dynamodb.tables[Orders].mode",
            "'full'",
        ),
        (
            _with(rds={"instances": [{**RDS_SOURCE, "kind": "aurora"}]}),
            "rds.instances[shopdb].kind",
            "'instance'",
        ),
        ({"aws": BASE["aws"]}, "bigquery", "required field is missing"),
    ],
)
def test_unknown_fields_and_wrong_types_name_the_field(raw, field, hint):
    _rejected(raw, field, hint)


@pytest.mark.parametrize(
    "raw",
    [
        _with(dynamodb={"tables": [{"name": "orders.v2"}, {"name": "Orders-v2"}]}),
        _with(rds={"instances": [{**RDS_SOURCE, "export_only": ["shop$x.a", "shop_x.a"]}]}),
    ],
    ids=["dynamodb", "rds"],
)
def test_names_that_collide_in_bigquery_are_refused_at_load(raw):
    with pytest.raises(ConfigError, match="BigQuery table"):
        _load(raw)


def _trailing_newline(section: str, field: str) -> dict[str, Any]:
    raw = _with(
        aws={**BASE["aws"], "export_prefix": "exports"},
        bigquery={**BASE["bigquery"], "dataset": "aws_raw"},
        dynamodb={"tables": [{"name": "Orders"}]},
        rds={"instances": [dict(RDS_SOURCE)]},
    )
    target = raw[section] if section in ("aws", "bigquery") else None
    if section == "dynamodb":
        target = raw["dynamodb"]["tables"][0]
    elif section == "rds":
        target = raw["rds"]["instances"][0]
    assert target is not None
    value = target[field]
    target[field] = [value[0] + "\n"] if isinstance(value, list) else value + "\n"
    return raw


NEWLINE_FIELDS = [
    ("aws", "region", "aws.region"),
    ("aws", "export_bucket", "aws.export_bucket"),
    ("aws", "export_prefix", "aws.export_prefix"),
    ("bigquery", "project", "bigquery.project"),
    ("bigquery", "dataset", "bigquery.dataset"),
    ("dynamodb", "name", "dynamodb.tables[0].name"),
    ("rds", "identifier", "rds.instances[0].identifier"),
    ("rds", "export_only", "rds.instances[shopdb].export_only"),
    ("rds", "iam_role_arn", "rds.instances[shopdb].iam_role_arn"),
    ("rds", "kms_key_id", "rds.instances[shopdb].kms_key_id"),
]


@pytest.mark.parametrize(
    ("section", "field", "where"), NEWLINE_FIELDS, ids=[w for *_, w in NEWLINE_FIELDS]
)
def test_a_trailing_newline_is_refused(section, field, where):
    _rejected(_trailing_newline(section, field), where)


def test_the_newline_cases_are_valid_without_the_newline():
    """Control for the test above: the same files without the newline load."""
    raw = _with(
        aws={**BASE["aws"], "export_prefix": "exports"},
        bigquery={**BASE["bigquery"], "dataset": "aws_raw"},
        dynamodb={"tables": [{"name": "Orders"}]},
        rds={"instances": [dict(RDS_SOURCE)]},
    )
    assert _load(raw).dynamodb.tables[0].name == "Orders"


# ----------------------------------------------------------- accepted names are harmless

_S3_SAFE_KEY = re.compile(r"^[A-Za-z0-9!_.*'()\-/$]+$")
_BQ_TABLE = re.compile(r"^[a-z0-9_]{1,1024}$")
dynamodb_names = st.from_regex(r"\A[A-Za-z0-9_.\-]{3,40}\Z")
mysql_names = st.from_regex(r"\A[A-Za-z0-9_$]{1,20}\Z")


@settings(max_examples=40, deadline=None)
@given(name=dynamodb_names)
def test_any_accepted_dynamodb_name_yields_safe_keys_tables_and_sql(name):
    config = _load(_with(dynamodb={"tables": [{"name": name}]}))
    prefix = export_prefix(config, name)
    assert _S3_SAFE_KEY.match(prefix) and prefix.split("/")[-1] == name
    assert ".." not in prefix.split("/")
    table = dynamodb_table_name(name)
    assert _BQ_TABLE.match(table)
    sql = TableId(config.bigquery.project, config.bigquery.dataset, table).sql
    assert sql.count("`") == 6 and "'" not in sql and " " not in sql
    export_asset, bigquery_asset = build_source_assets(DynamoDBSource(config))
    assert export_asset.key.path == ["dynamodb", f"{name}_export"]
    assert bigquery_asset.key.path[-1] == table


@settings(max_examples=40, deadline=None)
@given(database=mysql_names, table=mysql_names)
def test_any_accepted_rds_name_yields_safe_keys_tables_and_identifiers(database, table):
    entry = f"{database}.{table}"
    config = _load(_with(rds={"instances": [{**RDS_SOURCE, "export_only": [entry]}]}))
    bq_table = rds_table_name(database, table)
    assert _BQ_TABLE.match(bq_table)
    TableId(config.bigquery.project, config.bigquery.dataset, bq_table)
    identifier = export_task_identifier("shopdb", "rds:shopdb-2026-01-01-03-00", [entry])
    assert is_valid_export_task_identifier(identifier)
    folder = ExportLocation("my-bucket", "exports/rds", identifier).table_folder(database, table)
    assert _S3_SAFE_KEY.match(folder) and ".." not in folder.split("/")
    keys = [a.key.path for a in build_source_assets(RdsSource(config)) if hasattr(a, "key")]
    assert ["bigquery", config.bigquery.dataset, bq_table] in keys


# ----------------------------------------------------------- a dataset that does not exist


def test_missing_dataset_fails_the_loads_naming_it_and_the_fix(
    local_cloud, aws_clients, bigquery_client, pipeline_config
):
    """The BigQuery steps (DynamoDB and RDS) load a good export into a dataset nobody made."""
    clean = _runs.clean_run(local_cloud, aws_clients, bigquery_client, pipeline_config)
    clean.require()
    dataset = "no_such_dataset_" + clean.dataset[-8:]
    config = _runs.make_config(
        dataset, dynamodb_table=clean.dynamodb_table, rds_instances=[clean.rds]
    )
    result = _runs.run_bigquery_steps(config, clean)
    assert not result.success
    failed = [e for e in result.all_events if e.is_step_failure]
    assert len(failed) == 2, _runs.failure_messages(result)
    for event in failed:
        text = _runs.failure_messages(result)
        assert f"{clean.project}.{dataset} does not exist" in text
        assert f"bq mk --dataset --location=<LOCATION> {clean.project}:{dataset}" in text
        assert event.step_key in text
    names = [d.dataset_id for d in bigquery_client.list_datasets()]
    assert dataset not in names, "the pipeline must not create the dataset itself"
