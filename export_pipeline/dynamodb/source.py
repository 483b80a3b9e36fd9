"""DynamoDB as a source: point-in-time exports to S3, loaded into BigQuery.

One `ExportUnit` per configured table: its export asset
(`["dynamodb", "<table>_export"]`) runs a point-in-time export (a full
export, or in incremental mode the chain of windows since BigQuery's
high-water mark), or, when another run's export of exactly that is still
IN_PROGRESS, waits for that one instead of paying for a second
(`_start_or_adopt`); its one table asset
(`["bigquery", <dataset>, "dynamodb_<table>"]`) verifies the export's files
against the manifest, converts them to Parquet and replaces (full) or
merges (incremental) the BigQuery table (`export_pipeline.dynamodb.loading`).

The assets themselves are built by `export_pipeline.graph.assets`, the same
for every source; this module supplies what is DynamoDB's own.
"""

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dagster import AssetExecutionContext, AssetKey, Failure, MetadataValue

from export_pipeline.config import DynamoDBExportMode, DynamoDBTableConfig, PipelineConfig
from export_pipeline.contract import (
    EXPORT_SUMMARY_METADATA,
    Export,
    ExportRunConfig,
    ExportState,
    ExportUnit,
    LoadOutcome,
    LoadRunConfig,
    Source,
    StepsOfLoad,
    TableTarget,
    ToLoad,
    bigquery_asset_key,
    bigquery_table_pool,
    pool_name,
)
from export_pipeline.dynamodb import loading
from export_pipeline.dynamodb.export_files import FULL_EXPORT, INCREMENTAL_EXPORT
from export_pipeline.dynamodb.exports import (
    ExportFailedError,
    ExportRequest,
    ExportTimeoutError,
    RunningExports,
    start_export,
    table_export_folder,
    wait_for_export,
)
from export_pipeline.dynamodb.load_steps import DynamoDBLoadSteps
from export_pipeline.dynamodb.plan import ExportPlan, ExportStrategy, plan_incremental
from export_pipeline.dynamodb.run_config import DynamoDBExportConfig, DynamoDBLoadConfig
from export_pipeline.naming import dynamodb_table_name
from export_pipeline.resources.bigquery import BigQueryResource

# Bump when a change to this source changes what its assets produce.
CODE_VERSION = "dynamodb-1"
# Export asset metadata: the least advanced status of its exports.
EXPORT_STATUS_METADATA = "export_status"
# Export asset metadata: the export ARNs, in load order (what a load reads back).
EXPORT_ARNS_METADATA = "export_arns"
# Table asset metadata: the last export ARN the table was loaded from.
LOADED_EXPORT_METADATA = "export_arn"
# Root-run tag: the other runs' exports this run (or an earlier attempt of it) adopted.
ADOPTED_TAG_PREFIX = "export_pipeline/adopted_exports/"


def export_asset_key(table: str) -> AssetKey:
    return AssetKey(["dynamodb", f"{table}_export"])


def table_asset_key(config: PipelineConfig, table: str) -> AssetKey:
    return bigquery_asset_key(config.bigquery.dataset, dynamodb_table_name(table))


def export_pool(table: str) -> str:
    """The pool of a table's export asset: one export of a table at a time."""
    return pool_name("dynamodb_export", table)


def export_prefix(config: PipelineConfig, table: str) -> str:
    """Where a table's exports go: `<export_prefix>/dynamodb/<table>` (one folder per table)."""
    return f"{config.aws.export_prefix}/{table_export_folder(table)}".strip("/")


def _root_run_id(context: AssetExecutionContext) -> str:
    """The id of the run this one re-executes (itself when it is an original run)."""
    return context.run.root_run_id or context.run.run_id


def _run_now(context: AssetExecutionContext) -> datetime:
    """The root run's creation time (milliseconds): "now" that stays put across retries.

    Export windows and therefore ClientTokens are computed from it, so a
    retried step or a re-executed run asks for exactly the same exports.
    Milliseconds because manifests state times to the millisecond, and the
    high-water mark is taken from them.
    """
    record = context.instance.get_run_record_by_id(_root_run_id(context))
    created = record.create_timestamp if record is not None else datetime.now(UTC)
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    created = created.astimezone(UTC)
    return created.replace(microsecond=created.microsecond // 1000 * 1000)


@dataclass(frozen=True)
class _Planned:
    """The plan, and what re-planning from a later mark needs (incremental mode only)."""

    plan: ExportPlan
    now: datetime | None = None
    earliest_restorable: datetime | None = None


def _plan(
    context: AssetExecutionContext,
    table: DynamoDBTableConfig,
    config: PipelineConfig,
    ddb: Any,
    bigquery: BigQueryResource,
    table_arn: str,
) -> _Planned:
    if table.mode is DynamoDBExportMode.FULL:
        return _Planned(ExportPlan(ExportStrategy.FULL, "mode 'full': the whole table is exported"))
    with bigquery.get_client() as client:
        mark = loading.read_mark(client, loading.table_id(bigquery, config, table.name), table_arn)
    backups = ddb.describe_continuous_backups(TableName=table.name)
    pitr = backups["ContinuousBackupsDescription"].get("PointInTimeRecoveryDescription", {})
    earliest = (
        pitr.get("EarliestRestorableDateTime")
        if pitr.get("PointInTimeRecoveryStatus") == "ENABLED"
        else None
    )
    now = _run_now(context)
    plan = plan_incremental(
        watermark=mark.exported_to if mark is not None else None,
        now=now,
        earliest_restorable=earliest,
        mark_from_full_export=mark is not None and _is_full_export(ddb, mark.export_arn),
    )
    return _Planned(plan, now, earliest)


def _is_full_export(ddb: Any, export_arn: str) -> bool:
    """Whether the export that set the mark was a full one (unknown counts as full)."""
    try:
        description = ddb.describe_export(ExportArn=export_arn)["ExportDescription"]
    except ddb.exceptions.ExportNotFoundException:
        return True
    return description.get("ExportType", FULL_EXPORT) == FULL_EXPORT


def _request(
    config: PipelineConfig,
    table: str,
    table_arn: str,
    window: tuple[datetime, datetime] | None = None,
) -> ExportRequest:
    """The export this pipeline asks for: full, or the incremental `window`."""
    prefix = export_prefix(config, table)
    bucket = config.aws.export_bucket
    if window is None:
        return ExportRequest(table_arn, bucket, prefix, FULL_EXPORT)
    return ExportRequest(table_arn, bucket, prefix, INCREMENTAL_EXPORT, *window)


def _start_or_adopt(
    context: AssetExecutionContext,
    ddb: Any,
    planned: _Planned,
    config: PipelineConfig,
    table: str,
    table_arn: str,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Start the planned exports, or wait for the same ones another run already started.

    Returns the ExportDescriptions in load order and the ARNs adopted from
    another run. Incremental: when another run's IN_PROGRESS export starts
    where this run's next window starts, its window end is taken and the rest
    is planned again from there (`plan_incremental`); a remainder shorter
    than 15 minutes is left to the next run — a widened window for it would
    be a second export for a few minutes of changes, which is what adopting
    avoids. The mark then ends at the adopted export's end.
    """
    plan = planned.plan
    if not plan.windows and not plan.strategy.is_full:
        return [], []
    root_run_id = _root_run_id(context)
    running = RunningExports(
        ddb,
        table_arn,
        _adopted_before(context, table),
        readable=config.aws.readable_locations(table_export_folder(table)),
    )
    if running.cannot_list:
        context.log.warning(
            f"{table}: cannot list the table's exports, so a running export of another run "
            f"is not looked for (grant dynamodb:ListExports on the table): {running.cannot_list}"
        )
    descriptions: list[dict[str, Any]] = []
    adopted: list[str] = []
    windows: list[tuple[datetime, datetime] | None] = (
        [None] if plan.strategy.is_full else list(plan.windows)
    )
    while windows:
        window = windows.pop(0)
        request = _request(config, table, table_arn, window)
        other = running.matching(request, root_run_id)
        if other is not None:
            if running.is_remembered(other["ExportArn"]):
                context.log.info(
                    f"export {other['ExportArn']} of {table}, which an earlier attempt of this "
                    f"run waited for, is {other.get('ExportStatus')}: using it again instead of "
                    "starting a second one"
                )
            else:
                context.log.info(
                    f"export {other['ExportArn']} of {table} is already running (started "
                    f"{_iso(other.get('StartTime'))}): waiting for it instead of starting a "
                    "second one"
                )
            descriptions.append(other)
            adopted.append(other["ExportArn"])
            _log_passed_over(context, table, running)
            _remember_adopted(context, table, adopted)
            spec = other.get("IncrementalExportSpecification") or {}
            if window is not None and planned.now is not None:
                windows = _windows_after(spec["ExportToTime"], planned, table, context)
            continue
        _log_passed_over(context, table, running)
        description = start_export(ddb, request, root_run_id)
        context.log.info(
            f"{table}: {request.export_type} {description['ExportArn']} "
            f"is {description.get('ExportStatus')}"
            + (f" (window {window[0].isoformat()} .. {window[1].isoformat()})" if window else "")
        )
        descriptions.append(description)
    return descriptions, adopted


def _log_passed_over(context: AssetExecutionContext, table: str, running: RunningExports) -> None:
    """One line per running export of the table that was not taken, saying why (once each)."""
    for arn, reason in running.passed_over.items():
        context.log.info(f"{table}: running export {arn} is not used: {reason}")
    running.passed_over.clear()


def _adopted_tag(table: str) -> str:
    return f"{ADOPTED_TAG_PREFIX}{table}"


def _adopted_before(context: AssetExecutionContext, table: str) -> list[str]:
    """Exports of `table` an earlier attempt of this run adopted (a tag on the root run)."""
    root = context.instance.get_run_by_id(_root_run_id(context))
    raw = root.tags.get(_adopted_tag(table)) if root is not None else None
    return [str(arn) for arn in json.loads(raw)] if raw else []


def _remember_adopted(context: AssetExecutionContext, table: str, adopted: list[str]) -> None:
    """Tag the root run with the adopted exports, for a re-execution after a dead worker."""
    context.instance.add_run_tags(_root_run_id(context), {_adopted_tag(table): json.dumps(adopted)})


def _windows_after(
    end: datetime, planned: _Planned, table: str, context: AssetExecutionContext
) -> list[tuple[datetime, datetime] | None]:
    """The windows still to export after an adopted one that ends at `end`."""
    assert planned.now is not None
    rest = plan_incremental(
        watermark=end, now=planned.now, earliest_restorable=planned.earliest_restorable
    )
    if rest.strategy is ExportStrategy.INCREMENTAL:
        context.log.info(f"{table}: after the adopted export: {rest.reason}")
        return list(rest.windows)
    context.log.info(
        f"{table}: the adopted export ends at {_iso(end)}; nothing more exported in this run "
        f"({rest.strategy.value}: {rest.reason})"
    )
    return []


def _export_summary(plan: ExportPlan, exports: list[dict[str, Any]], metadata: dict) -> str:
    """`incremental: 1 export, 57 items` (items: changed items for an incremental export)."""
    if not exports:
        return f"{plan.strategy.value}: nothing exported"
    count = len(exports)
    text = (
        f"{plan.strategy.value}: {count} export{'s' if count > 1 else ''}, "
        f"{metadata['item_count']:,} items"
    )
    status = metadata[EXPORT_STATUS_METADATA]
    return text if status == "COMPLETED" else f"{text} ({status})"


def _export_metadata(
    table: str,
    table_arn: str,
    plan: ExportPlan,
    exports: list[dict[str, Any]],
    adopted: list[str],
) -> dict[str, Any]:
    arns = [e["ExportArn"] for e in exports]
    statuses = {str(e.get("ExportStatus")) for e in exports}
    metadata: dict[str, Any] = {
        # One status for the lot: the least advanced one.
        EXPORT_STATUS_METADATA: (
            "COMPLETED"
            if statuses <= {"COMPLETED"}
            else "FAILED"
            if "FAILED" in statuses
            else "IN_PROGRESS"
        ),
        "dynamodb_table": table,
        "table_arn": table_arn,
        "export_strategy": plan.strategy.value,
        "export_strategy_reason": plan.reason,
        EXPORT_ARNS_METADATA: MetadataValue.json(arns),
        "export_count": len(arns),
        "item_count": sum(int(e.get("ItemCount") or 0) for e in exports),
        "billed_size_bytes": sum(int(e.get("BilledSizeBytes") or 0) for e in exports),
        "manifest_uris": MetadataValue.json(
            [f"s3://{e['S3Bucket']}/{loading.manifest_key(e)}" for e in exports]
        ),
        # Another run's IN_PROGRESS exports this run waited for instead of starting its own.
        "adopted_export_arns": MetadataValue.json(adopted),
    }
    metadata[EXPORT_SUMMARY_METADATA] = _export_summary(plan, exports, metadata)
    if arns:
        metadata["export_arn"] = arns[-1]
    if exports and exports[0].get("ExportType", FULL_EXPORT) == FULL_EXPORT:
        metadata["export_time"] = _iso(exports[0].get("ExportTime"))
    elif exports:
        spec_first = exports[0].get("IncrementalExportSpecification", {})
        spec_last = exports[-1].get("IncrementalExportSpecification", {})
        metadata["export_from_time"] = _iso(spec_first.get("ExportFromTime"))
        metadata["export_to_time"] = _iso(spec_last.get("ExportToTime"))
    return metadata


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return str(value)


class DynamoDBSource(Source):
    """DynamoDB tables, exported with ExportTableToPointInTime (full or incremental)."""

    kind = "dynamodb"
    title = "DynamoDB tables"
    export_kinds = frozenset({"dynamodb", "s3"})
    code_version = CODE_VERSION
    export_resources = frozenset({"dynamodb", "bigquery"})
    load_resources = frozenset({"dynamodb", "s3", "bigquery", "gcs"})
    state_resources = frozenset({"dynamodb"})
    export_config = DynamoDBExportConfig
    load_config = DynamoDBLoadConfig
    row_count_check_description = (
        "Full loads: BigQuery row count equals the export manifest's itemCount. Incremental "
        "merges: one row per key (no duplicates)."
    )
    loaded_export_metadata = LOADED_EXPORT_METADATA

    def units(self) -> list[ExportUnit]:
        return [self._unit(table) for table in self.config.dynamodb.tables]

    def _unit(self, table: DynamoDBTableConfig) -> ExportUnit:
        config = self.config
        name = table.name
        bq_table = dynamodb_table_name(name)
        metadata = {"dynamodb_table": name, "mode": table.mode.value}
        how = (
            "merged from incremental exports."
            if table.mode is DynamoDBExportMode.INCREMENTAL
            else "replaced by each full export."
        )
        target = TableTarget(
            key=table_asset_key(config, name),
            source_name=name,
            description=f"DynamoDB table {name} in BigQuery "
            f"({config.bigquery.dataset}.{bq_table}), {how}",
            pool=bigquery_table_pool(config.bigquery.dataset, bq_table),
            metadata=metadata,
        )
        return ExportUnit(
            name=name,
            key=export_asset_key(name),
            description=(
                f"Point-in-time export of DynamoDB table {name} to "
                f"s3://{config.aws.export_bucket}/{export_prefix(config, name)}/ "
                f"({table.mode.value} mode)."
            ),
            pool=export_pool(name),
            wait=table.wait,
            tables=(target,),
            settings=table,
            metadata=metadata,
        )

    def start_export(
        self, context: AssetExecutionContext, unit: ExportUnit, run_config: ExportRunConfig
    ) -> Export:
        name = unit.name
        ddb = context.resources.dynamodb.get_client()
        described = ddb.describe_table(TableName=name)["Table"]
        table_arn = described["TableArn"]
        key_schema = [k["AttributeName"] for k in described["KeySchema"]]
        loading.check_keys_kept(name, unit.settings.excluded_columns, key_schema)
        bigquery = context.resources.bigquery
        planned = _plan(context, unit.settings, self.config, ddb, bigquery, table_arn)
        plan = planned.plan
        context.log.info(f"{name}: export strategy {plan.strategy.value}: {plan.reason}")
        descriptions, adopted = _start_or_adopt(context, ddb, planned, self.config, name, table_arn)
        return Export(
            ids=tuple(d["ExportArn"] for d in descriptions),
            metadata=_export_metadata(name, table_arn, plan, descriptions, adopted),
            details=(table_arn, plan, descriptions, adopted),
        )

    def wait_for_export(
        self, context: AssetExecutionContext, unit: ExportUnit, export: Export
    ) -> Export:
        table_arn, plan, descriptions, adopted = export.details
        ddb = context.resources.dynamodb.get_client()
        timeout = self.config.dynamodb.export_timeout_minutes * 60
        deadline = time.monotonic() + timeout
        finished = []
        for description in descriptions:
            try:
                finished.append(
                    wait_for_export(
                        ddb,
                        description["ExportArn"],
                        timeout_seconds=max(deadline - time.monotonic(), 0.0),
                        max_interval_seconds=self.config.dynamodb.poll_max_interval_seconds,
                        log=context.log.info,
                    )
                )
            except ExportFailedError as error:
                raise Failure(
                    description=str(error),
                    metadata={
                        "dynamodb_table": unit.name,
                        "export_arn": error.export_arn,
                        "failure_code": error.failure_code,
                        "failure_message": error.failure_message,
                    },
                ) from error
            except ExportTimeoutError as error:
                raise Failure(
                    description=f"{unit.name}: {error}",
                    metadata={
                        "dynamodb_table": unit.name,
                        "export_arn": description["ExportArn"],
                    },
                ) from error
        return Export(
            ids=export.ids,
            metadata=_export_metadata(unit.name, table_arn, plan, finished, adopted),
            details=(table_arn, plan, finished, adopted),
        )

    def export_ids(self, metadata: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(str(arn) for arn in metadata.get(EXPORT_ARNS_METADATA) or [])

    def export_state(self, resources: Any, ids: Sequence[str]) -> ExportState:
        """A chain is COMPLETED when every window is; the first unfinished one says why not."""
        ddb = resources.dynamodb.get_client()
        for arn in ids:
            state = describe_export_state(ddb, arn)
            if state.status != "COMPLETED":
                return state
        return ExportState("COMPLETED")

    def requested_export_ids(self, run_config: LoadRunConfig) -> tuple[str, ...] | None:
        assert isinstance(run_config, DynamoDBLoadConfig)
        if run_config.export_arns:
            return tuple(run_config.export_arns)
        if run_config.export_arn:
            return (run_config.export_arn,)
        return None

    def load_run_config(self, ids: Sequence[str]) -> dict[str, Any]:
        return {"export_arns": list(ids)}

    def steps_of_load(self) -> StepsOfLoad:
        """Full exports convert in steps over groups of data files (`load_steps`)."""
        return DynamoDBLoadSteps(self.config)

    def load_table(
        self,
        context: AssetExecutionContext,
        unit: ExportUnit,
        table: TableTarget,
        to_load: ToLoad,
    ) -> LoadOutcome:
        return loading.load_in_step(
            context, self.config, unit.name, unit.settings.mode, to_load.ids
        )


def describe_export_state(ddb: Any, arn: str) -> ExportState:
    """DescribeExport, as COMPLETED, FAILED (with code and message) or RUNNING."""
    try:
        description = ddb.describe_export(ExportArn=arn)["ExportDescription"]
    except ddb.exceptions.ExportNotFoundException:
        return ExportState("FAILED", f"export {arn} not found (expired or never started)")
    status = description.get("ExportStatus")
    if status == "COMPLETED":
        return ExportState("COMPLETED")
    if status == "FAILED":
        return ExportState(
            "FAILED",
            f"{description.get('FailureCode') or 'UNKNOWN'}: "
            f"{description.get('FailureMessage') or '(no message)'}",
        )
    return ExportState("RUNNING", str(status))
