"""BigQuery names: valid, deterministic, collision-free, whatever the source name."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from export_pipeline.naming import (
    column_names,
    dynamodb_table_name,
    quote_identifier,
    rds_table_name,
)

VALID_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,299}$")


def test_valid_names_are_kept() -> None:
    assert column_names(["orderId", "total", "_x"]) == {
        "orderId": "orderId",
        "total": "total",
        "_x": "_x",
    }


def test_invalid_characters_and_leading_digits_are_replaced_with_a_hash() -> None:
    mapped = column_names(["order-date", "2fa", "héllo", "a b", "_TABLE_x", "_exported_at"])
    assert mapped["order-date"].startswith("order_date_")
    assert mapped["2fa"].startswith("_2fa_")
    assert mapped["héllo"].startswith("hello_")
    assert not mapped["_TABLE_x"].lower().startswith("_table_")
    assert mapped["_exported_at"] != "_exported_at"


def test_case_collisions_are_disambiguated_independently_of_order() -> None:
    first = column_names(["Name", "name", "NAME"])
    second = column_names(["NAME", "name", "Name"])
    assert first == second
    assert len({v.lower() for v in first.values()}) == 3
    assert first["NAME"] == "NAME"  # sorts first by code point, keeps its spelling


@given(st.lists(st.text(min_size=1, max_size=400), min_size=1, max_size=20))
def test_any_names_map_to_unique_valid_columns(names: list[str]) -> None:
    mapped = column_names(names)
    assert set(mapped) == set(names)
    assert all(VALID_COLUMN.match(v) for v in mapped.values())
    assert len({v.lower() for v in mapped.values()}) == len(mapped)


def test_table_names() -> None:
    assert dynamodb_table_name("Orders") == "dynamodb_orders"
    assert dynamodb_table_name("my-table.v2") == "dynamodb_my_table_v2"
    assert rds_table_name("Shop", "order_items") == "rds_shop_order_items"


def test_quote_identifier_refuses_hostile_names() -> None:
    assert quote_identifier("aws_raw") == "`aws_raw`"
    for hostile in ["a`b", "x; DROP TABLE y", "a b", ""]:
        try:
            quote_identifier(hostile)
        except ValueError:
            continue
        raise AssertionError(f"{hostile!r} was quoted")
