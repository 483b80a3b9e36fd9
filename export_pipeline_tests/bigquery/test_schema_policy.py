"""The schema-change policy: what changed against the previous load, and what may pass."""

from __future__ import annotations

import pytest
from google.cloud.bigquery import SchemaField
from hypothesis import given, settings
from hypothesis import strategies as st

from export_pipeline.bigquery.schema_policy import (
    Retyped,
    SchemaChange,
    SchemaChangeRejected,
    compare,
    enforce,
)
from export_pipeline.table_settings import SchemaChanges

TYPES = ["STRING", "INT64", "NUMERIC", "BOOL", "BYTES", "JSON", "TIMESTAMP"]
columns = st.dictionaries(
    st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(lambda n: not n.endswith("__raw")),
    st.sampled_from(TYPES),
    max_size=8,
)


def fields(spec: dict[str, str]) -> list[SchemaField]:
    return [SchemaField(name, kind) for name, kind in spec.items()]


@settings(max_examples=200, deadline=None)
@given(columns, columns)
def test_compare_finds_exactly_the_added_removed_and_retyped_columns(before, after) -> None:
    change = compare(fields(before), fields(after))
    assert set(change.added) == set(after) - set(before)
    assert set(change.removed) == set(before) - set(after)
    assert {(r.column, r.old_type, r.new_type) for r in change.retyped} == {
        (n, before[n], after[n]) for n in set(before) & set(after) if before[n] != after[n]
    }
    assert change.changed == (before != after)
    # A change set (MERGE) cannot show removals.
    assert compare(fields(before), fields(after), complete=False).removed == ()


@settings(max_examples=200, deadline=None)
@given(columns, columns, st.sampled_from(list(SchemaChanges)))
def test_each_policy_lets_through_exactly_what_it_allows(before, after, policy) -> None:
    change = compare(fields(before), fields(after))
    allowed = {
        SchemaChanges.ALLOW: True,
        SchemaChanges.ALLOW_COLUMNS: not change.removed and not change.retyped,
        SchemaChanges.BLOCK: not change.changed,
    }[policy]
    if allowed:
        enforce("p.d.t", policy, change)
    else:
        with pytest.raises(SchemaChangeRejected) as raised:
            enforce("p.d.t", policy, change)
        message = str(raised.value)
        assert "\n" not in message and "p.d.t" in message and policy.value in message


def test_pipeline_columns_and_raw_companions_are_not_source_columns() -> None:
    before = fields(
        {"id": "INT64", "_exported_at": "TIMESTAMP", "_write_timestamp_micros": "INT64"}
    )
    after = fields({"id": "INT64", "birthday": "DATE", "birthday__raw": "STRING"})
    change = compare(before, after, ignored={"_write_timestamp_micros"})
    assert change == SchemaChange(added=("birthday",))
    # A column that really ends in __raw with no base column is a source column.
    assert compare(before[:1], fields({"id": "INT64", "x__raw": "STRING"})).added == ("x__raw",)


def test_the_message_names_table_column_and_old_and_new_type() -> None:
    change = compare(
        fields({"id": "INT64", "qty": "INT64", "gone": "STRING"}),
        fields({"id": "INT64", "qty": "NUMERIC", "new": "BOOL"}),
    )
    assert change.retyped == (Retyped("qty", "INT64", "NUMERIC"),)
    with pytest.raises(SchemaChangeRejected) as raised:
        enforce("proj.ds.orders", SchemaChanges.ALLOW_COLUMNS, change)
    assert "proj.ds.orders" in str(raised.value)
    assert "added new; removed gone; retyped qty INT64 -> NUMERIC" in str(raised.value)
    assert raised.value.change is change
