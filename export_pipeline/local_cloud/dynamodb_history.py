"""The change log behind the local cloud's DynamoDB point-in-time exports.

AWS keeps 35 days of point-in-time-recovery history; moto keeps only the
current items. To export a table "as of" a past instant, or the changes of a
window, the local cloud records every mutation of every item in moto's server
process: when (microseconds, strictly increasing per table), which key, the
full image before and the full image after. Both export kinds are then
answered from this log alone:

- a full export at time T starts from the current items and puts back, for
  every key written after T, the image it had just before its first later
  write (undoing history instead of replaying it means items that entered the
  table without a logged write, e.g. from a restore or an import, are still
  there);
- an incremental export of [from, to) takes, per key written in the window,
  the image before its first write in the window and the image after its last
  one.

The recording hooks sit at the narrowest points that every item mutation in
moto 5.2 passes through: `Table.put_item` and `Table.delete_item` (PutItem,
BatchWriteItem, PartiQL, transactions, imports) and
`DynamoDBBackend.update_item` (UpdateItem and transactional updates mutate the
stored item in place, so the image must be taken before). A transaction's
writes are held back and logged only if the whole transaction commits (moto
rolls a failed one back by swapping in a copy of the table).

The log hangs off moto's `Table` object, so a moto reset, a deleted table or a
new table with the same name start clean; `copy.deepcopy` of a table (moto does
that for transactions and backups) shares the log instead of copying it.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

# One lock for every mutation + its log entry and for every export snapshot:
# moto serves requests on several threads and an export must see a table and
# its log that agree with each other.
LOCK = threading.RLock()

_local = threading.local()

PITR_RECOVERY_PERIOD_DAYS_DEFAULT = 35
# AWS: "LatestRestorableDateTime is typically 5 minutes before the current time."
LATEST_RESTORABLE_LAG_SECONDS = 300


def now_micros() -> int:
    return time.time_ns() // 1000


def micros_to_datetime(micros: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(micros / 1_000_000, tz=dt.UTC)


def datetime_to_micros(value: dt.datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    delta = value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


Image = dict[str, dict[str, Any]]
"""One item in DynamoDB JSON (`{"attr": {"S": "x"}, ...}`), binary as base64 text."""


@dataclass(frozen=True)
class ChangeEntry:
    """One committed write of one item."""

    timestamp_micros: int
    key_id: str  # canonical JSON of the key attributes: identifies the item
    keys: Image
    old_image: Image | None  # None: the item did not exist before
    new_image: Image | None  # None: the item was deleted


@dataclass
class TableHistory:
    """Everything the exports need to know about one table's past."""

    table_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    entries: list[ChangeEntry] = field(default_factory=list)
    pitr_enabled_micros: int | None = None
    last_micros: int = 0

    def __deepcopy__(self, memo: dict[int, Any]) -> TableHistory:
        # moto deep-copies tables for transaction rollback and backups; the log
        # is append-only and must stay one log, not fork.
        return self

    def next_timestamp(self) -> int:
        stamp = max(now_micros(), self.last_micros + 1)
        self.last_micros = stamp
        return stamp

    def append(self, key_id: str, keys: Image, old: Image | None, new: Image | None) -> None:
        self.entries.append(ChangeEntry(self.next_timestamp(), key_id, keys, old, new))


def history_of(table: Any) -> TableHistory:
    """The change log of a moto `Table` (created on first use)."""
    history = table.__dict__.get("_local_cloud_history")
    if history is None:
        history = TableHistory()
        table.__dict__["_local_cloud_history"] = history
    return history


# --------------------------------------------------------------------------- images


def dynamo_value_json(value: Any) -> dict[str, Any]:
    """A moto `DynamoType` as plain DynamoDB JSON (base64 text for binaries)."""
    kind = value.type
    raw = value.value
    if kind == "M":
        return {"M": {name: dynamo_value_json(v) for name, v in raw.items()}}
    if kind == "L":
        return {"L": [dynamo_value_json(v) for v in raw]}
    if kind == "B":
        return {"B": _b64(raw)}
    if kind == "BS":
        return {"BS": [_b64(v) for v in raw]}
    if kind in ("SS", "NS"):
        return {kind: list(raw)}
    return {kind: raw}


def _b64(raw: Any) -> str:
    if isinstance(raw, bytes | bytearray):
        return base64.b64encode(raw).decode("ascii")
    return str(raw)


def item_image(item: Any) -> Image:
    """A moto `Item` as a detached DynamoDB JSON image."""
    return {name: dynamo_value_json(value) for name, value in item.attrs.items()}


def key_attribute_names(table: Any) -> list[str]:
    names = [table.hash_key_attr]
    if table.range_key_attr:
        names.append(table.range_key_attr)
    return names


def keys_of(table: Any, image: Image) -> Image:
    return {name: copy.deepcopy(image[name]) for name in key_attribute_names(table)}


def key_id_of(keys: Image) -> str:
    return json.dumps(keys, sort_keys=True, separators=(",", ":"))


# --------------------------------------------------------------------------- recording


@contextmanager
def transaction() -> Iterator[None]:
    """Hold back entries logged inside; commit them only if the block succeeds."""
    outer = getattr(_local, "pending", None)
    if outer is not None:  # nested: the outermost transaction decides
        yield
        return
    pending: list[tuple[TableHistory, str, Image, Image | None, Image | None]] = []
    _local.pending = pending
    try:
        yield
    except BaseException:
        _local.pending = None
        raise
    _local.pending = None
    for history, key_id, keys, old, new in pending:
        history.append(key_id, keys, old, new)


@contextmanager
def _suppressed() -> Iterator[None]:
    previous = getattr(_local, "suppress", False)
    _local.suppress = True
    try:
        yield
    finally:
        _local.suppress = previous


def record(table: Any, old: Image | None, new: Image | None) -> None:
    """Log one write of one item of `table` (or hold it back inside a transaction)."""
    if getattr(_local, "suppress", False) or (old is None and new is None):
        return
    image = new if new is not None else old
    assert image is not None
    keys = keys_of(table, image)
    history = history_of(table)
    pending = getattr(_local, "pending", None)
    if pending is not None:
        pending.append((history, key_id_of(keys), keys, old, new))
    else:
        history.append(key_id_of(keys), keys, old, new)


def _current_image(table: Any, item_attrs: dict[str, Any]) -> Image | None:
    from moto.dynamodb.models.dynamo_type import DynamoType

    try:
        hash_value = DynamoType(item_attrs[table.hash_key_attr])
        range_value = DynamoType(item_attrs[table.range_key_attr]) if table.range_key_attr else None
        current = table.get_item(hash_value, range_value)
    except Exception:  # malformed request: moto's own put_item reports it
        return None
    return item_image(current) if current is not None else None


def install_recorders() -> None:
    """Wrap moto's item-mutating methods so that every committed write is logged."""
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table

    if getattr(Table.put_item, "_local_cloud_wrapped", False):
        return

    original_put = Table.put_item
    original_delete = Table.delete_item
    original_update = DynamoDBBackend.update_item
    original_transact = DynamoDBBackend.transact_write_items
    original_pitr = DynamoDBBackend.update_continuous_backups
    original_describe_pitr = DynamoDBBackend.describe_continuous_backups

    def put_item(self: Any, item_attrs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        with LOCK:
            old = _current_image(self, item_attrs)
            item = original_put(self, item_attrs, *args, **kwargs)
            record(self, old, item_image(item))
            return item

    def delete_item(self: Any, hash_key: Any, range_key: Any) -> Any:
        with LOCK:
            item = original_delete(self, hash_key, range_key)
            if item is not None:
                record(self, item_image(item), None)
            return item

    def update_item(self: Any, table_name: str, key: dict[str, Any], *args: Any, **kwargs: Any):
        with LOCK:
            table = self.get_table(table_name)
            old = _current_image(table, key) if isinstance(key, dict) else None
            # A missing item is first created empty by moto, then updated: one write.
            with _suppressed():
                item = original_update(self, table_name, key, *args, **kwargs)
            record(table, old, item_image(item))
            return item

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        with LOCK:
            # moto rolls a failed transaction back by swapping in deep copies of
            # the tables: create the logs first so that the copies share them.
            for table in list(self.tables.values()):
                history_of(table)
            with transaction():
                return original_transact(self, transact_items)

    def update_continuous_backups(self: Any, table_name: str, spec: dict[str, Any]):
        with LOCK:
            result = original_pitr(self, table_name, spec)
            table = self.get_table(table_name)
            history = history_of(table)
            enabled = spec.get("PointInTimeRecoveryEnabled")
            if enabled and history.pitr_enabled_micros is None:
                history.pitr_enabled_micros = now_micros()
            elif not enabled:
                # Disabling PITR drops its history: a later enable starts afresh.
                history.pitr_enabled_micros = None
            refresh_pitr_description(table)
            return result

    def describe_continuous_backups(self: Any, table_name: str) -> dict[str, Any]:
        result = original_describe_pitr(self, table_name)
        refresh_pitr_description(self.get_table(table_name))
        return result

    for wrapper, original in (
        (put_item, original_put),
        (delete_item, original_delete),
        (update_item, original_update),
        (transact_write_items, original_transact),
        (update_continuous_backups, original_pitr),
        (describe_continuous_backups, original_describe_pitr),
    ):
        wrapper.__wrapped__ = original  # type: ignore[attr-defined]
        wrapper._local_cloud_wrapped = True  # type: ignore[attr-defined]
        wrapper.__doc__ = original.__doc__
    Table.put_item = put_item  # type: ignore[method-assign]
    Table.delete_item = delete_item  # type: ignore[method-assign]
    DynamoDBBackend.update_item = update_item  # type: ignore[method-assign]
    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    DynamoDBBackend.update_continuous_backups = update_continuous_backups  # type: ignore[method-assign]
    DynamoDBBackend.describe_continuous_backups = describe_continuous_backups  # type: ignore[method-assign]


# --------------------------------------------------------------------------- PITR window


def recovery_period_days(table: Any) -> int:
    description = table.continuous_backups.get("PointInTimeRecoveryDescription", {})
    return int(description.get("RecoveryPeriodInDays") or PITR_RECOVERY_PERIOD_DAYS_DEFAULT)


def pitr_enabled(table: Any) -> bool:
    description = table.continuous_backups.get("PointInTimeRecoveryDescription", {})
    return description.get("PointInTimeRecoveryStatus") == "ENABLED"


def earliest_restorable_micros(table: Any) -> int | None:
    """Start of the PITR window: PITR enable time, or the recovery period ago."""
    history = history_of(table)
    if not pitr_enabled(table):
        return None
    if history.pitr_enabled_micros is None:  # enabled before install(): from now on
        history.pitr_enabled_micros = now_micros()
    period = recovery_period_days(table) * 86_400 * 1_000_000
    return max(history.pitr_enabled_micros, now_micros() - period)


def refresh_pitr_description(table: Any) -> None:
    """Make moto's ContinuousBackupsDescription show the window the exports enforce."""
    description = table.continuous_backups.get("PointInTimeRecoveryDescription", {})
    earliest = earliest_restorable_micros(table)
    if earliest is None:
        return
    latest = max(earliest, now_micros() - LATEST_RESTORABLE_LAG_SECONDS * 1_000_000)
    description["EarliestRestorableDateTime"] = earliest / 1_000_000
    description["LatestRestorableDateTime"] = latest / 1_000_000


# --------------------------------------------------------------------------- reading


def image_at(table: Any, at_micros: int) -> list[Image]:
    """Every item of `table` as it was at `at_micros` (writes at that instant included)."""
    with LOCK:
        current = {
            key_id_of(keys_of(table, img)): img for img in map(item_image, table.all_items())
        }
        entries = list(history_of(table).entries)
    undone: set[str] = set()
    for entry in entries:
        if entry.timestamp_micros <= at_micros or entry.key_id in undone:
            continue
        # First write after the instant: its old image is the state at the instant.
        undone.add(entry.key_id)
        if entry.old_image is None:
            current.pop(entry.key_id, None)
        else:
            current[entry.key_id] = entry.old_image
    return list(current.values())


@dataclass(frozen=True)
class WindowChange:
    """The net change of one item over an incremental export's window."""

    timestamp_micros: int  # of the item's last write in the window
    keys: Image
    old_image: Image | None  # before the window
    new_image: Image | None  # at the end of the window


def changes_between(table: Any, from_micros: int, to_micros: int) -> list[WindowChange]:
    """Net change per item written in [from, to); created-then-deleted items drop out."""
    with LOCK:
        entries = [
            e for e in history_of(table).entries if from_micros <= e.timestamp_micros < to_micros
        ]
    first: dict[str, ChangeEntry] = {}
    last: dict[str, ChangeEntry] = {}
    for entry in entries:
        first.setdefault(entry.key_id, entry)
        last[entry.key_id] = entry
    changes = []
    for key_id, last_entry in last.items():
        old = first[key_id].old_image
        new = last_entry.new_image
        if old is None and new is None:
            continue
        changes.append(WindowChange(last_entry.timestamp_micros, last_entry.keys, old, new))
    changes.sort(key=lambda change: change.timestamp_micros)
    return changes


# --------------------------------------------------------------------------- time control


def shift_history(table: Any, seconds: float) -> dict[str, Any]:
    """Move every recorded instant of `table` `seconds` into the past (tests and demos only).

    Shifts the change log, the PITR enable time and the table's creation time
    together, so the table looks as if its whole life had happened earlier.
    """
    if seconds < 0:
        raise ValueError(
            f"seconds must be >= 0 (history can only move into the past), got {seconds}"
        )
    delta = round(seconds * 1_000_000)
    with LOCK:
        history = history_of(table)
        history.entries = [
            ChangeEntry(e.timestamp_micros - delta, e.key_id, e.keys, e.old_image, e.new_image)
            for e in history.entries
        ]
        if pitr_enabled(table) and history.pitr_enabled_micros is None:
            history.pitr_enabled_micros = now_micros()
        if history.pitr_enabled_micros is not None:
            history.pitr_enabled_micros -= delta
        # Keep new writes after the shifted ones, but let them use real time again.
        history.last_micros = history.entries[-1].timestamp_micros if history.entries else 0
        table.created_at = table.created_at - dt.timedelta(microseconds=delta)
        refresh_pitr_description(table)
        return {
            "TableName": table.name,
            "ShiftedSeconds": seconds,
            "ChangeLogEntries": len(history.entries),
            "PointInTimeRecoveryEnabledAt": (
                micros_to_datetime(history.pitr_enabled_micros).isoformat()
                if history.pitr_enabled_micros is not None
                else None
            ),
            "CreationDateTime": table.created_at.isoformat(),
        }


def change_log_json(table: Any) -> list[dict[str, Any]]:
    """The change log of `table` as JSON-ready dicts (for tests and debugging)."""
    with LOCK:
        entries = list(history_of(table).entries)
    return [
        {
            "WriteTimestampMicros": e.timestamp_micros,
            "Keys": e.keys,
            "OldImage": e.old_image,
            "NewImage": e.new_image,
        }
        for e in entries
    ]
