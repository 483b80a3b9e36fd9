"""A Dagster instance as deploy/dagster.yaml configures production: storage in PostgreSQL.

Uses the PostgreSQL server on 127.0.0.1:5432 (user postgres, trust auth) with
a database of its own per test, dropped afterwards. Tests that need what only
a shared database gives (pool slots claimed by several processes at once,
sensor state seen by a daemon) use it instead of Dagster's SQLite files.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2

from export_pipeline.config import REPO_ROOT

DEPLOYED = REPO_ROOT / "deploy" / "dagster.yaml"
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


def _admin() -> psycopg2.extensions.connection:
    connection = psycopg2.connect(dbname="postgres", **PG)
    connection.autocommit = True
    return connection


@contextmanager
def scratch_database() -> Iterator[str]:
    """A new, empty PostgreSQL database; dropped (with its connections) at the end."""
    name = "dagster_test_" + uuid.uuid4().hex[:12]
    connection = _admin()
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    connection.close()
    try:
        yield name
    finally:
        connection = _admin()
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.close()


def deployed_home(home: Path, database: str) -> dict[str, str]:
    """Make `home` a DAGSTER_HOME holding deploy/dagster.yaml; the variables it reads."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(DEPLOYED, home / "dagster.yaml")
    return {
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": PG["host"],
        "DAGSTER_PG_PORT": str(PG["port"]),
        "DAGSTER_PG_DB": database,
        "DAGSTER_PG_USERNAME": PG["user"],
        "DAGSTER_PG_PASSWORD": "",
    }
