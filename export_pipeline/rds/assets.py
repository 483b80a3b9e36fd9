"""Dagster assets for RDS MySQL → BigQuery, one set per configured instance/cluster.

Per source: `["rds", <identifier>, "snapshot_export"]` exports the newest
snapshot (or one named in run config) to S3, reusing an export already
running or complete for the same snapshot and scope; then one
`["bigquery", <dataset>, rds_<db>_<table>]` asset per exported table loads
that table's Parquet into BigQuery. The BigQuery assets find the export
through run config (`export_task_identifier`, the reload path) or the latest
materialization of the export asset — no data passes through an IO manager.

Waiting: by default the export asset waits for its task (blocking, bounded by
`rds.export_timeout_minutes`). With run config `wait_for_completion: false`
it starts (or reuses) the task, records it with `wait_mode: sensor` and
returns; the table assets of the same run then skip (saying why) and
`export_pipeline.export_sensors.export_completion_sensor` requests their load
when the task is COMPLETE (or a failing load run when it FAILED/CANCELED).
Each asset runs in its own pool (one export per source, one load per BigQuery
table at a time), and transient AWS/Google errors retry the step
(`export_pipeline.errors`) while permanent ones fail at once with what to fix.
"""

import re
from collections.abc import Iterator
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    Config,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableSchema,
    asset,
    multi_asset,
)
from dagster_aws.rds import RDSResource
from dagster_aws.s3 import S3Resource
from pydantic import Field

from export_pipeline.bigquery.tables import TableId, require_dataset
from export_pipeline.config import PipelineConfig, RdsInstanceConfig
from export_pipeline.errors import TRANSIENT_RETRY_POLICY, retry_only_transient
from export_pipeline.naming import rds_table_name
from export_pipeline.rds.export_files import ExportLocation, read_tables_info
from export_pipeline.rds.export_tasks import (
    COMPLETE,
    RUNNING_STATUSES,
    RdsExportError,
    describe_export_task,
    ensure_export_task,
    find_snapshot,
    skipped_tables,
    wait_for_export,
)
from export_pipeline.rds.identifiers import export_task_identifier
from export_pipeline.rds.loading import load_export_table
from export_pipeline.resources.bigquery import BigQueryResource
from export_pipeline.resources.cloud import CloudResource

GROUP_NAME = "rds"
SOURCE_TAGS = {"export_pipeline/source": "rds"}
OWNERS = ["team:data-platform"]
CODE_VERSION = "rds-1"
ROW_COUNT_CHECK = "row_count_matches_export"
EXPORT_ID_METADATA = "export_task_identifier"
# How the export asset waited: "blocking" or "sensor" (read by the completion sensor).
WAIT_MODE_METADATA = "wait_mode"
BLOCKING = "blocking"
SENSOR = "sensor"
# Files of one table uploaded at once (load jobs appending to its staging table).
PARALLEL_UPLOADS = 2


class SnapshotExportConfig(Config):
    snapshot_identifier: str | None = Field(
        default=None,
        description="Export this snapshot instead of the newest available one.",
    )
    export_attempt: int = Field(
        default=1,
        ge=1,
        description="Raise to 2, 3, … to start a fresh export after a FAILED or CANCELED one "
        "for the same snapshot (AWS never reuses an export task identifier).",
    )
    wait_for_completion: bool | None = Field(
        default=None,
        description="Unset: as pipeline.yaml's `wait` for this source says (blocking when it "
        "says nothing). true (blocking): wait for the export task, up to "
        "rds.export_timeout_minutes — for small databases and `dagster job execute` in CI. "
        "false (sensor): start it, record it and return at once; export_completion_sensor "
        "requests the table loads when it is COMPLETE, so no worker is held for hours.",
    )


class RdsTableLoadConfig(Config):
    export_task_identifier: str | None = Field(
        default=None,
        description="Load from this existing export task instead of the export asset's latest "
        "materialization (reload without a new export).",
    )


def waits(run_config_value: bool | None, source: RdsInstanceConfig) -> bool:
    """Blocking wait or not: run config first, then the source's `wait` in pipeline.yaml.

    `wait` (`blocking` | `sensor`) is a proposed configuration field; until it
    exists every source is `blocking` unless the run config says otherwise.
    """
    if run_config_value is not None:
        return run_config_value
    return str(getattr(source, "wait", BLOCKING)) != SENSOR


def _pool(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", "_".join(parts))


def export_pool(source: RdsInstanceConfig) -> str:
    """One export of a source at a time."""
    return _pool("rds_export", source.identifier)


def table_pool(config: PipelineConfig, database: str, table: str) -> str:
    """One load into a BigQuery table at a time (limit 1, deploy/dagster.yaml)."""
    return _pool("bigquery", config.bigquery.dataset, rds_table_name(database, table))


def export_asset_key(source: RdsInstanceConfig) -> AssetKey:
    return AssetKey(["rds", source.identifier, "snapshot_export"])


def table_asset_key(config: PipelineConfig, database: str, table: str) -> AssetKey:
    return AssetKey(["bigquery", config.bigquery.dataset, rds_table_name(database, table)])


def export_s3_prefix(config: PipelineConfig) -> str:
    """Where StartExportTask writes: `<export_prefix>/rds` (AWS adds `/<task id>/`)."""
    return f"{config.aws.export_prefix}/rds" if config.aws.export_prefix else "rds"


def build_rds_assets(config: PipelineConfig) -> list[AssetsDefinition | AssetChecksDefinition]:
    """The export asset and the BigQuery table assets of every configured source."""
    assets: list[AssetsDefinition | AssetChecksDefinition] = []
    for source in config.rds.instances:
        assets.append(_build_export_asset(config, source))
        for database, table in source.tables():
            assets.append(_build_table_asset(config, source, database, table))
    return assets


def _retry_hint(source: RdsInstanceConfig) -> str:
    return (
        f"To retry, materialize {export_asset_key(source).to_user_string()} with run config "
        "export_attempt set one higher (a fresh export of the same snapshot), or name another "
        "snapshot in snapshot_identifier."
    )


def _build_export_asset(pipeline: PipelineConfig, source: RdsInstanceConfig) -> AssetsDefinition:
    key = export_asset_key(source)

    @asset(
        key=key,
        group_name=GROUP_NAME,
        kinds={"rds", "s3"},
        tags=SOURCE_TAGS,
        owners=OWNERS,
        code_version=CODE_VERSION,
        description=f"Snapshot of RDS {source.kind} {source.identifier} exported to S3 as Parquet.",
        pool=export_pool(source),
        retry_policy=TRANSIENT_RETRY_POLICY,
    )
    def _snapshot_export(
        context: AssetExecutionContext,
        config: SnapshotExportConfig,
        cloud: CloudResource,
        rds: RDSResource,
    ) -> MaterializeResult:
        with retry_only_transient(
            f"snapshot export of RDS {source.kind} {source.identifier}", context.log.warning
        ):
            return _export(context, config, rds)

    def _export(
        context: AssetExecutionContext, config: SnapshotExportConfig, rds: RDSResource
    ) -> MaterializeResult:
        with rds.get_rds_client() as client:
            snapshot = find_snapshot(client, source, config.snapshot_identifier)
            identifier = export_task_identifier(
                source.identifier, snapshot.identifier, source.export_only, config.export_attempt
            )
            hint = _retry_hint(source)
            task, started = ensure_export_task(
                client,
                identifier=identifier,
                source_arn=snapshot.arn,
                bucket=pipeline.aws.export_bucket,
                prefix=export_s3_prefix(pipeline),
                iam_role_arn=source.iam_role_arn,
                kms_key_id=source.kms_key_id,
                export_only=source.export_only,
                retry_hint=hint,
            )
            context.log.info(
                f"{'started' if started else 'reusing'} export task {identifier} of snapshot "
                f"{snapshot.identifier} ({task.get('Status')})"
            )
            if not waits(config.wait_for_completion, source):
                context.log.info(
                    f"sensor mode: not waiting for {identifier}; export_completion_sensor "
                    "requests the table loads when it is COMPLETE"
                )
                return MaterializeResult(
                    metadata=_export_metadata(
                        identifier, source, snapshot, task, started, [], SENSOR
                    )
                )
            task = wait_for_export(
                client,
                identifier,
                max_interval_seconds=pipeline.rds.poll_max_interval_seconds,
                timeout_seconds=pipeline.rds.export_timeout_minutes * 60,
                retry_hint=hint,
                log=context.log.info,
            )
        skipped = skipped_tables(task.get("WarningMessage"), source.export_only)
        if skipped:
            context.log.warning(
                f"export {identifier} skipped {skipped}: their BigQuery assets will fail "
                f"(WarningMessage: {task.get('WarningMessage')})"
            )
        return MaterializeResult(
            metadata=_export_metadata(
                identifier, source, snapshot, task, started, skipped, BLOCKING
            )
        )

    return _snapshot_export


def _export_metadata(
    identifier: str,
    source: RdsInstanceConfig,
    snapshot: Any,
    task: dict[str, Any],
    started: bool,
    skipped: list[str],
    wait_mode: str,
) -> dict[str, Any]:
    location = ExportLocation(task["S3Bucket"], task.get("S3Prefix") or "", identifier)
    metadata: dict[str, Any] = {
        EXPORT_ID_METADATA: identifier,
        WAIT_MODE_METADATA: wait_mode,
        "source": f"{source.kind}:{source.identifier}",
        "snapshot_identifier": snapshot.identifier,
        "snapshot_arn": snapshot.arn,
        "snapshot_time": MetadataValue.timestamp(task.get("SnapshotTime") or snapshot.created),
        "export_reused": not started,
        "status": task.get("Status", ""),
        "s3_uri": MetadataValue.path(location.uri()),
        "export_only": MetadataValue.json(list(source.export_only)),
        "skipped_tables": MetadataValue.json(skipped),
        "total_extracted_gb": float(task.get("TotalExtractedDataInGB") or 0),
    }
    if task.get("WarningMessage"):
        metadata["warning_message"] = MetadataValue.text(task["WarningMessage"])
    return metadata


def _export_to_load(
    context: AssetExecutionContext, config: RdsTableLoadConfig, key: AssetKey, rds: Any
) -> tuple[str, str | None]:
    """The export task to load, and why not to load it now (sensor mode), if so."""
    if config.export_task_identifier:
        return config.export_task_identifier, None
    event = context.instance.get_latest_materialization_event(key)
    materialization = event.asset_materialization if event is not None else None
    entry = materialization.metadata.get(EXPORT_ID_METADATA) if materialization else None
    if event is None or materialization is None or entry is None:
        raise RdsExportError(
            f"no materialization of {key.to_user_string()} records an export: materialize it "
            "first, or give run config export_task_identifier"
        )
    identifier = str(entry.value)
    mode = materialization.metadata.get(WAIT_MODE_METADATA)
    if mode is None or mode.value != SENSOR:
        return identifier, None
    if event.run_id == context.run.run_id:
        return identifier, (
            f"this run started export task {identifier} in sensor mode (wait_for_completion: "
            "false) and did not wait: export_completion_sensor requests this load when it is "
            "COMPLETE"
        )
    task = describe_export_task(rds, identifier)
    status = (task or {}).get("Status", "").upper()
    if status in RUNNING_STATUSES:
        return identifier, (
            f"export task {identifier} (sensor mode) is {status}: export_completion_sensor "
            "requests this load when it is COMPLETE"
        )
    return identifier, None


def _build_table_asset(
    pipeline: PipelineConfig, source: RdsInstanceConfig, database: str, table: str
) -> AssetsDefinition:
    key = table_asset_key(pipeline, database, table)
    export_key = export_asset_key(source)
    target = f"{database}.{table}"

    # A multi_asset of one, only because it can leave out both the materialization and the
    # check result (skippable + can_subset) when the load is left to the completion sensor.
    @multi_asset(
        name=key.to_python_identifier(),
        specs=[
            AssetSpec(
                key=key,
                deps=[export_key],
                group_name=GROUP_NAME,
                kinds={"bigquery"},
                tags=SOURCE_TAGS,
                owners=OWNERS,
                code_version=CODE_VERSION,
                description=f"MySQL table {target} of RDS {source.kind} {source.identifier}, "
                "as of the exported snapshot.",
                skippable=True,
            )
        ],
        check_specs=[
            AssetCheckSpec(
                ROW_COUNT_CHECK,
                asset=key,
                description="BigQuery holds as many rows as the export wrote for the table.",
            )
        ],
        can_subset=True,
        pool=table_pool(pipeline, database, table),
        retry_policy=TRANSIENT_RETRY_POLICY,
    )
    def _bigquery_table(
        context: AssetExecutionContext,
        config: RdsTableLoadConfig,
        cloud: CloudResource,
        rds: RDSResource,
        s3: S3Resource,
        bigquery: BigQueryResource,
    ) -> Iterator[MaterializeResult]:
        if key not in context.selected_asset_keys:
            return  # only the check was selected: it runs with a load, not on its own
        with retry_only_transient(f"BigQuery load of MySQL table {target}", context.log.warning):
            result = _load(context, config, rds, s3, bigquery)
        if result is not None:
            yield result

    def _load(
        context: AssetExecutionContext,
        config: RdsTableLoadConfig,
        rds: RDSResource,
        s3: S3Resource,
        bigquery: BigQueryResource,
    ) -> MaterializeResult | None:
        with rds.get_rds_client() as client:
            identifier, deferred = _export_to_load(context, config, export_key, client)
            if deferred is not None:
                context.log.info(f"{target}: not loading now: {deferred}")
                return None
            task = describe_export_task(client, identifier)
            if task is None:
                raise RdsExportError(f"{target}: export task {identifier!r} not found")
            if task.get("Status", "").upper() != COMPLETE:
                task = wait_for_export(
                    client,
                    identifier,
                    max_interval_seconds=pipeline.rds.poll_max_interval_seconds,
                    timeout_seconds=pipeline.rds.export_timeout_minutes * 60,
                    retry_hint=_retry_hint(source),
                    log=context.log.info,
                )
        if skipped_tables(task.get("WarningMessage"), [target]):
            raise RdsExportError(
                f"{target} was skipped by export {identifier} (WarningMessage: "
                f"{task.get('WarningMessage')}); AWS skips tables whose column names hold "
                ", ; { } ( ) newline tab or ="
            )
        s3_client = s3.get_client()
        location = ExportLocation(task["S3Bucket"], task.get("S3Prefix") or "", identifier)
        tables = read_tables_info(s3_client, location)
        info = tables.get(target)
        if info is None:
            raise RdsExportError(
                f"{target} is not in export {identifier} (it has {sorted(tables)}); check "
                "rds.instances[].export_only and that the table exists in the snapshot"
            )
        if info.status.upper() != "COMPLETE":
            raise RdsExportError(
                f"{target} has status {info.status!r} in export {identifier}, not COMPLETE: "
                f"{info.raw.get('warningMessage', '')}"
            )
        snapshot_time = task.get("SnapshotTime")
        if snapshot_time is None:
            raise RdsExportError(f"export {identifier} has no SnapshotTime")
        table_id = TableId(bigquery.project, pipeline.bigquery.dataset, key.path[-1])
        table_ref = table_id.dotted
        with bigquery.get_client() as bq:
            require_dataset(bq, table_id.project, table_id.dataset)
            result = load_export_table(
                s3=s3_client,
                client=bq,
                location=location,
                info=info,
                table_ref=table_ref,
                exported_at=snapshot_time,
                description=f"MySQL {target} from RDS {source.kind} {source.identifier}, "
                f"snapshot of {snapshot_time.isoformat()} (export {identifier}). Managed by "
                "export_pipeline: replaced on every load.",
                log=context.log.info,
                warn=context.log.warning,
                parallel_uploads=PARALLEL_UPLOADS,
            )
        passed = result.row_count == result.expected_row_count
        return MaterializeResult(
            asset_key=key,
            metadata={
                "dagster/row_count": result.row_count,
                "dagster/table_name": table_ref,
                "bigquery_console": MetadataValue.url(table_id.console_url),
                "dagster/column_schema": TableSchema(
                    columns=[
                        TableColumn(f.name, f.field_type, description=f.description)
                        for f in result.schema
                    ]
                ),
                EXPORT_ID_METADATA: identifier,
                "snapshot_time": MetadataValue.timestamp(snapshot_time),
                "s3_uri": MetadataValue.path(location.uri(location.table_folder(database, table))),
                "files": result.files,
                "bytes_loaded": result.bytes_loaded,
                "unrepresentable_values": MetadataValue.json(result.unrepresentable),
                "renamed_columns": MetadataValue.json(result.renamed_columns),
                "columns_removed": MetadataValue.json(result.columns_removed),
                "upload_seconds": round(result.upload_seconds, 3),
                "load_seconds": round(result.total_seconds, 3),
            },
            check_results=[
                AssetCheckResult(
                    check_name=ROW_COUNT_CHECK,
                    passed=passed,
                    severity=AssetCheckSeverity.ERROR,
                    metadata={
                        "bigquery_rows": result.row_count,
                        "expected_rows": result.expected_row_count,
                        "expected_from": result.expected_row_count_source,
                    },
                )
            ],
        )

    return _bigquery_table
