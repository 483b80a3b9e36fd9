"""Start, stop, inspect and seed the embedded local cloud.

The local cloud is three background processes on loopback, each with a pid file
and a log under the state folder (`LocalCloudSettings.state_dir`):

    <state_dir>/control.lock          serialises up/down/ensure_running across processes
    <state_dir>/run/aws.pid           moto + our export emulations (aws_server.py)
    <state_dir>/run/bigquery.pid      bqemulator (bigquery_server.py)
    <state_dir>/run/gcs.pid           the GCS JSON API (gcs_server.py)
    <state_dir>/run/aws-seeded.json   which AWS server process holds the demo data
    <state_dir>/logs/aws.log, logs/bigquery.log
    <state_dir>/bigquery/             bqemulator's DuckDB file (persists across down/up)
    <state_dir>/gcs/                  GCS objects as plain files, read by bqemulator's loads

AWS state lives in the moto process's memory, so the demo data is seeded into
each new AWS server process once (the marker names the process it was seeded
into). BigQuery's data is on disk, but when the AWS side is seeded afresh the
configured dataset is emptied too: otherwise BigQuery would hold tables and
incremental high-water marks of DynamoDB tables that no longer exist, and
the two halves of one local cloud would disagree.

`up` is idempotent and `ensure_running` (used by the Dagster `cloud` resource)
is cheap when the cloud already runs and safe when several processes call it at
once: starting happens under an exclusive file lock, so one cloud starts.
`down` signals only processes whose pid, start time and command line match
what `up` recorded.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from export_pipeline.local_cloud import _process, demo_dynamodb, demo_rds, gcs_server
from export_pipeline.local_cloud._process import LocalCloudError, ProcessRecord
from export_pipeline.local_cloud.aws_server import HEALTH_PATH
from export_pipeline.local_cloud.clients import AwsClients
from export_pipeline.local_cloud.configuration import CloudConfiguration
from export_pipeline.local_cloud.dynamodb_time_control import shift_history
from export_pipeline.local_cloud.settings import LocalCloudSettings

__all__ = [
    "DEMO_MODULES",
    "LocalCloudError",
    "LocalCloudStatus",
    "ServiceStatus",
    "down",
    "ensure_running",
    "mutate",
    "status",
    "up",
]

AWS = "aws"
BIGQUERY = "bigquery"
GCS = "gcs"
SERVICES = (AWS, BIGQUERY, GCS)

# Demo data providers, each with `seed(clients, config, settings) -> None` and
# `mutate(clients, config, settings, seed) -> dict`. A module not written yet
# is skipped.
# The demo data of each source: modules with `seed(...)` and `mutate(...)`.
DEMO_MODULES: dict[str, ModuleType] = {"dynamodb": demo_dynamodb, "rds": demo_rds}

DEFAULT_START_TIMEOUT = 90.0
# What `up` (and a run that starts the cloud) says when the demo starts afresh.
FRESH_START_LINE = (
    "local cloud started with fresh demo data: DynamoDB tables and RDS databases reseeded, "
    "BigQuery dataset {dataset} emptied (the local cloud keeps no data across "
    "`export-pipeline local down` or a crash)"
)


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool  # our process is alive and answers its health check
    pid: int | None
    endpoint: str
    log_path: str
    detail: str  # why it is not running, or "ok"


@dataclass(frozen=True)
class LocalCloudStatus:
    running: bool  # every service running
    state_dir: Path
    aws_endpoint_url: str
    bigquery_api_endpoint: str
    bigquery_grpc_endpoint: str
    bigquery_project: str
    aws: ServiceStatus
    bigquery: ServiceStatus
    gcs_endpoint: str  # the GCS JSON API root (STORAGE_EMULATOR_HOST / api_endpoint)
    gcs: ServiceStatus
    seeded: bool  # the demo data is in the running AWS server
    # This call started the AWS server and seeded it: every source holds fresh demo
    # data and the BigQuery dataset was emptied (FRESH_START_LINE says so).
    started_fresh: bool = False
    # The running AWS server checks IAM (started with EXPORT_PIPELINE_LOCAL_IAM=enforce).
    iam_enforced: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state_dir"] = str(self.state_dir)
        return data


# -- Paths -------------------------------------------------------------------


def _absolute(settings: LocalCloudSettings) -> LocalCloudSettings:
    """The same settings with an absolute state folder (the servers run in another cwd)."""
    if settings.state_dir.is_absolute():
        return settings
    return replace(settings, state_dir=settings.state_dir.resolve())


def _lock_path(settings: LocalCloudSettings) -> Path:
    return settings.state_dir / "control.lock"


def _pid_path(settings: LocalCloudSettings, name: str) -> Path:
    return settings.state_dir / "run" / f"{name}.pid"


def _log_path(settings: LocalCloudSettings, name: str) -> Path:
    return settings.state_dir / "logs" / f"{name}.log"


def _seed_marker_path(settings: LocalCloudSettings) -> Path:
    return settings.state_dir / "run" / "aws-seeded.json"


# -- Health ------------------------------------------------------------------


def _aws_healthy(settings: LocalCloudSettings, record: ProcessRecord) -> bool:
    health = _process.http_get_json(settings.aws_endpoint_url + HEALTH_PATH)
    return bool(health and health.get("pid") == record.pid)


def _bigquery_healthy(settings: LocalCloudSettings, record: ProcessRecord) -> bool:
    ready = _process.http_get_json(settings.bigquery_api_endpoint + "/readyz")
    return bool(ready and ready.get("status") == "ok")


def _gcs_healthy(settings: LocalCloudSettings, record: ProcessRecord) -> bool:
    health = _process.http_get_json(settings.gcs_endpoint + gcs_server.HEALTH_PATH)
    return bool(health and health.get("pid") == record.pid)


_HEALTH_CHECKS = {AWS: _aws_healthy, BIGQUERY: _bigquery_healthy, GCS: _gcs_healthy}


def _endpoint(settings: LocalCloudSettings, name: str) -> str:
    return {
        AWS: settings.aws_endpoint_url,
        BIGQUERY: settings.bigquery_api_endpoint,
        GCS: settings.gcs_endpoint,
    }[name]


def _service_status(settings: LocalCloudSettings, name: str) -> ServiceStatus:
    endpoint = _endpoint(settings, name)
    log_path = str(_log_path(settings, name))
    record = ProcessRecord.read(_pid_path(settings, name))
    if record is None:
        return ServiceStatus(name, False, None, endpoint, log_path, "not started")
    if not _process.is_alive(record):
        return ServiceStatus(name, False, None, endpoint, log_path, "exited (stale pid file)")
    if (record.host, record.port) != (settings.host, _port(settings, name)):
        return ServiceStatus(
            name,
            False,
            record.pid,
            endpoint,
            log_path,
            f"running on {record.host}:{record.port}, not on the configured port",
        )
    healthy = _HEALTH_CHECKS[name](settings, record)
    return ServiceStatus(
        name, healthy, record.pid, endpoint, log_path, "ok" if healthy else "not answering"
    )


def _port(settings: LocalCloudSettings, name: str) -> int:
    return {AWS: settings.aws_port, BIGQUERY: settings.bigquery_port, GCS: settings.gcs_port}[name]


def _seed_identity(record: ProcessRecord) -> dict[str, Any]:
    return {"pid": record.pid, "start_ticks": record.start_ticks, "started_at": record.started_at}


def _is_seeded(settings: LocalCloudSettings) -> bool:
    record = ProcessRecord.read(_pid_path(settings, AWS))
    if record is None:
        return False
    try:
        marker = json.loads(_seed_marker_path(settings).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return False
    return marker == _seed_identity(record)


def status(settings: LocalCloudSettings) -> LocalCloudStatus:
    """What runs now (no side effects, no lock)."""
    settings = _absolute(settings)
    aws = _service_status(settings, AWS)
    bigquery = _service_status(settings, BIGQUERY)
    gcs = _service_status(settings, GCS)
    health = (
        _process.http_get_json(settings.aws_endpoint_url + HEALTH_PATH) if aws.running else None
    )
    return LocalCloudStatus(
        running=aws.running and bigquery.running and gcs.running,
        state_dir=settings.state_dir,
        aws_endpoint_url=settings.aws_endpoint_url,
        bigquery_api_endpoint=settings.bigquery_api_endpoint,
        bigquery_grpc_endpoint=f"{settings.host}:{settings.bigquery_grpc_port}",
        bigquery_project=settings.bigquery_project,
        aws=aws,
        bigquery=bigquery,
        gcs_endpoint=settings.gcs_endpoint,
        gcs=gcs,
        seeded=aws.running and _is_seeded(settings),
        iam_enforced=bool(health and health.get("iam") == "enforced"),
    )


# -- Starting ----------------------------------------------------------------


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BQEMU_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _command(settings: LocalCloudSettings, name: str, owner_pid: int | None) -> list[str]:
    common = ["--host", settings.host, "--state-dir", str(settings.state_dir)]
    if owner_pid is not None:
        common += ["--owner", _process.owner_argument(owner_pid)]
    if name == AWS:
        iam = ["--enforce-iam"] if settings.enforce_iam else []
        return _process.python_command(
            "export_pipeline.local_cloud.aws_server",
            *common,
            "--port",
            str(settings.aws_port),
            *iam,
        )
    if name == GCS:
        return _process.python_command(
            "export_pipeline.local_cloud.gcs_server", *common, "--port", str(settings.gcs_port)
        )
    return _process.python_command(
        "export_pipeline.local_cloud.bigquery_server",
        *common,
        "--port",
        str(settings.bigquery_port),
        "--grpc-port",
        str(settings.bigquery_grpc_port),
        "--project",
        settings.bigquery_project,
    )


def _start(settings: LocalCloudSettings, name: str, owner_pid: int | None) -> ProcessRecord | None:
    """Start service `name` unless ours already runs; the new record, or None if running."""
    pid_path = _pid_path(settings, name)
    record = ProcessRecord.read(pid_path)
    if record is not None and _process.is_alive(record):
        if (record.host, record.port) != (settings.host, _port(settings, name)):
            raise LocalCloudError(
                f"the local {name} server of {settings.state_dir} runs on "
                f"{record.host}:{record.port} but the settings ask for "
                f"{settings.host}:{_port(settings, name)}; run `export-pipeline local down` first"
            )
        return None
    pid_path.unlink(missing_ok=True)
    ports = {"port": _port(settings, name)}
    if name == BIGQUERY:
        ports["grpc_port"] = settings.bigquery_grpc_port
    for label, port in ports.items():
        if not _process.port_is_free(settings.host, port):
            raise LocalCloudError(
                f"cannot start the local {name} server: {settings.host}:{port} ({label}) is "
                "in use by another program. Stop it, or choose other ports with "
                "EXPORT_PIPELINE_LOCAL_AWS_PORT / EXPORT_PIPELINE_LOCAL_BIGQUERY_PORT / "
                "EXPORT_PIPELINE_LOCAL_BIGQUERY_GRPC_PORT / EXPORT_PIPELINE_LOCAL_GCS_PORT"
            )
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    return _process.spawn(
        name,
        _command(settings, name, owner_pid),
        log_path=_log_path(settings, name),
        pid_path=pid_path,
        cwd=settings.state_dir,
        host=settings.host,
        port=_port(settings, name),
        extra_ports={k: v for k, v in ports.items() if k != "port"},
        env=_child_env(),
    )


def _wait_healthy(
    settings: LocalCloudSettings, name: str, record: ProcessRecord | None, timeout: float
) -> None:
    """Wait until service `name` answers (`record`: what this `up` started, None if it ran)."""
    if record is None:
        record = ProcessRecord.read(_pid_path(settings, name))
        if record is None:
            raise LocalCloudError(f"the pid file of the local {name} server vanished")
    check = _HEALTH_CHECKS[name]
    _process.wait_until(
        lambda: check(settings, record),
        record=record,
        timeout=timeout,
        what=f"the local {name} server",
    )


def _create_bucket(clients: AwsClients, bucket: str) -> None:
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if clients.region != "us-east-1":  # S3 rejects us-east-1 as a LocationConstraint
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": clients.region}
    with contextlib.suppress(clients.s3.exceptions.BucketAlreadyOwnedByYou):
        clients.s3.create_bucket(**kwargs)


def _create_gcs_buckets(settings: LocalCloudSettings, config: CloudConfiguration) -> None:
    """The configured staging bucket (`gcs.staging_bucket`), if the configuration has one.

    Its objects are files under the state folder, so they outlive `down`/`up`
    as BigQuery's tables do; the pipeline deletes what it staged after publishing.
    """
    staging = config.gcs
    if staging is None:
        return
    from google.api_core.exceptions import Conflict

    client = gcs_client(settings)
    try:
        with contextlib.suppress(Conflict):
            client.create_bucket(staging.staging_bucket, location=config.bigquery.location)
    finally:
        client.close()


def _create_datasets(
    settings: LocalCloudSettings, config: CloudConfiguration, *, empty_first: bool = False
) -> None:
    """The configured dataset, in the emulator's project (and the config's, if it differs).

    `empty_first`: drop it with its tables first (the AWS side was just seeded afresh).
    """
    from google.cloud import bigquery

    client = bigquery_client(settings)
    try:
        for project in dict.fromkeys([settings.bigquery_project, config.bigquery.project]):
            dataset = bigquery.Dataset(f"{project}.{config.bigquery.dataset}")
            if empty_first:
                client.delete_dataset(dataset, delete_contents=True, not_found_ok=True)
            dataset.location = config.bigquery.location
            client.create_dataset(dataset, exists_ok=True)
    finally:
        client.close()


def _seed_aws(settings: LocalCloudSettings, config: CloudConfiguration) -> bool:
    """Seed the AWS side once per AWS server process (its state is in its memory).

    The demo modules seed different services, so they run side by side.
    Returns whether it seeded now (False: this process was seeded before).
    """
    if _is_seeded(settings):
        return False
    record = ProcessRecord.read(_pid_path(settings, AWS))
    assert record is not None
    clients = AwsClients.for_config(settings, config)
    _create_bucket(clients, config.aws.export_bucket)
    modules = list(DEMO_MODULES.values())
    with ThreadPoolExecutor(max_workers=max(1, len(modules))) as pool:
        futures = [(m, pool.submit(m.seed, clients, config, settings)) for m in modules]
        failures = [(m, f.exception()) for m, f in futures if f.exception() is not None]
    if failures:
        log = _log_path(settings, "seed")
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as handle:
            for module, exc in failures:
                handle.write(f"=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {module.__name__}.seed\n")
                handle.write("".join(traceback.format_exception(exc)))
        module, exc = failures[0]
        raise LocalCloudError(
            f"seeding the demo data failed in {module.__name__}.seed: "
            f"{type(exc).__name__}: {exc} (traceback in {log}; the servers keep running, "
            "`up` retries the seeding)"
        ) from exc
    marker = _seed_marker_path(settings)
    marker.write_text(json.dumps(_seed_identity(record)), encoding="utf-8")
    return True


def _up_locked(
    settings: LocalCloudSettings, config: CloudConfiguration, timeout: float, owner_pid: int | None
) -> LocalCloudStatus:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    # Start all; seed AWS (seconds of work) while bqemulator is still starting.
    started: dict[str, ProcessRecord | None] = {}
    try:
        for name in (BIGQUERY, AWS, GCS):
            started[name] = _start(settings, name, owner_pid)
        _wait_healthy(settings, AWS, started[AWS], timeout)
        _wait_healthy(settings, GCS, started[GCS], timeout)
    except LocalCloudError:
        _stop_started(settings, started)
        raise
    _create_gcs_buckets(settings, config)
    seeded_now = _seed_aws(settings, config)
    try:
        _wait_healthy(settings, BIGQUERY, started[BIGQUERY], timeout)
    except LocalCloudError:
        _stop_started(settings, started)
        raise
    _create_datasets(settings, config, empty_first=seeded_now)
    return replace(status(settings), started_fresh=seeded_now)


def _stop_started(settings: LocalCloudSettings, started: dict[str, ProcessRecord | None]) -> None:
    """Undo a failed `up`: stop what this call started (not what already ran)."""
    records = [record for record in started.values() if record is not None]
    _process.stop_all(records)
    for record in records:
        _pid_path(settings, record.name).unlink(missing_ok=True)


def up(
    settings: LocalCloudSettings,
    config: CloudConfiguration,
    *,
    timeout: float = DEFAULT_START_TIMEOUT,
    owner_pid: int | None = None,
) -> LocalCloudStatus:
    """Start whatever is not running, wait until both answer, seed if empty. Idempotent.

    `owner_pid`: servers started by this call stop by themselves when that
    process exits (test sessions pass their own pid so that a killed session
    leaves nothing behind); None (the CLI, Dagster) keeps them until `down`.
    """
    settings = _absolute(settings)
    with _process.file_lock(_lock_path(settings)):
        return _up_locked(settings, config, timeout, owner_pid)


def ensure_running(
    settings: LocalCloudSettings,
    config: CloudConfiguration,
    *,
    timeout: float = DEFAULT_START_TIMEOUT,
) -> LocalCloudStatus:
    """`up` unless the cloud already runs and is seeded (then only a status check)."""
    settings = _absolute(settings)
    current = status(settings)
    if current.running and current.seeded:
        return current
    return up(settings, config, timeout=timeout)


# -- Stopping ----------------------------------------------------------------


def down(settings: LocalCloudSettings, *, timeout: float = 15.0) -> dict[str, bool]:
    """Stop the servers that `up` started for this state folder; {service: was running}."""
    settings = _absolute(settings)
    stopped = dict.fromkeys(SERVICES, False)
    with _process.file_lock(_lock_path(settings)):
        records = {
            name: record
            for name in stopped
            if (record := ProcessRecord.read(_pid_path(settings, name))) is not None
        }
        results = _process.stop_all(list(records.values()), timeout=timeout)
        stopped.update(zip(records, results, strict=True))
        for name in stopped:
            _pid_path(settings, name).unlink(missing_ok=True)
        _seed_marker_path(settings).unlink(missing_ok=True)
    return stopped


# -- Demo changes --------------------------------------------------------------


def mutate(
    settings: LocalCloudSettings, config: CloudConfiguration, *, seed: int | None = None
) -> dict[str, Any]:
    """Change the demo data the way production data changes; {source: summary}."""
    settings = _absolute(settings)
    ensure_running(settings, config)
    clients = AwsClients.for_config(settings, config)
    summary: dict[str, Any] = {}
    for kind, module in DEMO_MODULES.items():
        summary[kind] = module.mutate(clients, config, settings, seed)
    return summary


def pass_time(
    settings: LocalCloudSettings, config: CloudConfiguration, *, minutes: float
) -> list[str]:
    """Move each configured DynamoDB table's recorded past `minutes` back; the tables.

    An incremental DynamoDB export covers at least 15 minutes (AWS's rule),
    so a run soon after the full export that seeded a table exports it whole
    again. For the demo's `export-pipeline local pass-time`, the table's
    history (change log, point-in-time recovery start, creation time) moves
    into the past through the local AWS server's time-control route; the CLI
    moves the pipeline's high-water marks by as much, so that the next run
    plans its windows as after real waiting. AWS has no such thing.
    """
    if minutes <= 0:
        raise ValueError(f"--minutes: expected a positive number, got {minutes}")
    settings = _absolute(settings)
    ensure_running(settings, config)
    tables = [table.name for table in config.dynamodb.tables]
    for table in tables:
        shift_history(settings.aws_endpoint_url, table, minutes * 60, config.aws.region)
    return tables


# -- Clients -------------------------------------------------------------------


def bigquery_client(settings: LocalCloudSettings):  # type: ignore[no-untyped-def]
    """A `google.cloud.bigquery.Client` for the local emulator (anonymous credentials)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(
        project=settings.bigquery_project,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": settings.bigquery_api_endpoint},
    )


def gcs_client(settings: LocalCloudSettings):  # type: ignore[no-untyped-def]
    """A `google.cloud.storage.Client` for the local GCS server (anonymous credentials)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project=settings.bigquery_project,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": settings.gcs_endpoint},
    )
