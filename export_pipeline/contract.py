"""What a source is to Dagster: the contract every source folder implements.

A source is a kind of AWS database whose data reach BigQuery through an
export to S3 (DynamoDB tables, RDS snapshots). Every source gets the same two
assets, built once for all in `export_pipeline.graph`:

- an **export asset** per `ExportUnit` (one DynamoDB table, one RDS instance
  or cluster): it starts an export, or adopts one already running, and waits
  for it (blocking) or leaves that to `export_completion_sensor` (sensor);
- a **BigQuery table asset** per `TableTarget` the export produces, with its
  `row_count_matches_export` check: it loads the export named in run config
  (the reload path) or the one the export asset last recorded.

What they share is defined here once: asset keys' shape, tags and kinds,
owners, pool names, the wait mode, the metadata the assets hand over, the
retry policy. A source supplies only its own logic, by subclassing `Source`:
start or adopt an export, wait for it, say how an export is doing, load one
table. Adding a source means one folder holding such a subclass and one line
in `export_pipeline.registry`.

This module imports nothing of any source.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from dagster import AssetExecutionContext, AssetKey, Config, SensorDefinition
from pydantic import Field

from export_pipeline.config import PipelineConfig, WaitMode

# Tag on every asset and on every run a sensor requests: which source it belongs to.
SOURCE_TAG = "export_pipeline/source"
OWNERS = ("team:data-platform",)
ROW_COUNT_CHECK = "row_count_matches_export"
# Table assets: columns added, removed or retyped against the previous load (WARN).
SCHEMA_CHECK = "schema_unchanged"
# Export asset metadata: how the asset waited ("blocking" or "sensor").
WAIT_MODE_METADATA = "wait_mode"
# The BigQuery table a table asset writes (Dagster's own metadata names).
ROW_COUNT_METADATA = "dagster/row_count"
TABLE_NAME_METADATA = "dagster/table_name"
# Metadata every source records under the same names, for the same things.
# Export assets: one line saying what was exported (also the run summary's line).
EXPORT_SUMMARY_METADATA = "export_summary"
# Table assets: how the table was written (full, incremental, replace, up_to_date).
LOAD_METADATA = "load"
# Table assets: a link that opens the table (`TableId.link`).
BIGQUERY_TABLE_URL_METADATA = "bigquery_table_url"
# Export and table assets: seconds the step took.
DURATION_METADATA = "duration_seconds"


def pool_name(*parts: str) -> str:
    """A Dagster pool name from its parts: letters, digits and `_` only.

    Every export source and every BigQuery table has a pool of its own, with
    limit 1 (deploy/dagster.yaml), so two runs never export or load the same
    thing at once.
    """
    return re.sub(r"[^A-Za-z0-9_]", "_", "_".join(parts))


def bigquery_table_pool(dataset: str, table: str) -> str:
    """The pool of a BigQuery table: one load into it at a time, whatever its source."""
    return pool_name("bigquery", dataset, table)


def bigquery_asset_key(dataset: str, table: str) -> AssetKey:
    """`["bigquery", <dataset>, <table>]`: the asset key says where the data live."""
    return AssetKey(["bigquery", dataset, table])


class ExportRunConfig(Config):
    """Run config every export asset takes; a source may add fields of its own."""

    wait_for_completion: bool | None = Field(
        default=None,
        description="Unset: as pipeline.yaml's `wait` for this source says (blocking when it "
        "says nothing). true (blocking): wait for the export, up to the source's "
        "export_timeout_minutes — for small tables and `dagster job execute` in CI. "
        "false (sensor): start the export, record it and return at once; "
        "export_completion_sensor requests the BigQuery load when it completes, so no worker "
        "is held for hours.",
    )


class LoadRunConfig(Config):
    """Run config every table asset takes: a source adds the fields naming an export."""


def waits(run_config_value: bool | None, configured: WaitMode) -> bool:
    """Blocking wait or not: run config first, then the source's `wait` in pipeline.yaml."""
    if run_config_value is not None:
        return run_config_value
    return configured is not WaitMode.SENSOR


@dataclass(frozen=True)
class TableTarget:
    """One BigQuery table an export produces, and its asset."""

    key: AssetKey
    source_name: str  # the table as the source names it ("Orders", "shop.customers")
    description: str
    pool: str
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def table(self) -> str:
        """The BigQuery table name (the key's last part)."""
        return self.key.path[-1]


@dataclass(frozen=True)
class ExportUnit:
    """What one export asset exports: a DynamoDB table, an RDS instance's snapshot."""

    name: str  # the source's identifier of it: table name, instance identifier
    key: AssetKey
    description: str
    pool: str
    wait: WaitMode
    tables: tuple[TableTarget, ...]
    settings: Any  # the source's own configuration of it (a pipeline.yaml entry)
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Export:
    """An export an export asset started or adopted: its ids and what to record of it.

    `ids` are what a load needs to find it again (DynamoDB: the ARNs of a
    chain, in load order; RDS: the task identifier). `details` is the
    source's own (descriptions, the snapshot), for its `wait_for_export`.
    """

    ids: tuple[str, ...]
    metadata: dict[str, Any]
    details: Any = None


@dataclass(frozen=True)
class ExportState:
    """What AWS says of an export: done, failed (with why) or still running."""

    status: Literal["COMPLETED", "FAILED", "RUNNING"]
    detail: str = ""


@dataclass(frozen=True)
class ToLoad:
    """The export(s) a table asset run loads, and where that came from (for its log)."""

    ids: tuple[str, ...]
    found_in: str


@dataclass
class LoadOutcome:
    """What a table asset reports: its metadata, its row-count check, its schema change.

    `schema_change`: an `export_pipeline.bigquery.schema_policy.SchemaChange`
    (how the columns differ from the previous load's), or None when nothing
    was loaded; the `schema_unchanged` check reports it.
    """

    metadata: dict[str, Any]
    check_passed: bool
    check_description: str
    check_metadata: dict[str, Any] = field(default_factory=dict)
    schema_change: Any = None


class StepsOfLoad(ABC):
    """A table load in Dagster steps over parts of its export (a source's option).

    The table asset then runs as a graph: `split` (one step) names the parts,
    or None to load in that one step as `Source.load_table` does; `learn`
    (a step per part) finds what each part holds; `merge` (one step) decides
    from all of them how every part is written; `convert` (a step per part)
    writes its part; `publish` (one step) loads the table from every part.
    Each step may run in a process or pod of its own, so everything passed
    between them is a small picklable value (never a local path of another
    step, never a secret). A part has a `name` (letters, digits, `_`).
    """

    @abstractmethod
    def split(
        self, context: Any, unit: ExportUnit, table: TableTarget, to_load: ToLoad
    ) -> Sequence[Any] | None:
        """The parts of the export to load in steps, or None to load it in one step."""

    @abstractmethod
    def learn(self, context: Any, unit: ExportUnit, table: TableTarget, part: Any) -> Any:
        """What one part holds (its summary)."""

    @abstractmethod
    def merge(
        self,
        context: Any,
        unit: ExportUnit,
        table: TableTarget,
        to_load: ToLoad,
        parts: Sequence[Any],
    ) -> Any:
        """One plan for every part, from their summaries (verifies the export as a whole).

        `parts` may lack some: a re-execution after a killed worker does not
        always run mapped steps the killed run never started, so the source
        makes up for a missing part here rather than fail."""

    @abstractmethod
    def convert(
        self, context: Any, unit: ExportUnit, table: TableTarget, part: Any, plan: Any
    ) -> Any:
        """Write one part by the plan; returns where its output is."""

    @abstractmethod
    def publish(
        self,
        context: Any,
        unit: ExportUnit,
        table: TableTarget,
        to_load: ToLoad,
        plan: Any,
        converted: Sequence[Any],
    ) -> LoadOutcome:
        """Load the table from every converted part (then remove what they staged).

        As in `merge`, a part missing from `converted` is made up for here."""


class Source(ABC):
    """A kind of AWS database, as the graph builders see it, for one configuration.

    Class attributes describe the source; methods hold its logic. `context`
    is the asset's execution context: its `resources` hold the clients named
    in `export_resources` / `load_resources`, its `log` takes progress lines.
    """

    kind: ClassVar[str]  # group name, tag value and job name part: "dynamodb", "rds"
    title: ClassVar[str]  # what its units are, in words: "DynamoDB tables", "RDS snapshots"
    export_kinds: ClassVar[frozenset[str]]  # the export asset's kinds, besides none
    code_version: ClassVar[str]  # bump when a change alters what the assets produce
    export_resources: ClassVar[frozenset[str]]  # resource keys the export asset uses
    load_resources: ClassVar[frozenset[str]]  # resource keys a table asset uses
    state_resources: ClassVar[frozenset[str]]  # resource keys `export_state` uses
    export_config: ClassVar[type[ExportRunConfig]]
    load_config: ClassVar[type[LoadRunConfig]]
    row_count_check_description: ClassVar[str]
    # Table asset metadata naming the export the table was loaded from (its last id).
    loaded_export_metadata: ClassVar[str]

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config

    # ----------------------------------------------------------------- the graph

    @abstractmethod
    def units(self) -> list[ExportUnit]:
        """One unit per export asset of the configuration, with the tables it produces."""

    def sensors(self) -> list[SensorDefinition]:
        """Sensors of this source's own (e.g. one per RDS instance for new snapshots)."""
        return []

    # ----------------------------------------------------------------- exporting

    @abstractmethod
    def start_export(
        self, context: AssetExecutionContext, unit: ExportUnit, run_config: ExportRunConfig
    ) -> Export:
        """Start the export (idempotently), or adopt the same one another run started."""

    @abstractmethod
    def wait_for_export(
        self, context: AssetExecutionContext, unit: ExportUnit, export: Export
    ) -> Export:
        """Wait until AWS reports `export` done; fail at once, saying why, if it failed."""

    @abstractmethod
    def export_ids(self, metadata: Mapping[str, Any]) -> tuple[str, ...]:
        """The export ids an export asset's materialization metadata records."""

    @abstractmethod
    def export_state(self, resources: Any, ids: Sequence[str]) -> ExportState:
        """One describe call per id; used by the completion sensor and the table assets."""

    # ----------------------------------------------------------------- loading

    def steps_of_load(self) -> StepsOfLoad | None:
        """How a table load runs as several steps, if this source splits it (default: one)."""
        return None

    @abstractmethod
    def requested_export_ids(self, run_config: LoadRunConfig) -> tuple[str, ...] | None:
        """The export(s) a table asset's run config names (the reload path), if any."""

    @abstractmethod
    def load_run_config(self, ids: Sequence[str]) -> dict[str, Any]:
        """A table asset's op config that makes it load exactly these exports."""

    @abstractmethod
    def load_table(
        self,
        context: AssetExecutionContext,
        unit: ExportUnit,
        table: TableTarget,
        to_load: ToLoad,
    ) -> LoadOutcome:
        """Bring one BigQuery table up to date from the export(s) `to_load` names."""
