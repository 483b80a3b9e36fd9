"""`export-pipeline`: the command line.

    export-pipeline local up              start the embedded local cloud (idempotent), seed it
    export-pipeline local down            stop it (its BigQuery tables stay on disk)
    export-pipeline local status [--json] what runs, and the endpoints to point clients at
    export-pipeline local mutate [--seed N] [--json]
                                          change the demo data like production changes
    export-pipeline local pass-time [--minutes N]
                                          let N minutes pass for the demo (incremental runs)
    export-pipeline local pipeline-user [--name NAME]
                                          an IAM user holding the rendered pipeline policy
                                          (IAM-enforcing local cloud); prints its keys
    export-pipeline dynamodb-to-parquet … convert a DynamoDB export (when installed)

The local cloud's location and ports come from `LocalCloudSettings.from_env()`
(EXPORT_PIPELINE_LOCAL_DIR, EXPORT_PIPELINE_LOCAL_*_PORT); the pipeline
configuration from `current_config()` (pipeline.yaml or
$EXPORT_PIPELINE_CONFIG). Expected failures (bad configuration, a port in
use, a server that does not start) print one clear message and exit non-zero.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from export_pipeline import pools_cli
from export_pipeline.bigquery.watermark import rewind_marks
from export_pipeline.config import ConfigError, current_config
from export_pipeline.dynamodb import convert_cli
from export_pipeline.local_cloud import api as local_cloud

EXIT_ERROR = 1
EXIT_USAGE = 2


# What `local status` says about credentials: the local servers check none,
# unless the AWS server enforces IAM.
CREDENTIALS_NOTE = (
    "any AWS access key and secret work (e.g. AWS_ACCESS_KEY_ID=test "
    "AWS_SECRET_ACCESS_KEY=test); BigQuery takes anonymous credentials"
)
ENFORCED_CREDENTIALS_NOTE = (
    "IAM enforced: only keys of IAM users of this cloud work, each allowed what its policies "
    "allow; the pipeline signs as the local administrator unless "
    "EXPORT_PIPELINE_LOCAL_AWS_ACCESS_KEY_ID/_SECRET_ACCESS_KEY name another user "
    "(docs/local-cloud.md#iam-enforcement); BigQuery takes anonymous credentials"
)


def _credentials_note(status: Any) -> str:
    return ENFORCED_CREDENTIALS_NOTE if status.iam_enforced else CREDENTIALS_NOTE


def _print_status(status: Any, region: str) -> None:
    state = "running" if status.running else "not running"
    print(f"local cloud: {state}")
    print(f"  AWS endpoint:       {status.aws_endpoint_url}  ({_service_line(status.aws)})")
    print(f"  AWS region:         {region}")
    print(f"  credentials:        {_credentials_note(status)}")
    print(
        f"  BigQuery endpoint:  {status.bigquery_api_endpoint}  ({_service_line(status.bigquery)})"
    )
    print(f"  BigQuery gRPC:      {status.bigquery_grpc_endpoint}")
    print(f"  BigQuery project:   {status.bigquery_project}")
    print(f"  GCS endpoint:       {status.gcs_endpoint}  ({_service_line(status.gcs)})")
    print(f"  demo data seeded:   {'yes' if status.seeded else 'no'}")
    print(f"  state folder:       {status.state_dir}")
    logs = (status.aws.log_path, status.bigquery.log_path, status.gcs.log_path)
    print(f"  logs:               {', '.join(logs)}")
    print("  query the data:     docs/local-cloud.md#look-at-the-data-yourself")


def _service_line(service: Any) -> str:
    return f"pid {service.pid}" if service.running else service.detail


def _cmd_up(args: argparse.Namespace) -> int:
    config = current_config()
    started = time.monotonic()
    status = local_cloud.up(local_cloud.LocalCloudSettings.from_env(), config, timeout=args.timeout)
    _print_status(status, config.aws.region)
    if status.started_fresh:
        print(local_cloud.FRESH_START_LINE.format(dataset=config.bigquery.dataset))
    print(f"ready in {time.monotonic() - started:.1f}s")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    settings = local_cloud.LocalCloudSettings.from_env()
    stopped = local_cloud.down(settings)
    for name, was_running in stopped.items():
        print(f"{name}: {'stopped' if was_running else 'was not running'}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    status = local_cloud.status(local_cloud.LocalCloudSettings.from_env())
    region = current_config().aws.region
    if args.json:
        print(
            json.dumps(
                {
                    **status.to_dict(),
                    "aws_region": region,
                    "credentials": _credentials_note(status),
                },
                indent=2,
            )
        )
    else:
        _print_status(status, region)
    return 0


def _cmd_mutate(args: argparse.Namespace) -> int:
    config = current_config()
    summary = local_cloud.mutate(local_cloud.LocalCloudSettings.from_env(), config, seed=args.seed)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    for source, changes in summary.items():
        print(f"{source}:")
        if isinstance(changes, dict):
            for key, value in changes.items():
                rendered = value if isinstance(value, str) else json.dumps(value, default=str)
                print(f"  {key}: {rendered}")
        else:
            print(f"  {changes}")
    return 0


def _cmd_pass_time(args: argparse.Namespace) -> int:
    config = current_config()
    settings = local_cloud.LocalCloudSettings.from_env()
    tables = local_cloud.pass_time(settings, config, minutes=args.minutes)
    client = local_cloud.bigquery_client(settings)
    try:
        marks = rewind_marks(
            client, settings.bigquery_project, config.bigquery.dataset, args.minutes * 60
        )
    finally:
        client.close()
    print(
        f"moved the demo's recorded past {args.minutes:g} minutes back: DynamoDB tables "
        f"{', '.join(tables) or '(none)'}, {marks} high-water mark(s) in BigQuery; the next "
        "run plans as if the last one had been that much earlier"
    )
    return 0


def _cmd_pipeline_user(args: argparse.Namespace) -> int:
    """Create a user holding exactly the rendered pipeline policy; print its keys as exports.

    With those two variables set, the pipeline signs as that user, so a run
    against an IAM-enforcing local cloud is allowed what the policy allows.
    """
    from export_pipeline.iam_policies import load_template, render

    config = current_config()
    settings = local_cloud.LocalCloudSettings.from_env()
    if not local_cloud.status(settings).iam_enforced:
        raise local_cloud.LocalCloudError(
            "the local AWS server does not enforce IAM, so a policy-bound user would be allowed "
            "everything: run `export-pipeline local down`, then "
            "`EXPORT_PIPELINE_LOCAL_IAM=enforce export-pipeline local up`"
        )
    region = config.aws.region
    policy = render(
        load_template("pipeline-policy"),
        config,
        account_id=local_cloud.LOCAL_ACCOUNT_ID,
        kms_key_arns=local_cloud.kms_key_arns(
            settings, region, [i.kms_key_id for i in config.rds.instances]
        ),
    )
    keys = local_cloud.create_policy_bound_user(settings, region, args.name, policy)
    print(f"# IAM user {args.name} holds the rendered pipeline policy; the pipeline signs as it")
    print(f"export EXPORT_PIPELINE_LOCAL_AWS_ACCESS_KEY_ID={keys.access_key_id}")
    print(f"export EXPORT_PIPELINE_LOCAL_AWS_SECRET_ACCESS_KEY={keys.secret_access_key}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="export-pipeline",
        description="Keep BigQuery in step with DynamoDB and RDS exports.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    local = commands.add_parser("local", help="the embedded local cloud (moto + bqemulator)")
    local_commands = local.add_subparsers(dest="local_command", metavar="ACTION", required=True)

    up = local_commands.add_parser("up", help="start (if needed) and seed the local cloud")
    up.add_argument(
        "--timeout", type=float, default=90.0, help="seconds to wait for each server (90)"
    )
    up.set_defaults(func=_cmd_up)

    down = local_commands.add_parser("down", help="stop the local cloud's servers")
    down.set_defaults(func=_cmd_down)

    status = local_commands.add_parser("status", help="show what runs and its endpoints")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=_cmd_status)

    mutate = local_commands.add_parser(
        "mutate", help="insert/update/delete demo data, as production data changes"
    )
    mutate.add_argument("--seed", type=int, default=None, help="random seed (repeatable runs)")
    mutate.add_argument("--json", action="store_true", help="print JSON")
    mutate.set_defaults(func=_cmd_mutate)

    pass_time = local_commands.add_parser(
        "pass-time",
        help="let N minutes pass for the demo (incremental exports need 15 min windows)",
    )
    pass_time.add_argument("--minutes", type=float, default=20.0, help="how many minutes (20)")
    pass_time.set_defaults(func=_cmd_pass_time)

    pipeline_user = local_commands.add_parser(
        "pipeline-user",
        help="create an IAM user holding the rendered pipeline policy and print its keys "
        "(needs EXPORT_PIPELINE_LOCAL_IAM=enforce)",
    )
    pipeline_user.add_argument("--name", default="export-pipeline", help="user name")
    pipeline_user.set_defaults(func=_cmd_pipeline_user)

    # Subcommands whose modules sit with what they are about.
    convert_cli.register(commands)
    pools_cli.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except local_cloud.LocalCloudError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `... | head`: the reader has what it wanted
        # Python would report the pipe again while flushing stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a command the pipe closed
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
