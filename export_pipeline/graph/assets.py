"""The two assets every source gets: its export, and each BigQuery table it loads.

`build_export_asset` and `build_table_asset` are the only asset builders;
what differs between sources comes from the `Source` they are given
(`export_pipeline.contract`). The hand-over from one to the other is
metadata, not an IO manager: an export lives in S3 already, and its ids are
all a load needs to find it again, also in a later run (the reload path).

Waiting: by default the export asset waits for its export (blocking). In
sensor mode (run config `wait_for_completion: false`, or `wait: sensor` in
pipeline.yaml) it only starts the export and records it; the table assets
of that run then skip, saying why, and `export_completion_sensor` requests
their load when AWS reports the export done.

Concurrency and retries: each asset runs in its own pool (one export per
source, one load per BigQuery table at a time); transient AWS/Google errors
retry the step, permanent ones fail at once with what to fix
(`export_pipeline.errors`).
"""

# No `from __future__ import annotations`: Dagster reads the run config
# class from the asset function's annotation, a class chosen per source.

import time
from collections.abc import Iterator
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetsDefinition,
    AssetSpec,
    MaterializeResult,
    MetadataValue,
    asset,
    multi_asset,
)

from export_pipeline.bigquery.schema_policy import SchemaChange, SchemaChangeRejected
from export_pipeline.column_hashing import check_hash_key
from export_pipeline.config import WaitMode
from export_pipeline.contract import (
    BIGQUERY_TABLE_URL_METADATA,
    DURATION_METADATA,
    LOAD_METADATA,
    OWNERS,
    ROW_COUNT_CHECK,
    ROW_COUNT_METADATA,
    SCHEMA_CHECK,
    SOURCE_TAG,
    TABLE_NAME_METADATA,
    WAIT_MODE_METADATA,
    ExportUnit,
    Source,
    TableTarget,
    ToLoad,
    waits,
)
from export_pipeline.durations import readable
from export_pipeline.errors import TRANSIENT_RETRY_POLICY, PermanentError, retry_only_transient
from export_pipeline.graph.load_steps import build_stepped_table_asset

CLOUD_RESOURCE = "cloud"  # every step starts by making sure its clouds are there


class NothingToLoadError(PermanentError):
    """A table asset ran without an export to load."""


def build_source_assets(source: Source) -> list[AssetsDefinition]:
    """The export asset of every unit of `source`, and the table assets of its tables."""
    built: list[AssetsDefinition] = []
    for unit in source.units():
        built.append(build_export_asset(source, unit))
        built.extend(build_table_asset(source, unit, table) for table in unit.tables)
    return built


def build_export_asset(source: Source, unit: ExportUnit) -> AssetsDefinition:
    """The asset that starts (or adopts) `unit`'s export and, when blocking, waits for it."""
    run_config_class = source.export_config

    @asset(
        key=unit.key,
        group_name=source.kind,
        kinds=set(source.export_kinds),
        tags={SOURCE_TAG: source.kind},
        owners=list(OWNERS),
        code_version=source.code_version,
        description=unit.description,
        metadata=dict(unit.metadata) or None,
        pool=unit.pool,
        retry_policy=TRANSIENT_RETRY_POLICY,
        required_resource_keys={CLOUD_RESOURCE, *source.export_resources},
    )
    def _export(context: AssetExecutionContext, config: run_config_class) -> MaterializeResult:  # type: ignore[valid-type]
        """Exports the source to S3 so BigQuery can be brought up to date."""
        with retry_only_transient(f"{source.kind} export of {unit.name}", context.log.warning):
            started = time.monotonic()
            # A table that hashes columns fails here without its key, before any export.
            check_hash_key(source.config.bigquery.hash_key.env_var, unit.settings, unit.name)
            export = source.start_export(context, unit, config)
            if waits(config.wait_for_completion, unit.wait):
                export = source.wait_for_export(context, unit, export)
                mode = WaitMode.BLOCKING
            else:
                context.log.info(
                    f"{unit.name}: sensor mode: not waiting for export(s) {list(export.ids)}; "
                    "export_completion_sensor requests the BigQuery load when they complete"
                )
                mode = WaitMode.SENSOR
        return MaterializeResult(
            metadata={
                **export.metadata,
                WAIT_MODE_METADATA: mode.value,
                DURATION_METADATA: round(time.monotonic() - started, 3),
            }
        )

    return _export


def build_table_asset(source: Source, unit: ExportUnit, table: TableTarget) -> AssetsDefinition:
    """The asset that loads one BigQuery table from `unit`'s export, with its row-count check.

    A source that loads in steps (`Source.steps_of_load`) gets the same asset as a graph
    (`load_steps`).
    """
    steps = source.steps_of_load()
    if steps is not None:
        return build_stepped_table_asset(source, unit, table, steps)
    run_config_class = source.load_config
    key = table.key

    # A multi_asset of one, only because it can leave out both the materialization and the
    # check result (skippable + can_subset) when the load is left to the completion sensor.
    @multi_asset(
        name=key.to_python_identifier(),
        specs=[
            AssetSpec(
                key=key,
                deps=[unit.key],
                group_name=source.kind,
                kinds={"bigquery"},
                tags={SOURCE_TAG: source.kind},
                owners=list(OWNERS),
                code_version=source.code_version,
                description=table.description,
                metadata=dict(table.metadata) or None,
                skippable=True,
            )
        ],
        check_specs=[
            AssetCheckSpec(
                ROW_COUNT_CHECK, asset=key, description=source.row_count_check_description
            ),
            AssetCheckSpec(SCHEMA_CHECK, asset=key, description=SCHEMA_CHECK_DESCRIPTION),
        ],
        can_subset=True,
        pool=table.pool,
        retry_policy=TRANSIENT_RETRY_POLICY,
        required_resource_keys={CLOUD_RESOURCE, *source.load_resources},
    )
    def _bigquery_table(
        context: AssetExecutionContext,
        config: run_config_class,  # type: ignore[valid-type]
    ) -> Iterator[MaterializeResult]:
        """Keeps the BigQuery copy of the source table up to date for analysts."""
        if key not in context.selected_asset_keys:
            return  # only the check was selected: it runs with a load, not on its own
        what = f"BigQuery load of {source.kind} table {table.source_name}"
        with retry_only_transient(what, context.log.warning):
            to_load, deferred = export_to_load(context, source, unit, config)
            if deferred is not None:
                context.log.info(f"{table.source_name}: not loading now: {deferred}")
                return
            context.log.info(
                f"{table.source_name}: loading export(s) {list(to_load.ids)} from the "
                f"{to_load.found_in}"
            )
            started = time.monotonic()
            try:
                outcome = source.load_table(context, unit, table, to_load)
            except SchemaChangeRejected as rejected:
                # The load fails; the check still shows what changed.
                yield schema_check_result(key, rejected.change, rejected=True)
                raise
        metadata = {**outcome.metadata, DURATION_METADATA: round(time.monotonic() - started, 3)}
        if TABLE_NAME_METADATA in metadata:
            link = context.resources.bigquery.table_url(metadata[TABLE_NAME_METADATA])
            metadata[BIGQUERY_TABLE_URL_METADATA] = MetadataValue.url(link)
        context.log.info(load_line(table.source_name, metadata))
        yield MaterializeResult(
            asset_key=key,
            metadata=metadata,
            check_results=[
                AssetCheckResult(
                    check_name=ROW_COUNT_CHECK,
                    asset_key=key,
                    passed=outcome.check_passed,
                    severity=AssetCheckSeverity.ERROR,
                    metadata=outcome.check_metadata,
                    description=outcome.check_description,
                ),
                schema_check_result(key, outcome.schema_change),
            ],
        )

    return _bigquery_table


SCHEMA_CHECK_DESCRIPTION = (
    "Warns when the source's columns changed since the previous load: columns added, removed "
    "or retyped (old -> new type), listed in the check's metadata"
)


def schema_check_result(
    key: Any, change: SchemaChange | None, rejected: bool = False
) -> AssetCheckResult:
    """The `schema_unchanged` result (WARN) of a load, from its comparison with the previous."""
    if change is None:
        description = "no export applied: nothing compared"
        metadata: dict[str, Any] = {}
    else:
        metadata = {
            k: MetadataValue.json(v) if isinstance(v, list | dict) else v
            for k, v in change.as_metadata().items()
        }
        if change.first_load:
            description = "first load: no previous load to compare with"
        else:
            description = change.summary()
        if rejected:
            description += " (the table's schema_changes policy failed the load)"
    return AssetCheckResult(
        check_name=SCHEMA_CHECK,
        asset_key=key,
        passed=change is None or not change.changed,
        severity=AssetCheckSeverity.WARN,
        metadata=metadata,
        description=description,
    )


def load_line(source_name: str, metadata: dict[str, Any]) -> str:
    """`Orders: 2,000 rows in project.dataset.table (full, 1.2 s)`: a load in one line."""
    rows = metadata.get(ROW_COUNT_METADATA)
    counted = f"{rows:,} rows" if isinstance(rows, int) else "loaded"
    how = ", ".join(
        str(part)
        for part in (metadata.get(LOAD_METADATA), readable(metadata[DURATION_METADATA]))
        if part
    )
    return f"{source_name}: {counted} in {metadata.get(TABLE_NAME_METADATA)} ({how})"


def export_to_load(
    context: AssetExecutionContext, source: Source, unit: ExportUnit, run_config: Any
) -> tuple[ToLoad, str | None]:
    """The export(s) to load, and why not to load them now (sensor mode), if so.

    Run config first (the reload path), else the export asset's latest
    materialization. An export started in sensor mode is left to the
    completion sensor while it runs: in the run that started it, and in any
    other run while AWS says it is not finished.
    """
    requested = source.requested_export_ids(run_config)
    if requested:
        return ToLoad(tuple(requested), "run config"), None
    event = context.instance.get_latest_materialization_event(unit.key)
    materialization = event.asset_materialization if event is not None else None
    metadata = {k: v.value for k, v in materialization.metadata.items()} if materialization else {}
    ids = source.export_ids(metadata)
    if event is None or not ids:
        raise NothingToLoadError(
            f"no export to load: materialize {unit.key.to_user_string()} first, or name an "
            f"export in this asset's run config ({', '.join(run_config.model_fields)})"
        )
    to_load = ToLoad(ids, f"latest materialization of {unit.key.to_user_string()}")
    if metadata.get(WAIT_MODE_METADATA) != WaitMode.SENSOR.value:
        return to_load, None
    if event.run_id == context.run.run_id:
        return to_load, (
            f"this run started export {ids[-1]} in sensor mode (wait_for_completion: false) and "
            "did not wait: export_completion_sensor requests this load when it completes"
        )
    state = source.export_state(context.resources, ids)
    if state.status == "RUNNING":
        return to_load, (
            f"export {ids[-1]} (sensor mode) is not finished ({state.detail}): "
            "export_completion_sensor requests this load when it completes"
        )
    return to_load, None
