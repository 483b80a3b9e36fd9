"""RDS helpers: a configuration of the test's own, a run of the RDS assets, MySQL instances."""

from __future__ import annotations

from typing import Any

from dagster import DagsterInstance, materialize

from export_pipeline.config import BigQueryConfig, PipelineConfig, RdsConfig, RdsInstanceConfig
from export_pipeline.graph.assets import build_source_assets
from export_pipeline.rds.source import RdsSource
from export_pipeline_tests.support.principals import pipeline_resources


def loading_only(instance: RdsInstanceConfig) -> RdsInstanceConfig:
    """`instance` keeping the table settings of the tables it loads.

    Tests narrow the demo instance with `model_copy(update={"export_only": …})`,
    which does not validate; the demo's settings of a table the copy no longer
    loads would then fail the configuration's check that settings name loaded
    tables.
    """
    loaded = {".".join(parts) for parts in instance.loaded_tables()}
    tables = {name: s for name, s in instance.tables.items() if name in loaded}
    return instance.model_copy(update={"tables": tables})


def config_for(
    base: PipelineConfig,
    dataset: str,
    instances: list[RdsInstanceConfig] | None = None,
    **rds_options: Any,
) -> PipelineConfig:
    """`base` with its own dataset, the given RDS sources and fast polling."""
    rds = RdsConfig(
        instances=[
            loading_only(i) for i in (instances if instances is not None else base.rds.instances)
        ],
        poll_max_interval_seconds=rds_options.pop("poll_max_interval_seconds", 0.5),
        **rds_options,
    )
    bigquery = BigQueryConfig(
        project=base.bigquery.project, dataset=dataset, location=base.bigquery.location
    )
    return base.model_copy(update={"rds": rds, "bigquery": bigquery})


def run_rds(
    config: PipelineConfig,
    instance: DagsterInstance,
    *,
    selection: Any = None,
    run_config: dict[str, Any] | None = None,
    raise_on_error: bool = True,
    source: type[RdsSource] = RdsSource,
    resources: dict[str, Any] | None = None,
):  # -> ExecuteInProcessResult
    """materialize() the assets of `source` (RDS MySQL unless told) against the local cloud.

    `resources` default to `pipeline_resources(config)`: the pipeline signs as its principal.
    """
    return materialize(
        build_source_assets(source(config)),
        resources=resources if resources is not None else pipeline_resources(config),
        instance=instance,
        selection=selection,
        run_config=run_config,
        raise_on_error=raise_on_error,
    )


def create_mysql_instance(rds: Any, identifier: str) -> None:
    """A small MySQL 8.0 DB instance in the local cloud (AWS takes an automated snapshot)."""
    rds.create_db_instance(
        DBInstanceIdentifier=identifier,
        Engine="mysql",
        EngineVersion="8.0.39",
        DBInstanceClass="db.t3.micro",
        AllocatedStorage=20,
        MasterUsername="admin",
        MasterUserPassword="local-cloud-only",
        BackupRetentionPeriod=7,
    )
