"""The README's commands, run as a new user runs them: real CLIs in subprocesses.

The tour (`support.readme_tour`, session fixtures `tour` and `first_run`) is a
folder holding a copy of the repository's `dagster.yaml` and no DAGSTER_HOME,
so every command here meets the instance a user's checkout gives it; its
private local cloud is started by the first `dagster job execute`, as in the
README, and stopped with `export-pipeline local down` at the end of the session.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

from export_pipeline.config import REPO_ROOT
from export_pipeline.definitions import defs
from export_pipeline.local_cloud.settings import AWS_PORT_ENV, BIGQUERY_PORT_ENV
from export_pipeline_tests.support.readme_tour import JOB, Tour


def test_the_ui_instance_holds_the_runs_materializations_and_passed_checks(
    tour: Tour, first_run: subprocess.CompletedProcess[str]
) -> None:
    seen = tour.instance_contents()
    assert seen["runs"] == [["aws_to_bigquery", "SUCCESS"]]
    assert "bigquery/aws_raw/dynamodb_orders" in seen["materialized"]
    assert "rds/shopdb_snapshot_export" in seen["materialized"]
    assert {name for _, name, _ in seen["checks"]} == {
        "row_count_matches_export",
        "schema_unchanged",
        "freshness_check",
    }
    assert all(passed for _, _, passed in seen["checks"]), seen["checks"]
    # The instance is on disk in the checkout, and a second command adds to it.
    assert (tour.folder / ".dagster_home" / "history" / "runs.db").exists()
    assert not list(tour.folder.glob(".tmp_dagster_home_*"))


def test_the_run_prints_a_short_account_and_a_summary(
    first_run: subprocess.CompletedProcess[str],
) -> None:
    output = first_run.stderr + first_run.stdout
    lines = [line for line in output.splitlines() if line.strip()]
    assert " - DEBUG - " not in output
    # The run started the cloud: one line says the demo data are fresh.
    assert output.count("local cloud started with fresh demo data") == 1
    assert "Telemetry" not in output
    assert "downloaded s3://" not in output and "loaded s3://" not in output
    # Short: a few lines per export, per table and per conversion step or transfer
    # (8 tables, 2 DynamoDB conversions in 2 groups each, 2 Storage Transfer jobs).
    assert len(lines) <= 100, "\n".join(lines)
    summary = output[output.index("aws_to_bigquery succeeded in") :]
    assert "exported  dynamodb/Orders_export: full_seed: 1 export, 2,000 items" in summary
    assert re.search(
        r"loaded\s+export-pipeline-local\.aws_raw\.dynamodb_orders: 2,000 rows", summary
    )
    assert re.search(
        r"export-pipeline-local\.aws_raw\.rds_shop_orders: [\d,]+ rows \(replace\)", summary
    )
    assert "rds/shopdb_snapshot_export: snapshot rds:shopdb-" in summary
    checks = len(defs.resolve_asset_graph().asset_check_keys)  # every table's checks
    assert re.search(rf"checks\s+{checks} passed, 0 failed", summary)
    # One line per table load, naming the rows and the target table.
    assert re.search(
        r"Orders: 2,000 rows in export-pipeline-local\.aws_raw\.dynamodb_orders \(full, [\d.]+ s\)",
        output,
    )


def test_both_sources_record_the_same_keys_and_a_link_that_opens_locally(
    tour: Tour, first_run: subprocess.CompletedProcess[str]
) -> None:
    metadata = tour.instance_contents()["metadata"]
    shared = {
        "dagster/row_count",
        "dagster/table_name",
        "load",
        "bigquery_table_url",
        "duration_seconds",
    }
    for asset in ("bigquery/aws_raw/dynamodb_orders", "bigquery/aws_raw/rds_shop_orders"):
        assert shared <= set(metadata[asset]), (asset, sorted(metadata[asset]))
        link = metadata[asset]["bigquery_table_url"]
        assert link.startswith(f"http://127.0.0.1:{tour.env[BIGQUERY_PORT_ENV]}/"), link
        with urllib.request.urlopen(link, timeout=30) as response:
            table = json.loads(response.read())
        assert table["tableReference"]["tableId"] == asset.rsplit("/", 1)[1]
    for asset in ("dynamodb/Orders_export", "rds/shopdb_snapshot_export"):
        assert {"export_summary", "duration_seconds"} <= set(metadata[asset]), asset


def test_status_gives_region_and_credentials(
    tour: Tour, first_run: subprocess.CompletedProcess[str]
) -> None:
    text = tour.run("export-pipeline", "local", "status").stdout
    assert re.search(r"^  AWS region:\s+eu-west-1$", text, re.M), text
    assert "any AWS access key and secret work" in text
    as_json = json.loads(tour.run("export-pipeline", "local", "status", "--json").stdout)
    assert as_json["aws_region"] == "eu-west-1"
    assert as_json["running"] is True


def test_the_docs_way_of_querying_the_data_works(
    tour: Tour, first_run: subprocess.CompletedProcess[str]
) -> None:
    """docs/local-cloud.md's Python block, run as written but for this cloud's ports."""
    text = (REPO_ROOT / "docs" / "local-cloud.md").read_text(encoding="utf-8")
    block = re.search(r"## Look at the data yourself.*?```python\n(.*?)```", text, re.S)
    assert block is not None
    code = block.group(1)
    assert "127.0.0.1:4566" in code and "127.0.0.1:9050" in code
    code = code.replace("127.0.0.1:4566", f"127.0.0.1:{tour.env[AWS_PORT_ENV]}")
    code = code.replace("127.0.0.1:9050", f"127.0.0.1:{tour.env[BIGQUERY_PORT_ENV]}")
    # No credentials in the environment: the snippet must bring its own.
    env = {k: v for k, v in tour.env.items() if not k.startswith("AWS_")}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "2000"  # Orders' ItemCount
    assert lines[1].startswith("rds:shopdb-")
    assert "dynamodb_orders" in lines[3] and "rds_shop_orders" in lines[3]
    assert lines[4].startswith("{'customerId': 'c-0000', 'orderId': 'o-000000', 'total': Decimal(")
    assert lines[-1] == "2000"  # COUNT(*) in BigQuery


def test_the_documented_rds_reload_loads_only_the_table(
    tour: Tour, first_run: subprocess.CompletedProcess[str], tmp_path: Path
) -> None:
    """docs/rds.md's reload: the table asset alone, from a named export; no export starts."""
    import boto3

    task = tour.instance_contents()["metadata"]["rds/shopdb_snapshot_export"][
        "export_task_identifier"
    ]
    rds = boto3.client(
        "rds",
        endpoint_url=f"http://127.0.0.1:{tour.env[AWS_PORT_ENV]}",
        region_name="eu-west-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    tasks_before = rds.describe_export_tasks()["ExportTasks"]
    config = tmp_path / "reload.yaml"
    config.write_text(
        "ops:\n  bigquery__aws_raw__rds_shop_orders:\n    config:\n"
        f"      export_task_identifier: {task}\n"
    )
    result = tour.run(
        "dagster",
        "asset",
        "materialize",
        "-m",
        "export_pipeline",
        "--select",
        "bigquery/aws_raw/rds_shop_orders",
        "-c",
        str(config),
    )
    assert f"loading export(s) ['{task}'] from the run config" in result.stderr
    assert rds.describe_export_tasks()["ExportTasks"] == tasks_before
    seen = tour.instance_contents()
    assert seen["runs"][0][1] == "SUCCESS"


def test_the_tour_shows_an_incremental_merge_with_deletes(
    tour: Tour, first_run: subprocess.CompletedProcess[str]
) -> None:
    """README's tour: mutate, let 20 minutes pass, run again: Orders is MERGEd, not reloaded."""
    assert "dynamodb/Orders_export: full_seed" in first_run.stderr
    changes = json.loads(
        tour.run("export-pipeline", "local", "mutate", "--seed", "11", "--json").stdout
    )
    orders = changes["dynamodb"]["Orders"]
    assert orders["deleted"] > 0 and orders["created"] > 0
    moved = tour.run("export-pipeline", "local", "pass-time", "--minutes", "20").stdout
    assert "1 high-water mark(s)" in moved
    # The DynamoDB job is enough here (the README runs aws_to_bigquery, which includes it).
    second = tour.run(*JOB[:-1], "dynamodb_to_bigquery").stderr
    summary = second[second.index("dynamodb_to_bigquery succeeded in") :]
    assert re.search(r"dynamodb/Orders_export: incremental: 1 export, [\d,]+ items", summary)
    rows = 2000 + orders["created"] - orders["deleted"]
    assert f"dynamodb_orders: {rows:,} rows (incremental)" in summary, summary
    # `mutate` adds the attribute updatedAt: the schema checks (WARN) of both tables say so.
    assert re.search(r"checks\s+4 passed, 2 warned, 0 failed", summary), summary
    assert "warned: bigquery/aws_raw/dynamodb_orders schema_unchanged" in summary
    assert "merging" in second
