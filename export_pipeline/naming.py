"""BigQuery names for AWS things: tables and columns, deterministic and valid.

BigQuery column names are case-insensitive, at most 300 characters, of
letters, digits and underscores, not starting with a digit, and may not use
the reserved prefixes `_TABLE_`, `_FILE_`, `_PARTITION`, `_ROW_TIMESTAMP`,
`__ROOT__`, `_COLON_`. Source names (DynamoDB attributes, MySQL columns) may
hold anything, so each is mapped deterministically, and collisions
(`Name` and `name`, `a-b` and `a_b`) get a stable suffix derived from the
original name, so the mapping does not depend on the order names were seen.

Two callers, two lifetimes:

- DynamoDB tables use `assign_columns`: readable names (`order-date` ->
  `order_date`), a suffix only on a collision, and every column once decided
  kept for the life of the table (the loader records the mapping with the
  table, `export_pipeline.dynamodb.column_names`), because an item's
  attributes arrive a window at a time.
- RDS snapshot exports carry the whole schema every time, so `column_names`
  maps it afresh per load (a name that had to change gets a hash suffix, the
  rule RDS tables were created with).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Mapping

MAX_COLUMN_NAME = 300
MAX_TABLE_NAME = 1024
_INVALID = re.compile(r"[^A-Za-z0-9_]+")
_RESERVED_PREFIXES = ("_table_", "_file_", "_partition", "_row_timestamp", "__root__", "_colon_")
# Columns the pipeline adds itself; a source column of the same name is renamed.
PIPELINE_COLUMNS = frozenset({"_exported_at", "_deleted_at"})
# Names the pipeline uses for its own columns and aliases start with this; no
# source column is ever given such a name (`readable_column_name`).
INTERNAL_PREFIX = "_export_pipeline"


def _ascii_fold(name: str) -> str:
    return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")


def _short_hash(name: str) -> str:
    return hashlib.sha1(name.encode("utf-8")).hexdigest()[:6]


def _base_name(name: str) -> str:
    """A valid column name close to `name`, before collision handling."""
    candidate = _INVALID.sub("_", _ascii_fold(name)) or "col"
    if candidate[0].isdigit():
        candidate = "_" + candidate
    if candidate.lower().startswith(_RESERVED_PREFIXES) or candidate.lower() in PIPELINE_COLUMNS:
        candidate = "src" + candidate if candidate.startswith("_") else "src_" + candidate
    changed = candidate != name
    if changed:
        # Anything that had to change gets a hash of the original, so two
        # different originals never map onto one cleaned-up name.
        candidate = f"{candidate[: MAX_COLUMN_NAME - 7]}_{_short_hash(name)}"
    return candidate[:MAX_COLUMN_NAME]


def column_names(names: Iterable[str]) -> dict[str, str]:
    """Map source names to unique, valid BigQuery column names (RDS: per snapshot).

    The result is independent of input order: a name that is already valid
    keeps its spelling unless it collides case-insensitively with another,
    in which case every member of the colliding group except the one that
    sorts first (by code point) gets a hash suffix. The mapping is
    injective case-insensitively: a suffixed name that still meets another
    (`Ab`, `ab`, `ab_<hash of ab>`) gets a longer hash, deterministically.
    """
    unique = sorted(set(names))
    mapped = {name: _base_name(name) for name in unique}
    by_folded: dict[str, list[str]] = {}
    for name in unique:
        by_folded.setdefault(mapped[name].lower(), []).append(name)
    firsts = {members[0] for members in by_folded.values()}
    used = {mapped[name].lower() for name in firsts}
    for name in unique:
        if name in firsts:
            continue
        mapped[name] = _free_name(_base_with_room(mapped[name]), name, used)
        used.add(mapped[name].lower())
    return mapped


def _base_with_room(candidate: str) -> str:
    return candidate[: MAX_COLUMN_NAME - 7]


def _free_name(base: str, original: str, used: set[str]) -> str:
    """`base_<hash of original>`, with a longer hash while that is taken (deterministic)."""
    digest = hashlib.sha1(original.encode("utf-8", "surrogatepass")).hexdigest()
    for length in range(6, len(digest) + 1, 2):
        candidate = f"{base[: MAX_COLUMN_NAME - length - 1]}_{digest[:length]}"
        if candidate.lower() not in used:
            return candidate
    counter = 1
    while True:  # 40 hex digits all taken: only a hostile schema gets here
        candidate = f"{base[: MAX_COLUMN_NAME - 48]}_{digest}_{counter}"
        if candidate.lower() not in used:
            return candidate
        counter += 1


def readable_column_name(name: str, reserved: Iterable[str] = ()) -> str:
    """A valid column name close to `name`, without any hash (`order-date` -> `order_date`).

    Runs of characters BigQuery does not allow become `_`, a leading digit
    gets a `_` before it, and a name BigQuery reserves (`_TABLE_…`, …), a
    pipeline column (`reserved`, case-insensitively) or one starting with
    the pipeline's internal prefix (`_export_pipeline…`) gets `src` before it.
    """
    candidate = _INVALID.sub("_", _ascii_fold(name)) or "col"
    if candidate[0].isdigit():
        candidate = "_" + candidate
    folded = candidate.lower()
    if (
        folded.startswith(_RESERVED_PREFIXES)
        or folded in {r.lower() for r in reserved}
        or folded.lstrip("_").startswith(INTERNAL_PREFIX.lstrip("_"))
    ):
        candidate = "src" + candidate if candidate.startswith("_") else "src_" + candidate
    return candidate[:MAX_COLUMN_NAME]


def assign_columns(
    names: Iterable[str],
    recorded: Mapping[str, str],
    taken: Iterable[str] = (),
    reserved: Iterable[str] = (),
) -> dict[str, str]:
    """Columns for source names, keeping every column already decided.

    - A name in `recorded` keeps its column (decided once, for the life of
      the table).
    - A new name gets `readable_column_name(name)` if no column of the table
      (`taken`, `recorded`'s columns, `reserved`) nor an earlier new name has
      it, case-insensitively; otherwise that name plus `_` and a hash of the
      original (longer while still taken).
    - New names are decided in a fixed order, so the result does not depend
      on the order they were seen: names that need no change first, then the
      rest, each group by code point. So of `Name` and `name` seen together
      `Name` keeps its spelling, and of `a_b` and `a-b`, `a_b` does.
    The result is injective case-insensitively over everything taken.
    """
    unique = set(names)
    out = {name: recorded[name] for name in unique if name in recorded}
    reserved = tuple(reserved)
    used = {c.lower() for c in taken} | {c.lower() for c in out.values()}
    used |= {r.lower() for r in reserved}
    new = [name for name in unique if name not in out]
    readable = {name: readable_column_name(name, reserved) for name in new}
    order = sorted(new, key=lambda name: (readable[name] != name, name))
    for name in order:
        column = readable[name]
        if column.lower() in used:
            column = _free_name(_base_with_room(column), name, used)
        used.add(column.lower())
        out[name] = column
    return out


def table_part(name: str) -> str:
    """Lower-cased, valid piece of a BigQuery table name (no hash: table names are config)."""
    part = _INVALID.sub("_", _ascii_fold(name)).strip("_").lower()
    return part or "unnamed"


def dynamodb_table_name(table: str) -> str:
    """BigQuery table for DynamoDB table `table`: `dynamodb_<table>`."""
    return f"dynamodb_{table_part(table)}"[:MAX_TABLE_NAME]


def rds_table_name(*parts: str) -> str:
    """BigQuery table for an RDS table named by its parts.

    MySQL `database`.`table` → `rds_<database>_<table>`; PostgreSQL
    `database`.`schema`.`table` → `rds_<database>_<schema>_<table>` (the
    schema always included, `public` too).
    """
    return ("rds_" + "_".join(table_part(p) for p in parts))[:MAX_TABLE_NAME]


def quote_identifier(name: str) -> str:
    """Back-quote a BigQuery identifier that has already been validated.

    Only names made by this module or validated by the configuration reach
    SQL; this refuses anything else rather than escaping it.
    """
    if not re.fullmatch(r"[A-Za-z0-9_\-.]+", name):
        raise ValueError(f"refusing to quote unexpected identifier {name!r}")
    return f"`{name}`"
