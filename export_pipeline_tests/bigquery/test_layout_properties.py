"""Properties of `TableLayout`: the comparison that decides rebuilds, and its SQL.

Rules that must hold for every layout, not just the examples:
- a table created from a layout (`new_table`) shows no difference from it,
  and neither does what `layout_of_table` reads back from that table;
- two layouts that store rows differently always show a difference on a
  table made from the other (a change is never kept silently), and never
  when they store rows the same way (no rebuild for nothing);
- the rendered DDL names exactly the configured columns, back-quoted.
"""

from __future__ import annotations

from google.cloud import bigquery
from google.cloud.bigquery import SchemaField
from hypothesis import given
from hypothesis import strategies as st

from export_pipeline.bigquery.layout import TableLayout, layout_of_table
from export_pipeline.table_settings import BigQueryTableSettings

SCHEMA = [
    SchemaField("pk", "STRING"),
    SchemaField("n", "INT64"),
    SchemaField("day", "DATE"),
    SchemaField("at", "TIMESTAMP"),
    SchemaField("local_time", "DATETIME"),
    SchemaField("country", "STRING"),
    SchemaField("amount", "NUMERIC"),
]
NAMES = {
    "Pk": "pk",
    "N": "n",
    "Day": "day",
    "At": "at",
    "Local": "local_time",
    "country": "country",
}
NAMES["amount"] = "amount"
REFERENCE = bigquery.TableReference.from_string("project-1.dataset.orders")

granularities = st.sampled_from(["HOUR", "DAY", "MONTH", "YEAR"])
partitions = st.one_of(
    st.none(),
    st.builds(
        lambda column, g: {"column": column, "granularity": g},
        st.sampled_from(["At", "Local"]),
        granularities,
    ),
    st.builds(
        lambda g: {"column": "Day", "granularity": g},
        st.sampled_from(["DAY", "MONTH", "YEAR"]),
    ),
    st.builds(lambda g: {"ingestion": g}, granularities),
    st.builds(
        lambda start, width, interval: {
            "integer_range": {
                "column": "N",
                "start": start,
                "end": start + width,
                "interval": interval,
            }
        },
        st.integers(-1000, 1000),
        st.integers(1, 500),
        st.integers(1, 50),
    ).filter(
        lambda p: (
            (p["integer_range"]["end"] - p["integer_range"]["start"])
            // p["integer_range"]["interval"]
            <= 10_000
        )
    ),
)
clusterings = st.one_of(
    st.none(),
    st.lists(st.sampled_from(sorted(NAMES)), min_size=1, max_size=4, unique_by=str.lower),
)


@st.composite
def layouts(draw) -> TableLayout:
    partition = draw(partitions)
    settings = BigQueryTableSettings(
        partition=partition,
        cluster_by=draw(clusterings),
        require_partition_filter=draw(st.booleans()) if partition else False,
        partition_expiration_days=(
            draw(st.one_of(st.none(), st.integers(1, 400)))
            if partition and "integer_range" not in partition
            else None
        ),
        kms_key_name=draw(
            st.sampled_from([None, "projects/p/locations/eu/keyRings/r/cryptoKeys/k"])
        ),
    )
    layout = TableLayout.from_settings("Orders", settings, NAMES)
    layout.check(SCHEMA)
    return layout


def _table(layout: TableLayout) -> bigquery.Table:
    """The table as the API would return it after `tables.insert` (resource round trip)."""
    created = layout.new_table(REFERENCE, SCHEMA, "Orders", {"export_pipeline_source": "t"})
    return bigquery.Table.from_api_repr(created.to_api_repr())


@given(layouts())
def test_a_table_made_from_a_layout_has_no_difference_from_it(layout):
    table = _table(layout)
    assert layout.differences(table) == []
    read_back = layout_of_table(table)
    assert read_back.differences(table) == []
    assert read_back.kms_key_name == layout.kms_key_name
    assert read_back.require_partition_filter == layout.require_partition_filter
    assert read_back.expiration_ms == layout.expiration_ms


def _stores_alike(a: TableLayout, b: TableLayout) -> bool:
    same_partition = (a.partition is None and b.partition is None) or (
        a.partition is not None and a.partition.same_as(b.partition)
    )
    return same_partition and [c.lower() for c in a.cluster_by] == [c.lower() for c in b.cluster_by]


@given(layouts(), layouts())
def test_a_layout_change_is_seen_exactly_when_storage_differs(old, new):
    assert bool(new.differences(_table(old))) == (not _stores_alike(old, new))


@given(layouts())
def test_ddl_names_exactly_the_configured_columns(layout):
    ddl = layout.ddl_clauses(SCHEMA)
    if layout.cluster_by:
        assert f"CLUSTER BY {', '.join(f'`{c}`' for c in layout.cluster_by)}" in ddl
    else:
        assert "CLUSTER BY" not in ddl
    if layout.partition is None:
        assert "PARTITION BY" not in ddl
    elif layout.partition.column is not None:
        assert f"`{layout.partition.column}`" in ddl.split("CLUSTER BY")[0]
    else:
        assert "_PARTITION" in ddl
