"""The local cloud's control: up/down/status/ensure_running, the CLI, and real clients on it.

Most tests use the session's cloud (`local_cloud`); the up/down life cycle and
the concurrent start need a cloud of their own, started once in this module.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import types
import urllib.request
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from google.api_core.exceptions import NotFound
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from export_pipeline.config import PipelineConfig, load_config
from export_pipeline.local_cloud import _process, control
from export_pipeline.local_cloud._process import LocalCloudError, ProcessRecord
from export_pipeline.local_cloud.clients import AwsClients
from export_pipeline.local_cloud.rds_client import live_store
from export_pipeline.local_cloud.settings import (
    AWS_PORT_ENV,
    BIGQUERY_GRPC_PORT_ENV,
    BIGQUERY_PORT_ENV,
    GCS_PORT_ENV,
    STATE_DIR_ENV,
    LocalCloudSettings,
)
from export_pipeline_tests.support.local_cloud import fresh_local_cloud_settings

CLI = str(Path(sys.executable).with_name("export-pipeline"))


def _env_for(settings: LocalCloudSettings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            STATE_DIR_ENV: str(settings.state_dir),
            AWS_PORT_ENV: str(settings.aws_port),
            BIGQUERY_PORT_ENV: str(settings.bigquery_port),
            BIGQUERY_GRPC_PORT_ENV: str(settings.bigquery_grpc_port),
            GCS_PORT_ENV: str(settings.gcs_port),
        }
    )
    return env


def _cli(settings: LocalCloudSettings, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CLI, *args],
        env=kwargs.pop("env", None) or _env_for(settings),
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


def _pids(status: control.LocalCloudStatus) -> tuple[int | None, int | None]:
    return status.aws.pid, status.bigquery.pid


# -- The session cloud -----------------------------------------------------------


def test_session_cloud_is_running_and_seeded(local_cloud: LocalCloudSettings) -> None:
    status = control.status(local_cloud)
    assert status.running, status
    assert status.seeded
    assert status.aws.pid != status.bigquery.pid
    assert status.aws_endpoint_url == f"http://127.0.0.1:{local_cloud.aws_port}"
    assert Path(status.aws.log_path).is_file()
    assert Path(status.bigquery.log_path).is_file()


def test_session_cloud_holds_the_demo_data(aws_clients, pipeline_config: PipelineConfig) -> None:
    """`up` ran the demo seeders: the configured tables and DB sources exist."""
    tables = aws_clients.dynamodb.list_tables()["TableNames"]
    for table in pipeline_config.dynamodb.tables:
        assert table.name in tables
    instances = {
        i["DBInstanceIdentifier"] for i in aws_clients.rds.describe_db_instances()["DBInstances"]
    }
    clusters = {
        c["DBClusterIdentifier"] for c in aws_clients.rds.describe_db_clusters()["DBClusters"]
    }
    for source in pipeline_config.rds.instances:
        assert source.identifier in (instances if source.kind == "instance" else clusters)


def test_up_is_idempotent(local_cloud: LocalCloudSettings, pipeline_config: PipelineConfig) -> None:
    before = control.status(local_cloud)
    again = control.up(local_cloud, pipeline_config)
    assert again.running
    assert _pids(again) == _pids(before)
    assert control.ensure_running(local_cloud, pipeline_config) == again


def test_status_json_from_the_console_script(local_cloud: LocalCloudSettings) -> None:
    result = _cli(local_cloud, "local", "status", "--json")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    expected = control.status(local_cloud)
    assert printed["running"] is True
    assert printed["aws_endpoint_url"] == local_cloud.aws_endpoint_url
    assert printed["bigquery_api_endpoint"] == local_cloud.bigquery_api_endpoint
    assert printed["bigquery_project"] == local_cloud.bigquery_project
    assert printed["state_dir"] == str(local_cloud.state_dir)
    assert (printed["aws"]["pid"], printed["bigquery"]["pid"]) == _pids(expected)
    assert printed["gcs_endpoint"] == local_cloud.gcs_endpoint
    assert printed["gcs"]["running"] is True
    assert printed["gcs"]["pid"] == expected.gcs.pid


def test_clients_work_against_the_printed_endpoints(
    local_cloud: LocalCloudSettings, pipeline_config: PipelineConfig, unique_name: str
) -> None:
    printed = json.loads(_cli(local_cloud, "local", "status", "--json").stdout)

    s3 = boto3.client(
        "s3",
        endpoint_url=printed["aws_endpoint_url"],
        aws_access_key_id=local_cloud.aws_access_key_id,
        aws_secret_access_key=local_cloud.aws_secret_access_key,
        region_name=pipeline_config.aws.region,
    )
    bucket = pipeline_config.aws.export_bucket
    key = f"tests/{unique_name}.txt"
    s3.put_object(Bucket=bucket, Key=key, Body=b"hello")
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"hello"
    location = s3.get_bucket_location(Bucket=bucket)["LocationConstraint"]
    assert location == pipeline_config.aws.region

    client = bigquery.Client(
        project=printed["bigquery_project"],
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": printed["bigquery_api_endpoint"]},
    )
    dataset = f"{printed['bigquery_project']}.{pipeline_config.bigquery.dataset}"
    assert client.get_dataset(dataset).location == pipeline_config.bigquery.location
    table_id = f"{dataset}.{unique_name}"
    client.create_table(
        bigquery.Table(
            table_id,
            schema=[
                bigquery.SchemaField("id", "INT64", mode="REQUIRED"),
                bigquery.SchemaField("amount", "NUMERIC"),
                bigquery.SchemaField("name", "STRING"),
            ],
        )
    )
    buffer = io.BytesIO()
    pq.write_table(
        pa.table(
            {
                "id": pa.array([2, 1], pa.int64()),
                "amount": pa.array(["1.5", "18446744073709551615"]).cast(pa.decimal128(38, 9)),
                "name": ["b", "a"],
            }
        ),
        buffer,
    )
    buffer.seek(0)
    client.load_table_from_file(
        buffer, table_id, job_config=bigquery.LoadJobConfig(source_format="PARQUET")
    ).result()
    rows = client.query(f"SELECT id, amount, name FROM `{table_id}` ORDER BY id").result()
    assert [(r.id, str(r.amount), r.name) for r in rows] == [
        (1, "18446744073709551615.000000000", "a"),
        (2, "1.500000000", "b"),
    ]
    client.close()


def test_aws_services_answer(aws_clients) -> None:
    assert aws_clients.sts.get_caller_identity()["Account"] == "123456789012"
    aws_clients.dynamodb.list_tables()
    aws_clients.rds.describe_db_instances()
    aws_clients.kms.list_keys()
    aws_clients.iam.list_roles()


def test_aws_server_serves_requests_concurrently(aws_clients, pipeline_config) -> None:
    """A request that holds its connection open must not block others (threaded server)."""
    host, port = aws_clients.s3.meta.endpoint_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as slow:
        slow.sendall(b"PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nab")  # incomplete
        started = time.monotonic()
        aws_clients.s3.head_bucket(Bucket=pipeline_config.aws.export_bucket)
        assert time.monotonic() - started < 5


# -- A cloud of its own: concurrent start, down, restart --------------------------------


SMALL_CONFIG = """
aws:
  region: eu-west-1
  export_bucket: export-pipeline-small
bigquery:
  project: export-pipeline-local
  dataset: small_raw
dynamodb:
  tables: [{name: Products, mode: full}]
rds:
  instances:
    - identifier: shopdb
      export_only: [shop.orders]
      iam_role_arn: arn:aws:iam::123456789012:role/export-pipeline-rds-export
      kms_key_id: alias/export-pipeline-local
"""


def test_concurrent_ensure_running_then_mutate_down_up(
    tmp_path: Path, local_cloud: LocalCloudSettings
) -> None:
    """One cloud of its own (a small config keeps its seeding quick)."""
    settings = fresh_local_cloud_settings(tmp_path / "cloud")
    config_path = tmp_path / "pipeline.yaml"
    config_path.write_text(SMALL_CONFIG)
    config = load_config(config_path)
    env = _env_for(settings) | {"EXPORT_PIPELINE_CONFIG": str(config_path)}
    script = textwrap.dedent(
        """
        import json
        from export_pipeline.config import current_config
        from export_pipeline.local_cloud import control
        from export_pipeline.local_cloud.settings import LocalCloudSettings
        status = control.ensure_running(LocalCloudSettings.from_env(), current_config())
        print(json.dumps(status.to_dict()))
        """
    )
    try:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", script],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        outputs = [p.communicate(timeout=180) for p in procs]
        for proc, (_out, err) in zip(procs, outputs, strict=True):
            assert proc.returncode == 0, err
        first, second = (json.loads(out) for out, _ in outputs)
        assert first["running"] and second["running"]
        assert first["seeded"] and second["seeded"]
        # Exactly one of the two started (and seeded) the cloud; the demo instance
        # has one automated snapshot, taken at its creation.
        assert sorted([first["started_fresh"], second["started_fresh"]]) == [False, True]
        seeded_snapshots = AwsClients.for_config(settings, config).rds.describe_db_snapshots(
            DBInstanceIdentifier="shopdb"
        )["DBSnapshots"]
        assert len(seeded_snapshots) == 1, seeded_snapshots
        assert first["aws"]["pid"] == second["aws"]["pid"]
        assert first["bigquery"]["pid"] == second["bigquery"]["pid"]
        status = control.status(settings)
        assert _pids(status) == (first["aws"]["pid"], first["bigquery"]["pid"])
        # Exactly one start of each server was logged.
        for name in ("aws", "bigquery"):
            log = (settings.state_dir / "logs" / f"{name}.log").read_text()
            assert log.count(f"starting {name}") == 1

        # `local mutate` changes the demo data through the demo modules.
        clients = AwsClients.for_config(settings, config)
        before = clients.dynamodb.scan(TableName="Products", Select="COUNT")["Count"]
        store = live_store(settings.state_dir, config.aws.region, "shopdb")
        seeded_orders = store.read_all("shop", "orders")
        result = _cli(settings, "local", "mutate", "--seed", "7", "--json", env=env)
        assert result.returncode == 0, result.stderr
        changes = json.loads(result.stdout)["dynamodb"]["Products"]
        after = clients.dynamodb.scan(TableName="Products", Select="COUNT")["Count"]
        assert changes["created"] > 0
        assert after == before + changes["created"] - changes["deleted"]
        assert store.read_all("shop", "orders") != seeded_orders  # mutate changed RDS too

        # A BigQuery table, which must go when AWS restarts from fresh demo data.
        client = control.bigquery_client(settings)
        table_id = f"{settings.bigquery_project}.{config.bigquery.dataset}.kept"
        client.create_table(bigquery.Table(table_id, schema=[bigquery.SchemaField("x", "INT64")]))
        client.close()

        # down stops this cloud's processes, and only them.
        session_pids = _pids(control.status(local_cloud))
        result = _cli(settings, "local", "down", env=env)
        assert result.returncode == 0, result.stderr
        assert "aws: stopped" in result.stdout and "bigquery: stopped" in result.stdout
        for pid in _pids(status):
            assert not _pid_exists(pid)
        after_down = control.status(settings)
        assert not after_down.running
        assert after_down.aws.pid is None and after_down.bigquery.pid is None
        assert control.status(local_cloud).running
        assert _pids(control.status(local_cloud)) == session_pids

        # up again: new processes, AWS re-seeded (in-memory state), and the BigQuery
        # dataset emptied with it, so that the two halves of the cloud agree.
        # Every source starts from the demo data again (RDS too), and `up` says so.
        result = _cli(settings, "local", "up", env=env)
        assert result.returncode == 0, result.stderr
        fresh = control.FRESH_START_LINE.format(dataset=config.bigquery.dataset)
        assert result.stdout.count(fresh) == 1, result.stdout
        assert store.read_all("shop", "orders") == seeded_orders
        again = control.up(settings, config)
        assert again.running and again.seeded and not again.started_fresh
        assert again.aws.pid not in _pids(status)
        client = control.bigquery_client(settings)
        with pytest.raises(NotFound):
            client.get_table(table_id)
        assert client.get_dataset(f"{settings.bigquery_project}.{config.bigquery.dataset}")
        client.close()
        clients = AwsClients.for_config(settings, config)
        clients.s3.head_bucket(Bucket=config.aws.export_bucket)
        assert clients.dynamodb.scan(TableName="Products", Select="COUNT")["Count"] == before
    finally:
        control.down(settings)
    assert not control.status(settings).aws.pid


def _pid_exists(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


# -- Safety and errors (no cloud needed) ----------------------------------------------


def test_down_never_signals_a_process_it_did_not_start(tmp_path: Path) -> None:
    settings = fresh_local_cloud_settings(tmp_path)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # A pid file naming a live process that is not our server (as after pid reuse).
        forged = ProcessRecord(
            name="aws",
            pid=bystander.pid,
            start_ticks=_process.process_start_ticks(bystander.pid),
            command=["python", "-m", "export_pipeline.local_cloud.aws_server"],
            host=settings.host,
            port=settings.aws_port,
            extra_ports={},
            log_path=str(tmp_path / "aws.log"),
            started_at=time.time(),
        )
        (tmp_path / "run").mkdir()
        forged.write(tmp_path / "run" / "aws.pid")
        assert not control.status(settings).aws.running
        assert control.down(settings) == {"aws": False, "bigquery": False, "gcs": False}
        assert bystander.poll() is None
        assert not (tmp_path / "run" / "aws.pid").exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_up_refuses_a_port_held_by_another_program(
    tmp_path: Path, pipeline_config: PipelineConfig
) -> None:
    settings = fresh_local_cloud_settings(tmp_path)
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind((settings.host, settings.bigquery_grpc_port))
        squatter.listen()
        with pytest.raises(LocalCloudError, match=str(settings.bigquery_grpc_port)):
            control.up(settings, pipeline_config)
    assert not control.status(settings).aws.pid  # nothing left running


def test_start_failure_points_at_the_log(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "broken.log"
    record = _process.spawn(
        "broken",
        [sys.executable, "-c", "import sys; print('cannot bind, sorry'); sys.exit(3)"],
        log_path=log,
        pid_path=tmp_path / "broken.pid",
        cwd=tmp_path,
        host="127.0.0.1",
        port=1,
    )
    with pytest.raises(LocalCloudError) as error:
        _process.wait_until(lambda: False, record=record, timeout=30, what="the broken server")
    assert "exited during start-up" in str(error.value)
    assert str(log) in str(error.value)
    assert "cannot bind, sorry" in str(error.value)


def test_start_timeout_points_at_the_log(tmp_path: Path) -> None:
    log = tmp_path / "slow.log"
    record = _process.spawn(
        "slow",
        [sys.executable, "-c", "import time; print('still loading'); time.sleep(30)"],
        log_path=log,
        pid_path=tmp_path / "slow.pid",
        cwd=tmp_path,
        host="127.0.0.1",
        port=1,
    )
    try:
        with pytest.raises(LocalCloudError, match="did not answer within") as error:
            _process.wait_until(lambda: False, record=record, timeout=0.5, what="the slow server")
        assert str(log) in str(error.value)
    finally:
        assert _process.stop(record)
    assert not _process.is_alive(record)


def test_cli_reports_a_bad_config_without_a_traceback(tmp_path: Path) -> None:
    settings = fresh_local_cloud_settings(tmp_path / "cloud")
    bad = tmp_path / "pipeline.yaml"
    bad.write_text("aws:\n  region: nowhere\n")
    env = _env_for(settings) | {"EXPORT_PIPELINE_CONFIG": str(bad)}
    result = _cli(settings, "local", "up", env=env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert str(bad) in result.stderr and "aws.region" in result.stderr
    assert not (settings.state_dir / "run").exists()  # nothing was started


def test_spatial_extension_installs_for_a_fresh_home(tmp_path: Path) -> None:
    """bqemulator needs DuckDB's spatial extension; it must install offline into any HOME."""
    script = textwrap.dedent(
        f"""
        import duckdb
        from pathlib import Path
        from export_pipeline.local_cloud.bigquery_server import ensure_spatial_extension
        ensure_spatial_extension(Path({str(tmp_path / "fallback")!r}))
        con = duckdb.connect()
        con.execute("INSTALL spatial")  # what bqemulator runs: must not need the network
        con.execute("LOAD spatial")
        print("POINT=" + con.execute("SELECT ST_AsText(ST_Point(1, 2))").fetchone()[0])
        print("PATH=" + con.execute(
            "SELECT install_path FROM duckdb_extensions() WHERE extension_name = 'spatial'"
        ).fetchone()[0])
        """
    )
    missing_home = tmp_path / "no-such-home"
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=dict(os.environ, HOME=str(missing_home)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    printed = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert printed.get("POINT") == "POINT (1 2)", result.stdout
    assert printed["PATH"].startswith(str(tmp_path / "fallback")), result.stdout


def test_servers_exit_when_their_owner_dies(tmp_path: Path) -> None:
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    settings = fresh_local_cloud_settings(tmp_path)
    record = _process.spawn(
        "aws",
        control._command(settings, "aws", owner.pid),
        log_path=tmp_path / "aws.log",
        pid_path=tmp_path / "aws.pid",
        cwd=tmp_path,
        host=settings.host,
        port=settings.aws_port,
    )
    try:
        _process.wait_until(
            lambda: control._aws_healthy(settings, record),
            record=record,
            timeout=60,
            what="aws server",
        )
        owner.kill()
        owner.wait()
        deadline = time.monotonic() + 10
        while _process.is_alive(record) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _process.is_alive(record)
        assert "shutting down" in (tmp_path / "aws.log").read_text()
    finally:
        _process.stop(record)
        owner.kill()


def test_a_failing_seed_is_reported_and_retried(
    local_cloud: LocalCloudSettings, pipeline_config: PipelineConfig, monkeypatch, tmp_path
) -> None:
    # Fault injection: a demo module whose seed raises (no real module fails on purpose).
    broken = types.ModuleType("broken_demo_for_test")

    def seed(clients, config, settings):
        raise RuntimeError("no tables today")

    broken.seed = seed  # type: ignore[attr-defined]
    monkeypatch.setattr(control, "DEMO_MODULES", {"broken": broken})
    marker = local_cloud.state_dir / "run" / "aws-seeded.json"
    saved = marker.read_text()
    marker.unlink()
    try:
        with pytest.raises(LocalCloudError, match="no tables today") as error:
            control.up(local_cloud, pipeline_config)
        assert "broken_demo_for_test.seed" in str(error.value)
        seed_log = local_cloud.state_dir / "logs" / "seed.log"
        assert "RuntimeError: no tables today" in seed_log.read_text()
        assert not control.status(local_cloud).seeded
        assert control.status(local_cloud).running  # the servers stay up
    finally:
        marker.write_text(saved)
    assert control.status(local_cloud).seeded


def test_credentials_stay_out_of_logs_and_status(
    local_cloud: LocalCloudSettings, aws_clients, pipeline_config: PipelineConfig
) -> None:
    # A presigned URL carries the access key id in its query string: use one.
    url = aws_clients.s3.generate_presigned_url(
        "list_objects_v2", Params={"Bucket": pipeline_config.aws.export_bucket}
    )
    assert local_cloud.aws_access_key_id in url
    with urllib.request.urlopen(url) as response:
        assert response.status == 200
    printed = _cli(local_cloud, "local", "status", "--json").stdout
    logs = [p.read_text() for p in (local_cloud.state_dir / "logs").glob("*.log")]
    assert logs
    for text in [printed, *logs]:
        assert local_cloud.aws_access_key_id not in text
        assert local_cloud.aws_secret_access_key not in text


def test_cli_lists_its_commands(tmp_path: Path) -> None:
    settings = fresh_local_cloud_settings(tmp_path)
    result = _cli(settings, "--help")
    assert result.returncode == 0, result.stderr
    assert "local" in result.stdout and "dynamodb-to-parquet" in result.stdout
    result = _cli(settings, "local", "--help")
    for action in ("up", "down", "status", "mutate"):
        assert action in result.stdout
    # Nothing runs for this state folder: status says so, down has nothing to stop.
    printed = json.loads(_cli(settings, "local", "status", "--json").stdout)
    assert printed["running"] is False and printed["aws"]["detail"] == "not started"
    result = _cli(settings, "local", "down")
    assert result.returncode == 0
    assert "aws: was not running" in result.stdout
    # A relative state folder is taken from the working directory, and shown absolute.
    env = _env_for(settings) | {STATE_DIR_ENV: "relative-state"}
    printed = json.loads(_cli(settings, "local", "status", "--json", env=env, cwd=tmp_path).stdout)
    assert printed["state_dir"] == str(tmp_path / "relative-state")


def test_a_process_just_spawned_counts_as_alive(tmp_path: Path) -> None:
    """Right after Popen returns the child can still be inside exec() with an empty
    /proc/<pid>/cmdline; that must not read as "exited" (it once made `up` give up)."""
    records, alive_at_once = [], []
    for i in range(10):
        record = _process.spawn(
            f"sleeper{i}",
            [sys.executable, "-c", "import time; time.sleep(30)"],
            log_path=tmp_path / f"sleeper{i}.log",
            pid_path=tmp_path / f"sleeper{i}.pid",
            cwd=tmp_path,
            host="127.0.0.1",
            port=1,
        )
        records.append(record)
        alive_at_once.append(_process.is_alive(record))
    try:
        assert all(alive_at_once), alive_at_once
    finally:
        assert all(_process.stop_all(records))
    assert not any(_process.is_alive(record) for record in records)


def test_a_process_still_inside_exec_is_ours_only_if_we_started_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Right after Popen a process's command line can be empty (not mapped yet, seen
    under load). The timing cannot be forced, so the empty command line is stubbed."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = ProcessRecord(
            name="aws",
            pid=process.pid,
            start_ticks=_process.process_start_ticks(process.pid),
            command=["python", "-m", "export_pipeline.local_cloud.aws_server"],
            host="127.0.0.1",
            port=1,
            extra_ports={},
            log_path=str(tmp_path / "aws.log"),
            started_at=time.time(),
        )
        monkeypatch.setattr(_process, "process_command", lambda pid: [])
        assert not _process.is_alive(record)  # a bystander: never signalled
        monkeypatch.setattr(_process, "_CHILDREN", [process])
        assert _process.is_alive(record)  # our own child, still inside exec()
    finally:
        process.kill()
        process.wait()
