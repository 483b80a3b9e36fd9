"""Copying S3 objects into Cloud Storage with Google's Storage Transfer Service.

Production code against the Storage Transfer API v1 as Google documents it
(`google-cloud-storage-transfer`, REST transport; the local cloud serves the
same API, `local_cloud/storage_transfer_server.py`). One transfer job per
thing to copy, named by the caller deterministically: `ensure_transfer` is
safe to call again after a crash or from several steps at once, and never
starts a second copy while one runs or after one succeeded.

A job is created without a schedule (Google runs such a job only when asked:
`transferJobs.run`), so each run is one `TransferOperation` whose status
(IN_PROGRESS, then SUCCESS or FAILED) and counters `wait_for_transfer` polls
with the same bounded backoff as the export waits.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions as google_exceptions

from export_pipeline.errors import PermanentError

_FIRST_POLL_SECONDS = 1.0
# Google's rule for a user-chosen job name (transfers not involving POSIX file systems).
_JOB_NAME = re.compile(r"^transferJobs/(?!OPI)[A-Za-z0-9\-._~]*[A-Za-z0-9]$")
_JOB_NAME_MAX = 128
FAILED_STATUSES = frozenset({"FAILED", "ABORTED"})
SUCCESS = "SUCCESS"


class StorageTransferError(PermanentError):
    """A transfer could not be started or did not succeed; the message names it and why."""


@dataclass(frozen=True)
class S3ToGcsTransfer:
    """What one transfer job copies: an S3 prefix into a Cloud Storage prefix.

    `role_arn`: the AWS role Google's service agent assumes (web identity
    federation; no AWS key is stored in Google). `include_prefixes` /
    `exclude_prefixes` are relative to `source_path` (Google's
    `objectConditions`). Paths end with '/' (or are empty), as Google requires.
    """

    job_name: str
    project_id: str
    source_bucket: str
    source_path: str
    role_arn: str
    sink_bucket: str
    sink_path: str
    description: str
    include_prefixes: tuple[str, ...] = ()
    exclude_prefixes: tuple[str, ...] = ()

    def job(self) -> dict[str, Any]:
        """The TransferJob resource to create (no schedule: it runs when asked)."""
        conditions: dict[str, Any] = {}
        if self.include_prefixes:
            conditions["include_prefixes"] = list(self.include_prefixes)
        if self.exclude_prefixes:
            conditions["exclude_prefixes"] = list(self.exclude_prefixes)
        spec: dict[str, Any] = {
            "aws_s3_data_source": {
                "bucket_name": self.source_bucket,
                "path": self.source_path,
                "role_arn": self.role_arn,
            },
            "gcs_data_sink": {"bucket_name": self.sink_bucket, "path": self.sink_path},
        }
        if conditions:
            spec["object_conditions"] = conditions
        return {
            "name": self.job_name,
            "project_id": self.project_id,
            "description": self.description[:1024],
            "status": "ENABLED",
            "transfer_spec": spec,
        }

    @property
    def source_uri(self) -> str:
        return f"s3://{self.source_bucket}/{self.source_path}"

    @property
    def sink_uri(self) -> str:
        return f"gs://{self.sink_bucket}/{self.sink_path}"


def job_name(*parts: str) -> str:
    """`transferJobs/<parts joined by '-'>`, in Google's alphabet, at most 128 characters.

    Deterministic: the same parts always name the same job, which is what
    makes `ensure_transfer` idempotent.
    """
    body = re.sub(r"[^A-Za-z0-9\-._~]", "-", "-".join(parts)).strip("-._~")
    name = f"transferJobs/{body}"[:_JOB_NAME_MAX].rstrip("-._~")
    if not _JOB_NAME.fullmatch(name):
        raise ValueError(f"cannot make a transfer job name of {parts!r}")
    return name


@dataclass(frozen=True)
class EnsuredTransfer:
    """The operation a caller waits for, and whether this call started it."""

    job_name: str
    operation_name: str
    started: bool


def _get_job(client: Any, name: str, project_id: str) -> Any | None:
    try:
        return client.get_transfer_job(request={"job_name": name, "project_id": project_id})
    except google_exceptions.NotFound:
        return None


def _operation_status(client: Any, operation_name: str) -> Any:
    """The TransferOperation (metadata) of `operation_name`."""
    from google.cloud import storage_transfer

    operation = client.get_operation(request={"name": operation_name})
    return storage_transfer.TransferOperation.deserialize(operation.metadata.value)


def ensure_transfer(
    client: Any, transfer: S3ToGcsTransfer, *, run_again: bool = False
) -> EnsuredTransfer:
    """The job's running or succeeded operation, else a new run of it (the job made if absent).

    A job whose latest operation failed is run again, and with `run_again`
    one whose latest operation succeeded (the sink lost objects since): Google
    copies only what the sink lacks, so a second run does not copy twice.
    """
    job = _get_job(client, transfer.job_name, transfer.project_id)
    if job is None:
        try:
            job = client.create_transfer_job(request={"transfer_job": transfer.job()})
        except google_exceptions.Conflict:
            # ALREADY_EXISTS (HTTP 409): another step made it between our get and create.
            job = _get_job(client, transfer.job_name, transfer.project_id)
        except google_exceptions.GoogleAPICallError as error:
            raise StorageTransferError(
                f"creating transfer job {transfer.job_name} ({transfer.source_uri} -> "
                f"{transfer.sink_uri}) failed: {error.message}"
            ) from None
        if job is None:
            raise StorageTransferError(f"transfer job {transfer.job_name} vanished after creation")
    latest = job.latest_operation_name
    if latest:
        status = _operation_status(client, latest).status.name
        finished = status in FAILED_STATUSES or (run_again and status == SUCCESS)
        if not finished:
            return EnsuredTransfer(job.name, latest, False)
    try:
        started = client.run_transfer_job(
            request={"job_name": job.name, "project_id": transfer.project_id}
        )
        return EnsuredTransfer(job.name, started.operation.name, True)
    except (google_exceptions.FailedPrecondition, google_exceptions.BadRequest) as error:
        # One active operation per job (FAILED_PRECONDITION, HTTP 400): another step ran
        # it meanwhile; wait for that one.
        job = _get_job(client, transfer.job_name, transfer.project_id)
        latest = job.latest_operation_name if job is not None else ""
        if not latest or _operation_status(client, latest).status.name in FAILED_STATUSES:
            raise StorageTransferError(
                f"running transfer job {transfer.job_name} failed: {error.message}"
            ) from None
        return EnsuredTransfer(job.name, latest, False)


def failure_line(operation_name: str, what: str, metadata: Any) -> str:
    """One line: the operation, its status and Google's first error of each kind."""
    from google.rpc import code_pb2

    errors = []
    for breakdown in metadata.error_breakdowns:
        entries = breakdown.error_log_entries
        detail = " ".join("; ".join(entries[0].error_details).split()) if entries else ""
        url = entries[0].url if entries else ""
        errors.append(
            f"{code_pb2.Code.Name(breakdown.error_code)} x{breakdown.error_count}"
            + (f" at {url}" if url else "")
            + (f": {detail}" if detail else "")
        )
    return (
        f"{what}: transfer operation {operation_name} is {metadata.status.name}: "
        + ("; ".join(errors) or "no error breakdown given")
        + " (check the AWS role's trust policy and S3 permissions, deploy/storage-transfer.md)"
    )


def wait_for_transfer(
    client: Any,
    operation_name: str,
    *,
    what: str,
    max_interval_seconds: float,
    timeout_seconds: float,
    log: Callable[[str], None] = lambda _m: None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Any:
    """Poll until SUCCESS (the TransferOperation); one-line error on FAILED/ABORTED or timeout."""
    deadline = clock() + timeout_seconds
    interval = min(_FIRST_POLL_SECONDS, max_interval_seconds)
    last: object = None
    while True:
        metadata = _operation_status(client, operation_name)
        status = metadata.status.name
        copied = metadata.counters.bytes_copied_to_sink
        if (status, copied) != last:
            log(f"{what}: transfer {operation_name}: {status}, {copied} bytes copied")
            last = (status, copied)
        if status == SUCCESS:
            return metadata
        if status in FAILED_STATUSES:
            raise StorageTransferError(failure_line(operation_name, what, metadata))
        remaining = deadline - clock()
        if remaining <= 0:
            raise StorageTransferError(
                f"{what}: transfer operation {operation_name} still {status} after "
                f"{timeout_seconds:.0f} s; it keeps running in Google Cloud: re-run later to "
                "pick it up, or raise the timeout"
            )
        sleep(min(interval, remaining))
        interval = min(interval * 2, max_interval_seconds)


def list_operations(client: Any, project_id: str, job_names: Sequence[str]) -> list[Any]:
    """The operations of `job_names` (transferOperations.list with Google's JSON filter)."""
    response = client.list_operations(
        request={
            "name": "transferOperations",
            "filter": json.dumps({"projectId": project_id, "jobNames": list(job_names)}),
        }
    )
    return list(response.operations)
