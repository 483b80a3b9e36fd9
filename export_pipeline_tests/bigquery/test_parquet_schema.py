from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from export_pipeline.bigquery.parquet_schema import (
    ParquetSchemaError,
    bigquery_schema_from_parquet,
    bigquery_schema_of_files,
)
from export_pipeline.bigquery_types import decimal_fits_numeric


def _types(schema: pa.Schema) -> dict[str, tuple[str, str]]:
    return {f.name: (f.field_type, f.mode) for f in bigquery_schema_from_parquet(schema)}


def test_scalar_mapping() -> None:
    schema = pa.schema(
        [
            ("i32", pa.int32()),
            ("i16", pa.int16()),
            ("u32", pa.uint32()),
            ("i64", pa.int64()),
            ("f", pa.float64()),
            ("b", pa.bool_()),
            ("d_small", pa.decimal128(12, 2)),
            ("d_u64", pa.decimal128(20, 0)),
            ("d_scale10", pa.decimal128(20, 10)),
            ("d_38_0", pa.decimal128(38, 0)),
            ("s", pa.string()),
            ("bin", pa.binary()),
            ("fixed", pa.binary(4)),
            ("day", pa.date32()),
            ("t", pa.time64("us")),
            ("ts", pa.timestamp("us", tz="UTC")),
            ("ts_local", pa.timestamp("us")),
            ("tags", pa.list_(pa.string())),
            ("rec", pa.struct([("a", pa.int64()), ("b", pa.list_(pa.binary()))])),
        ]
    )
    assert _types(schema) == {
        "i32": ("INT64", "NULLABLE"),
        "i16": ("INT64", "NULLABLE"),
        "u32": ("INT64", "NULLABLE"),
        "i64": ("INT64", "NULLABLE"),
        "f": ("FLOAT64", "NULLABLE"),
        "b": ("BOOL", "NULLABLE"),
        "d_small": ("NUMERIC", "NULLABLE"),
        "d_u64": ("NUMERIC", "NULLABLE"),
        "d_scale10": ("STRING", "NULLABLE"),
        "d_38_0": ("STRING", "NULLABLE"),
        "s": ("STRING", "NULLABLE"),
        "bin": ("BYTES", "NULLABLE"),
        "fixed": ("BYTES", "NULLABLE"),
        "day": ("DATE", "NULLABLE"),
        "t": ("TIME", "NULLABLE"),
        "ts": ("TIMESTAMP", "NULLABLE"),
        "ts_local": ("DATETIME", "NULLABLE"),
        "tags": ("STRING", "REPEATED"),
        "rec": ("RECORD", "NULLABLE"),
    }
    rec = next(f for f in bigquery_schema_from_parquet(schema) if f.name == "rec")
    assert [(f.name, f.field_type, f.mode) for f in rec.fields] == [
        ("a", "INT64", "NULLABLE"),
        ("b", "BYTES", "REPEATED"),
    ]


@pytest.mark.parametrize(
    ("precision", "scale", "fits"),
    [(38, 9, True), (29, 0, True), (30, 0, False), (20, 10, False), (10, 9, True), (39, 0, False)],
)
def test_decimal_fits_numeric(precision: int, scale: int, fits: bool) -> None:
    assert decimal_fits_numeric(precision, scale) is fits


@pytest.mark.parametrize(
    ("field", "message"),
    [
        (pa.field("u", pa.uint64()), "unsigned 64-bit"),
        (pa.field("ns", pa.timestamp("ns", tz="UTC")), "nanoseconds"),
        (pa.field("m", pa.map_(pa.string(), pa.int64())), "MAP"),
        (pa.field("ll", pa.list_(pa.list_(pa.int64()))), "lists of lists"),
        (pa.field("bad name", pa.int64()), "not a valid BigQuery column name"),
    ],
)
def test_unsupported_columns_are_named(field: pa.Field, message: str) -> None:
    with pytest.raises(ParquetSchemaError, match=message) as info:
        bigquery_schema_from_parquet(pa.schema([field]))
    assert repr(field.name) in str(info.value)


def test_case_insensitive_duplicate_names_rejected() -> None:
    with pytest.raises(ParquetSchemaError, match="differ only in case"):
        bigquery_schema_from_parquet(pa.schema([("Name", pa.string()), ("name", pa.string())]))


def test_rds_sample_schemas_follow_aws_mapping(aws_samples) -> None:
    customers = sorted(aws_samples.rds_mysql.glob("**/shop.customers/**/*.parquet"))
    orders = sorted(aws_samples.rds_mysql.glob("**/shop.orders/**/*.parquet"))
    assert len(customers) == 1 and len(orders) == 2
    assert {f.name: f.field_type for f in bigquery_schema_of_files(customers)} == {
        "id": "INT64",
        "ext_id": "NUMERIC",  # BIGINT UNSIGNED: FIXED_LEN_BYTE_ARRAY(9) DECIMAL(20,0)
        "country": "BYTES",  # CHAR: unannotated BYTE_ARRAY
        "name": "STRING",
        "birthday": "STRING",  # DATE as text ('0000-00-00' is possible)
        "created_at": "TIMESTAMP",  # DATETIME: TIMESTAMP_MICROS
        "prefs": "STRING",  # JSON as text
        "tier": "INT64",  # TINYINT UNSIGNED: INT(16)
    }
    assert {f.name: f.field_type for f in bigquery_schema_of_files(orders)}["fx_rate"] == "STRING"


def test_files_with_different_schemas_are_rejected(tmp_path: Path) -> None:
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(pa.table({"x": pa.array([1], pa.int64())}), a)
    pq.write_table(pa.table({"x": pa.array(["1"], pa.string())}), b)
    with pytest.raises(ParquetSchemaError, match=r"b\.parquet has a different schema"):
        bigquery_schema_of_files([a, b])
