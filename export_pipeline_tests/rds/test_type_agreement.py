"""Every Parquet column must hold what AWS writes for its MySQL type; else nothing loads.

AWS's table is `export_pipeline.rds.parquet_types`; it is checked here against
the local cloud's export emulation (`local_cloud.mysql_types`, written
separately from AWS's documentation) and the AWS-format samples, so that
neither can drift alone.
"""

from __future__ import annotations

from decimal import Decimal

import pyarrow as pa
import pytest
from google.api_core.exceptions import NotFound

from export_pipeline.local_cloud.mysql_types import MySQLType
from export_pipeline.rds.export_files import read_tables_info
from export_pipeline.rds.loading import RdsLoadError
from export_pipeline.rds.parquet_types import type_disagreement
from export_pipeline_tests.rds.test_loading import _load, _write_export
from export_pipeline_tests.support.aws_samples import CUSTOMERS, ORDERS

MYSQL_TYPES = [
    "tinyint",
    "tinyint unsigned",
    "smallint",
    "smallint unsigned",
    "mediumint",
    "mediumint unsigned",
    "int",
    "int unsigned",
    "bigint",
    "bigint unsigned",
    "year",
    "decimal(5,2)",
    "decimal(38,10)",
    "decimal(65,30)",
    "float",
    "double",
    "char(3)",
    "varchar(10)",
    "tinytext",
    "longtext",
    "enum('a','b')",
    "set('x','y')",
    "json",
    "date",
    "time(3)",
    "binary(4)",
    "varbinary(9)",
    "blob",
    "bit(3)",
    "geometry",
    "datetime(6)",
    "timestamp",
]


@pytest.mark.parametrize("mysql_type", MYSQL_TYPES)
def test_what_the_export_emulation_writes_agrees(mysql_type: str) -> None:
    assert type_disagreement("c", mysql_type, MySQLType.parse(mysql_type).arrow_type()) is None


@pytest.mark.parametrize("column", [*CUSTOMERS, *ORDERS], ids=lambda c: c.mysql_type)
def test_the_aws_format_samples_agree(column) -> None:
    assert type_disagreement(column.name, column.mysql_type, column.arrow_type) is None


@pytest.mark.parametrize(
    ("mysql_type", "arrow_type"),
    [
        ("decimal(5,2)", pa.decimal128(38, 10)),  # would round 1.0000000001
        ("decimal(5,2)", pa.decimal128(5, 3)),
        ("decimal(40,2)", pa.decimal128(38, 2)),  # AWS writes p > 38 as text
        ("int", pa.float64()),  # would round 1.5 to 2
        ("bigint", pa.string()),
        ("bigint unsigned", pa.uint64()),
        ("double", pa.decimal128(10, 2)),
        ("varchar(10)", pa.binary()),
        ("blob", pa.string()),
        ("datetime", pa.string()),
        ("timestamp", pa.timestamp("ns", tz="UTC")),
        ("date", pa.date32()),
    ],
)
def test_a_type_aws_does_not_write_for_it_is_named(mysql_type: str, arrow_type) -> None:
    reason = type_disagreement("price", mysql_type, arrow_type)
    assert reason is not None
    assert reason.startswith(f"column 'price' is declared {mysql_type!r}")
    assert str(arrow_type) in reason


@pytest.mark.parametrize(
    ("declared", "arrow_column"),
    [
        ("decimal(5,2)", pa.array([Decimal("1.0000000001"), None], pa.decimal128(38, 10))),
        ("int", pa.array([1.5, None], pa.float64())),
    ],
    ids=["decimal-rounded", "double-as-int"],
)
def test_a_mismatch_fails_the_table_and_loads_nothing(
    aws_clients, bigquery_client, rds_dataset, local_cloud, pipeline_config, declared, arrow_column
) -> None:
    columns = [("id", "int"), ("value", declared)]
    table = pa.table({"id": pa.array([1, 2], pa.int32()), "value": arrow_column})
    location = _write_export(aws_clients.s3, pipeline_config, columns, table)
    info = read_tables_info(aws_clients.s3, location)["app.t"]
    table_id = f"{local_cloud.bigquery_project}.{rds_dataset}.mismatch"
    with pytest.raises(RdsLoadError) as caught:
        _load(aws_clients, bigquery_client, location, info, table_id)
    message = str(caught.value)
    assert message.startswith(f"app.t: s3://{location.bucket}/{location.root}/app/app.t/1/")
    assert f"column 'value' is declared {declared!r}" in message and "nothing was loaded" in message
    with pytest.raises(NotFound):
        bigquery_client.get_table(table_id)
