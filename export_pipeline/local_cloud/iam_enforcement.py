"""IAM enforcement in the local AWS server: moto's access control, with AWS's resources.

On AWS every call is checked against the caller's IAM policies; a cloud that
checks nothing cannot show that the rendered least-privilege policy misses an
action. moto has the checker: with `moto.settings.INITIAL_NO_AUTH_ACTION_COUNT`
at 0, every request's SigV4 signature is verified and the caller's identity
policies (an IAM user's inline, attached and group policies; an assumed
role's inline and attached ones) are evaluated for the request's action
(`iam/access_control.py`). `enable()` switches it on in the server process,
with these additions, each because moto alone would not be like AWS:

* The local cloud's own fixed credentials (`settings.LOCAL_AWS_ACCESS_KEY_ID`)
  belong to an IAM user with every permission, so seeding, the CLI and test
  set-up work as an account administrator's do; everything else (the
  pipeline's principal) signs with keys of a user holding its own policies.
* moto asks about resource "*" for every service but S3, so a statement
  scoped to a table or DB instance would never allow anything. The resource
  of the DynamoDB and RDS calls the pipeline makes is resolved here from the
  request (`_RESOURCES`), as the Service Authorization Reference names it.
* `StartExportTask` also needs `iam:PassRole` on the export role and
  `kms:CreateGrant` / `kms:DescribeKey` on the export key (RDS user guide,
  "Setting up access to an S3 bucket" and "Using AWS KMS keys"), and
  `ExportTableToPointInTime` needs `s3:PutObject` where the export writes,
  because DynamoDB writes as the caller ("Requesting a table export in
  DynamoDB"). They are checked as the caller with moto's evaluator when the
  call is made. AWS documents the permissions, not when a missing one is
  reported; here it is the call that is refused, naming the action.
* RDS writes an export as the export role: `export_role_refusal` evaluates
  the role's policies for the RDS export emulation, which refuses
  StartExportTask with `IamRoleMissingPermissions` as AWS does.

What moto's evaluator ignores (docs/local-cloud.md lists it for users):
conditions other than StringEquals (so `s3:prefix` StringLike and Bool
conditions always pass), resource-based policies (bucket and KMS key
policies), permission boundaries, SCPs and session policies. A presigned S3
URL's caller is checked, its signature and expiry are not.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

ADMIN_USER = "local-cloud-admin"
_ALLOW_EVERYTHING = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}
# S3 operations whose IAM action has another name (Service Authorization Reference).
_S3_ACTIONS = {
    "ListObjectsV2": "ListBucket",
    "ListObjects": "ListBucket",
    "HeadBucket": "ListBucket",
    "ListObjectVersions": "ListBucketVersions",
    "HeadObject": "GetObject",
    "CreateMultipartUpload": "PutObject",
    "UploadPart": "PutObject",
    "UploadPartCopy": "PutObject",
    "CompleteMultipartUpload": "PutObject",
    "CopyObject": "PutObject",
    "DeleteObjects": "DeleteObject",
    "ListMultipartUploads": "ListBucketMultipartUploads",
    "ListBuckets": "ListAllMyBuckets",
}
_JSON_SERVICES = frozenset({"dynamodb", "kms"})
# Calls AWS accepts without a signature (STS API reference): checked against the
# role's trust policy, not against a caller's IAM policies.
_UNSIGNED_ACTIONS = frozenset({("sts", "AssumeRoleWithWebIdentity"), ("sts", "AssumeRoleWithSAML")})
_installed: dict[str, bool] = {"resources": False}

_log = logging.getLogger(__name__)

# action -> [(request parameter, ARN of the resource it names)]; the first present wins.
_RESOURCES: dict[str, dict[str, list[tuple[str, str]]]] = {
    "dynamodb": {
        "*": [
            ("ExportArn", "{value}"),
            ("TableArn", "{value}"),
            ("TableName", "arn:aws:dynamodb:{region}:{account}:table/{value}"),
        ],
    },
    "rds": {
        "DescribeDBSnapshots": [
            ("DBSnapshotIdentifier", "arn:aws:rds:{region}:{account}:snapshot:{value}"),
            ("DBInstanceIdentifier", "arn:aws:rds:{region}:{account}:db:{value}"),
        ],
        "DescribeDBInstances": [
            ("DBInstanceIdentifier", "arn:aws:rds:{region}:{account}:db:{value}"),
        ],
        "DescribeDBClusterSnapshots": [
            (
                "DBClusterSnapshotIdentifier",
                "arn:aws:rds:{region}:{account}:cluster-snapshot:{value}",
            ),
            ("DBClusterIdentifier", "arn:aws:rds:{region}:{account}:cluster:{value}"),
        ],
        "DescribeDBClusters": [
            ("DBClusterIdentifier", "arn:aws:rds:{region}:{account}:cluster:{value}"),
        ],
    },
}


def request_resource(
    service: str, action: str, param: Callable[[str], Any], where: dict[str, str]
) -> str:
    """The ARN AWS authorizes `service`:`action` against, or "*" when the request names none.

    `param(name)` reads a request parameter; `where` holds `region` and `account`.
    A parameter that already is an ARN is taken as it is.
    """
    rules = _RESOURCES.get(service, {})
    for name, template in rules.get(action, rules.get("*", [])):
        value = param(name)
        if isinstance(value, str) and value:
            return value if value.startswith("arn:") else template.format(value=value, **where)
    return "*"


def _implied_permissions(handler: Any, action: str) -> list[tuple[str, str]]:
    """(action, resource) pairs AWS checks besides the call's own action."""
    if handler.service_name == "dynamodb" and action == "ExportTableToPointInTime":
        return [("s3:PutObject", export_object_arn(handler._get_param))]
    if handler.service_name != "rds" or action != "StartExportTask":
        return []
    implied = []
    role = handler._get_param("IamRoleArn")
    if role:
        implied.append(("iam:PassRole", role))
    key = _kms_key_arn(handler.current_account, handler.region, handler._get_param("KmsKeyId"))
    if key:
        implied += [("kms:CreateGrant", key), ("kms:DescribeKey", key)]
    return implied


def export_object_arn(param: Callable[[str], Any]) -> str:
    """An object a DynamoDB export writes: `<bucket>/<prefix>/AWSDynamoDB/…` (as the caller)."""
    prefix = (param("S3Prefix") or "").strip("/")
    folder = f"{prefix}/AWSDynamoDB" if prefix else "AWSDynamoDB"
    return f"arn:aws:s3:::{param('S3Bucket')}/{folder}/manifest-summary.json"


def export_role_refusal(account: str, role_arn: str, bucket: str, prefix: str) -> str | None:
    """Why the export role may not write an RDS export there; None if it may (or IAM is off).

    RDS writes the export as the role it is handed and refuses StartExportTask
    with `IamRoleMissingPermissions` when the role may not ("Setting up
    access to an Amazon S3 bucket"). With IAM enforced, the role's own
    identity policies are evaluated with moto's evaluator: `s3:PutObject`
    under the export's prefix and `s3:ListBucket` on the bucket.
    """
    if not _installed["resources"] or not _enforcing():
        return None
    from moto.iam.access_control import IAMPolicy, PermissionResult
    from moto.iam.models import iam_backends

    try:
        role = iam_backends[account]["aws"].get_role_by_arn(role_arn)
    except Exception:  # no such role: StartExportTask's own validation reports it
        return None
    documents = list(role.policies.values()) + list(role.managed_policies.values())
    folder = prefix.strip("/")
    needed = [
        ("s3:PutObject", f"arn:aws:s3:::{bucket}/{folder + '/' if folder else ''}export/x"),
        ("s3:ListBucket", f"arn:aws:s3:::{bucket}"),
    ]
    for action, resource in needed:
        results = [IAMPolicy(d).is_action_permitted(action, resource) for d in documents]
        if PermissionResult.DENIED in results or PermissionResult.PERMITTED not in results:
            return f"The IAM role {role_arn} is not allowed {action} on {resource}."
    return None


def _kms_key_arn(account: str, region: str, key_id: str | None) -> str | None:
    """The key ARN for an id, ARN or alias; None when moto knows no such key (RDS says so)."""
    if not key_id:
        return None
    from moto.kms.models import kms_backends

    try:
        return kms_backends[account][region].describe_key(key_id).arn
    except Exception:  # an unknown key: StartExportTask's own validation reports it
        return None


def _enforcing() -> bool:
    from moto import settings as moto_settings
    from moto.core.authorization import ActionAuthenticatorMixin

    return ActionAuthenticatorMixin.request_count >= moto_settings.INITIAL_NO_AUTH_ACTION_COUNT


def _install_resources() -> None:
    """Give moto's checker the request's resource and check the implied permissions."""
    if _installed["resources"]:
        return
    from moto.core.responses import BaseResponse
    from moto.iam.access_control import IAMRequest

    original = BaseResponse._authenticate_and_authorize_normal_action

    def authorize(self: Any, resource: str = "*") -> None:
        action = self._get_action()
        if (self.service_name, action) in _UNSIGNED_ACTIONS:
            return  # the caller holds no AWS credentials: the token and the trust policy decide
        if resource == "*":
            resource = request_resource(
                self.service_name,
                action,
                self._get_param,
                {"region": self.region, "account": self.current_account},
            )
        original(self, resource)
        if not _enforcing():
            return
        for implied_action, implied_resource in _implied_permissions(self, action):
            query = urlparse(self.uri).query
            request = IAMRequest(
                account_id=self.current_account,
                method=self.method,
                path=self.raw_path + (f"?{query}" if query else ""),
                data=self.data,
                body=self.raw_body,
                headers=self.headers,
                action=action,
            )
            request._action = implied_action
            request.check_action_permitted(implied_resource)

    BaseResponse._authenticate_and_authorize_normal_action = authorize  # type: ignore[method-assign]

    _install_denials()
    _installed["resources"] = True


def _denial(principal: str, action: str, resource: str) -> str:
    """AWS's message for a same-account denial: principal, action and resource named."""
    return (
        f"User: {principal} is not authorized to perform: {action} on resource: {resource} "
        f"because no identity-based policy allows the {action} action"
    )


def _install_denials() -> None:
    """Deny like AWS: S3 operations as their IAM actions, errors in each protocol's shape.

    moto checks S3 requests under the operation's name (`s3:ListObjectsV2`),
    which no policy grants: AWS authorizes ListObjectsV2 as `s3:ListBucket`,
    HeadObject as `s3:GetObject`, multipart uploads as `s3:PutObject`. And
    moto answers every denial in XML, which a JSON-protocol client (DynamoDB,
    KMS) cannot read; AWS answers those with `AccessDeniedException`.
    """
    from moto.core.exceptions import AccessDeniedError, JsonRESTError
    from moto.iam.access_control import IAMRequest, IAMRequestBase, S3IAMRequest
    from moto.s3.exceptions import S3ClientError

    original_check = IAMRequestBase.check_action_permitted

    def check(self: Any, resource: str) -> None:
        service, _, operation = self._action.partition(":")
        if service == "s3":
            self._action = f"s3:{_S3_ACTIONS.get(operation, operation)}"
        self._local_cloud_resource = resource
        original_check(self, resource)

    def deny(self: Any) -> None:
        message = _denial(self._access_key.arn, self._action, self._local_cloud_resource)
        if self._service in _JSON_SERVICES:
            raise JsonRESTError("AccessDeniedException", message)
        # moto's error writes "User: <arn> is not authorized to perform: <rest>".
        raise AccessDeniedError(
            user_arn=self._access_key.arn, action=message.split("to perform: ", 1)[1]
        )

    def deny_s3(self: Any) -> None:
        message = _denial(self._access_key.arn, self._action, f'"{self._local_cloud_resource}"')
        raise S3ClientError("AccessDenied", message)

    IAMRequestBase.check_action_permitted = check  # type: ignore[method-assign]
    IAMRequest._raise_access_denied = deny  # type: ignore[method-assign]
    S3IAMRequest._raise_access_denied = deny_s3  # type: ignore[method-assign]
    _install_presigned_urls(S3IAMRequest)


def _install_presigned_urls(s3_request: Any) -> None:
    """Check a presigned S3 URL's caller instead of failing on its missing header.

    A presigned URL carries its credential in the query string
    (`X-Amz-Credential`, or SigV2's `AWSAccessKeyId`), not in an
    `Authorization` header, which moto's checker reads unconditionally (a
    server error). The credential's user is looked up and its policies
    evaluated as for any request; the URL's signature and expiry are not
    verified (docs/local-cloud.md).
    """
    from urllib.parse import parse_qs

    original_init = s3_request.__init__
    original_signature = s3_request.check_signature

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        headers = kwargs["headers"]
        query = parse_qs(urlparse(kwargs["path"]).query)
        credential = None
        if "Authorization" not in headers:
            if query.get("X-Amz-Credential"):
                credential = query["X-Amz-Credential"][0]
            elif query.get("AWSAccessKeyId"):  # SigV2 names no region: any in partition aws
                credential = f"{query['AWSAccessKeyId'][0]}/-/us-east-1/s3/aws4_request"
        self._local_cloud_presigned = credential is not None
        if credential is not None:
            kwargs["headers"] = {
                **dict(headers),
                "Authorization": f"AWS4-HMAC-SHA256 Credential={credential}, Signature=-",
            }
        original_init(self, *args, **kwargs)

    def check_signature(self: Any) -> None:
        if not self._local_cloud_presigned:
            original_signature(self)

    s3_request.__init__ = init
    s3_request.check_signature = check_signature


def enable(account_id: str, access_key_id: str, secret_access_key: str) -> None:
    """Switch IAM enforcement on in this (the server's) process.

    `access_key_id` / `secret_access_key` become the keys of `ADMIN_USER`,
    who may do everything: the local cloud's own credentials stay usable.
    """
    from moto import settings as moto_settings
    from moto.iam.models import iam_backends

    backend = iam_backends[account_id]["aws"]
    if ADMIN_USER not in backend.users:
        backend.create_user(region_name="us-east-1", user_name=ADMIN_USER)
        backend.put_user_policy(ADMIN_USER, "everything", json.dumps(_ALLOW_EVERYTHING))
        key = backend.create_access_key(ADMIN_USER)
        backend.access_keys.pop(key.access_key_id, None)
        key.access_key_id = access_key_id
        key.secret_access_key = secret_access_key
        backend.access_keys[access_key_id] = key
    _install_resources()
    moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    _log.info("IAM enforcement on: %s holds the local cloud's own keys", ADMIN_USER)
