"""PostgreSQL sources in pipeline.yaml: engine, export_only forms, BigQuery names, engine check."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from export_pipeline.config import PipelineConfig, RdsInstanceConfig
from export_pipeline.naming import rds_table_name
from export_pipeline.postgres import types
from export_pipeline.postgres.engine import POSTGRES
from export_pipeline.postgres.source import PostgresSource
from export_pipeline.rds.engine import MYSQL, EngineMismatchError, check_engine
from export_pipeline.rds.source import RdsSource

ROLE = "arn:aws:iam::123456789012:role/export"


def _source(**fields) -> RdsInstanceConfig:
    return RdsInstanceConfig(iam_role_arn=ROLE, kms_key_id="alias/k", **fields)


def test_export_only_forms_and_engine_family() -> None:
    pg = _source(identifier="appdb", export_only=["app", "app.sales", "app.public.accounts"])
    assert pg.engine_family == "postgres"
    assert pg.loaded_tables() == [("app", "public", "accounts")]
    mysql = _source(identifier="shopdb", export_only=["shop.orders"])
    assert mysql.engine_family == "mysql" and mysql.loaded_tables() == [("shop", "orders")]
    explicit = _source(identifier="x", engine="postgres", export_only=["a.b.c"])
    assert explicit.engine_family == "postgres"
    with pytest.raises(ValueError, match=r"a MySQL source takes 'database\.table'"):
        _source(identifier="x", engine="mysql", export_only=["a.b.c"])
    with pytest.raises(ValueError, match="no table named"):
        _source(identifier="x", engine="postgres", export_only=["app.public"])
    with pytest.raises(ValueError, match="database"):
        _source(identifier="x", export_only=["a.b.c.d"])


def test_bigquery_names_include_the_schema_and_sources_split_by_engine() -> None:
    assert rds_table_name("app", "public", "accounts") == "rds_app_public_accounts"
    assert rds_table_name("shop", "orders") == "rds_shop_orders"
    config = PipelineConfig.model_validate(
        {
            "aws": {"region": "eu-west-1", "export_bucket": "bucket-x"},
            "bigquery": {"project": "my-project-1", "dataset": "raw"},
            "rds": {
                "instances": [
                    {
                        "identifier": "shopdb",
                        "export_only": ["shop.orders"],
                        "iam_role_arn": ROLE,
                        "kms_key_id": "alias/k",
                    },
                    {
                        "identifier": "appdb",
                        "kind": "cluster",
                        "export_only": ["app.public.t"],
                        "iam_role_arn": ROLE,
                        "kms_key_id": "alias/k",
                    },
                ]
            },
        }
    )
    [mysql] = RdsSource(config).units()
    [pg] = PostgresSource(config).units()
    assert mysql.name == "shopdb" and pg.name == "appdb"
    assert [t.table for t in pg.tables] == ["rds_app_public_t"]
    assert pg.tables[0].source_name == "app.public.t"
    with pytest.raises(ValueError, match="would both load into BigQuery table"):
        PipelineConfig.model_validate(
            {
                **config.model_dump(exclude={"source_path"}, mode="json"),
                "rds": {
                    "instances": [
                        {
                            "identifier": "a",
                            "export_only": ["x_y.z"],
                            "iam_role_arn": ROLE,
                            "kms_key_id": "alias/k",
                        },
                        {
                            "identifier": "b",
                            "export_only": ["x.y.z"],
                            "iam_role_arn": ROLE,
                            "kms_key_id": "alias/k",
                        },
                    ]
                },
            }
        )


def test_a_configured_engine_that_disagrees_is_a_clear_error(aws_clients, pipeline_config):
    shop = next(i for i in pipeline_config.rds.instances if i.engine_family == "mysql")
    app = next(i for i in pipeline_config.rds.instances if i.engine_family == "postgres")
    assert check_engine(aws_clients.rds, shop, MYSQL) == "mysql"
    assert check_engine(aws_clients.rds, app, POSTGRES) == "aurora-postgresql"
    with pytest.raises(
        EngineMismatchError,
        match=r"rds\.instances\[shopdb\]\.engine: configured as postgres but AWS reports "
        r"Engine 'mysql'.*set engine: mysql",
    ):
        check_engine(aws_clients.rds, shop, POSTGRES)
    with pytest.raises(EngineMismatchError, match=r"reports Engine 'aurora-postgresql'"):
        check_engine(aws_clients.rds, app, MYSQL)
    missing = app.model_copy(update={"identifier": "no-such-cluster"})
    with pytest.raises(EngineMismatchError, match="cannot describe cluster 'no-such-cluster'"):
        check_engine(aws_clients.rds, missing, POSTGRES)


@given(st.text(max_size=40), st.sampled_from(["STRING", "INT64", "FLOAT64", "BOOL", "BYTES"]))
def test_any_type_text_maps_to_sql_that_names_only_the_column(original_type, staging) -> None:
    """Whatever originalType an export holds, the mapping is total and its SQL is well-formed."""
    mapping = types.map_column("c", original_type, staging)
    sql = types.typed_expression(mapping, "`c`")
    assert sql.count("(") == sql.count(")")
    assert "`c`" in sql
    assert mapping.target_type in {
        "STRING",
        "INT64",
        "FLOAT64",
        "BOOL",
        "BYTES",
        "NUMERIC",
        "JSON",
        "DATE",
        "DATETIME",
        "TIMESTAMP",
        "TIME",
    }
    if mapping.conversion is types.Conversion.AS_LOADED:
        assert mapping.target_type == staging or sql.startswith("CAST(")


@given(
    st.from_regex(types._NUMBER, fullmatch=True)
    | st.from_regex(types._MONEY, fullmatch=True)
    | st.from_regex(types._TIME_OF_DAY, fullmatch=True)
)
def test_a_text_the_guard_admits_always_parses(text) -> None:
    """Counting misfits by the guard alone (`fits_expression`) counts exactly the typed NULLs."""
    import datetime as dt
    from decimal import Decimal

    if text.count(":") == 2:
        dt.time.fromisoformat(text)
        return
    number = Decimal(text.replace("$", "").replace(",", ""))
    _sign, digits, exponent = number.as_tuple()
    assert -exponent <= 9 and len(digits) + exponent <= 29
