"""Sensor mode: load exports when they complete, without a worker waiting for them.

Two ways to wait for an export (choose per run, with the export asset's run
config `wait_for_completion`):

- blocking (default, `true`): the export asset polls until the export is
  done (bounded backoff, `*.export_timeout_minutes`) and the BigQuery assets
  load it in the same run. Simple, one run tells the whole story, and it is
  what `dagster job execute` in CI and small tables want. It holds a run
  worker (a process) for as long as the export takes: minutes for small
  tables, hours for big ones.
- sensor (`false`): the export asset only starts the export (idempotent:
  ClientToken / deterministic task identifier), records it (`wait_mode:
  sensor`, ARN / task id, status) and returns in seconds. The BigQuery
  assets of that run skip, saying why. `export_completion_sensor` then
  checks the pending exports each tick and requests the load when one
  completes. Use it for large tables/databases, where exports run for hours
  and concurrent runs are limited.

How the sensor decides, every tick (default every 60 s):

1. Pending exports come from the event log, not from memory: the latest
   materialization of every export asset whose `wait_mode` is `sensor`. A
   newer materialization supersedes an older pending export (a full export
   replaces the table anyway; an incremental chain is planned from
   BigQuery's high-water mark, so the newer chain covers the older windows).
2. Skipped without an AWS call: exports the cursor already handled, and
   exports a BigQuery asset's latest materialization already loaded (its
   `export_arn` / `export_task_identifier` metadata).
3. One describe call per remaining export (DescribeExport /
   DescribeExportTasks with the identifier): a handful of calls per tick,
   far inside the 60 s tick timeout. A describe error (throttling, a
   network blip) leaves the export pending for the next tick.
4. COMPLETED -> a RunRequest for the source's BigQuery asset(s) with run
   config naming exactly that export (`export_arns` / `export_task_identifier`),
   `run_key` = `load:<export id>`; FAILED / CANCELED (or gone) -> the same
   request tagged `export_pipeline/export_failed`, whose run fails at once
   with the FailureCode / FailureCause and what to fix: a red run in the UI
   that run-failure alerts see, plus an error line in the tick's log.
   Still running -> nothing; the skip reason lists what is pending.

Cursor (JSON): the export ids already handled. It only holds ids that are
still some export asset's latest materialization, so it stays small. If it
is lost (sensor reset), `run_key`s stop Dagster from launching a second run
for the same export, and step 2 stops a re-request of what was loaded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from dagster import (
    AssetKey,
    AssetSelection,
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster_aws.rds import RDSResource

from export_pipeline.config import PipelineConfig
from export_pipeline.dynamodb import assets as ddb_assets
from export_pipeline.rds import assets as rds_assets
from export_pipeline.rds.export_tasks import (
    COMPLETE,
    FAILED_STATUSES,
    RUNNING_STATUSES,
    describe_export_task,
)
from export_pipeline.resources.aws import DynamoDBResource

SENSOR_NAME = "export_completion_sensor"
MINIMUM_INTERVAL_SECONDS = 60
CURSOR_VERSION = 1
EXPORT_TAG = "export_pipeline/export"
EXPORT_FAILED_TAG = "export_pipeline/export_failed"
SOURCE_TAG = "export_pipeline/source"


@dataclass(frozen=True)
class PendingExport:
    """An export started in sensor mode whose BigQuery load is not requested yet."""

    kind: str  # "dynamodb" or "rds"
    source: str  # table name / instance identifier
    export_ids: tuple[str, ...]  # DynamoDB: ARNs in load order; RDS: the task identifier
    load_keys: tuple[AssetKey, ...]  # the BigQuery assets that load it
    run_config: dict[str, Any] = field(hash=False, compare=False)

    @property
    def export_id(self) -> str:
        """The id that names this export (the last ARN of a chain)."""
        return self.export_ids[-1]

    @property
    def run_key(self) -> str:
        return f"load:{self.export_id}"


@dataclass(frozen=True)
class ExportState:
    """What one describe call said: done, failed (with why) or still running."""

    status: str  # "COMPLETED", "FAILED" or "RUNNING"
    detail: str = ""


def _metadata(event: Any) -> dict[str, Any]:
    materialization = event.asset_materialization if event is not None else None
    if materialization is None:
        return {}
    return {k: v.value for k, v in materialization.metadata.items()}


def pending_exports(
    context: SensorEvaluationContext, config: PipelineConfig
) -> list[PendingExport]:
    """Sensor-mode exports that are the latest materialization of their export asset."""
    pending = []
    for table in config.dynamodb.tables:
        event = context.instance.get_latest_materialization_event(
            ddb_assets.export_asset_key(table.name)
        )
        metadata = _metadata(event)
        arns = tuple(str(a) for a in metadata.get("export_arns") or [])
        if metadata.get(ddb_assets.WAIT_MODE_METADATA) != ddb_assets.SENSOR or not arns:
            continue
        load_key = ddb_assets.bigquery_asset_key(config, table.name)
        op = load_key.to_python_identifier()
        pending.append(
            PendingExport(
                "dynamodb",
                table.name,
                arns,
                (load_key,),
                {"ops": {op: {"config": {"export_arns": list(arns)}}}},
            )
        )
    for source in config.rds.instances:
        event = context.instance.get_latest_materialization_event(
            rds_assets.export_asset_key(source)
        )
        metadata = _metadata(event)
        identifier = metadata.get(rds_assets.EXPORT_ID_METADATA)
        if metadata.get(rds_assets.WAIT_MODE_METADATA) != rds_assets.SENSOR or not identifier:
            continue
        keys = tuple(rds_assets.table_asset_key(config, db, t) for db, t in source.tables())
        ops = {
            key.to_python_identifier(): {"config": {"export_task_identifier": str(identifier)}}
            for key in keys
        }
        pending.append(
            PendingExport("rds", source.identifier, (str(identifier),), keys, {"ops": ops})
        )
    return pending


def already_loaded(context: SensorEvaluationContext, export: PendingExport) -> bool:
    """Whether every BigQuery asset of the export has a materialization that loaded it."""
    field_name = "export_arn" if export.kind == "dynamodb" else rds_assets.EXPORT_ID_METADATA
    for key in export.load_keys:
        loaded = _metadata(context.instance.get_latest_materialization_event(key))
        if str(loaded.get(field_name)) != export.export_id:
            return False
    return True


def describe_dynamodb_export(ddb: Any, arn: str) -> ExportState:
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


def describe_rds_export(rds: Any, identifier: str) -> ExportState:
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


def _dynamodb_state(ddb: Any, export: PendingExport) -> ExportState:
    """A chain is COMPLETED when every window is; the first unfinished one says why not."""
    for arn in export.export_ids:
        state = describe_dynamodb_export(ddb, arn)
        if state.status != "COMPLETED":
            return state
    return ExportState("COMPLETED")


def _read_cursor(context: SensorEvaluationContext) -> set[str]:
    if not context.cursor:
        return set()
    try:
        raw = json.loads(context.cursor)
        if raw.get("version") != CURSOR_VERSION:
            raise ValueError(f"cursor version {raw.get('version')!r}")
        return {str(i) for i in raw["handled"]}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        # Run keys and `already_loaded` still stop duplicates.
        context.log.warning(f"unreadable cursor {context.cursor!r} ({exc}); starting afresh")
        return set()


def _cursor(handled: Iterable[str]) -> str:
    return json.dumps({"version": CURSOR_VERSION, "handled": sorted(handled)})


def evaluate_tick(
    context: SensorEvaluationContext,
    config: PipelineConfig,
    dynamodb_client: Callable[[], Any],
    rds_describe: Callable[[list[str]], dict[str, ExportState]],
) -> SensorResult:
    """One tick: run requests for completed (and failed) exports, and the new cursor.

    `dynamodb_client` makes a client on first use; `rds_describe` describes
    the given task identifiers (one call each) — both only when needed.
    """
    handled = _read_cursor(context)
    pending = pending_exports(context, config)
    current_ids = {p.export_id for p in pending}
    handled &= current_ids  # forget what no latest materialization refers to any more
    to_check = [p for p in pending if p.export_id not in handled]
    to_check_now = []
    for export in to_check:
        if already_loaded(context, export):
            handled.add(export.export_id)
        else:
            to_check_now.append(export)
    states: dict[str, ExportState] = {}
    errors: list[str] = []
    ddb_exports = [p for p in to_check_now if p.kind == "dynamodb"]
    if ddb_exports:
        ddb = dynamodb_client()
        for export in ddb_exports:
            try:
                states[export.export_id] = _dynamodb_state(ddb, export)
            except (ClientError, BotoCoreError) as exc:
                errors.append(f"{export.source}: {exc}")
    rds_ids = [p.export_id for p in to_check_now if p.kind == "rds"]
    if rds_ids:
        try:
            states.update(rds_describe(rds_ids))
        except (ClientError, BotoCoreError) as exc:
            errors.append(f"RDS: {exc}")
    for error in errors:
        context.log.warning(f"could not check an export this tick, trying again next tick: {error}")
    requests: list[RunRequest] = []
    waiting: list[str] = []
    for export in to_check_now:
        state = states.get(export.export_id)
        if state is None:
            waiting.append(f"{export.source}: not checked (see the tick log)")
            continue
        what = f"{export.kind} {export.source} export {export.export_id}"
        tags = {EXPORT_TAG: export.export_id, SOURCE_TAG: export.kind}
        if state.status == "RUNNING":
            waiting.append(f"{export.source}: {state.detail}")
            continue
        if state.status == "FAILED":
            context.log.error(
                f"{what} FAILED: {state.detail}. Requesting its load run, which fails with this "
                "cause and what to fix."
            )
            tags[EXPORT_FAILED_TAG] = state.detail[:200]
        else:
            context.log.info(f"{what} COMPLETED: requesting its BigQuery load")
        requests.append(
            RunRequest(
                run_key=export.run_key,
                run_config=export.run_config,
                asset_selection=list(export.load_keys),
                tags=tags,
            )
        )
        handled.add(export.export_id)
    cursor = _cursor(handled)
    if requests:
        return SensorResult(run_requests=requests, cursor=cursor)
    reason = (
        f"waiting for {len(waiting)} export(s): {'; '.join(waiting)}"
        if waiting
        else "no export started in sensor mode is waiting for its load"
    )
    return SensorResult(skip_reason=SkipReason(reason), cursor=cursor)


def _describe_rds(rds: RDSResource) -> Callable[[list[str]], dict[str, ExportState]]:
    def describe(identifiers: list[str]) -> dict[str, ExportState]:
        with rds.get_rds_client() as client:
            return {i: describe_rds_export(client, i) for i in identifiers}

    return describe


def load_asset_keys(config: PipelineConfig) -> list[AssetKey]:
    """Every BigQuery asset the sensor may request."""
    keys = [ddb_assets.bigquery_asset_key(config, t.name) for t in config.dynamodb.tables]
    keys += [
        rds_assets.table_asset_key(config, db, t)
        for source in config.rds.instances
        for db, t in source.tables()
    ]
    return keys


def build_export_completion_sensor(config: PipelineConfig) -> list[SensorDefinition]:
    """The completion sensor (none when nothing is configured).

    Created RUNNING: it spends nothing until an export is started in sensor
    mode (a tick then reads the event log only), and a sensor-mode export
    would otherwise never be loaded.
    """
    keys = load_asset_keys(config)
    if not keys:
        return []

    @sensor(
        name=SENSOR_NAME,
        target=AssetSelection.assets(*keys),
        minimum_interval_seconds=MINIMUM_INTERVAL_SECONDS,
        default_status=DefaultSensorStatus.RUNNING,
        description="Requests the BigQuery load of each export started in sensor mode "
        "(wait_for_completion: false) once AWS reports it complete; a failed export gets a "
        "load run that fails with AWS's failure cause.",
    )
    def export_completion_sensor(
        context: SensorEvaluationContext, dynamodb: DynamoDBResource, rds: RDSResource
    ) -> SensorResult:
        return evaluate_tick(context, config, dynamodb.get_client, _describe_rds(rds))

    return [export_completion_sensor]
