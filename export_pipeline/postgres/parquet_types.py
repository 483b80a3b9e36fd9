"""The Parquet type AWS writes for each PostgreSQL type, and the check that a file holds it.

AWS's PostgreSQL table
(https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_ExportSnapshot.data-types.html)
writes the primitive types natively and every other type as a UTF-8 string
in PostgreSQL's text form. The loader types each final column from the
PostgreSQL type in `originalTypeMappings` and converts the staged values to
it, so a file whose column holds another type would be converted silently
(DOUBLE 1.5 in an `integer` column read as 2, a native DATE parsed as text
nowhere). Before anything is loaded, every column of a table's files must
hold what AWS writes for its type (as Arrow reads the Parquet footer):

| PostgreSQL type                           | Parquet (Arrow)                         |
|-------------------------------------------|-----------------------------------------|
| bigint (int8, bigserial)                  | INT64                                   |
| integer (int4, serial)                    | INT32                                   |
| smallint (int2, smallserial)              | INT32 annotated INT(16) (or plain INT32)|
| oid (not in AWS's table)                  | an integer, or STRING                   |
| real (float4)                             | FLOAT                                   |
| double precision (float8)                 | DOUBLE                                  |
| boolean                                   | BOOLEAN                                 |
| bytea                                     | BINARY (unannotated)                    |
| arrays, numeric, money, text types, json, | STRING                                  |
| dates and times, interval, uuid, network, |                                         |
| bit strings, ranges, geometric, tsvector  |                                         |
| a type not named here (enum, composite)   | anything (loaded as AWS wrote it)       |

A column without values (Arrow's null type) holds nothing to convert and
is accepted.
"""

from __future__ import annotations

import pyarrow as pa

from export_pipeline.postgres.ranges import RANGES
from export_pipeline.postgres.types import PostgresType
from export_pipeline.rds.parquet_types import ExpectedParquetType, disagreement, is_bytes, is_text

_INT64 = {"bigint", "int8", "bigserial"}
_INT32 = {"integer", "int4", "int", "serial"}
_INT16 = {"smallint", "int2", "smallserial"}
_TEXT = {
    "numeric",
    "decimal",
    "money",
    "character",
    "char",
    "bpchar",
    "character varying",
    "varchar",
    "text",
    "citext",
    "name",
    "uuid",
    "inet",
    "cidr",
    "macaddr",
    "macaddr8",
    "xml",
    "bit",
    "bit varying",
    "varbit",
    "tsvector",
    "tsquery",
    "json",
    "jsonb",
    "hstore",
    "date",
    "time",
    "time without time zone",
    "time with time zone",
    "timetz",
    "timestamp",
    "timestamp without time zone",
    "timestamp with time zone",
    "timestamptz",
    "interval",
    "point",
    "line",
    "lseg",
    "box",
    "path",
    "polygon",
    "circle",
    *RANGES,
}


def aws_parquet_type(original_type: str) -> ExpectedParquetType:
    """(What AWS writes for `original_type`, in words; a test of an Arrow type for it)."""
    parsed = PostgresType.parse(original_type)
    base = parsed.base
    if parsed.array or base in _TEXT:
        return "STRING", is_text
    if base in _INT64:
        return "INT64", pa.types.is_int64
    if base in _INT32:
        return "INT32", pa.types.is_int32
    if base in _INT16:
        return "INT32 (INT(16))", lambda t: pa.types.is_int16(t) or pa.types.is_int32(t)
    if base == "oid":
        return "an integer or STRING", lambda t: pa.types.is_integer(t) or is_text(t)
    if base in ("real", "float4"):
        return "FLOAT", pa.types.is_float32
    if base in ("double precision", "float8"):
        return "DOUBLE", pa.types.is_float64
    if base in ("boolean", "bool"):
        return "BOOLEAN", pa.types.is_boolean
    if base == "bytea":
        return "BINARY", is_bytes
    return "any type", lambda _t: True


def type_disagreement(column: str, original_type: str, arrow_type: pa.DataType) -> str | None:
    """PostgreSQL: why a column declared `original_type` cannot hold `arrow_type` (None: it can)."""
    return disagreement(column, original_type, arrow_type, aws_parquet_type)
