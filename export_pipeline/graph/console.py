"""What a run prints on the terminal: the pipeline's own lines, short, and a summary at the end.

Dagster's default console logger prints every engine event at DEBUG (about
100 lines for the demo) with the job name and run id on each line. Every job
of the project uses this logger instead (its run config default,
`loggers: {console: {config: {log_level: INFO}}}`): at INFO a line is
`HH:MM:SS  <step>  <message>`, and when the run ends the process that
started it prints what was exported, what was loaded where (rows), the checks
and the time. `log_level: DEBUG` brings Dagster's engine events back.

The summary is assembled across processes: each step runs in a process of its
own (the multiprocess executor), so each step's logger appends what it saw
(materializations, check results, failures) to a small file named after the
run in the temporary folder, and the run's own process reads it when the run
ends and removes it. The run's events, with all their metadata, are in the
Dagster instance as always; this is only the terminal's account.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dagster import DagsterEventType, Field, InitLoggerContext, logger

from export_pipeline.contract import (
    EXPORT_SUMMARY_METADATA,
    LOAD_METADATA,
    ROW_COUNT_METADATA,
    TABLE_NAME_METADATA,
)
from export_pipeline.durations import readable

DEFAULT_LOG_LEVEL = "INFO"
LOGGER_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": DEFAULT_LOG_LEVEL}}}}
_SUMMARY_FOLDER = "export_pipeline_run_summaries"


def summary_path(run_id: str) -> Path:
    """Where the steps of run `run_id` leave what the summary needs."""
    return Path(tempfile.gettempdir()) / _SUMMARY_FOLDER / f"{run_id}.jsonl"


def _meta(record: logging.LogRecord) -> dict[str, Any]:
    return record.__dict__.get("dagster_meta") or {}


class _LineHandler(logging.Handler):
    """`HH:MM:SS  <step>  <message>` for the records at or above the configured level."""

    def emit(self, record: logging.LogRecord) -> None:
        meta = _meta(record)
        message = meta.get("orig_message") or record.getMessage()
        where = meta.get("step_key") or meta.get("job_name") or ""
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        level = "" if record.levelno == logging.INFO else f"{record.levelname}: "
        try:
            sys.stderr.write(f"{stamp}  {where}  {level}{message}\n")
            sys.stderr.flush()
        except (OSError, ValueError):  # a closed terminal must not fail the run
            pass


class _SummaryHandler(logging.Handler):
    """Collects the run's outcomes in `summary_path(run_id)`; prints them when the run ends."""

    def __init__(self, run_id: str) -> None:
        super().__init__(logging.DEBUG)
        self.run_id = run_id
        self.started = time.monotonic()

    def emit(self, record: logging.LogRecord) -> None:
        event = _meta(record).get("dagster_event")
        if event is None:
            return
        try:
            kind = event.event_type
            if kind == DagsterEventType.RUN_START:
                self.started = time.monotonic()
            elif kind == DagsterEventType.ASSET_MATERIALIZATION:
                self._append(_materialized(event))
            elif kind == DagsterEventType.ASSET_CHECK_EVALUATION:
                data = event.asset_check_evaluation_data
                self._append(
                    {
                        "check": data.check_name,
                        "asset": data.asset_key.to_user_string(),
                        "passed": data.passed,
                        "severity": data.severity.value,
                    }
                )
            elif kind == DagsterEventType.STEP_FAILURE:
                self._append({"failed_step": event.step_key})
            elif kind in (DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE):
                succeeded = kind == DagsterEventType.RUN_SUCCESS
                self._print(event.job_name, succeeded)
        except Exception as exc:  # the account must never fail the run it describes
            sys.stderr.write(f"(run summary unavailable: {exc})\n")

    def _append(self, entry: dict[str, Any]) -> None:
        path = summary_path(self.run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as out:  # one short write: appends stay whole
            out.write(json.dumps(entry, default=str) + "\n")

    def _print(self, job_name: str, succeeded: bool) -> None:
        path = summary_path(self.run_id)
        entries = []
        if path.exists():
            entries = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line]
            path.unlink()
        elapsed = time.monotonic() - self.started
        lines = render_summary(job_name, self.run_id, succeeded, elapsed, entries)
        sys.stderr.write("\n".join(lines) + "\n")
        sys.stderr.flush()


def _materialized(event: Any) -> dict[str, Any]:
    materialization = event.step_materialization_data.materialization
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    return {
        "asset": materialization.asset_key.to_user_string(),
        "export": metadata.get(EXPORT_SUMMARY_METADATA),
        "table": metadata.get(TABLE_NAME_METADATA),
        "rows": metadata.get(ROW_COUNT_METADATA),
        "load": metadata.get(LOAD_METADATA),
    }


def render_summary(
    job_name: str, run_id: str, succeeded: bool, seconds: float, entries: list[dict[str, Any]]
) -> list[str]:
    """The closing account of a run, one line per export, per table, and the checks."""
    outcome = "succeeded" if succeeded else "FAILED"
    lines = ["", f"{job_name} {outcome} in {readable(seconds)} (run {run_id[:8]})"]
    exported = [e for e in entries if e.get("export")]
    loaded = [e for e in entries if e.get("table")]
    checks = [e for e in entries if "check" in e]
    failed_steps = sorted({e["failed_step"] for e in entries if e.get("failed_step")})
    for label, rows in (
        ("exported", [f"{e['asset']}: {e['export']}" for e in exported]),
        (
            "loaded",
            [
                f"{e['table']}: {e['rows']:,} rows" + (f" ({e['load']})" if e.get("load") else "")
                if isinstance(e.get("rows"), int)
                else f"{e['table']}"
                for e in loaded
            ],
        ),
    ):
        for index, row in enumerate(sorted(rows)):
            lines.append(f"  {label if index == 0 else '':<9} {row}")
    if checks:
        # A WARN check that does not pass is a warning (e.g. schema_unchanged after
        # a source change), not a failure: the run and its tables are fine.
        unpassed = [e for e in checks if not e["passed"]]
        warned = sorted(f"{e['asset']} {e['check']}" for e in unpassed if _is_warning(e))
        failed = sorted(f"{e['asset']} {e['check']}" for e in unpassed if not _is_warning(e))
        passed = len(checks) - len(unpassed)
        counts = f"{passed} passed, " + (f"{len(warned)} warned, " if warned else "")
        lines.append(f"  {'checks':<9} {counts}{len(failed)} failed")
        lines += [f"  {'':<9} warned: {name}" for name in warned]
        lines += [f"  {'':<9} failed: {name}" for name in failed]
    if failed_steps:
        lines.append(f"  {'failed':<9} {', '.join(failed_steps)}")
    if not (exported or loaded or checks or failed_steps):
        lines.append("  nothing was exported or loaded")
    return lines


@logger(
    config_schema={
        "log_level": Field(
            str,
            default_value=DEFAULT_LOG_LEVEL,
            description="INFO: the pipeline's lines and the summary. DEBUG: also Dagster's "
            "engine events (step starts, outputs, resource set-up).",
        )
    },
    description="Short lines on stderr and a summary of the run when it ends.",
)
def console_logger(init_context: InitLoggerContext) -> logging.Logger:
    level = logging.getLevelName(str(init_context.logger_config["log_level"]).upper())
    if not isinstance(level, int):
        raise ValueError(f"log_level: expected DEBUG, INFO, WARNING or ERROR, got {level!r}")
    run_logger = logging.Logger(f"export_pipeline.run.{os.getpid()}", logging.DEBUG)
    lines = _LineHandler(level)
    run_logger.addHandler(lines)
    run_logger.addHandler(_SummaryHandler(init_context.run_id or "no-run-id"))
    return run_logger


def _is_warning(check: dict) -> bool:
    return check.get("severity") == "WARN"
