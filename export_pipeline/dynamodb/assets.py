"""DynamoDB -> S3 -> BigQuery assets, one pair per configured table.

For every table in `config.dynamodb.tables`:

- `["dynamodb", <table>, "export"]` runs a point-in-time export to S3 (a full
  export, or in incremental mode the chain of windows since BigQuery's
  high-water mark) and records what it exported as metadata — or, when
  another run's export of exactly that is still IN_PROGRESS, waits for that
  one instead of paying for a second (`_start_or_adopt`);
- `["bigquery", <dataset>, dynamodb_<table>]` loads that export: it reads
  the export ARN(s) from run config (the reload/backfill path) or from the
  export asset's latest materialization, verifies the files against the
  manifest, converts them to Parquet and replaces (full) or merges
  (incremental) the BigQuery table.

The hand-off is metadata, not an IO manager: the export lives in S3 already,
and an ARN is all the loader needs to find it again — also in a later run.

Waiting (see `export_pipeline.export_sensors` for the whole story): by
default the export asset waits for its export (blocking, bounded by
`dynamodb.export_timeout_minutes`). With run config
`wait_for_completion: false` it only starts the export(s), records the ARNs
with `wait_mode: sensor` and returns; the BigQuery asset in the same run
then skips (saying why), and `export_completion_sensor` requests the load
when DynamoDB reports the export COMPLETED (or a failing load run naming the
FailureCode when it FAILED).

Concurrency and retries: each asset runs in a pool of its own table
(`pool_name`), so two overlapping runs never export or load one table at
the same time (the second waits, and its log says for which pool); transient
AWS/Google errors retry the step (`export_pipeline.errors`), permanent ones
fail at once with what to fix.
"""

import json
import re
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
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
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
    multi_asset,
)
from dagster_aws.s3 import S3Resource
from pydantic import Field

from export_pipeline.config import DynamoDBExportMode, DynamoDBTableConfig, PipelineConfig
from export_pipeline.dynamodb import load
from export_pipeline.dynamodb.exports import (
    ExportFailedError,
    ExportRequest,
    ExportTimeoutError,
    RunningExports,
    start_export,
    wait_for_export,
)
from export_pipeline.dynamodb.manifest import FULL_EXPORT, INCREMENTAL_EXPORT
from export_pipeline.dynamodb.plan import ExportPlan, ExportStrategy, plan_incremental
from export_pipeline.errors import TRANSIENT_RETRY_POLICY, retry_only_transient
from export_pipeline.naming import dynamodb_table_name
from export_pipeline.resources.aws import DynamoDBResource
from export_pipeline.resources.bigquery import BigQueryResource
from export_pipeline.resources.cloud import CloudResource

# Bump when a change to this module changes what the assets produce.
CODE_VERSION = "dynamodb-1"
SOURCE_TAG = "export_pipeline/source"
GROUP = "dynamodb"
OWNERS = ["team:data-platform"]
ROW_COUNT_CHECK = "row_count_matches_export"
# Export materialization metadata read back by the BigQuery asset and the completion sensor.
WAIT_MODE_METADATA = "wait_mode"
EXPORT_STATUS_METADATA = "export_status"
BLOCKING = "blocking"
SENSOR = "sensor"
# Root-run tag: the other runs' exports this run (or an earlier attempt of it) adopted.
ADOPTED_TAG_PREFIX = "export_pipeline/adopted_exports/"


def build_dynamodb_assets(
    config: PipelineConfig,
) -> list[AssetsDefinition | AssetChecksDefinition]:
    """The export asset and the BigQuery table asset of every configured DynamoDB table."""
    definitions: list[AssetsDefinition | AssetChecksDefinition] = []
    for table in config.dynamodb.tables:
        export_asset = _build_export_asset(table, config)
        definitions.append(export_asset)
        definitions.append(_build_bigquery_asset(table, config, export_asset.key))
    return definitions


def export_asset_key(table: str) -> AssetKey:
    return AssetKey(["dynamodb", table, "export"])


def bigquery_asset_key(config: PipelineConfig, table: str) -> AssetKey:
    return AssetKey(["bigquery", config.bigquery.dataset, dynamodb_table_name(table)])


def pool_name(*parts: str) -> str:
    """A Dagster pool name from its parts: letters, digits and `_` only."""
    return re.sub(r"[^A-Za-z0-9_]", "_", "_".join(parts))


def export_pool(table: str) -> str:
    """The pool of a table's export asset: one export of a table at a time."""
    return pool_name("dynamodb_export", table)


def bigquery_pool(config: PipelineConfig, table: str) -> str:
    """The pool of a BigQuery table: one load into it at a time (limit 1, deploy/dagster.yaml)."""
    return pool_name("bigquery", config.bigquery.dataset, dynamodb_table_name(table))


def export_prefix(config: PipelineConfig, table: str) -> str:
    """Where a table's exports go: `<export_prefix>/dynamodb/<table>` (one folder per table)."""
    return f"{config.aws.export_prefix}/dynamodb/{table}".strip("/")


# --------------------------------------------------------------------------- export


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
        mark = load.read_mark(client, load.table_id(bigquery, config, table.name), table_arn)
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
    running = RunningExports(ddb, table_arn, _adopted_before(context, table))
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
            _remember_adopted(context, table, adopted)
            spec = other.get("IncrementalExportSpecification") or {}
            if window is not None and planned.now is not None:
                windows = _windows_after(spec["ExportToTime"], planned, table, context)
            continue
        description = start_export(ddb, request, root_run_id)
        context.log.info(
            f"{table}: {request.export_type} {description['ExportArn']} "
            f"is {description.get('ExportStatus')}"
            + (f" (window {window[0].isoformat()} .. {window[1].isoformat()})" if window else "")
        )
        descriptions.append(description)
    return descriptions, adopted


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


def waits(run_config_value: bool | None, source: object) -> bool:
    """Blocking wait or not: run config first, then the source's `wait` in pipeline.yaml.

    `wait` (`blocking` | `sensor`) is a proposed configuration field; until it
    exists every source is `blocking` unless the run config says otherwise.
    """
    if run_config_value is not None:
        return run_config_value
    return str(getattr(source, "wait", BLOCKING)) != SENSOR


class DynamoDBExportConfig(Config):
    """Run config of an export asset: wait for the export here, or leave it to the sensor."""

    wait_for_completion: bool | None = Field(
        default=None,
        description="Unset: as pipeline.yaml's `wait` for this source says (blocking when it "
        "says nothing). true (blocking): wait for the export, up to "
        "dynamodb.export_timeout_minutes — for small tables and `dagster job execute` in CI. "
        "false (sensor): start the export, record it and return at once; "
        "export_completion_sensor requests the BigQuery load when it completes, so no worker "
        "is held for hours.",
    )


def _build_export_asset(table: DynamoDBTableConfig, config: PipelineConfig) -> AssetsDefinition:
    name = table.name

    @asset(
        key=export_asset_key(name),
        group_name=GROUP,
        kinds={"dynamodb", "s3"},
        tags={SOURCE_TAG: "dynamodb"},
        owners=OWNERS,
        code_version=CODE_VERSION,
        description=(
            f"Point-in-time export of DynamoDB table {name} to "
            f"s3://{config.aws.export_bucket}/{export_prefix(config, name)}/ "
            f"({table.mode.value} mode)."
        ),
        metadata={"dynamodb_table": name, "mode": table.mode.value},
        pool=export_pool(name),
        retry_policy=TRANSIENT_RETRY_POLICY,
    )
    def _export(
        context: AssetExecutionContext,
        config: DynamoDBExportConfig,
        cloud: CloudResource,
        dynamodb: DynamoDBResource,
        bigquery: BigQueryResource,
    ) -> MaterializeResult:
        """Exports the DynamoDB table to S3 so BigQuery can be brought up to date."""
        with retry_only_transient(f"DynamoDB export of {name}", context.log.warning):
            return _run_export(
                context, waits(config.wait_for_completion, table), dynamodb, bigquery
            )

    def _run_export(
        context: AssetExecutionContext,
        wait: bool,
        dynamodb: DynamoDBResource,
        bigquery: BigQueryResource,
    ) -> MaterializeResult:
        started = time.monotonic()
        ddb = dynamodb.get_client()
        table_arn = ddb.describe_table(TableName=name)["Table"]["TableArn"]
        planned = _plan(context, table, config, ddb, bigquery, table_arn)
        plan = planned.plan
        context.log.info(f"{name}: export strategy {plan.strategy.value}: {plan.reason}")
        descriptions, adopted = _start_or_adopt(context, ddb, planned, config, name, table_arn)
        if not wait:
            context.log.info(
                f"{name}: sensor mode: not waiting for {len(descriptions)} export(s); "
                "export_completion_sensor requests the BigQuery load when they complete"
            )
            return MaterializeResult(
                metadata=_export_metadata(
                    name, table_arn, plan, descriptions, time.monotonic() - started, SENSOR, adopted
                )
            )
        timeout = config.dynamodb.export_timeout_minutes * 60
        finished = []
        for description in descriptions:
            remaining = max(timeout - (time.monotonic() - started), 0.0)
            try:
                finished.append(
                    wait_for_export(
                        ddb,
                        description["ExportArn"],
                        timeout_seconds=remaining,
                        max_interval_seconds=config.dynamodb.poll_max_interval_seconds,
                        log=context.log.info,
                    )
                )
            except ExportFailedError as error:
                raise Failure(
                    description=str(error),
                    metadata={
                        "dynamodb_table": name,
                        "export_arn": error.export_arn,
                        "failure_code": error.failure_code,
                        "failure_message": error.failure_message,
                    },
                ) from error
            except ExportTimeoutError as error:
                raise Failure(
                    description=f"{name}: {error}",
                    metadata={"dynamodb_table": name, "export_arn": description["ExportArn"]},
                ) from error
        return MaterializeResult(
            metadata=_export_metadata(
                name, table_arn, plan, finished, time.monotonic() - started, BLOCKING, adopted
            )
        )

    return _export


def _export_metadata(
    table: str,
    table_arn: str,
    plan: ExportPlan,
    exports: list[dict[str, Any]],
    seconds: float,
    wait_mode: str,
    adopted: list[str],
) -> dict[str, Any]:
    arns = [e["ExportArn"] for e in exports]
    statuses = {str(e.get("ExportStatus")) for e in exports}
    metadata: dict[str, Any] = {
        WAIT_MODE_METADATA: wait_mode,
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
        "export_arns": MetadataValue.json(arns),
        "export_count": len(arns),
        "item_count": sum(int(e.get("ItemCount") or 0) for e in exports),
        "billed_size_bytes": sum(int(e.get("BilledSizeBytes") or 0) for e in exports),
        "manifest_uris": MetadataValue.json(
            [f"s3://{e['S3Bucket']}/{load.manifest_key(e)}" for e in exports]
        ),
        "duration_seconds": round(seconds, 3),
        # Another run's IN_PROGRESS exports this run waited for instead of starting its own.
        "adopted_export_arns": MetadataValue.json(adopted),
    }
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


# --------------------------------------------------------------------------- BigQuery


class DynamoDBLoadConfig(Config):
    """Run config of a BigQuery table asset: which export(s) to load."""

    export_arn: str | None = Field(
        default=None,
        description="Load this existing export (full: replace; incremental: merge) instead of "
        "the one the export asset last produced. Starts no new export: the reload/backfill path.",
    )
    export_arns: list[str] | None = Field(
        default=None,
        description="Load these exports, in order (a chain of incremental windows, or one full "
        "export). export_completion_sensor sets it to the exports it saw complete.",
    )


@dataclass(frozen=True)
class _ToLoad:
    """The exports a BigQuery asset run should load, where they came from, and why not now."""

    arns: list[str]
    source: str
    # Set when the exports were started in sensor mode and the sensor owns their load.
    deferred_because: str | None = None


def _export_arns_to_load(
    context: AssetExecutionContext,
    run_config: DynamoDBLoadConfig,
    export_key: AssetKey,
    ddb: Any,
) -> _ToLoad:
    if run_config.export_arns:
        return _ToLoad(list(run_config.export_arns), "run config (export_arns)")
    if run_config.export_arn:
        return _ToLoad([run_config.export_arn], "run config")
    event = context.instance.get_latest_materialization_event(export_key)
    materialization = event.asset_materialization if event is not None else None
    if event is None or materialization is None:
        raise Failure(
            description=f"No export to load: materialize {export_key.to_user_string()} first, "
            "or give an export ARN in run config (export_arn).",
            allow_retries=False,
        )
    metadata = materialization.metadata
    arns_value = metadata.get("export_arns")
    arns = [str(a) for a in (arns_value.value if arns_value is not None else [])]  # type: ignore[union-attr]
    source = f"latest materialization of {export_key.to_user_string()}"
    mode = metadata.get(WAIT_MODE_METADATA)
    if mode is None or mode.value != SENSOR or not arns:
        return _ToLoad(arns, source)
    if event.run_id == context.run.run_id:
        return _ToLoad(
            arns,
            source,
            f"this run started {len(arns)} export(s) in sensor mode (wait_for_completion: "
            "false) and did not wait: export_completion_sensor requests this load when "
            f"DynamoDB reports them COMPLETED ({arns[-1]})",
        )
    unfinished = {
        arn: status
        for arn in arns
        if (status := ddb.describe_export(ExportArn=arn)["ExportDescription"].get("ExportStatus"))
        == "IN_PROGRESS"
    }
    if unfinished:
        return _ToLoad(
            arns,
            source,
            f"export(s) {unfinished} started in sensor mode are not finished: "
            "export_completion_sensor requests this load when they complete",
        )
    return _ToLoad(arns, source)


def _build_bigquery_asset(
    table: DynamoDBTableConfig, pipeline: PipelineConfig, export_key: AssetKey
) -> AssetsDefinition:
    name = table.name
    key = bigquery_asset_key(pipeline, name)
    bq_table = dynamodb_table_name(name)

    # A multi_asset of one, only because it can leave out both the materialization and the
    # check result (skippable + can_subset) when the load is left to the completion sensor.
    @multi_asset(
        name=key.to_python_identifier(),
        specs=[
            AssetSpec(
                key=key,
                deps=[export_key],
                group_name=GROUP,
                kinds={"bigquery"},
                tags={SOURCE_TAG: "dynamodb"},
                owners=OWNERS,
                code_version=CODE_VERSION,
                description=(
                    f"DynamoDB table {name} in BigQuery ({pipeline.bigquery.dataset}.{bq_table}), "
                    + (
                        "merged from incremental exports."
                        if table.mode is DynamoDBExportMode.INCREMENTAL
                        else "replaced by each full export."
                    )
                ),
                metadata={"dynamodb_table": name, "mode": table.mode.value},
                skippable=True,
            )
        ],
        check_specs=[
            AssetCheckSpec(
                ROW_COUNT_CHECK,
                asset=key,
                description="Full loads: BigQuery row count equals the export manifest's "
                "itemCount. Incremental merges: one row per key (no duplicates).",
            )
        ],
        can_subset=True,
        pool=bigquery_pool(pipeline, name),
        retry_policy=TRANSIENT_RETRY_POLICY,
    )
    def _bigquery_table(
        context: AssetExecutionContext,
        config: DynamoDBLoadConfig,
        cloud: CloudResource,
        dynamodb: DynamoDBResource,
        s3: S3Resource,
        bigquery: BigQueryResource,
    ) -> Iterator[MaterializeResult]:
        """Keeps the BigQuery copy of the DynamoDB table up to date for analysts."""
        if key not in context.selected_asset_keys:
            return  # only the check was selected: it runs with a load, not on its own
        with retry_only_transient(f"BigQuery load of DynamoDB table {name}", context.log.warning):
            result = _load(context, config, dynamodb, s3, bigquery)
        if result is not None:
            yield result

    def _load(
        context: AssetExecutionContext,
        config: DynamoDBLoadConfig,
        dynamodb: DynamoDBResource,
        s3: S3Resource,
        bigquery: BigQueryResource,
    ) -> MaterializeResult | None:
        to_load = _export_arns_to_load(context, config, export_key, dynamodb.get_client())
        if to_load.deferred_because is not None:
            context.log.info(f"{name}: not loading now: {to_load.deferred_because}")
            return None
        arns, source = to_load.arns, to_load.source
        context.log.info(f"{name}: loading {len(arns)} export(s) from the {source}: {arns}")
        with tempfile.TemporaryDirectory(prefix=f"ddb-{name}-") as work_dir:
            outcome = load.load_exports(
                arns,
                table=name,
                mode=table.mode,
                config=pipeline,
                ddb=dynamodb.get_client(),
                s3=s3.get_client(),
                bigquery=bigquery,
                work_dir=Path(work_dir),
                log=context.log.info,
                run_id=f"{context.run.run_id}-{uuid.uuid4().hex[:8]}",
            )
        check = AssetCheckResult(
            check_name=ROW_COUNT_CHECK,
            asset_key=key,
            passed=outcome.check_passed,
            severity=AssetCheckSeverity.ERROR,
            metadata=outcome.check_metadata,
            description=outcome.check_description,
        )
        return MaterializeResult(asset_key=key, metadata=outcome.metadata, check_results=[check])

    return _bigquery_table
