"""Starting DynamoDB point-in-time exports and waiting for them.

`ExportTableToPointInTime` is idempotent for 8 hours per `ClientToken` (the
same token with other parameters is an error). The token is derived from the
Dagster root run id and the export's parameters, so a retried step or a
re-executed run asks for the same export and AWS returns the one already
started instead of paying for a second.

There is no SDK waiter for exports: `wait_for_export` polls DescribeExport
with exponential backoff (capped), stops at once on FAILED and gives up after
an overall timeout.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from export_pipeline.dynamodb.manifest import FULL_EXPORT, INCREMENTAL_EXPORT

FIRST_POLL_SECONDS = 1.0
BACKOFF_FACTOR = 2.0


class ExportFailedError(RuntimeError):
    """DynamoDB reported the export FAILED; carries the table, code and message."""

    def __init__(self, table: str, export_arn: str, code: str, message: str) -> None:
        self.table = table
        self.export_arn = export_arn
        self.failure_code = code
        self.failure_message = message
        super().__init__(
            f"DynamoDB export of table {table!r} failed: {code}: {message} ({export_arn})"
        )


class ExportTimeoutError(TimeoutError):
    """The export did not finish within the configured time."""


@dataclass(frozen=True)
class ExportRequest:
    """The parameters of one ExportTableToPointInTime call (what the token covers)."""

    table_arn: str
    bucket: str
    prefix: str
    export_type: str = FULL_EXPORT
    export_from_time: datetime | None = None
    export_to_time: datetime | None = None

    def parameters(self) -> dict[str, Any]:
        """The request as boto3 keyword arguments (without the ClientToken)."""
        params: dict[str, Any] = {
            "TableArn": self.table_arn,
            "S3Bucket": self.bucket,
            "S3Prefix": self.prefix,
            "ExportFormat": "DYNAMODB_JSON",
            "ExportType": self.export_type,
        }
        if self.export_type == INCREMENTAL_EXPORT:
            if self.export_from_time is None or self.export_to_time is None:
                raise ValueError("an incremental export needs a from and a to time")
            params["IncrementalExportSpecification"] = {
                "ExportFromTime": self.export_from_time,
                "ExportToTime": self.export_to_time,
                "ExportViewType": "NEW_IMAGE",
            }
        return params

    def client_token(self, root_run_id: str) -> str:
        """A token unique to (root run, parameters): same run + same request -> same export."""
        canonical = json.dumps(self.parameters(), sort_keys=True, default=_iso)
        digest = hashlib.sha256(f"{root_run_id}\n{canonical}".encode()).hexdigest()
        return digest[:64]


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"unexpected {type(value).__name__} in export parameters")


def start_export(dynamodb: Any, request: ExportRequest, root_run_id: str) -> dict[str, Any]:
    """Start (or, for a known token, find again) the export; returns its ExportDescription."""
    response = dynamodb.export_table_to_point_in_time(
        **request.parameters(), ClientToken=request.client_token(root_run_id)
    )
    return response["ExportDescription"]


def table_name_from_arn(arn: str) -> str:
    """`Orders` from `arn:aws:dynamodb:…:table/Orders[/export/…]`."""
    return arn.split(":table/", 1)[-1].split("/", 1)[0]


def wait_for_export(
    dynamodb: Any,
    export_arn: str,
    *,
    timeout_seconds: float,
    max_interval_seconds: float,
    log: Callable[[str], None] = lambda _message: None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Poll DescribeExport until COMPLETED; returns the final ExportDescription.

    Backoff doubles from 1 s up to `max_interval_seconds`; the last wait is
    shortened so the timeout is honoured. Raises `ExportFailedError` on FAILED
    (immediately) and `ExportTimeoutError` when time runs out.
    """
    started = clock()
    interval = min(FIRST_POLL_SECONDS, max_interval_seconds)
    polls = 0
    while True:
        description = dynamodb.describe_export(ExportArn=export_arn)["ExportDescription"]
        polls += 1
        status = description.get("ExportStatus")
        elapsed = clock() - started
        if status == "COMPLETED":
            log(f"export {export_arn} COMPLETED after {elapsed:.1f}s ({polls} polls)")
            return description
        if status == "FAILED":
            raise ExportFailedError(
                table_name_from_arn(description.get("TableArn") or export_arn),
                export_arn,
                description.get("FailureCode") or "UNKNOWN",
                description.get("FailureMessage") or "(no message)",
            )
        remaining = timeout_seconds - elapsed
        if remaining <= 0:
            raise ExportTimeoutError(
                f"export {export_arn} still {status} after {elapsed:.0f}s "
                f"(dynamodb.export_timeout_minutes = {timeout_seconds / 60:g})"
            )
        log(f"export {export_arn} is {status}; next check in {min(interval, remaining):.0f}s")
        sleep(min(interval, remaining))
        interval = min(interval * BACKOFF_FACTOR, max_interval_seconds)
