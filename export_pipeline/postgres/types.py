"""PostgreSQL column types → BigQuery types, following PostgreSQL's meaning.

AWS's snapshot export writes PostgreSQL's primitive types natively in Parquet
(BIGINT as INT64, INTEGER and SMALLINT as INT32, REAL as FLOAT, DOUBLE
PRECISION as DOUBLE, BOOLEAN, BYTEA as BINARY) and every other type as a UTF-8
string in PostgreSQL's own text form. Those files are loaded into a staging
table as they are; the final table is built in BigQuery SQL, one expression
per column, decided here from `originalTypeMappings` (the export's record of
each column's PostgreSQL type, as `format_type()` spells it).

| PostgreSQL | BigQuery | how |
|---|---|---|
| smallint, integer, bigint, oid | INT64 | as loaded |
| real, double precision | FLOAT64 | as loaded (NaN, ±Infinity kept) |
| numeric(p,s), s ≤ 9, p-s ≤ 29 | NUMERIC | parsed; NaN, ±Infinity → `__raw` |
| other numeric(p,s) | STRING | exact text |
| numeric | NUMERIC if every value of the export fits, else STRING | exact |
| money | NUMERIC if every value reads `[-]$d,ddd.dd`, else STRING | exact |
| boolean | BOOL | as loaded |
| bytea | BYTES | as loaded |
| char (padded), varchar, text, uuid, inet, enum, … | STRING | as loaded |
| json | JSON | parsed; duplicate keys (`json_keys`), unparsable → `__raw` |
| jsonb | JSON | parsed; what BigQuery cannot parse → `__raw` |
| hstore, <schema>.hstore | JSON | `hstore`: {key: string or null}; no hstore text → `__raw` |
| date | DATE | parsed; ±infinity, BC, year > 9999 → `__raw` |
| timestamp | DATETIME | parsed; as date |
| timestamptz | TIMESTAMP | parsed (the text carries its UTC offset); as date |
| time | TIME | parsed; 24:00:00 → `__raw` |
| arrays of a scalar | ARRAY<T> if every value fits (1-D, no NULL element) | else JSON |
| arrays of json, ranges, … | JSON | `[0:1]={…}` → `__raw` |
| int4/int8/num/ts/tstz/daterange | JSON | `ranges`: lower, upper, lower_inc, upper_inc, empty |
| timetz, interval, multiranges, geometric, other | STRING | PostgreSQL's text |

`__raw` means: the typed column holds NULL and `<col>__raw` the exact text.
Arrays (`arrays`): ARRAY<T> only where the export does not hold both NULL
and `{}` (REPEATED cannot be NULL); the JSON form keeps them apart.
docs/postgresql.md has the full table and the reasons.

A `__raw` column is added only when the export holds at least one value its
typed column cannot hold; the count per column is in the asset's metadata.
Nothing is rounded, and nothing fails the load.

No expression here uses CAST to NUMERIC: bqemulator 1.4.0 turns such casts
into DECIMAL(18,3) in a query that also calls a `SAFE.` function (as JSON
columns do); `PARSE_NUMERIC` behind a pattern guard is exact on both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from export_pipeline.bigquery_types import (
    BOOL,
    BYTES,
    DATE,
    DATETIME,
    FLOAT64,
    INT64,
    JSON,
    NUMERIC,
    STRING,
    TIME,
    TIMESTAMP,
    decimal_fits_numeric,
)
from export_pipeline.postgres import arrays, hstore, json_keys, ranges

RAW_SUFFIX = "__raw"

# Text forms BigQuery can hold, per conversion (PostgreSQL's output with DateStyle ISO).
_NUMBER = r"^-?[0-9]{1,29}(\.[0-9]{1,9})?$"
_MONEY = r"^-?\$[0-9]{1,3}(,[0-9]{3}){0,8}\.[0-9]{2}$"  # at most 27 integer digits
_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_WALL_CLOCK = r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?"
_DATETIME = rf"^{_WALL_CLOCK}$"
_TIMESTAMP = rf"^{_WALL_CLOCK}[+-][0-9]{{2}}(:[0-9]{{2}})?$"
_TIME_OF_DAY = r"^([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?$"


class Conversion(StrEnum):
    """How the final column is made from the staging column."""

    AS_LOADED = "as_loaded"
    NUMERIC_TEXT = "numeric_text"  # exact decimal text → NUMERIC
    MONEY_TEXT = "money_text"  # '$1,234.56' → NUMERIC
    JSON_TEXT = "json_text"
    JSON_UNIQUE_KEYS_TEXT = "json_unique_keys_text"  # json: duplicate keys → `__raw`
    RANGE_TEXT = "range_text"  # '[1,10)' → {"lower": 1, "upper": 10, …}
    HSTORE_TEXT = "hstore_text"  # '"a"=>"1", "b"=>NULL' → {"a": "1", "b": null}
    DATE_TEXT = "date_text"
    DATETIME_TEXT = "datetime_text"
    TIMESTAMP_TEXT = "timestamp_text"
    TIME_TEXT = "time_text"
    ARRAY_TYPED = "array_typed"  # '{1,2}' → ARRAY<T> (REPEATED), else the JSON form
    ARRAY_JSON = "array_json"  # '{{1,2},{3,NULL}}' → JSON array


_INTEGERS = {
    "smallint",
    "integer",
    "bigint",
    "int2",
    "int4",
    "int8",
    "int",
    "oid",
    "smallserial",
    "serial",
    "bigserial",
}
_FLOATS = {"real", "double precision", "float4", "float8"}
_BOOLS = {"boolean", "bool"}
_BYTES = {"bytea"}
_NUMERICS = {"numeric", "decimal"}
_JSONS = {"json", "jsonb"}
_DATES = {"date"}
_DATETIMES = {"timestamp", "timestamp without time zone"}
_TIMESTAMPS = {"timestamptz", "timestamp with time zone"}
_TIMES = {"time", "time without time zone"}
_MODIFIER = re.compile(r"\(([^)]*)\)")
_ARRAY_SUFFIX = re.compile(r"(\s*\[[0-9]*\])+$")
_INT64_TEXT = r"^-?[0-9]{1,19}$"
_HEX_BYTES = r"^\\x([0-9a-fA-F]{2})*$"
# Element types whose array delimiter (pg_type.typdelim) is not a comma.
_SEMICOLON_DELIMITED = {"box"}
# Element types an ARRAY<T> can hold, with how an element's text becomes T (AS_LOADED).
_ELEMENT_TARGETS = {INT64, FLOAT64, BOOL, BYTES, STRING, NUMERIC, DATE, DATETIME, TIMESTAMP, TIME}


@dataclass(frozen=True)
class PostgresType:
    """A parsed `originalType` such as `numeric(12,2)` or `timestamp(3) with time zone`."""

    base: str  # modifiers removed: "numeric", "timestamp with time zone"
    args: tuple[int, ...] = ()
    array: bool = False

    @classmethod
    def parse(cls, original_type: str) -> PostgresType:
        text = " ".join(original_type.strip().lower().split())
        array = text.endswith("[]")
        text = text.rstrip("[]").strip()
        args: tuple[int, ...] = ()
        match = _MODIFIER.search(text)
        if match:
            try:
                args = tuple(int(a) for a in match[1].split(","))
            except ValueError:
                args = ()
            text = " ".join(_MODIFIER.sub("", text).split())
        return cls(base=text, args=args, array=array)


@dataclass(frozen=True)
class ColumnMapping:
    """One column: its PostgreSQL type, staging type and what the final table holds."""

    source_name: str
    original_type: str
    staging_type: str
    target_type: str
    conversion: Conversion
    whole_column_text: bool = False  # one value that does not fit → the column is text
    mode: str = "NULLABLE"  # REPEATED for ARRAY<T>
    # Arrays: the element's own mapping, and the whole-column form used when some
    # value of the export does not fit this one (ARRAY<T> → JSON).
    element: ColumnMapping | None = None
    fallback: ColumnMapping | None = None
    delimiter: str = ","

    @property
    def fallible(self) -> bool:
        return self.conversion is not Conversion.AS_LOADED

    @property
    def raw_type(self) -> str:
        return STRING


def map_column(source_name: str, original_type: str, staging: str) -> ColumnMapping:
    """The final BigQuery type and conversion for one PostgreSQL column."""
    parsed = PostgresType.parse(original_type)
    base = parsed.base

    def mapping(
        target: str, conversion: Conversion = Conversion.AS_LOADED, whole: bool = False
    ) -> ColumnMapping:
        if conversion is not Conversion.AS_LOADED and staging != STRING:
            conversion = Conversion.AS_LOADED  # already typed by the export
        return ColumnMapping(source_name, original_type, staging, target, conversion, whole)

    if parsed.array:
        return _array_mapping(source_name, original_type, staging) or mapping(staging)
    if base in _INTEGERS and staging == INT64:
        return mapping(INT64)
    if base in _FLOATS and staging == FLOAT64:
        return mapping(FLOAT64)
    if base in _BOOLS and staging == BOOL:
        return mapping(BOOL)
    if base in _BYTES:
        return mapping(staging)
    if base in _NUMERICS:
        if not parsed.args:
            return mapping(NUMERIC, Conversion.NUMERIC_TEXT, whole=True)
        precision = parsed.args[0]
        scale = parsed.args[1] if len(parsed.args) > 1 else 0
        if decimal_fits_numeric(precision, scale):
            return mapping(NUMERIC, Conversion.NUMERIC_TEXT)
        return mapping(STRING)
    if base == "money":
        return mapping(NUMERIC, Conversion.MONEY_TEXT, whole=True)
    if base == "json":
        return mapping(JSON, Conversion.JSON_UNIQUE_KEYS_TEXT)
    if base in _JSONS:
        return mapping(JSON, Conversion.JSON_TEXT)
    if hstore.is_hstore(base):
        return mapping(JSON, Conversion.HSTORE_TEXT)
    if base in ranges.RANGES:
        return mapping(JSON, Conversion.RANGE_TEXT)
    if base in _DATES:
        return mapping(DATE, Conversion.DATE_TEXT)
    if base in _DATETIMES:
        return mapping(DATETIME, Conversion.DATETIME_TEXT)
    if base in _TIMESTAMPS:
        return mapping(TIMESTAMP, Conversion.TIMESTAMP_TEXT)
    if base in _TIMES:
        return mapping(TIME, Conversion.TIME_TEXT)
    # Text, enums, uuid, network, timetz, interval, ranges, geometric, composite, …:
    # PostgreSQL's own text form, or whatever the export wrote.
    return mapping(staging)


def element_type(original_type: str) -> str:
    """The element type of an array type: `numeric(5,2)[]` → `numeric(5,2)`."""
    return _ARRAY_SUFFIX.sub("", original_type.strip())


def _array_mapping(source_name: str, original_type: str, staging: str) -> ColumnMapping | None:
    """ARRAY<T> with JSON as the whole-column fallback, or JSON alone; None: not text.

    An element type an ARRAY cannot hold (json, jsonb, ranges, …) gives the
    JSON form directly. Which form a column gets is decided over the export's
    values by the loader (`fallback`).
    """
    if staging != STRING:
        return None
    element_original = element_type(original_type)
    element = map_column(source_name, element_original, expected_staging_type(element_original))
    delimiter = ";" if PostgresType.parse(element_original).base in _SEMICOLON_DELIMITED else ","
    as_json = ColumnMapping(
        source_name,
        original_type,
        staging,
        JSON,
        Conversion.ARRAY_JSON,
        element=element,
        delimiter=delimiter,
    )
    if element.target_type not in _ELEMENT_TARGETS:
        return as_json
    return ColumnMapping(
        source_name,
        original_type,
        staging,
        element.target_type,
        Conversion.ARRAY_TYPED,
        mode="REPEATED",
        element=element,
        fallback=as_json,
        delimiter=delimiter,
    )


def _element_typed(element: ColumnMapping, text_sql: str) -> str:
    """SQL: an array element's text as its typed value, NULL where it does not fit."""
    if element.conversion is not Conversion.AS_LOADED:
        return typed_expression(element, text_sql)
    target = element.target_type
    if target == INT64:
        return _guarded(text_sql, _INT64_TEXT, f"SAFE_CAST({text_sql} AS INT64)")
    if target == FLOAT64:
        # PostgreSQL spells the infinities 'Infinity'; BigQuery's cast reads 'inf'.
        return (
            f"CASE {text_sql} WHEN 'Infinity' THEN CAST('inf' AS FLOAT64) "
            f"WHEN '-Infinity' THEN CAST('-inf' AS FLOAT64) "
            f"ELSE SAFE_CAST({text_sql} AS FLOAT64) END"
        )
    if target == BOOL:
        return f"CASE {text_sql} WHEN 't' THEN TRUE WHEN 'f' THEN FALSE END"
    if target == BYTES:
        return _guarded(text_sql, _HEX_BYTES, f"FROM_HEX(SUBSTR({text_sql}, 3))")
    return text_sql


def _element_fits(element: ColumnMapping, text_sql: str) -> str:
    guard = fits_expression(element, text_sql)
    return guard or f"({_element_typed(element, text_sql)}) IS NOT NULL"


def _element_json(element: ColumnMapping, text_sql: str) -> str:
    """SQL: an array element's text as JSON text: integers and booleans as JSON's own,
    every other element as a JSON string of PostgreSQL's exact text."""
    as_string = arrays.json_string(text_sql)
    if element.conversion is Conversion.AS_LOADED and element.target_type == INT64:
        return f"IF(REGEXP_CONTAINS({text_sql}, r'{_INT64_TEXT}'), {text_sql}, {as_string})"
    if element.conversion is Conversion.AS_LOADED and element.target_type == BOOL:
        return f"CASE {text_sql} WHEN 't' THEN 'true' WHEN 'f' THEN 'false' ELSE {as_string} END"
    return as_string


def expected_staging_type(original_type: str) -> str:
    """The staging type AWS's Parquet mapping gives a PostgreSQL type (no file to read)."""
    parsed = PostgresType.parse(original_type)
    if parsed.array:
        return STRING
    if parsed.base in _INTEGERS:
        return INT64
    if parsed.base in _FLOATS:
        return FLOAT64
    if parsed.base in _BOOLS:
        return BOOL
    if parsed.base in _BYTES:
        return BYTES
    return STRING


def _guarded(column_sql: str, pattern: str, typed: str) -> str:
    return f"IF(REGEXP_CONTAINS({column_sql}, r'{pattern}'), {typed}, NULL)"


# Conversions whose pattern guard alone decides: every text it admits parses.
_GUARD_DECIDES = {
    Conversion.NUMERIC_TEXT: _NUMBER,
    Conversion.MONEY_TEXT: _MONEY,
    Conversion.TIME_TEXT: _TIME_OF_DAY,
    Conversion.HSTORE_TEXT: hstore.HSTORE,
}


def fits_expression(mapping: ColumnMapping, column_sql: str) -> str | None:
    """The pattern guard, where it alone decides whether the typed value exists.

    Counting misfits with it instead of parsing every value is the same count
    (the guard admits only texts that parse) and much cheaper where parsing
    is costly (NUMERIC from text, in bqemulator). None: count the typed value.
    """
    if mapping.conversion is Conversion.ARRAY_TYPED:
        element = mapping.element
        assert element is not None
        return arrays.array_fits(
            column_sql, mapping.delimiter, lambda text: _element_fits(element, text)
        )
    pattern = _GUARD_DECIDES.get(mapping.conversion)
    return f"REGEXP_CONTAINS({column_sql}, r'{pattern}')" if pattern else None


def typed_expression(mapping: ColumnMapping, column_sql: str) -> str:
    """SQL for the typed value; NULL where the value cannot be represented.

    Each parse sits behind a pattern of the text forms the type can hold, so
    no value can make the query fail.
    """
    c = column_sql
    conversion = mapping.conversion
    if conversion is Conversion.NUMERIC_TEXT:
        return _guarded(c, _NUMBER, f"PARSE_NUMERIC({c})")
    if conversion is Conversion.MONEY_TEXT:
        return _guarded(c, _MONEY, f"PARSE_NUMERIC(REPLACE(REPLACE({c}, '$', ''), ',', ''))")
    if conversion is Conversion.JSON_TEXT:
        return f"SAFE.PARSE_JSON({c})"
    if conversion is Conversion.JSON_UNIQUE_KEYS_TEXT:
        return f"IF({json_keys.has_duplicate_keys(c)}, NULL, SAFE.PARSE_JSON({c}))"
    if conversion in (Conversion.ARRAY_TYPED, Conversion.ARRAY_JSON):
        element = mapping.element
        assert element is not None
        if conversion is Conversion.ARRAY_TYPED:
            return arrays.typed_array(
                c, mapping.delimiter, lambda text: _element_typed(element, text)
            )
        return arrays.json_array(c, mapping.delimiter, lambda text: _element_json(element, text))
    if conversion is Conversion.RANGE_TEXT:
        return ranges.range_json(c, PostgresType.parse(mapping.original_type).base)
    if conversion is Conversion.HSTORE_TEXT:
        return hstore.hstore_json(c)
    if conversion is Conversion.DATE_TEXT:
        return _guarded(c, _DATE, f"SAFE.PARSE_DATE('%Y-%m-%d', {c})")
    if conversion is Conversion.DATETIME_TEXT:
        return _guarded(c, _DATETIME, f"SAFE_CAST({c} AS DATETIME)")
    if conversion is Conversion.TIMESTAMP_TEXT:
        return _guarded(c, _TIMESTAMP, f"TIMESTAMP({c})")
    if conversion is Conversion.TIME_TEXT:
        return _guarded(c, _TIME_OF_DAY, f"CAST({c} AS TIME)")
    if mapping.staging_type == mapping.target_type:
        return c
    return f"CAST({c} AS {mapping.target_type})"
