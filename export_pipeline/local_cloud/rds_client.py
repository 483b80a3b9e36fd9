"""Client-side helpers for the local RDS: reach the data behind an instance, take backups.

These run in any process (the control CLI, tests, the demo seeder) and talk to
the local cloud only through boto3 and the state folder, never through moto's
internals:

* `live_store()` opens the embedded database behind a DB instance / cluster
  (`rds_store.Store`): create tables, insert, update, delete. The moto server
  copies it into every new snapshot.
* `take_automated_snapshot()` is "run the nightly backup now": AWS has no API to
  take an *automated* snapshot, so the local cloud reserves the manual snapshot
  identifier `local-cloud-nightly-backup` for it (see `rds_exports`). The
  returned snapshot is named `rds:<id>-YYYY-MM-DD-HH-MM`, type `automated`.
* `create_mysql_backed_instance()` creates a DB instance whose data is a real
  MySQL/MariaDB server (tag `local-cloud:source-url`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from export_pipeline.local_cloud.postgres_store import PgStore, pg_store_path
from export_pipeline.local_cloud.rds_store import SOURCE_URL_TAG, Store, store_path

NIGHTLY_BACKUP_ID = "local-cloud-nightly-backup"  # same value as rds_exports.NIGHTLY_BACKUP_ID
# moto knows no default version for every engine (none for mariadb): always send one.
_DEFAULT_VERSIONS = {"mariadb": "10.11.9", "mysql": "8.0.39"}


def live_store(state_dir: Path, region: str, identifier: str, kind: str = "instance") -> Store:
    """The embedded live database behind DB instance (or Aurora cluster) `identifier`."""
    return Store(store_path(state_dir, region, kind, identifier))


def live_pg_store(state_dir: Path, region: str, identifier: str, kind: str = "instance") -> PgStore:
    """The embedded live database behind a PostgreSQL DB instance (or Aurora cluster)."""
    return PgStore(pg_store_path(state_dir, region, kind, identifier))


def take_automated_snapshot(rds: Any, identifier: str, kind: str = "instance") -> dict[str, Any]:
    """Take an automated-style snapshot now; returns the DBSnapshot / DBClusterSnapshot."""
    if kind == "instance":
        return rds.create_db_snapshot(
            DBInstanceIdentifier=identifier, DBSnapshotIdentifier=NIGHTLY_BACKUP_ID
        )["DBSnapshot"]
    if kind == "cluster":
        return rds.create_db_cluster_snapshot(
            DBClusterIdentifier=identifier, DBClusterSnapshotIdentifier=NIGHTLY_BACKUP_ID
        )["DBClusterSnapshot"]
    raise ValueError(f"kind must be 'instance' or 'cluster', got {kind!r}")


def create_mysql_backed_instance(
    rds: Any,
    identifier: str,
    source_url: str,
    *,
    engine: str = "mariadb",
    engine_version: str | None = None,
) -> dict[str, Any]:
    """A DB instance whose snapshots copy the databases of a real server.

    `source_url` is `mysql://user[:password]@host:port/database[,database2]`
    (no database: every non-system database). The server is read when a
    snapshot is taken, including the automated one at creation.
    """
    return rds.create_db_instance(
        DBInstanceIdentifier=identifier,
        Engine=engine,
        EngineVersion=engine_version or _DEFAULT_VERSIONS.get(engine, "8.0.39"),
        DBInstanceClass="db.t3.micro",
        AllocatedStorage=20,
        MasterUsername="admin",
        MasterUserPassword="local-cloud-only",
        BackupRetentionPeriod=7,
        Tags=[{"Key": SOURCE_URL_TAG, "Value": source_url}],
    )["DBInstance"]


def create_postgres_source(
    rds: Any, identifier: str, kind: str = "instance", source_url: str | None = None
) -> dict[str, Any]:
    """An RDS PostgreSQL instance or Aurora PostgreSQL cluster in the local cloud.

    With `source_url` (`postgresql://user[:password]@host:port/database[,database2]`)
    its snapshots copy a real server's databases; without it, its data is the
    embedded store `live_pg_store()` opens (fill that first: the automated
    snapshot at creation copies it).
    """
    tags = [{"Key": SOURCE_URL_TAG, "Value": source_url}] if source_url else []
    if kind == "cluster":
        return rds.create_db_cluster(
            DBClusterIdentifier=identifier,
            Engine="aurora-postgresql",
            EngineVersion="15.4",
            MasterUsername="postgres",
            MasterUserPassword="local-cloud-only",
            BackupRetentionPeriod=7,
            Tags=tags,
        )["DBCluster"]
    return rds.create_db_instance(
        DBInstanceIdentifier=identifier,
        Engine="postgres",
        EngineVersion="15.4",
        DBInstanceClass="db.t3.micro",
        AllocatedStorage=20,
        MasterUsername="postgres",
        MasterUserPassword="local-cloud-only",
        BackupRetentionPeriod=7,
        Tags=tags,
    )["DBInstance"]
