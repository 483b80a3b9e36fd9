"""DynamoDB tables a data team governs: personal data and schema-change policies, end to end.

Real exports of tables in the local cloud, loaded by the assets into BigQuery.
Expected digests are `hmac.new(key, text.encode(), sha256)`, computed here.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import uuid
from datetime import timedelta
from typing import Any

from dagster import DagsterInstance, materialize

from export_pipeline.config import BigQueryConfig, PipelineConfig
from export_pipeline.local_cloud.dynamodb_time_control import shift_history
from export_pipeline.local_cloud.settings import LOCAL_BIGQUERY_PROJECT
from export_pipeline_tests.dynamodb._pipeline_helpers import (
    DATASET,
    REGION,
    assets_for,
    bigquery_rows,
    create_table,
    make_config,
    materialization_metadata,
    run,
    table_id,
)
from export_pipeline_tests.dynamodb.test_incremental import _move_mark_back
from export_pipeline_tests.support.principals import pipeline_resources

KEY_ENV = "EXPORT_PIPELINE_TEST_DYNAMODB_HASH_KEY"
SECRET = "dynamodb-test-hmac-key-" + uuid.uuid4().hex


def digest(text: str) -> str:
    return hmac.new(SECRET.encode(), text.encode("utf-8"), hashlib.sha256).hexdigest()


def governed(config: PipelineConfig, **settings: Any) -> PipelineConfig:
    """`config` with its one table's governed settings and this module's key variable."""
    [table] = config.dynamodb.tables
    entry = type(table).model_validate({**table.model_dump(), **settings})
    dynamodb = config.dynamodb.model_copy(update={"tables": [entry]})
    bigquery = BigQueryConfig.model_validate(
        {**config.bigquery.model_dump(), "hash_key": {"env_var": KEY_ENV}}
    )
    return config.model_copy(update={"dynamodb": dynamodb, "bigquery": bigquery})


def every_value_in_dataset(client: Any) -> str:
    """Every table of the dataset (staging ones included), every row, as one text."""
    texts = []
    for table in client.list_tables(f"{LOCAL_BIGQUERY_PROJECT}.{DATASET}"):
        name = f"{LOCAL_BIGQUERY_PROJECT}.{DATASET}.{table.table_id}"
        rows = client.query(f"SELECT * FROM `{name}`").result()
        texts += [json.dumps(dict(r.items()), default=str, ensure_ascii=False) for r in rows]
    return "\n".join(texts)


def _item(pk: str, email: str, name: str) -> dict[str, Any]:
    return {
        "pk": {"S": pk},
        "email": {"S": email},
        "name": {"S": name},
        "age": {"N": "42.50"},
        "qty": {"N": "1"},
    }


PII = {"columns": {"email": "hash", "name": "exclude", "age": "hash"}}


def _assert_no_plaintext(bigquery_client: Any, plaintexts: list[str]) -> None:
    everything = every_value_in_dataset(bigquery_client)
    for text in plaintexts:
        assert text not in everything, text
    assert SECRET not in everything


def test_full_load_holds_no_excluded_or_hashed_plaintext(
    aws_clients, bigquery_client, unique_name, monkeypatch, caplog
):
    monkeypatch.setenv(KEY_ENV, SECRET)
    caplog.set_level(logging.DEBUG)
    table = f"piifull-{unique_name}"
    emails = ["a'quote@example.org", "back\\slash@example.org", "üñí@example.org"]
    create_table(
        aws_clients.dynamodb,
        table,
        [_item(f"k{i}", e, f"Hidden Name {i}") for i, e in enumerate(emails)],
    )
    config = governed(make_config(table), **PII)
    instance = DagsterInstance.ephemeral()
    result = run(config, instance)
    assert result.success
    rows = bigquery_rows(bigquery_client, table)
    for i, email in enumerate(emails):
        assert rows[f"k{i}"]["email"] == digest(email)
        assert rows[f"k{i}"]["age"] == digest("42.5")  # a number's canonical text
        assert "name" not in rows[f"k{i}"]
    _assert_no_plaintext(bigquery_client, [*emails, "Hidden Name", "42.50"])
    assert SECRET not in caplog.text
    assert all(SECRET not in repr(r) for r in instance.all_logs(result.run_id))


def test_incremental_changes_hold_no_excluded_or_hashed_plaintext(
    aws_clients, bigquery_client, unique_name, monkeypatch
):
    monkeypatch.setenv(KEY_ENV, SECRET)
    table = f"piiinc-{unique_name}"
    ddb = aws_clients.dynamodb
    create_table(ddb, table, [_item("a", "seed@example.org", "Seed Person")])
    shift_history(ddb.meta.endpoint_url, table, 2 * 3600, REGION)
    config = governed(make_config(table, mode="incremental"), **PII)
    instance = DagsterInstance.ephemeral()
    assert run(config, instance).success
    _move_mark_back(aws_clients, bigquery_client, table, timedelta(hours=1))

    ddb.put_item(TableName=table, Item=_item("b", "new@example.org", "New Person"))
    ddb.update_item(
        TableName=table,
        Key={"pk": {"S": "a"}},
        UpdateExpression="SET email = :e, #n = :n",
        ExpressionAttributeNames={"#n": "name"},
        ExpressionAttributeValues={
            ":e": {"S": "changed@example.org"},
            ":n": {"S": "Changed Person"},
        },
    )
    result = run(config, instance)
    assert result.success
    export_asset, _ = assets_for(config)
    strategy = materialization_metadata(result, export_asset.key)["export_strategy"]
    assert strategy == "incremental"
    rows = bigquery_rows(bigquery_client, table)
    assert rows["a"]["email"] == digest("changed@example.org")
    assert rows["b"]["email"] == digest("new@example.org")
    assert all("name" not in row for row in rows.values())
    # The change records carry OldImage too: none of its values reach BigQuery either.
    _assert_no_plaintext(
        bigquery_client,
        ["seed@example.org", "new@example.org", "changed@example.org", "Person"],
    )


def test_a_key_attribute_cannot_be_excluded_and_no_export_starts(
    aws_clients, unique_name, monkeypatch
):
    table = f"piikey-{unique_name}"
    create_table(aws_clients.dynamodb, table, [_item("a", "x@example.org", "X")])
    config = governed(make_config(table), columns={"pk": "exclude"})
    result = run(config, DagsterInstance.ephemeral(), raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert f"dynamodb.tables[{table}].columns" in message and "pk" in message
    arn = aws_clients.dynamodb.describe_table(TableName=table)["Table"]["TableArn"]
    assert aws_clients.dynamodb.list_exports(TableArn=arn)["ExportSummaries"] == []


def test_hash_without_the_key_fails_before_any_export_starts(aws_clients, unique_name, monkeypatch):
    table = f"piinokey-{unique_name}"
    create_table(aws_clients.dynamodb, table, [_item("a", "x@example.org", "X")])
    config = governed(make_config(table), **PII)
    resources = pipeline_resources(config)  # the local environment's default key applies here
    monkeypatch.delenv(KEY_ENV, raising=False)  # as in production without the secret
    result = materialize(
        list(assets_for(config)),
        resources=resources,
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert KEY_ENV in message and table in message
    # No ExportTableToPointInTime call was made.
    arn = aws_clients.dynamodb.describe_table(TableName=table)["Table"]["TableArn"]
    assert aws_clients.dynamodb.list_exports(TableArn=arn)["ExportSummaries"] == []


def _schema_check(result: Any) -> Any:
    evaluations = result.get_asset_check_evaluations()
    [check] = [c for c in evaluations if c.check_name == "schema_unchanged"]
    return check


def _types(client: Any, table: str) -> dict[str, str]:
    return {f.name: f.field_type for f in client.get_table(table_id(table)).schema}


def test_full_mode_schema_policies(aws_clients, bigquery_client, unique_name):
    table = f"policy-{unique_name}"
    ddb = aws_clients.dynamodb
    create_table(ddb, table, [{"pk": {"S": "a"}, "qty": {"N": "1"}, "old": {"S": "x"}}])
    base = make_config(table)
    instance = DagsterInstance.ephemeral()
    first = run(governed(base, schema_changes="block"), instance)
    assert _schema_check(first).passed
    original = _types(bigquery_client, table)

    # An attribute added: block refuses, allow_columns publishes and warns.
    ddb.put_item(
        TableName=table,
        Item={"pk": {"S": "a"}, "qty": {"N": "1"}, "old": {"S": "x"}, "color": {"S": "red"}},
    )
    blocked = run(governed(base, schema_changes="block"), instance, raise_on_error=False)
    assert not blocked.success
    check = _schema_check(blocked)
    assert not check.passed and check.metadata["added"].value == ["color"]
    assert _types(bigquery_client, table) == original
    added = run(governed(base, schema_changes="allow_columns"), instance)
    check = _schema_check(added)
    assert check.metadata["added"].value == ["color"] and not check.passed

    # An attribute removed and one retyped (INT64 -> NUMERIC): allow_columns refuses.
    ddb.put_item(TableName=table, Item={"pk": {"S": "a"}, "qty": {"N": "1.5"}, "color": {"S": "r"}})
    refused = run(governed(base, schema_changes="allow_columns"), instance, raise_on_error=False)
    assert not refused.success
    [failure] = [e for e in refused.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert "removed old" in message and "retyped qty INT64 -> NUMERIC" in message
    check = _schema_check(refused)
    assert check.metadata["removed"].value == ["old"]
    assert check.metadata["retyped"].value == [
        {"column": "qty", "old_type": "INT64", "new_type": "NUMERIC"}
    ]
    assert bigquery_rows(bigquery_client, table)["a"]["old"] == "x"  # the previous table
    allowed = run(governed(base, schema_changes="allow"), instance)
    assert not _schema_check(allowed).passed
    assert "old" not in _types(bigquery_client, table)
    assert _schema_check(run(governed(base, schema_changes="block"), instance)).passed


def test_incremental_mode_block_refuses_a_new_attribute_before_the_merge(
    aws_clients, bigquery_client, unique_name
):
    table = f"incpolicy-{unique_name}"
    ddb = aws_clients.dynamodb
    create_table(ddb, table, [{"pk": {"S": "a"}, "qty": {"N": "1"}}])
    shift_history(ddb.meta.endpoint_url, table, 2 * 3600, REGION)
    base = make_config(table, mode="incremental")
    instance = DagsterInstance.ephemeral()
    assert run(governed(base, schema_changes="block"), instance).success
    _move_mark_back(aws_clients, bigquery_client, table, timedelta(hours=1))
    ddb.put_item(TableName=table, Item={"pk": {"S": "b"}, "qty": {"N": "2"}, "color": {"S": "x"}})
    before = _types(bigquery_client, table)

    refused = run(governed(base, schema_changes="block"), instance, raise_on_error=False)
    assert not refused.success
    assert _schema_check(refused).metadata["added"].value == ["color"]
    assert _types(bigquery_client, table) == before  # not widened: nothing written
    assert set(bigquery_rows(bigquery_client, table)) == {"a"}
