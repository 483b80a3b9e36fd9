"""MySQL type parsing, value canonicalization and the AWS Parquet mapping (no server)."""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from export_pipeline.local_cloud.mysql_types import (
    MySQLType,
    MySQLValueError,
    datetime_micros,
    is_exportable_column_name,
)
from export_pipeline.local_cloud.rds_store import Column, Store, StoreError
from export_pipeline_tests.support.aws_samples import AwsSamples


def parquet_column_types(arrow_type: pa.DataType) -> tuple[str, str]:
    """(physical type, logical type text) of one column written the way the export writes."""
    buffer = io.BytesIO()
    pq.write_table(pa.table({"x": pa.array([], type=arrow_type)}), buffer, compression="gzip")
    column = pq.ParquetFile(io.BytesIO(buffer.getvalue())).schema.column(0)
    return column.physical_type, str(column.logical_type)


TIMESTAMP_MICROS_UTC = (
    "Timestamp(isAdjustedToUTC=true, timeUnit=microseconds, "
    "is_from_converted_type=false, force_set_converted_type=false)"
)
# MySQL type -> (physical, logical) from AWS's mapping table
# (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_ExportSnapshot.data-types.html).
EXPECTED = {
    "bigint": ("INT64", "None"),
    "bigint unsigned": ("FIXED_LEN_BYTE_ARRAY", "Decimal(precision=20, scale=0)"),
    "int": ("INT32", "None"),
    "mediumint": ("INT32", "None"),
    "smallint": ("INT32", "None"),
    "tinyint": ("INT32", "None"),
    "int unsigned": ("INT64", "None"),
    "mediumint unsigned": ("INT64", "None"),
    "smallint unsigned": ("INT32", "None"),
    "tinyint unsigned": ("INT32", "Int(bitWidth=16, isSigned=true)"),
    "decimal(10,2)": ("FIXED_LEN_BYTE_ARRAY", "Decimal(precision=10, scale=2)"),
    "decimal(38,9)": ("FIXED_LEN_BYTE_ARRAY", "Decimal(precision=38, scale=9)"),
    "decimal(39,0)": ("BYTE_ARRAY", "String"),
    "decimal(65,30)": ("BYTE_ARRAY", "String"),
    "float": ("DOUBLE", "None"),
    "double": ("DOUBLE", "None"),
    "bit(5)": ("BYTE_ARRAY", "None"),
    "char(2)": ("BYTE_ARRAY", "None"),
    "binary(4)": ("BYTE_ARRAY", "None"),
    "varbinary(8)": ("BYTE_ARRAY", "None"),
    "blob": ("BYTE_ARRAY", "None"),
    "longblob": ("BYTE_ARRAY", "None"),
    "varchar(100)": ("BYTE_ARRAY", "String"),
    "text": ("BYTE_ARRAY", "String"),
    "mediumtext": ("BYTE_ARRAY", "String"),
    "enum('a','b')": ("BYTE_ARRAY", "String"),
    "set('a','b')": ("BYTE_ARRAY", "String"),
    "json": ("BYTE_ARRAY", "String"),
    "date": ("BYTE_ARRAY", "String"),
    "time": ("BYTE_ARRAY", "String"),
    "time(6)": ("BYTE_ARRAY", "String"),
    "datetime(6)": ("INT64", TIMESTAMP_MICROS_UTC),
    "timestamp": ("INT64", TIMESTAMP_MICROS_UTC),
    "year": ("INT32", "None"),
    "geometry": ("BYTE_ARRAY", "None"),
    "point": ("BYTE_ARRAY", "None"),
    # MariaDB spells display widths; the mapping must not care.
    "bigint(20) unsigned": ("FIXED_LEN_BYTE_ARRAY", "Decimal(precision=20, scale=0)"),
    "tinyint(3) unsigned": ("INT32", "Int(bitWidth=16, isSigned=true)"),
    "int(11)": ("INT32", "None"),
}


@pytest.mark.parametrize("column_type", sorted(EXPECTED))
def test_parquet_types_follow_aws_mapping(column_type: str) -> None:
    assert parquet_column_types(MySQLType.parse(column_type).arrow_type()) == EXPECTED[column_type]


def test_mapping_matches_the_samples(aws_samples: AwsSamples) -> None:
    """Every column of the AWS-format samples: our type for its originalType is the same."""
    import json

    samples = aws_samples.rds_mysql
    info = next(samples.rglob("export_tables_info_*.json"))
    tables = json.loads(info.read_text())["perTableStatus"]
    checked = 0
    for table in tables:
        db, name = table["target"].split(".")
        files = sorted(samples.rglob(f"{db}.{name}/*/*.parquet"))
        assert files, table["target"]
        schema = pq.ParquetFile(files[0]).schema
        for mapping in table["schemaMetadata"]["originalTypeMappings"]:
            sample = schema.column(schema.names.index(mapping["columnName"]))
            ours = parquet_column_types(MySQLType.parse(mapping["originalType"]).arrow_type())
            assert ours == (sample.physical_type, str(sample.logical_type)), mapping
            # FIXED_LEN_BYTE_ARRAY width too
            ours_schema = pq.ParquetFile(
                _one_column_file(MySQLType.parse(mapping["originalType"]).arrow_type())
            ).schema.column(0)
            assert ours_schema.length == sample.length, mapping
            checked += 1
    assert checked == 16


def _one_column_file(arrow_type: pa.DataType) -> io.BytesIO:
    buffer = io.BytesIO()
    pq.write_table(pa.table({"x": pa.array([], type=arrow_type)}), buffer, compression="gzip")
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize(
    ("column_type", "value", "stored"),
    [
        ("bigint unsigned", 18446744073709551615, "18446744073709551615"),
        ("bigint unsigned", "9223372036854775807", 9223372036854775807),
        ("bigint", -(2**63), -(2**63)),
        ("tinyint unsigned", 255, 255),
        ("decimal(65,30)", "1.5", "1.500000000000000000000000000000"),
        ("decimal(10,2)", Decimal("-5"), "-5.00"),
        ("decimal(10,0)", "12", "12"),
        ("float", 0.1, 0.10000000149011612),
        ("double", 0.1, 0.1),
        ("bit(12)", 0xFFF, b"\x0f\xff"),
        ("bit(1)", b"\x01", b"\x01"),
        ("char(4)", "ab  ", "ab"),
        ("varchar(4)", "ab  ", "ab  "),
        ("varchar(2)", "🚀😀", "🚀😀"),
        ("binary(3)", b"a", b"a\x00\x00"),
        ("enum('x','y')", "y", "y"),
        ("set('a','b','c')", "c,a", "a,c"),
        ("set('a','b','c')", ["b"], "b"),
        ("json", {"k": [1, None]}, '{"k": [1, null]}'),
        ("date", "0000-00-00", "0000-00-00"),
        ("date", dt.date(9999, 12, 31), "9999-12-31"),
        ("date", "2024-00-10", "2024-00-10"),
        ("datetime", "0000-00-00 00:00:00", "0000-00-00 00:00:00"),
        ("datetime(6)", "2024-01-02 03:04:05.5", "2024-01-02 03:04:05.500000"),
        ("datetime(3)", dt.datetime(2024, 1, 2, 3, 4, 5, 123000), "2024-01-02 03:04:05.123"),
        (
            "timestamp",
            dt.datetime(2024, 1, 2, 4, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=1))),
            "2024-01-02 03:04:05",
        ),
        ("time", "838:59:59", "838:59:59"),
        ("time", "-838:59:59", "-838:59:59"),
        ("time", dt.timedelta(hours=-1, seconds=1), "-00:59:59"),
        ("time(6)", "1:02:03.000004", "01:02:03.000004"),
        ("year", 2155, 2155),
        ("year", 0, 0),
        ("geometry", b"\x00\x00\x00\x00\x01", b"\x00\x00\x00\x00\x01"),
    ],
)
def test_canonical_values(column_type: str, value: object, stored: object) -> None:
    assert MySQLType.parse(column_type).canonical_value(value) == stored


@pytest.mark.parametrize(
    ("column_type", "value"),
    [
        ("tinyint unsigned", 256),
        ("tinyint", -129),
        ("bigint unsigned", -1),
        ("bigint unsigned", 2**64),
        ("bigint", 2**63),
        ("decimal(10,2)", "1.234"),
        ("decimal(10,2)", "123456789.00"),
        ("decimal(10,2)", 1.5),
        ("float", float("nan")),
        ("bit(4)", 16),
        ("char(2)", "abc"),
        ("varchar(2)", "abc"),
        ("binary(2)", b"abc"),
        ("tinytext", "x" * 256),
        ("enum('x')", "z"),
        ("set('a')", "a,b"),
        ("json", "{not json"),
        ("date", "2023-02-30"),
        ("date", "2023-13-01"),
        ("datetime", "2024-01-01 24:00:00"),
        ("datetime(2)", "2024-01-01 00:00:00.123"),
        ("timestamp", "1960-01-01 00:00:00"),
        ("timestamp", "2038-01-19 03:14:08"),
        ("time", "839:00:00"),
        ("time", "-838:59:59.5"),
        ("year", 1900),
        ("blob", "text, not bytes"),
    ],
)
def test_invalid_values_are_rejected_with_the_column(column_type: str, value: object) -> None:
    with pytest.raises(MySQLValueError, match=r"col \("):
        MySQLType.parse(column_type).canonical_value(value, "col")


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_bigint_unsigned_round_trips_through_parquet(number: int) -> None:
    mysql_type = MySQLType.parse("bigint unsigned")
    array = mysql_type.arrow_array([mysql_type.canonical_value(number)])
    buffer = io.BytesIO()
    pq.write_table(pa.table({"x": array}), buffer, compression="gzip")
    assert pq.read_table(io.BytesIO(buffer.getvalue()))["x"][0].as_py() == Decimal(number)


@given(
    st.datetimes(min_value=dt.datetime(1000, 1, 1), max_value=dt.datetime(9999, 12, 31, 23, 59, 59))
)
def test_datetime_micros_matches_python(moment: dt.datetime) -> None:
    text = MySQLType.parse("datetime(6)").canonical_value(moment)
    expected = moment.replace(tzinfo=dt.UTC) - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    assert datetime_micros(text) == expected // dt.timedelta(microseconds=1)


def test_zero_datetimes_have_no_timestamp() -> None:
    assert datetime_micros("0000-00-00 00:00:00") is None
    assert datetime_micros("2024-00-10 00:00:00") is None


@pytest.mark.parametrize("name", ["a,b", "a;b", "f(x)", "a{", "b}", "a=b", "new\nline", "t\tab"])
def test_column_names_aws_skips(name: str) -> None:
    assert not is_exportable_column_name(name)
    assert is_exportable_column_name("plain_name $ and spaces")


def test_unknown_types_are_errors() -> None:
    with pytest.raises(ValueError, match="unknown MySQL column type 'money'"):
        MySQLType.parse("money")
    with pytest.raises(ValueError, match="DECIMAL"):
        MySQLType.parse("decimal(66,2)")


def test_store_keeps_exact_values_and_names_bad_rows(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite")
    store.create_table(
        "d", "t", [Column("id", "int", False), Column("u", "bigint unsigned"), Column("b", "blob")]
    )
    store.insert("d", "t", [{"id": 1, "u": 2**64 - 1, "b": b"\x00\xff"}, (2, None, None)])
    assert store.read_all("d", "t") == [
        {"id": 1, "u": "18446744073709551615", "b": b"\x00\xff"},
        {"id": 2, "u": None, "b": None},
    ]
    with pytest.raises(StoreError, match=r"d\.t\.u row 1 \(bigint unsigned\)"):
        store.insert("d", "t", [{"id": 3, "u": -1}])
    with pytest.raises(StoreError, match="NULL in a NOT NULL column"):
        store.insert("d", "t", [{"id": None}])
    with pytest.raises(StoreError, match=r"unknown columns \['nope'\]"):
        store.insert("d", "t", [{"id": 3, "nope": 1}])
    assert store.count("d", "t") == 2  # failed inserts wrote nothing
    assert store.update("d", "t", "id", {1: {"u": 5}}) == 1
    assert store.delete("d", "t", "id", [2, 99]) == 1
    assert store.read_all("d", "t") == [{"id": 1, "u": 5, "b": b"\x00\xff"}]


def test_snapshot_copy_is_isolated(tmp_path: Path) -> None:
    live = Store(tmp_path / "live.sqlite")
    live.create_table("d", "t", [Column("id", "int")])
    live.insert("d", "t", [(1,), (2,)])
    frozen = live.copy_to(tmp_path / "snap.sqlite")
    live.insert("d", "t", [(3,)])
    live.delete("d", "t", "id", [1])
    assert [r["id"] for r in frozen.read_all("d", "t")] == [1, 2]
    assert [r["id"] for r in live.read_all("d", "t")] == [2, 3]
