"""The suite's pipeline signs as the principal of its configuration, its set-up as admin.

`support/principals.py` is what makes the rest of the suite a test of the
rendered policies: these check that it hands out what it says.
"""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from export_pipeline.environment import LOCAL_ACCESS_KEY_ENV
from export_pipeline.local_cloud import control
from export_pipeline.local_cloud.clients import AwsClients
from export_pipeline.local_cloud.settings import ENFORCE, IAM_ENV
from export_pipeline_tests.dynamodb._pipeline_helpers import create_table, make_config
from export_pipeline_tests.support.principals import (
    pipeline_environment,
    pipeline_keys_env,
)


def _dynamodb(local_cloud, config):  # -> a DynamoDB client signing as the pipeline of `config`
    names = pipeline_keys_env(config)
    assert names is not None
    keys = {
        "aws_access_key_id": os.environ[names[0]],
        "aws_secret_access_key": os.environ[names[1]],
    }
    return AwsClients.for_config(replace(local_cloud, **keys), config).dynamodb


def test_the_session_cloud_enforces_iam_unless_told_not_to(local_cloud) -> None:
    expected = os.environ[IAM_ENV] == ENFORCE  # the session's default when unset
    assert local_cloud.enforce_iam is expected
    assert control.status(local_cloud).iam_enforced is expected


def test_the_pipeline_may_read_its_tables_and_no_other(
    local_cloud, aws_clients, unique_name
) -> None:
    if not local_cloud.enforce_iam:
        pytest.fail(f"the session's cloud checks no IAM ({IAM_ENV} is not {ENFORCE})")
    mine, other = f"{unique_name}-mine", f"{unique_name}-other"
    for table in (mine, other):
        create_table(aws_clients.dynamodb, table, [])  # the source team, as admin
    dynamodb = _dynamodb(local_cloud, make_config(mine))
    assert dynamodb.describe_table(TableName=mine)["Table"]["TableName"] == mine
    with pytest.raises(dynamodb.exceptions.ClientError, match="dynamodb:DescribeTable"):
        dynamodb.describe_table(TableName=other)


def test_one_user_per_policy_and_the_keys_reach_a_subprocess(local_cloud, unique_name) -> None:
    first = pipeline_keys_env(make_config(f"{unique_name}-a"))
    assert pipeline_keys_env(make_config(f"{unique_name}-a")) == first
    assert pipeline_keys_env(make_config(f"{unique_name}-b")) != first
    env = pipeline_environment(make_config(f"{unique_name}-a"), {})
    assert first is not None and env[LOCAL_ACCESS_KEY_ENV] == os.environ[first[0]]
    assert env[LOCAL_ACCESS_KEY_ENV] != local_cloud.aws_access_key_id


@pytest.mark.permissive_iam("checks the permissive mode itself")
def test_permissive_mode_signs_as_the_administrator(local_cloud, aws_clients, unique_name):
    table = f"{unique_name}-any"
    create_table(aws_clients.dynamodb, table, [])
    dynamodb = _dynamodb(local_cloud, make_config("some-other-table"))
    assert dynamodb.describe_table(TableName=table)["Table"]["TableName"] == table
    assert os.environ[LOCAL_ACCESS_KEY_ENV] == local_cloud.aws_access_key_id
