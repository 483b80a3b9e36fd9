"""Freshness checks: every BigQuery table must keep up with the configured schedule.

One Dagster last-update freshness check (`freshness_check`) per BigQuery
table asset (`bigquery/<dataset>/<table>`), derived from `schedule.cron` /
`schedule.timezone`:

* deadline: the schedule's own cron. At any moment the deadline is the most
  recent scheduled tick, D.
* lower bound: D minus the longest interval between two consecutive ticks, so
  the check passes when the table was loaded at or after the tick BEFORE D.
  In words: each scheduled run must have loaded the table before the next
  tick. The whole interval is the allowance for a run, so a run still in
  progress right after a tick (its table loaded by the previous run) is not a
  false alarm; a missed or failed run makes the check fail at the next tick.
  A run that takes longer than the interval overlaps the next one and is late
  by any measure. The interval is measured from the cron, not assumed: 25
  hours for a daily cron in a zone with DST (the night the clocks go back),
  72 hours over a weekend for a weekdays-only cron.

They run in two ways: in every job that loads a table (Dagster adds the
checks of selected assets to the job, and the check step runs after the
tables' steps), so a load is followed by its check; and from
`freshness_checks_sensor`, which re-evaluates a passing check once its next
deadline has passed — that is what makes a check fail when the schedule is
off, the daemon down or a run stuck. The sensor starts RUNNING: a tick only
reads the event log, and a freshness check nobody evaluates would never
report a missed run.

Severity is WARN (Dagster's default for freshness): a late table is a
warning; a wrong one (row count) is an ERROR.

Dagster 1.13 marks these factories "superseded" by `FreshnessPolicy`, which
is not an asset check and does not show as one in a job's run; they are
supported, and their supersession warning is silenced here only.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from datetime import datetime, timedelta

from dagster import (
    AssetChecksDefinition,
    AssetKey,
    DefaultSensorStatus,
    SensorDefinition,
    build_last_update_freshness_checks,
    build_sensor_for_freshness_checks,
)
from dagster._utils.schedules import cron_string_iterator
from dagster._utils.warnings import SupersessionWarning

from export_pipeline.config import ScheduleConfig

FRESHNESS_CHECK = "freshness_check"  # the name Dagster's factory gives every check
SENSOR_NAME = "freshness_checks_sensor"
SENSOR_INTERVAL_SECONDS = 60
# How far ahead the tick intervals are sampled: a year covers DST and weekly
# patterns of daily/hourly crons; the tick cap keeps a per-minute cron cheap
# (about 0.1 s) at the price of not seeing a gap longer than ~16 hours in it.
_SAMPLE_DAYS = 400
_SAMPLE_TICKS = 1000


def longest_tick_interval(schedule: ScheduleConfig, start: datetime | None = None) -> timedelta:
    """The longest time between two consecutive ticks of the schedule (real seconds)."""
    start = start or datetime.now().astimezone()
    ticks = cron_string_iterator(
        start_timestamp=start.timestamp(),
        cron_string=schedule.cron,
        execution_timezone=schedule.timezone,
    )
    horizon = start.timestamp() + _SAMPLE_DAYS * 86400
    previous = next(ticks).timestamp()
    longest = 0.0
    for _ in range(_SAMPLE_TICKS):
        tick = next(ticks).timestamp()
        longest = max(longest, tick - previous)
        previous = tick
        if tick > horizon:
            break
    return timedelta(seconds=longest)


def build_freshness_checks(
    keys: Sequence[AssetKey], schedule: ScheduleConfig
) -> list[AssetChecksDefinition]:
    """The freshness checks of every BigQuery table, in one subsettable step.

    One step for all tables, not one each: in a job run with the multiprocess
    executor every step is a process that imports the project (seconds of
    CPU). It runs once the run's loads are done (only the checks of the tables
    the run selects); when a load fails, Dagster skips the step for that run
    and `freshness_checks_sensor` evaluates the checks later.
    """
    if not keys:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SupersessionWarning)
        return list(
            build_last_update_freshness_checks(
                assets=keys,
                deadline_cron=schedule.cron,
                timezone=schedule.timezone,
                lower_bound_delta=longest_tick_interval(schedule),
            )
        )


def build_freshness_sensor(checks: Sequence[AssetChecksDefinition]) -> list[SensorDefinition]:
    """The sensor that re-evaluates the checks when they may have become overdue."""
    if not checks:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SupersessionWarning)
        return [
            build_sensor_for_freshness_checks(
                freshness_checks=checks,
                name=SENSOR_NAME,
                minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
                default_status=DefaultSensorStatus.RUNNING,
            )
        ]
