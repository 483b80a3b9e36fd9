"""Retries: transient AWS/Google errors retry the step, permanent ones fail at once, explained.

The classification is checked on real exception objects (botocore's
`ClientError` built from the error document AWS sends, google-api-core's
exceptions from a status and reason); the end-to-end tests drive real
assets against the local cloud with REL's fault proxy in front of AWS
(throttling that outlasts botocore's own retries; AccessDenied).
"""

from __future__ import annotations

import pytest
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from dagster import DagsterInstance, Failure, RetryPolicy, materialize
from google.api_core import exceptions as gexc

from export_pipeline import errors
from export_pipeline.dynamodb.exports import ExportFailedError, ExportTimeoutError
from export_pipeline.dynamodb.source import DynamoDBSource
from export_pipeline.errors import classify, permanent_failure, retry_only_transient
from export_pipeline.graph import assets as graph_assets
from export_pipeline.rds.exports import RdsExportError
from export_pipeline_tests.dynamodb._pipeline_helpers import create_table, make_config
from export_pipeline_tests.faults.proxy import dynamodb_error, fault_proxy, resources_through
from export_pipeline_tests.support.principals import pipeline_resources


def client_error(code: str, status: int, operation: str = "DescribeTable") -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": f"{code} happened"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        operation,
    )


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("ThrottlingException", 400),
        ("ProvisionedThroughputExceededException", 400),
        ("SlowDown", 503),
        ("Throttling", 400),  # RDS
        ("InternalError", 500),
        ("SomethingNew", 502),  # any 5xx
        ("TooManyRequests", 429),
    ],
)
def test_transient_aws_errors(code, status):
    assert classify(client_error(code, status)).transient


@pytest.mark.parametrize(
    ("code", "status", "hint"),
    [
        ("AccessDeniedException", 400, "deploy/iam"),
        ("AccessDenied", 403, "deploy/iam"),
        ("ResourceNotFoundException", 400, "table name"),
        ("NoSuchBucket", 404, "aws.export_bucket"),
        ("PointInTimeRecoveryUnavailableException", 400, "point-in-time recovery"),
        ("KMSKeyNotAccessibleFault", 400, "kms_key_id"),
        ("UnheardOfClientError", 400, "see the message"),
    ],
)
def test_permanent_aws_errors_say_what_to_fix(code, status, hint):
    verdict = classify(client_error(code, status))
    assert not verdict.transient
    assert hint in verdict.hint


def test_connection_problems_are_transient():
    assert classify(EndpointConnectionError(endpoint_url="https://dynamodb")).transient
    assert classify(ReadTimeoutError(endpoint_url="https://s3")).transient
    assert classify(ResponseStreamingError(error="Connection broken")).transient
    assert classify(ConnectionResetError(104, "reset")).transient
    assert not classify(NoCredentialsError()).transient


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (gexc.ServiceUnavailable("down"), True),
        (gexc.InternalServerError("oops"), True),
        (gexc.TooManyRequests("slow down"), True),
        (gexc.Forbidden("slow", errors=[{"reason": "rateLimitExceeded"}]), True),
        (gexc.Forbidden("no", errors=[{"reason": "accessDenied"}]), False),
        (gexc.NotFound("no dataset", errors=[{"reason": "notFound"}]), False),
        (gexc.BadRequest("bad sql", errors=[{"reason": "invalidQuery"}]), False),
        (gexc.RetryError("deadline exceeded", cause=None), True),
    ],
)
def test_google_errors(error, transient):
    assert classify(error).transient is transient


def test_pipeline_errors_are_permanent():
    failed = ExportFailedError("Orders", "arn:x", "S3AccessDenied", "Access Denied")
    assert not classify(failed).transient and "bucket" in classify(failed).hint
    # ExportTimeoutError is a TimeoutError, which alone would count as transient.
    assert not classify(ExportTimeoutError("still IN_PROGRESS")).transient
    assert not classify(RdsExportError("CANCELED")).transient
    assert not classify(Failure("checked")).transient
    assert not classify(KeyError("bug")).transient


def test_permanent_failure_keeps_message_and_metadata_and_bypasses_retries():
    original = Failure("export FAILED", metadata={"failure_code": "S3NoSuchBucket"})
    failure = permanent_failure(original, "DynamoDB export of T", classify(original))
    assert failure.allow_retries is False
    assert failure.description.startswith("export FAILED")
    assert failure.metadata["failure_code"].value == "S3NoSuchBucket"

    error = client_error("AccessDeniedException", 400)
    failure = permanent_failure(error, "DynamoDB export of T", classify(error))
    assert "DynamoDB export of T" in failure.description
    assert "AccessDeniedException happened" in failure.description
    assert "What to do: grant" in failure.description


def test_retry_only_transient_reraises_transient_errors_unchanged():
    logged: list[str] = []
    throttled = client_error("ThrottlingException", 400)
    with pytest.raises(ClientError) as caught, retry_only_transient("work", logged.append):
        raise throttled
    assert caught.value is throttled
    assert "will be retried" in logged[0]
    with pytest.raises(Failure) as failed, retry_only_transient("work", logged.append):
        raise client_error("ResourceNotFoundException", 400)
    assert failed.value.allow_retries is False


# --------------------------------------------------------------------------- end to end


@pytest.fixture
def fast_retries(monkeypatch):
    """The production policy waits 20 s+ between attempts; tests cannot."""
    policy = RetryPolicy(max_retries=2, delay=0.2)
    monkeypatch.setattr(graph_assets, "TRANSIENT_RETRY_POLICY", policy)
    return policy


def _run_export(config, proxy):
    export_asset, _ = graph_assets.build_source_assets(DynamoDBSource(config))
    resources = resources_through(pipeline_resources(config), aws=proxy, bigquery=None)
    # Fewer client retries (and their backoff sleeps) so that the step layer shows quickly.
    ddb = resources["dynamodb"]
    resources["dynamodb"] = type(ddb)(
        **{**{k: getattr(ddb, k) for k in type(ddb).model_fields}, "max_attempts": 1}
    )
    return materialize(
        [export_asset],
        resources=resources,
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def _events(result, kind: str) -> list:
    return [e for e in result.all_events if e.event_type_value == kind]


def test_throttling_beyond_the_client_retries_is_retried_by_the_step(
    local_cloud, aws_clients, unique_name, fast_retries
):
    table = f"retry-{unique_name}"
    create_table(aws_clients.dynamodb, table, [{"pk": {"S": "a"}}])
    config = make_config(table)
    with fault_proxy(local_cloud.host, local_cloud.aws_port) as proxy:
        # Both of botocore's attempts of the first DescribeTable are throttled.
        rule = proxy.add(dynamodb_error(), target=r"\.DescribeTable$", times=2)
        result = _run_export(config, proxy)
    assert rule.fired == 2
    assert result.success, [str(e.message) for e in _events(result, "STEP_FAILURE")]
    assert len(_events(result, "STEP_UP_FOR_RETRY")) == 1
    assert len(result.get_asset_materialization_events()) == 1


def test_access_denied_fails_at_once_saying_what_to_fix(
    local_cloud, aws_clients, unique_name, fast_retries
):
    table = f"denied-{unique_name}"
    create_table(aws_clients.dynamodb, table, [{"pk": {"S": "a"}}])
    config = make_config(table)
    with fault_proxy(local_cloud.host, local_cloud.aws_port) as proxy:
        denied = dynamodb_error(400, "AccessDeniedException", "not authorized: DescribeTable")
        rule = proxy.add(denied, target=r"\.DescribeTable$", times=10)
        result = _run_export(config, proxy)
    assert rule.fired == 1  # neither botocore nor the step retried
    assert not result.success
    assert _events(result, "STEP_UP_FOR_RETRY") == []
    [failure] = result.get_step_failure_events()
    description = failure.step_failure_data.user_failure_data.description
    assert "AccessDeniedException" in description and table in description
    assert "What to do: grant the pipeline's AWS role" in description


def test_retry_policy_is_on_every_export_and_load_asset(pipeline_config):
    from export_pipeline.rds.source import RdsSource

    built = [
        *graph_assets.build_source_assets(DynamoDBSource(pipeline_config)),
        *graph_assets.build_source_assets(RdsSource(pipeline_config)),
    ]
    assert built
    for definition in built:
        for op in definition.node_def.iterate_op_defs():  # every step of a graph-backed asset
            assert op.retry_policy == errors.TRANSIENT_RETRY_POLICY, op.name
