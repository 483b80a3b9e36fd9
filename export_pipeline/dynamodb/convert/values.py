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

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from export_pipeline.dynamodb import types as t

_SMALL_INT = re.compile(r"-?\d{1,15}")


class ValueError_(ValueError):
    """A DynamoDB JSON value that is malformed (the caller adds the file and line)."""


def json_number(text: str) -> int | float | str:
    """A DynamoDB number for JSON text: a JSON number where exact, else the exact text.

    Decided on the text's shape alone, so that SQL can apply the same rule
    when BigQuery widens a number column to JSON
    (`export_pipeline.dynamodb.widening`):

    - an integer (`-?[0-9]+`) within +-2^53 -> a JSON integer;
    - a plain decimal (`-?[0-9]+.[0-9]+`) of at most 15 significant digits
      (after leading zeros) -> a JSON number (float64 holds every such
      decimal closely enough that its shortest text is the decimal itself);
    - anything else (wider integers, more digits, exponents) -> a JSON string
      holding the exact text.
    """
    if type(text) is not str:
        raise ValueError_(f"N value must be a string, got {type(text).__name__}")
    if len(text) < 16 and text.isascii():
        digits = text[1:] if text[:1] == "-" else text
        if digits.isdigit():
            return int(text)
    if _INTEGER.fullmatch(text):
        integer = int(text)
        if -t.JSON_SAFE_INTEGER <= integer <= t.JSON_SAFE_INTEGER:
            return integer
        _check_range(text)
        return text
    if _DECIMAL.fullmatch(text) and len(_NOT_DIGIT.sub("", text).lstrip("0")) <= 15:
        _check_range(text)
        return float(text)
    _check_range(text)
    return text


_INTEGER = re.compile(r"-?[0-9]+")
_DECIMAL = re.compile(r"-?[0-9]+\.[0-9]+")
_NOT_DIGIT = re.compile(r"[^0-9]")


def _check_range(text: str) -> None:
    try:
        t.dynamodb_decimal(text)
    except ValueError as exc:
        raise ValueError_(f"invalid number {text!r}: {exc}") from None


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

_KIND_RANK = {t.INT64: 0, t.NUMERIC: 1, t.STRING: 2}


class NumberShapes:
    """Shape of each number text of a string array, from one numpy pass over its bytes.

    `simple`: only `-?digits(.digits)?`; then `int_digits` / `frac_digits`
    count the digits before / after the point (`frac_digits` -1: no point),
    `zero_first`: the first digit is 0. Null values are not `simple`.
    (Regexes over short values cost far more, per value, than this.)
    """

    def __init__(self, texts: pa.Array) -> None:
        count = len(texts)
        _validity, offsets_buffer, data_buffer = texts.buffers()
        offsets = np.frombuffer(offsets_buffer, np.int32)[texts.offset : texts.offset + count + 1]
        offsets = offsets.astype(np.int64)
        data = _NO_BYTES
        if data_buffer is not None and count:
            data = np.frombuffer(data_buffer, np.uint8)[offsets[0] : offsets[-1]]
            offsets = offsets - offsets[0]
        lengths = np.diff(offsets)
        starts = offsets[:-1]
        present = lengths > 0
        if texts.null_count:
            present &= valid_values(texts)
        first = np.zeros(count, dtype=np.uint8)
        first[present] = data[starts[present]]
        negative = first == ord("-")
        digit_sum = np.zeros(len(data) + 1, dtype=np.int64)
        np.cumsum((data - ord("0")) < 10, out=digit_sum[1:])  # uint8: wraps below "0"
        digits = digit_sum[offsets[1:]] - digit_sum[starts]
        point_at = np.flatnonzero(data == ord("."))
        owners = np.searchsorted(offsets, point_at, side="right") - 1  # value of each point
        points = np.bincount(owners, minlength=count)[:count]
        self.simple = present & (digits + points + negative == lengths) & (points <= 1)
        self.frac_digits = np.full(count, -1, dtype=np.int64)
        self.frac_digits[owners] = offsets[owners + 1] - point_at - 1
        self.int_digits = digits - np.maximum(self.frac_digits, 0)
        self.negative = negative
        first_digit = np.zeros(count, dtype=np.uint8)
        has_digit = self.simple & (self.int_digits > 0)
        first_digit[has_digit] = data[starts[has_digit] + negative[has_digit]]
        self.zero_first = first_digit == ord("0")

    def int64_like(self) -> np.ndarray:
        """`-?[0-9]{1,18}`: certainly INT64."""
        return (
            self.simple & (self.frac_digits < 0) & (self.int_digits >= 1) & (self.int_digits <= 18)
        )

    def numeric_like(self) -> np.ndarray:
        """`-?[0-9]{1,29}\\.[0-9]{1,9}`: certainly NUMERIC."""
        return (
            self.simple
            & (self.int_digits >= 1)
            & (self.int_digits <= t.NUMERIC_MAX_INTEGER_DIGITS)
            & (self.frac_digits >= 1)
            & (self.frac_digits <= 9)
        )

    def plain_decimal(self) -> np.ndarray:
        """`-?(0|[1-9][0-9]*)\\.[0-9]+`: a decimal in plain notation."""
        leading_zero = self.zero_first & (self.int_digits > 1)
        return self.simple & (self.int_digits >= 1) & (self.frac_digits >= 1) & ~leading_zero

    def json_integer(self) -> np.ndarray:
        """`0|-?[1-9][0-9]{0,14}`: an integer JSON keeps exactly, written as it is."""
        small = (self.frac_digits < 0) & (self.int_digits >= 1) & (self.int_digits <= 15)
        leading_zero = self.zero_first & ((self.int_digits > 1) | self.negative)
        return self.simple & small & ~leading_zero


def valid_values(array: pa.Array) -> np.ndarray:
    """Which values of `array` are not null, from its validity bitmap (no pandas)."""
    if not array.null_count:
        return np.ones(len(array), dtype=bool)
    bits = np.unpackbits(np.frombuffer(array.buffers()[0], np.uint8), bitorder="little")
    return bits[array.offset : array.offset + len(array)].astype(bool)


def true_values(array: pa.Array) -> np.ndarray:
    """Which values of a boolean `array` are true (null: false), from its buffers."""
    bits = np.unpackbits(np.frombuffer(array.buffers()[1], np.uint8), bitorder="little")
    return bits[array.offset : array.offset + len(array)].astype(bool) & valid_values(array)


def bool_array(values: np.ndarray) -> pa.Array:
    """A numpy bool array as an Arrow boolean array (from buffers: no pandas)."""
    bits = np.packbits(values, bitorder="little")
    return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(bits)])


def number_kind_of_array(texts: pa.Array) -> str:
    """The narrowest kind (INT64/NUMERIC/STRING) holding every number in `texts` exactly.

    Columnar shape checks settle the common forms; only the rest (exponents,
    19+ digit integers, many decimals) are classified one by one.
    Raises ValueError_ naming the first value that is not a number.
    """
    texts = texts.drop_null() if texts.null_count else texts
    if len(texts) == 0:
        return t.INT64
    shapes = NumberShapes(texts)
    is_int = shapes.int64_like()
    if is_int.all():
        return t.INT64
    kind = t.INT64 if is_int.any() else None
    is_numeric = shapes.numeric_like()
    if is_numeric.any():
        kind = t.NUMERIC
    others = ~(is_int | is_numeric)
    for text in texts.filter(bool_array(others)).to_pylist():
        try:
            value_kind = t.number_kind(text)
        except ValueError as exc:
            raise ValueError_(f"invalid number {text!r}: {exc}") from exc
        if kind is None or _KIND_RANK[value_kind] > _KIND_RANK[kind]:
            kind = value_kind
    return kind or t.INT64


def cast_numbers(texts: pa.Array, kind: str) -> pa.Array:
    """Exact decimal texts -> int64 / decimal128(38, 9) / string (unchanged)."""
    if kind == t.STRING:
        return texts
    target = pa.int64() if kind == t.INT64 else pa.decimal128(t.NUMERIC_PRECISION, t.NUMERIC_SCALE)
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


# -- Arrow values without pandas ------------------------------------------------------
#
# `pa.array()`, `pa.scalar()` and compute functions given plain Python values ask
# pyarrow's pandas shim whether the value is a pandas object, which imports pandas:
# about a second and 40 MB in a process that has not loaded it. The columnar path
# therefore builds its arrays and constants from buffers.


def string_array(values: list[str | None] | list[bytes | None], binary: bool = False) -> pa.Array:
    """A string (or binary) array of `values`, built from buffers (see above)."""
    encoded = [v.encode("utf-8") if type(v) is str else (v or b"") for v in values]
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    arrow_type = pa.binary() if binary else pa.string()
    array = pa.Array.from_buffers(
        arrow_type, len(encoded), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))]
    )
    if any(v is None for v in values):
        present = np.fromiter((v is not None for v in values), dtype=bool, count=len(values))
        mask = pa.Array.from_buffers(
            pa.bool_(), len(values), [None, pa.py_buffer(np.packbits(present, bitorder="little"))]
        )
        array = pc.if_else(mask, array, pa.nulls(1, arrow_type)[0])
    return array


def string_scalar(text: str | None) -> pa.Scalar:
    """A string scalar (null for None), built from buffers (see above)."""
    return string_array([text])[0]


_BASE64_CODES = np.full(256, 255, dtype=np.uint8)
_BASE64_CODES[
    np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", np.uint8)
] = np.arange(64, dtype=np.uint8)
_PAD = 64
_BASE64_CODES[ord("=")] = _PAD


def decode_base64_array(texts: pa.Array) -> pa.Array:
    """Strict base64 texts -> binary, column-wise (numpy over the whole data buffer).

    Accepts only canonical padding (`xx==`, `xxx=` at the end of a value) and
    raises ValueError_ for anything else; the per-value path then decides
    exactly as `binascii.a2b_base64(strict_mode=True)` does.
    """
    original = texts
    if texts.null_count:
        texts = pc.fill_null(texts, _EMPTY)
    _validity, offsets_buffer, data_buffer = texts.buffers()
    offsets = np.frombuffer(offsets_buffer, np.int32)[texts.offset : texts.offset + len(texts) + 1]
    start = int(offsets[0]) if len(offsets) else 0
    offsets = offsets.astype(np.int64) - start
    size = int(offsets[-1]) if len(offsets) else 0
    data = np.frombuffer(data_buffer, np.uint8)[start : start + size] if size else _NO_BYTES
    if size % 4 or (np.diff(offsets) % 4).any():
        raise ValueError_("invalid base64: length is not a multiple of 4")
    codes = _BASE64_CODES[data]
    if (codes == 255).any():
        raise ValueError_("invalid base64: not a base64 character")
    quads = codes.reshape(-1, 4)
    pad = quads == _PAD
    last = np.zeros(len(quads), dtype=bool)  # the last quad of each value
    ends = offsets[1:][np.diff(offsets) > 0] // 4 - 1
    last[ends] = True
    if pad[~last].any() or (pad[:, 0] | pad[:, 1] | (pad[:, 2] & ~pad[:, 3])).any():
        raise ValueError_("invalid base64: misplaced padding")
    bits = np.where(pad, 0, quads).astype(np.uint32)
    number = (bits[:, 0] << 18) | (bits[:, 1] << 12) | (bits[:, 2] << 6) | bits[:, 3]
    decoded = np.empty((len(quads), 3), dtype=np.uint8)
    decoded[:, 0] = number >> 16
    decoded[:, 1] = (number >> 8) & 0xFF
    decoded[:, 2] = number & 0xFF
    keep = np.ones((len(quads), 3), dtype=bool)  # byte 0 is always data,
    keep[:, 1] = ~pad[:, 2]  # byte 1 unless "xx==",
    keep[:, 2] = ~pad[:, 3]  # byte 2 unless "xxx="
    kept = np.zeros(len(quads) + 1, dtype=np.int64)
    np.cumsum(keep.sum(axis=1), out=kept[1:])
    new_offsets = kept[offsets // 4].astype(np.int32)
    result = pa.Array.from_buffers(
        pa.binary(),
        len(texts),
        [None, pa.py_buffer(new_offsets), pa.py_buffer(decoded[keep].tobytes())],
    )
    if original.null_count:
        result = pc.if_else(original.is_valid(), result, pa.nulls(1, pa.binary())[0])
    return result


_EMPTY = string_scalar("")
_NO_BYTES = np.zeros(0, dtype=np.uint8)


def decode_base64_list(values: list) -> list:
    """base64 texts (or None) -> bytes, strictly."""
    a2b = binascii.a2b_base64
    try:
        return [None if v is None else a2b(v, strict_mode=True) for v in values]
    except (binascii.Error, TypeError) as exc:
        raise ValueError_(f"invalid base64: {exc}") from exc


def encode_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
