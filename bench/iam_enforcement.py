"""Benchmark: what IAM enforcement costs the local AWS server per request.

    python bench/iam_enforcement.py                  # 300 requests per case
    python bench/iam_enforcement.py --requests 1000 --users 1000

One moto server (in this process, real HTTP, `iam_enforcement` installed) is
asked the pipeline's most frequent calls, DynamoDB DescribeTable and S3
HeadObject, three ways:

- baseline: IAM not checked (the permissive local cloud);
- enforced, as a user holding the rendered pipeline policy;
- enforced, with `--users` more users in the account (the test suite makes
  one per distinct policy; moto finds a request's key by walking every
  user's keys).

Prints milliseconds per request (client and server, one process) and the
ratio to the baseline.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import boto3
from botocore.config import Config

from export_pipeline.local_cloud import iam_enforcement
from export_pipeline.local_cloud.principals import policy_bound_user
from export_pipeline.local_cloud.settings import (
    LOCAL_ACCOUNT_ID,
    LOCAL_AWS_ACCESS_KEY_ID,
    LOCAL_AWS_SECRET_ACCESS_KEY,
)

REGION = "eu-west-1"
TABLE = "bench-table"
BUCKET = "bench-bucket"
POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["dynamodb:DescribeTable"],
            "Resource": [f"arn:aws:dynamodb:{REGION}:{LOCAL_ACCOUNT_ID}:table/{TABLE}"],
        },
        {
            "Effect": "Allow",
            "Action": ["s3:GetObject"],
            "Resource": [f"arn:aws:s3:::{BUCKET}/exports/*"],
        },
    ],
}


def _clients(url: str, key_id: str, secret: str) -> tuple:
    session = boto3.session.Session(
        aws_access_key_id=key_id, aws_secret_access_key=secret, region_name=REGION
    )
    config = Config(s3={"addressing_style": "path"})
    return (
        session.client("dynamodb", endpoint_url=url, config=config),
        session.client("s3", endpoint_url=url, config=config),
    )


def _per_request_ms(dynamodb, s3, requests: int) -> float:
    start = time.perf_counter()
    for _ in range(requests):
        dynamodb.describe_table(TableName=TABLE)
        s3.head_object(Bucket=BUCKET, Key="exports/object")
    return (time.perf_counter() - start) * 1000 / (2 * requests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--users", type=int, default=500)
    args = parser.parse_args()

    from moto import settings as moto_settings
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    try:
        admin_dynamodb, admin_s3 = _clients(
            url, LOCAL_AWS_ACCESS_KEY_ID, LOCAL_AWS_SECRET_ACCESS_KEY
        )
        iam = boto3.client(
            "iam",
            endpoint_url=url,
            region_name=REGION,
            aws_access_key_id=LOCAL_AWS_ACCESS_KEY_ID,
            aws_secret_access_key=LOCAL_AWS_SECRET_ACCESS_KEY,
        )
        admin_dynamodb.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        admin_s3.create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        admin_s3.put_object(Bucket=BUCKET, Key="exports/object", Body=b"x")
        keys = policy_bound_user(iam, "bench-pipeline", POLICY)
        user_dynamodb, user_s3 = _clients(url, keys.access_key_id, keys.secret_access_key)
        _per_request_ms(admin_dynamodb, admin_s3, 20)  # warm up both paths

        baseline = _per_request_ms(admin_dynamodb, admin_s3, args.requests)
        iam_enforcement.enable(
            LOCAL_ACCOUNT_ID, LOCAL_AWS_ACCESS_KEY_ID, LOCAL_AWS_SECRET_ACCESS_KEY
        )
        enforced = _per_request_ms(user_dynamodb, user_s3, args.requests)
        for number in range(args.users):
            policy_bound_user(iam, f"bench-other-{number}", POLICY)
        crowded = _per_request_ms(user_dynamodb, user_s3, args.requests)
        moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")
    finally:
        server.stop()
    rows = [
        ("baseline: IAM not checked", baseline),
        ("enforced, the policy's user", enforced),
        (f"enforced, {args.users} more users", crowded),
    ]
    print(json.dumps({"requests_per_case": 2 * args.requests}))
    for label, ms in rows:
        print(f"{label:38s} {ms:6.2f} ms/request  x{ms / baseline:.2f}")


if __name__ == "__main__":
    main()
