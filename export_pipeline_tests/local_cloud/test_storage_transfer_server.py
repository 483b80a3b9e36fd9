"""The local Storage Transfer API against Google's reference, through the official client.

Every call goes over HTTP to the session cloud's Storage Transfer server with
`google-cloud-storage-transfer` (REST transport), the client production uses;
copies read the session's local S3 and write its local GCS.
"""

from __future__ import annotations

import json
import time

import pytest
from google.api_core import exceptions as google_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage_transfer
from google.rpc import code_pb2

from export_pipeline.local_cloud import control
from export_pipeline.local_cloud.demo_rds import ensure_storage_transfer_role
from export_pipeline.local_cloud.storage_transfer_server import service_account
from export_pipeline.storage_transfer import (
    S3ToGcsTransfer,
    StorageTransferError,
    ensure_transfer,
    job_name,
    list_operations,
    wait_for_transfer,
)

Status = storage_transfer.TransferOperation.Status


@pytest.fixture(scope="module")
def transfer_client(local_cloud):
    return storage_transfer.StorageTransferServiceClient(
        transport="rest",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": local_cloud.storage_transfer_endpoint},
    )


@pytest.fixture(scope="module")
def project(local_cloud) -> str:
    return local_cloud.bigquery_project


@pytest.fixture(scope="module")
def reader_role(aws_clients, project) -> str:
    """An AWS role that trusts the local service agent (web identity) and may read S3."""
    name = "st-reader-" + str(int(time.time() * 1000))[-8:]
    ensure_storage_transfer_role(aws_clients.iam, f"arn:aws:iam::1:role/{name}", project, ["*"])
    return aws_clients.iam.get_role(RoleName=name)["Role"]["Arn"]


@pytest.fixture(scope="module")
def sink_bucket(local_cloud) -> str:
    client = control.gcs_client(local_cloud)
    name = "st-sink-" + str(int(time.time() * 1000))[-8:]
    client.create_bucket(name)
    yield name
    client.close()


@pytest.fixture
def source(aws_clients, unique_name) -> tuple[str, str]:
    """An S3 bucket with three objects under `<prefix>/` (and one outside it)."""
    bucket = unique_name.replace("t", "st-src-", 1)
    aws_clients.s3.create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": aws_clients.region}
    )
    for key, body in (("data/a/1.bin", b"one"), ("data/a/2.bin", b"two!"), ("data/b/3.bin", b"3")):
        aws_clients.s3.put_object(Bucket=bucket, Key=key, Body=body)
    aws_clients.s3.put_object(Bucket=bucket, Key="other/x.bin", Body=b"not copied")
    return bucket, "data/"


def _transfer(project, bucket, path, role, sink, name, **extra) -> S3ToGcsTransfer:
    return S3ToGcsTransfer(
        job_name=job_name("test", name),
        project_id=project,
        source_bucket=bucket,
        source_path=path,
        role_arn=role,
        sink_bucket=sink,
        sink_path=f"copies/{name}/",
        description="test",
        **extra,
    )


def _wait(client, operation_name: str):
    return wait_for_transfer(
        client, operation_name, what="test", max_interval_seconds=0.2, timeout_seconds=30
    )


def test_jobs_runs_and_operations_as_google_documents(
    transfer_client, project, source, reader_role, sink_bucket, local_cloud, unique_name
):
    bucket, path = source
    transfer = _transfer(project, bucket, path, reader_role, sink_bucket, unique_name)
    created = transfer_client.create_transfer_job(request={"transfer_job": transfer.job()})
    assert created.name == transfer.job_name
    assert created.status == storage_transfer.TransferJob.Status.ENABLED
    assert not created.latest_operation_name  # no schedule: nothing runs until asked
    # A second job of the same name: ALREADY_EXISTS (HTTP 409).
    with pytest.raises(google_exceptions.Conflict, match="already exists"):
        transfer_client.create_transfer_job(request={"transfer_job": transfer.job()})
    # Without a name, Google generates one.
    unnamed = {k: v for k, v in transfer.job().items() if k != "name"}
    generated = transfer_client.create_transfer_job(request={"transfer_job": unnamed})
    assert generated.name.startswith("transferJobs/") and generated.name != transfer.job_name
    with pytest.raises(google_exceptions.NotFound):
        transfer_client.get_transfer_job(
            request={"job_name": "transferJobs/none-such", "project_id": project}
        )
    patched = transfer_client.update_transfer_job(
        request={
            "job_name": transfer.job_name,
            "project_id": project,
            "transfer_job": {"description": "patched"},
            "update_transfer_job_field_mask": "description",
        }
    )
    assert patched.description == "patched"
    run = transfer_client.run_transfer_job(
        request={"job_name": transfer.job_name, "project_id": project}
    )
    operation_name = run.operation.name
    assert operation_name.startswith("transferOperations/")
    metadata = _wait(transfer_client, operation_name)
    assert metadata.status == Status.SUCCESS
    assert metadata.transfer_job_name == transfer.job_name
    counters = metadata.counters
    assert (counters.objects_found_from_source, counters.objects_copied_to_sink) == (3, 3)
    assert counters.bytes_copied_to_sink == len(b"one" + b"two!" + b"3")
    job = transfer_client.get_transfer_job(
        request={"job_name": transfer.job_name, "project_id": project}
    )
    assert job.latest_operation_name == operation_name
    assert [op.name for op in list_operations(transfer_client, project, [transfer.job_name])] == [
        operation_name
    ]
    gcs = control.gcs_client(local_cloud)
    try:
        copied = {
            b.name: b.download_as_bytes()
            for b in gcs.list_blobs(sink_bucket, prefix=transfer.sink_path)
        }
    finally:
        gcs.close()
    assert copied == {
        f"{transfer.sink_path}a/1.bin": b"one",
        f"{transfer.sink_path}a/2.bin": b"two!",
        f"{transfer.sink_path}b/3.bin": b"3",
    }
    # A second run copies nothing: the sink has every object with the same size and MD5.
    again = transfer_client.run_transfer_job(
        request={"job_name": transfer.job_name, "project_id": project}
    )
    second = _wait(transfer_client, again.operation.name)
    assert second.counters.objects_copied_to_sink == 0
    assert second.counters.objects_from_source_skipped_by_sync == 3
    account = transfer_client.get_google_service_account(request={"project_id": project})
    assert account.account_email.endswith("@storage-transfer-service.iam.gserviceaccount.com")
    assert account.subject_id == service_account(project)["subjectId"]


def test_ensure_transfer_starts_one_operation(
    transfer_client, project, source, reader_role, sink_bucket, unique_name
):
    bucket, path = source
    transfer = _transfer(
        project, bucket, path, reader_role, sink_bucket, unique_name, include_prefixes=("a/",)
    )
    first = ensure_transfer(transfer_client, transfer)
    again = ensure_transfer(transfer_client, transfer)  # while it runs, or after it succeeded
    assert first.started and not again.started
    assert again.operation_name == first.operation_name
    metadata = _wait(transfer_client, first.operation_name)
    assert metadata.counters.objects_copied_to_sink == 2  # includePrefixes: a/ only
    assert not ensure_transfer(transfer_client, transfer).started
    assert len(list_operations(transfer_client, project, [transfer.job_name])) == 1


def test_missing_source_bucket_fails_the_operation(
    transfer_client, project, reader_role, sink_bucket, unique_name
):
    transfer = _transfer(project, "st-no-such-bucket", "x/", reader_role, sink_bucket, unique_name)
    ensured = ensure_transfer(transfer_client, transfer)
    with pytest.raises(StorageTransferError) as raised:
        _wait(transfer_client, ensured.operation_name)
    message = str(raised.value)
    assert "\n" not in message
    assert ensured.operation_name in message and "is FAILED: NOT_FOUND" in message
    assert "s3://st-no-such-bucket/x/" in message
    metadata = storage_transfer.TransferOperation.deserialize(
        transfer_client.get_operation(request={"name": ensured.operation_name}).metadata.value
    )
    assert metadata.error_breakdowns[0].error_code == code_pb2.NOT_FOUND


def test_role_that_does_not_trust_google_is_refused(
    transfer_client, project, source, sink_bucket, aws_clients, unique_name
):
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "export.rds.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    role = aws_clients.iam.create_role(
        RoleName=f"st-untrusted-{unique_name}", AssumeRolePolicyDocument=json.dumps(trust)
    )["Role"]["Arn"]
    bucket, path = source
    transfer = _transfer(project, bucket, path, role, sink_bucket, unique_name)
    ensured = ensure_transfer(transfer_client, transfer)
    with pytest.raises(StorageTransferError, match=r"is FAILED: PERMISSION_DENIED x1 .*"):
        _wait(transfer_client, ensured.operation_name)


def test_active_operation_refuses_a_second_run(
    transfer_client, project, source, reader_role, sink_bucket, unique_name
):
    """ "A TransferJob has a maximum of one active TransferOperation" (transferJobs.run)."""
    bucket, path = source
    transfer = _transfer(project, bucket, path, reader_role, sink_bucket, unique_name)
    transfer_client.create_transfer_job(request={"transfer_job": transfer.job()})
    request = {"job_name": transfer.job_name, "project_id": project}
    first = transfer_client.run_transfer_job(request=request)
    # Operations stay IN_PROGRESS a while (EXPORT_PIPELINE_LOCAL_TRANSFER_SECONDS).
    with pytest.raises(google_exceptions.BadRequest, match="active operation"):
        transfer_client.run_transfer_job(request=request)
    assert _wait(transfer_client, first.operation.name).status == Status.SUCCESS
    assert len(list_operations(transfer_client, project, [transfer.job_name])) == 1
