"""The converter's data model: what a conversion returns and the intermediate batches.

Imports nothing of the converter, so every converter module (the three
parsers, both passes, the public API) can depend on it without a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from export_pipeline.column_hashing import HashKey
from export_pipeline.dynamodb.types import ColumnType

# Items per batch at most (full-export batches also end after about 4 MB of JSON,
# `read.MAX_BATCH_BYTES`). A worker holds about one batch.
DEFAULT_BATCH_SIZE = 20_000
# The longest line a data file may hold (bytes, line end excluded); a longer
# line fails at once, naming file and line. DynamoDB items are at most 400 KB
# (attribute names and values, UTF-8). Their DynamoDB JSON is longer: at most
# 14 bytes per byte of item (a list of NULLs, `{"NULL":true},` per one-byte
# element; strings of control characters take 6, base64 binary 4/3), rounded
# up to 16. An incremental line holds two images at most (NewImage, OldImage),
# plus Keys and Metadata (64 KiB covers both: a key is at most 2 KB + 1 KB).
MAX_ITEM_BYTES = 400 * 1024
JSON_EXPANSION = 16
MAX_LINE_BYTES = 2 * JSON_EXPANSION * MAX_ITEM_BYTES + (64 << 10)
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
class PersonalData:
    """Attributes that never reach the Parquet files as they are (`TableSettings.columns`).

    `excluded` attributes are left out of every row (images and keys alike);
    `hashed` ones become STRING columns of `column_hashing`'s HMAC, keyed by `key`.
    """

    excluded: frozenset[str] = frozenset()
    hashed: frozenset[str] = frozenset()
    key: HashKey | None = None

    def __post_init__(self) -> None:
        if self.hashed and self.key is None:
            raise ValueError("hashed attributes need the hash key")


@dataclass(frozen=True)
class ConversionResult:
    """What a conversion wrote."""

    parquet_files: list[Path]  # all share ONE schema matching `columns` exactly
    columns: list[ColumnSpec]
    item_count: int  # lines read (items, or change records)
    items_per_file: dict[str, int] = field(default_factory=dict)  # input path -> items
    bytes_read: int = 0  # compressed bytes


# Pseudo-attributes of an incremental change line (never DynamoDB type tags).
DELETED_TAG = "_deleted"
TIMESTAMP_TAG = "_write_timestamp_micros"
KNOWN_TAGS = frozenset({"S", "N", "B", "BOOL", "NULL", "SS", "NS", "BS", "M", "L"})


@dataclass
class RawColumn:
    """One raw column of an intermediate batch: attribute, DynamoDB tag, where stored."""

    attribute: str | None  # None for the converter's own columns
    tag: str
    field_index: int | None  # column index in the IPC file (None: NULL, nothing stored)
    number_kind: str | None = None  # for N / NS: narrowest kind of this batch


@dataclass
class BatchInfo:
    ipc_path: str
    rows: int
    first_line: int
    columns: list[RawColumn] = field(default_factory=list)


@dataclass
class Blob:
    """A batch of whole lines of a full-export file, as one bytes object."""

    data: bytes
    first_line: int  # 1-based line number of its first line
    rows: int


@dataclass
class ShareResult:
    file_index: int
    share: int
    lines: int = 0
    batches: list[BatchInfo] = field(default_factory=list)
