"""AWS-faithful RDS snapshot exports inside moto's server process.

`install(state_dir)` patches moto 5.2's RDS models (call it in the process that
serves moto, before serving) so that plain boto3 calls behave like AWS
(https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_ExportSnapshot.html):

* Snapshots hold data. Creating a DB snapshot or DB cluster snapshot (manual,
  or automated `rds:<id>-YYYY-MM-DD-HH-MM`) copies the instance's live data into
  a snapshot store file under `<state_dir>/rds/<region>/snapshots/`, so later
  changes never alter it. The live data is the embedded SQLite store
  (`rds_store.store_path`) or, when the instance/cluster has the tag
  `local-cloud:source-url` = `mysql://user@host:port/db`, a real MySQL/MariaDB
  server read through information_schema + pymysql.
* "Run the nightly backup now": `CreateDBSnapshot` / `CreateDBClusterSnapshot`
  with the reserved identifier `local-cloud-nightly-backup` takes an automated
  snapshot instead and returns it (AWS has no API for that; see
  `rds_client.take_automated_snapshot`). Automated names are per minute; when
  the minute's name is taken, the next free minute is used.
* `StartExportTask` validates like AWS (identifier rule, source, IAM role and
  its trust in export.rds.amazonaws.com, KMS key, bucket, ExportOnly, one task
  per source, five at a time) with the error codes of botocore's RDS model,
  then a worker thread moves the task STARTING → IN_PROGRESS (PercentProgress
  rising) → COMPLETE over `EXPORT_PIPELINE_LOCAL_EXPORT_SECONDS` (default 2 s;
  a snapshot tagged `local-cloud:export-seconds` sets its own exports' time),
  writing gzip-compressed Parquet plus `export_info_*.json` and
  `export_tables_info_*.json` into moto's S3 backend, SSE-KMS with the key.
* `DescribeExportTasks` (identifier, SourceArn, SourceType, Filters,
  pagination) and `CancelExportTask` (CANCELING → CANCELED, written files stay).

Known differences from AWS: exports take seconds, not minutes; `TotalExtractedDataInGB`
is rounded down like an int; the IAM role's S3 permissions are evaluated only
with IAM enforced (`iam_enforcement.export_role_refusal`) and the KMS key
policy never (otherwise only existence, state, and the role's trust policy);
the five-task quota error code is not documented by AWS (we use
`ExportTaskLimitReached`); `WarningMessage`'s exact JSON shape is unconfirmed.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from export_pipeline.local_cloud.iam_enforcement import export_role_refusal
from export_pipeline.local_cloud.postgres_exports import PostgresExportWorker, select_tables
from export_pipeline.local_cloud.postgres_store import SUFFIX as PG_SUFFIX
from export_pipeline.local_cloud.postgres_store import PgStore, is_pg_store, pg_store_path
from export_pipeline.local_cloud.rds_export_worker import (
    LocalExportTask,
    _error,
    _ExportWorker,
    _lock,
)
from export_pipeline.local_cloud.rds_store import (
    SOURCE_URL_TAG,
    MySQLSource,
    Store,
    TableInfo,
    snapshot_dir,
    store_path,
)

log = logging.getLogger(__name__)

EXPORT_SECONDS_ENV = "EXPORT_PIPELINE_LOCAL_EXPORT_SECONDS"
# Per snapshot: a test that needs an export still running (a daemon restart) tags it.
EXPORT_SECONDS_TAG = "local-cloud:export-seconds"
NIGHTLY_BACKUP_ID = "local-cloud-nightly-backup"
MAX_ACTIVE_EXPORTS = 5
_ACTIVE = ("STARTING", "IN_PROGRESS", "CANCELING")
_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,59}$")
_STORE_ATTR = "_local_cloud_store"

_state: dict[str, Any] = {"state_dir": None, "installed": False}


def _export_seconds(source: Any = None) -> float:
    tagged = _tag_value(source, EXPORT_SECONDS_TAG) if source is not None else None
    try:
        return max(float(tagged or os.environ.get(EXPORT_SECONDS_ENV, "2")), 0.0)
    except ValueError:
        return 2.0


# --- install --------------------------------------------------------------------


def install(state_dir: Path) -> None:
    """Patch moto's RDS models in this process; idempotent (the last state dir wins)."""
    from moto.rds import models as rds_models
    from moto.rds import responses as rds_responses

    with _lock:
        _state["state_dir"] = Path(state_dir)
        if _state["installed"]:
            return
        backend_cls = rds_models.RDSBackend
        orig_create_snapshot = backend_cls.create_db_snapshot
        orig_create_cluster_snapshot = backend_cls.create_db_cluster_snapshot
        orig_copy_snapshot = backend_cls.copy_db_snapshot
        orig_copy_cluster_snapshot = backend_cls.copy_db_cluster_snapshot

        def create_db_snapshot(
            self: Any,
            db_instance_identifier: str,
            db_snapshot_identifier: str,
            *args: Any,
            **kwargs: Any,
        ) -> Any:
            if db_snapshot_identifier.lower() == NIGHTLY_BACKUP_ID:
                database = self.databases.get(db_instance_identifier)
                if database is None:
                    from moto.rds.exceptions import DBInstanceNotFoundError

                    raise DBInstanceNotFoundError(db_instance_identifier)
                return _automated_instance_snapshot(self, database)
            snapshot = orig_create_snapshot(
                self, db_instance_identifier, db_snapshot_identifier, *args, **kwargs
            )
            _attach_capture(
                self,
                snapshot,
                "instance",
                db_instance_identifier,
                self.databases.get(db_instance_identifier),
                lambda: self.database_snapshots.pop(db_snapshot_identifier, None),
            )
            return snapshot

        def create_db_cluster_snapshot(
            self: Any,
            db_cluster_identifier: str,
            db_cluster_snapshot_identifier: str,
            *args: Any,
            **kwargs: Any,
        ) -> Any:
            if db_cluster_snapshot_identifier.lower() == NIGHTLY_BACKUP_ID:
                cluster = self.clusters.get(db_cluster_identifier)
                if cluster is None:
                    from moto.rds.exceptions import DBClusterNotFoundError

                    raise DBClusterNotFoundError(db_cluster_identifier)
                return _automated_cluster_snapshot(self, cluster)
            snapshot = orig_create_cluster_snapshot(
                self, db_cluster_identifier, db_cluster_snapshot_identifier, *args, **kwargs
            )
            _attach_capture(
                self,
                snapshot,
                "cluster",
                db_cluster_identifier,
                self.clusters.get(db_cluster_identifier),
                lambda: self.cluster_snapshots.pop(db_cluster_snapshot_identifier, None),
            )
            return snapshot

        def copy_db_snapshot(self: Any, **kwargs: Any) -> Any:
            copied = orig_copy_snapshot(self, **kwargs)
            original = self.get_db_snapshot(kwargs["source_db_snapshot_identifier"])
            setattr(copied, _STORE_ATTR, getattr(original, _STORE_ATTR, None))
            return copied

        def copy_db_cluster_snapshot(self: Any, **kwargs: Any) -> Any:
            copied = orig_copy_cluster_snapshot(self, **kwargs)
            original = self.get_db_cluster_snapshot(kwargs["source_db_cluster_snapshot_identifier"])
            setattr(copied, _STORE_ATTR, getattr(original, _STORE_ATTR, None))
            return copied

        # moto calls save_automated_backup only while creating the instance/cluster:
        # if its data cannot be read (a MySQL source that is down), the creation
        # fails as a whole instead of leaving an instance without its first backup.
        def instance_backup(self: Any) -> None:
            self.add_event("DB_INSTANCE_BACKUP_START")
            try:
                _automated_instance_snapshot(self.backend, self)
            except Exception:
                self.backend.databases.pop(self.db_instance_identifier, None)
                raise
            self.add_event("DB_INSTANCE_BACKUP_FINISH")

        def cluster_backup(self: Any) -> None:
            try:
                _automated_cluster_snapshot(self.backend, self)
            except Exception:
                self.backend.clusters.pop(self.db_cluster_identifier, None)
                raise

        backend_cls.create_db_snapshot = create_db_snapshot
        backend_cls.create_db_cluster_snapshot = create_db_cluster_snapshot
        backend_cls.copy_db_snapshot = copy_db_snapshot
        backend_cls.copy_db_cluster_snapshot = copy_db_cluster_snapshot
        rds_models.DBInstance.save_automated_backup = instance_backup
        rds_models.DBCluster.save_automated_backup = cluster_backup
        backend_cls.start_export_task = _start_export_task
        backend_cls.cancel_export_task = _cancel_export_task
        backend_cls.describe_export_tasks = _describe_export_tasks
        rds_responses.RDSResponse.describe_export_tasks = _describe_export_tasks_response
        _state["installed"] = True


def _state_dir() -> Path:
    state_dir = _state["state_dir"]
    if state_dir is None:  # pragma: no cover - install() always sets it
        raise RuntimeError("rds_exports.install(state_dir) has not been called")
    return state_dir


# --- snapshots ------------------------------------------------------------------


def _free_automated_id(existing: Any, identifier: str) -> str:
    moment = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    while True:
        candidate = f"rds:{identifier}-{moment:%Y-%m-%d-%H-%M}"
        if candidate not in existing:
            return candidate
        moment += dt.timedelta(minutes=1)


def _automated_instance_snapshot(backend: Any, database: Any) -> Any:
    snapshot_id = _free_automated_id(backend.database_snapshots, database.db_instance_identifier)
    return backend.create_auto_snapshot(database.db_instance_identifier, snapshot_id)


def _automated_cluster_snapshot(backend: Any, cluster: Any) -> Any:
    snapshot_id = _free_automated_id(backend.cluster_snapshots, cluster.db_cluster_identifier)
    return backend.create_auto_cluster_snapshot(cluster.db_cluster_identifier, snapshot_id)


def _tag_value(resource: Any, key: str) -> str | None:
    for tag in getattr(resource, "tags", None) or []:
        if tag.get("Key") == key:
            return tag.get("Value")
    return None


def _is_postgres(resource: Any) -> bool:
    """Whether the instance/cluster runs PostgreSQL (`postgres`, `aurora-postgresql`)."""
    return "postgres" in str(getattr(resource, "engine", "") or "").lower()


def capture_live_data(region: str, kind: str, identifier: str, resource: Any) -> Path:
    """Copy the live data of an instance/cluster into a new snapshot store file."""
    target = (
        snapshot_dir(_state_dir(), region) / f"{kind}-{identifier.lower()}-{uuid.uuid4()}.sqlite"
    )
    url = _tag_value(resource, SOURCE_URL_TAG) if resource is not None else None
    if _is_postgres(resource):
        from export_pipeline.local_cloud.postgres_store import copy_from_postgres

        target = target.with_name(target.name.removesuffix(".sqlite") + PG_SUFFIX)
        if url:
            copy_from_postgres(url, target)
        else:
            PgStore(pg_store_path(_state_dir(), region, kind, identifier)).copy_to(target)
        return target
    if url:
        from export_pipeline.local_cloud.rds_store import copy_from_mysql

        copy_from_mysql(MySQLSource.from_url(url), target)
    else:
        Store(store_path(_state_dir(), region, kind, identifier)).copy_to(target)
    return target


def _attach_capture(
    backend: Any, snapshot: Any, kind: str, identifier: str, resource: Any, undo: Callable[[], Any]
) -> None:
    try:
        path = capture_live_data(backend.region_name, kind, identifier, resource)
    except (ValueError, OSError, sqlite3.Error) as exc:  # StoreError is a ValueError
        undo()
        raise _error(
            "InvalidParameterValue", f"cannot snapshot {kind} {identifier}: {exc}"
        ) from None
    setattr(snapshot, _STORE_ATTR, path)


# --- StartExportTask ------------------------------------------------------------


def _parse_rds_arn(arn: str) -> tuple[str, str, str, str]:
    """(region, account, resource type, resource id) of an RDS ARN; id may hold ':'."""
    parts = arn.split(":", 6)
    if len(parts) != 7 or parts[0] != "arn" or parts[2] != "rds":
        raise _error("InvalidParameterValue", f"SourceArn {arn!r} is not an RDS ARN")
    return parts[3], parts[4], parts[5], parts[6]


def _resolve_source(backend: Any, source_arn: str) -> tuple[str, Any, Path | None, dt.datetime]:
    """(SourceType, resource, store path or None for a live cluster, snapshot time)."""
    region, account, kind, ident = _parse_rds_arn(source_arn)
    wrong_place = region != backend.region_name or account != backend.account_id
    if kind == "snapshot":
        snap = None if wrong_place else backend.database_snapshots.get(ident)
        if snap is None:
            raise _error("DBSnapshotNotFound", f"DBSnapshot {ident} not found.")
        return "SNAPSHOT", snap, getattr(snap, _STORE_ATTR, None), snap.created
    if kind == "cluster-snapshot":
        snap = None if wrong_place else backend.cluster_snapshots.get(ident)
        if snap is None:
            raise _error("DBClusterSnapshotNotFoundFault", f"DBClusterSnapshot {ident} not found.")
        return "SNAPSHOT", snap, getattr(snap, _STORE_ATTR, None), snap.created
    if kind == "cluster":
        cluster = None if wrong_place else backend.clusters.get(ident)
        if cluster is None:
            raise _error("DBClusterNotFoundFault", f"DBCluster {ident} not found.")
        return "CLUSTER", cluster, None, dt.datetime.now(dt.UTC)
    raise _error(
        "InvalidParameterValue",
        f"SourceArn {source_arn!r} must name a DB snapshot, DB cluster snapshot or DB cluster",
    )


def _check_role(account_id: str, role_arn: str, bucket: str, prefix: str) -> None:
    from moto.iam.models import iam_backends

    try:
        role = iam_backends[account_id]["global"].get_role_by_arn(role_arn)
    except Exception:
        raise _error("IamRoleNotFound", f"IAM role {role_arn} not found.") from None
    trust = str(role.assume_role_policy_document or "")
    if "export.rds.amazonaws.com" not in trust:
        raise _error(
            "IamRoleMissingPermissions",
            f"IAM role {role_arn} cannot be assumed by export.rds.amazonaws.com "
            "(its trust policy does not name that service).",
        )
    refusal = export_role_refusal(account_id, role_arn, bucket, prefix)
    if refusal:
        raise _error("IamRoleMissingPermissions", refusal)


def _resolve_kms_key(backend: Any, key_id: str) -> str:
    from moto.kms.models import kms_backends

    region, account = backend.region_name, backend.account_id
    if key_id.startswith("arn:"):
        parts = key_id.split(":")
        if len(parts) < 6 or parts[2] != "kms":
            raise _error("KMSKeyNotAccessibleFault", f"KMS key {key_id} is not a KMS ARN.")
        region, account = parts[3], parts[4]
    if region != backend.region_name:
        raise _error(
            "KMSKeyNotAccessibleFault",
            f"KMS key {key_id} is in {region}; the export needs a key in {backend.region_name}.",
        )
    try:
        key = kms_backends[account][region].describe_key(key_id)
    except Exception:
        raise _error("KMSKeyNotAccessibleFault", f"KMS key {key_id} not found.") from None
    if getattr(key, "key_state", "Enabled") != "Enabled":
        raise _error(
            "KMSKeyNotAccessibleFault", f"KMS key {key_id} is {key.key_state}, not Enabled."
        )
    return str(key.arn)


def _check_bucket(account_id: str, partition: str, bucket: str, region: str) -> Any:
    """The bucket must exist and, as AWS documents, be in the snapshot's region."""
    from moto.s3.models import s3_backends

    s3 = s3_backends[account_id][partition]
    try:
        found = s3.get_bucket(bucket)
    except Exception:
        raise _error("InvalidS3BucketFault", f"S3 bucket {bucket} does not exist.") from None
    bucket_region = getattr(found, "region_name", region)
    if bucket_region != region:
        raise _error(
            "InvalidS3BucketFault",
            f"S3 bucket {bucket} is in {bucket_region}; it must be in {region}, "
            "the region of the export source.",
        )
    return found


def _select_tables(tables: list[TableInfo], export_only: list[str]) -> list[TableInfo]:
    if not export_only:
        return tables
    databases = {t.database for t in tables}
    targets = {t.target for t in tables}
    for entry in export_only:
        parts = entry.split(".")
        if len(parts) > 2 or not all(parts):
            raise _error(
                "InvalidExportOnly",
                f"ExportOnly entry {entry!r}: expected 'database' or 'database.table' for MySQL.",
            )
        if len(parts) == 1 and entry not in databases:
            raise _error("InvalidExportOnly", f"ExportOnly: database {entry!r} does not exist.")
        if len(parts) == 2 and entry not in targets:
            raise _error("InvalidExportOnly", f"ExportOnly: table {entry!r} does not exist.")
    wanted = set(export_only)
    return [t for t in tables if t.database in wanted or t.target in wanted]


def _all_tasks(account_id: str) -> list[LocalExportTask]:
    from moto.rds.models import rds_backends

    out: list[LocalExportTask] = []
    for _region, backend in rds_backends[account_id].items():
        out.extend(t for t in backend.export_tasks.values() if isinstance(t, LocalExportTask))
    return out


def _start_export_task(self: Any, kwargs: dict[str, Any]) -> LocalExportTask:
    identifier = str(kwargs.get("export_task_identifier") or "")
    source_arn = str(kwargs.get("source_arn") or "")
    bucket = str(kwargs.get("s3_bucket_name") or "")
    role_arn = str(kwargs.get("iam_role_arn") or "")
    kms_key_id = str(kwargs.get("kms_key_id") or "")
    prefix = str(kwargs.get("s3_prefix") or "")
    export_only = [str(e) for e in (kwargs.get("export_only") or [])]
    if not _IDENTIFIER.match(identifier) or identifier.endswith("-") or "--" in identifier:
        raise _error(
            "InvalidParameterValue",
            f"The parameter ExportTaskIdentifier is not a valid identifier ({identifier!r}). "
            "Identifiers must begin with a letter; must contain only ASCII letters, digits, "
            "and hyphens; and must not end with a hyphen or contain two consecutive hyphens.",
        )
    with _lock:
        if any(
            t.export_task_identifier.lower() == identifier.lower()
            for t in _all_tasks(self.account_id)
        ):
            raise _error(
                "ExportTaskAlreadyExists",
                f"Cannot start export task because a task with the identifier {identifier} "
                "already exists.",
            )
        source_type, resource, store, snapshot_time = _resolve_source(self, source_arn)
        status = getattr(resource, "status", "available")
        if status != "available":
            raise _error(
                "InvalidExportSourceState",
                f"Export source should be 'available' but current status is {status}.",
            )
        _check_role(self.account_id, role_arn, bucket, prefix)
        kms_arn = _resolve_kms_key(self, kms_key_id)
        _check_bucket(self.account_id, self.partition, bucket, self.region_name)
        active = [t for t in _all_tasks(self.account_id) if t.status in _ACTIVE]
        if any(t.source_arn == source_arn for t in active):
            raise _error(
                "ExportTaskAlreadyExists",
                f"An export task for {source_arn} is already running; only one export task "
                "per source can run at a time.",
            )
        if len(active) >= MAX_ACTIVE_EXPORTS:
            raise _error(
                "ExportTaskLimitReached",
                f"At most {MAX_ACTIVE_EXPORTS} export tasks can run at the same time.",
            )
        if source_type == "CLUSTER":  # exporting a live cluster: copy its data now
            try:
                store = capture_live_data(
                    self.region_name, "cluster", resource.db_cluster_identifier, resource
                )
            except (ValueError, OSError, sqlite3.Error) as exc:
                raise _error(
                    "InvalidExportSourceState", f"cannot read the cluster: {exc}"
                ) from None
        postgres = store is not None and is_pg_store(store)
        try:
            if postgres:
                selected = select_tables(PgStore(store).tables(), export_only)
            else:
                selected = _select_tables(Store(store).tables() if store else [], export_only)
        except Exception:
            if source_type == "CLUSTER" and store:
                store.unlink(missing_ok=True)
            raise
        task = LocalExportTask(
            export_task_identifier=identifier,
            source_arn=source_arn,
            source_type=source_type,
            s3_bucket=bucket,
            s3_prefix=prefix,
            iam_role_arn=role_arn,
            kms_key_id=kms_key_id,
            export_only=export_only or None,
            snapshot_time=snapshot_time,
            account_id=self.account_id,
            region=self.region_name,
        )
        self.export_tasks[identifier] = task
    if postgres:
        worker_class: type[_ExportWorker] = PostgresExportWorker
        data: Any = PgStore(store)
    else:
        worker_class, data = _ExportWorker, Store(store) if store else None
    worker = worker_class(
        task,
        data,
        selected,
        kms_arn,
        self.partition,
        _export_seconds(resource),
    )
    threading.Thread(target=worker.run, name=f"rds-export-{identifier}", daemon=True).start()
    return task


def _cancel_export_task(self: Any, export_task_identifier: str) -> LocalExportTask:
    with _lock:
        task = self.export_tasks.get(export_task_identifier)
        if not isinstance(task, LocalExportTask):
            raise _error(
                "ExportTaskNotFound",
                f"Cannot cancel export task because a task with the identifier "
                f"{export_task_identifier} does not exist.",
            )
        if task.status not in ("STARTING", "IN_PROGRESS"):
            raise _error(
                "InvalidExportTaskStateFault",
                f"Cannot cancel export task {export_task_identifier} in state {task.status}.",
            )
        task.status = "CANCELING"
        task.cancel_requested.set()
        return task


def _describe_export_tasks(
    self: Any,
    export_task_identifier: str | None = None,
    source_arn: str | None = None,
    source_type: str | None = None,
    filters: dict[str, list[str]] | None = None,
) -> list[LocalExportTask]:
    tasks = [t for t in self.export_tasks.values() if isinstance(t, LocalExportTask)]
    if export_task_identifier:
        tasks = [t for t in tasks if t.export_task_identifier == export_task_identifier]
        if not tasks:
            raise _error(
                "ExportTaskNotFound",
                f"Cannot find export task with the identifier {export_task_identifier}.",
            )
    if source_arn:
        tasks = [t for t in tasks if t.source_arn == source_arn]
    if source_type:
        tasks = [t for t in tasks if t.source_type == source_type]
    getters: dict[str, Callable[[LocalExportTask], str]] = {
        "export-task-identifier": lambda t: t.export_task_identifier,
        "s3-bucket": lambda t: t.s3_bucket,
        "source-arn": lambda t: t.source_arn,
        "status": lambda t: t.status.lower(),
        "source-type": lambda t: t.source_type,
    }
    for name, values in (filters or {}).items():
        if name not in getters:
            raise _error("InvalidParameterValue", f"Unrecognized filter name: {name}")
        tasks = [t for t in tasks if getters[name](t) in values]
    return tasks


def _describe_export_tasks_response(self: Any) -> Any:
    from moto.core.responses import ActionResult

    filters = {f["Name"]: list(f["Values"]) for f in self.params.get("Filters", []) or []}
    tasks = self.backend.describe_export_tasks(
        self.params.get("ExportTaskIdentifier"),
        self.params.get("SourceArn"),
        self.params.get("SourceType"),
        filters,
    )
    max_records = int(self.params.get("MaxRecords") or 100)
    if not 20 <= max_records <= 100:
        raise _error("InvalidParameterValue", "MaxRecords must be between 20 and 100.")
    start = int(self.params.get("Marker") or 0)
    page = tasks[start : start + max_records]
    result: dict[str, Any] = {"ExportTasks": page}
    if start + max_records < len(tasks):
        result["Marker"] = str(start + max_records)
    return ActionResult(result)
