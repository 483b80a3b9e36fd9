"""MySQL / MariaDB column types as the local RDS keeps and exports them.

Two jobs, both driven by the column's type string as the server reports it in
`information_schema.COLUMNS.COLUMN_TYPE` (`bigint unsigned`, `decimal(65,30)`,
`enum('a','b')`, `int(11)` on MariaDB):

* `canonical_value()` turns a value given to the embedded store (or read as text
  from a real server) into the exact form MySQL would return, validating it like
  a strict-mode server would. Values are kept as MySQL's own text forms so that
  nothing is rounded: DECIMAL(65,30) digits, zero dates `0000-00-00`, TIME up to
  `838:59:59`, 18446744073709551615.
* `arrow_type()` / `arrow_array()` give the Parquet physical + logical type that
  an RDS snapshot export writes for that MySQL type (AWS's mapping table,
  https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_ExportSnapshot.data-types.html),
  and the values in it.

Zero / partly-zero DATETIME and TIMESTAMP values (`0000-00-00 00:00:00`,
`2024-00-10 …`) have no INT64 TIMESTAMP_MICROS form. The export writes them as
NULL: that is what a JDBC-based export (the `part-…c000.gz.parquet` names are
Spark's) does with `zeroDateTimeBehavior=convertToNull`; AWS does not document
it, so this is our most plausible reading. DATE and TIME are text in the export,
so `0000-00-00` and `838:59:59` survive unchanged.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import struct
from dataclasses import dataclass, field
from decimal import Context, Decimal, InvalidOperation, localcontext
from typing import Any

import pyarrow as pa

INTEGER_RANGES: dict[str, tuple[int, int, int]] = {
    # base: (signed min, signed max, unsigned max)
    "tinyint": (-(2**7), 2**7 - 1, 2**8 - 1),
    "smallint": (-(2**15), 2**15 - 1, 2**16 - 1),
    "mediumint": (-(2**23), 2**23 - 1, 2**24 - 1),
    "int": (-(2**31), 2**31 - 1, 2**32 - 1),
    "bigint": (-(2**63), 2**63 - 1, 2**64 - 1),
}
_ALIASES = {
    "integer": "int",
    "int1": "tinyint",
    "int2": "smallint",
    "int3": "mediumint",
    "int4": "int",
    "int8": "bigint",
    "middleint": "mediumint",
    "dec": "decimal",
    "numeric": "decimal",
    "fixed": "decimal",
    "real": "double",
    "double precision": "double",
    "float4": "float",
    "float8": "double",
    "bool": "tinyint",
    "boolean": "tinyint",
    "geomcollection": "geometrycollection",
    "character": "char",
    "nchar": "char",
    "nvarchar": "varchar",
}
TEXT_LIMITS = {"tinytext": 255, "text": 65535, "mediumtext": 2**24 - 1, "longtext": 2**32 - 1}
BLOB_LIMITS = {"tinyblob": 255, "blob": 65535, "mediumblob": 2**24 - 1, "longblob": 2**32 - 1}
SPATIAL = {
    "geometry",
    "point",
    "linestring",
    "polygon",
    "multipoint",
    "multilinestring",
    "multipolygon",
    "geometrycollection",
}
_KNOWN = (
    set(INTEGER_RANGES)
    | set(TEXT_LIMITS)
    | set(BLOB_LIMITS)
    | SPATIAL
    | {"decimal", "float", "double", "bit", "char", "varchar", "binary", "varbinary"}
    | {"enum", "set", "json", "date", "time", "datetime", "timestamp", "year"}
)

_DATE_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_DATETIME_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?$")
_TIME_RE = re.compile(r"^(-)?(\d{1,3}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?$")
_TIMESTAMP_MIN = dt.datetime(1970, 1, 1, 0, 0, 1)
_TIMESTAMP_MAX = dt.datetime(2038, 1, 19, 3, 14, 7, 999999)
_EPOCH = dt.datetime(1970, 1, 1)


class MySQLValueError(ValueError):
    """A value does not fit its column; the message names the column and why."""


def _split_members(text: str) -> tuple[str, ...]:
    """`'a','b''c'` → ('a', "b'c") — ENUM/SET member lists as COLUMN_TYPE spells them."""
    members: list[str] = []
    i = 0
    while i < len(text):
        if text[i] in " ,":
            i += 1
            continue
        if text[i] != "'":
            raise ValueError(f"bad ENUM/SET member list: {text!r}")
        i += 1
        buf: list[str] = []
        while True:
            if i >= len(text):
                raise ValueError(f"unterminated ENUM/SET member in {text!r}")
            if text[i] == "'":
                if i + 1 < len(text) and text[i + 1] == "'":
                    buf.append("'")
                    i += 2
                    continue
                i += 1
                break
            if text[i] == "\\" and i + 1 < len(text):
                buf.append(text[i + 1])
                i += 2
                continue
            buf.append(text[i])
            i += 1
        members.append("".join(buf))
    return tuple(members)


@dataclass(frozen=True)
class MySQLType:
    """A parsed COLUMN_TYPE: base type plus its parameters."""

    column_type: str
    base: str
    unsigned: bool = False
    length: int | None = None  # CHAR/VARCHAR/BINARY/VARBINARY/BIT length, DECIMAL precision
    scale: int | None = None  # DECIMAL scale
    fsp: int = 0  # fractional seconds digits of TIME/DATETIME/TIMESTAMP
    members: tuple[str, ...] = field(default=())

    @classmethod
    def parse(cls, column_type: str) -> MySQLType:
        """Parse a COLUMN_TYPE text (cached: the same few types come back per cell)."""
        return _parse_cached(column_type)

    @classmethod
    def _parse(cls, column_type: str) -> MySQLType:
        text = column_type.strip()
        if "(" in text:
            head, _, rest = text.partition("(")
            args, _, tail = rest.rpartition(")")
        else:
            head, args, tail = text, "", ""
        words = head.lower().split()
        modifiers = {"unsigned", "signed", "zerofill"}
        base_raw = " ".join(w for w in words if w not in modifiers)
        tail_l = " ".join([*(w for w in words if w in modifiers), tail.lower()])
        base = _ALIASES.get(base_raw, base_raw)
        if base not in _KNOWN:
            raise ValueError(f"unknown MySQL column type {column_type!r}")
        unsigned = "unsigned" in tail_l.split()
        if base in ("enum", "set"):
            return cls(column_type, base, members=_split_members(args))
        numbers = [int(a) for a in args.split(",")] if args.strip() else []
        length = scale = None
        fsp = 0
        if base == "decimal":
            length = numbers[0] if numbers else 10
            scale = numbers[1] if len(numbers) > 1 else 0
            if not (1 <= length <= 65 and 0 <= scale <= 30 and scale <= length):
                raise ValueError(f"invalid DECIMAL precision/scale in {column_type!r}")
        elif base in ("time", "datetime", "timestamp"):
            fsp = numbers[0] if numbers else 0
            if not 0 <= fsp <= 6:
                raise ValueError(f"invalid fractional seconds precision in {column_type!r}")
        elif base in ("char", "binary"):
            length = numbers[0] if numbers else 1
        elif base == "bit":
            length = numbers[0] if numbers else 1
            if not 1 <= length <= 64:
                raise ValueError(f"BIT length must be 1..64 in {column_type!r}")
        elif base in ("varchar", "varbinary"):
            if not numbers:
                raise ValueError(f"{base.upper()} needs a length: {column_type!r}")
            length = numbers[0]
        return cls(column_type, base, unsigned, length, scale, fsp)

    # --- export (Parquet) side -------------------------------------------------

    @property
    def is_big_decimal(self) -> bool:
        return self.base == "decimal" and (self.length or 0) > 38

    def arrow_type(self) -> pa.DataType:
        """The Arrow type whose Parquet encoding is AWS's mapping for this MySQL type."""
        b = self.base
        if b in INTEGER_RANGES:
            if b == "bigint":
                return pa.decimal128(20, 0) if self.unsigned else pa.int64()
            if b in ("int", "mediumint") and self.unsigned:
                return pa.int64()
            if b == "tinyint" and self.unsigned:
                return pa.int16()  # INT32 annotated INT(16, signed)
            return pa.int32()
        if b == "decimal":
            if self.is_big_decimal:
                return pa.string()
            return pa.decimal128(self.length or 10, self.scale or 0)
        if b in ("float", "double"):
            return pa.float64()
        if b in ("varchar", "enum", "set", "json", "date", "time") or b in TEXT_LIMITS:
            return pa.string()
        if b in ("datetime", "timestamp"):
            return pa.timestamp("us", tz="UTC")
        if b == "year":
            return pa.int32()
        # bit, char, binary, varbinary, blobs, spatial: unannotated BYTE_ARRAY
        return pa.binary()

    def expected_exported_type(self) -> str:
        """Parquet type as a short text, for export_tables_info's expectedExportedType."""
        t = self.arrow_type()
        if pa.types.is_decimal(t):
            return f"fixed_len_byte_array (DECIMAL({t.precision},{t.scale}))"
        if pa.types.is_timestamp(t):
            return "int64 (TIMESTAMP(MICROS,true))"
        if t == pa.int16():
            return "int32 (INT(16,true))"
        return {
            pa.int32(): "int32",
            pa.int64(): "int64",
            pa.float64(): "double",
            pa.string(): "binary (UTF8)",
            pa.binary(): "binary",
        }[t]

    def export_value(self, stored: Any) -> Any:
        """A stored (canonical) value as the Python value for `arrow_type()`."""
        if stored is None:
            return None
        b = self.base
        if b in INTEGER_RANGES:
            return Decimal(int(stored)) if b == "bigint" and self.unsigned else int(stored)
        if b == "decimal":
            return str(stored) if self.is_big_decimal else Decimal(str(stored))
        if b in ("float", "double"):
            return float(stored)
        if b == "year":
            return int(stored)
        if b in ("datetime", "timestamp"):
            return datetime_micros(str(stored))
        if b == "char":
            return str(stored).encode("utf-8")
        return stored

    def arrow_array(self, stored_values: list[Any]) -> pa.Array:
        values = [self.export_value(v) for v in stored_values]
        arrow_type = self.arrow_type()
        if pa.types.is_timestamp(arrow_type):
            return pa.array(values, type=pa.int64()).cast(arrow_type)
        return pa.array(values, type=arrow_type)

    # --- store side ------------------------------------------------------------

    def canonical_value(self, value: Any, where: str = "value") -> Any:
        """Validate `value` for this column and return its stored form.

        Stored forms: int (str beyond int64), canonical text for DECIMAL and the
        temporal types, float, bytes for binary-ish types, str for text.
        """
        if value is None:
            return None
        try:
            return self._canonical(value)
        except MySQLValueError as exc:
            raise MySQLValueError(f"{where} ({self.column_type}): {exc}") from None
        except (ValueError, TypeError, InvalidOperation, OverflowError) as exc:
            raise MySQLValueError(f"{where} ({self.column_type}): {value!r}: {exc}") from None

    def _canonical(self, value: Any) -> Any:
        b = self.base
        if b in INTEGER_RANGES:
            if isinstance(value, bytes):
                value = value.decode("ascii")
            if isinstance(value, bool | float):
                value = int(value) if float(value).is_integer() else _bad(value, "not an integer")
            number = int(value.strip()) if isinstance(value, str) else int(value)
            low, high, umax = INTEGER_RANGES[b]
            lo, hi = (0, umax) if self.unsigned else (low, high)
            if not lo <= number <= hi:
                raise MySQLValueError(f"{number} out of range {lo}..{hi}")
            return number if number <= 2**63 - 1 else str(number)
        if b == "decimal":
            return self._decimal(value)
        if b in ("float", "double"):
            number = float(value.decode() if isinstance(value, bytes) else value)
            if number != number or number in (float("inf"), float("-inf")):
                raise MySQLValueError("NaN and infinity are not MySQL values")
            if b == "float":
                number = struct.unpack("<f", struct.pack("<f", number))[0]
            if self.unsigned and number < 0:
                raise MySQLValueError(f"{number} is negative in an UNSIGNED column")
            return number
        if b == "bit":
            width = ((self.length or 1) + 7) // 8
            number = int.from_bytes(value, "big") if isinstance(value, bytes) else int(value)
            if not 0 <= number < 2 ** (self.length or 1):
                raise MySQLValueError(f"{number} does not fit BIT({self.length})")
            return number.to_bytes(width, "big")
        if b in ("char", "varchar") or b in TEXT_LIMITS:
            text = value.decode("utf-8") if isinstance(value, bytes) else value
            if not isinstance(text, str):
                raise MySQLValueError(f"expected text, got {type(value).__name__}")
            if b == "char":
                text = text.rstrip(" ")  # CHAR drops trailing spaces on retrieval
            if b in ("char", "varchar") and len(text) > (self.length or 0):
                raise MySQLValueError(f"{len(text)} characters exceed {self.length}")
            if b in TEXT_LIMITS and len(text.encode("utf-8")) > TEXT_LIMITS[b]:
                raise MySQLValueError(f"longer than {TEXT_LIMITS[b]} bytes")
            return text
        if b in ("binary", "varbinary") or b in BLOB_LIMITS or b in SPATIAL:
            if isinstance(value, bytearray | memoryview):
                value = bytes(value)
            if not isinstance(value, bytes):
                raise MySQLValueError(f"expected bytes, got {type(value).__name__}")
            limit = BLOB_LIMITS.get(b) or self.length or 2**32 - 1
            if len(value) > limit:
                raise MySQLValueError(f"{len(value)} bytes exceed {limit}")
            if b == "binary":
                value = value.ljust(self.length or 1, b"\x00")  # BINARY pads with 0x00
            return value
        if b == "enum":
            text = value.decode() if isinstance(value, bytes) else str(value)
            if text not in self.members:
                raise MySQLValueError(f"{text!r} is not one of {list(self.members)}")
            return text
        if b == "set":
            items = value.split(",") if isinstance(value, str) else list(value)
            items = [i for i in items if i != ""]
            unknown = [i for i in items if i not in self.members]
            if unknown:
                raise MySQLValueError(f"{unknown} not in {list(self.members)}")
            return ",".join(m for m in self.members if m in items)
        if b == "json":
            if isinstance(value, str | bytes):
                text = value.decode("utf-8") if isinstance(value, bytes) else value
                json.loads(text)  # must be valid JSON
                return text
            return json.dumps(value, ensure_ascii=False)
        if b == "date":
            return _date_text(value)
        if b in ("datetime", "timestamp"):
            return self._datetime(value)
        if b == "time":
            return self._time(value)
        if b == "year":
            number = int(value)
            if number != 0 and not 1901 <= number <= 2155:
                raise MySQLValueError(f"{number} out of range 1901..2155 (or 0)")
            return number
        raise MySQLValueError(f"unsupported type {b}")  # pragma: no cover

    def _decimal(self, value: Any) -> str:
        with localcontext(Context(prec=100)):
            return self._decimal_exact(value)

    def _decimal_exact(self, value: Any) -> str:
        if isinstance(value, float):
            raise MySQLValueError("give DECIMAL values as str, int or Decimal (floats round)")
        text = value.decode() if isinstance(value, bytes) else str(value)
        number = Decimal(text.strip())
        if not number.is_finite():
            raise MySQLValueError("not a finite number")
        scale = self.scale or 0
        quantized = number.quantize(Decimal(1).scaleb(-scale)) if scale else number
        if scale == 0:
            if number != number.to_integral_value():
                raise MySQLValueError(f"{text} has more than {scale} decimals")
            quantized = number.quantize(Decimal(1))
        elif quantized != number:
            raise MySQLValueError(f"{text} has more than {scale} decimals")
        if self.unsigned and quantized < 0:
            raise MySQLValueError(f"{text} is negative in an UNSIGNED column")
        digits = len(quantized.as_tuple().digits)
        integer_digits = max(digits - scale, 0) if quantized != 0 else 0
        if integer_digits > (self.length or 10) - scale:
            raise MySQLValueError(f"{text} does not fit DECIMAL({self.length},{scale})")
        return format(quantized, "f")

    def _datetime(self, value: Any) -> str:
        if isinstance(value, dt.datetime):
            if value.tzinfo is not None:
                value = value.astimezone(dt.UTC).replace(tzinfo=None)
            text = value.strftime("%Y-%m-%d %H:%M:%S") + (
                f".{value.microsecond:06d}" if value.microsecond else ""
            )
        elif isinstance(value, dt.date):
            text = value.isoformat() + " 00:00:00"
        else:
            text = value.decode() if isinstance(value, bytes) else str(value)
        match = _DATETIME_RE.match(text.strip())
        if not match:
            if _DATE_RE.match(text.strip()):
                match = _DATETIME_RE.match(text.strip() + " 00:00:00")
            if not match:
                raise MySQLValueError(f"{text!r} is not 'YYYY-MM-DD HH:MM:SS[.ffffff]'")
        y, mo, d, h, mi, s = (int(g) for g in match.groups()[:6])
        frac = (match.group(7) or "").ljust(6, "0")
        if frac[self.fsp :].strip("0"):
            raise MySQLValueError(f"{text!r} has more than {self.fsp} fractional digits")
        _check_date_parts(y, mo, d)
        if h > 23 or mi > 59 or s > 59:
            raise MySQLValueError(f"{text!r}: time of day out of range")
        is_zero = y == mo == d == h == mi == s == 0 and not frac.strip("0")
        if self.base == "timestamp" and not is_zero:
            if 0 in (y, mo, d):
                raise MySQLValueError(f"{text!r}: TIMESTAMP cannot have zero date parts")
            moment = dt.datetime(y, mo, d, h, mi, s, int(frac))
            if not _TIMESTAMP_MIN <= moment <= _TIMESTAMP_MAX:
                raise MySQLValueError(f"{text!r} outside TIMESTAMP's 1970..2038 UTC range")
        out = f"{y:04d}-{mo:02d}-{d:02d} {h:02d}:{mi:02d}:{s:02d}"
        return out + (f".{frac[: self.fsp]}" if self.fsp else "")

    def _time(self, value: Any) -> str:
        if isinstance(value, dt.timedelta):
            micros = (value.days * 86400 + value.seconds) * 1_000_000 + value.microseconds
            sign, micros = ("-", -micros) if micros < 0 else ("", micros)
            secs, frac_i = divmod(micros, 1_000_000)
            text = f"{sign}{secs // 3600}:{secs % 3600 // 60:02d}:{secs % 60:02d}.{frac_i:06d}"
        elif isinstance(value, dt.time):
            text = value.isoformat()
        else:
            text = value.decode() if isinstance(value, bytes) else str(value)
        match = _TIME_RE.match(text.strip())
        if not match:
            raise MySQLValueError(f"{text!r} is not '[-]HHH:MM:SS[.ffffff]'")
        sign = match.group(1) or ""
        h, mi, s = int(match.group(2)), int(match.group(3)), int(match.group(4))
        frac = (match.group(5) or "").ljust(6, "0")
        if frac[self.fsp :].strip("0"):
            raise MySQLValueError(f"{text!r} has more than {self.fsp} fractional digits")
        if mi > 59 or s > 59:
            raise MySQLValueError(f"{text!r}: minutes/seconds out of range")
        if (h, mi, s, int(frac)) > (838, 59, 59, 0):
            raise MySQLValueError(f"{text!r} outside -838:59:59..838:59:59")
        if h == mi == s == 0 and not frac.strip("0"):
            sign = ""
        out = f"{sign}{h:02d}:{mi:02d}:{s:02d}"
        return out + (f".{frac[: self.fsp]}" if self.fsp else "")


@functools.lru_cache(maxsize=4096)
def _parse_cached(column_type: str) -> MySQLType:
    return MySQLType._parse(column_type)


def _bad(value: Any, why: str) -> Any:
    raise MySQLValueError(f"{value!r}: {why}")


def _check_date_parts(y: int, mo: int, d: int) -> None:
    """MySQL (without NO_ZERO_IN_DATE) accepts zero month/day parts, else real dates only."""
    if mo > 12 or d > 31:
        raise MySQLValueError(f"{y:04d}-{mo:02d}-{d:02d} is not a date")
    if y and mo and d:
        dt.date(y, mo, d)  # raises for 2023-02-30


def _date_text(value: Any) -> str:
    if isinstance(value, dt.datetime):
        raise MySQLValueError("give a date, not a datetime")
    if isinstance(value, dt.date):
        return value.isoformat()
    text = (value.decode() if isinstance(value, bytes) else str(value)).strip()
    match = _DATE_RE.match(text)
    if not match:
        raise MySQLValueError(f"{text!r} is not 'YYYY-MM-DD'")
    y, mo, d = (int(g) for g in match.groups())
    _check_date_parts(y, mo, d)
    return text


def datetime_micros(text: str) -> int | None:
    """Canonical DATETIME/TIMESTAMP text → microseconds since the epoch (as UTC).

    Zero and partly-zero values have no timestamp: None (see the module docstring).
    """
    match = _DATETIME_RE.match(text)
    if not match:
        raise MySQLValueError(f"{text!r} is not a stored DATETIME")
    y, mo, d, h, mi, s = (int(g) for g in match.groups()[:6])
    if 0 in (y, mo, d):
        return None
    frac = int((match.group(7) or "").ljust(6, "0"))
    delta = dt.datetime(y, mo, d, h, mi, s, frac) - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def is_exportable_column_name(name: str) -> bool:
    """AWS skips tables whose column names hold any of `, ; { } ( ) \\n \\t =`."""
    return not any(ch in name for ch in ",;{}()\n\t=")
