"""Which failures are worth retrying, and what to tell the operator about the others.

Every export and load asset runs its body inside `retry_only_transient(...)`
and carries `TRANSIENT_RETRY_POLICY`. Dagster's `RetryPolicy` cannot filter
by exception type, so the filter is here:

- transient errors (throttling, 5xx, 429, dropped connections, read
  timeouts, BigQuery `rateLimitExceeded`) are re-raised unchanged: the
  policy retries the step with exponential backoff. This is the second
  layer: botocore (`max_attempts`, standard/adaptive mode) and
  google-cloud-bigquery (default `Retry`) already retry single calls; the
  step retry covers what outlives them (a long throttling spell, a body
  that broke half-way through a download);
- running out of memory is permanent too (`MemoryError`, and the
  converters' `OutOfMemoryError` naming the file and the limit): the
  same file needs the same memory on the next attempt;
- everything else (access denied, a missing table or bucket, a FAILED
  export, a timeout, a bug) becomes `Failure(allow_retries=False)`: the
  step fails at once, with the original message plus what to fix, since
  running it again would fail the same way (and could pay for a second
  export).

The pipeline's own errors say which they are where they are raised: they
derive from `PermanentError` or `TransientError` (both `PipelineError`s),
and a permanent one carries its `hint`. So this module knows no source:
`classify` reads the class of a pipeline error, and only the clients'
errors (botocore, google-api-core) are judged here by their codes.

`classify` is pure (no I/O) so it is tested with real exception objects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

from dagster import Backoff, Failure, Jitter, RetryPolicy

from export_pipeline.memory import memory_limit

# Step retries on top of the clients' own: ~20 s, 40 s, 80 s (±jitter).
TRANSIENT_RETRY_POLICY = RetryPolicy(
    max_retries=3, delay=20, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
)

# AWS error codes that mean "not now", across S3, DynamoDB, RDS, STS, KMS.
TRANSIENT_AWS_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "LimitExceededException",  # DynamoDB: too many exports in progress at once
        "SlowDown",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "TransactionInProgressException",
        "IDPCommunicationError",
    }
)

# Permanent AWS error codes and what the operator should do about them.
AWS_HINTS: dict[str, str] = {
    "AccessDenied": "grant the pipeline's AWS role the permission named in the message "
    "(deploy/iam/ has the least-privilege policies)",
    "AccessDeniedException": "grant the pipeline's AWS role the permission named in the "
    "message (deploy/iam/ has the least-privilege policies)",
    "UnauthorizedOperation": "grant the pipeline's AWS role the permission named in the message",
    "InvalidClientTokenId": "the AWS credentials are not valid: fix the role/profile/keys",
    "UnrecognizedClientException": "the AWS credentials are not valid: fix the role/profile/keys",
    "ExpiredToken": "the AWS session token has expired: renew the credentials",
    "ExpiredTokenException": "the AWS session token has expired: renew the credentials",
    "ResourceNotFoundException": "check the table name in pipeline.yaml and the AWS region",
    "TableNotFoundException": "check the table name in pipeline.yaml and the AWS region",
    "ExportNotFoundException": "the export ARN is wrong or the export has expired: "
    "materialize the export asset again",
    "PointInTimeRecoveryUnavailableException": "enable point-in-time recovery on the table "
    "(UpdateContinuousBackups)",
    "InvalidExportTimeException": "the export time is outside the table's PITR window: "
    "run a full export",
    "NoSuchBucket": "create the export bucket or fix aws.export_bucket in pipeline.yaml",
    "NoSuchKey": "the export files are gone (lifecycle rule?): export again",
    "DBSnapshotNotFound": "name an existing snapshot, or take one",
    "DBSnapshotNotFoundFault": "name an existing snapshot, or take one",
    "DBClusterSnapshotNotFoundFault": "name an existing snapshot, or take one",
    "IamRoleNotFound": "fix rds.instances[].iam_role_arn in pipeline.yaml",
    "IamRoleNotFoundFault": "fix rds.instances[].iam_role_arn in pipeline.yaml",
    "KMSKeyNotAccessibleFault": "let the export role use rds.instances[].kms_key_id "
    "(deploy/kms-key-policy-snippet.json)",
    "InvalidS3BucketFault": "check aws.export_bucket and the export role's S3 permissions",
    "ValidationException": "a request parameter is invalid (see the message): fix pipeline.yaml",
    "InvalidParameterValue": "a request parameter is invalid (see the message): fix pipeline.yaml",
    "InvalidParameterCombination": "a request parameter is invalid (see the message)",
}

# BigQuery error reasons (error["reason"]) that are transient even on 403/400.
TRANSIENT_BIGQUERY_REASONS = frozenset(
    {"rateLimitExceeded", "backendError", "internalError", "jobBackendError", "jobRateExceeded"}
)
BIGQUERY_HINTS: dict[str, str] = {
    "accessDenied": "grant the pipeline's Google service account BigQuery Data Editor and "
    "Job User on the dataset/project (deploy/bigquery-roles.md)",
    "notFound": "create the dataset named in bigquery.dataset (or fix pipeline.yaml)",
    "quotaExceeded": "a BigQuery quota is exhausted (see the message): raise it or wait for "
    "its reset, then re-run",
    "invalid": "BigQuery rejected the request (see the message)",
}


class PipelineError(Exception):
    """An error the pipeline raises itself, knowing whether a retry can help.

    `hint` says what the operator should do (permanent errors); a subclass
    may compute it from its fields.
    """

    transient: ClassVar[bool] = False
    hint: str = ""


class PermanentError(PipelineError):
    """Running the step again would fail the same way (or pay for a second export)."""


class TransientError(PipelineError):
    """Not now: the step's retry policy tries again later."""

    transient: ClassVar[bool] = True


class OutOfMemoryError(PermanentError):
    """A step ran out of memory on a file; permanent (a retry needs the same memory)."""

    def __init__(self, where: str, doing: str, how_to_raise: str, limit: str = "") -> None:
        self.where = where
        self.doing = doing
        self.how_to_raise = how_to_raise
        self.limit = limit or memory_limit()
        super().__init__(
            f"{where}: out of memory {doing} (memory limit: {self.limit}); {how_to_raise}"
        )

    @property
    def hint(self) -> str:  # type: ignore[override]
        return self.how_to_raise

    def at(self, where: str) -> OutOfMemoryError:
        """The same error naming `where` (an S3 URI) instead of a local path."""
        return OutOfMemoryError(where, self.doing, self.how_to_raise, self.limit)

    def __reduce__(self):  # keep the fields across process boundaries
        return (OutOfMemoryError, (self.where, self.doing, self.how_to_raise, self.limit))


@dataclass(frozen=True)
class Verdict:
    """Whether an error is worth retrying, and for permanent ones what to fix."""

    transient: bool
    reason: str
    hint: str = ""


def _aws_verdict(exc: BaseException) -> Verdict | None:
    from botocore.exceptions import (
        ClientError,
        ConnectionError,
        HTTPClientError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in TRANSIENT_AWS_CODES or status >= 500 or status == 429:
            return Verdict(True, f"AWS {code or status}")
        return Verdict(
            False,
            f"AWS {code or status}",
            AWS_HINTS.get(code, "AWS refused the request (see the message)"),
        )
    if isinstance(exc, (ConnectionError, HTTPClientError)):
        return Verdict(True, f"AWS connection: {type(exc).__name__}")
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return Verdict(
            False, "no AWS credentials", "give the run an AWS role, profile or access keys"
        )
    return None


def _google_verdict(exc: BaseException) -> Verdict | None:
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    if isinstance(exc, gexc.RetryError):
        return Verdict(True, "Google client retries exhausted")
    if isinstance(exc, gexc.GoogleAPICallError):
        reasons = [str(e.get("reason", "")) for e in (exc.errors or []) if isinstance(e, dict)]
        status = int(exc.code or 0) if isinstance(exc.code, int) else 0
        name = type(exc).__name__
        if (
            isinstance(
                exc,
                (
                    gexc.TooManyRequests,
                    gexc.InternalServerError,
                    gexc.BadGateway,
                    gexc.ServiceUnavailable,
                    gexc.GatewayTimeout,
                ),
            )
            or status >= 500
            or any(r in TRANSIENT_BIGQUERY_REASONS for r in reasons)
        ):
            return Verdict(True, f"Google {name} {reasons}")
        hint = next((BIGQUERY_HINTS[r] for r in reasons if r in BIGQUERY_HINTS), "")
        if not hint and isinstance(exc, gexc.Forbidden):
            hint = BIGQUERY_HINTS["accessDenied"]
        if not hint and isinstance(exc, gexc.NotFound):
            hint = BIGQUERY_HINTS["notFound"]
        return Verdict(False, f"Google {name} {reasons}", hint or "see the message")
    if isinstance(exc, auth_exc.RefreshError):
        return Verdict(False, "Google credentials", "renew or fix the Google credentials")
    if isinstance(exc, auth_exc.TransportError):
        return Verdict(True, "Google auth transport")
    return None


def classify(exc: BaseException) -> Verdict:
    """Transient (retry the step) or permanent (fail now, say what to fix)."""
    from dagster import DagsterError

    # The pipeline's own verdicts first: their messages already say what to do.
    if isinstance(exc, PipelineError):
        return Verdict(exc.transient, type(exc).__name__, exc.hint)
    if isinstance(exc, (Failure, DagsterError)):
        return Verdict(False, type(exc).__name__)
    if isinstance(exc, MemoryError):
        # The same work needs the same memory: a retry fails the same way.
        return Verdict(
            False,
            "out of memory",
            f"the step ran out of memory (limit: {memory_limit()}): give it more memory, "
            "or lower its parallelism (docs/performance.md gives each step's peak memory)",
        )
    for verdict in (_aws_verdict(exc), _google_verdict(exc)):
        if verdict is not None:
            return verdict
    try:
        import requests

        if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
            return Verdict(True, f"connection: {type(exc).__name__}")
    except ImportError:  # pragma: no cover - requests comes with google-cloud-bigquery
        pass
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return Verdict(True, f"connection: {type(exc).__name__}")
    return Verdict(False, f"unexpected {type(exc).__name__}")


def permanent_failure(exc: BaseException, what: str, verdict: Verdict) -> Failure:
    """A `Failure` that bypasses the retry policy, keeping the original message and metadata."""
    if isinstance(exc, Failure):
        description = exc.description or str(exc)
        metadata = dict(exc.metadata)
    else:
        description = f"{what}: {type(exc).__name__}: {exc}"
        metadata = {}
    if verdict.hint and verdict.hint not in description:
        description = f"{description}\nWhat to do: {verdict.hint}."
    metadata.setdefault("error_class", verdict.reason)
    metadata["retried"] = "no (permanent error)"
    return Failure(description=description, metadata=metadata, allow_retries=False)


@contextmanager
def retry_only_transient(what: str, log: Callable[[str], None]) -> Iterator[None]:
    """Re-raise transient errors for the step's retry policy; turn the rest into `Failure`s.

    `what` names the work ("DynamoDB export of Orders") for the message.
    """
    try:
        yield
    except Exception as exc:
        verdict = classify(exc)
        if verdict.transient:
            log(
                f"{what}: transient error ({verdict.reason}: {exc}); the step will be "
                f"retried (up to {TRANSIENT_RETRY_POLICY.max_retries} times, backing off)"
            )
            raise
        raise permanent_failure(exc, what, verdict) from exc
