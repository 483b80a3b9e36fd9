"""deploy/'s distributed executors and Helm values hold together, without a cluster or a broker.

- deploy/k8s/executor.yaml and deploy/celery/executor.yaml validate, through
  `EXPORT_PIPELINE_EXECUTOR` / `EXPORT_PIPELINE_EXECUTOR_CONFIG`, against every
  job of the shipped definitions (Dagster's `validate_run_config`), and a
  misspelt key fails;
- a step pod built by dagster-k8s's own job builder from deploy/k8s/executor.yaml
  holds the resources, secrets and service account the file names;
- every key of deploy/k8s/values.yaml is one of the chart's documented keys
  (deploy/k8s/chart-keys.yaml) with the documented type, and the values agree
  with deploy/dagster.yaml and with the executor file.
"""

from __future__ import annotations

import copy
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import DagsterInvalidConfigError, Definitions, validate_run_config

from export_pipeline.config import DEFAULT_CONFIG_PATH, REPO_ROOT, ConfigError, load_config
from export_pipeline.definitions import STEP_EXECUTOR, build_definitions
from export_pipeline.executors import (
    EXECUTOR_CONFIG_ENV,
    EXECUTOR_ENV,
    chosen_executor,
    executor_named,
)

DEPLOY = REPO_ROOT / "deploy"
K8S_EXECUTOR = DEPLOY / "k8s" / "executor.yaml"
CELERY_EXECUTOR = DEPLOY / "celery" / "executor.yaml"
VALUES = DEPLOY / "k8s" / "values.yaml"
CHART_KEYS = DEPLOY / "k8s" / "chart-keys.yaml"
INSTANCE = DEPLOY / "dagster.yaml"
EXECUTOR_FILES = {"k8s": K8S_EXECUTOR, "celery": CELERY_EXECUTOR}
# What deploy/celery/executor.yaml reads from the environment.
CELERY_URLS = {
    "DAGSTER_CELERY_BROKER_URL": "amqp://user:password@rabbitmq:5672//",
    "DAGSTER_CELERY_BACKEND_URL": "redis://redis:6379/0",
}


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _definitions(
    monkeypatch: pytest.MonkeyPatch, executor: str, settings: Path | None
) -> Definitions:
    """The shipped definitions as the code location builds them in that environment."""
    monkeypatch.setenv(EXECUTOR_ENV, executor)
    if settings is None:
        monkeypatch.delenv(EXECUTOR_CONFIG_ENV, raising=False)
    else:
        monkeypatch.setenv(EXECUTOR_CONFIG_ENV, str(settings))
    for name, value in CELERY_URLS.items():
        monkeypatch.setenv(name, value)
    return build_definitions(load_config(DEFAULT_CONFIG_PATH), chosen_executor(STEP_EXECUTOR))


# --- the executor files ---------------------------------------------------------


def _holds(resolved: Any, given: Any) -> bool:
    """`resolved` (with Dagster's defaults filled in) holds everything `given` sets."""
    if isinstance(given, dict):
        return isinstance(resolved, dict) and all(
            key in resolved and _holds(resolved[key], value) for key, value in given.items()
        )
    return resolved == given


@pytest.mark.parametrize("executor", ["k8s", "celery"])
def test_every_job_runs_on_the_shipped_executor_settings(
    monkeypatch: pytest.MonkeyPatch, executor: str
) -> None:
    settings = _load(EXECUTOR_FILES[executor])["execution"]["config"]
    defs = _definitions(monkeypatch, executor, EXECUTOR_FILES[executor])
    jobs = list(defs.resolve_all_job_defs())
    assert {job.name for job in jobs} >= {"aws_to_bigquery", "dynamodb_to_bigquery"}
    for job in jobs:
        # As a scheduled run starts: no run config; the file configures the executor.
        resolved = validate_run_config(job, {})["execution"]
        assert list(resolved) == [executor], job.name
        for key, value in settings.items():
            if key not in ("broker", "backend"):  # read from the environment
                assert _holds(resolved[executor][key], value), (job.name, key)
    # The same document is valid run config for the plain executor, too.
    plain = _definitions(monkeypatch, executor, None).resolve_job_def("aws_to_bigquery")
    validate_run_config(plain, _load(EXECUTOR_FILES[executor]))


def test_a_run_replaces_the_files_top_level_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    job = _definitions(monkeypatch, "k8s", K8S_EXECUTOR).resolve_job_def("aws_to_bigquery")
    resolved = validate_run_config(job, {"execution": {"config": {"max_concurrent": 2}}})
    assert resolved["execution"]["k8s"]["max_concurrent"] == 2
    assert resolved["execution"]["k8s"]["service_account_name"] == "export-pipeline-steps"


@pytest.mark.parametrize(
    ("executor", "right", "wrong"),
    [
        ("k8s", "step_k8s_config:", "step_k8s_confg:"),
        ("k8s", "service_account_name:", "service_acount_name:"),
        ("celery", "config_source:", "config_sources:"),
    ],
)
def test_a_misspelt_executor_key_fails_validation(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, executor: str, right: str, wrong: str
) -> None:
    text = EXECUTOR_FILES[executor].read_text(encoding="utf-8")
    assert right in text
    misspelt = tmp_path / "executor.yaml"
    misspelt.write_text(text.replace(right, wrong, 1), encoding="utf-8")
    job = _definitions(monkeypatch, executor, misspelt).resolve_job_def("aws_to_bigquery")
    with pytest.raises(DagsterInvalidConfigError, match=wrong.rstrip(":")):
        validate_run_config(job, {})


def test_per_step_settings_name_steps_of_the_main_job(monkeypatch: pytest.MonkeyPatch) -> None:
    per_step = _load(K8S_EXECUTOR)["execution"]["config"]["per_step_k8s_config"]
    job = _definitions(monkeypatch, "k8s", K8S_EXECUTOR).resolve_job_def("aws_to_bigquery")
    ops = {node.name for node in job.graph.node_defs}
    assert per_step and set(per_step) <= ops, set(per_step) - ops


def _step_pod(step: str) -> Any:
    """The Kubernetes Job the k8s executor creates for `step`, built by dagster-k8s.

    The executor's settings become a container context exactly as
    `k8s_job_executor` builds it (the file's top-level keys, `step_k8s_config`,
    then the step's `per_step_k8s_config`); the image and instance come from
    the run launcher in a cluster, here from the Helm values.
    """
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import (
        DagsterK8sJobConfig,
        UserDefinedDagsterK8sConfig,
        construct_dagster_k8s_job,
    )

    settings = _load(K8S_EXECUTOR)["execution"]["config"]
    context = K8sContainerContext(
        service_account_name=settings.get("service_account_name"),
        env_secrets=settings.get("env_secrets"),
        env_vars=settings.get("env_vars"),
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(settings["step_k8s_config"]),
    ).merge(
        K8sContainerContext(
            run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(
                settings["per_step_k8s_config"].get(step, {})
            )
        )
    )
    image = _load(VALUES)["dagster-user-deployments"]["deployments"][0]["image"]
    job_config = DagsterK8sJobConfig(
        job_image=f"{image['repository']}:{image['tag']}",
        dagster_home="/opt/dagster/dagster_home",
        instance_config_map="dagster-instance",
        postgres_password_secret="dagster-postgresql-secret",
    )
    return construct_dagster_k8s_job(
        job_config,
        args=["dagster", "api", "execute_step"],
        job_name=f"dagster-step-{step.replace('_', '-').lower()}"[:63],
        user_defined_k8s_config=context.run_k8s_config,
        component="step_worker",
    )


def test_a_step_pod_holds_the_resources_secrets_and_account_of_the_file() -> None:
    load = _step_pod("bigquery__aws_raw__dynamodb_orders").spec.template.spec
    waiting = _step_pod("dynamodb__Orders_export").spec.template.spec
    for pod in (load, waiting):
        assert pod.service_account_name == "export-pipeline-steps"
        assert pod.restart_policy == "Never"
        (container,) = pod.containers
        secrets = [source.secret_ref.name for source in container.env_from if source.secret_ref]
        assert secrets == ["export-pipeline-aws", "export-pipeline-gcp"]
        env = {variable.name: variable.value for variable in container.env}
        assert env["EXPORT_PIPELINE_ENV"] == "production"
    load_resources = load.containers[0].resources
    assert load_resources.requests == {"cpu": "1", "memory": "1536Mi", "ephemeral-storage": "6Gi"}
    assert load_resources.limits == {"memory": "3Gi", "ephemeral-storage": "12Gi"}
    # An export step only waits: the per-step setting replaces the default.
    assert waiting.containers[0].resources.requests["memory"] == "384Mi"
    assert waiting.containers[0].image == "registry.example.com/export-pipeline:0.1.0"


# --- choosing the executor ------------------------------------------------------


def test_without_the_variable_every_job_runs_on_the_multiprocess_executor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(EXECUTOR_ENV, raising=False)
    monkeypatch.delenv(EXECUTOR_CONFIG_ENV, raising=False)
    assert chosen_executor(STEP_EXECUTOR) is STEP_EXECUTOR


def test_a_wrong_executor_name_or_file_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as wrong:
        executor_named("k9s", STEP_EXECUTOR)
    assert str(wrong.value) == (
        "EXPORT_PIPELINE_EXECUTOR='k9s': expected one of multiprocess, celery, k8s"
    )
    # dagster-k8s missing: its import fails (None in sys.modules makes it fail).
    monkeypatch.setitem(sys.modules, "dagster_k8s", None)
    with pytest.raises(ConfigError) as missing:
        executor_named("k8s", STEP_EXECUTOR)
    assert str(missing.value) == (
        "EXPORT_PIPELINE_EXECUTOR='k8s' needs dagster-k8s, which is not installed: "
        'pip install -e ".[distributed]"'
    )
    monkeypatch.setenv(EXECUTOR_ENV, "celery")
    monkeypatch.setenv(EXECUTOR_CONFIG_ENV, str(tmp_path / "absent.yaml"))
    with pytest.raises(ConfigError, match=r"absent\.yaml: cannot read the file"):
        chosen_executor(STEP_EXECUTOR)
    flat = tmp_path / "flat.yaml"
    flat.write_text("broker: amqp://rabbitmq//\n", encoding="utf-8")
    monkeypatch.setenv(EXECUTOR_CONFIG_ENV, str(flat))
    with pytest.raises(ConfigError, match=r"flat\.yaml: expected a mapping under `execution"):
        chosen_executor(STEP_EXECUTOR)


# --- the Helm values ------------------------------------------------------------


def _scalar_problem(path: str, value: Any, kind: str) -> str | None:
    """What is wrong with `value` at `path` for the documented type `kind`, if anything."""
    if kind.startswith("enum:"):
        choices = kind.removeprefix("enum:").split("|")
        return None if value in choices else f"{path}: {value!r} is not one of {choices}"
    checks = {
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "object": lambda v: isinstance(v, dict),
        "any": lambda v: True,
        "list:string": lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v),
        "list:object": lambda v: isinstance(v, list) and all(isinstance(i, dict) for i in v),
        "env": lambda v: (
            (isinstance(v, dict) and all(isinstance(i, str) for i in v.values()))
            or (isinstance(v, list) and all(isinstance(i, dict) and "name" in i for i in v))
        ),
        "resources": lambda v: (
            isinstance(v, dict)
            and set(v) <= {"requests", "limits"}
            and all(isinstance(q, dict) for q in v.values())
        ),
    }
    if kind not in checks:
        return f"{path}: chart-keys.yaml names an unknown type {kind!r}"
    return None if checks[kind](value) else f"{path}: expected {kind}, got {value!r}"


def helm_problems(values: Any, documented: Any, path: str = "") -> list[str]:
    """Every key of `values` the chart does not document, or of the wrong type."""
    if isinstance(documented, str):
        problem = _scalar_problem(path, values, documented)
        return [problem] if problem else []
    if isinstance(documented, list):
        if not isinstance(values, list):
            return [f"{path}: expected a list, got {values!r}"]
        return [
            problem
            for index, item in enumerate(values)
            for problem in helm_problems(item, documented[0], f"{path}[{index}]")
        ]
    if not isinstance(values, dict):
        return [f"{path}: expected a mapping, got {values!r}"]
    problems = []
    for key, value in values.items():
        where = f"{path}.{key}" if path else key
        if key not in documented:
            problems.append(f"{where}: not a key of the chart (valid here: {sorted(documented)})")
        else:
            problems += helm_problems(value, documented[key], where)
    return problems


def test_the_helm_values_use_only_the_charts_documented_keys() -> None:
    assert helm_problems(_load(VALUES), _load(CHART_KEYS)) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            lambda v: v["dagster-user-deployments"]["deployments"][0].update(
                dagsterApiGrpcArg=["-m", "x"]
            ),
            "dagster-user-deployments.deployments[0].dagsterApiGrpcArg: not a key of the chart",
        ),
        (
            lambda v: v["runLauncher"].update(type="K8SRunLauncher"),
            "runLauncher.type: 'K8SRunLauncher' is not one of",
        ),
        (
            lambda v: v["postgresql"]["service"].update(port="5432"),
            "postgresql.service.port: expected integer, got '5432'",
        ),
        (
            lambda v: v["concurrency"]["pools"].update(default_limit=1),
            "concurrency.pools.default_limit: not a key of the chart",
        ),
    ],
)
def test_a_misspelt_or_mistyped_helm_key_is_named(change: Any, problem: str) -> None:
    values = copy.deepcopy(_load(VALUES))
    change(values)
    problems = helm_problems(values, _load(CHART_KEYS))
    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_the_helm_values_agree_with_the_instance_and_the_executor() -> None:
    values, instance = _load(VALUES), _load(INSTANCE)
    runs, pools = values["concurrency"]["runs"], values["concurrency"]["pools"]
    assert runs["maxConcurrentRuns"] == instance["concurrency"]["runs"]["max_concurrent_runs"]
    assert runs["tagConcurrencyLimits"] == instance["concurrency"]["runs"]["tag_concurrency_limits"]
    assert pools == {
        "defaultLimit": instance["concurrency"]["pools"]["default_limit"],
        "granularity": instance["concurrency"]["pools"]["granularity"],
    }
    monitoring = values["dagsterDaemon"]["runMonitoring"]
    assert {
        "enabled": monitoring["enabled"],
        "start_timeout_seconds": monitoring["startTimeoutSeconds"],
        "poll_interval_seconds": monitoring["pollIntervalSeconds"],
        "free_slots_after_run_end_seconds": monitoring["freeSlotsAfterRunEndSeconds"],
    } == instance["run_monitoring"]
    assert values["additionalInstanceConfig"]["run_retries"] == instance["run_retries"]
    for kind in ("sensors", "schedules"):
        daemon = values["dagsterDaemon"][kind]
        assert {
            "use_threads": daemon["useThreads"],
            "num_workers": daemon["numWorkers"],
        } == instance[kind]

    (deployment,) = values["dagster-user-deployments"]["deployments"]
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    module = pyproject["tool"]["dagster"]["module_name"]
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", module]
    assert deployment["env"][EXECUTOR_ENV] == "k8s"
    assert deployment["env"][EXECUTOR_CONFIG_ENV].endswith("/deploy/k8s/executor.yaml")
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}
    steps = _load(K8S_EXECUTOR)["execution"]["config"]
    assert [secret["name"] for secret in deployment["envSecrets"]] == steps["env_secrets"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["enabled"] is False


# --- what steps hand each other -------------------------------------------------


@pytest.mark.parametrize(
    ("executor", "in_gcs"), [("multiprocess", False), ("celery", True), ("k8s", True)]
)
def test_steps_on_other_machines_hand_their_outputs_over_through_gcs(
    monkeypatch: pytest.MonkeyPatch, executor: str, in_gcs: bool
) -> None:
    from export_pipeline.resources.step_outputs import GcsStepOutputs

    config = load_config(DEFAULT_CONFIG_PATH)
    assert config.gcs is not None  # the demo stages in its local cloud's bucket
    defs = _definitions(monkeypatch, executor, None)
    io_manager = defs.resources.get("io_manager")
    assert isinstance(io_manager, GcsStepOutputs) is in_gcs
    if in_gcs:
        assert io_manager.gcs.staging_bucket == config.gcs.staging_bucket
        assert io_manager.object_name(["run-1", "step", "result"]) == (
            f"{config.gcs.staging_prefix}/step_outputs/run-1/step/result"
        )
    # Without a staging bucket there is nothing shared to write to: the default stays.
    without_gcs = config.model_copy(update={"gcs": None})
    chosen = chosen_executor(STEP_EXECUTOR)
    assert "io_manager" not in build_definitions(without_gcs, chosen).resources
