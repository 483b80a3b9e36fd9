"""Starting DynamoDB point-in-time exports and waiting for them.

`ExportTableToPointInTime` is idempotent for 8 hours per `ClientToken` (the
same token with other parameters is an error). The token is derived from the
Dagster root run id and the export's parameters, so a retried step or a
re-executed run asks for the same export and AWS returns the one already
started instead of paying for a second.

A brand-new run (another root run: the schedule fires, an operator clicks
Materialize) has another token, so before starting, `RunningExports` lists
the table's exports (ListExports with TableArn, every page) and DescribeExport
each IN_PROGRESS one of the same type: one that gives what this pipeline would
have asked for (`ExportRequest.misfit` is None) is waited for instead of
starting a second one — whoever started it, a scheduled Lambda or the console
included, as long as it lies where the pipeline may read
(`aws.readable_s3_locations`). One that does not fit is named, with why.
Completed exports are never adopted (a new run wants a new point in time;
`export_arn: latest` loads the newest on request), except by a re-execution
of the run that adopted them (`remembered`).
(ListExports' one-line summary says "completed exports", but its
summaries carry `ExportStatus` IN_PROGRESS|COMPLETED|FAILED and running
exports are listed; the local cloud lists them too.)

There is no SDK waiter for exports: `wait_for_export` polls DescribeExport
with exponential backoff (capped), stops at once on FAILED and gives up after
an overall timeout.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from export_pipeline.dynamodb.export_files import FULL_EXPORT, INCREMENTAL_EXPORT
from export_pipeline.errors import PermanentError
from export_pipeline.s3_locations import SETTING, S3Location

FIRST_POLL_SECONDS = 1.0
BACKOFF_FACTOR = 2.0
EXPORT_FORMAT = "DYNAMODB_JSON"
VIEW_TYPE = "NEW_IMAGE"
LIST_PAGE_SIZE = 25  # ListExports' maximum
# A full export this pipeline starts is of "now": its ExportTime is its start time.
# One whose ExportTime lies further before its StartTime asked for an older point.
FULL_EXPORT_TIME_SLACK = timedelta(minutes=1)


class ExportFailedError(PermanentError):
    """DynamoDB reported the export FAILED; carries the table, code and message."""

    def __init__(self, table: str, export_arn: str, code: str, message: str) -> None:
        self.table = table
        self.export_arn = export_arn
        self.failure_code = code
        self.failure_message = message
        super().__init__(
            f"DynamoDB export of table {table!r} failed: {code}: {message} ({export_arn})"
        )

    @property
    def hint(self) -> str:  # type: ignore[override]
        if self.failure_code.startswith("S3") or "AccessDenied" in self.failure_code:
            return (
                "DynamoDB could not write to the export bucket: check aws.export_bucket exists "
                "and its policy lets DynamoDB write (deploy/iam/), then materialize the export "
                "again"
            )
        return "see the failure message, fix its cause, then materialize the export asset again"


class ExportTimeoutError(PermanentError, TimeoutError):
    """The export did not finish within the configured time (it keeps running in AWS)."""

    hint = (
        "the export keeps running in AWS: raise dynamodb.export_timeout_minutes, or run the "
        "export asset with wait_for_completion: false (sensor mode)"
    )


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
            "ExportFormat": EXPORT_FORMAT,
            "ExportType": self.export_type,
        }
        if self.export_type == INCREMENTAL_EXPORT:
            if self.export_from_time is None or self.export_to_time is None:
                raise ValueError("an incremental export needs a from and a to time")
            params["IncrementalExportSpecification"] = {
                "ExportFromTime": self.export_from_time,
                "ExportToTime": self.export_to_time,
                "ExportViewType": VIEW_TYPE,
            }
        return params

    def would_ask_for(
        self, description: dict[str, Any], readable: Sequence[S3Location] = ()
    ) -> bool:
        """Whether the export `description` gives what this request would start."""
        return self.misfit(description, readable) is None

    def misfit(
        self, description: dict[str, Any], readable: Sequence[S3Location] = ()
    ) -> str | None:
        """Why the export `description` cannot stand in for this request; None if it can.

        It can when it is of the same table, in DYNAMODB_JSON, of the same
        export type, without a KMS key of someone else's, and written either
        where this request writes or inside a `readable` location (an export
        started by other tooling, which lands elsewhere). Full: an export of
        "now" (ExportTime at its start); incremental: the same ExportFromTime
        (milliseconds, as AWS keeps it) and NEW_IMAGE. The window end may
        differ: the caller adopts it.
        """
        if description.get("TableArn") != self.table_arn:
            return "another table"
        if description.get("ExportType", FULL_EXPORT) != self.export_type:
            return f"a {description.get('ExportType', FULL_EXPORT)} export"
        if description.get("ExportFormat", EXPORT_FORMAT) != EXPORT_FORMAT:
            return f"format {description.get('ExportFormat')}, not {EXPORT_FORMAT}"
        if description.get("S3SseAlgorithm") == "KMS":
            return "encrypted with a KMS key the pipeline is not granted"
        bucket, prefix = description.get("S3Bucket"), (description.get("S3Prefix") or "")
        here = bucket == self.bucket and prefix == self.prefix
        if not here and not any(loc.holds(str(bucket), prefix) for loc in readable):
            where = S3Location(str(bucket), prefix.strip("/")).uri
            return f"written to {where}, outside the locations the pipeline may read ({SETTING})"
        if self.export_type == FULL_EXPORT:
            export_time, started = description.get("ExportTime"), description.get("StartTime")
            of_now = (
                isinstance(export_time, datetime)
                and isinstance(started, datetime)
                and export_time >= started - FULL_EXPORT_TIME_SLACK
            )
            return None if of_now else "an export of an earlier point in time"
        spec = description.get("IncrementalExportSpecification") or {}
        start = spec.get("ExportFromTime")
        if not (
            isinstance(start, datetime)
            and self.export_from_time is not None
            and _millis(start) == _millis(self.export_from_time)
        ):
            return "another window start"
        if spec.get("ExportViewType", VIEW_TYPE) != VIEW_TYPE:
            return f"view type {spec.get('ExportViewType')}, not {VIEW_TYPE}"
        return None

    def client_token(self, root_run_id: str) -> str:
        """A token unique to (root run, parameters): same run + same request -> same export."""
        canonical = json.dumps(self.parameters(), sort_keys=True, default=_iso)
        digest = hashlib.sha256(f"{root_run_id}\n{canonical}".encode()).hexdigest()
        return digest[:64]


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"unexpected {type(value).__name__} in export parameters")


def _millis(value: datetime) -> int:
    """Epoch milliseconds of an aware datetime (AWS keeps export times to the millisecond)."""
    return calendar.timegm(value.utctimetuple()) * 1000 + value.microsecond // 1000


def table_export_folder(table: str) -> str:
    """The folder of a table's exports under `aws.export_prefix`: `dynamodb/<table>`."""
    return f"dynamodb/{table}"


def list_export_summaries(ddb: Any, table_arn: str) -> list[dict[str, Any]]:
    """Every ExportSummary of the table (ListExports with TableArn, all pages)."""
    summaries: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableArn": table_arn, "MaxResults": LIST_PAGE_SIZE}
    while True:
        page = ddb.list_exports(**kwargs)
        summaries.extend(page.get("ExportSummaries", []))
        token = page.get("NextToken")
        if not token:
            return summaries
        kwargs["NextToken"] = token


class RunningExports:
    """The table's IN_PROGRESS exports, listed once per run, described when a request asks.

    `remembered`: exports an earlier attempt of this run (same root run)
    adopted. They are taken again even when COMPLETED meanwhile — the run
    was waiting for them when its worker died — so a re-execution never
    starts a second export either.

    `None` from `matching` means "start one": nothing running matches, or
    ListExports is not allowed (`cannot_list` then says so, for a warning —
    the export itself still works, only a duplicate is not avoided).
    """

    def __init__(
        self,
        ddb: Any,
        table_arn: str,
        remembered: list[str] | None = None,
        readable: Sequence[S3Location] = (),
    ) -> None:
        self._ddb = ddb
        self._readable = list(readable)
        self.cannot_list: str | None = None
        # One line per running export of another run or tool that was not taken, and why.
        self.passed_over: dict[str, str] = {}
        self._remembered = [{"ExportArn": arn} for arn in remembered or []]
        self._running: list[dict[str, Any]] = []
        self._described: dict[str, dict[str, Any]] = {}
        try:
            summaries = list_export_summaries(ddb, table_arn)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") not in (
                "AccessDeniedException",
                "AccessDenied",
            ):
                raise
            self.cannot_list = str(error)
            return
        self._running = [s for s in summaries if s.get("ExportStatus") == "IN_PROGRESS"]

    def is_remembered(self, export_arn: str) -> bool:
        return any(r["ExportArn"] == export_arn for r in self._remembered)

    def matching(self, request: ExportRequest, root_run_id: str) -> dict[str, Any] | None:
        """Another run's export that `request` would duplicate, or None.

        This run's own export (same ClientToken) is left to `start_export`,
        which finds it by its token as before.
        """
        token = request.client_token(root_run_id)
        ddb = self._ddb
        for summary, statuses in [(r, ("IN_PROGRESS", "COMPLETED")) for r in self._remembered] + [
            (s, ("IN_PROGRESS",)) for s in self._running
        ]:
            if summary.get("ExportType", request.export_type) != request.export_type:
                continue
            arn = summary["ExportArn"]
            if arn not in self._described:
                self._described[arn] = ddb.describe_export(ExportArn=arn)["ExportDescription"]
            description = self._described[arn]
            if (
                description.get("ExportStatus") not in statuses
                or description.get("ClientToken") == token
            ):
                continue
            reason = request.misfit(description, self._readable)
            if reason is None:
                return description
            self.passed_over[arn] = reason
        return None


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
