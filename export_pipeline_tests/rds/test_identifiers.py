"""Export task identifiers: valid for AWS, deterministic, distinct per scope."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from export_pipeline.rds.identifiers import (
    MAX_EXPORT_TASK_IDENTIFIER,
    export_task_identifier,
    is_valid_export_task_identifier,
)

# AWS's rule written independently of the implementation's regex.
_AWS_RULE = re.compile(r"^[A-Za-z][A-Za-z0-9-]*$")

snapshot_names = st.one_of(
    st.text(min_size=0, max_size=300),
    st.from_regex(r"rds:[a-z][a-z0-9-]{0,62}-\d{4}-\d{2}-\d{2}-\d{2}-\d{2}", fullmatch=True),
    st.text(alphabet="-:_.0123456789", max_size=80),
)
tables = st.lists(st.from_regex(r"[a-z_$0-9]{1,20}\.[a-z_$0-9]{1,20}", fullmatch=True), max_size=5)


def _aws_accepts(identifier: str) -> bool:
    return (
        bool(_AWS_RULE.match(identifier))
        and not identifier.endswith("-")
        and "--" not in identifier
        and len(identifier) <= MAX_EXPORT_TASK_IDENTIFIER
    )


@given(st.text(max_size=70), snapshot_names, tables, st.integers(1, 5))
def test_always_valid_and_deterministic(source, snapshot, export_only, attempt):
    first = export_task_identifier(source, snapshot, export_only, attempt)
    assert _aws_accepts(first), first
    assert is_valid_export_task_identifier(first)
    assert export_task_identifier(source, snapshot, list(reversed(export_only)), attempt) == first


@given(snapshot_names, snapshot_names, tables, tables)
def test_distinct_scopes_get_distinct_identifiers(snap_a, snap_b, tables_a, tables_b):
    a = export_task_identifier("db", snap_a, tables_a)
    b = export_task_identifier("db", snap_b, tables_b)
    same_scope = snap_a == snap_b and set(tables_a) == set(tables_b)
    assert (a == b) == same_scope


def test_awkward_names_seen_in_the_wild():
    automated = export_task_identifier("shopdb", "rds:shopdb-2024-01-01-00-05", ["shop.orders"])
    assert automated.startswith("rds-shopdb-2024-01-01-00-05-")
    # Sanitizing alone would make these equal; the hash keeps them apart.
    assert export_task_identifier("x", "a:b", []) != export_task_identifier("x", "a-b", [])
    # A name that sanitizes to nothing, or starts with a digit, still gives a valid id.
    assert _aws_accepts(export_task_identifier("x", "::--::", []))
    assert _aws_accepts(export_task_identifier("x", "2024-snap", []))
    # Truncation at the limit never leaves a trailing or doubled hyphen.
    long_name = "a" * 48 + "-" + "b" * 40
    assert _aws_accepts(export_task_identifier("x", long_name, ["d.t"]))
    # A retry attempt is a different export.
    assert export_task_identifier("x", "s", [], 1) != export_task_identifier("x", "s", [], 2)


def test_validator_rejects_what_aws_rejects():
    for bad in ["1abc", "abc-", "a--b", "a_b", "a:b", "", "a" * 61]:
        assert not is_valid_export_task_identifier(bad), bad
    assert is_valid_export_task_identifier("a" * 60)
