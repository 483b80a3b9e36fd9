"""The RDS demo: database `shop` behind the configured DB instances, and its nightly changes.

`seed()` (idempotent) makes what `pipeline.yaml`'s `rds` section needs in the
local cloud: each instance's IAM export role (trusted by
export.rds.amazonaws.com) and KMS key alias, the embedded live database with
`shop.customers`, `shop.orders` (a few thousand rows) and `shop.type_zoo` (every
MySQL type of AWS's export mapping, with edge values), the DB instance (MySQL)
or Aurora MySQL cluster, and an automated snapshot holding that data. A source
whose engine is PostgreSQL gets database `app` instead (`demo_postgres`).

`mutate()` changes the data like a day of production (inserts, updates,
deletes) and then runs the "nightly backup" (a new automated snapshot).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import struct
from collections.abc import Sequence
from typing import Any

from export_pipeline.local_cloud import demo_postgres
from export_pipeline.local_cloud.clients import AwsClients
from export_pipeline.local_cloud.configuration import CloudConfiguration, RdsSource
from export_pipeline.local_cloud.postgres_store import PgStore, pg_store_path
from export_pipeline.local_cloud.rds_client import (
    live_pg_store,
    live_store,
    take_automated_snapshot,
)
from export_pipeline.local_cloud.rds_store import Column, Store
from export_pipeline.local_cloud.settings import LocalCloudSettings

DATABASE = "shop"
# The tables `seed_store` creates (and a fresh AWS server re-creates).
DEMO_TABLES = ("customers", "orders", "type_zoo")
CUSTOMER_COUNT = 1200
ORDER_COUNT = 3000
EXPORT_SERVICE = "export.rds.amazonaws.com"

CUSTOMERS = [
    Column("id", "bigint", nullable=False),
    Column("ext_id", "bigint unsigned"),
    Column("country", "char(2)"),
    Column("name", "varchar(100)"),
    Column("email", "varchar(255)"),
    Column("birthday", "date"),
    Column("created_at", "datetime(6)"),
    Column("updated_at", "timestamp(6)"),
    Column("prefs", "json"),
    Column("tier", "tinyint unsigned"),
    Column("balance", "decimal(12,2)"),
]
ORDERS = [
    Column("id", "bigint", nullable=False),
    Column("customer_id", "bigint", nullable=False),
    Column("amount", "decimal(12,2)"),
    Column("fx_rate", "decimal(20,10)"),
    Column("status", "enum('new','paid','shipped','refunded')"),
    Column("ship_time", "time"),
    Column("note", "blob"),
    Column("year", "year"),
    Column("created_at", "datetime(6)"),
    Column("updated_at", "datetime(6)"),
]
TYPE_ZOO = [
    Column("id", "int", nullable=False),
    Column("c_tinyint", "tinyint"),
    Column("c_tinyint_u", "tinyint unsigned"),
    Column("c_smallint", "smallint"),
    Column("c_smallint_u", "smallint unsigned"),
    Column("c_mediumint", "mediumint"),
    Column("c_mediumint_u", "mediumint unsigned"),
    Column("c_int", "int"),
    Column("c_int_u", "int unsigned"),
    Column("c_bigint", "bigint"),
    Column("c_bigint_u", "bigint unsigned"),
    Column("c_decimal_10_2", "decimal(10,2)"),
    Column("c_decimal_38_9", "decimal(38,9)"),
    Column("c_decimal_65_30", "decimal(65,30)"),
    Column("c_float", "float"),
    Column("c_double", "double"),
    Column("c_bit1", "bit(1)"),
    Column("c_bit12", "bit(12)"),
    Column("c_bit64", "bit(64)"),
    Column("c_char", "char(10)"),
    Column("c_varchar", "varchar(255)"),
    Column("c_tinytext", "tinytext"),
    Column("c_text", "text"),
    Column("c_mediumtext", "mediumtext"),
    Column("c_longtext", "longtext"),
    Column("c_enum", "enum('small','medium','large')"),
    Column("c_set", "set('red','green','blue')"),
    Column("c_json", "json"),
    Column("c_binary", "binary(4)"),
    Column("c_varbinary", "varbinary(16)"),
    Column("c_tinyblob", "tinyblob"),
    Column("c_blob", "blob"),
    Column("c_mediumblob", "mediumblob"),
    Column("c_longblob", "longblob"),
    Column("c_date", "date"),
    Column("c_datetime", "datetime"),
    Column("c_datetime6", "datetime(6)"),
    Column("c_timestamp", "timestamp"),
    Column("c_time", "time"),
    Column("c_time6", "time(6)"),
    Column("c_year", "year"),
    Column("c_geometry", "geometry"),
    Column("c_point", "point"),
]
_FLOAT32_MAX = struct.unpack("<f", struct.pack("<I", 0x7F7FFFFF))[0]


def _geometry(wkb: bytes, srid: int = 0) -> bytes:
    """MySQL's internal geometry value: 4-byte little-endian SRID, then WKB."""
    return struct.pack("<I", srid) + wkb


def _point_wkb(x: float, y: float) -> bytes:
    return struct.pack("<BIdd", 1, 1, x, y)


def _linestring_wkb(points: list[tuple[float, float]]) -> bytes:
    body = b"".join(struct.pack("<dd", x, y) for x, y in points)
    return struct.pack("<BII", 1, 2, len(points)) + body


def type_zoo_rows() -> list[dict[str, Any]]:
    """Edge values of every type: minima, maxima, all NULL, zero/odd values."""
    minima = {
        "id": 1,
        "c_tinyint": -128,
        "c_tinyint_u": 0,
        "c_smallint": -32768,
        "c_smallint_u": 0,
        "c_mediumint": -8388608,
        "c_mediumint_u": 0,
        "c_int": -2147483648,
        "c_int_u": 0,
        "c_bigint": -9223372036854775808,
        "c_bigint_u": 0,
        "c_decimal_10_2": "-99999999.99",
        "c_decimal_38_9": "-" + "9" * 29 + "." + "9" * 9,
        "c_decimal_65_30": "-" + "9" * 35 + "." + "9" * 30,
        "c_float": -_FLOAT32_MAX,
        "c_double": -1.7976931348623157e308,
        "c_bit1": 0,
        "c_bit12": 0,
        "c_bit64": 0,
        "c_char": "",
        "c_varchar": "",
        "c_tinytext": "",
        "c_text": "",
        "c_mediumtext": "",
        "c_longtext": "",
        "c_enum": "small",
        "c_set": "",
        "c_json": "[]",
        "c_binary": b"\x00\x00\x00\x00",
        "c_varbinary": b"",
        "c_tinyblob": b"",
        "c_blob": b"",
        "c_mediumblob": b"",
        "c_longblob": b"",
        "c_date": "1000-01-01",
        "c_datetime": "1000-01-01 00:00:00",
        "c_datetime6": "1000-01-01 00:00:00.000000",
        "c_timestamp": "1970-01-01 00:00:01",
        "c_time": "-838:59:59",
        "c_time6": "-838:59:59.000000",
        "c_year": 1901,
        "c_geometry": _geometry(_point_wkb(0.0, 0.0)),
        "c_point": _geometry(_point_wkb(-180.0, -90.0), 4326),
    }
    maxima = {
        "id": 2,
        "c_tinyint": 127,
        "c_tinyint_u": 255,
        "c_smallint": 32767,
        "c_smallint_u": 65535,
        "c_mediumint": 8388607,
        "c_mediumint_u": 16777215,
        "c_int": 2147483647,
        "c_int_u": 4294967295,
        "c_bigint": 9223372036854775807,
        "c_bigint_u": 18446744073709551615,
        "c_decimal_10_2": "99999999.99",
        "c_decimal_38_9": "9" * 29 + "." + "9" * 9,
        "c_decimal_65_30": "9" * 35 + "." + "9" * 30,
        "c_float": _FLOAT32_MAX,
        "c_double": 1.7976931348623157e308,
        "c_bit1": 1,
        "c_bit12": 0xFFF,
        "c_bit64": 2**64 - 1,
        "c_char": "日本😀é  ",  # utf8mb4; MySQL drops CHAR's trailing spaces
        "c_varchar": "🚀 four-byte UTF-8 𝄞 and ünïcödé",
        "c_tinytext": "t" * 255,
        "c_text": "Ω" * 1000,
        "c_mediumtext": "line1\nline2\ttab \"quote\" 'apostrophe' \\backslash",
        "c_longtext": "😀" * 500,
        "c_enum": "large",
        "c_set": "red,green,blue",
        "c_json": json.dumps(
            {"nested": {"list": [1, 2.5, None, True, "x"]}, "unicode": "日本語", "big": 1e300},
            ensure_ascii=False,
        ),
        "c_binary": b"\xff\xff\xff\xff",
        "c_varbinary": bytes(range(16)),
        "c_tinyblob": bytes(range(255)),
        "c_blob": bytes(range(256)) * 4,
        "c_mediumblob": b"\x00" * 70000,
        "c_longblob": bytes(range(256)) * 300,
        "c_date": "9999-12-31",
        "c_datetime": "9999-12-31 23:59:59",
        "c_datetime6": "9999-12-31 23:59:59.999999",
        "c_timestamp": "2038-01-19 03:14:07",
        "c_time": "838:59:59",
        "c_time6": "838:59:59.000000",
        "c_year": 2155,
        "c_geometry": _geometry(_linestring_wkb([(0.0, 0.0), (1.5, 2.5), (-3.0, 4.0)])),
        "c_point": _geometry(_point_wkb(180.0, 90.0), 4326),
    }
    nulls = {"id": 3}
    odd = {
        "id": 4,
        "c_tinyint": 0,
        "c_tinyint_u": 1,
        "c_smallint": -1,
        "c_smallint_u": 1,
        "c_mediumint": 0,
        "c_mediumint_u": 1,
        "c_int": 0,
        "c_int_u": 1,
        "c_bigint": 0,
        "c_bigint_u": 9223372036854775808,  # 2**63: just past signed BIGINT
        "c_decimal_10_2": "0.01",
        "c_decimal_38_9": "0.000000001",
        "c_decimal_65_30": "0.000000000000000000000000000001",
        "c_float": 0.1,  # stored as the float32 nearest 0.1
        "c_double": 5e-324,
        "c_bit1": 1,
        "c_bit12": 0b101,
        "c_bit64": 2**63,
        "c_char": "a",
        "c_varchar": " leading and trailing spaces kept in VARCHAR ",
        "c_tinytext": "",
        "c_text": "NULL",  # the text NULL, not a NULL
        "c_mediumtext": "",
        "c_longtext": "",
        "c_enum": "medium",
        "c_set": "blue,red",
        "c_json": '"just a string"',
        "c_binary": b"a",  # BINARY(4) pads with 0x00
        "c_varbinary": b"\x00",
        "c_tinyblob": b"\x00",
        "c_blob": b"\xff",
        "c_mediumblob": b"",
        "c_longblob": b"",
        "c_date": "0000-00-00",
        "c_datetime": "0000-00-00 00:00:00",
        "c_datetime6": "2024-02-29 12:34:56.000001",
        "c_timestamp": "2000-01-01 00:00:00",
        "c_time": "00:00:00",
        "c_time6": "-00:00:00.000001",
        "c_year": 0,
        "c_geometry": _geometry(_point_wkb(1.0, 2.0), 4326),
        "c_point": _geometry(_point_wkb(0.5, -0.5)),
    }
    return [minima, maxima, nulls, odd]


_COUNTRIES = ["JP", "US", "DE", "FR", "IE", "BR", "IN", "GB"]
_NAMES = ["山田 太郎", "Jane 🚀", "José Álvarez", "Zoë", "O'Brien", "Анна", "李雷", "Ævar"]
_BASE_TIME = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def _customer(rng: random.Random, cid: int, now: dt.datetime) -> dict[str, Any]:
    birthday = None if cid % 50 == 0 else dt.date(1950 + cid % 55, 1 + cid % 12, 1 + cid % 28)
    return {
        "id": cid,
        "ext_id": 18446744073709551615 - cid if cid % 7 == 0 else rng.getrandbits(63),
        "country": _COUNTRIES[cid % len(_COUNTRIES)],
        "name": f"{_NAMES[cid % len(_NAMES)]} #{cid}",
        "email": f"customer{cid}@example.com",
        "birthday": "0000-00-00" if cid % 97 == 0 else birthday,
        "created_at": _BASE_TIME + dt.timedelta(minutes=cid, microseconds=cid * 7),
        "updated_at": now,
        "prefs": None if cid % 3 else {"lang": ["ja", "en", "de"][cid % 3], "n": cid},
        "tier": cid % 256,
        "balance": f"{rng.randint(-100000, 10_000_000) / 100:.2f}",
    }


def _order(rng: random.Random, oid: int, customers: int, now: dt.datetime) -> dict[str, Any]:
    seconds = rng.randint(0, 838 * 3600 + 59 * 60 + 59)
    return {
        "id": oid,
        "customer_id": 1 + oid % customers,
        "amount": f"{rng.randint(-50000, 99_999_999) / 100:.2f}",
        "fx_rate": f"{rng.randint(1, 10**12) / 10**10:.10f}",
        "status": rng.choice(["new", "paid", "shipped", "refunded"]),
        "ship_time": None
        if oid % 11 == 0
        else f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}",
        "note": None if oid % 5 else rng.randbytes(rng.randint(0, 40)),
        "year": 2020 + oid % 6,
        "created_at": _BASE_TIME + dt.timedelta(seconds=oid * 37),
        "updated_at": now,
    }


def seed_store(store: Store, *, seed: int = 20251126) -> bool:
    """Create and fill the shop tables that are missing; True when anything was added."""
    rng = random.Random(seed)
    now = dt.datetime(2025, 11, 26, 0, 0, tzinfo=dt.UTC)
    added = False
    if not store.has_table(DATABASE, "customers"):
        store.create_table(DATABASE, "customers", CUSTOMERS)
        store.insert(
            DATABASE, "customers", [_customer(rng, i, now) for i in range(1, CUSTOMER_COUNT + 1)]
        )
        added = True
    if not store.has_table(DATABASE, "orders"):
        store.create_table(DATABASE, "orders", ORDERS)
        store.insert(
            DATABASE,
            "orders",
            [_order(rng, i, CUSTOMER_COUNT, now) for i in range(1, ORDER_COUNT + 1)],
        )
        added = True
    if not store.has_table(DATABASE, "type_zoo"):
        store.create_table(DATABASE, "type_zoo", TYPE_ZOO)
        store.insert(DATABASE, "type_zoo", type_zoo_rows())
        added = True
    return added


# --- AWS side ----------------------------------------------------------------


def _ensure_role(iam: Any, role_arn: str) -> None:
    name = role_arn.rsplit("/", 1)[-1]
    try:
        iam.get_role(RoleName=name)
        return
    except iam.exceptions.NoSuchEntityException:
        pass
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": EXPORT_SERVICE},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    path = "/" + "/".join(role_arn.split(":role/", 1)[1].split("/")[:-1])
    iam.create_role(
        RoleName=name,
        Path=path if path == "/" else path + "/",
        AssumeRolePolicyDocument=json.dumps(trust),
        Description="Lets RDS snapshot exports write to the export bucket (local cloud demo).",
    )
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": [
                    "s3:PutObject*",
                    "s3:ListBucket",
                    "s3:GetObject*",
                    "s3:DeleteObject*",
                    "s3:GetBucketLocation",
                ],
                "Resource": ["arn:aws:s3:::*"],
            }
        ],
    }
    iam.put_role_policy(
        RoleName=name, PolicyName="rds-snapshot-export", PolicyDocument=json.dumps(policy)
    )


def ensure_storage_transfer_role(
    iam: Any, role_arn: str, project: str, readable: Sequence[str]
) -> None:
    """The role Google's Storage Transfer service agent assumes to read exports.

    Trusted by web identity federation for the local service agent only
    (`storage_transfer_server.service_account`, through the deployed trust
    template), allowed to list and read the S3 resources `readable` (ARNs):
    deploy/storage-transfer.md's role, for the demo and the tests.
    """
    from export_pipeline.iam_policies import storage_transfer_trust_policy
    from export_pipeline.local_cloud.storage_transfer_server import service_account

    name = role_arn.rsplit("/", 1)[-1]
    try:
        iam.get_role(RoleName=name)
        return
    except iam.exceptions.NoSuchEntityException:
        pass
    trust = storage_transfer_trust_policy(service_account(project)["subjectId"])
    iam.create_role(
        RoleName=name,
        AssumeRolePolicyDocument=json.dumps(trust),
        Description="Lets Storage Transfer read exports (local cloud).",
    )
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:ListBucket", "s3:GetObject"],
                "Resource": list(readable),
            }
        ],
    }
    iam.put_role_policy(RoleName=name, PolicyName="read-exports", PolicyDocument=json.dumps(policy))


def _ensure_kms_key(kms: Any, key_id: str) -> None:
    """Make `alias/...` resolve (creating key + alias); ids/ARNs must already exist."""
    if not key_id.startswith("alias/"):
        kms.describe_key(KeyId=key_id)  # a key id/ARN in the config must exist
        return
    aliases = {
        a["AliasName"]
        for page in kms.get_paginator("list_aliases").paginate()
        for a in page["Aliases"]
    }
    if key_id in aliases:
        return
    key = kms.create_key(Description=f"RDS export key ({key_id}, local cloud demo)")
    kms.create_alias(AliasName=key_id, TargetKeyId=key["KeyMetadata"]["KeyId"])


def _exists(call: Any, not_found: type[Exception]) -> bool:
    try:
        call()
        return True
    except not_found:
        return False


def _source_exists(rds: Any, instance: RdsSource) -> bool:
    ident = instance.identifier
    if instance.kind == "instance":
        return _exists(
            lambda: rds.describe_db_instances(DBInstanceIdentifier=ident),
            rds.exceptions.DBInstanceNotFoundFault,
        )
    return _exists(
        lambda: rds.describe_db_clusters(DBClusterIdentifier=ident),
        rds.exceptions.DBClusterNotFoundFault,
    )


def _ensure_source(rds: Any, instance: RdsSource) -> None:
    ident = instance.identifier
    postgres = instance.engine_family == "postgres"
    if instance.kind == "instance":
        if _source_exists(rds, instance):
            return
        rds.create_db_instance(
            DBInstanceIdentifier=ident,
            Engine="postgres" if postgres else "mysql",
            EngineVersion="15.4" if postgres else "8.0.39",
            DBInstanceClass="db.t3.micro",
            AllocatedStorage=20,
            MasterUsername="admin",
            MasterUserPassword="local-cloud-demo",
            BackupRetentionPeriod=7,
            StorageEncrypted=True,
        )
    else:
        if _source_exists(rds, instance):
            return
        rds.create_db_cluster(
            DBClusterIdentifier=ident,
            Engine="aurora-postgresql" if postgres else "aurora-mysql",
            MasterUsername="admin",
            MasterUserPassword="local-cloud-demo",
            BackupRetentionPeriod=7,
            StorageEncrypted=True,
        )


def _snapshot_count(rds: Any, instance: RdsSource) -> int:
    if instance.kind == "instance":
        return len(
            rds.describe_db_snapshots(
                DBInstanceIdentifier=instance.identifier, SnapshotType="automated"
            )["DBSnapshots"]
        )
    return len(
        rds.describe_db_cluster_snapshots(
            DBClusterIdentifier=instance.identifier, SnapshotType="automated"
        )["DBClusterSnapshots"]
    )


def seed(clients: AwsClients, config: CloudConfiguration, settings: LocalCloudSettings) -> None:
    """Make the configured RDS sources exist with the shop demo data (idempotent).

    A new AWS server holds no RDS instance (its state is in memory, like the
    DynamoDB tables): the instance's database then starts again from the demo
    data too, so after `down` or a crash every source is fresh and none keeps
    earlier `mutate` changes. The live database is filled before the instance
    is created, so the automated snapshot taken at creation already holds the
    data (as on AWS, where the first backup follows creation); only when the
    instance already existed and data had to be added is another one taken.
    """
    if config.rds.storage_transfer_role_arn:
        ensure_storage_transfer_role(
            clients.iam,
            config.rds.storage_transfer_role_arn,
            settings.bigquery_project,
            [
                f"arn:aws:s3:::{config.aws.export_bucket}",
                f"arn:aws:s3:::{config.aws.export_bucket}/*",
            ],
        )
    for instance in config.rds.instances:
        _ensure_role(clients.iam, instance.iam_role_arn)
        _ensure_kms_key(clients.kms, instance.kms_key_id)
        existed = _source_exists(clients.rds, instance)
        if instance.engine_family == "postgres":
            store_path = pg_store_path(
                settings.state_dir, config.aws.region, instance.kind, instance.identifier
            )
            if not existed:
                store_path.unlink(missing_ok=True)  # a restarted cloud starts fresh
            added = demo_postgres.seed_store(PgStore(store_path))
        else:
            store = live_store(
                settings.state_dir, config.aws.region, instance.identifier, instance.kind
            )
            if not existed:
                for table in DEMO_TABLES:
                    if store.has_table(DATABASE, table):
                        store.drop_table(DATABASE, table)
            added = seed_store(store)
        _ensure_source(clients.rds, instance)
        if (existed and added) or _snapshot_count(clients.rds, instance) == 0:
            take_automated_snapshot(clients.rds, instance.identifier, instance.kind)


def _max_id(store: Store, table: str) -> int:
    return max((int(r["id"]) for r in store.read_all(DATABASE, table)), default=0)


def mutate(
    clients: AwsClients,
    config: CloudConfiguration,
    settings: LocalCloudSettings,
    seed: int | None = None,
) -> dict[str, Any]:
    """A day of changes on every configured source, then its nightly backup.

    Returns per source identifier the inserted/updated/deleted row counts per
    table and the new automated snapshot's identifier.
    """
    rng = random.Random(seed)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    summary: dict[str, Any] = {}
    for instance in config.rds.instances:
        if instance.engine_family == "postgres":
            pg_store = live_pg_store(
                settings.state_dir, config.aws.region, instance.identifier, instance.kind
            )
            pg_counts = demo_postgres.mutate_store(pg_store, rng)
            snapshot = take_automated_snapshot(clients.rds, instance.identifier, instance.kind)
            summary[instance.identifier] = {
                "tables": pg_counts,
                "snapshot": snapshot.get("DBSnapshotIdentifier")
                or snapshot.get("DBClusterSnapshotIdentifier"),
            }
            continue
        store = live_store(
            settings.state_dir, config.aws.region, instance.identifier, instance.kind
        )
        seed_store(store)
        customers_max = _max_id(store, "customers")
        orders = store.read_all(DATABASE, "orders")
        order_ids = [int(r["id"]) for r in orders]
        next_order = max(order_ids, default=0) + 1

        new_customers = [
            _customer(rng, customers_max + i, now) for i in range(1, rng.randint(3, 10))
        ]
        new_orders = [
            _order(rng, next_order + i, customers_max + len(new_customers), now)
            for i in range(rng.randint(20, 80))
        ]
        touched = rng.sample(order_ids, min(len(order_ids), rng.randint(20, 60)))
        untouched = sorted(set(order_ids) - set(touched))
        deleted = rng.sample(untouched, min(len(untouched), rng.randint(5, 15)))
        changes = {
            oid: {
                "status": rng.choice(["paid", "shipped", "refunded"]),
                "amount": f"{rng.randint(0, 9_999_999) / 100:.2f}",
                "updated_at": now,
            }
            for oid in touched
        }
        customer_updates = {
            cid: {"tier": rng.randint(0, 255), "updated_at": now}
            for cid in rng.sample(range(1, customers_max + 1), min(customers_max, 10))
        }
        counts = {
            "customers": {
                "inserted": store.insert(DATABASE, "customers", new_customers),
                "updated": store.update(DATABASE, "customers", "id", customer_updates),
                "deleted": 0,
            },
            "orders": {
                "inserted": store.insert(DATABASE, "orders", new_orders),
                "updated": store.update(DATABASE, "orders", "id", changes),
                "deleted": store.delete(DATABASE, "orders", "id", deleted),
            },
        }
        snapshot = take_automated_snapshot(clients.rds, instance.identifier, instance.kind)
        snapshot_id = snapshot.get("DBSnapshotIdentifier") or snapshot.get(
            "DBClusterSnapshotIdentifier"
        )
        summary[instance.identifier] = {"tables": counts, "snapshot": snapshot_id}
    return summary
