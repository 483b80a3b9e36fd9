"""The asset graph the DynamoDB builders produce: keys, kinds, tags, groups, checks, jobs."""

from __future__ import annotations

from dagster import AssetKey, AssetSelection, Definitions, define_asset_job

from export_pipeline.config import DynamoDBTableConfig
from export_pipeline.dynamodb.source import DynamoDBSource
from export_pipeline.graph.assets import build_source_assets
from export_pipeline_tests.dynamodb._pipeline_helpers import make_config
from export_pipeline_tests.support.principals import pipeline_resources


def _config():
    config = make_config("Orders", mode="incremental")
    tables = [*config.dynamodb.tables, DynamoDBTableConfig(name="Product.Catalog", mode="full")]
    return config.model_copy(
        update={"dynamodb": config.dynamodb.model_copy(update={"tables": tables})}
    )


def test_two_assets_per_table_with_keys_kinds_tags_and_owners() -> None:
    definitions = build_source_assets(DynamoDBSource(_config()))
    specs = {spec.key: spec for d in definitions for spec in d.specs}
    assert set(specs) == {
        AssetKey(["dynamodb", "Orders_export"]),
        AssetKey(["bigquery", "aws_raw", "dynamodb_orders"]),
        AssetKey(["dynamodb", "Product.Catalog_export"]),
        AssetKey(["bigquery", "aws_raw", "dynamodb_product_catalog"]),
    }
    export = specs[AssetKey(["dynamodb", "Orders_export"])]
    table = specs[AssetKey(["bigquery", "aws_raw", "dynamodb_orders"])]
    assert export.kinds == {"dynamodb", "s3"} and table.kinds == {"bigquery"}
    for spec in specs.values():
        assert spec.group_name == "dynamodb"
        assert spec.tags["export_pipeline/source"] == "dynamodb"
        assert spec.owners and spec.description and spec.code_version
    assert [dep.asset_key for dep in table.deps] == [export.key]
    checks = [key for d in definitions for key in d.check_keys]
    assert {c.name for c in checks} == {"row_count_matches_export", "schema_unchanged"}
    assert {c.asset_key for c in checks} == {
        AssetKey(["bigquery", "aws_raw", "dynamodb_orders"]),
        AssetKey(["bigquery", "aws_raw", "dynamodb_product_catalog"]),
    }


def test_definitions_resolve_and_the_source_tag_selects_every_asset() -> None:
    config = _config()
    job = define_asset_job(
        "dynamodb_to_bigquery", selection=AssetSelection.tag("export_pipeline/source", "dynamodb")
    )
    defs = Definitions(
        assets=build_source_assets(DynamoDBSource(config)),
        jobs=[job],
        resources=pipeline_resources(config),
    )
    resolved = defs.resolve_job_def("dynamodb_to_bigquery")
    assert len(resolved.asset_layer.executable_asset_keys) == 4
    defs.resolve_all_job_defs()  # resources and config types all bind
