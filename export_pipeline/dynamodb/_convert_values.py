"""Per-value conversions: DynamoDB JSON -> plain JSON, and number classification in bulk.

Nested values (inside M and L, and whole attributes whose type varies) become
plain JSON: type wrappers removed, B as its base64 text, sets as arrays, NULL
as null, and numbers as JSON numbers only where BigQuery's JSON parser keeps
them exactly (`json_number`); otherwise as strings with the exact text.
"""

from __future__ import annotations

import base64
import binascii
import re
from decimal import Decimal

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from export_pipeline.dynamodb import types as t

_SMALL_INT = re.compile(r"-?\d{1,15}")


class ValueError_(ValueError):
    """A DynamoDB JSON value that is malformed (the caller adds the file and line)."""


def json_number(text: str) -> int | float | str:
    """A DynamoDB number for JSON text: exact JSON number, or the exact text as a string.

    Integers within +-2^53 stay integers. Any other number stays a JSON
    number only when float64 reproduces it exactly: the shortest float text
    has the same decimal value. (BigQuery stores JSON numbers as INT64 or
    FLOAT64 and, in its default exact mode, accepts a number only if that
    holds.) Everything else (0.1000000000000000000001, 38-digit integers)
    is kept as a JSON string holding the exact text.
    """
    if type(text) is not str:
        raise ValueError_(f"N value must be a string, got {type(text).__name__}")
    if len(text) < 16 and text.isascii():
        digits = text[1:] if text[:1] == "-" else text
        if digits.isdigit():
            return int(text)
    try:
        as_float = float(text)
    except ValueError:
        raise ValueError_(f"invalid number {text!r}") from None
    if repr(as_float) == text and text[-1].isdigit():
        return as_float  # the common decimal: its own shortest float text
    if not t._NUMBER.fullmatch(text):
        raise ValueError_(f"invalid number {text!r}")
    value = Decimal(text)
    if value == value.to_integral_value():
        integer = int(value)
        if -t.JSON_SAFE_INTEGER <= integer <= t.JSON_SAFE_INTEGER:
            return integer
        if Decimal(repr(float(integer))) == value:
            return float(integer)  # e.g. 1E+20: float64 holds it exactly
        return text
    if Decimal(repr(as_float)) == value:
        return as_float
    return text


def _check_base64(text: object) -> str:
    if type(text) is not str:
        raise ValueError_(f"B value must be a base64 string, got {type(text).__name__}")
    try:
        binascii.a2b_base64(text, strict_mode=True)
    except binascii.Error as exc:
        raise ValueError_(f"invalid base64 {text[:40]!r}: {exc}") from exc
    return text


# Nested numbers repeat a lot (quantities, flags, zip codes): remember conversions.
_NUMBER_CACHE: dict[str, int | float | str] = {}
_NUMBER_CACHE_LIMIT = 200_000


def _cached_number(text: str) -> int | float | str:
    result = _NUMBER_CACHE.get(text)
    if result is None:
        result = json_number(text)
        if len(_NUMBER_CACHE) >= _NUMBER_CACHE_LIMIT:
            _NUMBER_CACHE.clear()
        _NUMBER_CACHE[text] = result
    return result


def _plain_map(value: object) -> dict:
    if type(value) is not dict:
        raise ValueError_("M value must be an object")
    out = {}
    for key, typed in value.items():
        ((tag, inner),) = typed.items()
        if tag == "S" and type(inner) is str:
            out[key] = inner
        elif tag == "N" and type(inner) is str:
            out[key] = _cached_number(inner)
        else:
            out[key] = plain_value(tag, inner)
    return out


def _plain_list(value: object) -> list:
    if type(value) is not list:
        raise ValueError_("L value must be an array")
    out = []
    for typed in value:
        ((tag, inner),) = typed.items()
        if tag == "S" and type(inner) is str:
            out.append(inner)
        elif tag == "N" and type(inner) is str:
            out.append(_cached_number(inner))
        else:
            out.append(plain_value(tag, inner))
    return out


def plain_value(tag: str, value: object) -> object:
    """The value of DynamoDB type `tag` as a plain JSON value (see module doc)."""
    if tag == "M":
        return _plain_map(value)
    if tag == "L":
        return _plain_list(value)
    if tag == "S":
        if type(value) is not str:
            raise ValueError_("S value must be a string")
        return value
    if tag == "N":
        return json_number(value)
    if tag == "BOOL":
        if type(value) is not bool:
            raise ValueError_("BOOL value must be true or false")
        return value
    if tag == "NULL":
        return None
    if tag == "B":
        return _check_base64(value)
    if tag in ("SS", "NS", "BS"):
        if type(value) is not list:
            raise ValueError_(f"{tag} value must be an array")
        if tag == "SS":
            if not all(type(v) is str for v in value):
                raise ValueError_("SS elements must be strings")
            return value
        if tag == "NS":
            return [json_number(v) for v in value]
        return [_check_base64(v) for v in value]
    raise ValueError_(f"unknown DynamoDB type descriptor {tag!r}")


def plain(typed: object) -> object:
    """One DynamoDB JSON value (`{"S": "x"}`, `{"M": {...}}`, ...) as a plain JSON value."""
    try:
        ((tag, value),) = typed.items()  # type: ignore[union-attr]
    except (AttributeError, ValueError) as exc:
        raise ValueError_(f"expected one type descriptor, got {str(typed)[:80]}") from exc
    return plain_value(tag, value)


def nested_json(tag: str, value: object) -> str:
    """An M or L attribute value as JSON text."""
    return orjson.dumps(_plain_map(value) if tag == "M" else _plain_list(value)).decode()


def dumps_plain(value: object) -> str:
    return orjson.dumps(value).decode("utf-8")


# -- columns in bulk ---------------------------------------------------------------

_FAST_INT64 = r"^-?[0-9]{1,18}$"
_FAST_NUMERIC = r"^-?[0-9]{1,29}\.[0-9]{1,9}$"
_KIND_RANK = {t.INT64: 0, t.NUMERIC: 1, t.STRING: 2}


def number_kind_of_array(texts: pa.Array) -> str:
    """The narrowest kind (INT64/NUMERIC/STRING) holding every number in `texts` exactly.

    Columnar regexes settle the common shapes; only the rest (exponents,
    19+ digit integers, many decimals) are classified one by one.
    Raises ValueError_ naming the first value that is not a number.
    """
    texts = texts.drop_null() if texts.null_count else texts
    if len(texts) == 0:
        return t.INT64
    is_int = pc.match_substring_regex(texts, _FAST_INT64)
    if pc.all(is_int).as_py():
        return t.INT64
    kind = t.INT64 if pc.any(is_int).as_py() else None
    rest = texts.filter(pc.invert(is_int))
    is_numeric = pc.match_substring_regex(rest, _FAST_NUMERIC)
    if pc.any(is_numeric).as_py():
        kind = t.NUMERIC
    for text in rest.filter(pc.invert(is_numeric)).to_pylist():
        try:
            value_kind = t.number_kind(text)
        except ValueError as exc:
            raise ValueError_(f"invalid number {text!r}") from exc
        if kind is None or _KIND_RANK[value_kind] > _KIND_RANK[kind]:
            kind = value_kind
    return kind or t.INT64


def cast_numbers(texts: pa.Array, kind: str) -> pa.Array:
    """Exact decimal texts -> int64 / decimal128(38, 9) / string (unchanged)."""
    if kind == t.STRING:
        return texts
    target = pa.int64() if kind == t.INT64 else pa.decimal128(38, 9)
    try:
        return pc.cast(texts, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass  # exponent forms etc.: convert one by one, exactly
    values = []
    for text in texts.to_pylist():
        if text is None:
            values.append(None)
        elif kind == t.INT64:
            value = Decimal(text)
            if value != value.to_integral_value():
                raise ValueError_(f"{text!r} is not an integer")
            values.append(int(value))
        else:
            values.append(Decimal(text))
    return pa.array(values, target)


def decode_base64_list(values: list) -> list:
    """base64 texts (or None) -> bytes, strictly."""
    a2b = binascii.a2b_base64
    try:
        return [None if v is None else a2b(v, strict_mode=True) for v in values]
    except (binascii.Error, TypeError) as exc:
        raise ValueError_(f"invalid base64: {exc}") from exc


def encode_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
