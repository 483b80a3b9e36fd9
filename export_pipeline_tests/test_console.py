"""The run's terminal account (graph/console.py) and readable durations, without a cloud."""

from __future__ import annotations

import re
import subprocess
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from export_pipeline.config import REPO_ROOT
from export_pipeline.durations import readable
from export_pipeline.graph.console import render_summary


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.04, "0.0 s"),
        (12.34, "12.3 s"),
        (59.94, "59.9 s"),
        (59.96, "1 min 00 s"),
        (619.767, "10 min 20 s"),
        (timedelta(minutes=10, seconds=19, microseconds=767000), "10 min 20 s"),
        (7500, "2 h 05 min"),
        (timedelta(days=3, hours=4, minutes=10), "3 d 04 h"),
        (-5, "-5.0 s"),
    ],
)
def test_durations_read_as_people_write_them(value, text) -> None:
    assert readable(value) == text


@given(st.floats(min_value=0, max_value=10**8, allow_nan=False))
def test_a_duration_never_prints_like_a_timedelta(seconds: float) -> None:
    text = readable(seconds)
    assert re.fullmatch(r"\d+\.\d s|\d+ min \d\d s|\d+ h \d\d min|\d+ d \d\d h", text), text


def test_summary_names_exports_tables_rows_and_failed_checks() -> None:
    entries = [
        {"asset": "dynamodb/Orders_export", "export": "full_seed: 1 export, 2,000 items"},
        {"asset": "bigquery/d/t", "table": "p.d.t", "rows": 2000, "load": "full"},
        {"check": "row_count_matches_export", "asset": "bigquery/d/t", "passed": True},
        {"check": "freshness_check", "asset": "bigquery/d/t", "passed": False},
        {"check": "schema_unchanged", "asset": "bigquery/d/t", "passed": False, "severity": "WARN"},
        {"failed_step": "bigquery__d__u"},
    ]
    lines = render_summary("aws_to_bigquery", "0123456789abcdef", False, 75.2, entries)
    assert lines[1] == "aws_to_bigquery FAILED in 1 min 15 s (run 01234567)"
    assert "  exported  dynamodb/Orders_export: full_seed: 1 export, 2,000 items" in lines
    assert "  loaded    p.d.t: 2,000 rows (full)" in lines
    assert "  checks    1 passed, 1 warned, 1 failed" in lines
    assert "            warned: bigquery/d/t schema_unchanged" in lines
    assert "            failed: bigquery/d/t freshness_check" in lines
    assert "  failed    bigquery__d__u" in lines
    assert render_summary("j", "r", True, 1.0, [])[-1] == "  nothing was exported or loaded"


def test_dagster_temporary_homes_and_the_project_home_are_ignored_by_git() -> None:
    for path in (".tmp_dagster_home_abc123/history/runs.db", ".dagster_home/history/runs.db"):
        result = subprocess.run(
            ["git", "check-ignore", "-q", path], cwd=REPO_ROOT, capture_output=True
        )
        assert result.returncode == 0, path
