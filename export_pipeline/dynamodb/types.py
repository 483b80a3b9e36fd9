"""DynamoDB attribute types -> BigQuery column types, and how two of them widen.

The rules (one per DynamoDB type descriptor):

| DynamoDB | BigQuery column | Parquet physical type |
|---|---|---|
| S | STRING | string (UTF-8) |
| BOOL | BOOL | bool |
| B | BYTES | binary |
| NULL (only ever NULL) | STRING, all rows NULL | string |
| N, all integers in INT64 range | INT64 | int64 |
| N, all fit NUMERIC exactly (<= 29 integer digits, <= 9 decimals) | NUMERIC | decimal128(38, 9) |
| N, otherwise | STRING (exact decimal text) | string |
| SS / BS | ARRAY<STRING> / ARRAY<BYTES> (REPEATED) | list<string> / list<binary> |
| NS | ARRAY<INT64 / NUMERIC / STRING> by the N rule over all elements | list<...> |
| M, L | JSON | string holding JSON text |
| a mix of types for one attribute | JSON | string holding JSON text |

Numbers are decided over *all* values of an attribute, because a column has
one type: one `1.5` among a million integers makes the column NUMERIC, one
39-digit number makes it STRING. Nothing is rounded: a number that does not
fit NUMERIC keeps its exact text.

`widen()` is the same lattice, used by the incremental MERGE to reconcile an
existing BigQuery column with a new batch: numbers widen INT64 -> NUMERIC ->
STRING, an all-NULL column takes the other side's type, arrays widen by
element, anything else that differs becomes JSON.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from export_pipeline.bigquery_types import (
    BOOL,
    BYTES,
    FLOAT64,
    INT64,
    INT64_MAX,
    INT64_MIN,
    JSON,
    NUMERIC,
    NUMERIC_MAX_INTEGER_DIGITS,
    NUMERIC_PRECISION,
    NUMERIC_SCALE,
    STRING,
)

# The column kinds are BigQuery's type names (re-exported for the converter), plus NULL.
__all__ = [
    "BOOL",
    "BYTES",
    "FLOAT64",
    "INT64",
    "INT64_MAX",
    "INT64_MIN",
    "JSON",
    "JSON_SAFE_INTEGER",
    "NULL",
    "NUMERIC",
    "NUMERIC_MAX_INTEGER_DIGITS",
    "NUMERIC_PRECISION",
    "NUMERIC_SCALE",
    "STRING",
    "ColumnType",
    "dynamodb_decimal",
    "number_kind",
    "widen",
]

# Kinds a column can have. "NULL" is a column that has only ever seen NULL: it
# is written as an all-null STRING column but widens to whatever comes next.
NULL = "NULL"

_NUMBER_ORDER = {INT64: 0, NUMERIC: 1, STRING: 2}

# JSON numbers that BigQuery parses into INT64 / FLOAT64 without change.
JSON_SAFE_INTEGER = 2**53


@dataclass(frozen=True)
class ColumnType:
    """The type of one BigQuery column: a kind and whether it is REPEATED.

    `kind` is one of STRING, INT64, NUMERIC, BOOL, BYTES, JSON, FLOAT64, or
    NULL (a column that only ever held NULL; its BigQuery type is STRING).
    REPEATED JSON is never produced: an array whose elements would need JSON
    becomes a JSON column instead.
    """

    kind: str
    repeated: bool = False

    @property
    def bq_type(self) -> str:
        """The BigQuery type name (`NULL` columns are STRING)."""
        return STRING if self.kind == NULL else self.kind

    @property
    def mode(self) -> str:
        return "REPEATED" if self.repeated else "NULLABLE"

    @classmethod
    def from_bigquery(cls, bq_type: str, mode: str = "NULLABLE") -> ColumnType:
        """The ColumnType of an existing BigQuery column (legacy names accepted)."""
        aliases = {"INTEGER": INT64, "BOOLEAN": BOOL, "FLOAT": FLOAT64, "BIGNUMERIC": STRING}
        kind = aliases.get(bq_type.upper(), bq_type.upper())
        return cls(kind, mode.upper() == "REPEATED")

    def __str__(self) -> str:
        return f"ARRAY<{self.bq_type}>" if self.repeated else self.bq_type


def widen(a: ColumnType, b: ColumnType) -> ColumnType:
    """The narrowest column type that holds every value of `a` and of `b` exactly.

    - equal types stay;
    - an all-NULL column takes the other type;
    - numbers: INT64 < NUMERIC < STRING (STRING holds the exact decimal text);
    - two REPEATED types widen by element (JSON if the elements need JSON);
    - anything else that differs (BOOL vs STRING, REPEATED vs scalar, ...) -> JSON.
    """
    if a == b:
        return a
    if a.kind == NULL and not a.repeated:
        return b
    if b.kind == NULL and not b.repeated:
        return a
    if a.kind == JSON or b.kind == JSON:
        return ColumnType(JSON)
    if a.repeated != b.repeated:
        return ColumnType(JSON)
    if a.kind in _NUMBER_ORDER and b.kind in _NUMBER_ORDER:
        kind = a.kind if _NUMBER_ORDER[a.kind] >= _NUMBER_ORDER[b.kind] else b.kind
        return ColumnType(kind, a.repeated)
    if a.kind == NULL:  # both repeated, one of NULL elements
        return b
    if b.kind == NULL:
        return a
    return ColumnType(JSON)


# -- numbers --------------------------------------------------------------------

# DynamoDB number text: optional sign, digits with optional fraction, optional exponent.
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
# DynamoDB's number range: magnitudes from 1E-130 to 9.99...E+125 (adjusted exponents).
_MIN_EXPONENT, _MAX_EXPONENT = -130, 125


def dynamodb_decimal(text: str) -> Decimal:
    """The exact value of a DynamoDB number text.

    Raises ValueError for text that is not a number or lies outside
    DynamoDB's range (such a value cannot come from DynamoDB; checking
    first also keeps `int()` from building a billion-digit integer for
    `1E999999999`).
    """
    if not _NUMBER.fullmatch(text):
        raise ValueError("not a number")
    try:
        value = Decimal(text)
    except ArithmeticError as exc:  # an exponent beyond even Decimal's
        raise ValueError("exponent out of range") from exc
    if value and not _MIN_EXPONENT <= value.adjusted() <= _MAX_EXPONENT:
        raise ValueError("outside DynamoDB's range (1E-130 to 9.99...E+125 in magnitude)")
    return value


def number_kind(text: str) -> str:
    """INT64, NUMERIC or STRING: the narrowest column kind holding `text` exactly.

    Decided on the exact decimal value (via `Decimal`), so `1E+2` is an
    integer (100) and `2.50` has two decimals (scale counted after removing
    trailing zeros: `2.50` == `2.5`, which NUMERIC holds exactly).
    Raises ValueError for text that is not a number (or beyond DynamoDB's range).
    """
    value = dynamodb_decimal(text)
    if value == value.to_integral_value():
        integer = int(value)
        if INT64_MIN <= integer <= INT64_MAX:
            return INT64
        return NUMERIC if len(str(abs(integer))) <= NUMERIC_MAX_INTEGER_DIGITS else STRING
    # Not `normalize()`: it rounds to the context's 28 digits.
    _sign, digit_tuple, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    digits = list(digit_tuple)
    while exponent < 0 and len(digits) > 1 and digits[-1] == 0:
        digits.pop()
        exponent += 1
    scale = -exponent if exponent < 0 else 0
    integer_digits = max(len(digits) + exponent, 0)
    if scale <= NUMERIC_SCALE and integer_digits <= NUMERIC_MAX_INTEGER_DIGITS:
        return NUMERIC
    return STRING
