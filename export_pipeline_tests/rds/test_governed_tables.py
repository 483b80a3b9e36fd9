"""RDS tables a data team governs: personal data (exclude, hash) and schema-change policies.

Each test has a DB instance of its own in the local cloud (MySQL rows in the
live store, an automated snapshot, a real export task) and a BigQuery dataset
of its own. The expected digests are `hmac.new(key, text.encode(), sha256)`,
computed here. A schema change is made as `test_schema_drift` makes it: the
table recreated with the new columns (what ALTER TABLE leaves), a new snapshot.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import uuid
from typing import Any

import pytest
from dagster import DagsterInstance, materialize

from export_pipeline.config import BigQueryConfig, DynamoDBConfig, DynamoDBTableConfig
from export_pipeline.dynamodb.source import DynamoDBSource
from export_pipeline.graph.assets import build_source_assets
from export_pipeline.local_cloud.rds_client import live_store, take_automated_snapshot
from export_pipeline.local_cloud.rds_store import Column
from export_pipeline.rds.source import RdsSource
from export_pipeline_tests.dynamodb._pipeline_helpers import create_table
from export_pipeline_tests.support.principals import pipeline_resources
from export_pipeline_tests.support.rds import config_for, create_mysql_instance, run_rds

KEY_ENV = "EXPORT_PIPELINE_TEST_RDS_HASH_KEY"
SECRET = "rds-test-hmac-key-" + uuid.uuid4().hex
PEOPLE = [
    Column("id", "int", nullable=False),
    Column("email", "varchar(255)"),
    Column("name", "varchar(100)"),
    Column("country", "char(2)"),
    Column("score", "decimal(10,2)"),
]
# Hostile values: quotes, backslashes, SQL, control characters, right-to-left, emoji.
EMAILS = [
    "shared@example.com",
    "o'brien\\x@example.com",
    "'; DROP TABLE t; --@example.com",
    "tab\tnew\nline@example.com",
    "\u202eevil@example.com",
    "😀@example.com",
    None,
]
PEOPLE_ROWS = [
    {
        "id": i,
        "email": email,
        "name": f"Private Person {i}",
        "country": "IE" if i % 2 else "ß",
        "score": f"{i}.50",
    }
    for i, email in enumerate(EMAILS, start=1)
]


def digest(text: str) -> str:
    return hmac.new(SECRET.encode(), text.encode("utf-8"), hashlib.sha256).hexdigest()


def _instance(local_cloud: Any, aws_clients: Any, pipeline_config: Any, tables: dict) -> Any:
    """A MySQL instance of this test's own holding `pii.people`, with a snapshot."""
    demo = pipeline_config.rds.instances[0]
    source = type(
        demo
    ).model_validate(  # validated like pipeline.yaml
        {
            **demo.model_dump(),
            "identifier": "pii" + uuid.uuid4().hex[:8],
            "export_only": ["pii.people"],
            "tables": tables,
        }
    )
    store = live_store(local_cloud.state_dir, pipeline_config.aws.region, source.identifier)
    store.create_table("pii", "people", PEOPLE)
    store.insert("pii", "people", PEOPLE_ROWS)
    create_mysql_instance(aws_clients.rds, source.identifier)
    take_automated_snapshot(aws_clients.rds, source.identifier)
    return source, store


def _config(pipeline_config: Any, dataset: str, source: Any) -> Any:
    config = config_for(pipeline_config, dataset, [source])
    bigquery = config.bigquery.model_dump()
    bigquery["hash_key"] = {"env_var": KEY_ENV}
    return config.model_copy(update={"bigquery": BigQueryConfig.model_validate(bigquery)})


def every_value_in_dataset(client: Any, project: str, dataset: str) -> str:
    """Every table of the dataset (staging ones included), every row, as one text."""
    texts = []
    for table in client.list_tables(f"{project}.{dataset}"):
        rows = client.query(f"SELECT * FROM `{project}.{dataset}.{table.table_id}`").result()
        texts += [json.dumps(dict(r.items()), default=str, ensure_ascii=False) for r in rows]
        texts.append(json.dumps([f.name for f in client.get_table(table).schema]))
    return "\n".join(texts)


def _rows(client: Any, table_id: str) -> dict[int, dict[str, Any]]:
    return {r["id"]: dict(r.items()) for r in client.query(f"SELECT * FROM `{table_id}`").result()}


def test_excluded_and_hashed_columns_never_reach_bigquery_and_the_key_shows_nowhere(
    local_cloud, aws_clients, bigquery_client, pipeline_config, rds_dataset, monkeypatch, caplog
):
    monkeypatch.setenv(KEY_ENV, SECRET)
    tables = {"pii.people": {"key": ["id"], "columns": {"email": "hash", "name": "exclude"}}}
    source, _ = _instance(local_cloud, aws_clients, pipeline_config, tables)
    config = _config(pipeline_config, rds_dataset, source)
    instance = DagsterInstance.ephemeral()
    caplog.set_level(logging.DEBUG)

    result = run_rds(config, instance)
    assert result.success
    table_id = f"{config.bigquery.project}.{rds_dataset}.rds_pii_people"
    schema = {f.name: f for f in bigquery_client.get_table(table_id).schema}
    assert "name" not in schema
    assert schema["email"].field_type == "STRING" and "hashed" in schema["email"].description
    rows = _rows(bigquery_client, table_id)
    for want in PEOPLE_ROWS:
        row = rows[want["id"]]
        assert row["email"] == (None if want["email"] is None else digest(want["email"]))
        assert row["country"] == want["country"]  # not configured: as it was
    # No plaintext anywhere in the dataset, staging tables included.
    everything = every_value_in_dataset(bigquery_client, config.bigquery.project, rds_dataset)
    for want in PEOPLE_ROWS:
        assert want["name"] not in everything
        if want["email"] is not None:
            assert want["email"] not in everything and json.dumps(want["email"]) not in everything
    assert "example.com" not in everything
    # The key is in no log line, no event (metadata, messages), no table.
    assert SECRET not in caplog.text
    records = instance.all_logs(result.run_id)
    assert records and all(SECRET not in repr(r) for r in records)
    assert SECRET not in everything

    # Same value, same hash across sources: a DynamoDB item with the same e-mail
    # joins with the RDS row in BigQuery.
    ddb_table = "pii-" + uuid.uuid4().hex[:8]
    create_table(
        aws_clients.dynamodb,
        ddb_table,
        [{"pk": {"S": "u1"}, "email": {"S": "shared@example.com"}, "name": {"S": "Dyna"}}],
    )
    ddb_config = config.model_copy(
        update={
            "dynamodb": DynamoDBConfig(
                tables=[
                    DynamoDBTableConfig(
                        name=ddb_table, columns={"email": "hash", "name": "exclude"}
                    )
                ],
                export_timeout_minutes=2,
                poll_max_interval_seconds=1,
                max_parallel_files=1,
            )
        }
    )
    assert materialize(
        build_source_assets(DynamoDBSource(ddb_config)),
        resources=pipeline_resources(ddb_config),
        instance=instance,
    ).success
    ddb_table_id = f"{config.bigquery.project}.{rds_dataset}.dynamodb_{ddb_table.replace('-', '_')}"
    joined = list(
        bigquery_client.query(
            f"SELECT d.pk, r.id FROM `{ddb_table_id}` AS d JOIN `{table_id}` AS r "
            "ON d.email = r.email"
        ).result()
    )
    assert [(j["pk"], j["id"]) for j in joined] == [("u1", 1)]


def test_hash_without_the_key_fails_before_any_export_starts(
    local_cloud, aws_clients, pipeline_config, rds_dataset, monkeypatch
):
    tables = {"pii.people": {"columns": {"email": "hash"}}}
    source, _ = _instance(local_cloud, aws_clients, pipeline_config, tables)
    config = _config(pipeline_config, rds_dataset, source)
    resources = pipeline_resources(config)  # the local environment's default key applies here
    monkeypatch.delenv(KEY_ENV, raising=False)  # as in production without the secret

    result = materialize(
        build_source_assets(RdsSource(config)),
        resources=resources,
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert KEY_ENV in message and f"{source.identifier} table pii.people" in message
    # No StartExportTask was made for the instance.
    tasks = aws_clients.rds.describe_export_tasks()["ExportTasks"]
    assert not [t for t in tasks if source.identifier in t["SourceArn"]]


AFTER_ADD = [*PEOPLE, Column("note", "text")]
AFTER_RETYPE = [
    Column("id", "int", nullable=False),
    Column("email", "varchar(255)"),
    Column("country", "char(2)"),
    Column("score", "decimal(40,10)"),  # NUMERIC -> STRING
    Column("note", "text"),
]  # `name` removed


def _alter(store: Any, columns: list[Column], aws_clients: Any, identifier: str) -> None:
    names = {c.name for c in columns}
    store.drop_table("pii", "people")
    store.create_table("pii", "people", columns)
    store.insert("pii", "people", [{k: v for k, v in r.items() if k in names} for r in PEOPLE_ROWS])
    take_automated_snapshot(aws_clients.rds, identifier)


def _with_policy(config: Any, policy: str) -> Any:
    [source] = config.rds.instances
    tables = {"pii.people": {"columns": {"email": "hash"}, "schema_changes": policy}}
    changed = type(source).model_validate({**source.model_dump(), "tables": tables})
    return config.model_copy(update={"rds": config.rds.model_copy(update={"instances": [changed]})})


def _schema_check(result: Any) -> Any:
    [check] = [
        c for c in result.get_asset_check_evaluations() if c.check_name == "schema_unchanged"
    ]
    return check


def _types(client: Any, table_id: str) -> dict[str, str]:
    return {f.name: f.field_type for f in client.get_table(table_id).schema}


def test_schema_change_policies_between_snapshots(
    local_cloud, aws_clients, bigquery_client, pipeline_config, rds_dataset, monkeypatch
):
    monkeypatch.setenv(KEY_ENV, SECRET)
    tables = {"pii.people": {"columns": {"email": "hash"}, "schema_changes": "allow_columns"}}
    source, store = _instance(local_cloud, aws_clients, pipeline_config, tables)
    base = _config(pipeline_config, rds_dataset, source)
    table_id = f"{base.bigquery.project}.{rds_dataset}.rds_pii_people"
    instance = DagsterInstance.ephemeral()

    first = run_rds(_with_policy(base, "allow_columns"), instance)
    check = _schema_check(first)
    assert check.passed and check.metadata["first_load"].value is True
    original = _types(bigquery_client, table_id)

    # A column added: `block` refuses it, the table stays as it was.
    _alter(store, AFTER_ADD, aws_clients, source.identifier)
    blocked = run_rds(_with_policy(base, "block"), instance, raise_on_error=False)
    assert not blocked.success
    [failure] = [e for e in blocked.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert table_id in message and "schema_changes: block" in message and "added note" in message
    check = _schema_check(blocked)
    assert not check.passed and check.severity.value == "WARN"
    assert check.metadata["added"].value == ["note"]
    assert _types(bigquery_client, table_id) == original
    # `allow_columns` lets it through, and the check warns about it.
    added = run_rds(_with_policy(base, "allow_columns"), instance)
    check = _schema_check(added)
    assert not check.passed and check.metadata["added"].value == ["note"]
    assert check.metadata["removed"].value == [] and check.metadata["retyped"].value == []
    assert _types(bigquery_client, table_id) == {**original, "note": "STRING"}
    rows_before = _rows(bigquery_client, table_id)

    # A column removed and one retyped: `allow_columns` fails before publishing.
    _alter(store, AFTER_RETYPE, aws_clients, source.identifier)
    refused = run_rds(_with_policy(base, "allow_columns"), instance, raise_on_error=False)
    assert not refused.success
    [failure] = [e for e in refused.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert "removed name" in message and "retyped score NUMERIC -> STRING" in message
    check = _schema_check(refused)
    assert check.metadata["removed"].value == ["name"]
    assert check.metadata["retyped"].value == [
        {"column": "score", "old_type": "NUMERIC", "new_type": "STRING"}
    ]
    assert _rows(bigquery_client, table_id) == rows_before  # the previous table, intact
    # `allow` publishes it; the check still reports what changed.
    allowed = run_rds(_with_policy(base, "allow"), instance)
    check = _schema_check(allowed)
    assert not check.passed and check.metadata["removed"].value == ["name"]
    types = _types(bigquery_client, table_id)
    assert "name" not in types and types["score"] == "STRING"
    # An unchanged schema passes.
    again = run_rds(_with_policy(base, "block"), instance)
    assert _schema_check(again).passed


def test_a_misspelt_personal_data_column_fails_the_load_naming_it(
    local_cloud, aws_clients, pipeline_config, rds_dataset, monkeypatch
):
    monkeypatch.setenv(KEY_ENV, SECRET)
    tables = {"pii.people": {"columns": {"emial": "hash"}}}
    source, _ = _instance(local_cloud, aws_clients, pipeline_config, tables)
    result = run_rds(
        _config(pipeline_config, rds_dataset, source),
        DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "'emial'" in failure.step_failure_data.error.message


@pytest.fixture(autouse=True)
def _no_default_key(monkeypatch):
    """Each test sets (or removes) the key itself."""
    monkeypatch.delenv(KEY_ENV, raising=False)
