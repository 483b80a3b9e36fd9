"""RDS and Aurora MySQL as a source: snapshot exports to S3 as Parquet, loaded into BigQuery.

One `ExportUnit` per configured instance or Aurora cluster: its export
asset (`["rds", "<identifier>_snapshot_export"]`) exports the newest
snapshot (or one named in run config), reusing an export already running or
complete for the same snapshot and scope; one table asset per exported
table (`["bigquery", <dataset>, "rds_<db>_<table>"]`) loads that table's
Parquet into BigQuery (`export_pipeline.rds.loading`). A sensor per source
(`export_pipeline.rds.snapshot_sensor`) exports each new snapshot.

The assets themselves are built by `export_pipeline.graph.assets`, the same
for every source; this module supplies what is RDS's own. Everything here
holds for every engine; what is MySQL's is `engine` (`export_pipeline.rds.engine`),
which `export_pipeline.postgres.source.PostgresSource` replaces.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from dagster import (
    AssetExecutionContext,
    AssetKey,
    Config,
    MetadataValue,
    SensorDefinition,
    TableColumn,
    TableSchema,
)

from export_pipeline.bigquery.tables import TableId, require_dataset
from export_pipeline.column_hashing import read_hash_key
from export_pipeline.config import PipelineConfig, RdsInstanceConfig, RdsTransfer
from export_pipeline.contract import (
    EXPORT_SUMMARY_METADATA,
    LOAD_METADATA,
    Export,
    ExportRunConfig,
    ExportState,
    ExportUnit,
    LoadOutcome,
    Source,
    TableTarget,
    ToLoad,
    bigquery_asset_key,
    bigquery_table_pool,
    pool_name,
)
from export_pipeline.naming import rds_table_name
from export_pipeline.rds.engine import MYSQL, Engine, check_engine
from export_pipeline.rds.export_files import (
    ExportFilesError,
    ExportLocation,
    TableInfo,
    checked_export_info,
    list_table_parquet,
    read_tables_info,
)
from export_pipeline.rds.exports import (
    COMPLETE,
    FAILED_STATUSES,
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
from export_pipeline.rds.run_config import RdsTableLoadConfig, SnapshotExportConfig
from export_pipeline.rds.snapshot_sensor import build_snapshot_sensor
from export_pipeline.rds.transfer import (
    StagedTable,
    delete_staged,
    export_transfer,
    stage_table,
    transferred_tables,
    worker_reason,
)
from export_pipeline.s3_locations import check_readable
from export_pipeline.table_settings import RdsTableSettings

CODE_VERSION = "rds-1"
# Export and table asset metadata: the export task the export made / the table was loaded from.
EXPORT_ID_METADATA = "export_task_identifier"
# Files of one table uploaded at once (load jobs appending to its staging table).
PARALLEL_UPLOADS = 2


def export_pool(source: RdsInstanceConfig) -> str:
    """One export of a source at a time."""
    return pool_name("rds_export", source.identifier)


def export_asset_key(source: RdsInstanceConfig) -> AssetKey:
    return AssetKey(["rds", f"{source.identifier}_snapshot_export"])


def table_asset_key(config: PipelineConfig, *parts: str) -> AssetKey:
    """`["bigquery", <dataset>, "rds_<database>[_<schema>]_<table>"]`."""
    return bigquery_asset_key(config.bigquery.dataset, rds_table_name(*parts))


# The pipeline's own exports go to `<export_prefix>/rds/<task id>/`.
RDS_EXPORT_FOLDER = "rds"


def export_s3_prefix(config: PipelineConfig) -> str:
    """Where StartExportTask writes: `<export_prefix>/rds` (AWS adds `/<task id>/`)."""
    prefix = config.aws.export_prefix
    return f"{prefix}/{RDS_EXPORT_FOLDER}" if prefix else RDS_EXPORT_FOLDER


def _retry_hint(source: RdsInstanceConfig) -> str:
    return (
        f"To retry, materialize {export_asset_key(source).to_user_string()} with run config "
        "export_attempt set one higher (a fresh export of the same snapshot), or name another "
        "snapshot in snapshot_identifier."
    )


class RdsSource(Source):
    """RDS instances and Aurora clusters (MySQL), exported with StartExportTask."""

    kind = "rds"
    title = "RDS MySQL snapshots"
    engine: ClassVar[Engine] = MYSQL
    export_kinds = frozenset({"rds", "s3"})
    code_version = CODE_VERSION
    export_resources = frozenset({"rds"})
    load_resources = frozenset({"rds", "s3", "bigquery", "gcs", "storage_transfer"})
    state_resources = frozenset({"rds"})
    export_config = SnapshotExportConfig
    load_config = RdsTableLoadConfig
    row_count_check_description = "BigQuery holds as many rows as the export wrote for the table."
    loaded_export_metadata = EXPORT_ID_METADATA

    def units(self) -> list[ExportUnit]:
        """The configured instances and clusters of this source's engine."""
        return [
            self._unit(source)
            for source in self.config.rds.instances
            if source.engine_family == self.engine.family
        ]

    def _unit(self, source: RdsInstanceConfig) -> ExportUnit:
        dataset = self.config.bigquery.dataset
        tables = tuple(
            TableTarget(
                key=table_asset_key(self.config, *parts),
                source_name=".".join(parts),
                description=f"{self.engine.name} table {'.'.join(parts)} of RDS {source.kind} "
                f"{source.identifier}, as of the exported snapshot.",
                pool=bigquery_table_pool(dataset, rds_table_name(*parts)),
            )
            for parts in source.loaded_tables()
        )
        return ExportUnit(
            name=source.identifier,
            key=export_asset_key(source),
            description=f"Snapshot of RDS {self.engine.name} {source.kind} {source.identifier} "
            "exported to S3 as Parquet.",
            pool=export_pool(source),
            wait=source.wait,
            tables=tables,
            settings=source,
        )

    def sensors(self) -> list[SensorDefinition]:
        """One new-snapshot sensor per instance or cluster."""
        return [build_snapshot_sensor(unit, self.kind) for unit in self.units()]

    def start_export(
        self, context: AssetExecutionContext, unit: ExportUnit, run_config: ExportRunConfig
    ) -> Export:
        assert isinstance(run_config, SnapshotExportConfig)
        source: RdsInstanceConfig = unit.settings
        with context.resources.rds.get_rds_client() as client:
            engine = check_engine(client, source, self.engine)
            snapshot = find_snapshot(client, source, run_config.snapshot_identifier)
            identifier = export_task_identifier(
                source.identifier,
                snapshot.identifier,
                source.export_only,
                run_config.export_attempt,
            )
            ensured = ensure_export_task(
                client,
                identifier=identifier,
                source_arn=snapshot.arn,
                bucket=self.config.aws.export_bucket,
                prefix=export_s3_prefix(self.config),
                iam_role_arn=source.iam_role_arn,
                kms_key_id=source.kms_key_id,
                export_only=source.export_only,
                retry_hint=_retry_hint(source),
                adopt_foreign=self.config.rds.adopt_foreign_exports
                and run_config.export_attempt == 1,
                readable=self.config.aws.readable_locations(RDS_EXPORT_FOLDER),
            )
        for line in ensured.passed_over:
            context.log.warning(line)
        task, started, identifier = ensured.task, ensured.started, ensured.identifier
        adopted = ensured.adopted
        how = "started" if started else "adopting" if adopted else "reusing"
        context.log.info(
            f"{how} export task {identifier} of snapshot {snapshot.identifier} "
            f"({task.get('Status')})" + (" made outside the pipeline" if ensured.adopted else "")
        )
        return Export(
            ids=(identifier,),
            metadata={
                **_export_metadata(identifier, source, snapshot, task, started, [], adopted),
                "engine": engine,
            },
            details=(snapshot, started, adopted),
        )

    def wait_for_export(
        self, context: AssetExecutionContext, unit: ExportUnit, export: Export
    ) -> Export:
        source: RdsInstanceConfig = unit.settings
        snapshot, started, adopted = export.details
        [identifier] = export.ids
        with context.resources.rds.get_rds_client() as client:
            task = wait_for_export(
                client,
                identifier,
                max_interval_seconds=self.config.rds.poll_max_interval_seconds,
                timeout_seconds=self.config.rds.export_timeout_minutes * 60,
                retry_hint=_retry_hint(source),
                log=context.log.info,
            )
        skipped = skipped_tables(task.get("WarningMessage"), source.export_only)
        if skipped:
            context.log.warning(
                f"export {identifier} skipped {skipped}: their BigQuery assets will fail "
                f"(WarningMessage: {task.get('WarningMessage')})"
            )
        return Export(
            ids=export.ids,
            metadata={
                **export.metadata,
                **_export_metadata(identifier, source, snapshot, task, started, skipped, adopted),
            },
            details=export.details,
        )

    def export_ids(self, metadata: Mapping[str, Any]) -> tuple[str, ...]:
        identifier = metadata.get(EXPORT_ID_METADATA)
        return (str(identifier),) if identifier else ()

    def export_state(self, resources: Any, ids: Sequence[str]) -> ExportState:
        [identifier] = ids
        with resources.rds.get_rds_client() as client:
            return describe_export_state(client, identifier)

    def requested_export_ids(self, run_config: Config) -> tuple[str, ...] | None:
        assert isinstance(run_config, RdsTableLoadConfig)
        if run_config.export_task_identifier:
            return (run_config.export_task_identifier,)
        return None

    def load_run_config(self, ids: Sequence[str]) -> dict[str, Any]:
        [identifier] = ids
        return {"export_task_identifier": identifier}

    def load_table(
        self,
        context: AssetExecutionContext,
        unit: ExportUnit,
        table: TableTarget,
        to_load: ToLoad,
    ) -> LoadOutcome:
        source: RdsInstanceConfig = unit.settings
        pipeline = self.config
        key = table.key
        target = table.source_name
        parts = target.split(".")
        [identifier] = to_load.ids
        with context.resources.rds.get_rds_client() as client:
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
        s3_client = context.resources.s3.get_client()
        bigquery = context.resources.bigquery
        if skipped_tables(task.get("WarningMessage"), [target]):
            raise RdsExportError(
                f"{target} was skipped by export {identifier} (WarningMessage: "
                f"{task.get('WarningMessage')}); AWS skips tables it cannot export (column "
                "names holding a space or , ; { } ( ) newline tab =, PostgreSQL unlogged or "
                "temporary tables): rename the columns or make the table logged"
            )
        check_readable(
            f"{target}: export task {identifier}",
            task["S3Bucket"],
            task.get("S3Prefix") or "",
            pipeline.aws.readable_locations(RDS_EXPORT_FOLDER),
        )
        location = ExportLocation(task["S3Bucket"], task.get("S3Prefix") or "", identifier)
        try:
            checked_export_info(s3_client, location, task)
        except ExportFilesError as error:
            raise RdsExportError(f"{target}: {error}") from None
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
        settings = source.table_settings(tuple(parts))
        hash_key = None
        if settings.hashed_columns:
            hash_key = read_hash_key(
                pipeline.bigquery.hash_key.env_var, [f"{source.identifier} table {target}"]
            )
        staged = None
        if pipeline.rds.transfer_of(source) is RdsTransfer.STORAGE_TRANSFER:
            staged = self._stage_by_transfer(context, source, location, tables, info, settings)
        with (
            bigquery.get_client() as bq,
            context.resources.gcs.staging(context.run.run_id) as gcs,
        ):
            require_dataset(bq, table_id.project, table_id.dataset)
            result = load_export_table(
                s3=s3_client,
                client=bq,
                location=location,
                info=info,
                table_ref=table_ref,
                exported_at=snapshot_time,
                description=f"{self.engine.name} {target} from RDS {source.kind} "
                f"{source.identifier}, "
                f"snapshot of {snapshot_time.isoformat()} (export {identifier}). Managed by "
                "export_pipeline: replaced on every load.",
                log=context.log.info,
                warn=context.log.warning,
                parallel_uploads=PARALLEL_UPLOADS,
                engine=self.engine,
                settings=settings,
                hash_key=hash_key,
                gcs=gcs,
                staged_uris=staged.uris if staged else None,
            )
        transfer_metadata: dict[str, Any] = {"transfer": "worker"}
        if staged is not None:
            with context.resources.gcs.get_client() as gcs_client:
                deleted = delete_staged(gcs_client, staged.transfer, staged.folder)
            context.log.debug(f"{target}: deleted its {deleted} staged object(s) after publishing")
            transfer_metadata = {
                "transfer": "storage_transfer",
                "transfer_operation": staged.operation_name,
                "transfer_started": staged.started,
            }
        return LoadOutcome(
            metadata={
                "dagster/row_count": result.row_count,
                "dagster/table_name": table_ref,
                LOAD_METADATA: "replace",
                "dagster/column_schema": TableSchema(
                    columns=[
                        TableColumn(f.name, f.field_type, description=f.description)
                        for f in result.schema
                    ]
                ),
                EXPORT_ID_METADATA: identifier,
                "snapshot_time": MetadataValue.timestamp(snapshot_time),
                "s3_uri": MetadataValue.path(location.uri(location.table_folder(*parts))),
                "files": result.files,
                "bytes_loaded": result.bytes_loaded,
                "unrepresentable_values": MetadataValue.json(result.unrepresentable),
                "renamed_columns": MetadataValue.json(result.renamed_columns),
                "columns_removed": MetadataValue.json(result.columns_removed),
                "upload_seconds": round(result.upload_seconds, 3),
                **transfer_metadata,
            },
            check_passed=result.row_count == result.expected_row_count,
            check_description=f"BigQuery has {result.row_count} rows; the export wrote "
            f"{result.expected_row_count} ({result.expected_row_count_source})",
            check_metadata={
                "bigquery_rows": result.row_count,
                "expected_rows": result.expected_row_count,
                "expected_from": result.expected_row_count_source,
            },
            schema_change=result.schema_change,
        )

    def _stage_by_transfer(
        self,
        context: AssetExecutionContext,
        source: RdsInstanceConfig,
        location: ExportLocation,
        tables: Mapping[str, TableInfo],
        info: TableInfo,
        settings: RdsTableSettings,
    ) -> StagedTable | None:
        """The table's files copied to GCS by the export's transfer job (None: the worker's way).

        A table whose files the worker must rewrite (`transfer.worker_reason`)
        is not copied and is loaded the worker's way, with a log line saying why.
        """
        target = info.target
        reason = worker_reason(info, settings, self.engine)
        if reason is not None:
            context.log.info(f"{target}: loaded through the worker, not Storage Transfer: {reason}")
            return None
        pipeline = self.config
        gcs_resource = context.resources.gcs
        transfer = export_transfer(
            location=location,
            project_id=context.resources.storage_transfer.project,
            role_arn=str(pipeline.rds.storage_transfer_role_arn),
            staging_bucket=str(gcs_resource.staging_bucket),
            staging_prefix=gcs_resource.staging_prefix,
            tables=transferred_tables(
                tables,
                source.loaded_tables(),
                {".".join(parts): source.table_settings(parts) for parts in source.loaded_tables()},
                self.engine,
            ),
            description=f"export_pipeline: RDS export {location.export_task_identifier} of "
            f"{source.kind} {source.identifier}",
        )
        s3_client = context.resources.s3.get_client()
        folder = location.table_folder(*target.split("."))
        files = {
            obj["Key"]: int(obj["Size"])
            for obj in list_table_parquet(s3_client, location, *target.split("."))
        }
        with (
            context.resources.gcs.get_client() as gcs,
            context.resources.storage_transfer.get_client() as client,
        ):
            return stage_table(
                client=client,
                gcs=gcs,
                transfer=transfer,
                folder=folder,
                files=files,
                what=f"{target} (export {location.export_task_identifier})",
                max_interval_seconds=pipeline.rds.poll_max_interval_seconds,
                timeout_seconds=pipeline.rds.export_timeout_minutes * 60,
                log=context.log.info,
            )


def describe_export_state(rds: Any, identifier: str) -> ExportState:
    """DescribeExportTasks, as COMPLETED, FAILED (with the cause) or RUNNING."""
    task = describe_export_task(rds, identifier)
    if task is None:
        return ExportState("FAILED", f"export task {identifier} not found")
    status = str(task.get("Status", "")).upper()
    if status == COMPLETE:
        return ExportState("COMPLETED")
    if status in FAILED_STATUSES:
        return ExportState("FAILED", f"{status}: {task.get('FailureCause') or 'no cause given'}")
    if status in RUNNING_STATUSES:
        return ExportState("RUNNING", f"{status} {task.get('PercentProgress', '?')}%")
    return ExportState("RUNNING", status or "unknown status")


def _export_metadata(
    identifier: str,
    source: RdsInstanceConfig,
    snapshot: Any,
    task: dict[str, Any],
    started: bool,
    skipped: list[str],
    adopted: bool,
) -> dict[str, Any]:
    location = ExportLocation(task["S3Bucket"], task.get("S3Prefix") or "", identifier)
    metadata: dict[str, Any] = {
        EXPORT_ID_METADATA: identifier,
        "source": f"{source.kind}:{source.identifier}",
        "snapshot_identifier": snapshot.identifier,
        "snapshot_arn": snapshot.arn,
        "snapshot_time": MetadataValue.timestamp(task.get("SnapshotTime") or snapshot.created),
        "export_reused": not started,
        # Started outside the pipeline (another identifier) and used as it is.
        "export_adopted": adopted,
        "status": task.get("Status", ""),
        "s3_uri": MetadataValue.path(location.uri()),
        "export_only": MetadataValue.json(list(source.export_only)),
        "skipped_tables": MetadataValue.json(skipped),
        "total_extracted_gb": float(task.get("TotalExtractedDataInGB") or 0),
    }
    metadata[EXPORT_SUMMARY_METADATA] = (
        f"snapshot {snapshot.identifier}: export {identifier}"
        f"{' (reused)' if not started else ''}, {len(source.export_only)} tables"
        + ("" if task.get("Status", "") == "COMPLETE" else f" ({task.get('Status', '')})")
    )
    if task.get("WarningMessage"):
        metadata["warning_message"] = MetadataValue.text(task["WarningMessage"])
    return metadata
