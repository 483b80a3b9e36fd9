"""Export task identifiers that AWS accepts, derived from what is exported.

StartExportTask's identifier must begin with a letter, hold only ASCII
letters, digits and hyphens, not end with a hyphen and not contain two
hyphens in a row; 60 characters is the commonly assumed limit. Snapshot names
do not follow those rules (automated ones are `rds:<instance>-<date>`), and
simply slicing them is how peers ended up with trailing hyphens and colons.

The identifier is deterministic in (instance, snapshot, export scope,
attempt): a re-run computes the same id, finds the export already running or
complete and reuses it instead of paying for a second one. A short hash of
the full, unsanitized inputs keeps distinct scopes apart even when their
readable parts sanitize or truncate to the same text.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable

MAX_EXPORT_TASK_IDENTIFIER = 60
_HASH_CHARS = 10
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9]+")
_VALID = re.compile(r"^[A-Za-z](?:[A-Za-z0-9]|-(?=[A-Za-z0-9]))*$")


def is_valid_export_task_identifier(identifier: str) -> bool:
    """True when AWS's documented rules accept `identifier`."""
    return len(identifier) <= MAX_EXPORT_TASK_IDENTIFIER and bool(_VALID.match(identifier))


def export_scope_hash(
    source_identifier: str, snapshot_identifier: str, export_only: Iterable[str], attempt: int = 1
) -> str:
    """Hex digest of the full inputs; the order of `export_only` does not matter."""
    canonical = json.dumps(
        {
            "source": source_identifier,
            "snapshot": snapshot_identifier,
            "export_only": sorted(set(export_only)),
            "attempt": attempt,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def export_task_identifier(
    source_identifier: str, snapshot_identifier: str, export_only: Iterable[str], attempt: int = 1
) -> str:
    """`<readable snapshot name>-<hash>`, valid for StartExportTask for any inputs.

    `attempt` > 1 gives a fresh identifier for a retry after a FAILED or
    CANCELED export (AWS does not let an identifier be used twice).
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    digest = export_scope_hash(source_identifier, snapshot_identifier, export_only, attempt)
    suffix = digest[:_HASH_CHARS]
    readable = _NOT_ALLOWED.sub("-", snapshot_identifier).strip("-")
    if not readable or not readable[0].isalpha():
        readable = f"snap-{readable}".strip("-")
    room = MAX_EXPORT_TASK_IDENTIFIER - len(suffix) - 1
    readable = readable[:room].rstrip("-")
    identifier = f"{readable}-{suffix}"
    assert is_valid_export_task_identifier(identifier), identifier
    return identifier
