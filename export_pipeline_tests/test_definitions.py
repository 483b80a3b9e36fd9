"""The Dagster definitions load, validate and hold what the demo configuration asks for."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    AssetsDefinition,
    Definitions,
    build_schedule_context,
    validate_run_config,
)

from export_pipeline.config import DEFAULT_CONFIG_PATH, REPO_ROOT, PipelineConfig, load_config
from export_pipeline.definitions import build_definitions

DAGSTER = Path(sys.executable).with_name("dagster")
DG = Path(sys.executable).with_name("dg")

# What pipeline.yaml (the demo) declares, spelled out so a renaming shows here.
EXPECTED_ASSETS = {
    ("dynamodb", "Orders_export"): ("dynamodb", {"dynamodb", "s3"}),
    ("bigquery", "aws_raw", "dynamodb_orders"): ("dynamodb", {"bigquery"}),
    ("dynamodb", "Products_export"): ("dynamodb", {"dynamodb", "s3"}),
    ("bigquery", "aws_raw", "dynamodb_products"): ("dynamodb", {"bigquery"}),
    ("rds", "shopdb_snapshot_export"): ("rds", {"rds", "s3"}),
    ("bigquery", "aws_raw", "rds_shop_customers"): ("rds", {"bigquery"}),
    ("bigquery", "aws_raw", "rds_shop_orders"): ("rds", {"bigquery"}),
    ("bigquery", "aws_raw", "rds_shop_type_zoo"): ("rds", {"bigquery"}),
    ("rds", "appdb_snapshot_export"): ("rds_postgres", {"rds", "s3"}),
    ("bigquery", "aws_raw", "rds_app_public_accounts"): ("rds_postgres", {"bigquery"}),
    ("bigquery", "aws_raw", "rds_app_public_type_zoo"): ("rds_postgres", {"bigquery"}),
    ("bigquery", "aws_raw", "rds_app_sales_orders"): ("rds_postgres", {"bigquery"}),
}
EXPECTED_JOBS = {
    "aws_to_bigquery",
    "dynamodb_to_bigquery",
    "rds_to_bigquery",
    "rds_postgres_to_bigquery",
}
EXPECTED_RESOURCES = {"cloud", "s3", "dynamodb", "rds", "bigquery"}


@pytest.fixture(scope="module")
def demo_config() -> PipelineConfig:
    return load_config(DEFAULT_CONFIG_PATH)


@pytest.fixture(scope="module")
def defs(demo_config: PipelineConfig) -> Definitions:
    return build_definitions(demo_config)


def _assets(defs: Definitions) -> list[AssetsDefinition]:
    return [a for a in defs.assets or [] if isinstance(a, AssetsDefinition)]


def test_definitions_resolve(defs: Definitions) -> None:
    repository = defs.get_repository_def()
    assert {job.name for job in repository.get_all_jobs()} >= EXPECTED_JOBS
    assert set(defs.resources or {}) >= EXPECTED_RESOURCES


def test_expected_assets_groups_and_kinds(defs: Definitions) -> None:
    found: dict[tuple[str, ...], tuple[str, set[str]]] = {}
    for assets_def in _assets(defs):
        for key in assets_def.keys:
            found[tuple(key.path)] = (
                assets_def.group_names_by_key[key],
                set(assets_def.specs_by_key[key].kinds),
            )
    assert found == EXPECTED_ASSETS


def test_every_asset_requires_the_cloud_resource(defs: Definitions) -> None:
    missing = [
        key.to_user_string()
        for assets_def in _assets(defs)
        for key in assets_def.keys
        if "cloud" not in assets_def.required_resource_keys
    ]
    assert missing == []


def test_every_asset_is_tagged_with_its_source(defs: Definitions) -> None:
    for assets_def in _assets(defs):
        for key in assets_def.keys:
            source = assets_def.specs_by_key[key].tags.get("export_pipeline/source")
            assert source == EXPECTED_ASSETS[tuple(key.path)][0], key


def test_source_jobs_select_only_their_source(defs: Definitions) -> None:
    repository = defs.get_repository_def()
    for job_name, prefix in (
        ("dynamodb_to_bigquery", "dynamodb"),
        ("rds_to_bigquery", "rds"),
        ("rds_postgres_to_bigquery", "rds_postgres"),
    ):
        keys = repository.get_job(job_name).asset_layer.executable_asset_keys
        expected = {
            AssetKey(list(k)) for k, (group, _) in EXPECTED_ASSETS.items() if group == prefix
        }
        assert set(keys) == expected, job_name
    everything = repository.get_job("aws_to_bigquery").asset_layer.executable_asset_keys
    assert set(everything) == {AssetKey(list(k)) for k in EXPECTED_ASSETS}


def test_sensors_one_per_rds_source_and_one_for_completed_exports(
    defs: Definitions, demo_config
) -> None:
    names = {s.name for s in defs.sensors or []}
    assert names == {
        f"rds_snapshot_sensor_{i.identifier.replace('-', '_')}" for i in demo_config.rds.instances
    } | {"export_completion_sensor", "freshness_checks_sensor"}


def test_schedule_requests_a_valid_run(defs: Definitions, demo_config) -> None:
    schedule = defs.get_schedule_def("aws_to_bigquery_schedule")
    assert schedule.cron_schedule == demo_config.schedule.cron
    assert schedule.execution_timezone == demo_config.schedule.timezone
    job = defs.resolve_job_def(schedule.job_name)
    assert job.name == "aws_to_bigquery"
    context = build_schedule_context(scheduled_execution_time=datetime(2026, 1, 2, 3, tzinfo=UTC))
    result = schedule.evaluate_tick(context)
    assert result.run_requests, result.skip_message
    for request in result.run_requests:
        validate_run_config(job, request.run_config)


def _run_from_repo_root(command: list[str], dagster_home: Path) -> str:
    """Run a command-line tool from the repository root on the demo configuration, as the
    README and .ci/run do; it must succeed. Returns what it printed."""
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "EXPORT_PIPELINE_CONFIG": str(DEFAULT_CONFIG_PATH),
    }
    done = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_dagster_cli_validates_the_code_location(tmp_path: Path) -> None:
    """`dagster definitions validate -m export_pipeline` (the package's lazy `defs` is
    found from the repository root)."""
    output = _run_from_repo_root(
        [str(DAGSTER), "definitions", "validate", "-m", "export_pipeline"], tmp_path
    )
    assert "All code locations passed validation" in output


def test_dg_check_defs_loads_the_project(tmp_path: Path) -> None:
    """`dg check defs` (dagster-dg-cli) loads the project as pyproject.toml's [tool.dg]
    describes it."""
    output = _run_from_repo_root([str(DG), "check", "defs", "--use-active-venv"], tmp_path)
    assert "All definitions loaded successfully" in output, output


def test_repo_config_is_the_demo() -> None:
    """The defaults the tests above rely on: pipeline.yaml at the repository root."""
    assert DEFAULT_CONFIG_PATH == REPO_ROOT / "pipeline.yaml"
    assert load_config(DEFAULT_CONFIG_PATH).rds.instances


def test_steps_run_in_a_preloaded_forkserver_and_max_concurrent_stays_settable(
    defs: Definitions,
) -> None:
    from dagster import DagsterInvalidConfigError, validate_run_config

    from export_pipeline.definitions import STEP_EXECUTOR, _forkserver_config

    job = defs.resolve_job_def("aws_to_bigquery")
    assert job.executor_def is STEP_EXECUTOR
    assert _forkserver_config({"max_concurrent": 3}) == {
        "start_method": {"forkserver": {}},
        "max_concurrent": 3,
    }
    validate_run_config(job, {"execution": {"config": {"max_concurrent": 3}}})
    with pytest.raises(DagsterInvalidConfigError, match="max_concurent"):
        validate_run_config(job, {"execution": {"config": {"max_concurent": 3}}})


@pytest.mark.parametrize("kind", ["dynamodb", "rds"])
def test_reload_jobs_select_the_tables_and_their_checks_never_an_export(
    defs: Definitions, kind: str
) -> None:
    job = defs.resolve_job_def(f"{kind}_reload")
    selected = {key.to_user_string() for key in job.asset_layer.selected_asset_keys}
    assert selected and all(key.startswith("bigquery/") for key in selected)
    full = defs.resolve_job_def(f"{kind}_to_bigquery")
    everything = {key.to_user_string() for key in full.asset_layer.selected_asset_keys}
    assert selected == {key for key in everything if key.startswith("bigquery/")}
    assert any(name.startswith("freshness_check") for name in job.graph.node_dict)
