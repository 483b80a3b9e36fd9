"""The PostgreSQL demo: database `app` behind the configured PostgreSQL sources.

Embedded, like the MySQL demo: no PostgreSQL server is needed. The live
database is a `postgres_store.PgStore` holding `app.public.accounts` (a few
hundred rows), `app.sales.orders` and `app.public.type_zoo` (every type of
AWS's PostgreSQL export mapping, with edge values); each value is written in
PostgreSQL's own text form, as a server would output it with the session
settings the local export uses (TimeZone UTC, DateStyle ISO, IntervalStyle
iso_8601). `export_pipeline_tests` checks every one of those texts against
the real server.

`demo_rds.seed()` / `mutate()` call `seed_source()` / `mutate_source()` for
each configured source whose engine is PostgreSQL (an RDS instance, or an
Aurora PostgreSQL cluster).
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

from export_pipeline.local_cloud.postgres_store import PgColumn, PgStore

DATABASE = "app"
ACCOUNT_COUNT = 300
ORDER_COUNT = 800

ACCOUNTS = [
    PgColumn("id", "bigint"),
    PgColumn("email", "text"),
    PgColumn("country", "character(2)"),
    PgColumn("balance", "numeric(12,2)"),
    PgColumn("active", "boolean"),
    PgColumn("tags", "text[]"),
    PgColumn("created_at", "timestamp with time zone"),
    PgColumn("profile", "jsonb"),
]
ORDERS = [
    PgColumn("id", "bigint"),
    PgColumn("account_id", "bigint"),
    PgColumn("amount", "numeric(10,2)"),
    PgColumn("status", "order_status"),
    PgColumn("placed_on", "date"),
    PgColumn("placed_at", "timestamp without time zone"),
]
# (column, format_type() text) and the values of three rows: typical, edge, NULL.
TYPE_ZOO: list[tuple[str, str, Any, Any]] = [
    ("si", "smallint", 7, -32768),
    ("i", "integer", 2147483647, -2147483648),
    ("bi", "bigint", 42, 9223372036854775807),
    ("o", "oid", 4000000000, 0),
    ("r", "real", 1.5, float("nan")),
    ("d", "double precision", 2.25, float("-inf")),
    ("n", "numeric(12,2)", "1234.56", "NaN"),
    ("nu", "numeric", "0.1", "12345678901234567890123456789012.5"),
    ("nwide", "numeric(40,10)", "123456789012345678901234567890.0123456789", "-1.0000000000"),
    ("m", "money", "$1,234.50", "-$0.01"),
    ("b", "boolean", True, False),
    ("by", "bytea", b"\x00\xff", b""),
    ("ch", "character(5)", "ab   ", "     "),
    ("vc", "character varying(10)", "hé", ""),
    ("t", "text", "line\ntwo", ""),
    ("u", "uuid", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "00000000-0000-0000-0000-000000000000"),
    ("ip", "inet", "192.168.0.1/24", "::1"),
    ("mac", "macaddr", "08:00:2b:01:02:03", "ff:ff:ff:ff:ff:ff"),
    ("bits", "bit(4)", "1010", "0000"),
    ("e", "order_status", "shipped", "new"),
    ("j", "json", '{"k": [1, 2.5, "x"]}', "[]"),
    ("jb", "jsonb", '{"a": null, "b": 1}', "{}"),
    # json keeps duplicate keys (BigQuery's JSON cannot): the second row → __raw.
    ("jdup", "json", '{"a": 1, "b": {"a": 2}}', '{"a": 1, "b": {"c": 1, "c": 2}}'),
    # hstore (extension): every key and value quoted, `\"` and `\\` escaped; '' is empty.
    (
        "hs",
        "hstore",
        '""=>"", "a"=>"1", "=>"=>"NULL", "b c"=>NULL, '
        '"é, x"=>"tab\tx", "q\\"uote"=>"back\\\\slash"',
        "",
    ),
    ("dt", "date", "2024-02-29", "0044-03-15 BC"),
    ("ts", "timestamp without time zone", "2024-05-06 07:08:09.123456", "infinity"),
    ("tstz", "timestamp with time zone", "2024-05-06 05:08:09.5+00", "10000-01-01 00:00:00+00"),
    ("tm", "time without time zone", "23:59:59.999999", "24:00:00"),
    ("tmtz", "time with time zone", "10:11:12+05:30", "00:00:00-12"),
    ("iv", "interval", "P1Y2M-3DT4H5M6.5S", "P-2D"),
    # Arrays: NULL (row 3) and {} in one column → JSON; NULL elements → JSON; one-dimensional
    # without NULL elements → ARRAY<T>; more dimensions → JSON; a lower bound ≠ 1 → __raw.
    ("arr", "integer[]", "{1,2,3}", "{}"),
    ("tarr", "text[]", '{"a b",NULL,"c\\"d"}', "{}"),
    ("ai", "integer[]", "{1,2,3}", "{-2147483648,2147483647}"),
    ("atext", "text[]", '{"a b","c\\"d","back\\\\slash","NULL",é,"{x}",日本}', '{"",",","tab\tx"}'),
    ("anum", "numeric(20,9)[]", "{0.123456789,-2.250000000}", "{99999999999.999999999}"),
    ("abool", "boolean[]", "{t,f}", "{f}"),
    ("adate", "date[]", "{2024-02-29}", "{infinity}"),
    ("abox", "box[]", "{(1,1),(0,0);(3,3),(2,2)}", "{(0,0),(0,0)}"),
    ("amd", "integer[]", "{{1,2},{3,4}}", "[0:1]={5,6}"),
    ("rng", "int4range", "[1,10)", "empty"),
    ("nr", "numrange", "(1.5,)", "(,)"),
    (
        "tsr",
        "tstzrange",
        '["2024-01-01 00:00:00+00","2024-02-01 00:00:00+00")',
        "[-infinity,infinity]",
    ),
    ("pt", "point", "(1.5,-2)", "(0,0)"),
]


def type_zoo_rows() -> list[dict[str, Any]]:
    """The three rows of `app.public.type_zoo`: typical values, edge values, NULLs."""
    return [
        {"id": 1, **{name: typical for name, _, typical, _ in TYPE_ZOO}},
        {"id": 2, **{name: edge for name, _, _, edge in TYPE_ZOO}},
        {"id": 3},
    ]


def _account(rng: random.Random, account_id: int, now: dt.datetime) -> dict[str, Any]:
    created = now - dt.timedelta(seconds=rng.randint(0, 86400 * 900))
    return {
        "id": account_id,
        "email": f"user{account_id}@example.com",
        "country": rng.choice(["IE", "DE", "FR", "US"]),
        "balance": f"{rng.randint(-50_000, 5_000_000) / 100:.2f}",
        "active": rng.random() < 0.8,
        "tags": rng.choice(["{}", "{vip}", '{vip,"early bird"}', None]),
        "created_at": created.strftime("%Y-%m-%d %H:%M:%S+00"),
        "profile": rng.choice(['{"lang": "en"}', '{"lang": "de", "beta": true}', None]),
    }


def _order(rng: random.Random, order_id: int, accounts: int, now: dt.datetime) -> dict[str, Any]:
    placed = now - dt.timedelta(seconds=rng.randint(0, 86400 * 365))
    return {
        "id": order_id,
        "account_id": rng.randint(1, accounts),
        "amount": f"{rng.randint(1, 999_999) / 100:.2f}",
        "status": rng.choice(["new", "paid", "shipped"]),
        "placed_on": placed.strftime("%Y-%m-%d"),
        "placed_at": placed.strftime("%Y-%m-%d %H:%M:%S"),
    }


def seed_store(store: PgStore, *, seed: int = 20251207) -> bool:
    """Create and fill the `app` tables that are missing; True when anything was added."""
    rng = random.Random(seed)
    now = dt.datetime(2025, 12, 7, tzinfo=dt.UTC)
    added = False
    if not store.has_table(DATABASE, "public", "accounts"):
        store.create_table(DATABASE, "public", "accounts", ACCOUNTS)
        store.insert(
            DATABASE,
            "public",
            "accounts",
            [_account(rng, i, now) for i in range(1, ACCOUNT_COUNT + 1)],
        )
        added = True
    if not store.has_table(DATABASE, "sales", "orders"):
        store.create_table(DATABASE, "sales", "orders", ORDERS)
        store.insert(
            DATABASE,
            "sales",
            "orders",
            [_order(rng, i, ACCOUNT_COUNT, now) for i in range(1, ORDER_COUNT + 1)],
        )
        added = True
    if not store.has_table(DATABASE, "public", "type_zoo"):
        columns = [PgColumn("id", "integer")] + [PgColumn(n, t) for n, t, _, _ in TYPE_ZOO]
        store.create_table(DATABASE, "public", "type_zoo", columns)
        store.insert(DATABASE, "public", "type_zoo", type_zoo_rows())
        added = True
    return added


def mutate_store(store: PgStore, rng: random.Random) -> dict[str, dict[str, int]]:
    """A day of new orders (the store keeps inserts only); returns the counts."""
    seed_store(store)
    info = store.table(DATABASE, "sales", "orders")
    next_id = store.count(info) + 1
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    new = [_order(rng, next_id + i, ACCOUNT_COUNT, now) for i in range(rng.randint(10, 40))]
    return {"orders": {"inserted": store.insert(DATABASE, "sales", "orders", new)}}
