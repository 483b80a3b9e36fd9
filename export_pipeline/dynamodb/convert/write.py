"""Pass 2: decide the final column types, then cast each intermediate batch to Parquet.

The final type of an attribute comes from every batch's statistics
(`model.RawColumn`): one DynamoDB type -> its column type (numbers:
the widest kind seen), several types -> JSON. Casting is columnar except for
the JSON fallback of mixed-type attributes, which is rare by nature.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq

from export_pipeline import column_hashing as ch
from export_pipeline.dynamodb import types as t
from export_pipeline.dynamodb.convert import values as cv
from export_pipeline.dynamodb.convert.model import DELETED_TAG, TIMESTAMP_TAG, BatchInfo

_TAG_TYPES = {
    "S": t.ColumnType(t.STRING),
    "BOOL": t.ColumnType(t.BOOL),
    "B": t.ColumnType(t.BYTES),
    "NULL": t.ColumnType(t.NULL),
    "SS": t.ColumnType(t.STRING, True),
    "BS": t.ColumnType(t.BYTES, True),
    "M": t.ColumnType(t.JSON),
    "L": t.ColumnType(t.JSON),
    DELETED_TAG: t.ColumnType(t.BOOL),
}


def tag_type(tag: str, number_kind: str | None) -> t.ColumnType:
    """The column type of one batch's values of DynamoDB type `tag`."""
    if tag in ("N", TIMESTAMP_TAG):
        return t.ColumnType(number_kind or t.INT64)
    if tag == "NS":
        return t.ColumnType(number_kind or t.INT64, True)
    return _TAG_TYPES[tag]


def combine(tags: dict[str, str | None]) -> t.ColumnType:
    """Final type of an attribute from {tag: widest number kind} over all batches."""
    real = {tag: kind for tag, kind in tags.items() if tag != "NULL"}
    if not real:
        return t.ColumnType(t.NULL)
    if len(real) > 1:
        return t.ColumnType(t.JSON)
    ((tag, kind),) = real.items()
    return tag_type(tag, kind)


def arrow_type(column_type: t.ColumnType) -> pa.DataType:
    scalar = {
        t.STRING: pa.string(),
        t.JSON: pa.string(),
        t.NULL: pa.string(),
        t.INT64: pa.int64(),
        t.NUMERIC: pa.decimal128(t.NUMERIC_PRECISION, t.NUMERIC_SCALE),
        t.BOOL: pa.bool_(),
        t.BYTES: pa.binary(),
    }[column_type.kind]
    return pa.list_(scalar) if column_type.repeated else scalar


@dataclass(frozen=True)
class PlannedColumn:
    """A final column: BigQuery name, source attribute (or pseudo tag), final type."""

    name: str
    attribute: str | None
    pseudo_tag: str | None  # DELETED_TAG / TIMESTAMP_TAG for converter columns
    column_type: t.ColumnType
    hashed: bool = False  # STRING of the HMAC of each value's text (`column_hashing`)


def write_batches(
    batches: list[BatchInfo],
    plan: list[PlannedColumn],
    out_path: Path,
    hash_key: ch.HashKey | None = None,
) -> int:
    """Cast intermediate batches to the final schema; write them as one Parquet file.

    One row group per batch, so memory stays bounded by one batch. Hashed
    columns are hashed here with `hash_key`, so their values are never written.
    """
    schema = pa.schema([pa.field(p.name, arrow_type(p.column_type)) for p in plan])
    rows = 0
    # No dictionary pages: most DynamoDB columns are high-cardinality, and
    # dictionary encoding doubled the write time in measurements.
    with pq.ParquetWriter(
        out_path, schema, compression="zstd", use_dictionary=False, write_statistics=False
    ) as writer:
        for batch in batches:
            table = _final_table(batch, plan, schema, hash_key)
            writer.write_table(table, row_group_size=batch.rows)
            rows += batch.rows
            Path(batch.ipc_path).unlink()
    return rows


def _final_table(
    batch: BatchInfo, plan: list[PlannedColumn], schema: pa.Schema, hash_key: ch.HashKey | None
) -> pa.Table:
    with pa.memory_map(batch.ipc_path, "r") as source:
        table = pa.ipc.open_file(source).read_all()
    # Keyed by (attribute, None) or (None, pseudo tag): an attribute may be named "_deleted".
    by_attribute: dict[tuple[str | None, str | None], list] = {}
    for raw in batch.columns:
        key = (raw.attribute, None) if raw.attribute is not None else (None, raw.tag)
        column = None if raw.field_index is None else table.column(raw.field_index).combine_chunks()
        by_attribute.setdefault(key, []).append((raw.tag, column))
    arrays = []
    for planned in plan:
        parts = by_attribute.get((planned.attribute, planned.pseudo_tag), [])
        if planned.hashed:
            if hash_key is None:
                raise ValueError(f"column {planned.name} is hashed but no hash key was given")
            texts = _value_texts(parts, batch.rows)
            arrays.append(pa.array(ch.hmac_hex(hash_key, texts), pa.string()))
        else:
            arrays.append(_final_array(parts, planned.column_type, batch.rows))
    return pa.Table.from_arrays(arrays, schema=schema)


def _final_array(parts: list, column_type: t.ColumnType, rows: int) -> pa.Array:
    target = arrow_type(column_type)
    stored = [(tag, array) for tag, array in parts if array is not None]
    if not stored:
        return pa.nulls(rows, target)
    if column_type.kind == t.JSON and not (len(stored) == 1 and stored[0][0] in ("M", "L")):
        return _json_array(stored, rows)
    ((tag, array),) = stored
    if tag in ("N", TIMESTAMP_TAG):
        return cv.cast_numbers(array, column_type.kind)
    if tag == "NS":
        values = cv.cast_numbers(array.values, column_type.kind)
        return pa.ListArray.from_arrays(array.offsets, values, mask=array.is_null())
    return array


def _json_array(stored: list, rows: int) -> pa.Array:
    """Mixed-type attribute: every value as JSON text, converted as if nested."""
    out: list[str | None] = [None] * rows
    dumps = cv.dumps_plain
    for tag, array in stored:
        for row, value in enumerate(array.to_pylist()):
            if value is None:
                continue
            if tag in ("M", "L"):
                out[row] = value  # already JSON text
            elif tag == "N":
                out[row] = dumps(cv.json_number(value))
            elif tag == "NS":
                out[row] = dumps([cv.json_number(v) for v in value])
            elif tag == "B":
                out[row] = dumps(cv.encode_base64(value))
            elif tag == "BS":
                out[row] = dumps([cv.encode_base64(v) for v in value])
            else:  # S, BOOL, SS
                out[row] = dumps(value)
    return pa.array(out, pa.string())


def value_text(tag: str, value: object) -> str:
    """The text a hashed attribute's value is hashed as (`column_hashing`'s table).

    S: itself; N: its canonical decimal text; B: base64; BOOL: true/false;
    sets, lists and maps: the converter's JSON text of them (as in a JSON column).
    """
    if tag == "S":
        return value  # type: ignore[return-value]
    if tag == "N":
        return ch.canonical_number(value)  # type: ignore[arg-type]
    if tag == "B":
        return ch.base64_text(value)  # type: ignore[arg-type]
    if tag == "BOOL":
        return "true" if value else "false"
    if tag in ("M", "L"):
        return value  # type: ignore[return-value]  # already JSON text
    if tag == "NS":
        return cv.dumps_plain([cv.json_number(v) for v in value])  # type: ignore[union-attr]
    if tag == "BS":
        return cv.dumps_plain([cv.encode_base64(v) for v in value])  # type: ignore[union-attr]
    return cv.dumps_plain(value)  # SS


def _value_texts(parts: list, rows: int) -> list[str | None]:
    """Per row, the text of the attribute's value (None where the item has none or NULL)."""
    out: list[str | None] = [None] * rows
    for tag, array in parts:
        if array is None:
            continue
        for row, value in enumerate(array.to_pylist()):
            if value is not None:
                out[row] = value_text(tag, value)
    return out
