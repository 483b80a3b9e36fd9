"""Rewriting an export's Parquet file with new column names, in bounded memory.

Parquet loads match columns by name, so a table whose MySQL column names
BigQuery cannot take is loaded from copies of its files with the BigQuery
names. The copy is streamed: batches of at most `BATCH_ROWS` rows, one at a
time, text and binary columns kept dictionary-encoded as they are read, so
memory is bounded by a batch, not by the file. That matters for a hostile
file: Parquet's dictionary and run-length encodings let a few kilobytes stand
for gigabytes of values (1,024 copies of one 1 MB string are one 1 MB
dictionary entry and 1,024 small indices); decoded whole, such a file takes
the gigabytes, kept dictionary-encoded it takes the megabyte.

Types, values and nulls are copied exactly; only the names change. The copy
carries no Arrow schema (like AWS's own files), so readers see its Parquet
types, the same as the original's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

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


def rewrite_renamed(source: BinaryIO, target: BinaryIO, renames: Mapping[str, str]) -> int:
    """Copy the Parquet file `source` to `target`, column `a` named `renames.get(a, a)`.

    Returns the rows copied.
    """
    schema = pq.read_schema(source)
    source.seek(0)
    reader = pq.ParquetFile(
        source,
        read_dictionary=_dictionary_columns(schema),
        pre_buffer=False,  # read column chunks as they are decoded, not a whole row group ahead
    )
    names = [renames.get(name, name) for name in reader.schema_arrow.names]
    out_schema = pa.schema(
        [f.with_name(n) for f, n in zip(reader.schema_arrow, names, strict=True)]
    )
    rows = 0
    with pq.ParquetWriter(target, out_schema, compression="zstd", store_schema=False) as writer:
        for batch in reader.iter_batches(batch_size=BATCH_ROWS, use_threads=False):
            writer.write_batch(pa.RecordBatch.from_arrays(batch.columns, schema=out_schema))
            rows += batch.num_rows
    return rows
