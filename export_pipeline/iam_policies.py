"""Least-privilege IAM policies for a configuration, from the templates in `deploy/`.

The templates name resources with `<PLACEHOLDERS>`. Scalars (`<REGION>`,
`<ACCOUNT_ID>`, `<EXPORT_BUCKET>`, `<EXPORT_PREFIX>`, `<PIPELINE_ROLE_ARN>`)
are replaced in place; a Resource entry holding a per-source placeholder
(`<DYNAMODB_TABLE>`, `<RDS_INSTANCE>`, `<RDS_CLUSTER>`, `<RDS_EXPORT_ROLE_ARN>`,
`<RDS_KMS_KEY_ARN>`, `<READABLE_OBJECTS>`) becomes one entry per configured
source, a statement holding `<READABLE_BUCKET>` / `<READABLE_PREFIX>` becomes
one statement per entry of `aws.readable_s3_locations` (its prefix condition
is per bucket), and a statement left with no resource is dropped — so the
rendered policy grants exactly the tables, instances, role, key and extra
export locations that `pipeline.yaml` names, nothing wider.

    python -m export_pipeline.iam_policies pipeline-policy [--account-id 123456789012]
    python -m export_pipeline.iam_policies kms-key-policy-snippet --pipeline-role-arn ARN

Why a renderer and not hand-edited JSON: adding a table to the configuration
must add it to the policy too, or the first export fails with AccessDenied;
`export_pipeline_tests/test_deploy.py` checks the rendered policy against the
configuration and against the AWS calls the code makes.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path
from typing import Any

from export_pipeline.config import PipelineConfig, load_config
from export_pipeline.s3_locations import S3Location, parse_s3_location

DEPLOY_DIR = Path(__file__).resolve().parent.parent / "deploy"
TEMPLATES = {
    "pipeline-policy": DEPLOY_DIR / "iam" / "pipeline-policy.json",
    "rds-export-role-policy": DEPLOY_DIR / "iam" / "rds-export-role-policy.json",
    "rds-export-role-trust": DEPLOY_DIR / "iam" / "rds-export-role-trust.json",
    "kms-key-policy-snippet": DEPLOY_DIR / "kms-key-policy-snippet.json",
    # The role Google's Storage Transfer service agent assumes (rds.transfer: storage_transfer).
    "storage-transfer-role-trust": DEPLOY_DIR / "iam" / "storage-transfer-role-trust.json",
    "storage-transfer-role-policy": DEPLOY_DIR / "iam" / "storage-transfer-role-policy.json",
}
_PLACEHOLDER = re.compile(r"<[A-Z_]+>")
_KMS_KEY_ARN = re.compile(r"^arn:aws[a-z\-]*:kms:[a-z0-9\-]+:\d{12}:key/[\w\-]+$")
_KMS_KEY_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class PolicyRenderError(ValueError):
    """The configuration or the arguments cannot fill a template; the message says which."""


def account_id_for(config: PipelineConfig, account_id: str | None = None) -> str:
    """The account: given, `aws.account_id`, or the one in the RDS export role ARNs."""
    if account_id:
        return account_id
    if config.aws.account_id:
        return config.aws.account_id
    accounts = {i.iam_role_arn.split(":")[4] for i in config.rds.instances}
    if len(accounts) == 1:
        return accounts.pop()
    raise PolicyRenderError(
        "cannot tell the AWS account id: give --account-id or set aws.account_id"
    )


def kms_key_arn(value: str, region: str, account_id: str) -> str:
    """A key ARN for `rds.instances[].kms_key_id`; aliases cannot name a key in IAM."""
    if _KMS_KEY_ARN.match(value):
        return value
    if _KMS_KEY_ID.match(value):
        return f"arn:aws:kms:{region}:{account_id}:key/{value}"
    raise PolicyRenderError(
        f"kms_key_id {value!r}: IAM policies need the key ARN or key id, not an alias "
        "(look it up with `aws kms describe-key --key-id <alias>`) — give it with --kms-key-arn"
    )


def _per_source_values(
    config: PipelineConfig,
    account_id: str,
    kms_key_arns: list[str] | None,
    *,
    needs_kms_key: bool,
) -> dict[str, list[str]]:
    region = config.aws.region
    values = {
        "<DYNAMODB_TABLE>": [t.name for t in config.dynamodb.tables],
        "<RDS_INSTANCE>": [i.identifier for i in config.rds.instances if i.kind == "instance"],
        "<RDS_CLUSTER>": [i.identifier for i in config.rds.instances if i.kind == "cluster"],
        "<RDS_EXPORT_ROLE_ARN>": sorted({i.iam_role_arn for i in config.rds.instances}),
        "<READABLE_OBJECTS>": [
            f"{location.bucket}/{location.prefix}/*" if location.prefix else f"{location.bucket}/*"
            for location in _extra_locations(config)
        ],
    }
    if needs_kms_key:
        values["<RDS_KMS_KEY_ARN>"] = sorted(
            set(kms_key_arns)
            if kms_key_arns is not None
            else {kms_key_arn(i.kms_key_id, region, account_id) for i in config.rds.instances}
        )
    return values


def _extra_locations(config: PipelineConfig) -> list[S3Location]:
    return [parse_s3_location(entry) for entry in config.aws.readable_s3_locations]


def _per_location(statement: dict[str, Any], config: PipelineConfig) -> list[dict[str, Any]]:
    """One copy of `statement` per extra readable location (none when there are none)."""
    copies = []
    for number, location in enumerate(_extra_locations(config), start=1):
        scalars = {
            "<READABLE_BUCKET>": location.bucket,
            "<READABLE_PREFIX>": f"{location.prefix}/" if location.prefix else "",
        }
        filled = json.loads(_fill_some(json.dumps(statement), scalars))
        if "Sid" in filled:
            filled["Sid"] = f"{filled['Sid']}{number}"
        copies.append(filled)
    return copies


def _fill_some(text: str, scalars: dict[str, str]) -> str:
    for placeholder, replacement in scalars.items():
        text = text.replace(placeholder, json.dumps(replacement)[1:-1])
    return text


def _scalar_values(
    config: PipelineConfig,
    account_id: str,
    pipeline_role_arn: str | None,
    google_subject_id: str | None = None,
) -> dict[str, str]:
    prefix = config.aws.export_prefix
    values = {
        "<REGION>": config.aws.region,
        "<ACCOUNT_ID>": account_id,
        "<EXPORT_BUCKET>": config.aws.export_bucket,
        # Empty prefix: keys start at the bucket root (`dynamodb/…`, `rds/…`).
        "<EXPORT_PREFIX>": f"{prefix}/" if prefix else "",
    }
    if pipeline_role_arn:
        values["<PIPELINE_ROLE_ARN>"] = pipeline_role_arn
    if google_subject_id:
        values["<GOOGLE_SUBJECT_ID>"] = google_subject_id
    return values


def _fill(value: Any, scalars: dict[str, str]) -> Any:
    if isinstance(value, str):
        for placeholder, replacement in scalars.items():
            value = value.replace(placeholder, replacement)
        left = _PLACEHOLDER.findall(value)
        if left:
            raise PolicyRenderError(f"no value for {left} in {value!r}")
        return value
    if isinstance(value, list):
        return [_fill(v, scalars) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, scalars) for k, v in value.items()}
    return value


def _expand(resource: str, per_source: dict[str, list[str]]) -> list[str]:
    expanded = [resource]
    for placeholder, values in per_source.items():
        expanded = (
            [r.replace(placeholder, v) for r in expanded for v in values]
            if any(placeholder in r for r in expanded)
            else expanded
        )
    return expanded


def render(
    template: dict[str, Any],
    config: PipelineConfig,
    *,
    account_id: str | None = None,
    pipeline_role_arn: str | None = None,
    kms_key_arns: list[str] | None = None,
    google_subject_id: str | None = None,
) -> dict[str, Any]:
    """`template` with every placeholder filled from `config`; unused statements dropped.

    `google_subject_id`: the `subjectId` of the project's Storage Transfer service
    agent (`googleServiceAccounts.get`), which the storage-transfer role trusts.
    """
    if "<GOOGLE_SUBJECT_ID>" in json.dumps(template) and not google_subject_id:
        raise PolicyRenderError(
            "--google-subject-id is needed: the subjectId of the project's Storage Transfer "
            "service agent (googleServiceAccounts.get; deploy/storage-transfer.md)"
        )
    account = account_id_for(config, account_id)
    per_source = _per_source_values(
        config, account, kms_key_arns, needs_kms_key="<RDS_KMS_KEY_ARN>" in json.dumps(template)
    )
    scalars = _scalar_values(config, account, pipeline_role_arn, google_subject_id)
    rendered = copy.deepcopy(template)
    statements = []
    expanded_statements = []
    for statement in rendered.get("Statement", []):
        if "<READABLE_BUCKET>" in json.dumps(statement):
            expanded_statements += _per_location(statement, config)
        else:
            expanded_statements.append(statement)
    for statement in expanded_statements:
        resources = statement.get("Resource")
        if isinstance(resources, list):
            expanded = [e for r in resources for e in _expand(r, per_source)]
            if not expanded:
                continue
            statement["Resource"] = expanded
        statements.append(_fill(statement, scalars))
    rendered["Statement"] = statements
    return _fill(rendered, scalars)


def storage_transfer_trust_policy(google_subject_id: str) -> dict[str, Any]:
    """The trust policy of the role Storage Transfer assumes, for one service agent.

    The `storage-transfer-role-trust` template with only its subject filled:
    it depends on no other setting, so callers without a pipeline
    configuration (the local cloud's demo seeding) use the same document.
    """
    return _fill(
        load_template("storage-transfer-role-trust"), {"<GOOGLE_SUBJECT_ID>": google_subject_id}
    )


def load_template(name: str) -> dict[str, Any]:
    try:
        path = TEMPLATES[name]
    except KeyError:
        raise PolicyRenderError(f"unknown policy {name!r}; one of {sorted(TEMPLATES)}") from None
    return json.loads(path.read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m export_pipeline.iam_policies",
        description="Print an IAM policy for the configuration (see deploy/README.md).",
    )
    parser.add_argument("policy", choices=sorted(TEMPLATES))
    parser.add_argument("--config", type=Path, help="configuration file (default: pipeline.yaml)")
    parser.add_argument("--account-id")
    parser.add_argument("--pipeline-role-arn", help="role the pipeline runs as (key policy)")
    parser.add_argument(
        "--kms-key-arn", action="append", help="export key ARN(s), when the config has an alias"
    )
    parser.add_argument(
        "--google-subject-id",
        help="subjectId of the Storage Transfer service agent (storage-transfer-role-trust)",
    )
    args = parser.parse_args(argv)
    try:
        policy = render(
            load_template(args.policy),
            load_config(args.config),
            account_id=args.account_id,
            pipeline_role_arn=args.pipeline_role_arn,
            kms_key_arns=args.kms_key_arn,
            google_subject_id=args.google_subject_id,
        )
    except PolicyRenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    json.dump(policy, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
