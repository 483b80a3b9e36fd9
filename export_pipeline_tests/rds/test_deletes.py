"""`deletes: soft` and `history` for RDS tables: snapshots compared by the configured `key`."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from export_pipeline.rds.export_files import read_tables_info
from export_pipeline.rds.loading import RdsLoadError, load_export_table
from export_pipeline.table_settings import RdsTableSettings
from export_pipeline_tests.rds.test_loading import _write_export
from export_pipeline_tests.support.bigquery import rows as query_rows

COLUMNS = [("id", "int"), ("name", "varchar(20)"), ("doc", "json")]
T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def at(day: int) -> dt.datetime:
    return T0 + dt.timedelta(days=day)


def _snapshot(aws_clients, pipeline_config, data: dict[int, tuple[str, str | None]]):
    arrow_table = pa.table(
        {
            "id": pa.array(list(data), pa.int32()),
            "name": pa.array([v[0] for v in data.values()], pa.string()),
            "doc": pa.array([v[1] for v in data.values()], pa.string()),
        }
    )
    location = _write_export(aws_clients.s3, pipeline_config, COLUMNS, arrow_table)
    return location, read_tables_info(aws_clients.s3, location)["app.t"]


class Loads:
    def __init__(self, aws_clients, bigquery_client, pipeline_config, table_ref, settings):
        self.aws, self.client, self.config = aws_clients, bigquery_client, pipeline_config
        self.table_ref, self.settings = table_ref, settings

    def load(self, day: int, data: dict[int, tuple[str, str | None]], snapshot=None):
        location, info = snapshot or _snapshot(self.aws, self.config, data)
        result = load_export_table(
            s3=self.aws.s3,
            client=self.client,
            location=location,
            info=info,
            table_ref=self.table_ref,
            exported_at=at(day),
            description="test",
            settings=self.settings,
        )
        assert result.row_count == result.expected_row_count == len(data)
        return location, info

    def current(self) -> dict[int, tuple[str, dt.datetime | None]]:
        sql = f"SELECT id, name, _deleted_at FROM `{self.table_ref}`"
        return {r["id"]: (r["name"], r["_deleted_at"]) for r in query_rows(self.client, sql)}

    def history(self) -> list[tuple]:
        sql = f"SELECT * FROM `{self.table_ref}_history`"
        return sorted(
            (
                r["id"],
                r["name"],
                r["_valid_from"],
                r["_valid_to"],
                r["_is_current"],
                r["_deleted_at"],
            )
            for r in query_rows(self.client, sql)
        )


@pytest.fixture
def loads(aws_clients, bigquery_client, pipeline_config, rds_dataset, local_cloud):
    def make(deletes: str, key: list[str] | None = None) -> Loads:
        settings = RdsTableSettings(deletes=deletes, key=key or ["id"])
        table_ref = f"{local_cloud.bigquery_project}.{rds_dataset}.app_t"
        return Loads(aws_clients, bigquery_client, pipeline_config, table_ref, settings)

    return make


def test_soft_keeps_a_deleted_row_dated_at_the_snapshot(loads):
    soft = loads("soft")
    soft.load(1, {1: ("ann", '{"a": 1}'), 2: ("bob", None), 3: ("cy", None)})
    assert soft.current() == {1: ("ann", None), 2: ("bob", None), 3: ("cy", None)}
    second = soft.load(2, {1: ("ann", '{"a": 1}'), 3: ("cyd", None)})
    assert soft.current() == {1: ("ann", None), 2: ("bob", at(2)), 3: ("cyd", None)}
    # The same snapshot loaded again: nothing changes.
    soft.load(2, {1: ("ann", '{"a": 1}'), 3: ("cyd", None)}, snapshot=second)
    assert soft.current() == {1: ("ann", None), 2: ("bob", at(2)), 3: ("cyd", None)}
    # Still absent later: the first time stays. Back: cleared.
    soft.load(3, {1: ("ann", '{"a": 1}'), 3: ("cyd", None)})
    assert soft.current()[2] == ("bob", at(2))
    soft.load(4, {1: ("ann", '{"a": 1}'), 2: ("bo", None), 3: ("cyd", None)})
    assert soft.current() == {1: ("ann", None), 2: ("bo", None), 3: ("cyd", None)}


def test_history_versions_by_key(loads):
    history = loads("history")
    history.load(1, {1: ("ann", '{"a": 1}'), 2: ("bob", None)})
    second = history.load(2, {1: ("ann", '{"a": 1}'), 3: ("cy", None)})
    history.load(2, {1: ("ann", '{"a": 1}'), 3: ("cy", None)}, snapshot=second)  # re-run
    history.load(3, {1: ("ann", '{"a": 2}'), 2: ("bob", None), 3: ("cy", None)})
    assert history.history() == [
        (1, "ann", at(1), at(3), False, None),
        (1, "ann", at(3), None, True, None),  # doc changed (a JSON column)
        (2, "bob", at(1), at(2), False, at(2)),
        (2, "bob", at(3), None, True, None),
        (3, "cy", at(2), None, True, None),
    ]


def test_a_key_the_export_lacks_fails_before_publishing(loads):
    soft = loads("soft", key=["customer_id"])
    with pytest.raises(RdsLoadError, match=r"key column\(s\) \['customer_id'\].*not columns"):
        soft.load(1, {1: ("ann", None)})
