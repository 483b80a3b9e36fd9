"""Model-based: soft and history tables after random puts, deletes and loads match a model.

Random sequences of puts, deletes and loads over a few keys run against the
emulator, with full loads (a snapshot of the source, possibly loaded twice)
or incremental loads (one change record per changed key and export window,
as AWS writes them; a load may chain two windows). After every load the
current table and the history must equal what the documented rules give.

Every example uses `deletes: history`, whose current table follows the
`soft` rules, so both are checked. Default size is small (2 examples per
kind of load, about 20 s); `EXPORT_PIPELINE_DELETES_EXAMPLES=100` runs a
long profile.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from export_pipeline.table_settings import DeletesMode
from export_pipeline_tests.bigquery.test_deletes import Table, at

EXAMPLES = int(os.environ.get("EXPORT_PIPELINE_DELETES_EXAMPLES", "2"))
KEYS = ("a", "b", "c")

put = st.tuples(st.just("put"), st.sampled_from(KEYS), st.integers(0, 2))
delete = st.tuples(st.just("delete"), st.sampled_from(KEYS), st.just(0))
load = st.tuples(st.just("load"), st.just(""), st.integers(1, 2))  # full: 2 = load twice
operations = st.lists(st.one_of(put, put, delete, load), min_size=3, max_size=12)


@dataclass
class Model:
    """What BigQuery must hold: current rows (value, _deleted_at) and history versions."""

    current: dict[str, tuple[int, dt.datetime | None]] = field(default_factory=dict)
    # key -> [value, valid_from, valid_to, deleted_at]
    versions: dict[str, list[list]] = field(default_factory=dict)

    def history(self) -> list[tuple]:
        return sorted(
            (k, v, start, end, end is None, gone)
            for k, rows in self.versions.items()
            for v, start, end, gone in rows
        )

    def _open(self, key: str) -> list | None:
        rows = self.versions.get(key, [])
        return rows[-1] if rows and rows[-1][2] is None else None

    def snapshot(self, when: dt.datetime, state: dict[str, int]) -> None:
        for key, (value, gone) in list(self.current.items()):
            if key not in state:
                self.current[key] = (value, gone or when)
        for key, value in state.items():
            self.current[key] = (value, None)
        for key in set(self.versions) | set(state):
            version = self._open(key)
            if version is not None and state.get(key, version[0]) == version[0] and key in state:
                continue
            if version is not None:
                version[2] = when
                if key not in state:
                    version[3] = when
            if key in state:
                self.versions.setdefault(key, []).append([state[key], when, None, None])

    def changes(self, records: list[tuple[str, int | None, float]]) -> None:
        """Change records (key, value or None for a delete, time in hours) of one load."""
        for key, value, hours in sorted(records, key=lambda r: r[2]):
            version = self._open(key)
            if version is not None:
                version[2] = at(hours)
                if value is None:
                    version[3] = at(hours)
            if value is not None:
                self.versions.setdefault(key, []).append([value, at(hours), None, None])
        for key in {r[0] for r in records}:
            of_key = sorted((r for r in records if r[0] == key), key=lambda r: r[2])
            puts = [r for r in of_key if r[1] is not None]
            _, value, hours = of_key[-1]
            if value is not None:
                self.current[key] = (value, None)
            elif puts:  # back and gone again within the load: its last values, this time
                self.current[key] = (puts[-1][1], at(hours))
            elif key in self.current:  # deleted all along: the first time stays
                kept, gone = self.current[key]
                self.current[key] = (kept, gone or at(hours))


def _net_changes(writes: list[tuple[str, int | None, float]], before: dict[str, int]):
    """One record per key changed in a window: its last write (AWS's incremental export);
    a key created and deleted inside the window is left out."""
    last: dict[str, tuple[str, int | None, float]] = {}
    for write in writes:
        last[write[0]] = write
    return [w for k, w in last.items() if not (w[1] is None and k not in before)]


def _run(table: Table, ops, incremental: bool) -> None:
    source: dict[str, int] = {"a": 0}
    model = Model()
    clock = 1.0
    table.full(clock, dict(source), watermark=incremental)
    model.snapshot(at(clock), source)
    loaded_state = dict(source)
    writes: list[tuple[str, int | None, float]] = []
    for kind, key, number in [*ops, ("load", "", 1)]:
        clock += 1
        if kind == "put":
            source[key] = number
            writes.append((key, number, clock))
        elif kind == "delete" and key in source:
            del source[key]
            writes.append((key, None, clock))
        elif kind == "load" and incremental:
            half = len(writes) // 2 if number == 2 else 0
            first = _net_changes(writes[:half], loaded_state)
            middle = dict(loaded_state)
            for k, v, _ in writes[:half]:
                middle.pop(k, None) if v is None else middle.__setitem__(k, v)
            records = first + _net_changes(writes[half:], middle)
            if records:
                table.changes(clock, records)
                model.changes(records)
            writes, loaded_state = [], dict(source)
        elif kind == "load":
            for _ in range(number):  # the second time: a re-run of the same snapshot
                table.full(clock, dict(source))
            model.snapshot(at(clock), source)
        else:
            continue
        if kind == "load":
            assert table.current() == model.current
            if table.mode is DeletesMode.HISTORY:
                assert table.history() == model.history()


@pytest.mark.parametrize("incremental", [False, True], ids=["full", "incremental"])
def test_soft_and_history_match_the_model(bigquery_client, table_id, write_parquet, incremental):
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(ops=operations)
    def check(ops) -> None:
        name = "m" + uuid.uuid4().hex[:10]
        table = Table(bigquery_client, table_id, write_parquet, DeletesMode.HISTORY, name)
        _run(table, ops, incremental)

    check()
