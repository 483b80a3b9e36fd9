"""The RDS side of an export: which snapshot, which export task, and waiting for it.

Production code against the RDS API as AWS documents it (boto3 client from
`dagster_aws.rds.RDSResource`). Waiting is bounded exponential backoff with an
overall timeout and stops at once on FAILED / CANCELED, which is where the
usual hand-written pollers go wrong (fixed attempt caps that fire on long
exports, or polling on after `failed`).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from export_pipeline.config import RdsInstanceConfig, SnapshotType
from export_pipeline.errors import PermanentError
from export_pipeline.s3_locations import SETTING, S3Location

RUNNING_STATUSES = frozenset({"STARTING", "IN_PROGRESS"})
COMPLETE = "COMPLETE"
FAILED_STATUSES = frozenset({"FAILED", "CANCELED", "CANCELING"})
_NOT_FOUND_CODES = {"ExportTaskNotFound", "ExportTaskNotFoundFault"}
_FIRST_POLL_SECONDS = 2.0


class RdsExportError(PermanentError):
    """An export cannot be started, found or finished; the message says what to do."""


@dataclass(frozen=True)
class Snapshot:
    """A DB snapshot or DB cluster snapshot that can be exported."""

    identifier: str
    arn: str
    created: datetime
    snapshot_type: str


def _snapshot_from(kind: str, raw: dict[str, Any]) -> Snapshot:
    if kind == "cluster":
        return Snapshot(
            identifier=raw["DBClusterSnapshotIdentifier"],
            arn=raw["DBClusterSnapshotArn"],
            created=raw["SnapshotCreateTime"],
            snapshot_type=raw.get("SnapshotType", ""),
        )
    return Snapshot(
        identifier=raw["DBSnapshotIdentifier"],
        arn=raw["DBSnapshotArn"],
        created=raw["SnapshotCreateTime"],
        snapshot_type=raw.get("SnapshotType", ""),
    )


def _describe_snapshots(rds: Any, source: RdsInstanceConfig, **filters: Any) -> list[dict]:
    if source.kind == "cluster":
        operation, key = "describe_db_cluster_snapshots", "DBClusterSnapshots"
    else:
        operation, key = "describe_db_snapshots", "DBSnapshots"
    found: list[dict] = []
    for page in rds.get_paginator(operation).paginate(**filters):
        found.extend(page.get(key, []))
    return found


def find_snapshot(
    rds: Any, source: RdsInstanceConfig, snapshot_identifier: str | None = None
) -> Snapshot:
    """The named snapshot, or the newest `available` one of the configured type."""
    owner_filter = (
        {"DBClusterIdentifier": source.identifier}
        if source.kind == "cluster"
        else {"DBInstanceIdentifier": source.identifier}
    )
    what = f"{source.kind} {source.identifier!r}"
    if snapshot_identifier:
        id_filter = (
            {"DBClusterSnapshotIdentifier": snapshot_identifier}
            if source.kind == "cluster"
            else {"DBSnapshotIdentifier": snapshot_identifier}
        )
        try:
            raw = _describe_snapshots(rds, source, **id_filter)
        except ClientError as exc:
            raise RdsExportError(
                f"snapshot {snapshot_identifier!r} of {what} not found: {exc}"
            ) from None
        if not raw:
            raise RdsExportError(f"snapshot {snapshot_identifier!r} of {what} not found")
        owner = raw[0].get(
            "DBClusterIdentifier" if source.kind == "cluster" else "DBInstanceIdentifier"
        )
        if owner != source.identifier:
            raise RdsExportError(
                f"snapshot {snapshot_identifier!r} belongs to {owner!r}, not to {what}"
            )
        if raw[0].get("Status") != "available":
            raise RdsExportError(
                f"snapshot {snapshot_identifier!r} of {what} is {raw[0].get('Status')!r}, "
                "not 'available'; wait for it or name another"
            )
        return _snapshot_from(source.kind, raw[0])
    filters = dict(owner_filter)
    if source.snapshot_type is not SnapshotType.ANY:
        filters["SnapshotType"] = source.snapshot_type.value
    candidates = [
        s for s in _describe_snapshots(rds, source, **filters) if s.get("Status") == "available"
    ]
    if source.snapshot_type is not SnapshotType.ANY:
        # Some endpoints ignore the filter; apply it again.
        candidates = [
            s
            for s in candidates
            if s.get("SnapshotType", source.snapshot_type.value) == source.snapshot_type.value
        ]
    if not candidates:
        raise RdsExportError(
            f"no available {source.snapshot_type.value} snapshot of {what}; take one "
            "(or wait for the automated backup) or name one in run config 'snapshot_identifier'"
        )
    newest = max(candidates, key=lambda s: s["SnapshotCreateTime"])
    return _snapshot_from(source.kind, newest)


def describe_export_task(rds: Any, identifier: str) -> dict[str, Any] | None:
    """The export task with this identifier, or None when AWS has none."""
    try:
        tasks = rds.describe_export_tasks(ExportTaskIdentifier=identifier).get("ExportTasks", [])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in _NOT_FOUND_CODES:
            return None
        raise
    for task in tasks:
        if task.get("ExportTaskIdentifier") == identifier:
            return task
    return None


def failure_message(task: dict[str, Any], retry_hint: str) -> str:
    cause = task.get("FailureCause") or "no FailureCause given"
    return (
        f"RDS export task {task.get('ExportTaskIdentifier')!r} of {task.get('SourceArn')} is "
        f"{task.get('Status')}: {cause}. {retry_hint}"
    )


@dataclass(frozen=True)
class EnsuredExport:
    """The export task a run uses, and how it came to be that one."""

    task: dict[str, Any]
    started: bool  # this call started it
    adopted: bool = False  # started outside the pipeline (another identifier), used as it is
    passed_over: tuple[str, ...] = ()  # one line per other export of the snapshot not used

    @property
    def identifier(self) -> str:
        return str(self.task["ExportTaskIdentifier"])


def export_covers(scope: Iterable[str] | None, wanted: Iterable[str]) -> bool:
    """Whether an export of `scope` (ExportOnly; empty: the whole snapshot) holds every table.

    A scope entry names a database, or a table in it (`database.table`;
    PostgreSQL also `database.schema` and `database.schema.table`): a wanted
    table is covered when the scope holds it or any of its leading parts.
    """
    entries = set(scope or ())
    if not entries:
        return True
    for table in wanted:
        parts = table.split(".")
        if not any(".".join(parts[:n]) in entries for n in range(1, len(parts) + 1)):
            return False
    return True


def other_export_tasks(rds: Any, source_arn: str, identifier: str) -> list[dict[str, Any]]:
    """Running or complete export tasks of the snapshot `source_arn` not named `identifier`."""
    tasks: list[dict[str, Any]] = []
    request: dict[str, Any] = {"SourceArn": source_arn}
    while True:
        page = rds.describe_export_tasks(**request)
        tasks += page.get("ExportTasks", [])
        if not page.get("Marker"):
            break
        request["Marker"] = page["Marker"]
    return [
        task
        for task in tasks
        if task.get("SourceArn") == source_arn
        and task.get("ExportTaskIdentifier") != identifier
        and str(task.get("Status", "")).upper() in RUNNING_STATUSES | {COMPLETE}
    ]


def why_not_adopted(
    task: dict[str, Any], export_only: Iterable[str], readable: Iterable[S3Location]
) -> str | None:
    """Why another export of the snapshot cannot serve this run (None: it can)."""
    export_only = list(export_only)
    if not export_covers(task.get("ExportOnly"), export_only):
        return f"it exports {task.get('ExportOnly')}, not all of {export_only}"
    bucket, prefix = str(task.get("S3Bucket", "")), str(task.get("S3Prefix") or "")
    if not any(location.holds(bucket, prefix) for location in readable):
        where = S3Location(bucket, prefix.strip("/")).uri
        return f"it writes to {where}, which the pipeline may not read ({SETTING})"
    return None


def _adoptable(
    rds: Any,
    identifier: str,
    source_arn: str,
    export_only: Iterable[str],
    readable: Iterable[S3Location],
) -> tuple[dict[str, Any] | None, list[str]]:
    """The best other export of the snapshot that fits (complete before running), and the rest."""
    fitting, passed_over = [], []
    readable = list(readable)
    for task in other_export_tasks(rds, source_arn, identifier):
        reason = why_not_adopted(task, export_only, readable)
        if reason is None:
            fitting.append(task)
        else:
            passed_over.append(
                f"export task {task.get('ExportTaskIdentifier')!r} ({task.get('Status')}) of "
                f"the same snapshot is not used: {reason}"
            )
    fitting.sort(
        key=lambda t: (str(t.get("Status", "")).upper() == COMPLETE, str(t.get("TaskStartTime"))),
        reverse=True,
    )
    return (fitting[0] if fitting else None), passed_over


def ensure_export_task(
    rds: Any,
    *,
    identifier: str,
    source_arn: str,
    bucket: str,
    prefix: str,
    iam_role_arn: str,
    kms_key_id: str,
    export_only: Iterable[str],
    retry_hint: str,
    adopt_foreign: bool = False,
    readable: Iterable[S3Location] = (),
) -> EnsuredExport:
    """The export task for this run: `identifier` if it exists, else another that fits, else new.

    An existing FAILED/CANCELED `identifier` is an error (it cannot be
    reused; `retry_hint` says how to get a fresh one), as is an existing task
    of another snapshot (an identifier collision). With `adopt_foreign`, an
    export of the same snapshot started under another identifier (by a team's
    own Lambda, the console, the CLI) is used when it covers `export_only` and
    writes inside `readable`, instead of paying for a second export; the
    others are listed in `passed_over`. AWS runs one export per snapshot at a
    time, so a running one that does not fit is an error that says so.
    """
    export_only = list(export_only)
    readable = list(readable)
    existing = describe_export_task(rds, identifier)
    passed_over: list[str] = []
    if existing is None:
        if adopt_foreign:
            adopted, passed_over = _adoptable(rds, identifier, source_arn, export_only, readable)
            if adopted is not None:
                return EnsuredExport(adopted, False, True, tuple(passed_over))
        try:
            started = rds.start_export_task(
                ExportTaskIdentifier=identifier,
                SourceArn=source_arn,
                S3BucketName=bucket,
                S3Prefix=prefix,
                IamRoleArn=iam_role_arn,
                KmsKeyId=kms_key_id,
                ExportOnly=export_only,
            )
            return EnsuredExport(started, True, False, tuple(passed_over))
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code not in {"ExportTaskAlreadyExists", "ExportTaskAlreadyExistsFault"}:
                raise RdsExportError(
                    f"StartExportTask {identifier!r} for {source_arn} failed ({code}): "
                    f"{exc.response.get('Error', {}).get('Message', exc)}"
                ) from None
            # Another run started it between our describe and start: use theirs.
            existing = describe_export_task(rds, identifier)
            if existing is None:
                raise _one_export_at_a_time(rds, identifier, source_arn, adopt_foreign) from None
    if existing.get("SourceArn") != source_arn:
        raise RdsExportError(
            f"export task {identifier!r} exists for {existing.get('SourceArn')}, not {source_arn}"
        )
    if existing.get("Status", "").upper() in FAILED_STATUSES:
        raise RdsExportError(failure_message(existing, retry_hint))
    return EnsuredExport(existing, False, False, tuple(passed_over))


def _one_export_at_a_time(
    rds: Any, identifier: str, source_arn: str, adopt_foreign: bool
) -> RdsExportError:
    running = [
        task
        for task in other_export_tasks(rds, source_arn, identifier)
        if str(task.get("Status", "")).upper() in RUNNING_STATUSES
    ]
    names = ", ".join(repr(task.get("ExportTaskIdentifier")) for task in running) or "another"
    why = (
        "it does not fit this run (see the lines above)"
        if adopt_foreign
        else "rds.adopt_foreign_exports is false"
    )
    return RdsExportError(
        f"export task {names} of {source_arn} is running and AWS runs one export per snapshot "
        f"at a time; it is not used because {why}: re-run when it has finished"
    )


def wait_for_export(
    rds: Any,
    identifier: str,
    *,
    max_interval_seconds: float,
    timeout_seconds: float,
    retry_hint: str,
    log: Callable[[str], None] = lambda _message: None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    first_interval_seconds: float = _FIRST_POLL_SECONDS,
) -> dict[str, Any]:
    """Poll until COMPLETE; raise at once on FAILED/CANCELED, or after the timeout."""
    deadline = clock() + timeout_seconds
    interval = min(first_interval_seconds, max_interval_seconds)
    last_progress: object = None
    while True:
        task = describe_export_task(rds, identifier)
        if task is None:
            raise RdsExportError(f"export task {identifier!r} disappeared while waiting for it")
        status = task.get("Status", "").upper()
        progress = task.get("PercentProgress")
        if (status, progress) != last_progress:
            log(f"export {identifier}: {status} {progress if progress is not None else '?'}%")
            last_progress = (status, progress)
        if status == COMPLETE:
            return task
        if status in FAILED_STATUSES:
            raise RdsExportError(failure_message(task, retry_hint))
        remaining = deadline - clock()
        if remaining <= 0:
            raise RdsExportError(
                f"export task {identifier!r} still {status} after {timeout_seconds:.0f} s "
                "(rds.export_timeout_minutes); it keeps running in AWS: re-run later to pick "
                "it up, or raise the timeout"
            )
        sleep(min(interval, remaining))
        interval = min(interval * 2, max_interval_seconds)


_TABLE_TOKEN = re.compile(r"[A-Za-z0-9_$]+(?:\.[A-Za-z0-9_$]+){1,2}")


def skipped_tables(warning_message: str | None, export_only: Iterable[str]) -> list[str]:
    """Configured tables that the export's WarningMessage says were skipped.

    WarningMessage is a JSON string whose exact shape AWS does not document,
    so every string in it (or the raw text, if it is not JSON) is searched for
    `database.table` (MySQL) or `database.schema.table` (PostgreSQL) names;
    only configured tables count.
    """
    if not warning_message:
        return []
    texts: list[str] = []

    def collect(value: Any) -> None:
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                texts.append(str(key))
                collect(item)
        elif isinstance(value, list):
            for item in value:
                collect(item)

    try:
        collect(json.loads(warning_message))
    except ValueError:
        texts.append(warning_message)
    mentioned = {token for text in texts for token in _TABLE_TOKEN.findall(text)}
    mentioned |= {text.strip() for text in texts}
    return [table for table in export_only if table in mentioned]
