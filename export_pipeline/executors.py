"""Which Dagster executor runs the steps of every job: a choice of the deployment, not of a run.

Dagster fixes one executor per job when the definitions load, and every process
that loads them (the webserver, the daemon, the run worker and, for the
distributed executors, each step's Celery worker or pod) must make the same
choice, or the run's `execution:` config no longer validates where the step
runs. The choice is therefore read from the environment, which a deployment
sets once for all its processes (`EXPORT_PIPELINE_EXECUTOR`):

- `multiprocess` (the default): each step in a process of the run's machine;
  no broker, no cluster.
- `celery`: dagster-celery's `celery_executor`; each step is a Celery task on
  a broker (RabbitMQ, Redis) run by `dagster-celery worker` processes on any
  machine that shares the Dagster instance (deploy/README.md, "Celery").
- `k8s`: dagster-k8s's `k8s_job_executor`; each step is a Kubernetes Job, a
  pod of its own (deploy/README.md, "Kubernetes").

The last two need the `distributed` extra (`pip install -e ".[distributed]"`).

`EXPORT_PIPELINE_EXECUTOR_CONFIG` names a YAML file whose `execution: config:`
block configures the executor for every run, scheduled and sensor runs
included, which pass no run config of their own (deploy/k8s/executor.yaml,
deploy/celery/executor.yaml; `dagster-celery worker start -y` reads the same
file). A run's own `execution: config:` replaces the file's top-level keys.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from dagster import ExecutorDefinition, Permissive

from export_pipeline.config import ConfigError

EXECUTOR_ENV = "EXPORT_PIPELINE_EXECUTOR"
EXECUTOR_CONFIG_ENV = "EXPORT_PIPELINE_EXECUTOR_CONFIG"
DEFAULT_EXECUTOR = "multiprocess"


def _celery() -> ExecutorDefinition:
    from dagster_celery import celery_executor

    return celery_executor


def _k8s() -> ExecutorDefinition:
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor


# name (also the Dagster executor's own name) -> (the executor, the package that provides it)
DISTRIBUTED_EXECUTORS: dict[str, tuple[Callable[[], ExecutorDefinition], str]] = {
    "celery": (_celery, "dagster-celery"),
    "k8s": (_k8s, "dagster-k8s"),
}


def executor_named(name: str, multiprocess: ExecutorDefinition) -> ExecutorDefinition:
    """The executor `name` stands for (`multiprocess` is the one the caller passes in)."""
    if name == DEFAULT_EXECUTOR:
        return multiprocess
    if name not in DISTRIBUTED_EXECUTORS:
        choices = ", ".join([DEFAULT_EXECUTOR, *DISTRIBUTED_EXECUTORS])
        raise ConfigError(f"{EXECUTOR_ENV}={name!r}: expected one of {choices}")
    load, package = DISTRIBUTED_EXECUTORS[name]
    try:
        return load()
    except ImportError:
        raise ConfigError(
            f"{EXECUTOR_ENV}={name!r} needs {package}, which is not installed: "
            'pip install -e ".[distributed]"'
        ) from None


def with_shared_step_outputs(
    resources: dict[str, Any], executor: ExecutorDefinition
) -> dict[str, Any]:
    """`resources`, with step outputs in GCS when `executor` runs steps on other machines.

    Only with a staging bucket (`gcs:`); without one the default IO manager
    stays, which workers on one machine share (deploy/README.md).
    """
    from export_pipeline.resources.step_outputs import GcsStepOutputs

    gcs = resources.get("gcs")
    if executor.name not in DISTRIBUTED_EXECUTORS or gcs is None or not gcs.staging_enabled:
        return resources
    return {**resources, "io_manager": GcsStepOutputs(gcs=gcs)}


def executor_settings(path: Path) -> dict[str, Any]:
    """The `execution: config:` block of an executor configuration file."""
    where = f"{EXECUTOR_CONFIG_ENV}={path}"
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read the file ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML ({exc})") from None
    settings = (document or {}).get("execution", {}) if isinstance(document, dict) else None
    settings = settings.get("config") if isinstance(settings, dict) else None
    if not isinstance(settings, dict):
        raise ConfigError(f"{where}: expected a mapping under `execution: config:`")
    return settings


def with_settings(executor: ExecutorDefinition, settings: dict[str, Any]) -> ExecutorDefinition:
    """`executor` configured by `settings`, whose top-level keys a run's own config replaces.

    Dagster checks the merged configuration against the executor's schema when a
    run starts (and `validate_run_config` does without one): a misspelt key fails.
    """

    def merged(given: dict[str, Any]) -> dict[str, Any]:
        return {**settings, **(given or {})}

    return executor.configured(merged, name=executor.name, config_schema=Permissive())


def chosen_executor(multiprocess: ExecutorDefinition) -> ExecutorDefinition:
    """The executor `EXPORT_PIPELINE_EXECUTOR` names (`multiprocess` when it is unset),
    configured by the file `EXPORT_PIPELINE_EXECUTOR_CONFIG` names, if any."""
    name = os.environ.get(EXECUTOR_ENV, "").strip().lower() or DEFAULT_EXECUTOR
    executor = executor_named(name, multiprocess)
    settings_file = os.environ.get(EXECUTOR_CONFIG_ENV, "").strip()
    if settings_file:
        executor = with_settings(executor, executor_settings(Path(settings_file)))
    return executor
