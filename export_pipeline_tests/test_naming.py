"""BigQuery names: valid, deterministic, collision-free, whatever the source name."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from export_pipeline.naming import (
    assign_columns,
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


RESERVED = ("_exported_at", "_write_timestamp_micros", "_export_pipeline_deleted")


def test_assigned_columns_are_readable_and_suffixed_only_on_collision() -> None:
    mapped = assign_columns(["order-date", "2fa", "héllo", "_deleted"], {}, reserved=RESERVED)
    assert mapped == {
        "order-date": "order_date",
        "2fa": "_2fa",
        "héllo": "hello",
        "_deleted": "_deleted",
    }
    pipeline = assign_columns(
        ["_exported_at", "_EXPORT_PIPELINE_x", "__export_pipeline_y"], {}, reserved=RESERVED
    )
    assert pipeline == {
        "_exported_at": "src_exported_at",
        "_EXPORT_PIPELINE_x": "src_EXPORT_PIPELINE_x",
        "__export_pipeline_y": "src__export_pipeline_y",
    }
    twins = assign_columns(["name", "Name", "order_date", "order-date"], {}, reserved=RESERVED)
    assert twins["Name"] == "Name" and twins["order_date"] == "order_date"
    assert re.fullmatch(r"name_[0-9a-f]{6}", twins["name"])
    assert re.fullmatch(r"order_date_[0-9a-f]{6}", twins["order-date"])


def test_recorded_columns_are_kept_whatever_a_later_window_holds() -> None:
    recorded = {"Name": "Name", "name": "name_6ae999"}
    assert assign_columns(["name"], recorded, taken=["Name", "name_6ae999"]) == {
        "name": "name_6ae999"
    }
    # A new attribute never takes a column of the table, even one it would read as.
    assert assign_columns(["NAME"], recorded, taken=["Name", "name_6ae999"])["NAME"] != "NAME"


_names = st.lists(st.text(min_size=1, max_size=60), min_size=1, max_size=12, unique=True)


@given(_names, _names, st.randoms(use_true_random=False))
def test_assignment_is_injective_stable_and_order_free(first, later, rng) -> None:
    """Two loads: the second keeps every column of the first and never reuses a taken name."""
    mapped = assign_columns(first, {}, reserved=RESERVED)
    shuffled = list(first)
    rng.shuffle(shuffled)
    assert assign_columns(shuffled, {}, reserved=RESERVED) == mapped
    both = assign_columns([*later, *first], mapped, taken=mapped.values(), reserved=RESERVED)
    assert {n: both[n] for n in first} == mapped
    folded = [c.lower() for c in both.values()]
    assert len(set(folded)) == len(folded)
    assert not set(folded) & {r.lower() for r in RESERVED}
    assert all(VALID_COLUMN.match(c) for c in both.values())


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
