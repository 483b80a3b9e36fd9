"""Schema drift between two RDS snapshots: columns added, widened and removed.

Policy (docs/faults.md, "Faults and bad input" table): an RDS table is replaced by
each snapshot's export, so BigQuery mirrors the newest snapshot — a new
column appears, a widened column takes the type the new MySQL type maps to
(values exact, INT64 → NUMERIC → STRING where needed), and a column the
snapshot no longer has is not recreated (its values exist nowhere in the
source any more) — but not dropped silently: the load names it
(`columns_removed` metadata, a warning naming table and columns). Every value
of the new snapshot must arrive exactly.

The MySQL change is made in the local cloud's live store behind a DB
instance of the test's own (what `ALTER TABLE` would leave behind: the
table recreated with the new column types, the rows kept), then a new
automated snapshot is taken.
"""

from __future__ import annotations

import logging
import uuid
from decimal import Decimal
from typing import Any

from dagster import DagsterInstance

from export_pipeline.local_cloud.rds_client import live_store, take_automated_snapshot
from export_pipeline.local_cloud.rds_store import Column
from export_pipeline_tests.support.rds import config_for, create_mysql_instance, run_rds

DATABASE = "drift"
BEFORE = [
    Column("id", "int", nullable=False),
    Column("qty", "int"),
    Column("code", "varchar(10)"),
    Column("price", "decimal(10,2)"),
    Column("rate", "decimal(10,2)"),
    Column("legacy", "varchar(20)"),
]
AFTER = [
    Column("id", "int", nullable=False),
    Column("qty", "bigint"),  # INT -> BIGINT
    Column("code", "varchar(200)"),  # VARCHAR(10) -> VARCHAR(200)
    Column("price", "decimal(20,4)"),  # DECIMAL(10,2) -> DECIMAL(20,4): still NUMERIC
    Column("rate", "decimal(40,10)"),  # beyond NUMERIC: exact STRING
    Column("note", "text"),  # added; `legacy` removed
]
OLD_ROWS = [
    {"id": i, "qty": i * 10, "code": f"c{i}", "price": f"{i}.25", "rate": f"-{i}.50"}
    for i in range(1, 4)
]
WIDE_ROWS = [
    {
        "id": 10,
        "qty": 9_000_000_000,  # needs BIGINT
        "code": "x" * 150,
        "price": "1234567890123456.1234",
        "rate": "123456789012345678901234567890.0123456789",
        "note": "added after the schema change ✓",
    },
    {"id": 11, "qty": -9_223_372_036_854_775_808, "code": "", "price": "-0.0001", "rate": None},
]


def _instance(local_cloud: Any, aws_clients: Any, pipeline_config: Any) -> Any:
    """A DB instance of this test's own holding `drift.items` (BEFORE), with a snapshot."""
    demo = pipeline_config.rds.instances[0]
    source = demo.model_copy(
        update={
            "identifier": "drift" + uuid.uuid4().hex[:8],
            "export_only": ["drift.items"],
            "tables": {},
        }
    )
    store = live_store(local_cloud.state_dir, pipeline_config.aws.region, source.identifier)
    store.create_table(DATABASE, "items", BEFORE)
    store.insert(DATABASE, "items", [{**r, "legacy": f"old {r['id']}"} for r in OLD_ROWS])
    create_mysql_instance(aws_clients.rds, source.identifier)
    take_automated_snapshot(aws_clients.rds, source.identifier)
    return source, store


def _alter(store: Any) -> None:
    """ALTER TABLE as its result: the new column types, the old rows kept, `legacy` gone."""
    store.drop_table(DATABASE, "items")
    store.create_table(DATABASE, "items", AFTER)
    store.insert(DATABASE, "items", OLD_ROWS + WIDE_ROWS)


def _schema(client: Any, table_id: str) -> dict[str, tuple[str, str]]:
    return {f.name: (f.field_type, f.description or "") for f in client.get_table(table_id).schema}


def _rows(client: Any, table_id: str) -> dict[int, dict[str, Any]]:
    rows = [dict(r.items()) for r in client.query(f"SELECT * FROM `{table_id}`").result()]
    by_id = {r["id"]: r for r in rows}
    assert len(by_id) == len(rows), "duplicate rows"
    return by_id


def _load_metadata(result: Any, table_id: str) -> dict[str, Any]:
    """The metadata of the run's materialization of the BigQuery table `table_id`."""
    [event] = [
        e
        for e in result.get_asset_materialization_events()
        if getattr(e.materialization.metadata.get("dagster/table_name"), "value", None) == table_id
    ]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def test_added_widened_and_removed_columns_between_snapshots(
    local_cloud, aws_clients, bigquery_client, pipeline_config, rds_dataset
):
    source, store = _instance(local_cloud, aws_clients, pipeline_config)
    config = config_for(pipeline_config, rds_dataset, [source])
    table_id = f"{config.bigquery.project}.{rds_dataset}.rds_drift_items"
    instance = DagsterInstance.ephemeral()

    first = run_rds(config, instance)
    assert _load_metadata(first, table_id)["columns_removed"] == []  # a new table
    before = _schema(bigquery_client, table_id)
    assert {k: t for k, (t, _) in before.items()} == {
        "id": "INTEGER",
        "qty": "INTEGER",
        "code": "STRING",
        "price": "NUMERIC",
        "rate": "NUMERIC",
        "legacy": "STRING",
        "_exported_at": "TIMESTAMP",
    }
    assert _rows(bigquery_client, table_id)[2]["legacy"] == "old 2"

    _alter(store)
    take_automated_snapshot(aws_clients.rds, source.identifier)
    result = run_rds(config, instance)

    assert _load_metadata(result, table_id)["columns_removed"] == ["legacy"]
    warnings = [
        e.user_message
        for e in instance.all_logs(result.run_id)
        if e.level == logging.WARNING and "not in the new snapshot" in e.user_message
    ]
    assert len(warnings) == 1
    assert f"{DATABASE}.items: column(s) legacy of {table_id} " in warnings[0]

    after = _schema(bigquery_client, table_id)
    assert {k: t for k, (t, _) in after.items()} == {
        "id": "INTEGER",
        "qty": "INTEGER",  # BIGINT is INT64 too
        "code": "STRING",
        "price": "NUMERIC",  # DECIMAL(20,4) still fits NUMERIC
        "rate": "STRING",  # DECIMAL(40,10) does not: exact text
        "note": "STRING",  # added
        "_exported_at": "TIMESTAMP",
    }, "the removed column `legacy` is not recreated; the others follow the new MySQL types"
    # Column descriptions name the new MySQL types (what an analyst reads in the console).
    for name, mysql in [
        ("qty", "bigint"),
        ("code", "varchar(200)"),
        ("price", "decimal(20,4)"),
        ("rate", "decimal(40,10)"),
    ]:
        assert mysql in after[name][1].lower(), (name, after[name][1])

    got = _rows(bigquery_client, table_id)
    expected = {int(r["id"]): r for r in store.read_all(DATABASE, "items")}
    assert set(got) == set(expected)  # every row of the new snapshot, old and new
    for key, want in expected.items():
        row = got[key]
        assert row["qty"] == (None if want["qty"] is None else int(want["qty"])), key
        assert row["code"] == want["code"], key
        assert row["price"] == _decimal(want["price"]), key
        assert _decimal(row["rate"]) == _decimal(want["rate"]), key
        assert row["rate"] is None or isinstance(row["rate"], str)
        assert row["note"] == want["note"], key
    assert got[10]["rate"] == "123456789012345678901234567890.0123456789"
    assert got[10]["price"] == Decimal("1234567890123456.1234")
    assert got[11]["qty"] == -9_223_372_036_854_775_808
