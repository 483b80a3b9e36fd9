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
3. One describe call per remaining export (the source's `export_state`:
   DescribeExport per ARN, DescribeExportTasks per identifier): a handful
   of calls per tick, far inside the 60 s tick timeout. A describe error (throttling, a
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
from collections.abc import Iterable, Sequence
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

from export_pipeline.config import WaitMode
from export_pipeline.contract import (
    SOURCE_TAG,
    WAIT_MODE_METADATA,
    ExportState,
    ExportUnit,
    Source,
)

SENSOR_NAME = "export_completion_sensor"
MINIMUM_INTERVAL_SECONDS = 60
CURSOR_VERSION = 1
EXPORT_TAG = "export_pipeline/export"
EXPORT_FAILED_TAG = "export_pipeline/export_failed"


@dataclass(frozen=True)
class PendingExport:
    """An export started in sensor mode whose BigQuery load is not requested yet."""

    source: Source = field(hash=False, compare=False)
    unit: ExportUnit = field(hash=False, compare=False)
    export_ids: tuple[str, ...]  # DynamoDB: ARNs in load order; RDS: the task identifier

    @property
    def export_id(self) -> str:
        """The id that names this export (the last ARN of a chain)."""
        return self.export_ids[-1]

    @property
    def run_key(self) -> str:
        return f"load:{self.export_id}"

    @property
    def load_keys(self) -> list[AssetKey]:
        """The BigQuery assets that load it."""
        return [table.key for table in self.unit.tables]

    def run_config(self) -> dict[str, Any]:
        """Run config making every one of its table assets load exactly this export."""
        config = self.source.load_run_config(self.export_ids)
        return {"ops": {key.to_python_identifier(): {"config": config} for key in self.load_keys}}


def _metadata(event: Any) -> dict[str, Any]:
    materialization = event.asset_materialization if event is not None else None
    if materialization is None:
        return {}
    return {k: v.value for k, v in materialization.metadata.items()}


def pending_exports(
    context: SensorEvaluationContext, sources: Sequence[Source]
) -> list[PendingExport]:
    """Sensor-mode exports that are the latest materialization of their export asset."""
    pending = []
    for source in sources:
        for unit in source.units():
            metadata = _metadata(context.instance.get_latest_materialization_event(unit.key))
            ids = source.export_ids(metadata)
            if metadata.get(WAIT_MODE_METADATA) == WaitMode.SENSOR.value and ids:
                pending.append(PendingExport(source, unit, ids))
    return pending


def already_loaded(context: SensorEvaluationContext, export: PendingExport) -> bool:
    """Whether every BigQuery asset of the export has a materialization that loaded it."""
    field_name = export.source.loaded_export_metadata
    for key in export.load_keys:
        loaded = _metadata(context.instance.get_latest_materialization_event(key))
        if str(loaded.get(field_name)) != export.export_id:
            return False
    return True


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


def evaluate_tick(context: SensorEvaluationContext, sources: Sequence[Source]) -> SensorResult:
    """One tick: run requests for completed (and failed) exports, and the new cursor.

    AWS is asked (through `context.resources`) only about exports that are
    neither handled nor loaded yet.
    """
    handled = _read_cursor(context)
    pending = pending_exports(context, sources)
    current_ids = {p.export_id for p in pending}
    handled &= current_ids  # forget what no latest materialization refers to any more
    to_check_now = []
    for export in pending:
        if export.export_id in handled:
            continue
        if already_loaded(context, export):
            handled.add(export.export_id)
        else:
            to_check_now.append(export)
    states: dict[str, ExportState] = {}
    for export in to_check_now:
        try:
            states[export.export_id] = export.source.export_state(
                context.resources, export.export_ids
            )
        except (ClientError, BotoCoreError) as exc:
            context.log.warning(
                f"could not check an export this tick, trying again next tick: "
                f"{export.unit.name}: {exc}"
            )
    requests: list[RunRequest] = []
    waiting: list[str] = []
    for export in to_check_now:
        state = states.get(export.export_id)
        if state is None:
            waiting.append(f"{export.unit.name}: not checked (see the tick log)")
            continue
        kind = export.source.kind
        what = f"{kind} {export.unit.name} export {export.export_id}"
        tags = {EXPORT_TAG: export.export_id, SOURCE_TAG: kind}
        if state.status == "RUNNING":
            waiting.append(f"{export.unit.name}: {state.detail}")
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
                run_config=export.run_config(),
                asset_selection=export.load_keys,
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


def build_export_completion_sensor(sources: Sequence[Source]) -> list[SensorDefinition]:
    """The completion sensor (none when nothing is configured).

    Created RUNNING: it spends nothing until an export is started in sensor
    mode (a tick then reads the event log only), and a sensor-mode export
    would otherwise never be loaded.
    """
    keys = [table.key for source in sources for unit in source.units() for table in unit.tables]
    if not keys:
        return []
    resources = {key for source in sources if source.units() for key in source.state_resources}

    @sensor(
        name=SENSOR_NAME,
        target=AssetSelection.assets(*keys),
        minimum_interval_seconds=MINIMUM_INTERVAL_SECONDS,
        default_status=DefaultSensorStatus.RUNNING,
        required_resource_keys=resources,
        description="Requests the BigQuery load of each export started in sensor mode "
        "(wait_for_completion: false) once AWS reports it complete; a failed export gets a "
        "load run that fails with AWS's failure cause.",
    )
    def export_completion_sensor(context: SensorEvaluationContext) -> SensorResult:
        return evaluate_tick(context, sources)

    return [export_completion_sensor]
