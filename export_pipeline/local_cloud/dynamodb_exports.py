"""AWS-faithful DynamoDB point-in-time exports inside moto's server process.

moto 5.2's own `ExportTableToPointInTime` writes one data file of the current
items with no `_started`, no manifests, a wrong ARN and no incremental mode.
`install(state_dir)`, called by `aws_server` before it serves, replaces moto's
three export operations (`ExportTableToPointInTime`, `DescribeExport`,
`ListExports`) with the behaviour AWS documents
(https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/S3DataExport.Output.html),
so plain boto3 calls against the local endpoint see what they would see on AWS:

- PITR must be enabled (`PointInTimeRecoveryUnavailableException`); export
  times outside the PITR window are refused (`InvalidExportTimeException`);
- full exports are the table *as of* `ExportTime`, rebuilt from the change log
  of `dynamodb_history`; incremental exports hold one compacted line per item
  changed in [ExportFromTime, ExportToTime);
- the export stays `IN_PROGRESS` for `EXPORT_PIPELINE_LOCAL_EXPORT_SECONDS`
  (default 2 s) and then writes, through moto's S3 backend in this process,
  the documented layout: `_started`, gzip DynamoDB-JSON data files (one per
  simulated table partition, zero-byte when the partition is empty),
  `manifest-files.json`, `manifest-summary.json` and their `.md5` files;
- a missing bucket gives a `FAILED` export (`S3NoSuchBucket`), as on AWS;
- `ClientToken` is idempotent for 8 hours; the same token with other
  parameters is refused with `ExportConflictException` (botocore's service
  model documents that error for this case;
  `IdempotentParameterMismatchException` is not among the operation's errors).

Known differences from AWS: `ExportFormat=ION` is refused with a
ValidationException (DYNAMODB_JSON only); no `.checksum` manifest files; the
partition count is simulated: max(`EXPORT_PIPELINE_LOCAL_EXPORT_MIN_PARTITIONS`
(default 4), items / `EXPORT_PIPELINE_LOCAL_EXPORT_ITEMS_PER_PARTITION`
(default 1000)); billed sizes follow DynamoDB's item-size rules roughly
(incremental: at least 10 MB, as AWS bills); numbers are exported as moto
stored them (AWS normalises, e.g. "1.50" to "1.5"); error messages are ours
(the error codes are AWS's); `S3BucketOwner` is recorded, not checked; no
limit on concurrent exports; the state lives in this process's memory.

Tests and demos need history older than "just now" (incremental windows are
at least 15 minutes): the server also answers
`POST /_local_cloud/dynamodb/shift_history` (see `control_routes()` and
`dynamodb_time_control.shift_history`), which moves a table's whole recorded
past back in time. Nothing in the pipeline calls it.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import json
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from export_pipeline.local_cloud import dynamodb_history as history
from export_pipeline.local_cloud.dynamodb_history import (
    Image,
    datetime_to_micros,
    micros_to_datetime,
    now_micros,
)

_log = logging.getLogger("export_pipeline.local_cloud.dynamodb_exports")

EXPORT_SECONDS_ENV = "EXPORT_PIPELINE_LOCAL_EXPORT_SECONDS"
MIN_PARTITIONS_ENV = "EXPORT_PIPELINE_LOCAL_EXPORT_MIN_PARTITIONS"
ITEMS_PER_PARTITION_ENV = "EXPORT_PIPELINE_LOCAL_EXPORT_ITEMS_PER_PARTITION"
DEFAULT_EXPORT_SECONDS = 2.0
DEFAULT_MIN_PARTITIONS = 4
DEFAULT_ITEMS_PER_PARTITION = 1000

CONTROL_PREFIX = "/_local_cloud/dynamodb/"
SHIFT_HISTORY_PATH = CONTROL_PREFIX + "shift_history"
CHANGE_LOG_PATH = CONTROL_PREFIX + "change_log"

CLIENT_TOKEN_TTL_MICROS = 8 * 3600 * 1_000_000
INCREMENTAL_MIN_MICROS = 15 * 60 * 1_000_000
INCREMENTAL_MAX_MICROS = 24 * 3600 * 1_000_000
# AWS bills an incremental export for at least 10 MB of processed change data.
INCREMENTAL_MIN_BILLED_BYTES = 10 * 1024 * 1024
LIST_EXPORTS_MAX_RESULTS = 25

FULL_EXPORT = "FULL_EXPORT"
INCREMENTAL_EXPORT = "INCREMENTAL_EXPORT"
NEW_IMAGE = "NEW_IMAGE"
NEW_AND_OLD_IMAGES = "NEW_AND_OLD_IMAGES"


# --------------------------------------------------------------------------- errors


def _error(code: str, message: str) -> Exception:
    from moto.core.exceptions import JsonRESTError
    from moto.dynamodb.exceptions import ERROR_TYPE_PREFIX

    return JsonRESTError(ERROR_TYPE_PREFIX + code, message)


def _validation(message: str) -> Exception:
    return _error("ValidationException", message)


# --------------------------------------------------------------------------- model


@dataclass
class ExportRecord:
    """One export as DescribeExport reports it, plus what the worker needs."""

    arn: str
    export_id: str
    account_id: str
    region: str
    table_arn: str
    table_name: str
    table_id: str
    export_type: str
    export_format: str
    s3_bucket: str
    s3_bucket_owner: str | None
    s3_prefix: str | None
    s3_sse_algorithm: str | None
    s3_sse_kms_key_id: str | None
    client_token: str | None
    fingerprint: str
    start_micros: int
    export_time_micros: int | None = None  # full exports
    from_micros: int | None = None  # incremental exports
    to_micros: int | None = None
    view_type: str | None = None
    status: str = "IN_PROGRESS"
    end_micros: int | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    item_count: int | None = None
    billed_size_bytes: int | None = None
    manifest_key: str | None = None
    table: Any = field(default=None, repr=False)
    backend: Any = field(default=None, repr=False)

    @property
    def export_root(self) -> str:
        """`<prefix>/AWSDynamoDB` (no leading slash when there is no prefix)."""
        return f"{self.s3_prefix}/AWSDynamoDB" if self.s3_prefix else "AWSDynamoDB"

    def description(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ExportArn": self.arn,
            "ExportStatus": self.status,
            "StartTime": micros_to_datetime(self.start_micros),
            "TableArn": self.table_arn,
            "TableId": self.table_id,
            "S3Bucket": self.s3_bucket,
            "ExportFormat": self.export_format,
            "ExportType": self.export_type,
        }
        optional = {
            "EndTime": self.end_micros and micros_to_datetime(self.end_micros),
            "ExportManifest": self.manifest_key,
            "ClientToken": self.client_token,
            "S3BucketOwner": self.s3_bucket_owner,
            "S3Prefix": self.s3_prefix,
            "S3SseAlgorithm": self.s3_sse_algorithm,
            "S3SseKmsKeyId": self.s3_sse_kms_key_id,
            "FailureCode": self.failure_code,
            "FailureMessage": self.failure_message,
            "BilledSizeBytes": self.billed_size_bytes,
            "ItemCount": self.item_count,
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        if self.export_type == FULL_EXPORT:
            assert self.export_time_micros is not None
            out["ExportTime"] = micros_to_datetime(self.export_time_micros)
        else:
            assert self.from_micros is not None and self.to_micros is not None
            out["IncrementalExportSpecification"] = {
                "ExportFromTime": micros_to_datetime(self.from_micros),
                "ExportToTime": micros_to_datetime(self.to_micros),
                "ExportViewType": self.view_type,
            }
        return out

    def summary(self) -> dict[str, Any]:
        return {"ExportArn": self.arn, "ExportStatus": self.status, "ExportType": self.export_type}


@dataclass
class _BackendExports:
    """Exports and client tokens of one (account, region) DynamoDB backend."""

    exports: dict[str, ExportRecord] = field(default_factory=dict)
    tokens: dict[str, tuple[str, int]] = field(default_factory=dict)  # token -> (arn, created)


def _exports_of(backend: Any) -> _BackendExports:
    state = backend.__dict__.get("_local_cloud_exports")
    if state is None:
        state = _BackendExports()
        backend.__dict__["_local_cloud_exports"] = state
    return state


# --------------------------------------------------------------------------- settings


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a number") from None


# Set by the tests' `in_process_aws_server` (export_pipeline_tests/support) for
# a server inside a test process; changing the environment there would leak
# into servers that process starts later (they inherit it).
export_seconds_override: float | None = None


def export_seconds() -> float:
    """How long an export stays IN_PROGRESS (read per export)."""
    if export_seconds_override is not None:
        return export_seconds_override
    return max(0.0, _env_float(EXPORT_SECONDS_ENV, DEFAULT_EXPORT_SECONDS))


def partition_count(item_count: int) -> int:
    minimum = max(1, int(_env_float(MIN_PARTITIONS_ENV, DEFAULT_MIN_PARTITIONS)))
    per_partition = max(1, int(_env_float(ITEMS_PER_PARTITION_ENV, DEFAULT_ITEMS_PER_PARTITION)))
    return max(minimum, math.ceil(item_count / per_partition))


# --------------------------------------------------------------------------- request parsing


def _to_micros(value: Any, field_name: str) -> int:
    """A request timestamp (datetime, epoch seconds, or text) in epoch microseconds."""
    if isinstance(value, dt.datetime):
        return datetime_to_micros(value)
    if isinstance(value, bool):
        raise _validation(f"{field_name}: expected a timestamp, got {value!r}")
    if isinstance(value, int | float):
        return round(value * 1_000_000)
    if isinstance(value, str):
        try:
            return round(float(value) * 1_000_000)
        except ValueError:
            pass
        try:
            return datetime_to_micros(dt.datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            pass
    raise _validation(f"{field_name}: expected a timestamp, got {value!r}")


def _fingerprint(body: dict[str, Any]) -> str:
    relevant = {k: v for k, v in body.items() if k != "ClientToken"}
    return json.dumps(relevant, sort_keys=True, default=str)


def _find_table(backend: Any, table_arn: str) -> Any:
    for table in list(backend.tables.values()):
        if table.table_arn == table_arn:
            return table
    raise _error("TableNotFoundException", f"Table not found: {table_arn}")


def _iso(micros: int | None) -> str | None:
    if micros is None:
        return None
    return micros_to_datetime(micros).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def start_export(backend: Any, account_id: str, region: str, body: dict[str, Any]) -> ExportRecord:
    """ExportTableToPointInTime: validate, record, and start the worker."""
    table_arn = body.get("TableArn")
    bucket = body.get("S3Bucket")
    if not table_arn:
        raise _validation(
            "1 validation error detected: Value null at 'tableArn' failed to satisfy "
            "constraint: Member must not be null"
        )
    if not bucket:
        raise _validation(
            "1 validation error detected: Value null at 's3Bucket' failed to satisfy "
            "constraint: Member must not be null"
        )
    now = now_micros()
    state = _exports_of(backend)
    token = body.get("ClientToken")
    fingerprint = _fingerprint(body)

    with history.LOCK:
        if token:
            known = state.tokens.get(token)
            if known and now - known[1] < CLIENT_TOKEN_TTL_MICROS:
                record = state.exports[known[0]]
                if record.fingerprint != fingerprint:
                    raise _error(
                        "ExportConflictException",
                        f"The ClientToken {token!r} was already used for export "
                        f"{record.arn} with different parameters",
                    )
                return record

        table = _find_table(backend, table_arn)
        if not history.pitr_enabled(table):
            raise _error(
                "PointInTimeRecoveryUnavailableException",
                f"Point in time recovery is not enabled for table '{table.name}'",
            )
        export_format = body.get("ExportFormat") or "DYNAMODB_JSON"
        if export_format == "ION":
            raise _validation(
                "ExportFormat ION is not supported by the local cloud (AWS supports it); "
                "use DYNAMODB_JSON"
            )
        if export_format != "DYNAMODB_JSON":
            raise _validation(
                f"1 validation error detected: Value '{export_format}' at 'exportFormat' failed "
                "to satisfy constraint: Member must satisfy enum value set: [ION, DYNAMODB_JSON]"
            )
        export_type = body.get("ExportType") or FULL_EXPORT
        earliest = history.earliest_restorable_micros(table)
        assert earliest is not None
        record_fields: dict[str, Any] = {}
        if export_type == FULL_EXPORT:
            export_time = body.get("ExportTime")
            at = now if export_time is None else _to_micros(export_time, "ExportTime")
            _check_in_window(at, earliest, now, "ExportTime")
            record_fields["export_time_micros"] = at
            id_micros = at
        elif export_type == INCREMENTAL_EXPORT:
            from_micros, to_micros, view = _incremental_window(body, earliest, now)
            record_fields.update(from_micros=from_micros, to_micros=to_micros, view_type=view)
            id_micros = to_micros
        else:
            raise _validation(
                f"1 validation error detected: Value '{export_type}' at 'exportType' failed to "
                "satisfy constraint: Member must satisfy enum value set: "
                "[FULL_EXPORT, INCREMENTAL_EXPORT]"
            )

        sse = body.get("S3SseAlgorithm")
        if sse is not None and sse not in ("AES256", "KMS"):
            raise _validation(
                f"1 validation error detected: Value '{sse}' at 's3SseAlgorithm' failed to "
                "satisfy constraint: Member must satisfy enum value set: [AES256, KMS]"
            )
        prefix = body.get("S3Prefix") or None
        export_id = f"{id_micros // 1000:014d}-{secrets.token_hex(4)}"
        record = ExportRecord(
            arn=f"{table.table_arn}/export/{export_id}",
            export_id=export_id,
            account_id=account_id,
            region=region,
            table_arn=table.table_arn,
            table_name=table.name,
            table_id=history.history_of(table).table_id,
            export_type=export_type,
            export_format=export_format,
            s3_bucket=bucket,
            s3_bucket_owner=body.get("S3BucketOwner"),
            s3_prefix=prefix,
            s3_sse_algorithm=sse,
            s3_sse_kms_key_id=body.get("S3SseKmsKeyId"),
            client_token=token,
            fingerprint=fingerprint,
            start_micros=now,
            table=table,
            backend=backend,
            **record_fields,
        )
        state.exports[record.arn] = record
        if token:
            state.tokens[token] = (record.arn, now)

    _S3Writer(record).put(f"{record.export_root}/{record.export_id}/_started", b"", missing_ok=True)
    threading.Thread(
        target=_run_export, args=(record, export_seconds()), name=f"export-{export_id}", daemon=True
    ).start()
    return record


def _check_in_window(at: int, earliest: int, now: int, field_name: str) -> None:
    if at > now:
        raise _error(
            "InvalidExportTimeException",
            f"{field_name} {_iso(at)} is in the future (current time {_iso(now)})",
        )
    if at < earliest:
        raise _error(
            "InvalidExportTimeException",
            f"{field_name} {_iso(at)} is outside the point in time recovery window: the "
            f"earliest restorable time is {_iso(earliest)}",
        )


def _incremental_window(body: dict[str, Any], earliest: int, now: int) -> tuple[int, int, str]:
    if body.get("ExportTime") is not None:
        raise _validation("ExportTime cannot be used with ExportType INCREMENTAL_EXPORT")
    spec = body.get("IncrementalExportSpecification") or {}
    if spec.get("ExportFromTime") is None:
        raise _validation(
            "IncrementalExportSpecification.ExportFromTime is required when ExportType is "
            "INCREMENTAL_EXPORT"
        )
    from_micros = _to_micros(spec["ExportFromTime"], "ExportFromTime")
    to_raw = spec.get("ExportToTime")
    to_micros = now if to_raw is None else _to_micros(to_raw, "ExportToTime")
    view = spec.get("ExportViewType") or NEW_AND_OLD_IMAGES
    if view not in (NEW_IMAGE, NEW_AND_OLD_IMAGES):
        raise _validation(
            f"1 validation error detected: Value '{view}' at "
            "'incrementalExportSpecification.exportViewType' failed to satisfy constraint: "
            "Member must satisfy enum value set: [NEW_IMAGE, NEW_AND_OLD_IMAGES]"
        )
    if to_micros <= from_micros:
        raise _validation(
            f"ExportFromTime {_iso(from_micros)} must be before ExportToTime {_iso(to_micros)}"
        )
    length = to_micros - from_micros
    if length < INCREMENTAL_MIN_MICROS or length > INCREMENTAL_MAX_MICROS:
        raise _validation(
            "The incremental export period (ExportToTime - ExportFromTime) must be between "
            f"15 minutes and 24 hours, got {length / 60_000_000:.2f} minutes"
        )
    _check_in_window(from_micros, earliest, now, "ExportFromTime")
    _check_in_window(to_micros, earliest, now, "ExportToTime")
    return from_micros, to_micros, view


# --------------------------------------------------------------------------- the worker


class _NoSuchBucket(Exception):
    pass


class _S3Writer:
    """Puts objects into moto's S3 backend of this process (so ETags are moto's own)."""

    def __init__(self, record: ExportRecord) -> None:
        self._record = record

    def _backend(self) -> Any:
        from moto.s3.models import s3_backends

        owner = s3_backends.bucket_accounts.get(self._record.s3_bucket)
        if owner is None:
            raise _NoSuchBucket(self._record.s3_bucket)
        partition, account_id = owner
        backend = s3_backends[account_id][partition]
        if self._record.s3_bucket not in backend.buckets:
            raise _NoSuchBucket(self._record.s3_bucket)
        return backend

    def put(self, key: str, body: bytes, missing_ok: bool = False) -> str:
        """Write one object; return its ETag without quotes."""
        try:
            backend = self._backend()
        except _NoSuchBucket:
            if missing_ok:
                return ""
            raise
        record = self._record
        encryption = {"AES256": "AES256", "KMS": "aws:kms"}.get(record.s3_sse_algorithm or "")
        obj = backend.put_object(
            bucket_name=record.s3_bucket,
            key_name=key,
            value=body,
            encryption=encryption,
            kms_key_id=record.s3_sse_kms_key_id if encryption == "aws:kms" else None,
        )
        return obj.etag.strip('"')


def _run_export(record: ExportRecord, delay_seconds: float) -> None:
    time.sleep(delay_seconds)
    try:
        _complete_export(record)
    except _NoSuchBucket:
        _fail(record, "S3NoSuchBucket", "The specified bucket does not exist")
    except Exception as exc:  # an emulator bug must show as a failed export, not hang
        _log.exception("export %s failed", record.arn)
        _fail(record, "UNKNOWN", f"{type(exc).__name__}: {exc}")


def _fail(record: ExportRecord, code: str, message: str) -> None:
    with history.LOCK:
        record.failure_code = code
        record.failure_message = message
        record.end_micros = now_micros()
        record.status = "FAILED"


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _random_file_stem() -> str:
    """26 lower-case base32 characters, like AWS's data file names."""
    return base64.b32encode(secrets.token_bytes(16)).decode("ascii").rstrip("=").lower()


def _current_table(record: ExportRecord) -> Any:
    """The table object now in moto (a failed transaction swaps in a copy)."""
    table = record.backend.tables.get(record.table_name)
    if table is not None and table.table_arn == record.table_arn:
        return table
    return record.table  # deleted since: AWS still exports it from PITR data


@dataclass
class _Partitions:
    """Export lines grouped by simulated table partition (hash of the partition key)."""

    hash_key: str
    count: int
    lines: list[list[str]] = field(default_factory=list)
    item_count: int = 0
    billed_bytes: int = 0

    def __post_init__(self) -> None:
        self.lines = [[] for _ in range(self.count)]

    def add(self, keys_or_item: Image, line: dict[str, Any]) -> None:
        digest = hashlib.md5(_dumps(keys_or_item[self.hash_key]).encode("utf-8")).digest()
        self.lines[int.from_bytes(digest[:8], "big") % self.count].append(_dumps(line))
        self.item_count += 1


def _full_export_lines(record: ExportRecord, table: Any) -> _Partitions:
    """`{"Item": ...}` per item of the table as of the export time."""
    assert record.export_time_micros is not None
    items = history.image_at(table, record.export_time_micros)
    parts = _Partitions(table.hash_key_attr, partition_count(len(items)))
    for image in items:
        parts.add(image, {"Item": image})
        parts.billed_bytes += item_size(image)
    return parts


def _incremental_export_lines(record: ExportRecord, table: Any) -> _Partitions:
    """One line per item changed in the window, in the documented shape."""
    assert record.from_micros is not None and record.to_micros is not None
    changes = history.changes_between(table, record.from_micros, record.to_micros)
    parts = _Partitions(table.hash_key_attr, partition_count(len(table.all_items())))
    for change in changes:
        line: dict[str, Any] = {
            "Metadata": {"WriteTimestampMicros": {"N": str(change.timestamp_micros)}},
            "Keys": change.keys,
        }
        if change.new_image is not None:
            line["NewImage"] = change.new_image
            parts.billed_bytes += item_size(change.new_image)
        # NEW_IMAGE view: an update carries NewImage only, a delete its Keys only.
        if change.old_image is not None and record.view_type == NEW_AND_OLD_IMAGES:
            line["OldImage"] = change.old_image
            parts.billed_bytes += item_size(change.old_image)
        parts.add(change.keys, line)
    parts.billed_bytes = max(parts.billed_bytes, INCREMENTAL_MIN_BILLED_BYTES)
    return parts


def _write_data_files(writer: _S3Writer, data_prefix: str, parts: _Partitions) -> bytes:
    """One gzip file per partition (zero bytes when empty); return manifest-files.json."""
    manifest = []
    for lines in parts.lines:
        text = "".join(line + "\n" for line in lines)
        body = gzip.compress(text.encode("utf-8")) if lines else b""
        key = f"{data_prefix}/{_random_file_stem()}.json.gz"
        etag = writer.put(key, body)
        manifest.append(
            {
                "itemCount": len(lines),
                "md5Checksum": _b64_md5(body).decode("ascii"),
                "etag": etag,
                "dataFileS3Key": key,
            }
        )
    return "".join(json.dumps(entry) + "\n" for entry in manifest).encode("utf-8")


def _manifest_summary(
    record: ExportRecord, end_micros: int, files_key: str, parts: _Partitions
) -> dict[str, Any]:
    """manifest-summary.json, fields in the order of AWS's examples."""
    full = record.export_type == FULL_EXPORT
    summary: dict[str, Any] = {
        "version": "2020-06-30" if full else "2023-08-01",
        "exportArn": record.arn,
        "startTime": _iso(record.start_micros),
        "endTime": _iso(end_micros),
        "tableArn": record.table_arn,
        "tableId": record.table_id,
    }
    if full:
        summary["exportTime"] = _iso(record.export_time_micros)
    else:
        summary["exportFromTime"] = _iso(record.from_micros)
        summary["exportToTime"] = _iso(record.to_micros)
    summary.update(
        {
            "s3Bucket": record.s3_bucket,
            "s3Prefix": record.s3_prefix,
            "s3SseAlgorithm": record.s3_sse_algorithm,
            "s3SseKmsKeyId": record.s3_sse_kms_key_id,
            "manifestFilesS3Key": files_key,
            "billedSizeBytes": parts.billed_bytes,
            "itemCount": parts.item_count,
            "outputFormat": record.export_format,
        }
    )
    if not full:
        summary["outputView"] = record.view_type
        summary["exportType"] = INCREMENTAL_EXPORT
    return summary


def _complete_export(record: ExportRecord) -> None:
    """Compute the export's lines and write data files, then the manifests."""
    table = _current_table(record)
    if record.export_type == FULL_EXPORT:
        parts = _full_export_lines(record, table)
        data_prefix = f"{record.export_root}/{record.export_id}/data"
    else:
        parts = _incremental_export_lines(record, table)
        data_prefix = f"{record.export_root}/data"  # shared by all incremental exports

    writer = _S3Writer(record)
    export_dir = f"{record.export_root}/{record.export_id}"
    files_key = f"{export_dir}/manifest-files.json"
    files_body = _write_data_files(writer, data_prefix, parts)
    writer.put(files_key, files_body)
    writer.put(f"{export_dir}/manifest-files.md5", _b64_md5(files_body))

    end = now_micros()
    summary_key = f"{export_dir}/manifest-summary.json"
    summary_body = json.dumps(_manifest_summary(record, end, files_key, parts), indent=2)
    writer.put(summary_key, summary_body.encode("utf-8"))
    writer.put(f"{export_dir}/manifest-summary.md5", _b64_md5(summary_body.encode("utf-8")))

    with history.LOCK:
        record.item_count = parts.item_count
        record.billed_size_bytes = parts.billed_bytes
        record.manifest_key = summary_key
        record.end_micros = end
        record.status = "COMPLETED"


def _b64_md5(body: bytes) -> bytes:
    return base64.b64encode(hashlib.md5(body).digest())


def item_size(image: Image) -> int:
    """DynamoDB's item size: attribute names plus values (as its docs count them)."""
    return sum(len(name.encode("utf-8")) + _value_size(value) for name, value in image.items())


def _value_size(value: dict[str, Any]) -> int:
    ((kind, raw),) = value.items()
    if kind == "S":
        return len(raw.encode("utf-8"))
    if kind == "N":
        return _number_size(raw)
    if kind == "B":
        return len(base64.b64decode(raw))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(v.encode("utf-8")) for v in raw)
    if kind == "NS":
        return sum(_number_size(v) for v in raw)
    if kind == "BS":
        return sum(len(base64.b64decode(v)) for v in raw)
    if kind == "M":
        return 3 + sum(len(k.encode("utf-8")) + 1 + _value_size(v) for k, v in raw.items())
    if kind == "L":
        return 3 + sum(1 + _value_size(v) for v in raw)
    return len(_dumps(raw))


def _number_size(text: str) -> int:
    digits = sum(ch.isdigit() for ch in text.split("e")[0].split("E")[0])
    return 1 + math.ceil(digits / 2)


# --------------------------------------------------------------------------- describe / list


def find_export(backend: Any, export_arn: str) -> ExportRecord:
    """DescribeExport's lookup: the export, or AWS's ExportNotFoundException."""
    record = _exports_of(backend).exports.get(export_arn)
    if record is None:
        raise _error("ExportNotFoundException", f"Export not found: {export_arn}")
    return record


def list_exports(backend: Any, body: dict[str, Any]) -> dict[str, Any]:
    max_results = body.get("MaxResults")
    if max_results is None:
        max_results = LIST_EXPORTS_MAX_RESULTS
    if not isinstance(max_results, int) or not 1 <= max_results <= LIST_EXPORTS_MAX_RESULTS:
        raise _validation(
            f"1 validation error detected: Value '{max_results}' at 'maxResults' failed to "
            "satisfy constraint: Member must have value between 1 and 25"
        )
    table_arn = body.get("TableArn")
    with history.LOCK:
        every = list(_exports_of(backend).exports.values())
    records = [r for r in every if not table_arn or r.table_arn == table_arn]
    # "in reverse alphanumeric order of ExportArn" (ListExports API reference).
    records.sort(key=lambda r: r.arn, reverse=True)
    start = 0
    token = body.get("NextToken")
    if token:
        try:
            after = base64.urlsafe_b64decode(token.encode("ascii")).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise _validation(f"Invalid NextToken: {token!r}") from None
        start = next((i for i, r in enumerate(records) if r.arn < after), len(records))
    page = records[start : start + max_results]
    out: dict[str, Any] = {"ExportSummaries": [r.summary() for r in page]}
    if start + max_results < len(records):
        out["NextToken"] = base64.urlsafe_b64encode(page[-1].arn.encode("utf-8")).decode("ascii")
    return out


# --------------------------------------------------------------------------- control routes


def _backend_for(request: dict[str, Any]) -> Any:
    from moto.dynamodb.models import dynamodb_backends

    from export_pipeline.local_cloud.settings import LOCAL_ACCOUNT_ID

    region = request.get("Region")
    if not region:
        raise ValueError("Region is required")
    return dynamodb_backends[request.get("AccountId") or LOCAL_ACCOUNT_ID][region]


def _table_for(request: dict[str, Any]) -> Any:
    name = request.get("TableName")
    if not name:
        raise ValueError("TableName is required")
    backend = _backend_for(request)
    table = backend.tables.get(name)
    if table is None:
        raise LookupError(f"table {name!r} not found in region {request.get('Region')!r}")
    return table


def _shift_history_route(request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    seconds = request.get("Seconds")
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        raise ValueError(f"Seconds must be a number, got {seconds!r}")
    return 200, history.shift_history(_table_for(request), float(seconds))


def _change_log_route(request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    table = _table_for(request)
    return 200, {"TableName": table.name, "Entries": history.change_log_json(table)}


def control_routes() -> dict[str, Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]]:
    """Local-cloud-only HTTP routes (path -> handler of the JSON request).

    `install()` already serves them from moto's WSGI app; they are exposed so
    that a server assembled differently can mount them itself. Clients: tests
    and demo code only (`dynamodb_time_control`), never the pipeline.
    """
    return {SHIFT_HISTORY_PATH: _shift_history_route, CHANGE_LOG_PATH: _change_log_route}


def _serve_control(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    path = environ.get("PATH_INFO", "")
    route = control_routes().get(path)
    status, payload = 404, {"error": f"no local-cloud route {path}"}
    if route is not None:
        try:
            request: dict[str, Any] = {
                k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()
            }
            length = int(environ.get("CONTENT_LENGTH") or 0)
            if length:
                body = json.loads(environ["wsgi.input"].read(length) or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("expected a JSON object")
                request.update(body)
            status, payload = route(request)
        except LookupError as exc:
            status, payload = 404, {"error": str(exc)}
        except (ValueError, TypeError) as exc:
            status, payload = 400, {"error": str(exc)}
    data = json.dumps(payload, default=str).encode("utf-8")
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "Error")
    start_response(
        f"{status} {reason}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
    )
    return [data]


# --------------------------------------------------------------------------- install


def _install_handlers() -> None:
    from moto.core.responses import ActionResult
    from moto.dynamodb.responses import DynamoHandler

    def export_table_to_point_in_time(self: Any) -> Any:
        record = start_export(self.dynamodb_backend, self.current_account, self.region, self.body)
        return ActionResult({"ExportDescription": record.description()})

    def describe_export(self: Any) -> Any:
        record = find_export(self.dynamodb_backend, self.body.get("ExportArn"))
        return ActionResult({"ExportDescription": record.description()})

    def list_exports_handler(self: Any) -> Any:
        return ActionResult(list_exports(self.dynamodb_backend, self.body))

    DynamoHandler.export_table_to_point_in_time = export_table_to_point_in_time  # type: ignore[method-assign]
    DynamoHandler.describe_export = describe_export  # type: ignore[method-assign]
    DynamoHandler.list_exports = list_exports_handler  # type: ignore[method-assign]


def _install_control_routes() -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    original = DomainDispatcherApplication.__call__
    if getattr(original, "_local_cloud_dynamodb", False):
        return

    def __call__(self: Any, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO", "").startswith(CONTROL_PREFIX):
            return _serve_control(environ, start_response)
        return original(self, environ, start_response)

    __call__._local_cloud_dynamodb = True  # type: ignore[attr-defined]
    DomainDispatcherApplication.__call__ = __call__  # type: ignore[method-assign]


_installed = False


def install(state_dir: Path) -> None:
    """Patch moto (in this process) so its DynamoDB exports behave like AWS's.

    Idempotent. `state_dir` is accepted for the hook interface; the change log
    and exports live in this process's memory, like moto's own state.
    """
    global _installed
    with history.LOCK:
        if _installed:
            return
        history.install_recorders()
        _install_handlers()
        _install_control_routes()
        _installed = True
    _log.info("DynamoDB export emulation installed (state dir %s unused)", state_dir)
