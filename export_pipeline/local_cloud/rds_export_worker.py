"""The local cloud's RDS snapshot export task and the worker that writes its files.

`rds_exports` starts, cancels and describes export tasks (moto's RDS backend,
patched); the worker here paces a task through STARTING → IN_PROGRESS →
COMPLETE and writes what AWS writes for a MySQL export (Parquet parts,
export_info and export_tables_info). `postgres_exports` subclasses the worker
for PostgreSQL snapshots. Both export modules import this one, and neither
imports the other's inside.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from export_pipeline.local_cloud.mysql_types import INTEGER_RANGES, TEXT_LIMITS, MySQLType
from export_pipeline.local_cloud.mysql_types import is_exportable_column_name as _exportable
from export_pipeline.local_cloud.rds_store import Store, TableInfo

ROWS_PER_FILE_ENV = "EXPORT_PIPELINE_LOCAL_RDS_ROWS_PER_FILE"
FILES_PER_BATCH_ENV = "EXPORT_PIPELINE_LOCAL_RDS_FILES_PER_BATCH"
TABLES_PER_INFO_FILE = 100
# One lock for the tasks of every backend: starting a task and a worker's
# status changes are seen whole.
_lock = threading.RLock()
log = logging.getLogger(__name__)


# --- errors (codes as botocore's RDS service model spells them) ------------------


def _error(code: str, message: str) -> Exception:
    from moto.rds.exceptions import RDSClientError

    return RDSClientError(code, message)


# --- the export task ------------------------------------------------------------


@dataclass
class LocalExportTask:
    """One export task; attribute names are what moto's serializer looks up."""

    export_task_identifier: str
    source_arn: str
    source_type: str
    s3_bucket: str
    s3_prefix: str
    iam_role_arn: str
    kms_key_id: str
    export_only: list[str] | None
    snapshot_time: dt.datetime
    account_id: str
    region: str
    status: str = "STARTING"
    percent_progress: int = 0
    task_start_time: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    task_end_time: dt.datetime | None = None
    total_extracted_data_in_gb: int = 0
    failure_cause: str | None = None
    warning_message: str | None = None
    cancel_requested: threading.Event = field(default_factory=threading.Event)

    @property
    def export_path(self) -> str:
        prefix = self.s3_prefix.strip("/")
        return f"{prefix}/{self.export_task_identifier}" if prefix else self.export_task_identifier


def _env_int(name: str, default: int) -> int:
    try:
        return max(int(os.environ.get(name, default)), 1)
    except ValueError:
        return default


# --- the worker: pacing, Parquet and JSON files ---------------------------------


def _iso(moment: dt.datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z"
    )


def type_mapping(column_name: str, mysql_type: MySQLType) -> dict[str, Any]:
    """One `originalTypeMappings` entry of export_tables_info."""
    b = mysql_type.base
    char_len = 0
    if b in ("char", "varchar", "binary", "varbinary"):
        char_len = mysql_type.length or 0
    elif b in TEXT_LIMITS:
        char_len = TEXT_LIMITS[b]
    precision = 0
    if b in INTEGER_RANGES:
        high = INTEGER_RANGES[b][2] if mysql_type.unsigned else INTEGER_RANGES[b][1]
        precision = len(str(high))
    elif b == "decimal":
        precision = mysql_type.length or 10
    elif b == "float":
        precision = 12
    elif b == "double":
        precision = 22
    return {
        "columnName": column_name,
        "originalType": mysql_type.column_type.lower(),
        "expectedExportedType": mysql_type.expected_exported_type(),
        "originalCharMaxLength": char_len,
        "originalNumPrecision": precision,
        "originalDateTimePrecision": mysql_type.fsp,
    }


class _Cancelled(Exception):
    pass


class _ExportWorker:
    def __init__(
        self,
        task: LocalExportTask,
        store: Store | None,
        tables: list[TableInfo],
        kms_arn: str,
        partition: str,
        duration: float,
    ) -> None:
        self.task = task
        self.store = store
        self.tables = tables
        self.kms_arn = kms_arn
        self.partition = partition
        self.duration = duration
        self.rows_per_file = _env_int(ROWS_PER_FILE_ENV, 1000)
        self.files_per_batch = _env_int(FILES_PER_BATCH_ENV, 2)
        self.started = time.monotonic()
        self.bytes_written = 0

    # pacing: STARTING for the first 15%, IN_PROGRESS over the next 80%
    def _wait_until(self, fraction: float) -> None:
        deadline = self.started + self.duration * fraction
        while True:
            if self.task.cancel_requested.is_set():
                raise _Cancelled
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.05))

    def _put(self, key: str, body: bytes) -> None:
        from moto.s3.models import s3_backends

        s3 = s3_backends[self.task.account_id][self.partition]
        s3.put_object(self.task.s3_bucket, key, body, encryption="aws:kms", kms_key_id=self.kms_arn)
        self.bytes_written += len(body)

    def run(self) -> None:
        task = self.task
        try:
            self._wait_until(0.15)
            with _lock:
                task.status = "IN_PROGRESS"
            statuses, skipped = self._export_tables()
            self._wait_until(0.95)
            self._write_info(statuses)
            with _lock:
                if task.cancel_requested.is_set():
                    raise _Cancelled
                task.warning_message = _warning(skipped)
                task.total_extracted_data_in_gb = int(self.bytes_written / 1e9)
                task.percent_progress = 100
                task.task_end_time = dt.datetime.now(dt.UTC)
                task.status = "COMPLETE"
        except _Cancelled:
            with _lock:
                task.status = "CANCELED"
                task.task_end_time = dt.datetime.now(dt.UTC)
        except Exception as exc:  # the task fails visibly, like AWS's FAILED + FailureCause
            log.exception("RDS export %s failed", task.export_task_identifier)
            with _lock:
                task.status = "FAILED"
                task.failure_cause = f"{type(exc).__name__}: {exc}"
                task.task_end_time = dt.datetime.now(dt.UTC)

    # What differs per engine (`postgres_exports` overrides these four).
    def _skip_reason(self, table: Any) -> str | None:
        """Why AWS would skip the table, or None when it is exported."""
        if all(_exportable(c.name) for c in table.columns):
            return None
        return (
            "The table has column names with characters that are not supported "
            "(, ; { } ( ) \\n \\t =) and was skipped."
        )

    def _count(self, table: Any) -> int:
        assert self.store is not None
        return self.store.count(table.database, table.name)

    def _type_mappings(self, table: Any) -> list[dict[str, Any]]:
        return [type_mapping(c.name, c.mysql_type) for c in table.columns]

    def _export_tables(self) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
        reasons = {t.table_id: self._skip_reason(t) for t in self.tables}
        skipped = [t for t in self.tables if reasons[t.table_id]]
        exported = [t for t in self.tables if not reasons[t.table_id]]
        counts = {t.table_id: self._count(t) for t in exported} if self.store else {}
        total_files = sum(max(1, -(-counts[t.table_id] // self.rows_per_file)) for t in exported)
        done = 0
        statuses = []
        for job_id, table in enumerate(exported, 100):
            parts, size = 0, 0
            for size_part in self._write_table(table):
                parts += 1
                size += size_part
                done += 1
                with _lock:
                    if self.task.status == "IN_PROGRESS":
                        self.task.percent_progress = min(99, int(100 * done / total_files))
                self._wait_until(0.15 + 0.8 * done / total_files)
            statuses.append(
                {
                    "tableStatistics": {
                        "extractionJobId": job_id,
                        "partitioningInfo": {
                            "numberOfPartitions": parts,
                            "numberOfCompletedPartitions": parts,
                        },
                    },
                    "schemaMetadata": {"originalTypeMappings": self._type_mappings(table)},
                    "status": "COMPLETE",
                    "sizeGB": size / 1e9,
                    "target": table.target,
                }
            )
        for table in skipped:
            statuses.append(
                {
                    "schemaMetadata": {"originalTypeMappings": []},
                    "status": "SKIPPED",
                    "sizeGB": 0.0,
                    "target": table.target,
                    "warningMessage": reasons[table.table_id],
                }
            )
        return statuses, [{"target": t.target, "reason": reasons[t.table_id]} for t in skipped]

    def _write_table(self, table: TableInfo) -> Any:
        """Write the table's part files; yields each file's size as it lands in S3."""
        types = [c.mysql_type for c in table.columns]
        schema = pa.schema(
            [
                pa.field(c.name, t.arrow_type(), nullable=True)
                for c, t in zip(table.columns, types, strict=True)
            ]
        )
        base = f"{self.task.export_path}/{table.database}/{table.target}"
        batches = self.store.rows(table, self.rows_per_file) if self.store else iter(())
        uuid_ref = [""]  # one uuid per batch folder, like one Spark write job
        index = -1
        for index, rows in enumerate(batches):
            yield self._write_part(base, schema, types, rows, index, uuid_ref)
        if index < 0:  # an empty table still gets one (schema-only) file
            yield self._write_part(base, schema, types, [], 0, uuid_ref)

    def _write_part(
        self,
        base: str,
        schema: pa.Schema,
        types: list[MySQLType],
        rows: list[tuple[Any, ...]],
        index: int,
        uuid_ref: list[str],
    ) -> int:
        batch = index // self.files_per_batch + 1
        if index % self.files_per_batch == 0 or not uuid_ref[0]:
            uuid_ref[0] = str(uuid.uuid4())
        # Part numbers count across the table and skip one at each new batch
        # folder: AWS's numbers have gaps, readers must not rely on them.
        part_number = index + (batch - 1)
        columns = list(zip(*rows, strict=True)) if rows else [[] for _ in types]
        arrays = [t.arrow_array(list(col)) for t, col in zip(types, columns, strict=True)]
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_arrays(arrays, schema=schema), buffer, compression="gzip")
        body = buffer.getvalue()
        key = f"{base}/{batch}/part-{part_number:05d}-{uuid_ref[0]}.c000.gz.parquet"
        if self.task.cancel_requested.is_set():
            raise _Cancelled
        self._put(key, body)
        return len(body)

    def _write_info(self, statuses: list[dict[str, Any]]) -> None:
        task = self.task
        path = task.export_path
        n = len(statuses)
        for start in range(0, max(n, 1), TABLES_PER_INFO_FILE):
            chunk = statuses[start : start + TABLES_PER_INFO_FILE]
            last = start + max(len(chunk), 1)
            key = (
                f"{path}/export_tables_info_{task.export_task_identifier}"
                f"_from_{start + 1}_to_{last}.json"
            )
            self._put(key, json.dumps({"perTableStatus": chunk}, indent=2).encode())
        info = {
            "exportTaskIdentifier": task.export_task_identifier,
            "sourceArn": task.source_arn,
            "exportOnly": task.export_only or [],
            "snapshotTime": _iso(task.snapshot_time),
            "taskStartTime": _iso(task.task_start_time),
            "taskEndTime": _iso(dt.datetime.now(dt.UTC)),
            "s3Bucket": task.s3_bucket,
            "s3Prefix": task.s3_prefix,
            "exportedFilesPath": path,
            "iamRoleArn": task.iam_role_arn,
            "kmsKeyId": task.kms_key_id,
            "status": "COMPLETE",
            "percentProgress": 100,
            "totalExportedDataInGB": self.bytes_written / 1e9,
        }
        self._put(
            f"{path}/export_info_{task.export_task_identifier}.json",
            json.dumps(info, indent=2).encode(),
        )


def _warning(skipped: list[dict[str, str]]) -> str | None:
    if not skipped:
        return None
    return json.dumps({"skippedTables": skipped, "general": []})
