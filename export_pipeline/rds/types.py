"""MySQL column types → BigQuery types, following MySQL's meaning.

The export writes Parquet with AWS's physical types (DATE and TIME as text,
CHAR as unannotated bytes, DATETIME as TIMESTAMP_MICROS, BIGINT UNSIGNED as
DECIMAL(20,0), …). Those files are loaded into a staging table as they are;
the final table is then built in BigQuery SQL, one SELECT expression per
column. This module decides, from `originalTypeMappings` (the export's
record of each column's MySQL type — the source of truth), the final type
and the expression.

| MySQL | BigQuery | how |
|---|---|---|
| TINYINT … BIGINT (signed or not), YEAR | INT64 | as loaded |
| BIGINT UNSIGNED | NUMERIC | DECIMAL(20,0) as loaded; 18446744073709551615 fits |
| DECIMAL(p,s), s ≤ 9 and p-s ≤ 29 | NUMERIC | as loaded |
| other DECIMAL(p,s) (p > 38 arrives as text) | STRING | exact text |
| FLOAT, DOUBLE | FLOAT64 | as loaded (NaN/±Inf kept) |
| CHAR | STRING | UTF-8 decoded; not UTF-8 (or U+FFFD) → NULL + bytes in `<col>__raw` |
| VARCHAR, TEXT, ENUM, SET | STRING | as loaded |
| JSON | JSON | parsed; text BigQuery cannot parse exactly → NULL + text in `<col>__raw` |
| BINARY, VARBINARY, BLOB, BIT, spatial | BYTES | as loaded |
| DATE | DATE | parsed; zero/invalid dates → NULL + text in `<col>__raw` |
| DATETIME | DATETIME | the UTC wall clock of the exported TIMESTAMP_MICROS |
| TIMESTAMP | TIMESTAMP | as loaded |
| TIME | TIME if every value is in 00:00:00-23:59:59.999999, else STRING | exact text kept |

A `__raw` column is added only when the export holds at least one value its
typed column cannot represent; the count per column is in the asset's
metadata. Nothing is rounded, and nothing fails the load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from export_pipeline.bigquery_types import decimal_fits_numeric

RAW_SUFFIX = "__raw"
REPLACEMENT_CHARACTER = "\ufffd"
_TIME_OF_DAY = r"^([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?$"


class Conversion(StrEnum):
    """How the final column is made from the staging column."""

    AS_LOADED = "as_loaded"  # already the right type (or a plain CAST)
    CHAR_BYTES = "char_bytes"  # BYTES → STRING when valid UTF-8
    DATE_TEXT = "date_text"  # 'YYYY-MM-DD' → DATE
    TIME_TEXT = "time_text"  # 'HH:MM:SS[.ffffff]' → TIME, or the text when any value does not fit
    JSON_TEXT = "json_text"  # JSON text → JSON
    DATETIME_WALL_CLOCK = "datetime_wall_clock"  # TIMESTAMP (UTC) → DATETIME


# Conversions that can meet a value the target type cannot hold.
FALLIBLE = frozenset(
    {Conversion.CHAR_BYTES, Conversion.DATE_TEXT, Conversion.TIME_TEXT, Conversion.JSON_TEXT}
)

_TYPE = re.compile(
    r"^\s*(?P<base>[a-z ]+?)\s*(?:\((?P<args>[^)]*)\))?"
    r"\s*(?P<mods>(?:unsigned|signed|zerofill|\s)*)$",
    re.IGNORECASE,
)
_INTEGERS = {"tinyint", "smallint", "mediumint", "int", "integer", "bigint"}
_DECIMALS = {"decimal", "numeric", "dec", "fixed"}
_FLOATS = {"float", "double", "double precision", "real"}
_TEXTS = {
    "varchar",
    "tinytext",
    "text",
    "mediumtext",
    "longtext",
    "enum",
    "set",
    "char varying",
    "national varchar",
    "nvarchar",
}
_CHARS = {"char", "nchar", "national char", "character"}
_BYTES = {
    "binary",
    "varbinary",
    "tinyblob",
    "blob",
    "mediumblob",
    "longblob",
    "bit",
    "geometry",
    "point",
    "linestring",
    "polygon",
    "multipoint",
    "multilinestring",
    "multipolygon",
    "geometrycollection",
    "geomcollection",
}


@dataclass(frozen=True)
class MySQLType:
    """A parsed `originalType` such as `decimal(20,10)` or `bigint unsigned`."""

    base: str
    args: tuple[str, ...] = ()
    unsigned: bool = False

    @classmethod
    def parse(cls, original_type: str) -> MySQLType:
        text = original_type.strip().lower()
        # ENUM/SET argument lists may hold parentheses inside quotes: only the base matters.
        for listed in ("enum", "set"):
            if text.startswith(listed + "(") or text == listed:
                return cls(base=listed)
        match = _TYPE.match(text)
        if not match:
            return cls(base=text)
        args = tuple(a.strip() for a in (match["args"] or "").split(",") if a.strip())
        return cls(base=match["base"].strip(), args=args, unsigned="unsigned" in match["mods"])

    def precision_scale(self) -> tuple[int, int]:
        """DECIMAL's (p, s); MySQL's defaults are (10, 0)."""
        precision = int(self.args[0]) if self.args else 10
        scale = int(self.args[1]) if len(self.args) > 1 else 0
        return precision, scale


@dataclass(frozen=True)
class ColumnMapping:
    """One column: its MySQL type, staging type and what the final table holds."""

    source_name: str
    mysql_type: str
    staging_type: str
    target_type: str
    conversion: Conversion

    @property
    def original_type(self) -> str:
        return self.mysql_type

    @property
    def fallible(self) -> bool:
        return self.conversion in FALLIBLE

    @property
    def whole_column_text(self) -> bool:
        """TIME: one value outside a BigQuery TIME keeps the whole column as MySQL's text."""
        return self.conversion is Conversion.TIME_TEXT

    @property
    def mode(self) -> str:
        return "NULLABLE"

    @property
    def fallback(self) -> None:
        """MySQL has no column form to fall back to (TIME's text is `whole_column_text`)."""
        return None

    @property
    def raw_type(self) -> str:
        """Type of the `__raw` column kept beside it for unrepresentable values."""
        return "BYTES" if self.conversion is Conversion.CHAR_BYTES else "STRING"


def map_column(source_name: str, original_type: str, staging: str) -> ColumnMapping:
    """The final BigQuery type and conversion for one MySQL column."""
    parsed = MySQLType.parse(original_type)
    base = parsed.base

    def mapping(target: str, conversion: Conversion = Conversion.AS_LOADED) -> ColumnMapping:
        return ColumnMapping(source_name, original_type, staging, target, conversion)

    if base in _INTEGERS:
        return mapping("NUMERIC" if base == "bigint" and parsed.unsigned else "INT64")
    if base == "year":
        return mapping("INT64")
    if base in _DECIMALS:
        precision, scale = parsed.precision_scale()
        return mapping("NUMERIC" if decimal_fits_numeric(precision, scale) else "STRING")
    if base in _FLOATS:
        return mapping("FLOAT64")
    if base in _CHARS:
        if staging == "BYTES":
            return mapping("STRING", Conversion.CHAR_BYTES)
        return mapping("STRING")
    if base in _TEXTS:
        return mapping("STRING")
    if base == "json":
        return mapping(
            "JSON", Conversion.JSON_TEXT if staging == "STRING" else Conversion.AS_LOADED
        )
    if base in _BYTES:
        return mapping("BYTES")
    if base == "date":
        return mapping(
            "DATE", Conversion.DATE_TEXT if staging == "STRING" else Conversion.AS_LOADED
        )
    if base == "time":
        return mapping(
            "TIME", Conversion.TIME_TEXT if staging == "STRING" else Conversion.AS_LOADED
        )
    if base == "datetime":
        if staging == "TIMESTAMP":
            return mapping("DATETIME", Conversion.DATETIME_WALL_CLOCK)
        return mapping("DATETIME")
    if base == "timestamp":
        return mapping("TIMESTAMP")
    # A type this table does not know (a future MySQL type): keep what AWS wrote.
    return mapping(staging)


def expected_staging_type(original_type: str) -> str:
    """The staging type AWS's Parquet mapping gives a MySQL type.

    Only needed for a table the export wrote no Parquet file for (nothing to
    read a schema from): DATE, TIME and JSON are text, CHAR unannotated bytes,
    DATETIME a UTC TIMESTAMP_MICROS; everything else loads as its final type.
    """
    probe = map_column("c", original_type, "STRING")
    if probe.target_type in ("DATE", "TIME", "JSON"):
        return "STRING"
    if probe.conversion is Conversion.AS_LOADED and probe.target_type == "STRING":
        base = MySQLType.parse(original_type).base
        return "BYTES" if base in _CHARS else "STRING"
    if probe.target_type == "DATETIME":
        return "TIMESTAMP"
    return probe.target_type


def typed_expression(mapping: ColumnMapping, column_sql: str) -> str:
    """SQL for the typed value; NULL where the value cannot be represented."""
    conversion = mapping.conversion
    if conversion is Conversion.CHAR_BYTES:
        # BigQuery's SAFE_CONVERT_BYTES_TO_STRING puts U+FFFD where the bytes are
        # not UTF-8 (SAFE_CAST would give NULL, but the emulator renders escapes
        # there): a value that decoded with a replacement character is treated as
        # not representable, so the typed column never holds an altered string.
        decoded = f"SAFE_CONVERT_BYTES_TO_STRING({column_sql})"
        return f"IF(STRPOS({decoded}, '{REPLACEMENT_CHARACTER}') > 0, NULL, {decoded})"
    if conversion is Conversion.DATE_TEXT:
        return f"SAFE.PARSE_DATE('%Y-%m-%d', {column_sql})"
    if conversion is Conversion.TIME_TEXT:
        # MySQL TIME spans -838:59:59..838:59:59; only 00:00:00-23:59:59.999999 is a
        # BigQuery TIME. A pattern guard keeps CAST from ever failing the query.
        guard = f"REGEXP_CONTAINS({column_sql}, r'{_TIME_OF_DAY}')"
        return f"IF({guard}, CAST({column_sql} AS TIME), NULL)"
    if conversion is Conversion.JSON_TEXT:
        return f"SAFE.PARSE_JSON({column_sql})"
    if conversion is Conversion.DATETIME_WALL_CLOCK:
        return f"DATETIME({column_sql}, 'UTC')"
    if mapping.staging_type == mapping.target_type:
        return column_sql
    if mapping.staging_type == "DATETIME" and mapping.target_type == "TIMESTAMP":
        return f"TIMESTAMP({column_sql}, 'UTC')"
    return f"CAST({column_sql} AS {mapping.target_type})"
