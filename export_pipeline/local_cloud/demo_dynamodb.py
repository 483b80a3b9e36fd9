"""Demo DynamoDB data for the local cloud: the `Orders` and `Products` tables.

`seed` creates the tables that `pipeline.yaml` names (with PITR on) and fills
them with data chosen to break naive converters: every DynamoDB type (S with
empty strings and 4-byte UTF-8; N from 1E-130 to 9.99…E+125, int64 extremes
and 38-digit decimals; BOOL, NULL, B, SS, NS, BS, nested M and L), an
attribute whose type differs between items (`status`), and attribute names a
BigQuery column cannot carry as they are (`order-date`, `Name` beside `name`,
the reserved word `select`). It then moves the tables' recorded history two
days back (local-cloud time control) so that exports of recent windows, full
or incremental, are valid straight away.

`mutate` applies a few dozen creates, updates and deletes through every write
API (PutItem, UpdateItem, DeleteItem, BatchWriteItem, TransactWriteItems), so
that an incremental export of the last minutes has something to carry.

Both go through ordinary boto3 calls only; the time shift is the one
local-cloud-only request, made through `dynamodb_time_control`.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable
from typing import Any

from export_pipeline.local_cloud import dynamodb_time_control
from export_pipeline.local_cloud.clients import AwsClients
from export_pipeline.local_cloud.configuration import CloudConfiguration
from export_pipeline.local_cloud.settings import LocalCloudSettings

_log = logging.getLogger("export_pipeline.local_cloud.demo_dynamodb")

ORDERS = "Orders"
PRODUCTS = "Products"
ORDER_COUNT = 2000
CUSTOMER_COUNT = 200
PRODUCT_COUNT = 300
# How far back the seeded history is moved: incremental windows of up to 24 h
# anywhere in the last day, and a full export "as of yesterday", are valid.
SEED_HISTORY_AGE_SECONDS = 2 * 24 * 3600

# Numbers at DynamoDB's edges: int64 extremes (and one past), 38 significant
# digits, the smallest and largest magnitudes.
EDGE_NUMBERS = (
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "18446744073709551615",
    "12345678901234567890123456789012345678",
    "0.12345678901234567890123456789012345678",
    "1234567890.1234567890123456789012345678",
    "1E-130",
    "-1E-130",
    "9.9999999999999999999999999999999999999E+125",
    "-9.9999999999999999999999999999999999999E+125",
    "0",
    "-0.5",
)
# Strings: empty, 4-byte UTF-8 (emoji, musical symbol), quotes, newlines, NUL-free.
EDGE_STRINGS = ("", "🚀 launch", "𝄞 clef", 'quote " and \\ backslash', "line\nbreak", "plain")

TABLE_SPECS: dict[str, dict[str, Any]] = {
    ORDERS: {
        "KeySchema": [
            {"AttributeName": "customerId", "KeyType": "HASH"},
            {"AttributeName": "orderId", "KeyType": "RANGE"},
        ],
        "AttributeDefinitions": [
            {"AttributeName": "customerId", "AttributeType": "S"},
            {"AttributeName": "orderId", "AttributeType": "S"},
        ],
    },
    PRODUCTS: {
        "KeySchema": [{"AttributeName": "sku", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "sku", "AttributeType": "S"}],
    },
}


def order_item(index: int, rng: random.Random) -> dict[str, Any]:
    """One `Orders` item; the index decides which edge values it carries."""
    customer = f"c-{index % CUSTOMER_COUNT:04d}"
    quantity = rng.randint(1, 9)
    item: dict[str, Any] = {
        "customerId": {"S": customer},
        "orderId": {"S": f"o-{index:06d}"},
        "order-date": {"S": f"2025-{1 + index % 12:02d}-{1 + index % 28:02d}"},
        "Name": {"S": f"Order {index}"},
        "name": {"S": f"order-{index}"},
        "select": {"S": rng.choice(["standard", "express", "pickup"])},
        "quantity": {"N": str(quantity)},
        "total": {"N": f"{rng.randint(1, 99999)}.{rng.randint(0, 99):02d}"},
        "paid": {"BOOL": index % 3 != 0},
        "lines": {
            "L": [
                {"M": {"sku": {"S": f"SKU-{(index + k) % PRODUCT_COUNT:05d}"}, "qty": {"N": "1"}}}
                for k in range(1 + index % 3)
            ]
        },
        "shipping": {
            "M": {
                "address": {
                    "M": {
                        "city": {"S": rng.choice(["Dublin", "Zürich", "東京", "São Paulo"])},
                        "lines": {"L": [{"S": "1 Main St"}, {"NULL": True}]},
                    }
                },
                "express": {"BOOL": index % 5 == 0},
            }
        },
        "tags": {"SS": sorted({rng.choice(["gift", "bulk", "vip", "promo"]), "web"})},
        "lineQuantities": {"NS": sorted({str(quantity), str(quantity + 1), "2.5"})},
    }
    # `status` is text on most orders and a number code on some: a type that
    # differs between items.
    item["status"] = {"N": str(index % 4)} if index % 10 == 0 else {"S": "shipped"}
    if index % 7 == 0:
        item["note"] = {"NULL": True}
    if index % 4 == 0:
        item["signature"] = {"B": bytes([index % 256, 0, 255, 10])}
        item["attachments"] = {"BS": [b"\x00\x01", bytes([index % 256]) + b"\xfe"]}
    if index % 11 == 0:
        item["comment"] = {"S": EDGE_STRINGS[(index // 11) % len(EDGE_STRINGS)]}
    if index % 13 == 0:
        item["measure"] = {"N": EDGE_NUMBERS[(index // 13) % len(EDGE_NUMBERS)]}
    if index % 17 == 0:
        item["measures"] = {"NS": ["1E-130", "9.9999999999999999999999999999999999999E+125", "42"]}
    return item


def product_item(index: int, rng: random.Random) -> dict[str, Any]:
    """One `Products` item."""
    item: dict[str, Any] = {
        "sku": {"S": f"SKU-{index:05d}"},
        "title": {"S": f"Product {index} {'★' * (index % 4)}"},
        "price": {"N": f"{rng.randint(1, 5000)}.{rng.randint(0, 99):02d}"},
        "stock": {"N": str(rng.randint(0, 10_000))},
        "active": {"BOOL": index % 9 != 0},
        "categories": {"SS": sorted({rng.choice(["tools", "toys", "food", "books"]), "all"})},
        "dimensions": {
            "M": {
                "w": {"N": str(rng.randint(1, 100))},
                "h": {"N": str(rng.randint(1, 100))},
                "unit": {"S": "cm"},
            }
        },
        "variants": {
            "L": [{"S": "default"}, {"N": str(index)}, {"BOOL": True}, {"M": {"c": {"S": "red"}}}]
        },
        "ratings": {"NS": sorted({str(rng.randint(1, 5)), "4.5"})},
        "Name": {"S": f"P{index}"},
        "name": {"S": f"p{index}"},
    }
    if index % 5 == 0:
        item["image"] = {"B": bytes(range(index % 200, index % 200 + 16))}
    if index % 8 == 0:
        item["discontinued"] = {"NULL": True}
    if index % 6 == 0:
        item["weight"] = {"N": EDGE_NUMBERS[(index // 6) % len(EDGE_NUMBERS)]}
    if index % 10 == 0:
        item["description"] = {"S": EDGE_STRINGS[(index // 10) % len(EDGE_STRINGS)]}
    return item


ITEM_BUILDERS = {ORDERS: (order_item, ORDER_COUNT), PRODUCTS: (product_item, PRODUCT_COUNT)}


def _table_exists(dynamodb: Any, name: str) -> bool:
    try:
        dynamodb.describe_table(TableName=name)
    except dynamodb.exceptions.ResourceNotFoundException:
        return False
    return True


def _batch_put(dynamodb: Any, table: str, items: Iterable[dict[str, Any]]) -> int:
    batch: list[dict[str, Any]] = []
    written = 0

    def flush() -> None:
        nonlocal written
        pending = {table: batch.copy()}
        while pending:
            response = dynamodb.batch_write_item(RequestItems=pending)
            pending = response.get("UnprocessedItems") or {}
        written += len(batch)
        batch.clear()

    for item in items:
        batch.append({"PutRequest": {"Item": item}})
        if len(batch) == 25:
            flush()
    if batch:
        flush()
    return written


def _demo_tables(config: CloudConfiguration) -> list[str]:
    names = [t.name for t in config.dynamodb.tables]
    unknown = [n for n in names if n not in ITEM_BUILDERS]
    if unknown:
        _log.warning("no demo data for DynamoDB tables %s (only %s)", unknown, list(ITEM_BUILDERS))
    return [n for n in names if n in ITEM_BUILDERS]


def seed(clients: AwsClients, config: CloudConfiguration, settings: LocalCloudSettings) -> None:
    """Create and fill the configured demo tables (PITR on, history 2 days old). Idempotent."""
    dynamodb = clients.dynamodb
    for name in _demo_tables(config):
        if _table_exists(dynamodb, name):
            count = dynamodb.scan(TableName=name, Select="COUNT", Limit=1)["Count"]
            if count:
                _log.info("DynamoDB table %s already seeded", name)
                continue
        else:
            dynamodb.create_table(
                TableName=name, BillingMode="PAY_PER_REQUEST", **TABLE_SPECS[name]
            )
            dynamodb.get_waiter("table_exists").wait(
                TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
            )
        dynamodb.update_continuous_backups(
            TableName=name,
            PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
        )
        builder, count = ITEM_BUILDERS[name]
        rng = random.Random(f"seed:{name}")
        written = _batch_put(dynamodb, name, (builder(i, rng) for i in range(count)))
        dynamodb_time_control.shift_history(
            settings.aws_endpoint_url, name, SEED_HISTORY_AGE_SECONDS, config.aws.region
        )
        _log.info("seeded DynamoDB table %s with %d items", name, written)


def _existing_keys(dynamodb: Any, table: str, key_names: list[str], limit: int) -> list[dict]:
    response = dynamodb.scan(
        TableName=table,
        Limit=limit,
        ProjectionExpression=", ".join(f"#k{i}" for i in range(len(key_names))),
        ExpressionAttributeNames={f"#k{i}": name for i, name in enumerate(key_names)},
    )
    return [{name: item[name] for name in key_names} for item in response["Items"]]


def _mutate_table(
    dynamodb: Any, table: str, rng: random.Random, run_tag: str, sizes: tuple[int, int, int]
) -> dict[str, int]:
    creates, updates, deletes = sizes
    key_names = [k["AttributeName"] for k in TABLE_SPECS[table]["KeySchema"]]
    builder, _ = ITEM_BUILDERS[table]
    existing = _existing_keys(dynamodb, table, key_names, 400)
    rng.shuffle(existing)
    to_update = existing[:updates]
    to_delete = existing[updates : updates + deletes]

    new_items = []
    for i in range(creates):
        item = builder(rng.randint(0, 10**6), rng)
        if table == ORDERS:
            item["orderId"] = {"S": f"o-{run_tag}-{i:03d}"}
        else:
            item["sku"] = {"S": f"SKU-{run_tag}-{i:03d}"}
        new_items.append(item)

    # Creates: half by PutItem, half by BatchWriteItem.
    half = len(new_items) // 2
    for item in new_items[:half]:
        dynamodb.put_item(TableName=table, Item=item)
    _batch_put(dynamodb, table, new_items[half:])

    # Updates: UpdateItem, the last two in one transaction.
    field = "total" if table == ORDERS else "price"
    plain, transactional = to_update[:-2], to_update[-2:]
    for key in plain:
        dynamodb.update_item(
            TableName=table,
            Key=key,
            UpdateExpression="SET #f = :v, #u = :now REMOVE #gone",
            ExpressionAttributeNames={"#f": field, "#u": "updatedAt", "#gone": "Name"},
            ExpressionAttributeValues={
                ":v": {"N": f"{rng.randint(1, 9999)}.{rng.randint(0, 99):02d}"},
                ":now": {"S": f"{run_tag}"},
            },
        )
    if transactional:
        dynamodb.transact_write_items(
            TransactItems=[
                {
                    "Update": {
                        "TableName": table,
                        "Key": key,
                        "UpdateExpression": "SET #f = :v",
                        "ExpressionAttributeNames": {"#f": field},
                        "ExpressionAttributeValues": {":v": {"N": "0.01"}},
                    }
                }
                for key in transactional
            ]
        )

    # Deletes: DeleteItem, and the rest by BatchWriteItem.
    for key in to_delete[: len(to_delete) // 2]:
        dynamodb.delete_item(TableName=table, Key=key)
    rest = to_delete[len(to_delete) // 2 :]
    if rest:
        dynamodb.batch_write_item(
            RequestItems={table: [{"DeleteRequest": {"Key": key}} for key in rest]}
        )
    return {"created": len(new_items), "updated": len(to_update), "deleted": len(to_delete)}


def mutate(
    clients: AwsClients,
    config: CloudConfiguration,
    settings: LocalCloudSettings,
    seed: int | None = None,
) -> dict[str, Any]:
    """Create, update and delete a few dozen demo items; return counts per table."""
    rng = random.Random(seed)
    run_tag = f"m{time.time_ns() // 1000:x}"
    sizes = {ORDERS: (12, 15, 8), PRODUCTS: (5, 8, 3)}
    summary: dict[str, Any] = {}
    for name in _demo_tables(config):
        if not _table_exists(clients.dynamodb, name):
            raise RuntimeError(
                f"DynamoDB table {name!r} does not exist: seed the local cloud first"
            )
        summary[name] = _mutate_table(clients.dynamodb, name, rng, run_tag, sizes[name])
    return summary
