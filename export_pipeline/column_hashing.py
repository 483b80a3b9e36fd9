"""Hashing personal-data columns on the worker, before any value leaves it.

A column configured `hash` (`TableSettings.columns`) reaches BigQuery as the
lowercase hex HMAC-SHA256 of its value's UTF-8 text, keyed by a secret read
from the environment variable `bigquery.hash_key.env_var` names (the key is
that variable's value, as UTF-8 bytes). Hashing happens here, in the worker,
never in BigQuery SQL: the plaintext is in no staging table, and the key is
in no query, job, log line or metadata (`HashKey` never prints it).

The text of a value is defined per type so that one value hashes the same in
every run, every table and every source, and hashed columns still join
(docs/configuration.md, "Personal data", has the table):

- text is itself; bytes that are a CHAR column's text are that text;
- numbers are their exact decimal text in one canonical form
  (`canonical_number`): no exponent, no `+`, no leading zeros, no trailing
  fractional zeros, no `.` for a whole number, `0` for every zero — so a
  DynamoDB `N` of `42` and a MySQL INT `42` hash alike, as do `1.50` and `1.5`;
- other bytes are their standard base64 (with padding);
- booleans are `true` / `false`; dates `YYYY-MM-DD`; times `HH:MM:SS[.ffffff]`;
  timestamps `YYYY-MM-DD HH:MM:SS[.ffffff]` (fraction only when not zero);
- DynamoDB sets, lists and maps are the converter's JSON text of them;
- NULL stays NULL.

HMAC is computed per value from SHA-256 states keyed once (RFC 2104's inner
and outer states, copied per value); a dictionary-encoded column hashes each
distinct value once. bench/column_hashing.py measures both against
`hmac.new` per value.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from export_pipeline.errors import PermanentError

_SHA256_BLOCK = 64  # bytes: SHA-256's block size, HMAC's key padding


class MissingHashKeyError(PermanentError):
    """A table hashes columns but the key's environment variable is not set."""


class HashKey:
    """The HMAC key of hashed columns. Its text form never shows the secret."""

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("the hash key is empty")
        self._secret = secret

    def __repr__(self) -> str:
        return "HashKey(<secret not shown>)"

    __str__ = __repr__

    def __reduce__(self):  # the key crosses to converter worker processes as bytes
        return (HashKey, (self._secret,))

    def keyed_states(self) -> tuple[Any, Any]:
        """HMAC-SHA256's inner and outer SHA-256 states after the padded key (RFC 2104).

        Copying these per value is HMAC without redoing the key schedule, and
        `hashlib` copies are C-level (Python's `hmac` copies are not).
        """
        secret = self._secret
        if len(secret) > _SHA256_BLOCK:
            secret = hashlib.sha256(secret).digest()
        padded = secret.ljust(_SHA256_BLOCK, b"\0")
        inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
        outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))
        return inner, outer


def read_hash_key(env_var: str, tables: Iterable[str]) -> HashKey:
    """The key from `env_var`, or one line naming the variable and the tables that need it."""
    value = os.environ.get(env_var, "")
    if not value:
        names = ", ".join(tables)
        raise MissingHashKeyError(
            f"{names}: columns configured 'hash' need the HMAC key, but the environment "
            f"variable {env_var} is not set; set it (the same secret in every run) or remove "
            "the 'hash' columns"
        )
    return HashKey(value.encode("utf-8"))


def hashed_table_names(settings: object, name: str) -> list[str]:
    """The tables of one pipeline.yaml entry that hash a column, as the entry names them.

    `settings` is a DynamoDB table entry (its own `columns`) or an RDS instance
    entry (`tables`, each with `columns`).
    """
    tables: Mapping[str, object] = getattr(settings, "tables", None) or {}
    if tables:
        return [
            f"{name} table {table}"
            for table, table_settings in tables.items()
            if getattr(table_settings, "hashed_columns", None)
        ]
    return [name] if getattr(settings, "hashed_columns", None) else []


def check_hash_key(env_var: str, settings: object, name: str) -> None:
    """Before an export starts: a unit that hashes columns has its key (else one line)."""
    tables = hashed_table_names(settings, name)
    if tables:
        read_hash_key(env_var, tables)


def hmac_hex(key: HashKey, texts: Sequence[str | bytes | None]) -> list[str | None]:
    """Lowercase hex HMAC-SHA256 of each text (str as UTF-8); None stays None."""
    inner, outer = key.keyed_states()
    out: list[str | None] = []
    for text in texts:
        if text is None:
            out.append(None)
            continue
        state = inner.copy()
        state.update(text.encode("utf-8") if isinstance(text, str) else text)
        result = outer.copy()
        result.update(state.digest())
        out.append(result.hexdigest())
    return out


def canonical_number(text: str) -> str:
    """A number's exact decimal text in one form: `1.50`, `1.5E0`, `+1.5` -> `1.5`.

    Never rounds (no Decimal context is involved). NaN and infinities, which
    only floating-point columns hold, are `NaN`, `Infinity`, `-Infinity`.
    """
    try:
        number = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"not a number: {text!r}") from None
    if number.is_nan():
        return "NaN"
    if number.is_infinite():
        return "-Infinity" if number < 0 else "Infinity"
    plain = format(number, "f")
    if "." in plain:
        plain = plain.rstrip("0").rstrip(".")
    if plain in ("-0", ""):
        plain = "0"
    return plain


def float_text(value: float) -> str:
    """A float's shortest round-trip decimal, in the canonical number form."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    return canonical_number(repr(value))


def base64_text(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _clock_text(value: dt.time | dt.datetime) -> str:
    text = value.strftime("%H:%M:%S")
    return f"{text}.{value.microsecond:06d}" if value.microsecond else text


def _temporal_text(value: object) -> str:
    if isinstance(value, dt.datetime):
        return f"{value.strftime('%Y-%m-%d')} {_clock_text(value)}"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        return _clock_text(value)
    return str(value)


def _per_value(array: pa.Array, text) -> pa.Array:
    return pa.array([None if v is None else text(v) for v in array.to_pylist()], pa.string())


def text_form(array: pa.Array, *, bytes_are_text: bool = False) -> pa.Array:
    """Each value's text (see the module docstring), as a string or binary array.

    `bytes_are_text`: a binary column holds text (MySQL CHAR as AWS writes it):
    its bytes are hashed as they are, the same bytes as that text in UTF-8.
    """
    kind = array.type
    if pa.types.is_null(kind):
        return pa.nulls(len(array), pa.string())
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return array
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return array if bytes_are_text else _per_value(array, base64_text)
    if pa.types.is_fixed_size_binary(kind):
        return _per_value(array, base64_text)
    if pa.types.is_boolean(kind):
        return pc.if_else(array, "true", "false")
    if pa.types.is_integer(kind):
        return pc.cast(array, pa.string())
    if pa.types.is_decimal(kind):
        return _per_value(array, lambda v: canonical_number(str(v)))
    if pa.types.is_floating(kind):
        return _per_value(array, lambda v: float_text(float(v)))
    if pa.types.is_temporal(kind):
        return _per_value(array, _temporal_text)
    return _per_value(array, lambda v: orjson.dumps(v, default=str).decode("utf-8"))


def hash_array(key: HashKey, array: pa.Array, *, bytes_are_text: bool = False) -> pa.Array:
    """The column `array` hashed: a string array of lowercase hex HMAC-SHA256, NULL kept.

    A dictionary-encoded array hashes each dictionary entry once.
    """
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_dictionary(array.type):
        hashed = hash_array(key, array.dictionary, bytes_are_text=bytes_are_text)
        return hashed.take(array.indices)
    texts = text_form(array, bytes_are_text=bytes_are_text)
    return pa.array(hmac_hex(key, texts.to_pylist()), pa.string())
