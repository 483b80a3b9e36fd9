"""Which exports bring a BigQuery table up to date: full, or a chain of incremental windows.

AWS's rules for incremental exports: a window is 15 minutes to 24 hours long,
and its start must lie inside the point-in-time-recovery window (PITR keeps 35
days, and disabling/re-enabling PITR restarts it). The high-water mark (the
moment the BigQuery table reflects) is kept with the data in BigQuery, so
this module is pure: given the mark, the PITR window and "now", it says what
to export and why (`ExportPlan.strategy` is recorded as metadata).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from export_pipeline.durations import readable

MIN_WINDOW = timedelta(minutes=15)
MAX_WINDOW = timedelta(hours=24)


class ExportStrategy(StrEnum):
    FULL = "full"  # mode: full — every run exports the whole table
    FULL_SEED = "full_seed"  # incremental mode, no high-water mark yet
    FULL_FALLBACK = "full_fallback"  # the chain cannot continue (PITR window)
    INCREMENTAL = "incremental"  # one or more chained windows from the mark
    INCREMENTAL_WIDENED = "incremental_widened"  # too soon: window widened back to 15 min
    UP_TO_DATE = "up_to_date"  # the mark is already at or past "now"

    @property
    def is_full(self) -> bool:
        return self in (ExportStrategy.FULL, ExportStrategy.FULL_SEED, ExportStrategy.FULL_FALLBACK)


@dataclass(frozen=True)
class ExportPlan:
    strategy: ExportStrategy
    reason: str
    windows: list[tuple[datetime, datetime]] = field(default_factory=list)


def plan_incremental(
    *,
    watermark: datetime | None,
    now: datetime,
    earliest_restorable: datetime | None,
    mark_from_full_export: bool = False,
) -> ExportPlan:
    """The exports that take a table from `watermark` to `now`.

    - no mark: a full export seeds the table;
    - PITR off, or the mark before the earliest restorable time: full fallback;
    - less than 15 minutes since the mark: one window `[now - 15 min, now)`
      if that start is still restorable (re-applying changes is harmless),
      else a full export; also a full export when the mark was set by a full
      export: the widened window would start before it, and an item created
      before that export and deleted after it would be missing from the
      window (AWS leaves out items created and deleted inside a window) with
      no row-level write time to notice it by (see `merge_changes`);
    - otherwise windows from the mark to now, each 15 min to 24 h, equal-sized
      when more than one is needed (so none is too short).
    """
    if watermark is None:
        return ExportPlan(
            ExportStrategy.FULL_SEED, "no high-water mark yet: seeding with a full export"
        )
    if earliest_restorable is None:
        return ExportPlan(
            ExportStrategy.FULL_FALLBACK,
            "point-in-time recovery is not enabled, so no incremental chain: full export",
        )
    if watermark < earliest_restorable:
        return ExportPlan(
            ExportStrategy.FULL_FALLBACK,
            f"high-water mark {watermark.isoformat()} is before the earliest restorable time "
            f"{earliest_restorable.isoformat()} (PITR window passed or PITR re-enabled): "
            "the incremental chain is broken, full export",
        )
    if now <= watermark:
        return ExportPlan(
            ExportStrategy.UP_TO_DATE,
            f"high-water mark {watermark.isoformat()} is not before {now.isoformat()}: "
            "nothing to export",
        )
    gap = now - watermark
    if gap < MIN_WINDOW:
        start = now - MIN_WINDOW
        if mark_from_full_export:
            return ExportPlan(
                ExportStrategy.FULL_FALLBACK,
                f"only {readable(gap)} since the full export that set the high-water mark: "
                "a widened window would start before it and could miss items created before it and "
                "deleted since, so a full export again",
            )
        if start < earliest_restorable:
            return ExportPlan(
                ExportStrategy.FULL_FALLBACK,
                f"only {readable(gap)} since the high-water mark and widening the window back to "
                f"{start.isoformat()} leaves the PITR window: full export",
            )
        return ExportPlan(
            ExportStrategy.INCREMENTAL_WIDENED,
            f"only {readable(gap)} since the high-water mark {watermark.isoformat()}: "
            f"window widened back to 15 minutes from {start.isoformat()} "
            "(changes re-applied are harmless)",
            [(start, now)],
        )
    count = math.ceil(gap / MAX_WINDOW)
    # Whole seconds: the times travel as epoch seconds and come back as the mark.
    step = timedelta(seconds=math.ceil(gap.total_seconds() / count))
    windows = []
    start = watermark
    for index in range(count):
        end = now if index == count - 1 else start + step
        windows.append((start, end))
        start = end
    reason = f"{readable(gap)} since the high-water mark {watermark.isoformat()}: " + (
        "one incremental window" if count == 1 else f"catching up in {count} chained windows"
    )
    return ExportPlan(ExportStrategy.INCREMENTAL, reason, windows)
