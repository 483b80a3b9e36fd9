"""The export planner: full seed, chained windows, widening, fallbacks (pure function)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from export_pipeline.dynamodb.plan import (
    MAX_WINDOW,
    MIN_WINDOW,
    ExportStrategy,
    plan_incremental,
)

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
LONG_AGO = NOW - timedelta(days=30)


def test_no_mark_seeds_with_a_full_export() -> None:
    plan = plan_incremental(watermark=None, now=NOW, earliest_restorable=LONG_AGO)
    assert plan.strategy is ExportStrategy.FULL_SEED
    assert plan.windows == []


def test_one_window_from_the_mark_to_now() -> None:
    mark = NOW - timedelta(hours=2)
    plan = plan_incremental(watermark=mark, now=NOW, earliest_restorable=LONG_AGO)
    assert plan.strategy is ExportStrategy.INCREMENTAL
    assert plan.windows == [(mark, NOW)]


@pytest.mark.parametrize("hours", [24.5, 49, 24 * 7 + 3])
def test_catch_up_in_chained_windows_of_valid_length(hours: float) -> None:
    mark = NOW - timedelta(hours=hours)
    plan = plan_incremental(watermark=mark, now=NOW, earliest_restorable=LONG_AGO)
    assert plan.strategy is ExportStrategy.INCREMENTAL
    assert len(plan.windows) > 1
    assert plan.windows[0][0] == mark and plan.windows[-1][1] == NOW
    for (_start, end), following in zip(plan.windows, plan.windows[1:], strict=False):
        assert end == following[0]  # chained, no gap, no overlap
    for start, end in plan.windows:
        assert MIN_WINDOW <= end - start <= MAX_WINDOW


def test_too_soon_widens_back_to_fifteen_minutes() -> None:
    mark = NOW - timedelta(minutes=3)
    plan = plan_incremental(watermark=mark, now=NOW, earliest_restorable=LONG_AGO)
    assert plan.strategy is ExportStrategy.INCREMENTAL_WIDENED
    assert plan.windows == [(NOW - MIN_WINDOW, NOW)]
    assert "widened" in plan.reason


def test_too_soon_outside_the_pitr_window_falls_back_to_full() -> None:
    mark = NOW - timedelta(minutes=3)
    plan = plan_incremental(watermark=mark, now=NOW, earliest_restorable=NOW - timedelta(minutes=5))
    assert plan.strategy is ExportStrategy.FULL_FALLBACK


def test_mark_older_than_the_pitr_window_falls_back_to_full() -> None:
    mark = NOW - timedelta(days=40)
    plan = plan_incremental(watermark=mark, now=NOW, earliest_restorable=NOW - timedelta(days=35))
    assert plan.strategy is ExportStrategy.FULL_FALLBACK
    assert "chain is broken" in plan.reason


def test_pitr_disabled_falls_back_to_full() -> None:
    plan = plan_incremental(watermark=NOW - timedelta(hours=1), now=NOW, earliest_restorable=None)
    assert plan.strategy is ExportStrategy.FULL_FALLBACK


def test_mark_at_or_after_now_exports_nothing() -> None:
    plan = plan_incremental(watermark=NOW, now=NOW, earliest_restorable=LONG_AGO)
    assert plan.strategy is ExportStrategy.UP_TO_DATE
    assert plan.windows == []


def test_too_soon_after_a_full_export_exports_in_full_again() -> None:
    mark = NOW - timedelta(minutes=3)
    plan = plan_incremental(
        watermark=mark, now=NOW, earliest_restorable=LONG_AGO, mark_from_full_export=True
    )
    assert plan.strategy is ExportStrategy.FULL_FALLBACK
    assert "full export again" in plan.reason
