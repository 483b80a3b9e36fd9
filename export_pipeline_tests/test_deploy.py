"""The IAM policies in deploy/ grant what the code calls, and nothing else.

The AWS calls are found by reading the package's source (AST): every call
`<receiver>.<operation>(…)` whose receiver is a boto3 DynamoDB, S3 or RDS
client, plus `get_paginator("<operation>")`. The receiver's service comes from
how the name was bound (`with rds.get_rds_client() as client`,
`s3_client = s3.get_client()` with `s3: S3Resource`, an annotation such as
`client: bigquery.Client`) or, for client parameters typed `Any`, from the
project's naming convention (`s3`, `ddb`/`dynamodb`, `rds`). A call that has
an AWS operation's name on a receiver the scanner cannot place fails the test:
give the receiver a conventional name or an annotation.
"""

from __future__ import annotations

import ast
import fnmatch
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import botocore.session
import pytest
from botocore import xform_name

from export_pipeline.config import DEFAULT_CONFIG_PATH, REPO_ROOT, PipelineConfig, load_config
from export_pipeline.iam_policies import PolicyRenderError, load_template, render

PACKAGE = REPO_ROOT / "export_pipeline"
# Not the pipeline's production role: the embedded local cloud (emulator, demo
# seeders and its control CLI) and this renderer.
EXCLUDED = [PACKAGE / "local_cloud", PACKAGE / "cli.py", PACKAGE / "iam_policies.py"]
SERVICES = {"dynamodb": "dynamodb", "s3": "s3", "rds": "rds"}
FAKE_KEY_ARN = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"

# IAM action for an API operation, where the two differ (S3's list/head calls).
ACTION_OVERRIDES = {
    "s3:ListObjectsV2": "s3:ListBucket",
    "s3:ListObjects": "s3:ListBucket",
    "s3:HeadObject": "s3:GetObject",
    "s3:HeadBucket": "s3:ListBucket",
}
# boto3's S3 transfer helpers are not API operations; what they call.
S3_TRANSFER_METHODS = {
    "download_file": "s3:GetObject",
    "download_fileobj": "s3:GetObject",
    "upload_file": "s3:PutObject",
    "upload_fileobj": "s3:PutObject",
}
# Granted although the code never calls them itself, and why.
DOCUMENTED_EXTRAS = {
    # ExportTableToPointInTime writes the export as the CALLER: AWS's "Requesting a
    # table export" names s3:AbortMultipartUpload, s3:PutObject, s3:PutObjectAcl.
    "s3:PutObject": "DynamoDB export writes as the caller",
    "s3:AbortMultipartUpload": "DynamoDB export writes as the caller",
    "s3:PutObjectAcl": "DynamoDB export writes as the caller",
    # StartExportTask hands the export role to export.rds.amazonaws.com.
    "iam:PassRole": "StartExportTask passes the export role",
    # StartExportTask: "the caller of this operation must be authorized to execute"
    # these KMS operations on KmsKeyId; reading the SSE-KMS Parquet needs Decrypt.
    "kms:DescribeKey": "StartExportTask KMS requirement",
    "kms:Encrypt": "StartExportTask KMS requirement",
    "kms:Decrypt": "StartExportTask KMS requirement; reading SSE-KMS export files",
    "kms:ReEncryptFrom": "StartExportTask KMS requirement",
    "kms:ReEncryptTo": "StartExportTask KMS requirement",
    "kms:GenerateDataKey": "StartExportTask KMS requirement",
    "kms:GenerateDataKeyWithoutPlaintext": "StartExportTask KMS requirement",
    "kms:CreateGrant": "StartExportTask KMS requirement (grant for RDS only)",
    "kms:RetireGrant": "StartExportTask KMS requirement (grant for RDS only)",
}
_CONVENTION = {
    "s3": "s3",
    "s3_client": "s3",
    "ddb": "dynamodb",
    "dynamodb": "dynamodb",
    "ddb_client": "dynamodb",
    "dynamodb_client": "dynamodb",
    "rds": "rds",
    "rds_client": "rds",
    "bq": "bigquery",
    "bigquery": "bigquery",
    "bq_client": "bigquery",
    "bigquery_client": "bigquery",
}
_ANNOTATIONS = {
    "bigquery.Client": "bigquery",
    "BigQueryResource": "bigquery-resource",
    "S3Resource": "s3-resource",
    "RDSResource": "rds-resource",
    "DynamoDBResource": "dynamodb-resource",
}


def _operations() -> dict[str, dict[str, str]]:
    """service -> snake_case method -> API operation name (from botocore's models)."""
    session = botocore.session.get_session()
    found: dict[str, dict[str, str]] = {}
    for service in SERVICES:
        model = session.get_service_model(service)
        found[service] = {xform_name(op): op for op in model.operation_names}
    return found


OPERATIONS = _operations()
ANY_OPERATION = set().union(*OPERATIONS.values()) | set(S3_TRANSFER_METHODS)


@dataclass(frozen=True)
class AwsCall:
    where: str
    service: str
    method: str

    @property
    def action(self) -> str:
        if self.service == "s3" and self.method in S3_TRANSFER_METHODS:
            return S3_TRANSFER_METHODS[self.method]
        action = f"{SERVICES[self.service]}:{OPERATIONS[self.service][self.method]}"
        return ACTION_OVERRIDES.get(action, action)


@dataclass
class ScanResult:
    calls: list[AwsCall]
    unplaced: list[str]


def _annotation_service(annotation: ast.expr | None) -> str | None:
    if annotation is None:
        return None
    text = ast.unparse(annotation)
    for marker, service in _ANNOTATIONS.items():
        if marker in text:
            return service
    return None


class _Scanner(ast.NodeVisitor):
    def __init__(self, source_name: str) -> None:
        self.source_name = source_name
        self.scopes: list[dict[str, str]] = [{}]
        self.strings: list[dict[str, set[str]]] = [{}]
        self.result = ScanResult([], [])

    # --- scopes -----------------------------------------------------------
    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        bindings: dict[str, str] = {}
        arguments = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
        for arg in arguments:
            service = _annotation_service(arg.annotation) or _CONVENTION.get(arg.arg)
            if service:
                bindings[arg.arg] = service
        self.scopes.append(bindings)
        self.strings.append(self._string_bindings(node))
        self._bind_locals(node)
        self.generic_visit(node)
        self.scopes.pop()
        self.strings.pop()

    visit_FunctionDef = _visit_function
    visit_AsyncFunctionDef = _visit_function

    def _lookup(self, name: str) -> str | None:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        return _CONVENTION.get(name)

    def _service_of(self, expr: ast.expr) -> str | None:
        if isinstance(expr, ast.Name):
            return self._lookup(expr.id)
        if isinstance(expr, ast.Attribute):
            return _CONVENTION.get(expr.attr)
        return None

    def _client_from(self, value: ast.expr) -> str | None:
        """The service of the client an expression makes (`x.get_client()`, …)."""
        if not isinstance(value, ast.Call):
            return None
        func = value.func
        literal = [a.value for a in value.args if isinstance(a, ast.Constant)]
        if isinstance(func, ast.Attribute) and func.attr == "get_rds_client":
            return "rds"
        if isinstance(func, ast.Attribute) and func.attr == "get_client":
            owner = self._service_of(func.value) or ""
            return owner.removesuffix("-resource") or None
        if isinstance(func, ast.Attribute) and func.attr == "client" and literal:
            return str(literal[0])
        if isinstance(func, ast.Name) and func.id == "boto3_client" and len(literal) >= 1:
            return str(literal[0])
        return None

    def _bind_locals(self, function: ast.AST) -> None:
        scope = self.scopes[-1]
        for node in _own_nodes(function):
            if isinstance(node, ast.With | ast.AsyncWith):
                for item in node.items:
                    service = self._client_from(item.context_expr)
                    if service and isinstance(item.optional_vars, ast.Name):
                        scope[item.optional_vars.id] = service
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                service = self._client_from(node.value) if node.value else None
                if isinstance(node, ast.AnnAssign):
                    service = service or _annotation_service(node.annotation)
                for target in targets:
                    if service and isinstance(target, ast.Name):
                        scope[target.id] = service

    @staticmethod
    def _string_bindings(function: ast.AST) -> dict[str, set[str]]:
        """Local names assigned string literals (also through tuple unpacking)."""
        found: dict[str, set[str]] = {}
        for node in _own_nodes(function):
            if not isinstance(node, ast.Assign):
                continue
            for target in node.targets:
                pairs: list[tuple[ast.expr, ast.expr]] = []
                if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                    pairs = list(zip(target.elts, node.value.elts, strict=False))
                else:
                    pairs = [(target, node.value)]
                for name, value in pairs:
                    if (
                        isinstance(name, ast.Name)
                        and isinstance(value, ast.Constant)
                        and isinstance(value.value, str)
                    ):
                        found.setdefault(name.id, set()).add(value.value)
        return found

    # --- calls ------------------------------------------------------------
    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute):
            where = f"{self.source_name}:{node.lineno}"
            method = func.attr
            if method in ("get_paginator", "get_waiter"):
                self._paginator(node, where)
            elif method in ANY_OPERATION:
                service = self._service_of(func.value)
                receiver = ast.unparse(func.value)
                if service in OPERATIONS:
                    known = OPERATIONS[service].keys() | (
                        S3_TRANSFER_METHODS.keys() if service == "s3" else set()
                    )
                    if method not in known:
                        self.result.unplaced.append(
                            f"{where}: {receiver}.{method}() is no {service} operation"
                        )
                    else:
                        self.result.calls.append(AwsCall(where, service, method))
                elif service is None:
                    self.result.unplaced.append(
                        f"{where}: {receiver}.{method}() — which client is {receiver!r}?"
                    )
        self.generic_visit(node)

    def _paginator(self, node: ast.Call, where: str) -> None:
        func = node.func
        assert isinstance(func, ast.Attribute)
        service = self._service_of(func.value)
        if service not in OPERATIONS:
            if service is None:
                self.result.unplaced.append(f"{where}: {ast.unparse(func.value)}.{func.attr}")
            return
        if not node.args:
            self.result.unplaced.append(f"{where}: {func.attr}() without an operation")
            return
        argument = node.args[0]
        names: set[str] = set()
        if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
            names = {argument.value}
        elif isinstance(argument, ast.Name):
            for scope in reversed(self.strings):
                if argument.id in scope:
                    names = scope[argument.id]
                    break
        if not names:
            self.result.unplaced.append(f"{where}: cannot tell which operation {func.attr} uses")
        for name in names:
            if name not in OPERATIONS[service]:
                self.result.unplaced.append(f"{where}: {name!r} is no {service} operation")
            else:
                self.result.calls.append(AwsCall(where, service, name))


def _own_nodes(function: ast.AST) -> Iterator[ast.AST]:
    """Nodes of `function`'s body, not descending into nested functions."""
    stack = list(ast.iter_child_nodes(function))
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            stack.extend(ast.iter_child_nodes(node))


def scan_source(text: str, name: str) -> ScanResult:
    scanner = _Scanner(name)
    scanner.visit(ast.parse(text))
    return scanner.result


def scan_package(root: Path = PACKAGE) -> ScanResult:
    total = ScanResult([], [])
    for path in sorted(root.rglob("*.py")):
        if any(path == e or e in path.parents for e in EXCLUDED):
            continue
        found = scan_source(path.read_text(encoding="utf-8"), str(path.relative_to(REPO_ROOT)))
        total.calls.extend(found.calls)
        total.unplaced.extend(found.unplaced)
    return total


def _allowed_actions(policy: dict) -> set[str]:
    allowed: set[str] = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow", statement
        actions = statement["Action"]
        allowed.update([actions] if isinstance(actions, str) else actions)
    return allowed


def _is_allowed(action: str, allowed: set[str]) -> bool:
    return any(fnmatch.fnmatchcase(action.lower(), pattern.lower()) for pattern in allowed)


@pytest.fixture(scope="module")
def demo_config() -> PipelineConfig:
    return load_config(DEFAULT_CONFIG_PATH)


@pytest.fixture(scope="module")
def pipeline_policy(demo_config: PipelineConfig) -> dict:
    return render(load_template("pipeline-policy"), demo_config, kms_key_arns=[FAKE_KEY_ARN])


@pytest.fixture(scope="module")
def package_scan() -> ScanResult:
    return scan_package()


# --- the scanner itself ---------------------------------------------------------

SAMPLE = """
from typing import Any
from google.cloud import bigquery
from dagster_aws.s3 import S3Resource

def export(ddb: Any, table_arn: str):
    ddb.export_table_to_point_in_time(TableArn=table_arn)

def snapshots(rds: Any, cluster: bool):
    if cluster:
        operation, key = "describe_db_cluster_snapshots", "DBClusterSnapshots"
    else:
        operation, key = "describe_db_snapshots", "DBSnapshots"
    return rds.get_paginator(operation)

def asset(s3: S3Resource, rds_resource, client: bigquery.Client):
    s3_client = s3.get_client()
    s3_client.get_object(Bucket="b", Key="k")
    client.query("SELECT 1")
    client.delete_table("x")
    with rds_resource.get_rds_client() as conn:
        conn.cancel_export_task(ExportTaskIdentifier="x")

def mystery(thing):
    thing.delete_object(Bucket="b", Key="k")
"""


def test_scanner_places_calls_by_how_the_client_was_made() -> None:
    found = scan_source(SAMPLE, "sample.py")
    assert {(c.service, c.method) for c in found.calls} == {
        ("dynamodb", "export_table_to_point_in_time"),
        ("rds", "describe_db_cluster_snapshots"),
        ("rds", "describe_db_snapshots"),
        ("s3", "get_object"),
        ("rds", "cancel_export_task"),
    }
    assert {c.action for c in found.calls} == {
        "dynamodb:ExportTableToPointInTime",
        "rds:DescribeDBClusterSnapshots",
        "rds:DescribeDBSnapshots",
        "s3:GetObject",
        "rds:CancelExportTask",
    }
    # BigQuery's client.query / delete_table are not DynamoDB's Query / DeleteTable,
    # and a call on a receiver nobody can place is reported, not guessed.
    assert len(found.unplaced) == 1 and "thing.delete_object" in found.unplaced[0]


def test_scanner_maps_s3_listing_to_list_bucket() -> None:
    found = scan_source(
        "def f(s3):\n    s3.get_paginator('list_objects_v2')\n    s3.head_object()\n", "x.py"
    )
    assert {c.action for c in found.calls} == {"s3:ListBucket", "s3:GetObject"}


# --- the package against the policy ------------------------------------------------


def test_every_aws_call_in_the_package_is_placed(package_scan: ScanResult) -> None:
    assert package_scan.unplaced == []
    # The pipeline's core calls are seen (the scan is not silently empty).
    actions = {c.action for c in package_scan.calls}
    assert {
        "dynamodb:ExportTableToPointInTime",
        "dynamodb:DescribeExport",
        "rds:StartExportTask",
        "rds:DescribeExportTasks",
        "rds:DescribeDBSnapshots",
        "s3:GetObject",
    } <= actions


def test_policy_allows_every_call_the_code_makes(
    package_scan: ScanResult, pipeline_policy: dict
) -> None:
    allowed = _allowed_actions(pipeline_policy)
    denied = sorted(
        {
            f"{c.action} ({c.where})"
            for c in package_scan.calls
            if not _is_allowed(c.action, allowed)
        }
    )
    assert denied == []


def test_policy_grants_nothing_the_code_does_not_use(
    package_scan: ScanResult, pipeline_policy: dict
) -> None:
    used = {c.action for c in package_scan.calls}
    unused = sorted(
        action
        for action in _allowed_actions(pipeline_policy)
        if "*" in action
        or (
            action not in DOCUMENTED_EXTRAS
            and not any(fnmatch.fnmatchcase(u, action) for u in used)
        )
    )
    assert unused == []


def test_policy_names_exactly_the_configured_sources(
    demo_config: PipelineConfig, pipeline_policy: dict
) -> None:
    resources = {
        r
        for s in pipeline_policy["Statement"]
        for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])
    }
    region, account = demo_config.aws.region, "123456789012"
    for table in demo_config.dynamodb.tables:
        assert f"arn:aws:dynamodb:{region}:{account}:table/{table.name}" in resources
    for source in demo_config.rds.instances:
        kind = "cluster" if source.kind == "cluster" else "db"
        assert f"arn:aws:rds:{region}:{account}:{kind}:{source.identifier}" in resources
        assert source.iam_role_arn in resources
    tables = [r for r in resources if ":table/" in r and "/export/" not in r]
    assert len(tables) == len(demo_config.dynamodb.tables)
    # Exactly the configured clusters, never widened.
    clusters = {i.identifier for i in demo_config.rds.instances if i.kind == "cluster"}
    assert {r.rsplit(":", 1)[-1] for r in resources if ":cluster:" in r} == clusters
    # "*" only where RDS offers no resource-level permission.
    wildcard = [s["Sid"] for s in pipeline_policy["Statement"] if "*" in s["Resource"]]
    assert wildcard == ["RdsSnapshotExportTasks"]
    assert all("<" not in json.dumps(s) for s in pipeline_policy["Statement"])


def test_alias_kms_key_needs_the_key_arn(demo_config: PipelineConfig) -> None:
    with pytest.raises(PolicyRenderError, match="alias"):
        render(load_template("pipeline-policy"), demo_config)


def test_rds_export_role_documents(demo_config: PipelineConfig) -> None:
    trust = render(load_template("rds-export-role-trust"), demo_config)
    (statement,) = trust["Statement"]
    assert statement["Principal"] == {"Service": "export.rds.amazonaws.com"}
    assert statement["Action"] == "sts:AssumeRole"
    role = render(load_template("rds-export-role-policy"), demo_config)
    # The actions StartExportTask's documentation requires of the export role.
    assert _allowed_actions(role) == {
        "s3:PutObject*",
        "s3:GetObject*",
        "s3:DeleteObject*",
        "s3:ListBucket",
        "s3:GetBucketLocation",
    }
    objects = role["Statement"][0]["Resource"]
    assert objects == [f"arn:aws:s3:::{demo_config.aws.export_bucket}/exports/rds/*"]


def test_kms_key_policy_snippet(demo_config: PipelineConfig) -> None:
    role = "arn:aws:iam::123456789012:role/export-pipeline"
    snippet = render(load_template("kms-key-policy-snippet"), demo_config, pipeline_role_arn=role)
    granted = _allowed_actions(snippet)
    assert {"kms:CreateGrant", "kms:DescribeKey", "kms:Decrypt"} <= granted
    assert granted <= set(DOCUMENTED_EXTRAS)
    assert all(s["Principal"] == {"AWS": role} for s in snippet["Statement"])


def test_documents_are_accepted_by_an_iam_endpoint(
    aws_clients, unique_name: str, pipeline_policy: dict, demo_config: PipelineConfig
) -> None:
    """moto's IAM validates policy grammar (versions, actions, ARNs, conditions) like IAM."""
    aws_clients.iam.create_policy(
        PolicyName=f"{unique_name}-pipeline", PolicyDocument=json.dumps(pipeline_policy)
    )
    trust = render(load_template("rds-export-role-trust"), demo_config)
    aws_clients.iam.create_role(
        RoleName=f"{unique_name}-export", AssumeRolePolicyDocument=json.dumps(trust)
    )
    role_policy = render(load_template("rds-export-role-policy"), demo_config)
    aws_clients.iam.put_role_policy(
        RoleName=f"{unique_name}-export",
        PolicyName="export",
        PolicyDocument=json.dumps(role_policy),
    )
    broken = json.loads(json.dumps(pipeline_policy))
    broken["Statement"][0]["Action"] = ["ExportTableToPointInTime"]  # no service prefix
    with pytest.raises(aws_clients.iam.exceptions.MalformedPolicyDocumentException):
        aws_clients.iam.create_policy(
            PolicyName=f"{unique_name}-broken", PolicyDocument=json.dumps(broken)
        )


def test_readable_locations_are_granted_read_and_list_and_nothing_else(
    demo_config: PipelineConfig, pipeline_policy: dict
) -> None:
    # Without extra locations the statements are dropped, not widened.
    assert not [s for s in pipeline_policy["Statement"] if "Elsewhere" in s["Sid"]]
    extra = ["s3://team-exports", "s3://team-exports/2020-Nov/"]
    config = demo_config.model_copy(
        update={"aws": demo_config.aws.model_copy(update={"readable_s3_locations": extra})}
    )
    policy = render(load_template("pipeline-policy"), config, kms_key_arns=[FAKE_KEY_ARN])
    by_sid = {s["Sid"]: s for s in policy["Statement"] if "Elsewhere" in s["Sid"]}
    assert by_sid["ReadExportsMadeElsewhere"]["Resource"] == [
        "arn:aws:s3:::team-exports/*",
        "arn:aws:s3:::team-exports/2020-Nov/*",
    ]
    assert by_sid["ReadExportsMadeElsewhere"]["Action"] == ["s3:GetObject"]
    assert by_sid["ListExportsMadeElsewhere1"]["Resource"] == ["arn:aws:s3:::team-exports"]
    assert by_sid["ListExportsMadeElsewhere1"]["Condition"]["StringLike"]["s3:prefix"] == ["*"]
    assert by_sid["ListExportsMadeElsewhere2"]["Condition"]["StringLike"]["s3:prefix"] == [
        "2020-Nov/*"
    ]
    assert set(by_sid) == {
        "ReadExportsMadeElsewhere",
        "ListExportsMadeElsewhere1",
        "ListExportsMadeElsewhere2",
    }
