"""Soft and history deletes in the shared publishing layer: full replaces and incremental MERGEs."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest
from google.cloud.bigquery import SchemaField

from export_pipeline.bigquery.deletes import KeptDeletes, count_live_rows
from export_pipeline.bigquery.history import history_table_for
from export_pipeline.bigquery.publish import SelectColumn, merge_changes, replace_table
from export_pipeline.bigquery.staging import load_parquet_to_staging
from export_pipeline.bigquery.tables import BigQueryPublishError
from export_pipeline.bigquery.watermark import Watermark
from export_pipeline.table_settings import DeletesMode
from export_pipeline_tests.support.bigquery import rows

SOURCE = "arn:aws:dynamodb:eu-west-1:123456789012:table/Orders"
T0 = dt.datetime(2026, 11, 26, 0, 0, tzinfo=dt.UTC)
STAGING_SCHEMA = [
    SchemaField("pk", "STRING"),
    SchemaField("qty", "STRING"),
    SchemaField("ts", "INT64"),
    SchemaField("deleted", "BOOL"),
]
COLUMNS = [
    SelectColumn("pk", "`pk`", "STRING", description="Key."),
    SelectColumn("qty", "CAST(`qty` AS INT64)", "INT64", description="Quantity."),
]
PARQUET_SCHEMA = pa.schema(
    [("pk", pa.string()), ("qty", pa.string()), ("ts", pa.int64()), ("deleted", pa.bool_())]
)
CHANGE_TIME = "TIMESTAMP_ADD(TIMESTAMP '1970-01-01 00:00:00+00', INTERVAL `ts` MICROSECOND)"


def at(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


def micros(hours: float) -> int:
    return int(at(hours).timestamp() * 1_000_000)


class Table:
    """One target table loaded again and again, as a source would."""

    def __init__(
        self, client, table_id, write_parquet, mode: DeletesMode, name: str = "orders"
    ) -> None:
        self.client, self.table_id, self.write_parquet = client, table_id, write_parquet
        self.mode = mode
        self.target = table_id(name)
        self.loads = 0
        self.mark: Watermark | None = None

    def _stage(self, changes):
        self.loads += 1
        staging = self.table_id(f"_stage_{self.target.table}_{self.loads}")
        path = self.write_parquet(
            [{"pk": p, "qty": q, "ts": t, "deleted": d} for p, q, t, d in changes],
            schema=PARQUET_SCHEMA,  # also for an empty load
            name=f"stage_{self.target.table}_{self.loads}.parquet",
        )
        load_parquet_to_staging(self.client, [path], staging, STAGING_SCHEMA)
        return staging

    def full(self, hours: float, data: dict[str, int], watermark: bool = False) -> None:
        """A full load at `at(hours)` holding exactly `data`."""
        staging = self._stage([(k, str(v), 0, False) for k, v in data.items()])
        mark = Watermark(SOURCE, f"{SOURCE}/export/full-{hours}", at(hours)) if watermark else None
        replace_table(
            self.client,
            staging=staging,
            target=self.target,
            select_columns=COLUMNS,
            table_description="Orders",
            watermark=mark,
            expected_previous=self.mark if watermark else None,
            deletes=KeptDeletes(self.mode, ("pk",), at(hours)),
        )
        self.mark = mark or self.mark

    def changes(self, hours: float, changes: list[tuple[str, int | None, float]]) -> None:
        """Incremental changes (key, qty or None for a delete, change time in hours)."""
        staging = self._stage(
            [(k, None if q is None else str(q), micros(h), q is None) for k, q, h in changes]
        )
        mark = Watermark(SOURCE, f"{SOURCE}/export/inc-{hours}", at(hours))
        merge_changes(
            self.client,
            staging=staging,
            target=self.target,
            key_columns=["pk"],
            order_column="ts",
            deleted_column="deleted",
            columns=COLUMNS,
            watermark=mark,
            expected_previous=self.mark,
            deletes=KeptDeletes(self.mode, ("pk",), at(hours), change_time=CHANGE_TIME),
        )
        self.mark = mark

    def current(self) -> dict[str, tuple[int | None, dt.datetime | None]]:
        return {
            r["pk"]: (r["qty"], r["_deleted_at"])
            for r in rows(self.client, f"SELECT pk, qty, _deleted_at FROM {self.target.sql}")
        }

    def history(self) -> list[tuple]:
        table = history_table_for(self.target)
        return sorted(
            (
                r["pk"],
                r["qty"],
                r["_valid_from"],
                r["_valid_to"],
                r["_is_current"],
                r["_deleted_at"],
            )
            for r in rows(self.client, f"SELECT * FROM {table.sql}")
        )


@pytest.fixture
def soft(bigquery_client, table_id, write_parquet) -> Table:
    return Table(bigquery_client, table_id, write_parquet, DeletesMode.SOFT)


@pytest.fixture
def history(bigquery_client, table_id, write_parquet) -> Table:
    return Table(bigquery_client, table_id, write_parquet, DeletesMode.HISTORY)


def test_soft_full_load_keeps_deleted_rows_with_the_export_time(soft):
    soft.full(1, {"a": 1, "b": 2, "c": 3})
    assert soft.current() == {"a": (1, None), "b": (2, None), "c": (3, None)}
    soft.full(2, {"a": 1, "c": 30})
    assert soft.current() == {"a": (1, None), "b": (2, at(2)), "c": (30, None)}
    assert count_live_rows(soft.client, soft.target) == 2
    # A re-run of the same export changes nothing.
    soft.full(2, {"a": 1, "c": 30})
    assert soft.current() == {"a": (1, None), "b": (2, at(2)), "c": (30, None)}
    # A later load that still lacks b keeps its first _deleted_at; c goes now.
    soft.full(3, {"a": 1})
    assert soft.current() == {"a": (1, None), "b": (2, at(2)), "c": (30, at(3))}
    # b comes back: cleared, with its new value.
    soft.full(4, {"a": 1, "b": 5})
    assert soft.current() == {"a": (1, None), "b": (5, None), "c": (30, at(3))}


def test_soft_seed_with_a_mark_then_incremental_changes(soft):
    soft.full(1, {"a": 1, "b": 2, "c": 3}, watermark=True)
    soft.changes(2, [("b", None, 1.5), ("a", 10, 1.25), ("d", 4, 1.75)])
    # The deletion's own time, not the export's.
    assert soft.current() == {
        "a": (10, None),
        "b": (2, at(1.5)),
        "c": (3, None),
        "d": (4, None),
    }
    # A second delete record of b (e.g. a widened window) keeps the first time;
    # b coming back clears it.
    soft.changes(3, [("b", None, 2.5), ("c", None, 2.25)])
    assert soft.current()["b"] == (2, at(1.5))
    soft.changes(4, [("b", 7, 3.5)])
    assert soft.current() == {
        "a": (10, None),
        "b": (7, None),
        "c": (3, at(2.25)),
        "d": (4, None),
    }
    # A reseed with a mark: c, still absent, keeps its time; d is gone now.
    soft.full(5, {"a": 10, "b": 7}, watermark=True)
    assert soft.current() == {
        "a": (10, None),
        "b": (7, None),
        "c": (3, at(2.25)),
        "d": (4, at(5)),
    }


def test_a_key_back_and_gone_again_within_one_load_gets_the_later_time(soft):
    soft.full(1, {"a": 1, "b": 2}, watermark=True)
    soft.changes(2, [("b", None, 1.5)])
    assert soft.current()["b"] == (2, at(1.5))
    # A chain of exports in one load: b back with 3, then deleted again.
    soft.changes(4, [("b", 3, 2.5), ("b", None, 3.5), ("a", None, 2.5), ("a", 5, 3.5)])
    assert soft.current() == {"a": (5, None), "b": (3, at(3.5))}


def test_history_of_full_loads(history):
    history.full(1, {"a": 1, "b": 2})
    history.full(2, {"a": 1, "b": 20, "c": 3})
    history.full(2, {"a": 1, "b": 20, "c": 3})  # re-run: no new versions
    history.full(3, {"a": 1, "c": 3})
    history.full(4, {"a": 1, "b": 20, "c": 3})
    assert history.history() == [
        ("a", 1, at(1), None, True, None),
        ("b", 2, at(1), at(2), False, None),
        ("b", 20, at(2), at(3), False, at(3)),
        ("b", 20, at(4), None, True, None),
        ("c", 3, at(2), None, True, None),
    ]
    # The current table behaves as soft.
    assert history.current() == {"a": (1, None), "b": (20, None), "c": (3, None)}


def test_history_of_incremental_changes(history):
    history.full(1, {"a": 1, "b": 2}, watermark=True)
    # Several changes of one key in one load (a chain of exports): each a version.
    history.changes(2, [("a", 10, 1.25), ("a", None, 1.5), ("a", 12, 1.75), ("b", 3, 1.5)])
    history.changes(3, [("b", None, 2.5)])
    assert history.history() == [
        ("a", 1, at(1), at(1.25), False, None),
        ("a", 10, at(1.25), at(1.5), False, at(1.5)),
        ("a", 12, at(1.75), None, True, None),
        ("b", 2, at(1), at(1.5), False, None),
        ("b", 3, at(1.5), at(2.5), False, at(2.5)),
    ]
    assert history.current() == {"a": (12, None), "b": (3, at(2.5))}


def test_a_load_holding_a_key_twice_fails_with_the_key_named(soft):
    soft.full(1, {"a": 1})
    staging = soft._stage([("a", "1", 0, False), ("a", "2", 0, False)])
    with pytest.raises(BigQueryPublishError, match=r"holds a key \(pk\) more than once"):
        replace_table(
            soft.client,
            staging=staging,
            target=soft.target,
            select_columns=COLUMNS,
            table_description="Orders",
            deletes=KeptDeletes(DeletesMode.SOFT, ("pk",), at(2)),
        )
    assert soft.current() == {"a": (1, None)}
