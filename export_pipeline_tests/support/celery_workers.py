"""Celery worker processes for the Dagster Celery executor, on the machine's broker.

Uses RabbitMQ on 127.0.0.1:5672 (guest/guest) as the broker and Redis on
127.0.0.1:6379 as the result backend, through the variables the shipped
executor configuration reads (deploy/celery/executor.yaml). Every test run
gets a queue of its own, in a copy of that file: workers left over from
another run (or another checkout on the same broker) listen on other queues
and can never take this run's steps.

The workers are started as deploy/README.md tells a deployment to start them
(`dagster-celery worker start -A dagster_celery.app -y <executor config> -q
<queue>`), each in a process group of its own that is killed at the end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from export_pipeline.config import REPO_ROOT

BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"
BACKEND_URL = "redis://127.0.0.1:6379/0"
# What deploy/celery/executor.yaml reads the broker and backend from.
BROKER_ENV = {"DAGSTER_CELERY_BROKER_URL": BROKER_URL, "DAGSTER_CELERY_BACKEND_URL": BACKEND_URL}
DEPLOYED_EXECUTOR = REPO_ROOT / "deploy" / "celery" / "executor.yaml"
BIN = Path(sys.executable).parent


def executor_file_on_a_queue_of_its_own(folder: Path) -> tuple[Path, str]:
    """A copy of deploy/celery/executor.yaml naming a new queue; the copy and the queue."""
    queue = "export_pipeline_test_" + uuid.uuid4().hex[:12]
    document: dict[str, Any] = yaml.safe_load(DEPLOYED_EXECUTOR.read_text(encoding="utf-8"))
    document["execution"]["config"]["config_source"]["task_default_queue"] = queue
    path = folder / f"celery-{queue}.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path, queue


def _answering(names: list[str], timeout: float) -> set[str]:
    """The workers among `names` that answer a ping over the broker within `timeout`."""
    from celery import Celery

    app = Celery(broker=BROKER_URL)
    try:
        replies = app.control.ping(destination=names, timeout=timeout)
    finally:
        app.close()
    return {name for reply in replies for name in reply}


@contextmanager
def celery_workers(
    config_yaml: Path, queue: str, count: int, env: dict[str, str], start_timeout: float = 60
) -> Iterator[list[str]]:
    """`count` workers (one task at a time each) on `queue`; yields their node names.

    `config_yaml` is the executor configuration (its broker and backend read
    from `env`). Returns once every worker answers a ping, so tasks sent
    afterwards can reach any of them. The workers' output goes to
    `celery-<name>.log` beside `config_yaml`.
    """
    logs = config_yaml.parent
    host = os.uname().nodename
    names = [f"{queue}-{index}@{host}" for index in range(count)]
    environment = {**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}
    workers = []
    try:
        for name in names:
            log = (logs / f"celery-{name}.log").open("w")
            workers.append(
                subprocess.Popen(
                    [
                        str(BIN / "dagster-celery"),
                        *("worker", "start", "-A", "dagster_celery.app"),
                        *("-y", str(config_yaml), "-q", queue, "-n", name.split("@")[0]),
                        *("--loglevel", "WARNING", "--", "--concurrency=1"),
                    ],
                    env=environment,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            log.close()
        deadline = time.monotonic() + start_timeout
        answering: set[str] = set()
        while answering != set(names):
            exited = [w.args for w in workers if w.poll() is not None]
            assert not exited, f"a Celery worker exited during start-up: see {logs}/celery-*.log"
            assert time.monotonic() < deadline, f"workers not answering: {set(names) - answering}"
            answering |= _answering(names, timeout=1.0)
        yield names
    finally:
        for worker in workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
