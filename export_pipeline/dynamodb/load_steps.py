"""DynamoDB's table loads in Dagster steps: a full export converted over groups of files.

`DynamoDBSource.steps_of_load` returns `DynamoDBLoadSteps`; the table asset
then runs as the graph of `export_pipeline.graph.load_steps`. A full export
is split into groups of `dynamodb.files_per_step` data files, each learned
and converted in its own step (`export_pipeline.dynamodb.fan_out`), and
published by `loading.load_exports` as any full export.

Incremental loads stay one step (`split` returns None): an incremental
export holds the changes of one window (minutes to hours of writes, usually
far less than the table), its conversion already spreads over processes
within the step, and merging needs every change of the chain in one staging
table: separate steps would add their start-up for little data.

Staging: with a `gcs` section, each convert step writes its Parquet to the
run's GCS folder (`GcsParquetStaging`) and publish has BigQuery's load jobs
read those gs:// URIs, so steps may run on any host; without one, Parquet
waits in a run-scoped folder of the Dagster instance's storage
(`LocalStaging`), which the steps of one host share. Staged Parquet is
removed after a successful publish, and kept after a failure so that
re-executing from the failed step finds it (GCS: the bucket's lifecycle
rule removes what a run never published).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from export_pipeline.config import PipelineConfig
from export_pipeline.contract import ExportUnit, LoadOutcome, StepsOfLoad, TableTarget, ToLoad
from export_pipeline.dynamodb import bigquery_tables as bq
from export_pipeline.dynamodb import fan_out, loading

STAGING_FOLDER = "export_pipeline_staging"


class DynamoDBLoadSteps(StepsOfLoad):
    """Learn types and convert per group of data files; merge and publish once."""

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config

    def split(
        self, context: Any, unit: ExportUnit, table: TableTarget, to_load: ToLoad
    ) -> Sequence[fan_out.FileGroup] | None:
        resources = context.resources
        manifests = loading.export_manifests(
            list(to_load.ids),
            table=unit.name,
            config=self.config,
            ddb=resources.dynamodb.get_client(),
            s3=resources.s3.get_client(),
            log=context.log.info,
        )
        if len(manifests) != 1 or manifests[0].is_incremental or not manifests[0].files:
            return None
        groups = fan_out.file_groups(manifests[0], self.config.dynamodb.files_per_step)
        context.log.info(
            f"{unit.name}: full export {manifests[0].export_arn}: {len(manifests[0].files)} data "
            f"file(s) in {len(groups)} group(s) of at most "
            f"{self.config.dynamodb.files_per_step} (dynamodb.files_per_step)"
        )
        return groups

    def _missing(
        self,
        context: Any,
        unit: ExportUnit,
        table: TableTarget,
        to_load: ToLoad,
        present: set[int],
        what: str,
    ) -> list[fan_out.FileGroup]:
        """The export's groups whose step output is not in `present` (their step never ran)."""
        missing = [
            group
            for group in self.split(context, unit, table, to_load) or []
            if group.number not in present
        ]
        if missing:
            context.log.warning(
                f"{unit.name}: {len(missing)} group(s) were not {what} by their own steps "
                f"({', '.join(g.name for g in missing)}: a re-execution after a killed worker); "
                "doing them in this step"
            )
        return missing

    def learn(
        self, context: Any, unit: ExportUnit, table: TableTarget, part: fan_out.FileGroup
    ) -> fan_out.GroupTypes:
        with tempfile.TemporaryDirectory(prefix=f"ddb-{unit.name}-learn-") as work_dir:
            return fan_out.learn_group_types(
                context.resources.s3.get_client(),
                part,
                Path(work_dir),
                personal_data=loading.personal_data(self.config, unit.name),
                max_workers=self.config.dynamodb.max_parallel_files,
                log=context.log.info,
            )

    def merge(
        self,
        context: Any,
        unit: ExportUnit,
        table: TableTarget,
        to_load: ToLoad,
        parts: Sequence[fan_out.GroupTypes],
    ) -> fan_out.ConversionPlan:
        learned = {part.group for part in parts}
        parts = [
            *parts,
            *(
                self.learn(context, unit, table, group)
                for group in self._missing(context, unit, table, to_load, learned, "learned")
            ),
        ]
        bigquery = context.resources.bigquery
        target = loading.table_id(bigquery, self.config, unit.name)
        with bigquery.get_client() as client:
            recorded = bq.recorded(client, target)
        plan = fan_out.merge_group_types(
            parts,
            recorded=recorded,
            personal_data=loading.personal_data(self.config, unit.name),
        )
        context.log.info(
            f"{unit.name}: {plan.item_count} items in {len(parts)} group(s) match the manifest; "
            f"{len(plan.columns)} column(s)"
        )
        return plan

    def convert(
        self,
        context: Any,
        unit: ExportUnit,
        table: TableTarget,
        part: fan_out.FileGroup,
        plan: fan_out.ConversionPlan,
    ) -> fan_out.GroupParquet:
        with (
            tempfile.TemporaryDirectory(prefix=f"ddb-{unit.name}-convert-") as work_dir,
            self.staging(context, unit, table) as staging,
        ):
            return fan_out.convert_group(
                context.resources.s3.get_client(),
                part,
                plan,
                Path(work_dir),
                staging,
                personal_data=loading.personal_data(self.config, unit.name),
                max_workers=self.config.dynamodb.max_parallel_files,
                log=context.log.info,
            )

    def publish(
        self,
        context: Any,
        unit: ExportUnit,
        table: TableTarget,
        to_load: ToLoad,
        plan: fan_out.ConversionPlan,
        converted: Sequence[fan_out.GroupParquet],
    ) -> LoadOutcome:
        done = {part.group for part in converted}
        converted = [
            *converted,
            *(
                self.convert(context, unit, table, group, plan)
                for group in self._missing(context, unit, table, to_load, done, "converted")
            ),
        ]
        result, staged_uris = fan_out.conversion_result(plan, converted)
        with self.staging(context, unit, table) as staging:
            outcome = loading.load_in_step(
                context,
                self.config,
                unit.name,
                unit.settings.mode,
                [plan.export_arn],
                loading.Converted(plan.export_arn, result, tuple(staged_uris)),
            )
            staging.delete([folder for group in converted for folder in group.folders])
        return outcome

    @contextmanager
    def staging(
        self, context: Any, unit: ExportUnit, table: TableTarget
    ) -> Iterator[fan_out.ParquetStaging]:
        """Where this run's steps stage `table`'s Parquet: the run's GCS folder when the
        configuration has a `gcs` section, else a run-scoped folder of the instance's
        storage (shared by the steps of one host)."""
        resources = context.resources
        with resources.gcs.staging(context.run.run_id) as gcs:
            if gcs is not None:
                target = loading.table_id(resources.bigquery, self.config, unit.name)
                yield fan_out.GcsParquetStaging(gcs, target)
                return
        storage = Path(context.instance.storage_directory())
        yield fan_out.LocalStaging(storage / STAGING_FOLDER / context.run.run_id / table.table)
