"""The MySQL → BigQuery type table and WarningMessage parsing (pure functions)."""

from __future__ import annotations

import json

import pytest

from export_pipeline.rds.exports import skipped_tables
from export_pipeline.rds.types import Conversion, MySQLType, map_column

# (MySQL originalType, staging type the export's Parquet loads as, final type, conversion)
CASES = [
    ("tinyint", "INT64", "INT64", Conversion.AS_LOADED),
    ("tinyint unsigned", "INT64", "INT64", Conversion.AS_LOADED),
    ("smallint unsigned", "INT64", "INT64", Conversion.AS_LOADED),
    ("mediumint", "INT64", "INT64", Conversion.AS_LOADED),
    ("int(11)", "INT64", "INT64", Conversion.AS_LOADED),  # MariaDB spelling
    ("int unsigned", "INT64", "INT64", Conversion.AS_LOADED),
    ("bigint", "INT64", "INT64", Conversion.AS_LOADED),
    ("bigint(20) unsigned", "NUMERIC", "NUMERIC", Conversion.AS_LOADED),
    ("decimal(12,2)", "NUMERIC", "NUMERIC", Conversion.AS_LOADED),
    ("decimal(38,9)", "NUMERIC", "NUMERIC", Conversion.AS_LOADED),
    ("decimal(20,10)", "STRING", "STRING", Conversion.AS_LOADED),  # scale > 9
    ("decimal(39,9)", "STRING", "STRING", Conversion.AS_LOADED),  # p - s = 30
    ("decimal(65,30)", "STRING", "STRING", Conversion.AS_LOADED),  # p > 38: text
    ("decimal", "NUMERIC", "NUMERIC", Conversion.AS_LOADED),  # (10,0)
    ("float", "FLOAT64", "FLOAT64", Conversion.AS_LOADED),
    ("double", "FLOAT64", "FLOAT64", Conversion.AS_LOADED),
    ("char(2)", "BYTES", "STRING", Conversion.CHAR_BYTES),
    ("varchar(100)", "STRING", "STRING", Conversion.AS_LOADED),
    ("longtext", "STRING", "STRING", Conversion.AS_LOADED),
    ("enum('a','b(c)')", "STRING", "STRING", Conversion.AS_LOADED),
    ("set('x','y')", "STRING", "STRING", Conversion.AS_LOADED),
    ("json", "STRING", "JSON", Conversion.JSON_TEXT),
    ("binary(4)", "BYTES", "BYTES", Conversion.AS_LOADED),
    ("varbinary(16)", "BYTES", "BYTES", Conversion.AS_LOADED),
    ("mediumblob", "BYTES", "BYTES", Conversion.AS_LOADED),
    ("bit(12)", "BYTES", "BYTES", Conversion.AS_LOADED),
    ("geometry", "BYTES", "BYTES", Conversion.AS_LOADED),
    ("point", "BYTES", "BYTES", Conversion.AS_LOADED),
    ("date", "STRING", "DATE", Conversion.DATE_TEXT),
    ("datetime(6)", "TIMESTAMP", "DATETIME", Conversion.DATETIME_WALL_CLOCK),
    ("timestamp", "TIMESTAMP", "TIMESTAMP", Conversion.AS_LOADED),
    ("time(6)", "STRING", "TIME", Conversion.TIME_TEXT),
    ("year", "INT64", "INT64", Conversion.AS_LOADED),
]


@pytest.mark.parametrize(("mysql", "staging", "target", "conversion"), CASES)
def test_mapping_table(mysql, staging, target, conversion):
    mapping = map_column("c", mysql, staging)
    assert (mapping.target_type, mapping.conversion) == (target, conversion)


def test_unknown_type_keeps_what_the_export_wrote():
    assert map_column("c", "vector(3)", "BYTES").target_type == "BYTES"


def test_parse_mysql_type():
    assert MySQLType.parse("BIGINT(20) UNSIGNED ZEROFILL") == MySQLType(
        "bigint", ("20",), unsigned=True
    )
    assert MySQLType.parse("decimal(65,30)").precision_scale() == (65, 30)


def test_skipped_tables_from_warning_message():
    warning = json.dumps(
        {"skippedTables": [{"target": "shop.bad", "reason": "names"}], "general": []}
    )
    assert skipped_tables(warning, ["shop.good", "shop.bad"]) == ["shop.bad"]
    # A name that only starts like a configured one does not count.
    assert skipped_tables('{"skipped": "shop.bad_archive"}', ["shop.bad"]) == []
    # Not JSON at all: the text is searched.
    assert skipped_tables("Skipped table shop.bad.", ["shop.bad"]) == ["shop.bad"]
    assert skipped_tables(None, ["shop.bad"]) == []
