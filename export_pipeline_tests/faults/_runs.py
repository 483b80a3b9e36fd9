"""Shared set-up of the fault tests: small configs, materializations, BigQuery snapshots."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from dagster import AssetsDefinition, DagsterInstance, ExecuteInProcessResult, materialize

from export_pipeline.config import (
    AwsConfig,
    BigQueryConfig,
    DynamoDBConfig,
    DynamoDBTableConfig,
    PipelineConfig,
    RdsConfig,
    RdsInstanceConfig,
)
from export_pipeline.dynamodb.source import DynamoDBSource
from export_pipeline.graph.assets import build_source_assets
from export_pipeline.local_cloud.settings import LOCAL_BIGQUERY_PROJECT
from export_pipeline.rds.source import RdsSource
from export_pipeline_tests.faults.proxy import FaultProxy, resources_through
from export_pipeline_tests.support.principals import pipeline_resources
from export_pipeline_tests.support.rds import loading_only

REGION = "eu-west-1"
BUCKET = "export-pipeline-local"
RDS_TABLE = "shop.customers"

# A few items covering the value kinds whose silent change would matter.
DYNAMODB_ITEMS = [
    {
        "pk": {"S": "a"},
        "qty": {"N": "3"},
        "price": {"N": "19.50"},
        "tags": {"SS": ["gift", "express"]},
        "address": {"M": {"city": {"S": "Cork"}}},
        "blob": {"B": b"\x00\xff"},
    },
    {"pk": {"S": "b"}, "qty": {"N": "-7"}, "price": {"N": "0.000000000000000000000000000001"}},
    {"pk": {"S": "c"}, "qty": {"N": "9223372036854775807"}, "note": {"S": "naïve ✓ 'q' `b`"}},
    {"pk": {"S": "d"}, "flag": {"BOOL": True}, "nothing": {"NULL": True}},
]


def make_config(
    dataset: str,
    *,
    dynamodb_table: str | None = None,
    rds_instances: list[RdsInstanceConfig] | None = None,
    mode: str = "full",
) -> PipelineConfig:
    """A config with at most one DynamoDB table (in `mode`) and the given RDS sources."""
    return PipelineConfig(
        environment="local",
        aws=AwsConfig(region=REGION, export_bucket=BUCKET, export_prefix="exports"),
        dynamodb=DynamoDBConfig(
            tables=[DynamoDBTableConfig(name=dynamodb_table, mode=mode)] if dynamodb_table else [],
            export_timeout_minutes=2,
            poll_max_interval_seconds=1,
            max_parallel_files=1,
        ),
        rds=RdsConfig(
            instances=rds_instances or [],
            export_timeout_minutes=2,
            poll_max_interval_seconds=0.5,
        ),
        bigquery=BigQueryConfig(project=LOCAL_BIGQUERY_PROJECT, dataset=dataset),
    )


def rds_source(base: PipelineConfig, tables: list[str] | None = None) -> RdsInstanceConfig:
    """The demo RDS instance of `base` (pipeline.yaml), exporting only `tables`."""
    demo = next(i for i in base.rds.instances if i.engine_family == "mysql")
    return loading_only(demo.model_copy(update={"export_only": tables or [RDS_TABLE]}))


def create_dynamodb_table(ddb: Any, name: str, items: list[dict[str, Any]]) -> None:
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.update_continuous_backups(
        TableName=name,
        PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
    )
    for item in items:
        ddb.put_item(TableName=name, Item=item)


def run(
    config: PipelineConfig,
    *,
    aws: FaultProxy | None = None,
    bigquery: FaultProxy | None = None,
    gcs: FaultProxy | None = None,
    instance: DagsterInstance | None = None,
    run_config: dict[str, Any] | None = None,
    selection: Any = None,
    raise_on_error: bool = False,
) -> ExecuteInProcessResult:
    """Materialize every asset of `config`, the clients optionally behind fault proxies."""
    resources = pipeline_resources(config)
    if aws is not None or bigquery is not None or gcs is not None:
        resources = resources_through(resources, aws=aws, bigquery=bigquery, gcs=gcs)
    return materialize(
        [*build_source_assets(DynamoDBSource(config)), *build_source_assets(RdsSource(config))],
        resources=resources,
        instance=instance or DagsterInstance.ephemeral(),
        run_config=run_config,
        selection=selection,
        raise_on_error=raise_on_error,
    )


def _plain(value: Any) -> Any:
    """A value in a comparable, hashable form that keeps every digit and byte."""
    if isinstance(value, Decimal):
        return ("decimal", str(value.normalize()))
    if isinstance(value, float):
        return ("float", value.hex())
    if isinstance(value, (dict, list)):
        return ("json", json.dumps(value, sort_keys=True, default=str))
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return ("time", value.isoformat())
    return value


def table_rows(client: Any, table_id: str, *, ignore: tuple[str, ...] = ()) -> list[tuple]:
    """Every row of a BigQuery table, exact and sorted (a multiset: duplicates show)."""
    rows = client.query(f"SELECT * FROM `{table_id}`").result()
    out = [tuple(sorted((k, _plain(v)) for k, v in row.items() if k not in ignore)) for row in rows]
    return sorted(out, key=repr)


def failure_messages(result: ExecuteInProcessResult) -> str:
    """The step failures of a run, with their causes, as one text."""
    parts = []
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            error = data.error if data else None
            if data and data.user_failure_data and data.user_failure_data.description:
                parts.append(f"[{event.step_key}] Failure: {data.user_failure_data.description}")
            while error is not None:
                parts.append(f"[{event.step_key}] {error.cls_name}: {error.message}")
                error = error.cause
    return "\n".join(parts)


# --------------------------------------------------------------------------- the shared good run


@dataclass(frozen=True)
class CleanRun:
    """One fault-free materialization of a small DynamoDB table and one RDS table.

    Shared by the fault, corruption, security and bad-input tests (an export
    costs seconds even locally): they compare with it, corrupt its files
    (restoring them afterwards), re-run its BigQuery steps on its instance,
    or scan its event log. Its dataset lives as long as the session's cloud.
    The two sources run as two runs on one instance, so that a broken RDS
    pipeline fails only the tests that need the RDS part (`require`), not
    the DynamoDB ones.
    """

    config: PipelineConfig
    instance: DagsterInstance
    results: dict[str, ExecuteInProcessResult]  # "dynamodb" / "rds" -> its run
    dynamodb_table: str
    rds: RdsInstanceConfig
    project: str

    @property
    def dataset(self) -> str:
        return self.config.bigquery.dataset

    def table_id(self, bigquery_table: str, dataset: str | None = None) -> str:
        return f"{self.project}.{dataset or self.dataset}.{bigquery_table}"

    def require(self, *sources: str) -> None:
        """Fail the calling test (naming the cause) unless those sources' clean runs worked."""
        import pytest

        for source in sources or ("dynamodb", "rds"):
            result = self.results[source]
            if not result.success:
                pytest.fail(
                    f"the fault-free {source} run failed, so this test cannot compare with it:\n"
                    + failure_messages(result)
                )


_CLEAN_RUNS: dict[str, CleanRun] = {}


def clean_run(
    local_cloud: Any, aws_clients: Any, bigquery_client: Any, base: PipelineConfig
) -> CleanRun:
    """The session's `CleanRun` (made on first use, per local cloud)."""
    key = str(local_cloud.state_dir)
    if key not in _CLEAN_RUNS:
        dataset = f"faults_clean_{uuid.uuid4().hex[:8]}"
        bigquery_client.create_dataset(f"{local_cloud.bigquery_project}.{dataset}")
        table = f"faults-{uuid.uuid4().hex[:10]}"
        create_dynamodb_table(aws_clients.dynamodb, table, DYNAMODB_ITEMS)
        rds = rds_source(base)
        config = make_config(dataset, dynamodb_table=table, rds_instances=[rds])
        instance = DagsterInstance.ephemeral()
        results = {
            source: run(
                config,
                instance=instance,
                selection=[
                    d.key
                    for d in build_source_assets(builder(config))
                    if isinstance(d, AssetsDefinition)
                ],
            )
            for source, builder in (("dynamodb", DynamoDBSource), ("rds", RdsSource))
        }
        _CLEAN_RUNS[key] = CleanRun(
            config, instance, results, table, rds, local_cloud.bigquery_project
        )
    return _CLEAN_RUNS[key]


def manifest_data_files(clean: CleanRun, table: str) -> int:
    """How many data files the clean run's export of `table` lists."""
    exports = clean.instance.get_latest_materialization_event(
        build_source_assets(DynamoDBSource(clean.config))[0].key
    )
    assert exports is not None and exports.asset_materialization is not None
    uri = exports.asset_materialization.metadata["manifest_uris"].value[0]  # type: ignore[index]
    return len(_read_manifest_files(uri))


def _read_manifest_files(summary_uri: str) -> list[dict[str, Any]]:
    import boto3

    from export_pipeline.local_cloud.settings import LocalCloudSettings

    settings = LocalCloudSettings.from_env()
    s3 = boto3.client(
        "s3",
        region_name=REGION,
        endpoint_url=settings.aws_endpoint_url,
        aws_access_key_id=settings.aws_access_key_id,
        aws_secret_access_key=settings.aws_secret_access_key,
    )
    bucket, key = summary_uri.removeprefix("s3://").split("/", 1)
    summary = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    files = s3.get_object(Bucket=bucket, Key=summary["manifestFilesS3Key"])["Body"].read()
    return [json.loads(line) for line in files.decode().splitlines() if line.strip()]


def bigquery_keys(config: PipelineConfig) -> list[Any]:
    """The asset keys of every BigQuery table asset of `config`."""
    from export_pipeline.registry import configured_sources

    return [
        table.key
        for source in configured_sources(config)
        for unit in source.units()
        for table in unit.tables
    ]


def run_bigquery_steps(config: PipelineConfig, clean: CleanRun, **kwargs: Any):
    """Re-run only the BigQuery assets of `config`, loading the clean run's exports."""
    return run(config, instance=clean.instance, selection=bigquery_keys(config), **kwargs)


def export_metadata(clean: CleanRun, key: Any) -> dict[str, Any]:
    event = clean.instance.get_latest_materialization_event(key)
    assert event is not None and event.asset_materialization is not None
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}
