"""The pipeline as its least-privilege principal, against a local cloud that enforces IAM.

A cloud of this module's own runs with `EXPORT_PIPELINE_LOCAL_IAM=enforce`
(`local_cloud/iam_enforcement.py`). The pipeline signs with the keys of an
IAM user holding exactly the policy `iam_policies` renders for the
configuration: its DynamoDB and RDS paths must pass as that user, and with
any one of the policy's actions taken away they must fail, naming it, as they
would on AWS. (The rest of the suite runs as such users too,
`support/principals.py`; here one user's policy is changed between runs, so
the runs sign with the process's default keys, `build_resources(config)`.)
"""

from __future__ import annotations

import copy
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from dagster import DagsterInstance

from export_pipeline import cli
from export_pipeline.config import PipelineConfig
from export_pipeline.environment import (
    LOCAL_ACCESS_KEY_ENV,
    LOCAL_SECRET_KEY_ENV,
    build_resources,
)
from export_pipeline.iam_policies import load_template, render
from export_pipeline.local_cloud import control
from export_pipeline.local_cloud.clients import AwsClients
from export_pipeline.local_cloud.dynamodb_exports import EXPORT_SECONDS_ENV
from export_pipeline.local_cloud.principals import policy_bound_user, set_policy
from export_pipeline.local_cloud.rds_client import take_automated_snapshot
from export_pipeline.local_cloud.settings import (
    AWS_PORT_ENV,
    BIGQUERY_GRPC_PORT_ENV,
    BIGQUERY_PORT_ENV,
    ENFORCE,
    GCS_PORT_ENV,
    IAM_ENV,
    LOCAL_ACCOUNT_ID,
    STATE_DIR_ENV,
    STORAGE_TRANSFER_PORT_ENV,
    LocalCloudSettings,
)
from export_pipeline.postgres.source import PostgresSource
from export_pipeline_tests.dynamodb import _pipeline_helpers
from export_pipeline_tests.support import rds
from export_pipeline_tests.support.local_cloud import (
    fresh_local_cloud_settings,
    restore_environment,
)

DYNAMODB_TABLES = ("Products", "Orders")  # the demo's full and incremental tables
RDS_INSTANCE = "shopdb"  # the demo's MySQL instance
RDS_TABLE = "shop.customers"
_VARIABLES = (
    STATE_DIR_ENV,
    AWS_PORT_ENV,
    BIGQUERY_PORT_ENV,
    BIGQUERY_GRPC_PORT_ENV,
    GCS_PORT_ENV,
    STORAGE_TRANSFER_PORT_ENV,
    IAM_ENV,
    EXPORT_SECONDS_ENV,
    LOCAL_ACCESS_KEY_ENV,
    LOCAL_SECRET_KEY_ENV,
)


@pytest.fixture(scope="module")
def enforcing_cloud(
    tmp_path_factory: pytest.TempPathFactory, pipeline_config: PipelineConfig
) -> Iterator[LocalCloudSettings]:
    """A seeded local cloud checking IAM; the environment points at it meanwhile."""
    previous = {name: os.environ.get(name) for name in _VARIABLES}
    settings = replace(
        fresh_local_cloud_settings(tmp_path_factory.mktemp("iam_cloud")), enforce_iam=True
    )
    os.environ.update(
        {
            STATE_DIR_ENV: str(settings.state_dir),
            AWS_PORT_ENV: str(settings.aws_port),
            BIGQUERY_PORT_ENV: str(settings.bigquery_port),
            BIGQUERY_GRPC_PORT_ENV: str(settings.bigquery_grpc_port),
            GCS_PORT_ENV: str(settings.gcs_port),
            STORAGE_TRANSFER_PORT_ENV: str(settings.storage_transfer_port),
            IAM_ENV: ENFORCE,
            EXPORT_SECONDS_ENV: "0.3",
        }
    )
    try:
        control.up(settings, pipeline_config, owner_pid=os.getpid())
        yield settings
    finally:
        control.down(settings)
        restore_environment(previous)


@pytest.fixture(scope="module")
def config(pipeline_config: PipelineConfig) -> PipelineConfig:
    """The demo configuration narrowed to two DynamoDB tables and one RDS table."""
    dynamodb = pipeline_config.dynamodb.model_copy(
        update={
            "tables": [t for t in pipeline_config.dynamodb.tables if t.name in DYNAMODB_TABLES],
            "poll_max_interval_seconds": 0.5,
        }
    )
    rds = pipeline_config.rds.model_copy(
        update={
            "instances": [
                i.model_copy(update={"export_only": [RDS_TABLE]})
                for i in pipeline_config.rds.instances
                if i.identifier == RDS_INSTANCE
            ],
            "poll_max_interval_seconds": 0.5,
        }
    )
    return pipeline_config.model_copy(update={"dynamodb": dynamodb, "rds": rds})


@pytest.fixture(scope="module")
def admin(enforcing_cloud: LocalCloudSettings, config: PipelineConfig) -> AwsClients:
    """Clients with the local cloud's own keys: an administrator's."""
    return AwsClients.for_config(enforcing_cloud, config)


@pytest.fixture(scope="module")
def export_role_policy(admin: AwsClients, config: PipelineConfig) -> dict[str, Any]:
    """The demo's export role holds the rendered rds-export-role-policy instead of its own."""
    policy = render(load_template("rds-export-role-policy"), config)
    set_export_role_policy(admin, config, policy)
    return policy


def set_export_role_policy(admin: AwsClients, config: PipelineConfig, policy: dict) -> None:
    role = config.rds.instances[0].iam_role_arn.rsplit("/", 1)[1]
    [name] = admin.iam.list_role_policies(RoleName=role)["PolicyNames"]
    admin.iam.put_role_policy(RoleName=role, PolicyName=name, PolicyDocument=json.dumps(policy))


def rendered_policy(admin: AwsClients, config: PipelineConfig) -> dict[str, Any]:
    """The pipeline policy rendered for `config` (key aliases resolved, as deploy/ says)."""
    keys = [instance.kms_key_id for instance in config.rds.instances]
    return render(
        load_template("pipeline-policy"),
        config,
        account_id=LOCAL_ACCOUNT_ID,
        kms_key_arns=kms_key_arns(admin, keys),
    )


def kms_key_arns(admin: AwsClients, key_ids: list[str]) -> list[str]:
    return sorted({admin.kms.describe_key(KeyId=k)["KeyMetadata"]["Arn"] for k in key_ids})


@pytest.fixture(scope="module")
def pipeline_policy(admin: AwsClients, config: PipelineConfig) -> dict[str, Any]:
    return rendered_policy(admin, config)


@pytest.fixture
def principal(
    admin: AwsClients, pipeline_policy: dict[str, Any], export_role_policy: dict[str, Any]
) -> Iterator[str]:
    """A user holding exactly the pipeline policy; the pipeline signs with its keys."""
    name = "export-pipeline-" + uuid.uuid4().hex[:8]
    keys = policy_bound_user(admin.iam, name, pipeline_policy)
    previous = {var: os.environ.get(var) for var in (LOCAL_ACCESS_KEY_ENV, LOCAL_SECRET_KEY_ENV)}
    os.environ[LOCAL_ACCESS_KEY_ENV] = keys.access_key_id
    os.environ[LOCAL_SECRET_KEY_ENV] = keys.secret_access_key
    try:
        yield name
    finally:
        restore_environment(previous)


def run_dynamodb(config: PipelineConfig, instance: DagsterInstance, **options: Any) -> Any:
    """The DynamoDB helpers' run, signing with the process's keys (the `principal`'s)."""
    return _pipeline_helpers.run(config, instance, resources=build_resources(config), **options)


def run_rds(config: PipelineConfig, instance: DagsterInstance, **options: Any) -> Any:
    """The RDS helpers' run, signing with the process's keys (the `principal`'s)."""
    return rds.run_rds(config, instance, resources=build_resources(config), **options)


def one_table(config: PipelineConfig, name: str) -> PipelineConfig:
    """`config` running only DynamoDB table `name` (the policy stays the whole config's)."""
    tables = [t for t in config.dynamodb.tables if t.name == name]
    return config.model_copy(
        update={"dynamodb": config.dynamodb.model_copy(update={"tables": tables})}
    )


def failure_text(result: Any) -> str:
    return "\n".join(str(e.event_specific_data.error) for e in result.get_step_failure_events())


def without_action(policy: dict[str, Any], action: str) -> dict[str, Any]:
    """`policy` with `action` taken out of every Allow (a statement left empty goes)."""
    reduced = copy.deepcopy(policy)
    statements = []
    for statement in reduced["Statement"]:
        actions = [a for a in statement["Action"] if a != action]
        if actions:
            statements.append({**statement, "Action": actions})
    assert statements != reduced["Statement"], f"{action} is not in the policy"
    return {**reduced, "Statement": statements}


def test_the_pipeline_runs_as_its_least_privilege_principal(
    enforcing_cloud, config, principal, admin
) -> None:
    assert control.status(enforcing_cloud).iam_enforced
    for table in DYNAMODB_TABLES:
        assert run_dynamodb(one_table(config, table), DagsterInstance.ephemeral()).success
    assert run_rds(config, DagsterInstance.ephemeral()).success
    # The same keys are refused anything the policy does not name.
    denied = AwsClients.for_config(
        replace(
            enforcing_cloud,
            aws_access_key_id=os.environ[LOCAL_ACCESS_KEY_ENV],
            aws_secret_access_key=os.environ[LOCAL_SECRET_KEY_ENV],
        ),
        config,
    )
    with pytest.raises(denied.dynamodb.exceptions.ClientError, match="dynamodb:DescribeTable"):
        denied.dynamodb.describe_table(TableName="Customers")


# (source, action): "Products" / "Orders" run that DynamoDB table (full / incremental);
# "rds" runs the instance's newest snapshot, "rds-new" takes a new one first, so
# that the pipeline starts an export instead of reusing the one it made.
@pytest.mark.parametrize(
    ("source", "action"),
    [
        ("Products", "dynamodb:DescribeTable"),
        ("Orders", "dynamodb:DescribeContinuousBackups"),
        ("Products", "dynamodb:ExportTableToPointInTime"),
        ("Products", "dynamodb:DescribeExport"),
        ("Products", "s3:PutObject"),  # DynamoDB writes the export as the caller
        ("Products", "s3:GetObject"),
        ("rds", "rds:DescribeDBSnapshots"),
        ("rds", "rds:DescribeExportTasks"),
        ("rds", "s3:ListBucket"),
        ("rds-new", "rds:StartExportTask"),
        ("rds-new", "iam:PassRole"),
        ("rds-new", "kms:CreateGrant"),
        ("rds-new", "kms:DescribeKey"),
    ],
)
def test_each_action_the_pipeline_needs_is_in_its_policy(
    enforcing_cloud, config, principal, admin, pipeline_policy, source, action
) -> None:
    if source == "rds-new":
        take_automated_snapshot(admin.rds, RDS_INSTANCE)
    set_policy(admin.iam, principal, without_action(pipeline_policy, action))
    if source.startswith("rds"):
        result = run_rds(config, DagsterInstance.ephemeral(), raise_on_error=False)
    else:
        # An export an earlier case left running would be adopted instead of started
        # (the pipeline waits for a running export of the table, whoever started it).
        wait_for_running_exports(admin, source)
        result = run_dynamodb(
            one_table(config, source), DagsterInstance.ephemeral(), raise_on_error=False
        )
    assert not result.success
    assert f"is not authorized to perform: {action}" in failure_text(result)


def wait_for_running_exports(admin: AwsClients, table: str, timeout: float = 60) -> None:
    """Return once no export of `table` is IN_PROGRESS."""
    arn = admin.dynamodb.describe_table(TableName=table)["Table"]["TableArn"]
    deadline = time.monotonic() + timeout
    while any(
        summary["ExportStatus"] == "IN_PROGRESS"
        for summary in admin.dynamodb.list_exports(TableArn=arn)["ExportSummaries"]
    ):
        assert time.monotonic() < deadline, f"an export of {table} is still running"
        time.sleep(0.2)


def team_export_role(admin: AwsClients, bucket: str) -> str:
    """The other team's export role: trusted by RDS exports, writing anywhere in the bucket."""
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
    name = "team-export-" + uuid.uuid4().hex[:8]
    arn = admin.iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
    writes = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:PutObject*", "s3:GetObject*", "s3:DeleteObject*"],
                "Resource": [f"arn:aws:s3:::{bucket}/*"],
            },
            {
                "Effect": "Allow",
                "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
                "Resource": [f"arn:aws:s3:::{bucket}"],
            },
        ],
    }
    admin.iam.put_role_policy(
        RoleName=name, PolicyName="exports", PolicyDocument=json.dumps(writes)
    )
    return arn["Role"]["Arn"]


def test_another_teams_export_is_read_only_where_the_policy_lets_it(
    enforcing_cloud, config, principal, admin, pipeline_policy
) -> None:
    """A Lambda's RDS export at the bucket root: readable once the location is configured.

    Rendered without `aws.readable_s3_locations`, the policy denies the read
    (the pipeline refuses before asking); rendered with it, the pipeline, as
    the policy's user, adopts the Lambda's export and loads it.
    """
    bucket = config.aws.export_bucket
    snapshot = take_automated_snapshot(admin.rds, RDS_INSTANCE)
    theirs = snapshot["DBSnapshotIdentifier"].replace(":", "-")
    admin.rds.start_export_task(  # as the Lambda does it: the snapshot's name, the bucket root
        ExportTaskIdentifier=theirs,
        SourceArn=snapshot["DBSnapshotArn"],
        S3BucketName=bucket,
        IamRoleArn=team_export_role(admin, bucket),
        KmsKeyId=config.rds.instances[0].kms_key_id,
    )
    as_principal = AwsClients.for_config(
        replace(
            enforcing_cloud,
            aws_access_key_id=os.environ[LOCAL_ACCESS_KEY_ENV],
            aws_secret_access_key=os.environ[LOCAL_SECRET_KEY_ENV],
        ),
        config,
    )
    # (moto does not evaluate ListBucket's s3:prefix condition; GetObject's resource it does.)
    with pytest.raises(as_principal.s3.exceptions.ClientError, match="s3:GetObject"):
        as_principal.s3.get_object(Bucket=bucket, Key=f"{theirs}/export_info_{theirs}.json")

    aws = config.aws.model_copy(update={"readable_s3_locations": [f"s3://{bucket}"]})
    readable = config.model_copy(update={"aws": aws})
    set_policy(admin.iam, principal, rendered_policy(admin, readable))
    result = run_rds(readable, DagsterInstance.ephemeral())
    [export] = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key.path[-1] == f"{RDS_INSTANCE}_snapshot_export"
    ]
    assert export.materialization.metadata["export_task_identifier"].value == theirs
    tasks = admin.rds.describe_export_tasks(SourceArn=snapshot["DBSnapshotArn"])["ExportTasks"]
    assert [t["ExportTaskIdentifier"] for t in tasks] == [theirs]


def test_the_export_role_needs_the_write_grant_its_rendered_policy_holds(
    enforcing_cloud, config, principal, admin, export_role_policy
) -> None:
    """RDS writes as the export role: without s3:PutObject* it refuses StartExportTask."""
    take_automated_snapshot(admin.rds, RDS_INSTANCE)
    set_export_role_policy(admin, config, without_action(export_role_policy, "s3:PutObject*"))
    try:
        result = run_rds(config, DagsterInstance.ephemeral(), raise_on_error=False)
    finally:
        set_export_role_policy(admin, config, export_role_policy)
    text = failure_text(result)
    assert "IamRoleMissingPermissions" in text and "s3:PutObject" in text


def test_the_cli_creates_a_user_holding_the_rendered_policy(
    enforcing_cloud, config, capsys
) -> None:
    name = "cli-pipeline-" + uuid.uuid4().hex[:8]
    assert cli.main(["local", "pipeline-user", "--name", name]) == 0
    printed = capsys.readouterr().out.splitlines()
    keys = dict(line.removeprefix("export ").split("=", 1) for line in printed if "=" in line)
    as_user = AwsClients.for_config(
        replace(
            enforcing_cloud,
            aws_access_key_id=keys[LOCAL_ACCESS_KEY_ENV],
            aws_secret_access_key=keys[LOCAL_SECRET_KEY_ENV],
        ),
        config,
    )
    assert as_user.dynamodb.describe_table(TableName="Products")["Table"]["TableName"]
    with pytest.raises(as_user.dynamodb.exceptions.ClientError, match="dynamodb:DescribeTable"):
        as_user.dynamodb.describe_table(TableName="Customers")


def test_the_aurora_postgresql_cluster_path_runs_as_the_principal(
    enforcing_cloud, pipeline_config, principal, admin
) -> None:
    """The demo's Aurora PostgreSQL cluster: cluster snapshots, cluster ARNs, its own policy."""
    [cluster] = [i for i in pipeline_config.rds.instances if i.kind == "cluster"]
    rds = pipeline_config.rds.model_copy(
        update={
            "instances": [cluster.model_copy(update={"export_only": cluster.export_only[:1]})],
            "poll_max_interval_seconds": 0.5,
        }
    )
    config = pipeline_config.model_copy(update={"rds": rds})
    set_policy(admin.iam, principal, rendered_policy(admin, config))
    assert run_rds(config, DagsterInstance.ephemeral(), source=PostgresSource).success
    set_policy(
        admin.iam,
        principal,
        without_action(rendered_policy(admin, config), "rds:DescribeDBClusterSnapshots"),
    )
    result = run_rds(
        config, DagsterInstance.ephemeral(), source=PostgresSource, raise_on_error=False
    )
    assert "is not authorized to perform: rds:DescribeDBClusterSnapshots" in failure_text(result)


def test_without_list_exports_the_dynamodb_run_warns_and_goes_on(
    enforcing_cloud, config, principal, admin, pipeline_policy
) -> None:
    """ListExports only avoids a duplicate export: denied, the run says so and exports."""
    set_policy(admin.iam, principal, without_action(pipeline_policy, "dynamodb:ListExports"))
    instance = DagsterInstance.ephemeral()
    result = run_dynamodb(one_table(config, "Products"), instance)
    assert result.success
    [warning] = [
        entry.user_message
        for entry in instance.all_logs(result.run_id)
        if "cannot list the table's exports" in entry.user_message
    ]
    assert "is not authorized to perform: dynamodb:ListExports" in warning


def test_storage_transfer_reads_s3_only_as_its_role_allows(
    enforcing_cloud: LocalCloudSettings, admin: AwsClients, config: PipelineConfig
) -> None:
    """The role Google's Storage Transfer service agent assumes holds exactly the rendered
    policy (deploy/iam/storage-transfer-role-*.json): it reads the RDS exports, nothing else."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage_transfer

    from export_pipeline.local_cloud import control
    from export_pipeline.local_cloud.storage_transfer_server import service_account
    from export_pipeline.storage_transfer import (
        S3ToGcsTransfer,
        StorageTransferError,
        ensure_transfer,
        job_name,
        wait_for_transfer,
    )

    project = enforcing_cloud.bigquery_project
    name = "st-enforced-" + uuid.uuid4().hex[:8]
    trust = render(
        load_template("storage-transfer-role-trust"),
        config,
        google_subject_id=service_account(project)["subjectId"],
    )
    role = admin.iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
    bucket = config.aws.export_bucket
    inside = f"{config.aws.export_prefix}/rds/{name}/"  # where RDS exports land
    outside = f"{name}-elsewhere/"
    for prefix in (inside, outside):
        admin.s3.put_object(Bucket=bucket, Key=f"{prefix}part-1.parquet", Body=b"PAR1 data PAR1")
    sink = control.gcs_client(enforcing_cloud)
    sink.create_bucket(name)
    sink.close()
    client = storage_transfer.StorageTransferServiceClient(
        transport="rest",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": enforcing_cloud.storage_transfer_endpoint},
    )

    def transfer(attempt: str, path: str) -> None:
        job = S3ToGcsTransfer(
            job_name=job_name(name, attempt),
            project_id=project,
            source_bucket=bucket,
            source_path=path,
            role_arn=role["Role"]["Arn"],
            sink_bucket=name,
            sink_path=f"{attempt}/",
            description="enforced IAM",
        )
        wait_for_transfer(
            client,
            ensure_transfer(client, job).operation_name,
            what=name,
            max_interval_seconds=0.2,
            timeout_seconds=60,
        )

    # Trusting Google is not enough: without its policy S3 refuses the role.
    with pytest.raises(StorageTransferError, match=r"PERMISSION_DENIED x1 at s3://.*AccessDenied"):
        transfer("no-policy", inside)
    policy = render(
        load_template("storage-transfer-role-policy"),
        config,
        kms_key_arns=kms_key_arns(admin, [i.kms_key_id for i in config.rds.instances]),
    )
    admin.iam.put_role_policy(
        RoleName=name, PolicyName="read-rds-exports", PolicyDocument=json.dumps(policy)
    )
    transfer("exports", inside)
    with pytest.raises(StorageTransferError, match=r"PERMISSION_DENIED x1 at s3://.*AccessDenied"):
        transfer("elsewhere", outside)  # the rendered policy reads the RDS exports only
    # A job that carries an AWS key instead of a role: keys S3 does not know are refused.
    keyed = {
        "name": job_name(name, "unknown-key"),
        "project_id": project,
        "status": "ENABLED",
        "transfer_spec": {
            "aws_s3_data_source": {
                "bucket_name": bucket,
                "path": inside,
                "aws_access_key": {
                    "access_key_id": "AKIAUNKNOWNKEY000000",
                    "secret_access_key": "not-a-key",
                },
            },
            "gcs_data_sink": {"bucket_name": name, "path": "keyed/"},
        },
    }
    created = client.create_transfer_job(request={"transfer_job": keyed})
    # Input only, as Google documents secretAccessKey: never in an answer.
    assert created.transfer_spec.aws_s3_data_source.aws_access_key.secret_access_key == ""
    assert created.transfer_spec.aws_s3_data_source.aws_access_key.access_key_id
    run = client.run_transfer_job(request={"job_name": keyed["name"], "project_id": project})
    with pytest.raises(StorageTransferError, match=r"PERMISSION_DENIED x1 at s3://"):
        wait_for_transfer(
            client, run.operation.name, what=name, max_interval_seconds=0.2, timeout_seconds=60
        )
