"""A real MariaDB server as the instance's data: export → BigQuery, change, again.

Uses 127.0.0.1:3306 (root, no password) with a database named for this test
only, dropped afterwards. The local RDS instance reads it whenever a snapshot
is taken (tag `local-cloud:source-url`).
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pymysql
import pytest
from dagster import AssetKey, DagsterInstance

from export_pipeline.local_cloud.clients import AwsClients
from export_pipeline.local_cloud.rds_client import (
    create_mysql_backed_instance,
    take_automated_snapshot,
)
from export_pipeline_tests.support.rds import config_for, run_rds

pytestmark = pytest.mark.needs("mariadb")

DDL = """
CREATE TABLE items (
    id INT NOT NULL PRIMARY KEY,
    name VARCHAR(50),
    code CHAR(3),
    amount DECIMAL(12,2),
    big BIGINT UNSIGNED,
    ratio DECIMAL(30,12),
    created DATETIME(6),
    day DATE,
    at TIME,
    blobby BLOB,
    doc JSON
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
"""
ROWS = [
    (
        1,
        "first",
        "abc",
        Decimal("12.34"),
        18446744073709551615,
        Decimal("1.000000000001"),
        dt.datetime(2024, 5, 6, 7, 8, 9, 123456),
        dt.date(2024, 2, 29),
        "10:11:12",
        b"\x00\xff",
        '{"k": [1, 2]}',
    ),
    (2, "zweite ü", None, Decimal("-0.01"), 0, None, None, None, "23:59:59", None, None),
    (
        3,
        "third",
        "xyz",
        Decimal("99999.99"),
        42,
        Decimal("-123.456"),
        dt.datetime(1999, 12, 31, 23, 59, 59),
        dt.date(1000, 1, 1),
        "00:00:00",
        b"",
        "[]",
    ),
]


@pytest.fixture
def mariadb_database():
    name = "rdstest_" + uuid.uuid4().hex[:10]
    connection = pymysql.connect(host="127.0.0.1", port=3306, user="root", autocommit=True)
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        cursor.execute(f"USE `{name}`")
        cursor.execute(DDL)
        cursor.executemany(
            "INSERT INTO items VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", ROWS
        )
    try:
        yield name, connection
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        connection.close()


def _source_rows(connection, database: str) -> dict[int, tuple]:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, name, code, amount, big, CAST(ratio AS CHAR), created, day, "
            f"CAST(at AS CHAR), blobby, doc FROM `{database}`.items"
        )
        return {row[0]: row for row in cursor.fetchall()}


def _bigquery_rows(bigquery_client, table_id: str) -> dict[int, tuple]:
    import json

    rows = {}
    for r in bigquery_client.query(f"SELECT * FROM `{table_id}`").result():
        rows[r["id"]] = (
            r["id"],
            r["name"],
            r["code"],
            r["amount"],
            None if r["big"] is None else int(r["big"]),
            r["ratio"],
            r["created"],
            r["day"],
            None if r["at"] is None else r["at"].isoformat(),
            r["blobby"],
            None if r["doc"] is None else json.dumps(json.loads(r["doc"]), separators=(",", ":")),
        )
    return rows


def _normalise(rows: dict[int, tuple]) -> dict[int, tuple]:
    import json

    return {
        k: (
            *v[:10],
            None if v[10] is None else json.dumps(json.loads(v[10]), separators=(",", ":")),
        )
        for k, v in rows.items()
    }


def test_mariadb_backed_instance_round_trip(
    mariadb_database, local_cloud, pipeline_config, rds_dataset, bigquery_client
):
    database, connection = mariadb_database
    demo = pipeline_config.rds.instances[0]
    identifier = "maria" + uuid.uuid4().hex[:8]
    source = demo.model_copy(
        update={"identifier": identifier, "export_only": [f"{database}.items"], "tables": {}}
    )
    config = config_for(pipeline_config, rds_dataset, [source])
    clients = AwsClients.for_config(local_cloud, config)
    create_mysql_backed_instance(clients.rds, identifier, f"mysql://root@127.0.0.1:3306/{database}")
    instance = DagsterInstance.ephemeral()
    table_id = f"{local_cloud.bigquery_project}.{rds_dataset}.rds_{database}_items"

    run_rds(config, instance)
    assert _bigquery_rows(bigquery_client, table_id) == _normalise(
        _source_rows(connection, database)
    )

    with connection.cursor() as cursor:
        cursor.execute(f"USE `{database}`")
        cursor.execute("DELETE FROM items WHERE id = 2")
        cursor.execute("UPDATE items SET amount = 1.50, name = 'renamed' WHERE id = 1")
        cursor.execute(
            "INSERT INTO items (id, name, at) VALUES (4, 'new', '-01:00:00')"
        )  # a TIME outside a day: the column becomes exact text
    take_automated_snapshot(clients.rds, identifier)
    result = run_rds(config, instance)
    [export] = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key == AssetKey(["rds", f"{identifier}_snapshot_export"])
    ]
    assert export.materialization.metadata["export_reused"].value is False
    got = {
        r["id"]: (r["name"], r["amount"], r["at"])
        for r in bigquery_client.query(f"SELECT * FROM `{table_id}`").result()
    }
    assert got == {
        1: ("renamed", Decimal("1.50"), "10:11:12"),
        3: ("third", Decimal("99999.99"), "00:00:00"),
        4: ("new", None, "-01:00:00"),
    }
