"""A BigQuery schema from a Parquet file's own schema (for Parquet passed through untouched).

RDS snapshot exports write Parquet typed by AWS's MySQL mapping; the pipeline
loads those files as they are, so the files' schema is the source of truth.
BigQuery can infer a schema from Parquet, but the emulator cannot (a Parquet
load into a missing table without a schema fails there) and inference hides
decisions worth making explicitly. So the schema is derived here, following
BigQuery's documented Parquet conversions, and staging tables are created
with it before loading:

| Parquet (as Arrow reads it)           | BigQuery                                       |
|---------------------------------------|------------------------------------------------|
| INT32/INT64, INT(8/16/32, signed/uns.)| INT64                                          |
| INT(64, unsigned)                     | error (no lossless load target)                |
| DOUBLE / FLOAT                        | FLOAT64                                        |
| BOOLEAN                               | BOOL                                           |
| DECIMAL(p,s), s ≤ 9 and p - s ≤ 29    | NUMERIC                                        |
| other DECIMAL(p,s)                    | STRING (decimal text; lossless)                |
| BYTE_ARRAY STRING (UTF8), ENUM, JSON  | STRING                                         |
| BYTE_ARRAY / FIXED_LEN without annot. | BYTES                                          |
| DATE                                  | DATE                                           |
| TIME (millis/micros)                  | TIME                                           |
| TIMESTAMP (millis/micros), UTC        | TIMESTAMP                                      |
| TIMESTAMP not adjusted to UTC         | DATETIME                                       |
| LIST<x>                               | REPEATED x (with `enable_list_inference`)      |
| group (struct)                        | RECORD                                         |

A DECIMAL that does not fit NUMERIC goes to STRING, not BIGNUMERIC: the
load job's `decimal_target_types` is `["NUMERIC", "STRING"]` so real
BigQuery picks the same, and the emulator has no BIGNUMERIC (DuckDB's DECIMAL
stops at 38 digits). BIGNUMERIC would be a valid choice on BigQuery alone.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from google.cloud.bigquery import SchemaField

from export_pipeline.bigquery_types import decimal_fits_numeric

_COLUMN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,299}$")


class ParquetSchemaError(ValueError):
    """A Parquet column has no lossless BigQuery type; the message names it."""


def _field_type(arrow_type: pa.DataType, where: str) -> tuple[str, list[SchemaField]]:
    """BigQuery (type, sub-fields) for one non-list Arrow type."""
    t = arrow_type
    if pa.types.is_dictionary(t):
        return _field_type(t.value_type, where)
    if pa.types.is_uint64(t):
        raise ParquetSchemaError(
            f"{where}: unsigned 64-bit integers exceed INT64; write them as DECIMAL(20,0)"
        )
    if pa.types.is_integer(t):
        return "INT64", []
    if pa.types.is_floating(t):
        return "FLOAT64", []
    if pa.types.is_boolean(t):
        return "BOOL", []
    if pa.types.is_decimal(t):
        return ("NUMERIC" if decimal_fits_numeric(t.precision, t.scale) else "STRING"), []
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "STRING", []
    if (
        pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t)
        or pa.types.is_binary_view(t)
    ):
        return "BYTES", []
    if pa.types.is_date(t):
        return "DATE", []
    if pa.types.is_time(t):
        if t.unit == "ns":
            raise ParquetSchemaError(f"{where}: TIME with nanoseconds has no exact BigQuery type")
        return "TIME", []
    if pa.types.is_timestamp(t):
        if t.unit == "ns":
            raise ParquetSchemaError(
                f"{where}: TIMESTAMP with nanoseconds would be truncated to microseconds"
            )
        return ("TIMESTAMP" if t.tz is not None else "DATETIME"), []
    if pa.types.is_struct(t):
        return "RECORD", [_schema_field(t.field(i), where) for i in range(t.num_fields)]
    if pa.types.is_null(t):
        # A column with no values at all (Arrow null type): any nullable type
        # holds it; STRING is the one that never needs widening later.
        return "STRING", []
    raise ParquetSchemaError(f"{where}: Parquet/Arrow type {t} has no BigQuery equivalent here")


def _schema_field(field: pa.Field, parent: str = "") -> SchemaField:
    where = f"column {parent}{field.name!r}"
    if not _COLUMN_NAME.match(field.name):
        raise ParquetSchemaError(
            f"{where}: not a valid BigQuery column name (letters, digits, underscores; "
            "not starting with a digit; at most 300 characters)"
        )
    t = field.type
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        element = t.value_type
        if pa.types.is_list(element) or pa.types.is_large_list(element):
            raise ParquetSchemaError(f"{where}: lists of lists have no BigQuery equivalent")
        field_type, subfields = _field_type(element, where)
        return SchemaField(field.name, field_type, mode="REPEATED", fields=subfields)
    if pa.types.is_map(t):
        raise ParquetSchemaError(f"{where}: Parquet MAP columns are not supported")
    field_type, subfields = _field_type(t, where)
    # Every column is NULLABLE: REQUIRED would make a later load of a file
    # that has a null there fail, and gains nothing for analytics.
    return SchemaField(field.name, field_type, mode="NULLABLE", fields=subfields)


def bigquery_schema_from_parquet(schema: pa.Schema) -> list[SchemaField]:
    """The BigQuery schema a Parquet file (its Arrow schema) loads into without loss."""
    fields = [_schema_field(schema.field(i)) for i in range(len(schema))]
    seen: dict[str, str] = {}
    for f in fields:
        other = seen.setdefault(f.name.lower(), f.name)
        if other != f.name:
            raise ParquetSchemaError(
                f"columns {other!r} and {f.name!r} differ only in case; BigQuery column "
                "names are case-insensitive"
            )
    return fields


def bigquery_schema_of_files(files: list[Path]) -> list[SchemaField]:
    """The BigQuery schema of a set of Parquet files, which must all agree.

    Reads only each file's footer. Different schemas (a column typed
    differently in one batch) are an error naming both files: loading them
    into one table would fail or convert silently.
    """
    if not files:
        raise ParquetSchemaError("no Parquet files given: nothing to derive a schema from")
    first: list[SchemaField] | None = None
    first_file: Path | None = None
    for path in files:
        try:
            schema = bigquery_schema_from_parquet(pq.read_schema(path))
        except ParquetSchemaError as error:
            raise ParquetSchemaError(f"{path}: {error}") from error
        if first is None:
            first, first_file = schema, path
        elif [f.to_api_repr() for f in schema] != [f.to_api_repr() for f in first]:
            raise ParquetSchemaError(
                f"{path} has a different schema than {first_file}: "
                f"{[(f.name, f.field_type, f.mode) for f in schema]} vs "
                f"{[(f.name, f.field_type, f.mode) for f in first]}"
            )
    assert first is not None
    return first
