"""`dg check defs` (dagster-dg-cli) loads the project as pyproject.toml's [tool.dg] describes it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from export_pipeline.config import DEFAULT_CONFIG_PATH, REPO_ROOT

DG = Path(sys.executable).with_name("dg")


def test_dg_check_defs_loads_the_project(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path),
        "EXPORT_PIPELINE_CONFIG": str(DEFAULT_CONFIG_PATH),
    }
    done = subprocess.run(
        [str(DG), "check", "defs", "--use-active-venv"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "All definitions loaded successfully" in output, output
