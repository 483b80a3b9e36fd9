"""The Parquet type AWS writes for each MySQL type, and the check that a file holds it.

An RDS snapshot export records each column's MySQL type in
`originalTypeMappings`, and writes the column's values with the Parquet type
of AWS's mapping table
(https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_ExportSnapshot.data-types.html).
The loader types the final column from the MySQL type and casts the staged
values to it, so a file whose column holds another type would be converted
silently: DOUBLE 1.5 in an `int` column becomes 2, DECIMAL(38,10)
1.0000000001 in a `decimal(5,2)` column loses digits. Before anything is
loaded, every column of a table's files must hold what AWS writes for its
MySQL type (as Arrow reads the Parquet footer):

| MySQL type                                         | Parquet (Arrow)                          |
|----------------------------------------------------|------------------------------------------|
| TINYINT … BIGINT (signed), INT / MEDIUMINT /       | an integer (INT32 or INT64, with or      |
| SMALLINT / TINYINT UNSIGNED, YEAR                  | without an INT(bits) annotation)         |
| BIGINT UNSIGNED                                    | DECIMAL(20,0)                            |
| DECIMAL / NUMERIC(p,s), p ≤ 38                     | DECIMAL(p,s), the same p and s           |
| DECIMAL / NUMERIC(p,s), p > 38                     | STRING (the exact text)                  |
| FLOAT, DOUBLE (REAL)                               | DOUBLE (or FLOAT)                        |
| CHAR                                               | BYTE_ARRAY (unannotated, or STRING)      |
| VARCHAR, TEXT…, ENUM, SET, JSON, DATE, TIME        | STRING                                   |
| BINARY, VARBINARY, BLOB…, BIT, spatial types       | BYTE_ARRAY (unannotated)                 |
| DATETIME, TIMESTAMP                                | TIMESTAMP (millis or micros)             |
| a type not in this table                           | anything (loaded as AWS wrote it)        |

Integers are accepted at any width because an integer of any width loads as
INT64 without change (only unsigned 64-bit is refused, by
`parquet_schema`). A column without values (Arrow's null type) holds nothing
to convert and is accepted.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from export_pipeline.rds.types import (
    _BYTES,
    _CHARS,
    _DECIMALS,
    _FLOATS,
    _INTEGERS,
    _TEXTS,
    MySQLType,
)

# The MySQL type families are `types`' (the one list of them).
_INTEGER_LIKE = _INTEGERS | {"year"}
_TEXT_LIKE = _TEXTS | {"json", "date", "time"}  # AWS writes these three as text too
DECIMAL_MAX_PRECISION = 38  # beyond it, AWS writes the decimal as text


# What AWS writes for an originalType, in words, and a test of an Arrow type for it.
ExpectedParquetType = tuple[str, Callable[[pa.DataType], bool]]


def is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def is_bytes(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t)


def _is_signed_or_small_integer(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) and not pa.types.is_uint64(t)


def aws_parquet_type(original_type: str) -> ExpectedParquetType:
    """(What AWS writes for `original_type`, in words; a test of an Arrow type for it)."""
    parsed = MySQLType.parse(original_type)
    base = parsed.base
    if base in _INTEGER_LIKE:
        if base == "bigint" and parsed.unsigned:
            return "DECIMAL(20,0)", lambda t: t == pa.decimal128(20, 0)
        return "an integer", _is_signed_or_small_integer
    if base in _DECIMALS:
        precision, scale = parsed.precision_scale()
        if precision > DECIMAL_MAX_PRECISION:
            return "STRING (decimal text)", is_text
        return (
            f"DECIMAL({precision},{scale})",
            lambda t: pa.types.is_decimal(t) and (t.precision, t.scale) == (precision, scale),
        )
    if base in _FLOATS:
        return "DOUBLE", pa.types.is_floating
    if base in _CHARS:
        return "BYTE_ARRAY", lambda t: is_bytes(t) or is_text(t)
    if base in _TEXT_LIKE:
        return "STRING", is_text
    if base in _BYTES:
        return "BYTE_ARRAY", is_bytes
    if base in ("datetime", "timestamp"):
        return "TIMESTAMP", lambda t: pa.types.is_timestamp(t) and t.unit in ("ms", "us")
    return "any type", lambda _t: True


def disagreement(
    column: str,
    original_type: str,
    arrow_type: pa.DataType,
    expected_for: Callable[[str], ExpectedParquetType],
) -> str | None:
    """Why a column declared `original_type` cannot hold `arrow_type`, or None if it can.

    `expected_for` is the engine's table of what AWS writes (MySQL's
    `aws_parquet_type` here, PostgreSQL's in `postgres.parquet_types`).
    """
    if pa.types.is_null(arrow_type):
        return None
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    expected, accepts = expected_for(original_type)
    if accepts(arrow_type):
        return None
    return (
        f"column {column!r} is declared {original_type!r} in originalTypeMappings, for which "
        f"AWS writes {expected}, but the Parquet file holds {arrow_type}"
    )


def type_disagreement(column: str, original_type: str, arrow_type: pa.DataType) -> str | None:
    """MySQL: why a column declared `original_type` cannot hold `arrow_type` (None: it can)."""
    return disagreement(column, original_type, arrow_type, aws_parquet_type)
