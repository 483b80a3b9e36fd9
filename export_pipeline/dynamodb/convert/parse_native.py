"""Raw columns of a batch of export lines from the native parser (`_items.c`), when built.

The fastest path for both formats. Full-export batches: native parser, then
Arrow's JSON reader (`parse_arrow`), then line by line (`read`),
each taking over when the one before declines a batch; incremental-export
batches: native parser, then line by line. All paths produce the same raw
columns {(attribute, tag): array}; the tests run every conversion test
through each of them.

The parser writes Arrow-layout buffers (validity bitmap, int32 offsets, data)
that are wrapped here without copying. Nested values it cannot put in their
JSON form with certainty (numbers that need Python's exact rules, maps with
duplicated keys) come back as positions in the batch and are converted by the
per-line code.
"""

from __future__ import annotations

import os

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from export_pipeline.dynamodb.convert import values as cv

# EXPORT_PIPELINE_NATIVE_PARSER=0 turns the parser off in this process and the
# worker processes it starts (to compare, or to rule it out when in doubt).
DISABLED = os.environ.get("EXPORT_PIPELINE_NATIVE_PARSER", "1").strip() == "0"
try:
    from export_pipeline.dynamodb.convert import _items
except ImportError:  # built without a C compiler: the slower paths do the work
    _items = None
if DISABLED:
    _items = None

AVAILABLE = _items is not None
_STRING, _BINARY = pa.string(), pa.binary()
_TYPES = {
    "S": _STRING,
    "N": _STRING,
    "B": _BINARY,
    "M": _STRING,
    "L": _STRING,
    "SS": pa.list_(_STRING),
    "NS": pa.list_(_STRING),
    "BS": pa.list_(_BINARY),
}


def parser_name(incremental: bool) -> str:
    """Which parser reads export lines in this installation, for logs and the CLI."""
    if AVAILABLE:
        return "the native parser (C extension)"
    fallback = "orjson, line by line" if incremental else "Arrow's JSON reader"
    if DISABLED:
        return f"{fallback}: the native parser is off (EXPORT_PIPELINE_NATIVE_PARSER=0)"
    return f"{fallback}: the C extension _items is not built (slower; see docs/performance.md)"


def raw_columns(blob: bytes, rows: int) -> dict[tuple[str, str], pa.Array] | None:
    """Raw columns for the `rows` full-export lines in `blob`, or None (another path decides)."""
    if _items is None:
        return None
    parsed = _items.parse(blob, rows)
    return None if parsed is None else _arrays(parsed, blob, rows)


def change_columns(
    blob: bytes, rows: int, key_attributes: tuple[str, ...]
) -> tuple[dict[tuple[str, str], pa.Array], pa.Array, pa.Array] | None:
    """Incremental-export change lines: (raw columns of each row's image, deleted, stamps).

    A row's image is its NewImage (with Keys added where NewImage lacks a key
    attribute), or its Keys for a delete; `deleted` is true for a delete, and
    `stamps` holds Metadata.WriteTimestampMicros as text. None: another path decides.
    """
    if _items is None:
        return None
    parsed = _items.parse(blob, rows, tuple(key_attributes))
    if parsed is None:
        return None
    columns, deleted_bits, stamp_offsets, stamp_texts = parsed
    images = _arrays(columns, blob, rows)
    if images is None:
        return None
    deleted = pa.Array.from_buffers(pa.bool_(), rows, [None, pa.py_buffer(deleted_bits)])
    stamps = pa.Array.from_buffers(
        _STRING, rows, [None, pa.py_buffer(stamp_offsets), pa.py_buffer(stamp_texts)]
    )
    return images, deleted, stamps


def _arrays(parsed: list[tuple], blob: bytes, rows: int) -> dict[tuple[str, str], pa.Array] | None:
    """The parser's buffers as Arrow arrays (wrapped, not copied); None if a fixup fails."""
    out: dict[tuple[str, str], pa.Array] = {}
    for column in parsed:
        attribute, tag, nulls, valid, offsets, data, bits, value_offsets, elements, fixups = column
        validity = None if valid is None else pa.py_buffer(valid)
        if tag in ("BOOL", "NULL"):
            values = pa.py_buffer(bits) if bits is not None else _all_true(rows)
            array = pa.Array.from_buffers(pa.bool_(), rows, [validity, values], nulls)
        elif value_offsets is not None:  # SS, NS, BS
            element_type = _TYPES[tag].value_type
            elements_array = pa.Array.from_buffers(
                element_type, elements, [None, pa.py_buffer(value_offsets), pa.py_buffer(data)]
            )
            array = pa.Array.from_buffers(
                _TYPES[tag],
                rows,
                [validity, pa.py_buffer(offsets)],
                nulls,
                children=[elements_array],
            )
        else:
            array = pa.Array.from_buffers(
                _TYPES[tag], rows, [validity, pa.py_buffer(offsets), pa.py_buffer(data)], nulls
            )
            if fixups:
                try:
                    array = _with_fixups(array, tag, blob, fixups)
                except (cv.ValueError_, ValueError, TypeError):
                    return None  # the per-line path reports it with its line number
        out[(attribute, tag)] = array
    return out


def _all_true(rows: int) -> pa.Buffer:
    return pa.py_buffer(b"\xff" * ((rows + 7) // 8))


def _with_fixups(array: pa.Array, tag: str, blob: bytes, fixups: list) -> pa.Array:
    """M / L values the parser left to Python, converted by the per-line code."""
    view = memoryview(blob)
    texts = [cv.nested_json(tag, orjson.loads(view[start:end])) for _row, start, end in fixups]
    mask = np.zeros(len(array), dtype=bool)
    mask[[row for row, _start, _end in fixups]] = True
    return pc.replace_with_mask(array, cv.bool_array(mask), cv.string_array(texts))
