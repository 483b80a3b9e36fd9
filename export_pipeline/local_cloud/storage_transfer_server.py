"""Google's Storage Transfer Service, REST API v1, on loopback: S3 (the local AWS) to GCS.

Run as `python -m export_pipeline.local_cloud.storage_transfer_server --port P
--aws-endpoint URL --gcs-endpoint URL --project ID` (`control.up` does). It
answers the calls the pipeline's client (`google-cloud-storage-transfer`,
REST transport) makes, as Google's reference describes them:

    POST  /v1/transferJobs                         transferJobs.create
    GET   /v1/transferJobs/{name}?projectId=       transferJobs.get
    PATCH /v1/transferJobs/{name}                  transferJobs.patch
    POST  /v1/transferJobs/{name}:run              transferJobs.run -> Operation
    GET   /v1/transferOperations/{name}            transferOperations.get
    GET   /v1/transferOperations?filter={json}     transferOperations.list
    GET   /v1/googleServiceAccounts/{projectId}    googleServiceAccounts.get

A run copies the objects under `awsS3DataSource.path` of `bucketName` from
the local S3 into `gcsDataSink` through the local GCS's JSON API, in a
thread of this process, while the operation's metadata (a
`TransferOperation`) goes from IN_PROGRESS to SUCCESS or FAILED with its
counters and `errorBreakdowns`. The source is read as the transfer reads it
on Google: with the job's `awsAccessKey`, or with temporary credentials of
`roleArn` obtained by `AssumeRoleWithWebIdentity`, whose trust policy must
name `accounts.google.com` (and, when it has the condition, the service
agent's `subjectId`). When the local AWS server enforces IAM, the role's or
key's own policies then decide whether ListBucket/GetObject are allowed.

Objects already in the sink with the same size and MD5 are skipped (Google's
default: `overwriteObjectsAlreadyExistingInSink` false). A missing prefix
is no failure (Google reports zero objects found); a missing bucket or
refused access fails the operation. Jobs and operations live in memory:
`export-pipeline local down` forgets them, like the AWS side's state.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import logging
import os
import re
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from export_pipeline.local_cloud._process import serve_until_stopped

HEALTH_PATH = "/_local_cloud/health"
# Shortest time an operation stays IN_PROGRESS (seconds; default 1): Google's take
# tens of seconds at least, and a caller must be seen to wait. Tests shorten it.
OPERATION_SECONDS_ENV = "EXPORT_PIPELINE_LOCAL_TRANSFER_SECONDS"
OPERATION_TYPE = "type.googleapis.com/google.storagetransfer.v1.TransferOperation"
EMPTY_TYPE = "type.googleapis.com/google.protobuf.Empty"
# A user-given job name: Google's documented pattern for transfers not involving POSIX paths.
_JOB_NAME = re.compile(r"^transferJobs/(?!OPI)[A-Za-z0-9\-._~]*[A-Za-z0-9]$")
_JOB_STATUSES = frozenset({"ENABLED", "DISABLED", "DELETED"})
# Fields transferJobs.patch may change (the reference's updateTransferJobFieldMask).
_PATCHABLE = frozenset(
    {
        "description",
        "transferSpec",
        "notificationConfig",
        "loggingConfig",
        "status",
        "schedule",
        "eventStream",
        "replicationSpec",
    }
)
_GOOGLE_ISSUER = "accounts.google.com"
# TransferJob.Status by number: clients may send enums as numbers (`$alt=json;enum-encoding=int`).
_JOB_STATUS_NUMBERS = {0: "STATUS_UNSPECIFIED", 1: "ENABLED", 2: "DISABLED", 3: "DELETED"}
_OPERATION_STATUS_NUMBERS = {
    1: "IN_PROGRESS",
    2: "PAUSED",
    3: "SUCCESS",
    4: "FAILED",
    5: "ABORTED",
    6: "QUEUED",
    7: "SUSPENDING",
}

_log = logging.getLogger("export_pipeline.local_cloud.storage_transfer_server")


class ApiError(Exception):
    """An error answered as Google's JSON error body: HTTP code, gRPC status, message."""

    def __init__(self, http_code: int, status: str, message: str) -> None:
        super().__init__(message)
        self.http_code, self.status, self.message = http_code, status, message

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.http_code, "message": self.message, "status": self.status}}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def service_account(project_id: str) -> dict[str, str]:
    """The project's Storage Transfer service agent (googleServiceAccounts.get)."""
    number = int(hashlib.sha256(project_id.encode()).hexdigest()[:11], 16)
    return {
        "accountEmail": f"project-{number}@storage-transfer-service.iam.gserviceaccount.com",
        "subjectId": str(10**20 + number),
    }


@dataclass
class Operation:
    name: str
    job_name: str
    project_id: str
    transfer_spec: dict[str, Any]
    status: str = "IN_PROGRESS"
    start_time: str = field(default_factory=_now)
    end_time: str | None = None
    counters: dict[str, int] = field(default_factory=dict)
    error_breakdowns: list[dict[str, Any]] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.status in {"SUCCESS", "FAILED", "ABORTED"}

    def to_json(self) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "@type": OPERATION_TYPE,
            "name": self.name,
            "projectId": self.project_id,
            "transferSpec": without_secrets(self.transfer_spec),
            "startTime": self.start_time,
            "status": self.status,
            "counters": {key: str(value) for key, value in self.counters.items()},
            "transferJobName": self.job_name,
        }
        if self.end_time:
            metadata["endTime"] = self.end_time
        if self.error_breakdowns:
            metadata["errorBreakdowns"] = self.error_breakdowns
        body: dict[str, Any] = {"name": self.name, "metadata": metadata, "done": self.done}
        if self.status == "SUCCESS":
            body["response"] = {"@type": EMPTY_TYPE}
        elif self.done:
            first = self.error_breakdowns[0] if self.error_breakdowns else {}
            body["error"] = {
                "code": 9,  # FAILED_PRECONDITION
                "message": f"transfer operation {self.status}: "
                + "; ".join(
                    detail
                    for entry in first.get("errorLogEntries", [])
                    for detail in entry.get("errorDetails", [])
                ),
            }
        return body


class TransferSourceError(Exception):
    """A copy cannot proceed: Google's error code and the detail it logs for the URL."""

    def __init__(self, code: str, url: str, detail: str) -> None:
        super().__init__(detail)
        self.code, self.url, self.detail = code, url, detail


@dataclass
class Service:
    """Jobs and operations of one emulator process, and how runs reach S3 and GCS."""

    aws_endpoint: str
    gcs_endpoint: str
    region: str
    admin_key: tuple[str, str]
    operation_seconds: float = 1.0
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    operations: dict[str, Operation] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    counter: int = 0

    # -- transferJobs ----------------------------------------------------------

    def create_job(self, body: dict[str, Any]) -> dict[str, Any]:
        project = body.get("projectId")
        if not project:
            raise ApiError(400, "INVALID_ARGUMENT", "projectId is required")
        status = _JOB_STATUS_NUMBERS.get(body.get("status"), body.get("status"))  # type: ignore[arg-type]
        if status not in _JOB_STATUSES - {"DELETED"}:
            raise ApiError(
                400, "INVALID_ARGUMENT", f"Invalid status {status}: expected ENABLED or DISABLED"
            )
        _check_spec(body.get("transferSpec"))
        with self.lock:
            name = body.get("name")
            if name:
                if not _JOB_NAME.fullmatch(name) or len(name) > 128:
                    raise ApiError(400, "INVALID_ARGUMENT", f"Invalid job name {name!r}")
            else:
                self.counter += 1
                name = f"transferJobs/{int(time.time() * 1000)}{self.counter:04d}"
            if name in self.jobs:
                raise ApiError(409, "ALREADY_EXISTS", f"Transfer job {name} already exists.")
            now = _now()
            job = {
                **{k: v for k, v in body.items() if k != "latestOperationName"},
                "name": name,
                "status": status,
                "creationTime": now,
                "lastModificationTime": now,
            }
            self.jobs[name] = job
            return without_secrets(job)

    def _job(self, name: str, project: str | None) -> dict[str, Any]:
        job = self.jobs.get(name)
        if job is None or (project and job["projectId"] != project):
            raise ApiError(404, "NOT_FOUND", f"Transfer job {name} not found.")
        return job

    def get_job(self, name: str, project: str | None) -> dict[str, Any]:
        if not project:
            raise ApiError(400, "INVALID_ARGUMENT", "projectId is required")
        with self.lock:
            return without_secrets(self._job(name, project))

    def patch_job(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        project = body.get("projectId")
        if not project:
            raise ApiError(400, "INVALID_ARGUMENT", "projectId is required")
        changes = body.get("transferJob") or {}
        mask = [m for m in str(body.get("updateTransferJobFieldMask") or "").split(",") if m]
        if not mask:
            raise ApiError(400, "INVALID_ARGUMENT", "updateTransferJobFieldMask is required")
        unknown = [m for m in mask if m not in _PATCHABLE]
        if unknown:
            raise ApiError(400, "INVALID_ARGUMENT", f"Cannot update fields {unknown}")
        if "transferSpec" in mask:
            _check_spec(changes.get("transferSpec"))
        with self.lock:
            job = self._job(name, project)
            if "status" in changes:
                changes["status"] = _JOB_STATUS_NUMBERS.get(changes["status"], changes["status"])
            for key in mask:
                if key in changes:
                    job[key] = changes[key]
                else:
                    job.pop(key, None)
            job["lastModificationTime"] = _now()
            if job.get("status") == "DELETED":
                job["deletionTime"] = job["lastModificationTime"]
            return without_secrets(job)

    def run_job(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        project = body.get("projectId")
        if not project:
            raise ApiError(400, "INVALID_ARGUMENT", "projectId is required")
        with self.lock:
            job = self._job(name, project)
            if job.get("status") != "ENABLED":
                raise ApiError(
                    400, "FAILED_PRECONDITION", f"Transfer job {name} is {job.get('status')}."
                )
            latest = self.operations.get(job.get("latestOperationName", ""))
            if latest is not None and not latest.done:
                # "A TransferJob has a maximum of one active TransferOperation."
                raise ApiError(
                    400,
                    "FAILED_PRECONDITION",
                    f"Transfer job {name} already has an active operation {latest.name}.",
                )
            self.counter += 1
            job_id = name.split("/", 1)[1]
            operation = Operation(
                name=f"transferOperations/transferJobs-{job_id}-{int(time.time() * 1e6)}"
                f"{self.counter}",
                job_name=name,
                project_id=project,
                transfer_spec=json.loads(json.dumps(job["transferSpec"])),
            )
            self.operations[operation.name] = operation
            job["latestOperationName"] = operation.name
        threading.Thread(
            target=self._execute, args=(operation,), name=operation.name, daemon=True
        ).start()
        return operation.to_json()

    # -- transferOperations ------------------------------------------------------

    def get_operation(self, name: str) -> dict[str, Any]:
        with self.lock:
            operation = self.operations.get(name)
            if operation is None:
                raise ApiError(404, "NOT_FOUND", f"Operation {name} not found.")
            return operation.to_json()

    def list_operations(self, filter_text: str | None) -> dict[str, Any]:
        try:
            wanted = json.loads(filter_text or "")
        except ValueError:
            raise ApiError(
                400, "INVALID_ARGUMENT", "filter must be a JSON object with projectId"
            ) from None
        if not isinstance(wanted, dict) or not wanted.get("projectId"):
            raise ApiError(400, "INVALID_ARGUMENT", "filter must name projectId")
        jobs = set(wanted.get("jobNames") or [])
        statuses = {
            _OPERATION_STATUS_NUMBERS.get(s, s) for s in wanted.get("transferStatuses") or []
        }
        names = set(wanted.get("operationNames") or [])
        with self.lock:
            found = [
                op.to_json()
                for op in self.operations.values()
                if op.project_id == wanted["projectId"]
                and (not jobs or op.job_name in jobs)
                and (not statuses or op.status in statuses)
                and (not names or op.name in names)
            ]
        return {"operations": found} if found else {}

    # -- Copying -----------------------------------------------------------------

    def _execute(self, operation: Operation) -> None:
        spec = operation.transfer_spec
        source, sink = spec["awsS3DataSource"], spec["gcsDataSink"]
        conditions = spec.get("objectConditions") or {}
        counters = operation.counters
        started = time.monotonic()
        try:
            s3 = self._s3_client(source, operation.project_id)
            prefix = source.get("path", "")
            for key, size, etag in _list_objects(s3, source["bucketName"], prefix):
                relative = key[len(prefix) :]
                if not _selected(relative, conditions):
                    continue
                counters["objectsFoundFromSource"] = counters.get("objectsFoundFromSource", 0) + 1
                counters["bytesFoundFromSource"] = counters.get("bytesFoundFromSource", 0) + size
                target = sink.get("path", "") + relative
                if self._same_in_sink(sink["bucketName"], target, size, etag):
                    _add(counters, "objectsFromSourceSkippedBySync", 1)
                    _add(counters, "bytesFromSourceSkippedBySync", size)
                    continue
                self._copy(s3, source["bucketName"], key, sink["bucketName"], target, size)
                _add(counters, "objectsCopiedToSink", 1)
                _add(counters, "bytesCopiedToSink", size)
            final = "SUCCESS"
        except TransferSourceError as error:
            _add(counters, "objectsFromSourceFailed", 1)
            operation.error_breakdowns.append(
                {
                    "errorCode": error.code,
                    "errorCount": "1",
                    "errorLogEntries": [{"url": error.url, "errorDetails": [error.detail]}],
                }
            )
            final = "FAILED"
        except Exception as error:  # anything else is the emulator's fault: say so
            _log.exception("%s failed", operation.name)
            operation.error_breakdowns.append(
                {
                    "errorCode": "INTERNAL",
                    "errorCount": "1",
                    "errorLogEntries": [
                        {"url": "", "errorDetails": [f"{type(error).__name__}: {error}"]}
                    ],
                }
            )
            final = "FAILED"
        time.sleep(max(0.0, started + self.operation_seconds - time.monotonic()))
        with self.lock:
            operation.status, operation.end_time = final, _now()
        _log.info("%s: %s %s", operation.name, final, counters)

    def _s3_client(self, source: dict[str, Any], project_id: str) -> Any:
        import boto3
        from botocore.exceptions import ClientError

        bucket_url = f"s3://{source['bucketName']}/{source.get('path', '')}"
        if source.get("awsAccessKey"):
            key = source["awsAccessKey"]
            credentials = (key.get("accessKeyId", ""), key.get("secretAccessKey", ""), None)
        else:
            role = source.get("roleArn", "")
            refusal = self._trust_refusal(role, project_id)
            if refusal:
                raise TransferSourceError("PERMISSION_DENIED", bucket_url, refusal)
            sts = boto3.client(
                "sts",
                endpoint_url=self.aws_endpoint,
                region_name=self.region,
                aws_access_key_id=self.admin_key[0],
                aws_secret_access_key=self.admin_key[1],
            )
            try:
                assumed = sts.assume_role_with_web_identity(
                    RoleArn=role,
                    RoleSessionName=f"storage-transfer-{project_id}"[:64],
                    WebIdentityToken=_identity_token(project_id),
                )["Credentials"]
            except ClientError as error:
                raise TransferSourceError(
                    "PERMISSION_DENIED", bucket_url, f"Failed to assume role {role}: {error}"
                ) from None
            credentials = (
                assumed["AccessKeyId"],
                assumed["SecretAccessKey"],
                assumed["SessionToken"],
            )
        return boto3.client(
            "s3",
            endpoint_url=self.aws_endpoint,
            region_name=self.region,
            aws_access_key_id=credentials[0],
            aws_secret_access_key=credentials[1],
            aws_session_token=credentials[2],
        )

    def _trust_refusal(self, role_arn: str, project_id: str) -> str | None:
        """Why STS would refuse Google's web identity for `role_arn` (None: it accepts).

        moto's AssumeRoleWithWebIdentity checks neither that the role exists
        nor its trust policy; AWS checks both, so they are checked here.
        """
        import boto3
        from botocore.exceptions import ClientError

        iam = boto3.client(
            "iam",
            endpoint_url=self.aws_endpoint,
            region_name=self.region,
            aws_access_key_id=self.admin_key[0],
            aws_secret_access_key=self.admin_key[1],
        )
        denied = (
            f"Failed to obtain credentials: AccessDenied: Not authorized to perform "
            f"sts:AssumeRoleWithWebIdentity on {role_arn}"
        )
        try:
            role = iam.get_role(RoleName=role_arn.rsplit("/", 1)[-1])["Role"]
        except ClientError:
            return denied + " (no such role)"
        if role.get("Arn") != role_arn:
            return denied + " (no such role)"
        document = role.get("AssumeRolePolicyDocument") or {}
        if isinstance(document, str):
            document = json.loads(urllib.parse.unquote(document))
        subject = service_account(project_id)["subjectId"]
        for statement in _as_list(document.get("Statement")):
            if statement.get("Effect") != "Allow":
                continue
            if "sts:AssumeRoleWithWebIdentity" not in _as_list(statement.get("Action")):
                continue
            principal = statement.get("Principal") or {}
            if _GOOGLE_ISSUER not in _as_list(principal.get("Federated")):
                continue
            equals = (statement.get("Condition") or {}).get("StringEquals") or {}
            wanted = equals.get(f"{_GOOGLE_ISSUER}:sub")
            if wanted is None or subject in _as_list(wanted):
                return None
        return denied + " (its trust policy does not trust accounts.google.com for the "
        f"service agent's subjectId {subject})"

    def _same_in_sink(self, bucket: str, name: str, size: int, etag: str) -> bool:
        url = (
            f"{self.gcs_endpoint}/storage/v1/b/{urllib.parse.quote(bucket, safe='')}/o/"
            f"{urllib.parse.quote(name, safe='')}"
        )
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                found = json.loads(response.read())
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return False
            raise
        if int(found.get("size", -1)) != size:
            return False
        md5 = found.get("md5Hash")
        if md5 and re.fullmatch(r"[0-9a-f]{32}", etag):
            return base64.b64decode(md5) == binascii.unhexlify(etag)
        return True

    def _copy(self, s3: Any, bucket: str, key: str, sink_bucket: str, name: str, size: int) -> None:
        from botocore.exceptions import ClientError

        url = f"s3://{bucket}/{key}"
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        except ClientError as error:
            raise _source_error(error, url) from None
        with tempfile.SpooledTemporaryFile(max_size=8 << 20) as spool:
            for chunk in body.iter_chunks(1 << 20):
                spool.write(chunk)
            spool.seek(0)
            upload = (
                f"{self.gcs_endpoint}/upload/storage/v1/b/{urllib.parse.quote(sink_bucket)}/o?"
                + urllib.parse.urlencode({"uploadType": "media", "name": name})
            )
            request = urllib.request.Request(
                upload,
                data=spool,  # type: ignore[arg-type]
                method="POST",
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(size),
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=300) as response:
                    response.read()
            except urllib.error.HTTPError as error:
                code = "NOT_FOUND" if error.code == 404 else "PERMISSION_DENIED"
                raise TransferSourceError(
                    code,
                    f"gs://{sink_bucket}/{name}",
                    f"writing to the sink failed: HTTP {error.code} {error.read()[:200]!r}",
                ) from None


def without_secrets(resource: dict[str, Any]) -> dict[str, Any]:
    """`resource` (a job or a transfer spec) as Google answers it: `secretAccessKey` is
    input only ("not returned in RPC responses")."""
    copy = json.loads(json.dumps(resource))
    spec = copy.get("transferSpec", copy)
    key = (spec.get("awsS3DataSource") or {}).get("awsAccessKey")
    if isinstance(key, dict):
        key.pop("secretAccessKey", None)
    return copy


def _add(counters: dict[str, int], name: str, value: int) -> None:
    counters[name] = counters.get(name, 0) + value


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _identity_token(project_id: str) -> str:
    """An unsigned token standing for the service agent's Google ID token (moto reads none)."""
    claims = {"iss": f"https://{_GOOGLE_ISSUER}", "sub": service_account(project_id)["subjectId"]}
    encoded = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"e30.{encoded}."


def _check_spec(spec: Any) -> None:
    if not isinstance(spec, dict):
        raise ApiError(400, "INVALID_ARGUMENT", "transferSpec is required")
    source, sink = spec.get("awsS3DataSource"), spec.get("gcsDataSink")
    if not isinstance(source, dict) or not isinstance(sink, dict):
        raise ApiError(
            400,
            "INVALID_ARGUMENT",
            "this local emulation supports awsS3DataSource to gcsDataSink only",
        )
    if not source.get("bucketName") or not sink.get("bucketName"):
        raise ApiError(400, "INVALID_ARGUMENT", "bucketName is required in source and sink")
    if not source.get("roleArn") and not source.get("awsAccessKey"):
        raise ApiError(
            400, "INVALID_ARGUMENT", "awsS3DataSource needs roleArn or awsAccessKey credentials"
        )
    for side, value in (("awsS3DataSource", source), ("gcsDataSink", sink)):
        path = value.get("path", "")
        if path and (path.startswith("/") or not path.endswith("/")):
            raise ApiError(
                400,
                "INVALID_ARGUMENT",
                f"{side}.path must not start with '/' and must end with '/'",
            )


def _selected(relative: str, conditions: dict[str, Any]) -> bool:
    include = conditions.get("includePrefixes") or []
    exclude = conditions.get("excludePrefixes") or []
    if include and not any(relative.startswith(p) for p in include):
        return False
    return not any(relative.startswith(p) for p in exclude)


def _source_error(error: Any, url: str) -> TransferSourceError:
    code = error.response.get("Error", {}).get("Code", "")
    message = error.response.get("Error", {}).get("Message", str(error))
    if code in {"NoSuchBucket", "NoSuchKey", "404"}:
        return TransferSourceError("NOT_FOUND", url, f"{code}: {message}")
    if code in {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"}:
        return TransferSourceError("PERMISSION_DENIED", url, f"{code}: {message}")
    return TransferSourceError("UNKNOWN", url, f"{code}: {message}")


def _list_objects(s3: Any, bucket: str, prefix: str) -> Iterator[tuple[str, int, str]]:
    from botocore.exceptions import ClientError

    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                if item["Key"].endswith("/"):
                    continue  # a folder placeholder, not an object Google copies
                yield item["Key"], int(item["Size"]), str(item.get("ETag", "")).strip('"')
    except ClientError as error:
        raise _source_error(error, f"s3://{bucket}/{prefix}") from None


# -- HTTP ----------------------------------------------------------------------------


def application(service: Service, info: dict[str, Any]) -> Callable[..., Any]:
    """The WSGI application: Google's routes, JSON in and out."""
    from werkzeug.wrappers import Request, Response

    health = json.dumps({"status": "ok", **info})

    def route(request: Request) -> Any:
        path, method = request.path, request.method
        body = request.get_json(silent=True) or {}
        if path == HEALTH_PATH and method == "GET":
            return json.loads(health)
        if path == "/v1/transferJobs" and method == "POST":
            return service.create_job(body)
        if path.startswith("/v1/transferJobs/"):
            name = path[len("/v1/") :]
            if name.endswith(":run") and method == "POST":
                return service.run_job(name[: -len(":run")], body)
            if method == "GET":
                return service.get_job(name, request.args.get("projectId"))
            if method == "PATCH":
                return service.patch_job(name, body)
        if path == "/v1/transferOperations" and method == "GET":
            return service.list_operations(request.args.get("filter"))
        if path.startswith("/v1/transferOperations/") and method == "GET":
            return service.get_operation(path[len("/v1/") :])
        if path.startswith("/v1/googleServiceAccounts/") and method == "GET":
            return service_account(path.rsplit("/", 1)[-1])
        raise ApiError(404, "NOT_FOUND", f"no route for {method} {path}")

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        try:
            payload, code = route(request), 200
        except ApiError as error:
            payload, code = error.body(), error.http_code
        response = Response(json.dumps(payload), status=code, mimetype="application/json")
        return response(environ, start_response)

    return app


def serve(
    host: str, port: int, service: Service, owner: str | None = None, project: str = ""
) -> None:
    from werkzeug.serving import make_server

    app = application(
        service, {"pid": os.getpid(), "gcs_endpoint": service.gcs_endpoint, "project": project}
    )
    server = make_server(host, port, app, threaded=True)

    _log.info("Storage Transfer serving on http://%s:%s", host, port)
    serve_until_stopped(server, owner, _log)


def main(argv: list[str] | None = None) -> None:
    from export_pipeline.local_cloud.settings import (
        LOCAL_AWS_ACCESS_KEY_ID,
        LOCAL_AWS_SECRET_ACCESS_KEY,
    )

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", help="accepted like the other servers; state is in memory")
    parser.add_argument("--aws-endpoint", required=True)
    parser.add_argument("--gcs-endpoint", required=True)
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--project", default="")
    parser.add_argument("--owner", help="pid:start_ticks of a process whose exit stops us")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    service = Service(
        aws_endpoint=args.aws_endpoint.rstrip("/"),
        gcs_endpoint=args.gcs_endpoint.rstrip("/"),
        region=args.region,
        admin_key=(LOCAL_AWS_ACCESS_KEY_ID, LOCAL_AWS_SECRET_ACCESS_KEY),
        operation_seconds=float(os.environ.get(OPERATION_SECONDS_ENV) or 1.0),
    )
    serve(args.host, args.port, service, args.owner, args.project)


if __name__ == "__main__":
    main()
