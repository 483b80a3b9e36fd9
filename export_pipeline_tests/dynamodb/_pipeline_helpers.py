"""Shared set-up for the DynamoDB pipeline tests: configs, tables, runs, BigQuery reads."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from dagster import AssetsDefinition, DagsterInstance, ExecuteInProcessResult, materialize

from export_pipeline.config import (
    AwsConfig,
    BigQueryConfig,
    DynamoDBConfig,
    DynamoDBTableConfig,
    PipelineConfig,
)
from export_pipeline.dynamodb.source import DynamoDBSource
from export_pipeline.graph.assets import build_source_assets
from export_pipeline.local_cloud.settings import LOCAL_BIGQUERY_PROJECT
from export_pipeline.naming import dynamodb_table_name
from export_pipeline_tests.support.principals import pipeline_resources

REGION = "eu-west-1"
BUCKET = "export-pipeline-local"  # created by the local cloud's seeding
DATASET = "aws_raw"


def make_config(
    table: str, mode: str = "full", bucket: str = BUCKET, deletes: str = "hard"
) -> PipelineConfig:
    return PipelineConfig(
        environment="local",
        aws=AwsConfig(region=REGION, export_bucket=bucket, export_prefix="exports"),
        dynamodb=DynamoDBConfig(
            tables=[DynamoDBTableConfig(name=table, mode=mode, deletes=deletes)],
            export_timeout_minutes=2,
            poll_max_interval_seconds=1,
            max_parallel_files=1,
        ),
        bigquery=BigQueryConfig(project=LOCAL_BIGQUERY_PROJECT, dataset=DATASET),
    )


def create_table(ddb: Any, name: str, items: list[dict[str, Any]], range_key: str | None = None):
    """A PAY_PER_REQUEST table keyed on `pk` (+ `range_key`), PITR on, holding `items`."""
    keys = [{"AttributeName": "pk", "KeyType": "HASH"}]
    attributes = [{"AttributeName": "pk", "AttributeType": "S"}]
    if range_key:
        keys.append({"AttributeName": range_key, "KeyType": "RANGE"})
        attributes.append({"AttributeName": range_key, "AttributeType": "N"})
    ddb.create_table(
        TableName=name,
        KeySchema=keys,
        AttributeDefinitions=attributes,
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.update_continuous_backups(
        TableName=name,
        PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
    )
    for item in items:
        ddb.put_item(TableName=name, Item=item)


def assets_for(config: PipelineConfig) -> tuple[AssetsDefinition, AssetsDefinition]:
    export_asset, bigquery_asset = build_source_assets(DynamoDBSource(config))
    assert isinstance(export_asset, AssetsDefinition)
    assert isinstance(bigquery_asset, AssetsDefinition)
    return export_asset, bigquery_asset


def run(
    config: PipelineConfig,
    instance: DagsterInstance,
    *,
    only_bigquery: bool = False,
    export_arn: str | None = None,
    raise_on_error: bool = True,
    resources: dict[str, Any] | None = None,
) -> ExecuteInProcessResult:
    """Materialize the table's assets; `resources` default to `pipeline_resources(config)`."""
    export_asset, bigquery_asset = assets_for(config)
    run_config = None
    if export_arn is not None:
        run_config = {"ops": {bigquery_asset.node_def.name: {"config": {"export_arn": export_arn}}}}
    return materialize(
        [export_asset, bigquery_asset],
        resources=resources if resources is not None else pipeline_resources(config),
        instance=instance,
        selection=[bigquery_asset.key] if only_bigquery else None,
        run_config=run_config,
        raise_on_error=raise_on_error,
    )


def table_id(table: str) -> str:
    return f"{LOCAL_BIGQUERY_PROJECT}.{DATASET}.{dynamodb_table_name(table)}"


def bigquery_rows(client: Any, table: str, key: str = "pk") -> dict[Any, dict[str, Any]]:
    """Every row of the table's BigQuery copy, by key (JSON parsed, NUMERIC as Decimal)."""
    rows = client.query(f"SELECT * FROM `{table_id(table)}`").result()
    out: dict[Any, dict[str, Any]] = {}
    for row in rows:
        record = dict(row.items())
        assert record[key] not in out, f"duplicate key {record[key]!r}"
        out[record[key]] = record
    return out


def plain(value: Any) -> Any:
    """A BigQuery value compared loosely: Decimals that are integers as int."""
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    return value


def materialization_metadata(result: ExecuteInProcessResult, key: Any) -> dict[str, Any]:
    events = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
    assert events, f"no materialization of {key}"
    return {k: v.value for k, v in events[-1].materialization.metadata.items()}


def op_pools(definition: AssetsDefinition) -> set[str]:
    """The pools of an asset's ops (a graph-backed table asset: its publishing step's)."""
    return {op.pool for op in definition.node_def.iterate_op_defs() if op.pool}


def publish_step_key(bigquery_asset: AssetsDefinition) -> str:
    """The step that writes BigQuery: the table asset's `publish` op inside its graph."""
    name = bigquery_asset.node_def.name
    return f"{name}.{name}__publish"
