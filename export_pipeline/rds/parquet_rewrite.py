"""Rewriting an export's Parquet file in bounded memory: names, and personal data.

Parquet loads match columns by name, so a table whose MySQL column names
BigQuery cannot take is loaded from copies of its files with the BigQuery
names. A table with personal-data columns (`TableSettings.columns`) is loaded
from copies too: an excluded column is left out of the copy, a hashed one
holds `column_hashing`'s HMAC text instead of its values, so neither reaches
BigQuery (staging included). The copy is streamed: batches of at most `BATCH_ROWS` rows, one at a
time, text and binary columns kept dictionary-encoded as they are read, so
memory is bounded by a batch, not by the file. That matters for a hostile
file: Parquet's dictionary and run-length encodings let a few kilobytes stand
for gigabytes of values (1,024 copies of one 1 MB string are one 1 MB
dictionary entry and 1,024 small indices); decoded whole, such a file takes
the gigabytes, kept dictionary-encoded it takes the megabyte.

Types, values and nulls of the other columns are copied exactly. The copy
carries no Arrow schema (like AWS's own files), so readers see its Parquet
types, the same as the original's.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from export_pipeline.column_hashing import HashKey, hash_array

# Rows per batch read and written (memory per batch: these rows of the
# fixed-width columns, plus the indices and dictionaries of the others).
BATCH_ROWS = 64 * 1024


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    """Top-level text and binary columns: read dictionary-encoded (never expanded)."""
    return [
        field.name
        for field in schema
        if pa.types.is_string(field.type)
        or pa.types.is_binary(field.type)
        or pa.types.is_large_string(field.type)
        or pa.types.is_large_binary(field.type)
    ]


@dataclass(frozen=True)
class Rewrite:
    """What a copy changes, by source column name.

    `renames`: new names; `dropped`: columns left out; `hashed`: columns whose
    values become their HMAC text (STRING), keyed by `hash_key`;
    `bytes_are_text`: hashed binary columns whose bytes are text (MySQL CHAR).
    """

    renames: Mapping[str, str] = field(default_factory=dict)
    dropped: Collection[str] = frozenset()
    hashed: Collection[str] = frozenset()
    bytes_are_text: Collection[str] = frozenset()
    hash_key: HashKey | None = None

    def __post_init__(self) -> None:
        if self.hashed and self.hash_key is None:
            raise ValueError("hashed columns need the hash key")

    @property
    def needed(self) -> bool:
        """Whether the files must be copied at all (else they go to BigQuery as they are)."""
        return bool(self.renames or self.dropped or self.hashed)


def rewrite_renamed(source: BinaryIO, target: BinaryIO, renames: Mapping[str, str]) -> int:
    """Copy the Parquet file `source` to `target`, column `a` named `renames.get(a, a)`.

    Returns the rows copied.
    """
    return rewrite(source, target, Rewrite(renames=renames))


def rewrite(source: BinaryIO, target: BinaryIO, change: Rewrite) -> int:
    """Copy the Parquet file `source` to `target` as `change` says; returns the rows copied."""
    schema = pq.read_schema(source)
    source.seek(0)
    reader = pq.ParquetFile(
        source,
        read_dictionary=_dictionary_columns(schema),
        pre_buffer=False,  # read column chunks as they are decoded, not a whole row group ahead
    )
    kept = [f for f in reader.schema_arrow if f.name not in change.dropped]
    out_schema = pa.schema(
        [
            pa.field(change.renames.get(f.name, f.name), pa.string())
            if f.name in change.hashed
            else f.with_name(change.renames.get(f.name, f.name))
            for f in kept
        ]
    )
    rows = 0
    with pq.ParquetWriter(target, out_schema, compression="zstd", store_schema=False) as writer:
        for batch in reader.iter_batches(
            batch_size=BATCH_ROWS, columns=[f.name for f in kept], use_threads=False
        ):
            columns = [
                _hashed(batch.column(f.name), f.name, change)
                if f.name in change.hashed
                else batch.column(f.name)
                for f in kept
            ]
            writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=out_schema))
            rows += batch.num_rows
    return rows


def _hashed(column: pa.Array, name: str, change: Rewrite) -> pa.Array:
    assert change.hash_key is not None
    return hash_array(change.hash_key, column, bytes_are_text=name in change.bytes_are_text)
