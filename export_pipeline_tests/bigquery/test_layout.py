"""Table layout on the local BigQuery: created, kept, rebuilt on change, checked before publishing.

What bqemulator holds (partitioning, clustering, labels) is read back through
the BigQuery API; what only real BigQuery enforces (CMEK, policy tags,
require_partition_filter) is checked in the request bodies
(`test_layout_requests.py`).
"""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from google.cloud.bigquery import SchemaField
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from export_pipeline.bigquery.layout import LayoutError, TableLayout
from export_pipeline.bigquery.publish import SelectColumn, merge_changes, replace_table
from export_pipeline.bigquery.staging import load_parquet_to_staging
from export_pipeline.bigquery.watermark import Watermark
from export_pipeline.table_settings import BigQueryTableSettings
from export_pipeline_tests.support.bigquery import rows

SOURCE = "arn:aws:dynamodb:eu-west-1:123456789012:table/Orders"
T0 = dt.datetime(2026, 11, 26, 0, 0, tzinfo=dt.UTC)
MARKS = [
    Watermark(SOURCE, f"{SOURCE}/export/0176411520000{i}-aaaaaaaa", T0 + dt.timedelta(hours=i))
    for i in range(5)
]
STAGING_SCHEMA = [
    SchemaField("pk", "STRING"),
    SchemaField("day", "DATE"),
    SchemaField("at", "TIMESTAMP"),
    SchemaField("n", "INT64"),
    SchemaField("country", "STRING"),
    SchemaField("ts", "INT64"),
    SchemaField("deleted", "BOOL"),
]
COLUMNS = [
    SelectColumn.passthrough(f, description=f"column {f.name}")
    for f in STAGING_SCHEMA
    if f.name not in ("ts", "deleted")
]
NAMES = {c.name: c.name for c in COLUMNS}


def _layout(key: list[str] | None = None, **settings) -> TableLayout:
    return TableLayout.from_settings("Orders", BigQueryTableSettings(**settings), NAMES, key)


def _stage(client, table_id, write_parquet, name, items):
    """items: (pk, day, n, country, ts, deleted); `at` is noon of `day`."""
    staging = table_id(name)
    path = write_parquet(
        [
            {
                "pk": pk,
                "day": day,
                "at": dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC),
                "n": n,
                "country": country,
                "ts": ts,
                "deleted": deleted,
            }
            for pk, day, n, country, ts, deleted in items
        ]
    )
    load_parquet_to_staging(client, [path], staging, STAGING_SCHEMA)
    return staging


def _items(count: int, ts: int = 0, country: str = "fr"):
    return [
        (f"k{i:03d}", dt.date(2026, 1, 1) + dt.timedelta(days=i % 40), i, country, ts, False)
        for i in range(count)
    ]


def _replace(client, staging, target, layout, **options):
    return replace_table(
        client,
        staging=staging,
        target=target,
        select_columns=COLUMNS,
        table_description="Orders",
        labels={"export_pipeline_source": "test"},
        layout=layout,
        **options,
    )


def _merge(client, staging, target, layout, mark: int):
    return merge_changes(
        client,
        staging=staging,
        target=target,
        key_columns=["pk"],
        order_column="ts",
        deleted_column="deleted",
        columns=COLUMNS,
        watermark=MARKS[mark],
        expected_previous=MARKS[mark - 1] if mark else None,
        table_description="Orders",
        layout=layout,
    )


def _content(client, target) -> list[tuple]:
    return sorted(
        (r["pk"], r["day"], r["n"], r["country"])
        for r in rows(client, f"SELECT pk, day, n, country FROM {target.sql}")
    )


def _storage(client, target):
    table = client.get_table(target.reference)
    tp = table.time_partitioning
    return (
        (tp.type_, tp.field) if tp is not None else None,
        table.clustering_fields,
        table.labels,
    )


def test_full_replace_creates_the_partitioned_clustered_labelled_table(
    bigquery_client, table_id, write_parquet
):
    target = table_id("orders")
    layout = _layout(
        partition={"column": "day", "granularity": "DAY"},
        cluster_by=["country", "pk"],
        labels={"domain": "sales"},
    )
    staging = _stage(bigquery_client, table_id, write_parquet, "_s1", _items(30))
    _replace(bigquery_client, staging, target, layout)
    assert _storage(bigquery_client, target) == (
        ("DAY", "day"),
        ["country", "pk"],
        {"domain": "sales", "export_pipeline_source": "test"},
    )
    assert len(_content(bigquery_client, target)) == 30


@pytest.mark.parametrize(
    ("partition", "expected"),
    [
        ({"column": "at", "granularity": "HOUR"}, ("HOUR", "at")),
        ({"column": "day", "granularity": "MONTH"}, ("MONTH", "day")),
    ],
)
def test_time_unit_granularities_reach_the_table(
    bigquery_client, table_id, write_parquet, partition, expected
):
    target = table_id("orders")
    staging = _stage(bigquery_client, table_id, write_parquet, "_s1", _items(5))
    _replace(bigquery_client, staging, target, _layout(partition=partition))
    assert _storage(bigquery_client, target)[0] == expected


def test_incremental_target_is_created_clustered_on_its_key_and_merges_correctly(
    bigquery_client, table_id, write_parquet
):
    target = table_id("orders")
    layout = _layout(key=["pk"])
    seed = _stage(bigquery_client, table_id, write_parquet, "_seed", _items(20))
    _replace(bigquery_client, seed, target, layout, watermark=MARKS[0], expected_previous=None)
    assert _storage(bigquery_client, target)[1] == ["pk"]
    # Changes inside the key range and one beyond it: the pruning range
    # comes from staging, and every change must still land.
    changes = [
        ("k005", dt.date(2026, 3, 1), 500, "de", 10, False),
        ("k007", dt.date(2026, 1, 8), 7, "fr", 10, True),
        ("z999", dt.date(2026, 3, 2), 999, "it", 10, False),
    ]
    staging = _stage(bigquery_client, table_id, write_parquet, "_c1", changes)
    _merge(bigquery_client, staging, target, layout, 1)
    content = {pk: (n, country) for pk, _day, n, country in _content(bigquery_client, target)}
    assert content["k005"] == (500, "de")
    assert "k007" not in content
    assert content["z999"] == (999, "it")
    assert content["k004"] == (4, "fr")
    assert len(content) == 20


def test_changing_clustering_then_partitioning_rebuilds_with_the_same_rows(
    bigquery_client, table_id, write_parquet
):
    target = table_id("orders")
    seed = _stage(bigquery_client, table_id, write_parquet, "_seed", _items(25))
    _replace(
        bigquery_client,
        seed,
        target,
        _layout(key=["pk"]),
        watermark=MARKS[0],
        expected_previous=None,
    )
    before = _content(bigquery_client, target)
    same = _stage(bigquery_client, table_id, write_parquet, "_c1", _items(1, ts=1))
    _merge(bigquery_client, same, target, _layout(cluster_by=["country", "n"]), 1)
    assert _storage(bigquery_client, target)[:2] == (None, ["country", "n"])
    assert _content(bigquery_client, target) == before
    same = _stage(bigquery_client, table_id, write_parquet, "_c2", _items(1, ts=2))
    _merge(
        bigquery_client,
        same,
        target,
        _layout(partition={"column": "day", "granularity": "MONTH"}, cluster_by=["country"]),
        2,
    )
    assert _storage(bigquery_client, target)[:2] == (("MONTH", "day"), ["country"])
    assert _content(bigquery_client, target) == before
    # Column descriptions survive the rebuild.
    described = {f.name: f.description for f in bigquery_client.get_table(target.reference).schema}
    assert described["country"] == "column country"


def test_full_table_changing_layout_is_replaced_with_the_new_one(
    bigquery_client, table_id, write_parquet
):
    target = table_id("orders")
    staging = _stage(bigquery_client, table_id, write_parquet, "_s1", _items(10))
    _replace(bigquery_client, staging, target, _layout(cluster_by=["pk"]))
    staging = _stage(bigquery_client, table_id, write_parquet, "_s2", _items(10))
    _replace(
        bigquery_client,
        staging,
        target,
        _layout(partition={"column": "day"}, cluster_by=["country"]),
    )
    assert _storage(bigquery_client, target)[:2] == (("DAY", "day"), ["country"])
    assert len(_content(bigquery_client, target)) == 10


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"cluster_by": ["nope"]}, "Orders: bigquery.cluster_by: column 'nope' does not exist"),
        (
            {"partition": {"column": "country"}},
            "Orders: bigquery.partition.column: column 'country' is STRING",
        ),
        (
            {
                "partition": {
                    "integer_range": {"column": "day", "start": 0, "end": 10, "interval": 1}
                }
            },
            "Orders: bigquery.partition.integer_range.column: column 'day' is DATE",
        ),
        (
            {"partition": {"column": "day", "granularity": "HOUR"}},
            "Orders: bigquery.partition.granularity: HOUR needs a DATETIME or TIMESTAMP",
        ),
        (
            {"policy_tags": {"email": "projects/p/locations/l/taxonomies/t/policyTags/x"}},
            "Orders: bigquery.policy_tags: column 'email' does not exist",
        ),
    ],
)
def test_bad_layout_column_fails_in_one_line_before_publishing(
    bigquery_client, table_id, write_parquet, settings, message
):
    target = table_id("orders")
    staging = _stage(bigquery_client, table_id, write_parquet, "_s1", _items(3))
    _replace(bigquery_client, staging, target, _layout(cluster_by=["pk"]))
    staging = _stage(bigquery_client, table_id, write_parquet, "_s2", _items(7))
    with pytest.raises(LayoutError) as failure:
        _replace(bigquery_client, staging, target, _layout(**settings))
    text = str(failure.value)
    assert text.startswith(message)
    assert "\n" not in text
    assert len(_content(bigquery_client, target)) == 3
    assert _storage(bigquery_client, target)[1] == ["pk"]


def test_schema_rewrite_keeps_the_layout(bigquery_client, table_id, write_parquet):
    """A new column rewrites the table (CTAS of itself): partitioning and clustering stay."""
    target = table_id("orders")
    layout = _layout(partition={"column": "day", "granularity": "MONTH"}, cluster_by=["pk"])
    seed = _stage(bigquery_client, table_id, write_parquet, "_seed", _items(5))
    _replace(bigquery_client, seed, target, layout, watermark=MARKS[0], expected_previous=None)
    staging = _stage(bigquery_client, table_id, write_parquet, "_c1", _items(2, ts=5))
    wider = [*COLUMNS, SelectColumn("extra", "'x'", "STRING")]
    merge_changes(
        bigquery_client,
        staging=staging,
        target=target,
        key_columns=["pk"],
        order_column="ts",
        deleted_column="deleted",
        columns=wider,
        watermark=MARKS[1],
        expected_previous=MARKS[0],
        layout=layout,
    )
    table = bigquery_client.get_table(target.reference)
    assert "extra" in [f.name for f in table.schema]
    assert _storage(bigquery_client, target)[:2] == (("MONTH", "day"), ["pk"])


@pytest.mark.parametrize("watermark", [None, MARKS[0]])
def test_emulator_gap_integer_range_partitioning_is_not_held(
    bigquery_client, table_id, write_parquet, watermark
):
    """bqemulator 1.4.0 keeps no `rangePartitioning` (DDL, tables.insert or tables.patch).

    Fails when a new bqemulator holds it, so that docs/local-cloud.md stays
    true; the requests that set it are checked in `test_layout_requests.py`.
    """
    target = table_id("orders")
    staging = _stage(bigquery_client, table_id, write_parquet, "_s1", _items(5))
    spec = {"integer_range": {"column": "n", "start": 0, "end": 100, "interval": 10}}
    layout = _layout(partition=spec)
    _replace(bigquery_client, staging, target, layout, watermark=watermark, expected_previous=None)
    table = bigquery_client.get_table(target.reference)
    assert table.range_partitioning is None
    assert layout.differences(table) == ["partitioning none -> integer_range n"]
    assert len(_content(bigquery_client, target)) == 5


def test_ingestion_time_table_is_created_through_the_api_and_replaced_in_place(
    bigquery_client, table_id, write_parquet
):
    """BigQuery cannot CTAS ingestion-time partitioning: created by API, rows swapped by DML."""
    target = table_id("orders")
    layout = _layout(partition={"ingestion": "DAY"}, cluster_by=["country"])
    staging = _stage(bigquery_client, table_id, write_parquet, "_s1", _items(6))
    _replace(bigquery_client, staging, target, layout)
    table = bigquery_client.get_table(target.reference)
    assert (table.time_partitioning.type_, table.time_partitioning.field) == ("DAY", None)
    assert table.clustering_fields == ["country"]
    staging = _stage(bigquery_client, table_id, write_parquet, "_s2", _items(4, country="de"))
    _replace(bigquery_client, staging, target, layout)
    assert [r[3] for r in _content(bigquery_client, target)] == ["de"] * 4
    assert bigquery_client.get_table(target.reference).time_partitioning.field is None


def test_changing_an_existing_table_to_ingestion_time_fails_in_one_line(
    bigquery_client, table_id, write_parquet
):
    target = table_id("orders")
    staging = _stage(bigquery_client, table_id, write_parquet, "_s1", _items(3))
    _replace(bigquery_client, staging, target, _layout(cluster_by=["pk"]))
    staging = _stage(bigquery_client, table_id, write_parquet, "_s2", _items(5))
    with pytest.raises(LayoutError) as failure:
        _replace(bigquery_client, staging, target, _layout(partition={"ingestion": "DAY"}))
    assert str(failure.value).startswith("Orders: bigquery.partition: ")
    assert "drop the table" in str(failure.value) and "\n" not in str(failure.value)
    assert len(_content(bigquery_client, target)) == 3


def test_emulator_gap_ddl_drops_truncated_partitioning_and_clustering(bigquery_client, table_id):
    """bqemulator 1.4.0 keeps a plain `PARTITION BY <column>` from DDL, nothing else.

    Why `layout_sync.ensure_storage` patches after a CTAS (docs/local-cloud.md);
    fails when a new bqemulator keeps them, so the list is updated.
    """
    plain, truncated = table_id("plain"), table_id("truncated")
    select = "SELECT 'a' AS pk, TIMESTAMP '2026-01-01 10:00:00+00' AS at, DATE '2026-01-01' AS d"
    bigquery_client.query(
        f"CREATE TABLE {plain.sql} PARTITION BY d CLUSTER BY pk AS {select}"
    ).result()
    bigquery_client.query(
        f"CREATE TABLE {truncated.sql} PARTITION BY TIMESTAMP_TRUNC(at, HOUR) AS {select}"
    ).result()
    plain_table = bigquery_client.get_table(plain.reference)
    assert plain_table.time_partitioning.field == "d"
    assert plain_table.clustering_fields is None
    assert bigquery_client.get_table(truncated.reference).time_partitioning is None


def test_emulator_gap_cmek_policy_tags_and_partition_filter_are_not_kept(bigquery_client, table_id):
    """Accepted by bqemulator 1.4.0 in `tables.insert`, not stored (real BigQuery only)."""
    layout = _layout(
        partition={"column": "day"},
        require_partition_filter=True,
        kms_key_name="projects/p/locations/eu/keyRings/r/cryptoKeys/k",
        policy_tags={"country": "projects/p/locations/eu/taxonomies/t/policyTags/x"},
    )
    target = table_id("orders")
    schema = [c.schema_field for c in COLUMNS]
    bigquery_client.create_table(layout.new_table(target.reference, schema, "Orders", None))
    table = bigquery_client.get_table(target.reference)
    assert table.time_partitioning.field == "day"  # what it does keep
    assert table.encryption_configuration is None
    assert not table.require_partition_filter
    assert all(f.policy_tags is None for f in table.schema)


def test_a_repartitioning_stopped_after_the_drop_is_finished_by_the_next_load(
    bigquery_client, table_id, write_parquet
):
    """The copy `<table>__relayout` holds every row while the table is dropped."""
    target = table_id("orders")
    keyed = _layout(key=["pk"])
    seed = _stage(bigquery_client, table_id, write_parquet, "_seed", _items(12))
    _replace(bigquery_client, seed, target, keyed, watermark=MARKS[0], expected_previous=None)
    before = _content(bigquery_client, target)
    copy = target.sibling("orders__relayout")
    bigquery_client.query(f"CREATE TABLE {copy.sql} AS SELECT * FROM {target.sql}").result()
    bigquery_client.delete_table(target.reference)  # the run stopped here
    monthly = _layout(partition={"column": "day", "granularity": "MONTH"}, cluster_by=["pk"])
    change = _stage(
        bigquery_client,
        table_id,
        write_parquet,
        "_c1",
        [("k003", dt.date(2026, 1, 4), 300, "de", 10, False)],
    )
    _merge(bigquery_client, change, target, monthly, 1)
    after = {pk: (n, country) for pk, _day, n, country in _content(bigquery_client, target)}
    assert len(after) == len(before) == 12
    assert after["k003"] == (300, "de") and after["k004"] == (4, "fr")
    assert _storage(bigquery_client, target)[:2] == (("MONTH", "day"), ["pk"])
    tables = {t.table_id for t in bigquery_client.list_tables(f"{target.project}.{target.dataset}")}
    assert copy.table not in tables


_KEYS = st.text(alphabet=st.sampled_from(list("ab'\"\\é ✓z\n")), min_size=1, max_size=4)
_BATCH = st.lists(
    st.tuples(_KEYS, st.integers(0, 99), st.booleans()),
    min_size=1,
    max_size=6,
    unique_by=lambda change: change[0],
)


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seed=_BATCH, batches=st.lists(_BATCH, min_size=1, max_size=3))
def test_pruned_merges_hold_what_a_model_of_the_changes_holds(
    bigquery_client, table_id, write_parquet, seed, batches
):
    """The MERGE's constant key range (any key text: quotes, backslashes, newlines) loses no
    change: after every batch the table holds exactly the model's rows."""
    target = table_id("m" + uuid.uuid4().hex[:10])
    layout = _layout(key=["pk"])
    model = {pk: n for pk, n, _deleted in seed}

    def staged(changes, ts):
        items = [(pk, dt.date(2026, 1, 1), n, "fr", ts, deleted) for pk, n, deleted in changes]
        return _stage(bigquery_client, table_id, write_parquet, "s" + uuid.uuid4().hex[:8], items)

    _replace(
        bigquery_client,
        staged([(pk, n, False) for pk, n, _d in seed], 0),
        target,
        layout,
        watermark=MARKS[0],
        expected_previous=None,
    )
    for index, batch in enumerate(batches, start=1):
        _merge(bigquery_client, staged(batch, index), target, layout, index)
        for pk, n, deleted in batch:
            if deleted:
                model.pop(pk, None)
            else:
                model[pk] = n
        held = {pk: n for pk, _day, n, _country in _content(bigquery_client, target)}
        assert held == model
