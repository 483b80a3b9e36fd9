"""The table asset of a source whose loads run in steps (`contract.StepsOfLoad`).

The same asset as `assets.build_table_asset` builds — key, description,
metadata, owners, kinds, tags, both checks, the dependency on the export
asset, the table's pool on the step that writes BigQuery — but computed by a
graph with dynamic mapping, so that each part of a big export is its own
step (its own process with the multiprocess executor, its own pod with
`k8s_job_executor`):

    prepare ─┬─ parts ─map→ learn ─collect→ merge ─┐
             │        └─map→ convert(plan) ─collect→ publish
             └─ request ───────────────────────────┘

`prepare` decides what to load exactly as the one-step asset does (run
config, else the export asset's latest materialization; sensor mode defers)
and asks the source for parts. No parts (an incremental load, say): the
mapped steps do not run, and `publish` loads in one step. Deferred, or only
a check selected: `prepare` emits no request, so every later step is
skipped and nothing is materialized. No step starts an export: a re-executed
step finds the export recorded by the export asset.
"""

# No `from __future__ import annotations`: Dagster reads the run config
# class from the op function's annotation, a class chosen per source.

import time
from dataclasses import dataclass
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetIn,
    AssetOut,
    AssetsDefinition,
    ConfigMapping,
    DynamicOut,
    DynamicOutput,
    In,
    MetadataValue,
    Nothing,
    OpExecutionContext,
    Out,
    Output,
    graph_multi_asset,
    op,
)

from export_pipeline.bigquery.schema_policy import SchemaChangeRejected
from export_pipeline.contract import (
    BIGQUERY_TABLE_URL_METADATA,
    DURATION_METADATA,
    OWNERS,
    ROW_COUNT_CHECK,
    SCHEMA_CHECK,
    SOURCE_TAG,
    TABLE_NAME_METADATA,
    ExportUnit,
    Source,
    StepsOfLoad,
    TableTarget,
    ToLoad,
)
from export_pipeline.errors import TRANSIENT_RETRY_POLICY, retry_only_transient


@dataclass(frozen=True)
class LoadRequest:
    """What `prepare` decided: the export(s) to load, and when the load began."""

    to_load: ToLoad
    started: float  # time.time() of prepare, for the load's duration over every step


def build_stepped_table_asset(
    source: Source, unit: ExportUnit, table: TableTarget, steps: StepsOfLoad
) -> AssetsDefinition:
    """The table asset of `table`, as a graph of steps over the parts of its export."""
    from export_pipeline.graph.assets import (  # shared with the one-step table asset
        CLOUD_RESOURCE,
        SCHEMA_CHECK_DESCRIPTION,
        export_to_load,
        load_line,
        schema_check_result,
    )

    run_config_class = source.load_config
    key = table.key
    name = key.to_python_identifier()
    check_specs = [
        AssetCheckSpec(ROW_COUNT_CHECK, asset=key, description=source.row_count_check_description),
        AssetCheckSpec(SCHEMA_CHECK, asset=key, description=SCHEMA_CHECK_DESCRIPTION),
    ]
    check_outputs = {spec.name: spec.get_python_identifier() for spec in check_specs}
    resources = {CLOUD_RESOURCE, *source.load_resources}
    what = f"BigQuery load of {source.kind} table {table.source_name}"

    @op(
        name=f"{name}__prepare",
        ins={"export": In(Nothing)},
        out={"parts": DynamicOut(), "request": Out(is_required=False)},
        retry_policy=TRANSIENT_RETRY_POLICY,
        required_resource_keys=resources,
    )
    def prepare(context: OpExecutionContext, config: run_config_class):  # type: ignore[valid-type]
        """Finds the export(s) to load and splits them into the parts of the next steps."""
        if key not in context.selected_asset_keys:
            return  # only a check was selected: it runs with a load, not on its own
        with retry_only_transient(what, context.log.warning):
            to_load, deferred = export_to_load(context, source, unit, config)  # type: ignore[arg-type]
            if deferred is not None:
                context.log.info(f"{table.source_name}: not loading now: {deferred}")
                return
            context.log.info(
                f"{table.source_name}: loading export(s) {list(to_load.ids)} from the "
                f"{to_load.found_in}"
            )
            started = time.time()
            parts = steps.split(context, unit, table, to_load)
        yield Output(LoadRequest(to_load, started), "request")
        if parts is None:
            context.log.info(f"{table.source_name}: loading in one step")
            return
        context.log.info(f"{table.source_name}: converting in {len(parts)} step(s) per pass")
        for part in parts:
            yield DynamicOutput(part, mapping_key=part.name, output_name="parts")

    @op(
        name=f"{name}__learn",
        retry_policy=TRANSIENT_RETRY_POLICY,
        required_resource_keys=resources,
    )
    def learn(context: OpExecutionContext, part: Any) -> Any:
        """Learns what one part of the export holds (its types and item counts)."""
        with retry_only_transient(f"{what}, {part.name}", context.log.warning):
            return steps.learn(context, unit, table, part)

    @op(
        name=f"{name}__merge",
        retry_policy=TRANSIENT_RETRY_POLICY,
        required_resource_keys=resources,
    )
    def merge(context: OpExecutionContext, request: Any, learned: list) -> Any:
        """Decides the table's columns once, from what every part holds.

        `request` is only waited for: without one (a deferred load) this step is skipped.
        """
        if not learned:
            return None  # loaded in one step by publish
        with retry_only_transient(what, context.log.warning):
            return steps.merge(context, unit, table, request.to_load, learned)

    @op(
        name=f"{name}__convert",
        retry_policy=TRANSIENT_RETRY_POLICY,
        required_resource_keys=resources,
    )
    def convert(context: OpExecutionContext, part: Any, plan: Any) -> Any:
        """Writes one part of the export with the columns every part shares."""
        with retry_only_transient(f"{what}, {part.name}", context.log.warning):
            return steps.convert(context, unit, table, part, plan)

    @op(
        name=f"{name}__publish",
        out={
            name: Out(Nothing, is_required=False),
            **{output: Out(Nothing, is_required=False) for output in check_outputs.values()},
        },
        pool=table.pool,
        retry_policy=TRANSIENT_RETRY_POLICY,
        required_resource_keys=resources,
    )
    def publish(context: OpExecutionContext, request: Any, plan: Any, converted: list):
        """Loads the BigQuery table from every converted part (or, without parts, the export)."""
        with retry_only_transient(what, context.log.warning):
            try:
                if plan is None:
                    outcome = source.load_table(context, unit, table, request.to_load)  # type: ignore[arg-type]
                else:
                    outcome = steps.publish(context, unit, table, request.to_load, plan, converted)
            except SchemaChangeRejected as rejected:
                yield schema_check_result(key, rejected.change, rejected=True)
                raise
        metadata = {
            **outcome.metadata,
            DURATION_METADATA: round(time.time() - request.started, 3),
        }
        if TABLE_NAME_METADATA in metadata:
            link = context.resources.bigquery.table_url(metadata[TABLE_NAME_METADATA])
            metadata[BIGQUERY_TABLE_URL_METADATA] = MetadataValue.url(link)
        context.log.info(load_line(table.source_name, metadata))
        yield Output(None, name, metadata=metadata)
        yield AssetCheckResult(
            check_name=ROW_COUNT_CHECK,
            asset_key=key,
            passed=outcome.check_passed,
            severity=AssetCheckSeverity.ERROR,
            metadata=outcome.check_metadata,
            description=outcome.check_description,
        )
        yield schema_check_result(key, outcome.schema_change)

    def forward_config(config: dict[str, Any]) -> dict[str, Any]:
        return {prepare.name: {"config": config}}

    @graph_multi_asset(
        name=name,
        outs={
            name: AssetOut(
                key=key,
                dagster_type=Nothing,
                is_required=False,
                kinds={"bigquery"},
                tags={SOURCE_TAG: source.kind},
                owners=list(OWNERS),
                code_version=source.code_version,
                description=table.description,
                metadata=dict(table.metadata) or None,
            )
        },
        ins={"export": AssetIn(key=unit.key, dagster_type=Nothing)},
        group_name=source.kind,
        check_specs=check_specs,
        can_subset=True,
        config=ConfigMapping(
            config_fn=forward_config, config_schema=run_config_class.to_config_schema()
        ),
    )
    def _bigquery_table(export):
        request_out = prepare(export)
        parts, request = request_out
        learned = parts.map(learn).collect()
        plan = merge(request, learned)
        converted = parts.map(lambda part: convert(part, plan)).collect()
        outputs = publish(request, plan, converted)
        return {
            name: getattr(outputs, name),
            **{output: getattr(outputs, output) for output in check_outputs.values()},
        }

    return _bigquery_table
