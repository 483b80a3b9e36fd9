"""The pipeline runs in the tests as its least-privilege principal, the source team as admin.

The session's local cloud enforces IAM (`conftest.py`, `EXPORT_PIPELINE_LOCAL_IAM`).
Test set-up that plays the source team (tables and items, DB instances and
snapshots, sample exports, fault injection) signs with the local cloud's own
keys (`aws_clients`, an administrator's). Wherever the pipeline runs it signs
as an IAM user holding exactly the policy `iam_policies` renders from the
configuration it runs, as it would on AWS:

    materialize(assets, resources=pipeline_resources(config), ...)
    pipeline_definitions(config)                      # jobs, sensors, schedules
    subprocess.run([...dagster...], env=pipeline_environment(config, env))

A call the rendered policy does not allow then fails in the test as on AWS.
One user per policy (keyed by the policy's hash) serves every test whose
configuration renders the same policy; its keys stay in environment
variables of their own (`EXPORT_PIPELINE_TEST_PRINCIPAL_<cloud>_<hash>_*`), so
that resources name the variables, never the keys, as for real secrets, and
processes the tests start (Dagster's step and worker processes) inherit them
instead of making users of their own.

A test that needs the pipeline to do what its policy does not allow says so:
`@pytest.mark.permissive_iam("reason")`; the pipeline then signs with the
local cloud's own keys for that test.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dagster import Definitions

from export_pipeline.config import PipelineConfig
from export_pipeline.definitions import build_definitions
from export_pipeline.environment import LOCAL_ACCESS_KEY_ENV, LOCAL_SECRET_KEY_ENV, build_resources
from export_pipeline.iam_policies import load_template, render
from export_pipeline.local_cloud.clients import AwsClients
from export_pipeline.local_cloud.principals import policy_bound_user
from export_pipeline.local_cloud.settings import LOCAL_ACCOUNT_ID, LocalCloudSettings

_PREFIX = "EXPORT_PIPELINE_TEST_PRINCIPAL_"
_ADMIN = "ADMIN"
# (AWS endpoint, region, key id) -> the key's ARN (None: no such key in that cloud).
_key_arns: dict[tuple[str, str, str], str | None] = {}
_permissive: list[str] = []
# (AWS endpoint, region) -> the administrator's clients (boto3 clients take a while to make).
_admins: dict[tuple[str, str], AwsClients] = {}


def _admin(settings: LocalCloudSettings, region: str) -> AwsClients:
    """The local cloud's own clients: IAM and KMS are what the users are made with."""
    where = (settings.aws_endpoint_url, region)
    if where not in _admins:
        _admins[where] = AwsClients.create(settings, region)
    return _admins[where]


def pipeline_policy(config: PipelineConfig, settings: LocalCloudSettings) -> dict[str, Any]:
    """The pipeline policy rendered for `config` in the local cloud's account.

    KMS keys named by alias are looked up as `deploy/README.md` says; a key the
    cloud does not know is left out (StartExportTask reports it on its own).
    """
    region = config.aws.region
    arns = []
    for key_id in sorted({i.kms_key_id for i in config.rds.instances}):
        where = (settings.aws_endpoint_url, region, key_id)
        if where not in _key_arns:
            kms = _admin(settings, region).kms
            try:
                _key_arns[where] = kms.describe_key(KeyId=key_id)["KeyMetadata"]["Arn"]
            except kms.exceptions.NotFoundException:
                _key_arns[where] = None
        arn = _key_arns[where]
        if arn is not None:
            arns.append(arn)
    return render(
        load_template("pipeline-policy"),
        config,
        account_id=LOCAL_ACCOUNT_ID,
        kms_key_arns=sorted(set(arns)),
    )


def pipeline_keys_env(config: PipelineConfig) -> tuple[str, str] | None:
    """Names of the variables holding the keys the pipeline of `config` signs with.

    None when the local cloud checks no IAM: the local cloud's own keys then do.
    """
    settings = LocalCloudSettings.from_env()
    if not settings.enforce_iam:
        return None
    if _permissive:
        names = _names(settings, _ADMIN)
        os.environ[names[0]] = settings.aws_access_key_id
        os.environ[names[1]] = settings.aws_secret_access_key
        return names
    policy = pipeline_policy(config, settings)
    digest = hashlib.sha256(json.dumps(policy, sort_keys=True).encode()).hexdigest()[:16]
    names = _names(settings, digest)
    if all(name in os.environ for name in names):  # made here, or by the parent process
        return names
    iam = _admin(settings, config.aws.region).iam
    name = f"pipeline-{digest}"
    try:
        keys = policy_bound_user(iam, name, policy)
    except iam.exceptions.EntityAlreadyExistsException:
        # Made by another process that did not hand its keys down: a user of this
        # process's own (IAM caps a user's access keys at two).
        keys = policy_bound_user(iam, f"{name}-{os.getpid()}", policy)
    os.environ[names[0]] = keys.access_key_id
    os.environ[names[1]] = keys.secret_access_key
    return names


def _names(settings: LocalCloudSettings, label: str) -> tuple[str, str]:
    """The variables holding one user's keys in the local cloud of `settings`.

    Named after the cloud's port and state folder too: a cloud started later may
    take a port a stopped one had, and its users are not the stopped one's.
    """
    cloud = hashlib.sha256(str(settings.state_dir).encode()).hexdigest()[:8]
    stem = f"{_PREFIX}{settings.aws_port}_{cloud}_{label}"
    return (f"{stem}_KEY_ID", f"{stem}_SECRET")


def pipeline_resources(config: PipelineConfig) -> dict[str, Any]:
    """`build_resources(config)` signing as the principal holding `config`'s rendered policy."""
    return build_resources(config, local_keys_env=pipeline_keys_env(config))


def pipeline_definitions(config: PipelineConfig) -> Definitions:
    """`build_definitions(config)` with `pipeline_resources(config)`."""
    return build_definitions(config, resources=pipeline_resources(config))


def pipeline_environment(config: PipelineConfig, env: dict[str, str]) -> dict[str, str]:
    """`env` for a process running the pipeline of `config`: its principal's keys in
    the variables the pipeline reads (`LOCAL_ACCESS_KEY_ENV` / `LOCAL_SECRET_KEY_ENV`)."""
    names = pipeline_keys_env(config)
    if names is None:
        return dict(env)
    return {
        **env,
        LOCAL_ACCESS_KEY_ENV: os.environ[names[0]],
        LOCAL_SECRET_KEY_ENV: os.environ[names[1]],
    }


def use_pipeline_keys(config: PipelineConfig) -> None:
    """Make `config`'s principal the default signer of this process (`LOCAL_*_KEY_ENV`)."""
    os.environ.update(pipeline_environment(config, {}))


@contextmanager
def permissive(reason: str) -> Iterator[None]:
    """The pipeline signs with the local cloud's own keys meanwhile (`reason` says why)."""
    if not reason.strip():
        raise ValueError("permissive_iam needs the reason the pipeline may do more than its policy")
    settings = LocalCloudSettings.from_env()
    previous = {name: os.environ.get(name) for name in (LOCAL_ACCESS_KEY_ENV, LOCAL_SECRET_KEY_ENV)}
    _permissive.append(reason)
    os.environ[LOCAL_ACCESS_KEY_ENV] = settings.aws_access_key_id
    os.environ[LOCAL_SECRET_KEY_ENV] = settings.aws_secret_access_key
    try:
        yield
    finally:
        _permissive.pop()
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def forget_principals() -> None:
    """Drop the keys' variables (the session's cloud, which holds the users, is gone)."""
    for name in [n for n in os.environ if n.startswith(_PREFIX)]:
        del os.environ[name]
    _key_arns.clear()
    _admins.clear()
