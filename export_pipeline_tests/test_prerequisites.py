"""A missing test prerequisite stops the suite once, before any test, in one line (a failure)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from export_pipeline.config import REPO_ROOT
from export_pipeline_tests.support import prerequisites
from export_pipeline_tests.support.local_cloud import free_ports


def test_without_chromium_on_path_the_run_fails_before_any_test_in_one_line() -> None:
    # PATH holds only the venv's bin: Python and pytest, no browser.
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "export_pipeline_tests/test_ui_browser.py",
            "export_pipeline_tests/test_config.py",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if "prerequisite" in line]
    assert len(lines) == 1, result.stdout
    assert "Chromium is not on PATH" in lines[0]
    assert "apt-get install -y chromium" in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert " passed" not in result.stdout  # stopped before test_config's tests ran


def test_servers_that_do_not_answer_get_one_line_each(monkeypatch: pytest.MonkeyPatch) -> None:
    closed_a, closed_b = free_ports(2)
    monkeypatch.setattr(prerequisites, "MARIADB_ADDRESS", ("127.0.0.1", closed_a))
    monkeypatch.setattr(prerequisites, "POSTGRESQL_ADDRESS", ("127.0.0.1", closed_b))
    lines = prerequisites.missing_lines(["mariadb", "postgresql", "mariadb"])
    assert len(lines) == 2
    assert "MariaDB" in lines[0] and "apt-get install -y mariadb-server" in lines[0]
    assert "PostgreSQL" in lines[1] and "apt-get install -y postgresql" in lines[1]
    assert prerequisites.missing_lines(["browser"]) == [
        "unknown test prerequisite 'browser' (known: "
        "['chromium', 'mariadb', 'postgresql', 'rabbitmq', 'redis'])"
    ]


def test_a_broker_and_a_result_store_that_do_not_answer_get_one_line_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    closed_a, closed_b = free_ports(2)
    monkeypatch.setattr(prerequisites, "RABBITMQ_ADDRESS", ("127.0.0.1", closed_a))
    monkeypatch.setattr(prerequisites, "REDIS_ADDRESS", ("127.0.0.1", closed_b))
    lines = prerequisites.missing_lines(["redis", "rabbitmq"])
    assert len(lines) == 2
    assert "RabbitMQ" in lines[0] and "apt-get install -y rabbitmq-server" in lines[0]
    assert "Redis" in lines[1] and "apt-get install -y redis-server" in lines[1]


def test_chromium_is_found_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "chromium-browser"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert prerequisites.find_chromium() == str(fake)
    fake.chmod(0o644)
    assert prerequisites.find_chromium() is None
