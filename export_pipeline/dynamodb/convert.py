"""Convert DynamoDB export data files (gzip DynamoDB JSON) into Parquet for BigQuery.

Public API (stable; DDB-pipeline codes against it):

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
attribute, so pass 1 (`_convert_read`) converts each batch of lines to *raw*
typed Arrow columns (one per attribute and DynamoDB type; numbers kept as
exact text) written to temporary Arrow IPC files, and returns per-batch type
statistics. Pass 2 (`_convert_write`) fixes the final schema and casts every
batch to it, column-wise, writing Parquet (zstd, one row group per batch, up
to `ROWS_PER_FILE` rows per file, at least one file per worker).

Full exports run in threads of the calling process: one thread decompresses
and cuts the stream into batches of whole lines (never split into lines),
`max_workers` threads parse each batch column-wise with Arrow's JSON reader
(`_convert_columnar`) — all of it releases the GIL — and anything unusual
falls back to orjson line by line, which also names the file and line of bad
input. Incremental exports are parsed line by line, which holds the GIL, so
they run in `forkserver` worker processes instead.

Output files are named `dynamodb-part-NNNNN.parquet`; earlier files of that
name in `out_dir` are removed first, so re-running into the same folder is safe.
An input without any item yields no Parquet file (and, for a full export, no
columns).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from export_pipeline.dynamodb.column_names import RecordedColumns
from export_pipeline.dynamodb.types import ColumnType, widen

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DELETED_COLUMN",
    "WRITE_TIMESTAMP_COLUMN",
    "ColumnSpec",
    "ColumnType",
    "ConversionError",
    "ConversionResult",
    "convert_full_export",
    "convert_incremental_export",
    "parser_name",
    "widen",
]

# Items per batch at most (full-export batches also end after about 4 MB of JSON,
# `_convert_read.MAX_BATCH_BYTES`). A worker holds about one batch.
DEFAULT_BATCH_SIZE = 20_000
# The converter's own columns. `_write_timestamp_micros` is kept in BigQuery
# rows (tables carry it since incremental mode began); the delete flag only
# lives in staging tables, under the pipeline's internal prefix, so that an
# attribute may be called `_deleted` (Amplify/AppSync tables have one).
DELETED_COLUMN = "_export_pipeline_deleted"
WRITE_TIMESTAMP_COLUMN = "_write_timestamp_micros"


class ConversionError(Exception):
    """A data file could not be converted: corrupt gzip, invalid JSON or DynamoDB JSON.

    `path` names the file; `line` is the 1-based line number when known.
    """

    def __init__(self, path: Path | str, message: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        where = f"{self.path}, line {line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")

    def __reduce__(self):  # keep the fields across process boundaries
        return (_rebuild_error, (self.path, self.args[0], self.line))


def _rebuild_error(path: str, full_message: str, line: int | None) -> ConversionError:
    error = ConversionError.__new__(ConversionError)
    error.path, error.line = path, line
    Exception.__init__(error, full_message)
    return error


@dataclass(frozen=True)
class ColumnSpec:
    """One BigQuery column of the converted data."""

    name: str  # BigQuery column name
    source_name: str | None  # original attribute name (None for columns the converter adds)
    bq_type: str  # "STRING" | "INT64" | "NUMERIC" | "BOOL" | "BYTES" | "JSON"
    mode: str  # "NULLABLE" | "REPEATED"
    description: str

    @property
    def column_type(self) -> ColumnType:
        """This column's type as a `ColumnType` (for `widen`)."""
        return ColumnType.from_bigquery(self.bq_type, self.mode)


@dataclass(frozen=True)
class ConversionResult:
    """What a conversion wrote."""

    parquet_files: list[Path]  # all share ONE schema matching `columns` exactly
    columns: list[ColumnSpec]
    item_count: int  # lines read (items, or change records)
    items_per_file: dict[str, int] = field(default_factory=dict)  # input path -> items
    bytes_read: int = 0  # compressed bytes


def convert_full_export(
    files: Sequence[Path],
    out_dir: Path,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_workers: int = 2,
    recorded: RecordedColumns | None = None,
) -> ConversionResult:
    """Convert full-export data files to Parquet files in `out_dir` (one schema).

    `recorded`: the target table's columns (`column_names.recorded_columns`);
    attributes it holds keep their columns and at least their types.

    Zero-byte files (AWS writes them for empty partitions) hold 0 items.
    Raises ConversionError naming the file (and line) on corrupt input.
    """
    from export_pipeline.dynamodb._convert_run import run_conversion

    return run_conversion(
        files,
        out_dir,
        incremental=False,
        key_attributes=(),
        batch_size=batch_size,
        max_workers=max_workers,
        recorded=recorded,
    )


def parser_name(incremental: bool = False) -> str:
    """Which parser reads export lines in this installation (for logs)."""
    from export_pipeline.dynamodb._convert_native import parser_name as name

    return name(incremental)


def convert_incremental_export(
    files: Sequence[Path],
    out_dir: Path,
    *,
    key_attributes: Sequence[str],
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_workers: int = 2,
    recorded: RecordedColumns | None = None,
) -> ConversionResult:
    """Convert incremental-export data files to Parquet, one row per change line.

    Columns: the key attributes first, then the NewImage attributes (a delete
    has no NewImage: its row holds the Keys), then `_export_pipeline_deleted` (BOOL, true for
    a delete) and `_write_timestamp_micros` (INT64, Metadata.WriteTimestampMicros).
    """
    from export_pipeline.dynamodb._convert_run import run_conversion

    if not key_attributes:
        raise ValueError("key_attributes must name the table's key attribute(s)")
    return run_conversion(
        files,
        out_dir,
        incremental=True,
        key_attributes=tuple(key_attributes),
        batch_size=batch_size,
        max_workers=max_workers,
        recorded=recorded,
    )
