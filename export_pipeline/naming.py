"""BigQuery names for AWS things: tables and columns, deterministic and valid.

BigQuery column names are case-insensitive, at most 300 characters, of
letters, digits and underscores, not starting with a digit, and may not use
the reserved prefixes `_TABLE_`, `_FILE_`, `_PARTITION`, `_ROW_TIMESTAMP`,
`__ROOT__`, `_COLON_`. Source names (DynamoDB attributes, MySQL columns) may
hold anything, so each is mapped once, deterministically, and collisions
(`Name` and `name`, `a-b` and `a_b`) get a stable suffix derived from the
original name, so the mapping does not depend on the order names were seen.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable

MAX_COLUMN_NAME = 300
MAX_TABLE_NAME = 1024
_INVALID = re.compile(r"[^A-Za-z0-9_]+")
_RESERVED_PREFIXES = ("_table_", "_file_", "_partition", "_row_timestamp", "__root__", "_colon_")
# Columns the pipeline adds itself; a source column of the same name is renamed.
PIPELINE_COLUMNS = frozenset({"_exported_at"})


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
    """Map source names to unique, valid BigQuery column names.

    The result is independent of input order: a name that is already valid
    keeps its spelling unless it collides case-insensitively with another,
    in which case every member of the colliding group except the one that
    sorts first (by code point) gets a hash suffix.
    """
    unique = sorted(set(names))
    mapped = {name: _base_name(name) for name in unique}
    by_folded: dict[str, list[str]] = {}
    for name in unique:
        by_folded.setdefault(mapped[name].lower(), []).append(name)
    for members in by_folded.values():
        for name in members[1:]:
            mapped[name] = f"{mapped[name][: MAX_COLUMN_NAME - 7]}_{_short_hash(name)}"
    return mapped


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
