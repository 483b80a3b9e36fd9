"""The per-line parser: orjson, one line at a time, into column lists.

The reference parser and the fallback of the other two (`parse_native`,
`parse_arrow`): it accepts every valid line and reports bad input with its
file and line number. The rules all three must agree on are written in
docs/dynamodb-parsers.md.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from export_pipeline.dynamodb.convert import values as cv
from export_pipeline.dynamodb.convert.model import (
    DELETED_TAG,
    KNOWN_TAGS,
    TIMESTAMP_TAG,
    ConversionError,
)


def describe(exc: BaseException) -> str:
    if isinstance(exc, orjson.JSONDecodeError):
        return f"invalid JSON: {exc}"
    if isinstance(exc, KeyError):
        return f"missing {exc.args[0]!r}"
    if isinstance(exc, ValueError) and "unpack" in str(exc):
        return "an attribute value must hold exactly one type descriptor"
    if isinstance(exc, AttributeError | TypeError):
        return "not DynamoDB JSON (expected objects of attribute -> {type: value})"
    return str(exc)


def _store_image(image: dict, cols: dict, row: int, size: int) -> None:
    """One item's attributes into the column lists, one list per (name, type tag)."""
    for name, typed in image.items():
        ((tag, value),) = typed.items()
        col = cols.get((name, tag))
        if col is None:
            if tag not in KNOWN_TAGS:
                raise cv.ValueError_(f"unknown DynamoDB type descriptor {tag!r}")
            col = cols[(name, tag)] = [None] * size
        if tag == "M" or tag == "L":
            value = cv.nested_json(tag, value)
        col[row] = value


def parse_items(
    path: Path, lines: list[bytes], cols: dict, row: int, size: int, line_no: int
) -> None:
    """Full export lines `{"Item": {...}}` -> column lists (the hot loop)."""
    loads = orjson.loads
    for offset, line in enumerate(lines):
        try:
            _store_image(loads(line)["Item"], cols, row, size)
        except MemoryError:
            raise  # not bad input: the conversion names the file and the limit
        except Exception as exc:
            raise ConversionError(path, describe(exc), line=line_no + offset + 1) from exc
        row += 1


def parse_changes(
    path: Path,
    lines: list[bytes],
    cols: dict,
    row: int,
    size: int,
    line_no: int,
    key_attributes: tuple[str, ...],
) -> None:
    """Incremental export lines -> column lists: the NewImage (or Keys for a delete)."""
    loads = orjson.loads
    deleted = cols.setdefault((None, DELETED_TAG), [None] * size)
    stamps = cols.setdefault((None, TIMESTAMP_TAG), [None] * size)
    for offset, line in enumerate(lines):
        try:
            record = loads(line)
            stamps[row] = record["Metadata"]["WriteTimestampMicros"]["N"]
            keys = record["Keys"]
            for key in key_attributes:
                if key not in keys:
                    raise cv.ValueError_(f"key attribute {key!r} missing from Keys")
            image = record.get("NewImage")
            deleted[row] = image is None
            if image is None:
                image = keys
            elif any(key not in image for key in key_attributes):
                image = {**keys, **image}  # the key columns always hold the key
            _store_image(image, cols, row, size)
        except MemoryError:
            raise  # not bad input: the conversion names the file and the limit
        except Exception as exc:
            raise ConversionError(path, describe(exc), line=line_no + offset + 1) from exc
        row += 1
