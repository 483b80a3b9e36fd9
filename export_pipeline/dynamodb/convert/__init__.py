"""Convert DynamoDB export data files (gzip DynamoDB JSON) into Parquet for BigQuery.

The converter's public API (the rest of the subpackage is private to it):

- `convert_full_export(files, out_dir)` — full-export data files (`{"Item": {...}}`
  per line) -> Parquet files sharing one schema, one row per item.
- `convert_incremental_export(files, out_dir, key_attributes=[...])` — incremental
  data files (`{"Metadata":..,"Keys":..,"NewImage":..,"OldImage":..}` per line) ->
  one row per change: the key attributes, the NewImage attributes (for a delete,
  the Keys), plus `_export_pipeline_deleted` BOOL and `_write_timestamp_micros` INT64.
- `ConversionResult`, `ColumnSpec`, `ConversionError`, and `widen`/`ColumnType`
  (re-exported from `export_pipeline.dynamodb.types`) for schema reconciliation.

Lossless: every value lands in a column type that holds it exactly (see
`export_pipeline.dynamodb.types` for the rules). Streaming: memory is bounded by
the batch (at most `batch_size` items and about 4 MB of JSON), not by file size.

Design (why two passes): a column's type depends on every value of its
attribute, so pass 1 (`read`) converts each batch of lines to *raw*
typed Arrow columns (one per attribute and DynamoDB type; numbers kept as
exact text) written to temporary Arrow IPC files (LZ4), and returns per-batch type
statistics. Pass 2 (`write`) fixes the final schema and casts every
batch to it, column-wise, writing Parquet (zstd, one row group per batch, up
to `ROWS_PER_FILE` rows per file, at least one file per worker).

Full exports run in threads of the calling process: one thread decompresses
and cuts the stream into batches of whole lines (never split into lines),
`max_workers` threads parse each batch column-wise with Arrow's JSON reader
(`parse_arrow`) — all of it releases the GIL — and anything unusual
falls back to orjson line by line, which also names the file and line of bad
input. Incremental exports are parsed line by line, which holds the GIL, so
they run in `forkserver` worker processes instead.

Modules: `model` (what a conversion returns, the intermediate batches; imports
nothing of the converter), `values` (per-value rules shared by all parsers),
the three parsers side by side (`parse_native` over the C extension `_items`,
`parse_arrow`, `parse_lines`; the rules they agree on are written in
docs/dynamodb-parsers.md and each is checked by a property test), `read`
(pass 1), `write` (pass 2) and `run` (workers, planning the final columns).

Output files are named `dynamodb-part-NNNNN.parquet`; earlier files of that
name in `out_dir` are removed first, so re-running into the same folder is safe.
An input without any item yields no Parquet file (and, for a full export, no
columns).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from export_pipeline.dynamodb.column_names import RecordedColumns
from export_pipeline.dynamodb.convert.model import (
    DEFAULT_BATCH_SIZE,
    DELETED_COLUMN,
    MAX_ITEM_BYTES,
    MAX_LINE_BYTES,
    WRITE_TIMESTAMP_COLUMN,
    ColumnSpec,
    ConversionError,
    ConversionResult,
    PersonalData,
)
from export_pipeline.dynamodb.convert.parse_native import parser_name as _native_parser_name
from export_pipeline.dynamodb.convert.run import run_conversion
from export_pipeline.dynamodb.types import ColumnType, widen

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DELETED_COLUMN",
    "MAX_ITEM_BYTES",
    "MAX_LINE_BYTES",
    "WRITE_TIMESTAMP_COLUMN",
    "ColumnSpec",
    "ColumnType",
    "ConversionError",
    "ConversionResult",
    "PersonalData",
    "convert_full_export",
    "convert_incremental_export",
    "parser_name",
    "widen",
]


def convert_full_export(
    files: Sequence[Path],
    out_dir: Path,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_workers: int = 2,
    max_line_bytes: int = MAX_LINE_BYTES,
    declared_items: Mapping[Path | str, int] | None = None,
    recorded: RecordedColumns | None = None,
    personal_data: PersonalData | None = None,
) -> ConversionResult:
    """Convert full-export data files to Parquet files in `out_dir` (one schema).

    `recorded`: the target table's columns (`column_names.recorded_columns`);
    attributes it holds keep their columns and at least their types.
    `personal_data`: attributes left out of the files or hashed in them.

    Zero-byte files (AWS writes them for empty partitions) hold 0 items.
    Raises ConversionError naming the file (and line) on corrupt input, at
    once for a line longer than `max_line_bytes` or, where `declared_items`
    gives a file's manifest itemCount, for a line beyond it: both are checked
    on the decompressed stream, so neither memory nor disk grows with a
    hostile file before it fails.
    """
    return run_conversion(
        files,
        out_dir,
        incremental=False,
        key_attributes=(),
        batch_size=batch_size,
        max_workers=max_workers,
        max_line_bytes=max_line_bytes,
        declared_items=declared_items,
        recorded=recorded,
        personal_data=personal_data,
    )


def parser_name(incremental: bool = False) -> str:
    """Which parser reads export lines in this installation (for logs)."""
    return _native_parser_name(incremental)


def convert_incremental_export(
    files: Sequence[Path],
    out_dir: Path,
    *,
    key_attributes: Sequence[str],
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_workers: int = 2,
    max_line_bytes: int = MAX_LINE_BYTES,
    declared_items: Mapping[Path | str, int] | None = None,
    recorded: RecordedColumns | None = None,
    personal_data: PersonalData | None = None,
) -> ConversionResult:
    """Convert incremental-export data files to Parquet, one row per change line.

    Bounds and `personal_data` as for `convert_full_export`; a key attribute
    cannot be excluded (a change without its key could not be applied).

    Columns: the key attributes first, then the NewImage attributes (a delete
    has no NewImage: its row holds the Keys), then `_export_pipeline_deleted` (BOOL, true for
    a delete) and `_write_timestamp_micros` (INT64, Metadata.WriteTimestampMicros).
    """
    if not key_attributes:
        raise ValueError("key_attributes must name the table's key attribute(s)")
    excluded_keys = sorted(set(key_attributes) & (personal_data or PersonalData()).excluded)
    if excluded_keys:
        raise ValueError(
            f"key attribute(s) {', '.join(excluded_keys)} cannot be excluded: every row needs "
            "its key (hash it instead, or remove it from columns)"
        )
    return run_conversion(
        files,
        out_dir,
        incremental=True,
        key_attributes=tuple(key_attributes),
        batch_size=batch_size,
        max_workers=max_workers,
        max_line_bytes=max_line_bytes,
        declared_items=declared_items,
        recorded=recorded,
        personal_data=personal_data,
    )
