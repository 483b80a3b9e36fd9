"""Sensors that export each new RDS snapshot as soon as it is `available`.

One sensor per configured instance/cluster (`rds_snapshot_sensor_<identifier>`),
so sources tick, fail and are switched on and off independently. A tick makes
one DescribeDBSnapshots / DescribeDBClusterSnapshots call (paginated) and
returns at once: it never starts or waits for an export itself; the run it
requests does that, with run config naming the snapshot.

Cursor (JSON): the create time of the newest snapshot seen, and the ids seen
at exactly that time (two snapshots can share a timestamp). A snapshot is new
when it is newer than that time, or equally new and not among those ids.

Decisions, and why:
* Only the NEWEST new snapshot is requested. Each load replaces the BigQuery
  tables with the snapshot's content, so exporting an older snapshot first
  would cost an export (billed per GB) and be overwritten at once.
* First tick (no cursor, e.g. the sensor was just switched on): the newest
  available snapshot is requested unless the export asset's latest
  materialization already exported it. Switching the sensor on thus brings
  BigQuery up to date without re-exporting what is already loaded.
* `run_key` is `rds:<identifier>:<snapshot>`: if the cursor is lost (the
  sensor reset, a tick that failed after requesting), Dagster's daemon drops
  a request whose run key this sensor already used, so no snapshot is
  exported twice by the sensor.
* The sensors are created stopped (Dagster's default, like the schedule):
  turning one on can start paid exports, so it is a deliberate act
  (`dagster sensor start` or the UI).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

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

from export_pipeline.config import RdsInstanceConfig, SnapshotType
from export_pipeline.contract import SOURCE_TAG, ExportUnit
from export_pipeline.rds.run_config import SnapshotExportConfig

SENSOR_NAME_PREFIX = "rds_snapshot_sensor_"
MINIMUM_INTERVAL_SECONDS = 300
SNAPSHOT_TAG = "export_pipeline/rds_snapshot"
CURSOR_VERSION = 1
# The export asset's run config field naming the snapshot; fails here, at import, if renamed.
_SNAPSHOT_FIELD = "snapshot_identifier"
if _SNAPSHOT_FIELD not in SnapshotExportConfig.model_fields:
    raise ImportError(f"SnapshotExportConfig has no field {_SNAPSHOT_FIELD!r} any more")


class SnapshotCursorError(ValueError):
    """The stored cursor is not one this module wrote."""


@dataclass(frozen=True)
class SnapshotCursor:
    """Newest snapshot create time seen, and the snapshot ids seen at that time."""

    newest: datetime
    ids_at_newest: frozenset[str]

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": CURSOR_VERSION,
                "newest_create_time": self.newest.isoformat(),
                "ids_at_newest": sorted(self.ids_at_newest),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> SnapshotCursor:
        try:
            raw = json.loads(text)
            if raw.get("version") != CURSOR_VERSION:
                raise SnapshotCursorError(f"cursor version {raw.get('version')!r} is not 1")
            newest = datetime.fromisoformat(raw["newest_create_time"])
            ids = frozenset(str(i) for i in raw["ids_at_newest"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SnapshotCursorError(f"unreadable snapshot cursor {text!r}: {exc}") from None
        if newest.tzinfo is None:
            raise SnapshotCursorError(f"cursor time {raw['newest_create_time']!r} has no zone")
        return cls(newest, ids)

    def has_seen(self, snapshot: AvailableSnapshot) -> bool:
        if snapshot.created < self.newest:
            return True
        return snapshot.created == self.newest and snapshot.identifier in self.ids_at_newest

    def advanced(self, snapshots: list[AvailableSnapshot]) -> SnapshotCursor:
        """This cursor moved past every snapshot in `snapshots`."""
        newest, ids = self.newest, set(self.ids_at_newest)
        for snapshot in snapshots:
            if snapshot.created > newest:
                newest, ids = snapshot.created, {snapshot.identifier}
            elif snapshot.created == newest:
                ids.add(snapshot.identifier)
        return SnapshotCursor(newest, frozenset(ids))


@dataclass(frozen=True)
class AvailableSnapshot:
    identifier: str
    created: datetime


def sensor_name(source: RdsInstanceConfig) -> str:
    """`rds_snapshot_sensor_<identifier>`; Dagster names allow only letters, digits, `_`."""
    return SENSOR_NAME_PREFIX + re.sub(r"[^A-Za-z0-9_]", "_", source.identifier)


def run_key(source: RdsInstanceConfig, snapshot_identifier: str) -> str:
    return f"rds:{source.identifier}:{snapshot_identifier}"


def unit_asset_keys(unit: ExportUnit) -> list[AssetKey]:
    """The export asset and the BigQuery table assets of one source."""
    return [unit.key, *(table.key for table in unit.tables)]


def snapshot_run_config(unit: ExportUnit, snapshot_identifier: str) -> dict[str, Any]:
    """Run config that makes the export asset export exactly this snapshot.

    Only the field the sensor decides is set (the others keep the asset's
    defaults), so the run shown in the UI says exactly what the sensor asked.
    """
    op_name = unit.key.to_python_identifier()
    return {"ops": {op_name: {"config": {_SNAPSHOT_FIELD: snapshot_identifier}}}}


def list_available_snapshots(rds: Any, source: RdsInstanceConfig) -> list[AvailableSnapshot]:
    """`available` snapshots of the source's configured type: one (paginated) describe call."""
    if source.kind == "cluster":
        operation, key, id_field = (
            "describe_db_cluster_snapshots",
            "DBClusterSnapshots",
            "DBClusterSnapshotIdentifier",
        )
        filters: dict[str, Any] = {"DBClusterIdentifier": source.identifier}
    else:
        operation, key, id_field = "describe_db_snapshots", "DBSnapshots", "DBSnapshotIdentifier"
        filters = {"DBInstanceIdentifier": source.identifier}
    if source.snapshot_type is not SnapshotType.ANY:
        filters["SnapshotType"] = source.snapshot_type.value
    found: list[AvailableSnapshot] = []
    for page in rds.get_paginator(operation).paginate(**filters):
        for raw in page.get(key, []):
            if raw.get("Status") != "available" or raw.get("SnapshotCreateTime") is None:
                continue
            # Checked again: the SnapshotType filter is the service's to honour.
            if (
                source.snapshot_type is not SnapshotType.ANY
                and raw.get("SnapshotType", source.snapshot_type.value)
                != source.snapshot_type.value
            ):
                continue
            found.append(AvailableSnapshot(raw[id_field], raw["SnapshotCreateTime"]))
    return found


def _already_exported(context: SensorEvaluationContext, key: AssetKey) -> str | None:
    """The snapshot the export asset's latest materialization exported, if any."""
    event = context.instance.get_latest_materialization_event(key)
    materialization = event.asset_materialization if event is not None else None
    entry = materialization.metadata.get("snapshot_identifier") if materialization else None
    return str(entry.value) if entry is not None else None


def evaluate_tick(
    context: SensorEvaluationContext, unit: ExportUnit, rds_client: Any, kind: str = "rds"
) -> SensorResult | SkipReason:
    """One tick for one source: the run request for the newest new snapshot, or why none."""
    source: RdsInstanceConfig = unit.settings
    snapshots = list_available_snapshots(rds_client, source)
    what = f"RDS {source.kind} {source.identifier}"
    if not snapshots:
        return SkipReason(f"{what} has no available {source.snapshot_type.value} snapshot yet")
    newest = max(snapshots, key=lambda s: (s.created, s.identifier))
    cursor: SnapshotCursor | None = None
    if context.cursor:
        try:
            cursor = SnapshotCursor.from_json(context.cursor)
        except SnapshotCursorError as exc:
            # Treated as a first tick; run keys still stop a repeated request.
            context.log.warning(f"{exc}; starting again from the newest snapshot")
    if cursor is None:
        first = SnapshotCursor(newest.created, frozenset())
        new_cursor = first.advanced([s for s in snapshots if s.created == newest.created])
        if _already_exported(context, unit.key) == newest.identifier:
            return SensorResult(
                skip_reason=SkipReason(
                    f"first tick: newest snapshot {newest.identifier} of {what} is already exported"
                ),
                cursor=new_cursor.to_json(),
            )
        new = [newest]
    else:
        new = [s for s in snapshots if not cursor.has_seen(s)]
        if not new:
            return SkipReason(
                f"no new available snapshot of {what} since {cursor.newest.isoformat()}"
            )
        new_cursor = cursor.advanced(new)
    chosen = max(new, key=lambda s: (s.created, s.identifier))
    if len(new) > 1:
        context.log.info(
            f"{len(new)} new snapshots of {what}; exporting only the newest, {chosen.identifier} "
            "(each load replaces the tables)"
        )
    request = RunRequest(
        run_key=run_key(source, chosen.identifier),
        run_config=snapshot_run_config(unit, chosen.identifier),
        asset_selection=unit_asset_keys(unit),
        tags={SNAPSHOT_TAG: chosen.identifier, SOURCE_TAG: kind},
    )
    return SensorResult(run_requests=[request], cursor=new_cursor.to_json())


def build_snapshot_sensor(unit: ExportUnit, kind: str = "rds") -> SensorDefinition:
    """The new-snapshot sensor of one RDS instance or cluster (created stopped).

    `kind` is the source's (`Source.kind`), tagged on the sensor and its runs.
    """
    source: RdsInstanceConfig = unit.settings
    keys = unit_asset_keys(unit)

    @sensor(
        name=sensor_name(source),
        target=AssetSelection.assets(*keys),
        minimum_interval_seconds=MINIMUM_INTERVAL_SECONDS,
        default_status=DefaultSensorStatus.STOPPED,
        description=f"Exports each new available {source.snapshot_type.value} snapshot of RDS "
        f"{source.kind} {source.identifier} and loads its tables into BigQuery.",
        tags={SOURCE_TAG: kind},
    )
    def _rds_snapshot_sensor(
        context: SensorEvaluationContext, rds: RDSResource
    ) -> SensorResult | SkipReason:
        with rds.get_rds_client() as client:
            return evaluate_tick(context, unit, client, kind)

    return _rds_snapshot_sensor
