"""Small, safe pieces of GoogleSQL: literals, column types, casts, table OPTIONS.

Values go into queries as query parameters wherever BigQuery allows them.
DDL `OPTIONS(...)` (descriptions, labels) is where it does not, so those
strings are written as escaped literals by `string_literal`; identifiers only
ever pass through `export_pipeline.naming.quote_identifier`.
"""

from __future__ import annotations

from google.cloud.bigquery import SchemaField

from export_pipeline.bigquery_types import NUMERIC_FULL
from export_pipeline.naming import quote_identifier

# Legacy names the REST API reports → the GoogleSQL names DDL and CAST accept.
_STANDARD_TYPE = {
    "INTEGER": "INT64",
    "INT64": "INT64",
    "FLOAT": "FLOAT64",
    "FLOAT64": "FLOAT64",
    "BOOLEAN": "BOOL",
    "BOOL": "BOOL",
    "RECORD": "STRUCT",
    "STRUCT": "STRUCT",
    "NUMERIC": "NUMERIC",
    "BIGNUMERIC": "BIGNUMERIC",
    "STRING": "STRING",
    "BYTES": "BYTES",
    "DATE": "DATE",
    "DATETIME": "DATETIME",
    "TIME": "TIME",
    "TIMESTAMP": "TIMESTAMP",
    "JSON": "JSON",
    "GEOGRAPHY": "GEOGRAPHY",
    "INTERVAL": "INTERVAL",
}


def standard_type(field_type: str) -> str:
    """GoogleSQL name of a schema field type (`INTEGER` → `INT64`, `RECORD` → `STRUCT`)."""
    try:
        return _STANDARD_TYPE[field_type.upper()]
    except KeyError:
        raise ValueError(f"unknown BigQuery column type {field_type!r}") from None


def string_literal(text: str) -> str:
    """A GoogleSQL double-quoted string literal holding exactly `text`."""
    out = []
    for char in text:
        if char == "\\":
            out.append("\\\\")
        elif char == '"':
            out.append('\\"')
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def element_type(field: SchemaField) -> str:
    """The GoogleSQL type of one value of `field`, ignoring REPEATED (STRUCT spelled out)."""
    base = standard_type(field.field_type)
    if base == "STRUCT":
        inner = ", ".join(
            f"{quote_identifier(sub.name)} {column_type(sub)}" for sub in field.fields
        )
        return f"STRUCT<{inner}>"
    return base


def column_type(field: SchemaField) -> str:
    """The GoogleSQL type of `field` as a column: `ARRAY<…>` when REPEATED."""
    inner = element_type(field)
    return f"ARRAY<{inner}>" if field.mode == "REPEATED" else inner


def cast_to(expression: str, field: SchemaField) -> str:
    """`expression` cast to `field`'s scalar type (unchanged for JSON, STRUCT and arrays).

    NUMERIC is cast as `NUMERIC(38, 9)`, the full NUMERIC range and scale
    spelled out: BigQuery treats it as plain NUMERIC, while bqemulator 1.4.0
    translates a bare `NUMERIC` in SQL to DuckDB `DECIMAL(18,3)` and would
    round to 3 decimals or fail on large values.
    """
    base = standard_type(field.field_type)
    if field.mode == "REPEATED" or base in ("STRUCT", "JSON", "GEOGRAPHY", "INTERVAL"):
        return expression
    if base == "NUMERIC":
        return f"CAST({expression} AS {NUMERIC_FULL})"
    return f"CAST({expression} AS {base})"


def table_options(
    description: str | None,
    labels: dict[str, str] | None,
    extra: dict[str, str] | None = None,
) -> str:
    """`OPTIONS(description=…, labels=[…], <extra>)`, or "" when there is nothing to set.

    `extra`: further options, name -> value already written as GoogleSQL
    (`layout.TableLayout.options`: CMEK, partition options).
    """
    options = []
    if description is not None:
        options.append(f"description={string_literal(description)}")
    if labels:
        pairs = ", ".join(
            f"({string_literal(k)}, {string_literal(v)})" for k, v in sorted(labels.items())
        )
        options.append(f"labels=[{pairs}]")
    options.extend(f"{name}={value}" for name, value in (extra or {}).items())
    return f"OPTIONS({', '.join(options)})" if options else ""
