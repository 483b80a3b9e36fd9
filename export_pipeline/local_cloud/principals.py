"""IAM users bound to one policy document, for running as someone other than the administrator.

With IAM enforced (`iam_enforcement`), the local cloud's own keys may do
everything; to see what a least-privilege policy allows, the pipeline must
sign with the keys of a principal that holds exactly that policy. These are
ordinary IAM calls (CreateUser, PutUserPolicy, CreateAccessKey), made with
the administrator's clients: they work the same against AWS.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from export_pipeline.local_cloud.clients import AwsClients
from export_pipeline.local_cloud.settings import LocalCloudSettings

POLICY_NAME = "policy-under-test"


@dataclass(frozen=True)
class AccessKeyPair:
    access_key_id: str
    secret_access_key: str


def policy_bound_user(iam: Any, user_name: str, policy: dict[str, Any]) -> AccessKeyPair:
    """Create `user_name` holding only `policy` (inline); return a fresh access key of it."""
    iam.create_user(UserName=user_name)
    set_policy(iam, user_name, policy)
    key = iam.create_access_key(UserName=user_name)["AccessKey"]
    return AccessKeyPair(key["AccessKeyId"], key["SecretAccessKey"])


def set_policy(iam: Any, user_name: str, policy: dict[str, Any]) -> None:
    """Replace the user's one policy; the next request is checked against it."""
    iam.put_user_policy(
        UserName=user_name, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(policy)
    )


def create_policy_bound_user(
    settings: LocalCloudSettings, region: str, user_name: str, policy: dict[str, Any]
) -> AccessKeyPair:
    """`policy_bound_user` in the local cloud of `settings`, made with its administrator's keys."""
    return policy_bound_user(AwsClients.create(settings, region).iam, user_name, policy)


def kms_key_arns(settings: LocalCloudSettings, region: str, key_ids: Iterable[str]) -> list[str]:
    """The ARNs of keys named by id, ARN or alias (IAM policies need ARNs), sorted."""
    kms = AwsClients.create(settings, region).kms
    return sorted({kms.describe_key(KeyId=key)["KeyMetadata"]["Arn"] for key in key_ids})
