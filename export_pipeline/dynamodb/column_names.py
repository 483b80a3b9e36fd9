"""The DynamoDB attribute each BigQuery column holds, recorded in the column's description.

A table's mapping (attribute -> column) is decided once per attribute and
kept for the life of the table: every load reads it back from the target's
column descriptions before converting, and only attributes it has not seen
get new columns (`naming.assign_columns`). The descriptions are where
analysts already read the original names, they change atomically with the
schema (a new column and its description arrive together), and tables loaded
before the mapping was recorded carry the same text, so they keep their
columns.

A description reads `DynamoDB attribute 'order-date' (DynamoDB types: N, S)`
(`key attribute` for the table's keys). The name is a Python string literal
(`repr`), so any attribute name is written and read back exactly. A name
whose literal would not fit BigQuery's 1,024-character description limit is
recorded as `DynamoDB attribute sha256:<hex of its UTF-8>`; it is matched by
that hash. The types are every DynamoDB type the column has been typed for,
so a later load widens it exactly as a full export of all those values would.
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

# BigQuery allows 1,024 characters; keep room for the types.
_MAX_LITERAL = 900
_PREFIX = re.compile(r"DynamoDB (?:key )?attribute ")
# A Python string literal as `repr` writes it: one quote kind, backslash escapes.
_LITERAL = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", re.DOTALL)
_HASHED = re.compile(r"sha256:([0-9a-f]{64})")
_TYPES = re.compile(r" \(DynamoDB types: ([A-Z, ]*)\)")


def _hashed(attribute: str) -> str:
    return "sha256:" + hashlib.sha256(attribute.encode("utf-8", "surrogatepass")).hexdigest()


def identity(attribute: str) -> str:
    """How `attribute` is written in a description: its literal, or its hash if too long."""
    literal = repr(attribute)
    return literal if len(literal) <= _MAX_LITERAL else _hashed(attribute)


def describe(attribute: str, tags: Iterable[str], key: bool = False) -> str:
    """The column description recording `attribute` and the DynamoDB types typed for."""
    role = "key attribute" if key else "attribute"
    seen = ", ".join(sorted(set(tags))) or "none"
    return f"DynamoDB {role} {identity(attribute)} (DynamoDB types: {seen})"


def _parse(description: str) -> tuple[str, int] | None:
    """(identity, end offset) of the attribute a description records, or None."""
    prefix = _PREFIX.match(description)
    if prefix is None:
        return None
    start = prefix.end()
    for pattern in (_LITERAL, _HASHED):
        found = pattern.match(description, start)
        if found:
            return found.group(0), found.end()
    return None


def attribute_of_description(description: str) -> str | None:
    """The attribute name a column description records (None: not an attribute column).

    A hashed name comes back as its `sha256:…` identity.
    """
    parsed = _parse(description)
    if parsed is None:
        return None
    text, _end = parsed
    if text.startswith("sha256:"):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    return value if isinstance(value, str) else None


def tags_of_description(description: str) -> frozenset[str]:
    """The DynamoDB types a column description lists (empty when it lists none)."""
    parsed = _parse(description)
    if parsed is None:
        return frozenset()
    found = _TYPES.match(description, parsed[1])
    if found is None:
        return frozenset()
    return frozenset(t for t in found.group(1).replace(" ", "").split(",") if t)


@dataclass(frozen=True)
class RecordedColumn:
    """A target column that holds an attribute: its name, type and the types it was typed for."""

    name: str
    bq_type: str
    mode: str
    tags: frozenset[str]


@dataclass(frozen=True)
class RecordedColumns:
    """What a target table already holds: attribute identity -> column, and every name taken."""

    by_identity: Mapping[str, RecordedColumn] = field(default_factory=dict)
    taken: frozenset[str] = frozenset()  # every column name of the table, lower-cased
    # Columns whose description records no attribute (written by hand, or
    # whose description was lost), by exact name.
    unclaimed: Mapping[str, RecordedColumn] = field(default_factory=dict)

    def get(self, attribute: str) -> RecordedColumn | None:
        return self.by_identity.get(identity(attribute))

    def resolve(
        self, attributes: Sequence[str], readable: Callable[[str], str]
    ) -> dict[str, RecordedColumn]:
        """attribute -> its column, for the attributes the table already has.

        An attribute not recorded adopts a column without a record that
        bears exactly its readable name (`readable(attribute)`), so a column
        whose description was lost is not duplicated.
        """
        out = {}
        for attribute in attributes:
            recorded = self.get(attribute)
            if recorded is not None:
                out[attribute] = recorded
        used = {c.name for c in out.values()}
        for attribute in sorted(set(attributes) - set(out)):
            adopted = self.unclaimed.get(readable(attribute))
            if adopted is not None and adopted.name not in used:
                out[attribute] = adopted
                used.add(adopted.name)
        return out


def recorded_columns(schema: Iterable, internal: Iterable[str] = ()) -> RecordedColumns:
    """Read the mapping back from a BigQuery schema (SchemaField list).

    Columns named in `internal` (the pipeline's own) never hold an attribute.
    When two columns claim one attribute (possible only in tables written
    before the mapping was recorded), the first is kept.
    """
    internal_names = {n.lower() for n in internal}
    by_identity: dict[str, RecordedColumn] = {}
    unclaimed: dict[str, RecordedColumn] = {}
    taken = set()
    for column in schema:
        taken.add(column.name.lower())
        if column.name.lower() in internal_names:
            continue
        parsed = _parse(column.description or "")
        if parsed is None:
            mode = column.mode or "NULLABLE"
            unclaimed[column.name] = RecordedColumn(
                column.name, column.field_type, mode, frozenset()
            )
            continue
        text = parsed[0]
        if text.startswith("sha256:"):
            key = text
        else:
            attribute = attribute_of_description(column.description or "")
            if attribute is None:
                continue
            key = identity(attribute)
        if key in by_identity:
            continue
        by_identity[key] = RecordedColumn(
            column.name,
            column.field_type,
            column.mode or "NULLABLE",
            tags_of_description(column.description or ""),
        )
    return RecordedColumns(by_identity, frozenset(taken), unclaimed)
