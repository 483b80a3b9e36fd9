"""Which source schema changes a load may publish, and what changed.

A load's columns are compared with the target table as the previous load
left it (read just before publishing): columns added, removed, and retyped
(old -> new type). The pipeline's own columns (`_exported_at`, names under
the internal prefix, those a caller names) and `<col>__raw` companions (kept
only while a column holds unrepresentable values) are not source columns and
are left out.

`TableSettings.schema_changes` decides what may pass:

- `allow`: everything (columns are added and widened, or the table replaced);
- `allow_columns`: added columns only; a removed or retyped column fails the
  load before anything is published, the previous table intact;
- `block`: any change fails the same way.

Whatever the policy, the comparison is returned so the table asset's
`schema_unchanged` check reports it. A first load (no table yet) is no change.
A change set (an incremental MERGE) cannot tell a removed column: only a
complete load (`complete=True`, a replace) reports removals.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from google.api_core.exceptions import NotFound
from google.cloud import bigquery
from google.cloud.bigquery import SchemaField

from export_pipeline.bigquery.sql import column_type
from export_pipeline.bigquery.tables import TableId
from export_pipeline.errors import PermanentError
from export_pipeline.naming import INTERNAL_PREFIX, PIPELINE_COLUMNS
from export_pipeline.table_settings import SchemaChanges

# Suffix of the companion column that keeps values a typed column cannot hold.
COMPANION_SUFFIX = "__raw"


@dataclass(frozen=True)
class Retyped:
    column: str
    old_type: str
    new_type: str

    def __str__(self) -> str:
        return f"{self.column} {self.old_type} -> {self.new_type}"


@dataclass(frozen=True)
class SchemaChange:
    """How a load's columns differ from the previous load's (the target table's)."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    retyped: tuple[Retyped, ...] = ()
    first_load: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.retyped)

    def summary(self) -> str:
        """`added a, b; removed c; retyped d INT64 -> STRING` (or `no change`)."""
        parts = []
        if self.added:
            parts.append(f"added {', '.join(self.added)}")
        if self.removed:
            parts.append(f"removed {', '.join(self.removed)}")
        if self.retyped:
            parts.append(f"retyped {', '.join(map(str, self.retyped))}")
        return "; ".join(parts) or "no change"

    def as_metadata(self) -> dict[str, object]:
        """Plain values for asset check metadata."""
        return {
            "added": list(self.added),
            "removed": list(self.removed),
            "retyped": [
                {"column": r.column, "old_type": r.old_type, "new_type": r.new_type}
                for r in self.retyped
            ],
            "first_load": self.first_load,
        }


class SchemaChangeRejected(PermanentError):
    """The table's `schema_changes` policy does not allow this load's change."""

    def __init__(self, table: str, policy: SchemaChanges, change: SchemaChange) -> None:
        self.table = table
        self.policy = policy
        self.change = change
        super().__init__(
            f"{table}: schema change not allowed by schema_changes: {policy.value} "
            f"({change.summary()}); nothing was published, the table is as the previous load "
            "left it. Set schema_changes: allow for this table, or fix the source"
        )


def _source_columns(
    fields: Sequence[SchemaField], ignored: Collection[str]
) -> dict[str, SchemaField]:
    names = {f.name.lower() for f in fields}
    skip = {n.lower() for n in ignored} | PIPELINE_COLUMNS
    out = {}
    for f in fields:
        name = f.name.lower()
        if name in skip or name.startswith(INTERNAL_PREFIX):
            continue
        if name.endswith(COMPANION_SUFFIX) and name[: -len(COMPANION_SUFFIX)] in names:
            continue
        out[name] = f
    return out


def compare(
    previous: Sequence[SchemaField],
    new: Sequence[SchemaField],
    *,
    complete: bool = True,
    ignored: Collection[str] = (),
) -> SchemaChange:
    """The change from `previous` columns to `new` ones (names compared case-insensitively)."""
    before = _source_columns(previous, ignored)
    after = _source_columns(new, ignored)
    added = tuple(after[n].name for n in after if n not in before)
    removed = tuple(before[n].name for n in before if n not in after) if complete else ()
    retyped = tuple(
        Retyped(after[n].name, column_type(before[n]), column_type(after[n]))
        for n in after
        if n in before and column_type(before[n]) != column_type(after[n])
    )
    return SchemaChange(added, removed, retyped)


def enforce(table: str, policy: SchemaChanges, change: SchemaChange) -> None:
    """Raise `SchemaChangeRejected` when `policy` does not allow `change`."""
    if policy is SchemaChanges.ALLOW or not change.changed:
        return
    if policy is SchemaChanges.ALLOW_COLUMNS and not (change.removed or change.retyped):
        return
    raise SchemaChangeRejected(table, policy, change)


@dataclass(frozen=True)
class SchemaPolicy:
    """A table's policy, and the columns of its own a source adds (not compared)."""

    mode: SchemaChanges = SchemaChanges.ALLOW
    ignored: frozenset[str] = field(default_factory=frozenset)

    def check(
        self,
        client: bigquery.Client,
        target: TableId,
        fields: Sequence[SchemaField],
        *,
        complete: bool,
    ) -> SchemaChange:
        """Compare `fields` with the target as it is; raise if the policy forbids the change."""
        try:
            previous = list(client.get_table(target.reference).schema)
        except NotFound:
            return SchemaChange(first_load=True)
        change = compare(previous, fields, complete=complete, ignored=self.ignored)
        enforce(str(target), self.mode, change)
        return change
