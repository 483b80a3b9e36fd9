"""Every Parquet column must hold what AWS writes for its PostgreSQL type; else nothing loads.

AWS's table is `export_pipeline.postgres.parquet_types`; it is checked here
against the local cloud's export emulation (`postgres_store`'s storage per
type, written separately) and the AWS-format samples, so that neither can
drift alone, and through the loader on a hand-written export.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest
from google.api_core.exceptions import NotFound

from export_pipeline.local_cloud import demo_postgres
from export_pipeline.local_cloud.postgres_store import STORAGE_ARROW, PgColumn
from export_pipeline.postgres.engine import POSTGRES
from export_pipeline.postgres.parquet_types import type_disagreement
from export_pipeline.rds.export_files import read_tables_info
from export_pipeline.rds.loading import RdsLoadError, load_export_table
from export_pipeline_tests.rds.test_loading import _write_export
from export_pipeline_tests.support.aws_samples_postgres import ACCOUNTS, ORDERS

EMULATED = sorted(
    {t for _, t, *_ in demo_postgres.TYPE_ZOO}
    | {c.pg_type for c in demo_postgres.ACCOUNTS + demo_postgres.ORDERS}
)


@pytest.mark.parametrize("pg_type", EMULATED)
def test_what_the_export_emulation_writes_agrees(pg_type: str) -> None:
    arrow_type = STORAGE_ARROW[PgColumn("c", pg_type).storage]
    assert type_disagreement("c", pg_type, arrow_type) is None


@pytest.mark.parametrize("column", [*ACCOUNTS, *ORDERS], ids=lambda c: c[1])
def test_the_aws_format_samples_agree(column) -> None:
    name, pg_type, arrow_type, _exported = column
    assert type_disagreement(name, pg_type, arrow_type) is None


@pytest.mark.parametrize(
    ("pg_type", "arrow_type"),
    [
        ("integer", pa.float64()),  # would round 1.5 to 2
        ("integer", pa.int64()),
        ("bigint", pa.string()),
        ("smallint", pa.int64()),
        ("real", pa.float64()),
        ("double precision", pa.float32()),
        ("boolean", pa.int32()),
        ("bytea", pa.string()),
        ("numeric(12,2)", pa.decimal128(12, 2)),  # AWS writes numeric as text
        ("date", pa.date32()),
        ("timestamp with time zone", pa.timestamp("us", tz="UTC")),
        ("text", pa.binary()),
        ("integer[]", pa.list_(pa.int32())),
        ("int4range", pa.int32()),
    ],
)
def test_a_type_aws_does_not_write_for_it_is_named(pg_type: str, arrow_type) -> None:
    reason = type_disagreement("price", pg_type, arrow_type)
    assert reason is not None
    assert reason.startswith(f"column 'price' is declared {pg_type!r}")
    assert str(arrow_type) in reason


def test_a_type_aws_does_not_list_is_loaded_as_written() -> None:
    assert type_disagreement("mood", "mood", pa.int32()) is None  # an enum's own name


def test_a_mismatch_fails_the_table_and_loads_nothing(
    aws_clients, bigquery_client, pg_dataset, local_cloud, pipeline_config
) -> None:
    columns = [("id", "integer"), ("value", "integer")]
    table = pa.table(
        {"id": pa.array([1, 2], pa.int32()), "value": pa.array([1.5, None], pa.float64())}
    )
    location = _write_export(aws_clients.s3, pipeline_config, columns, table, "app.public.t")
    info = read_tables_info(aws_clients.s3, location)["app.public.t"]
    table_id = f"{local_cloud.bigquery_project}.{pg_dataset}.mismatch"
    with pytest.raises(RdsLoadError) as caught:
        load_export_table(
            s3=aws_clients.s3,
            client=bigquery_client,
            location=location,
            info=info,
            table_ref=table_id,
            exported_at=dt.datetime(2025, 12, 1, tzinfo=dt.UTC),
            description="test",
            engine=POSTGRES,
        )
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(
        f"app.public.t: s3://{location.bucket}/{location.root}/app/public.t/1/"
    )
    assert "column 'value' is declared 'integer'" in message and "nothing was loaded" in message
    assert "AWS writes INT32, but the Parquet file holds double" in message
    with pytest.raises(NotFound):
        bigquery_client.get_table(table_id)
