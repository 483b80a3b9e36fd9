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

from export_pipeline.local_cloud.rds_store import SOURCE_URL_TAG, Store, store_path

NIGHTLY_BACKUP_ID = "local-cloud-nightly-backup"  # same value as rds_exports.NIGHTLY_BACKUP_ID
# moto knows no default version for every engine (none for mariadb): always send one.
_DEFAULT_VERSIONS = {"mariadb": "10.11.9", "mysql": "8.0.39"}


def live_store(state_dir: Path, region: str, identifier: str, kind: str = "instance") -> Store:
    """The embedded live database behind DB instance (or Aurora cluster) `identifier`."""
    return Store(store_path(state_dir, region, kind, identifier))


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
