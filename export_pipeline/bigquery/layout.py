"""How a BigQuery table is laid out and governed: partitioning, clustering, options.

A `TableLayout` is built once per load from the table's configured
`bigquery:` settings (`table_settings.BigQueryTableSettings`) and the
BigQuery column names the pipeline gave the source's columns (settings name
source columns: DynamoDB attributes, RDS columns; a pipeline column such as
`_exported_at` may be named as it is). It renders the DDL clauses every
statement that (re)creates the table carries, the API fields of a table
created empty, and the encryption of the load jobs that stage its rows, so
that the table keeps its layout whichever way it is written:

- `CREATE [OR REPLACE] TABLE … PARTITION BY … CLUSTER BY … OPTIONS(…) AS
  SELECT …` (full replaces, schema rewrites, repartitioning copies);
- `tables.insert` with `timePartitioning` / `rangePartitioning` /
  `clustering` / `encryptionConfiguration` / policy tags (an incremental
  target created empty before its first MERGE, staging tables);
- `destinationEncryptionConfiguration` on every load job (staging tables).

Where the key goes: a table's key is part of the table (`kms_key_name` in
the DDL's OPTIONS, `encryptionConfiguration` in `tables.insert`); DDL jobs
take it only there (BigQuery does not take a job-level destination
encryption for DDL), and DML (MERGE, the transactions' DELETE/INSERT)
writes under the key of the table it writes, so query jobs need no key of
their own. Load jobs name it, as BigQuery's load API asks.

Partitioning and clustering decide where rows are stored, so a table whose
stored layout differs from the configured one gets the configured one
before it is written (`layout_sync.prepare_layout`); `differences` says
what differs. Labels, expiration options, CMEK and policy tags are patched.

Why column types are checked here: BigQuery partitions on a DATE, DATETIME
or TIMESTAMP column (or an INT64 for integer ranges) and clusters on
top-level, non-repeated BIGNUMERIC, BOOL, DATE, DATETIME, GEOGRAPHY, INT64,
NUMERIC, STRING or TIMESTAMP columns; a misconfigured column fails the load
with one line naming the table, the field and the column before anything is
published, instead of a BigQuery error after the staging load.

Ingestion-time partitioning cannot be created by `CREATE TABLE … AS SELECT`
(BigQuery rejects `PARTITION BY _PARTITIONDATE` there), so such tables are
created through the API and written with DML (see `needs_api_creation`).

This module holds the values and their SQL; `layout_sync` applies them to
tables (layout changes, patches, the MERGE's pruning filter).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.cloud import bigquery
from google.cloud.bigquery import SchemaField

from export_pipeline.bigquery.sql import standard_type, string_literal
from export_pipeline.bigquery.tables import BigQueryPublishError
from export_pipeline.naming import quote_identifier
from export_pipeline.table_settings import BigQueryTableSettings

TIME_PARTITION_TYPES = ("DATE", "DATETIME", "TIMESTAMP")
CLUSTER_TYPES = (
    "BIGNUMERIC",
    "BOOL",
    "DATE",
    "DATETIME",
    "GEOGRAPHY",
    "INT64",
    "NUMERIC",
    "STRING",
    "TIMESTAMP",
)
_DAY_MS = 86_400_000


class LayoutError(BigQueryPublishError):
    """A configured layout column is missing or of a type BigQuery cannot use there."""


@dataclass(frozen=True)
class Partition:
    """One partitioning spec, on BigQuery column names.

    `kind`: "column" (time-unit column), "ingestion" or "integer_range".
    """

    kind: str
    column: str | None = None
    granularity: str = "DAY"
    start: int = 0
    end: int = 0
    interval: int = 0

    def ddl(self, column_type: str | None) -> str:
        """The `PARTITION BY` expression (`column_type`: the column's GoogleSQL type)."""
        if self.kind == "integer_range":
            assert self.column is not None
            return (
                f"RANGE_BUCKET({quote_identifier(self.column)}, "
                f"GENERATE_ARRAY({self.start}, {self.end}, {self.interval}))"
            )
        if self.kind == "ingestion":
            if self.granularity == "DAY":
                return "_PARTITIONDATE"
            return f"TIMESTAMP_TRUNC(_PARTITIONTIME, {self.granularity})"
        assert self.column is not None
        column = quote_identifier(self.column)
        if column_type == "DATE" and self.granularity == "DAY":
            return column
        return f"{column_type}_TRUNC({column}, {self.granularity})"

    def api(self, expiration_ms: int | None) -> dict[str, Any]:
        """The table resource fields (`timePartitioning` or `rangePartitioning`)."""
        if self.kind == "integer_range":
            return {
                "rangePartitioning": {
                    "field": self.column,
                    "range": {
                        "start": str(self.start),
                        "end": str(self.end),
                        "interval": str(self.interval),
                    },
                }
            }
        spec: dict[str, Any] = {"type": self.granularity}
        if self.column is not None:
            spec["field"] = self.column
        if expiration_ms is not None:
            spec["expirationMs"] = str(expiration_ms)
        return {"timePartitioning": spec}

    @classmethod
    def of_table(cls, table: bigquery.Table) -> Partition | None:
        """The partitioning a table has (as the API reports it), or None."""
        if table.range_partitioning is not None:
            r = table.range_partitioning.range_
            return cls(
                "integer_range",
                table.range_partitioning.field,
                start=int(r.start),
                end=int(r.end),
                interval=int(r.interval),
            )
        tp = table.time_partitioning
        if tp is None:
            return None
        return cls("column" if tp.field else "ingestion", tp.field, (tp.type_ or "DAY").upper())

    def same_as(self, other: Partition | None) -> bool:
        """Whether `other` stores rows the same way (column names are case-insensitive)."""
        if other is None:
            return False
        return (
            self.kind == other.kind
            and (self.column or "").lower() == (other.column or "").lower()
            and (self.kind == "integer_range" or self.granularity == other.granularity)
            and (self.start, self.end, self.interval) == (other.start, other.end, other.interval)
        )


@dataclass(frozen=True)
class TableLayout:
    """A table's partitioning, clustering, labels, options, CMEK and policy tags.

    Column names are BigQuery names. `labels` are the configured ones; the
    pipeline's own labels are merged in by `labels_with` (the pipeline's win
    on a clash: they are how its tables are recognised).
    """

    table: str = ""
    partition: Partition | None = None
    cluster_by: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    kms_key_name: str | None = None
    policy_tags: tuple[tuple[str, str], ...] = ()
    require_partition_filter: bool = False
    partition_expiration_days: float | None = None

    @classmethod
    def from_settings(
        cls,
        table: str,
        settings: BigQueryTableSettings,
        names: Mapping[str, str],
        default_cluster_by: Sequence[str] | None = None,
    ) -> TableLayout:
        """Resolve the configured source column names to BigQuery ones.

        `table`: the name errors use (the configured source table).
        `names`: source column name -> BigQuery column name. A name that is
        not a source column but is a BigQuery column (e.g. `_exported_at`)
        stands for itself. `default_cluster_by`: source columns to cluster
        on when `cluster_by` is not configured (the key).
        """
        columns = {n.lower(): n for n in names.values()}

        def resolve(field: str, name: str) -> str:
            if name in names:
                return names[name]
            if name.lower() in columns:
                return columns[name.lower()]
            raise LayoutError(
                f"{table}: bigquery.{field}: column {name!r} does not exist in the table "
                f"(its columns: {', '.join(sorted(names)) or 'none'}); fix the setting in "
                "pipeline.yaml"
            )

        partition = None
        spec = settings.partition
        if spec is not None:
            if spec.integer_range is not None:
                r = spec.integer_range
                partition = Partition(
                    "integer_range",
                    resolve("partition.integer_range.column", r.column),
                    start=r.start,
                    end=r.end,
                    interval=r.interval,
                )
            elif spec.ingestion is not None:
                partition = Partition("ingestion", None, spec.ingestion.value)
            else:
                assert spec.column is not None
                granularity = spec.granularity.value if spec.granularity else "DAY"
                partition = Partition(
                    "column", resolve("partition.column", spec.column), granularity
                )
        cluster_source = settings.cluster_by
        field = "cluster_by"
        if cluster_source is None:
            cluster_source = list(default_cluster_by or [])[:4]
            field = "cluster_by (default: the key)"
        return cls(
            table=table,
            partition=partition,
            cluster_by=tuple(resolve(field, c) for c in cluster_source),
            labels=tuple(sorted(settings.labels.items())),
            kms_key_name=settings.kms_key_name,
            policy_tags=tuple(
                sorted((resolve("policy_tags", c), tag) for c, tag in settings.policy_tags.items())
            ),
            require_partition_filter=settings.require_partition_filter,
            partition_expiration_days=settings.partition_expiration_days,
        )

    # ------------------------------------------------------------------ checks

    def check(self, schema: Sequence[SchemaField]) -> None:
        """Fail with one line if a layout column is missing from `schema` or mistyped."""
        by_name = {f.name.lower(): f for f in schema}

        def field(setting: str, name: str) -> SchemaField:
            found = by_name.get(name.lower())
            if found is None:
                raise LayoutError(
                    f"{self.table}: bigquery.{setting}: column {name!r} is not in the loaded "
                    f"table (columns: {', '.join(f.name for f in schema)}); fix the setting in "
                    "pipeline.yaml"
                )
            return found

        def kind(f: SchemaField) -> str:
            return "ARRAY" if f.mode == "REPEATED" else standard_type(f.field_type)

        p = self.partition
        if p is not None and p.kind == "column":
            assert p.column is not None
            f = field("partition.column", p.column)
            if kind(f) not in TIME_PARTITION_TYPES:
                raise LayoutError(
                    f"{self.table}: bigquery.partition.column: column {p.column!r} is "
                    f"{kind(f)}; BigQuery partitions on DATE, DATETIME or TIMESTAMP columns "
                    "(or use integer_range or ingestion)"
                )
            if kind(f) == "DATE" and p.granularity == "HOUR":
                raise LayoutError(
                    f"{self.table}: bigquery.partition.granularity: HOUR needs a DATETIME or "
                    f"TIMESTAMP column; {p.column!r} is DATE"
                )
        if p is not None and p.kind == "integer_range":
            assert p.column is not None
            f = field("partition.integer_range.column", p.column)
            if kind(f) != "INT64":
                raise LayoutError(
                    f"{self.table}: bigquery.partition.integer_range.column: column "
                    f"{p.column!r} is {kind(f)}; integer-range partitioning needs INT64"
                )
        for name in self.cluster_by:
            f = field("cluster_by", name)
            if kind(f) not in CLUSTER_TYPES:
                raise LayoutError(
                    f"{self.table}: bigquery.cluster_by: column {name!r} is {kind(f)}; "
                    f"BigQuery clusters on top-level {', '.join(CLUSTER_TYPES)} columns"
                )
        for name, _tag in self.policy_tags:
            field("policy_tags", name)

    # ------------------------------------------------------------------ rendering

    @property
    def needs_api_creation(self) -> bool:
        """Ingestion-time partitioning: CTAS cannot create it (see the module docstring)."""
        return self.partition is not None and self.partition.kind == "ingestion"

    def labels_with(self, pipeline_labels: Mapping[str, str] | None) -> dict[str, str]:
        """The configured labels with the pipeline's own on top."""
        return {**dict(self.labels), **dict(pipeline_labels or {})}

    def ddl_clauses(self, schema: Sequence[SchemaField]) -> str:
        """`PARTITION BY … CLUSTER BY …` for a CTAS producing `schema` ("" when none)."""
        types = {f.name.lower(): standard_type(f.field_type) for f in schema}
        parts = []
        if self.partition is not None:
            column_type = types.get((self.partition.column or "").lower())
            parts.append(f"PARTITION BY {self.partition.ddl(column_type)}")
        if self.cluster_by:
            parts.append(f"CLUSTER BY {', '.join(quote_identifier(c) for c in self.cluster_by)}")
        return "\n".join(parts)

    def options(self) -> dict[str, str]:
        """Table OPTIONS beyond description and labels, as GoogleSQL literals."""
        out: dict[str, str] = {}
        if self.kms_key_name is not None:
            out["kms_key_name"] = string_literal(self.kms_key_name)
        if self.partition is not None:
            out["require_partition_filter"] = "TRUE" if self.require_partition_filter else "FALSE"
            if self.partition_expiration_days is not None:
                out["partition_expiration_days"] = repr(float(self.partition_expiration_days))
        return out

    @property
    def expiration_ms(self) -> int | None:
        if self.partition_expiration_days is None:
            return None
        return int(self.partition_expiration_days * _DAY_MS)

    @property
    def encryption(self) -> bigquery.EncryptionConfiguration | None:
        """The CMEK of the table and of every job writing it (None: Google-managed)."""
        if self.kms_key_name is None:
            return None
        return bigquery.EncryptionConfiguration(kms_key_name=self.kms_key_name)

    def tagged(self, schema: Sequence[SchemaField]) -> list[SchemaField]:
        """`schema` with the configured policy tags on their columns (others unchanged)."""
        tags = {c.lower(): tag for c, tag in self.policy_tags}
        out = []
        for f in schema:
            tag = tags.get(f.name.lower())
            if tag is None:
                out.append(f)
                continue
            api = copy.deepcopy(f.to_api_repr())  # the client returns its own dict
            api["policyTags"] = {"names": [tag]}
            out.append(SchemaField.from_api_repr(api))
        return out

    def new_table(
        self,
        reference: bigquery.TableReference,
        schema: Sequence[SchemaField],
        description: str | None,
        pipeline_labels: Mapping[str, str] | None,
    ) -> bigquery.Table:
        """An empty table resource with this layout (for `tables.insert`)."""
        table = bigquery.Table(reference, schema=self.tagged(schema))
        table.description = description
        table.labels = self.labels_with(pipeline_labels)
        self.set_storage(table)
        table.encryption_configuration = self.encryption
        return table

    def set_storage(self, table: bigquery.Table) -> None:
        """Set partitioning, clustering and the partition options on a table resource."""
        if self.partition is not None:
            for key, value in self.partition.api(self.expiration_ms).items():
                table._properties[key] = value
            table.require_partition_filter = self.require_partition_filter
        if self.cluster_by:
            table.clustering_fields = list(self.cluster_by)

    @property
    def storage_columns(self) -> list[str]:
        """The partitioning column (if any), then the clustering columns."""
        first = [self.partition.column] if self.partition and self.partition.column else []
        return [*first, *(c for c in self.cluster_by if c not in first)]

    def storage_patch(self, table: bigquery.Table) -> list[str]:
        """Set this partitioning and clustering on `table` where it differs; fields to patch.

        For after a CTAS that carried `ddl_clauses`: on BigQuery the table
        reports them and nothing is patched; bqemulator 1.4.0 keeps only a
        plain `PARTITION BY <column>` from DDL (see `layout_sync.ensure_storage`).
        """
        if not self.differences(table):
            return []
        table.clustering_fields = list(self.cluster_by) or None
        fields = ["clustering_fields"]
        if self.partition is not None:
            self.set_storage(table)
            kind = self.partition.kind
            fields.append("range_partitioning" if kind == "integer_range" else "time_partitioning")
        return fields

    # ------------------------------------------------------------------ comparison

    def differences(self, table: bigquery.Table) -> list[str]:
        """How the stored partitioning and clustering of `table` differ from this layout."""
        out = []
        current = Partition.of_table(table)
        if self.partition is None:
            if current is not None:
                out.append(f"partitioned by {current.kind} {current.column or ''}".rstrip())
        elif not self.partition.same_as(current):
            out.append(
                "partitioning "
                + (f"{current.kind} {current.column or ''}".rstrip() if current else "none")
                + f" -> {self.partition.kind} {self.partition.column or ''}".rstrip()
            )
        clustering = [c.lower() for c in (table.clustering_fields or [])]
        if clustering != [c.lower() for c in self.cluster_by]:
            out.append(f"clustering {clustering or 'none'} -> {list(self.cluster_by) or 'none'}")
        return out


def layout_of_table(table: bigquery.Table) -> TableLayout:
    """The storage layout (partitioning, clustering, options, CMEK) a table has now.

    What a rewrite of the table by itself (`evolve.reconcile_schema`) must
    keep: a `CREATE OR REPLACE` without these clauses would drop them.
    """
    partition = Partition.of_table(table)
    expiration = None
    if table.time_partitioning is not None and table.time_partitioning.expiration_ms:
        expiration = int(table.time_partitioning.expiration_ms) / _DAY_MS
    encryption = table.encryption_configuration
    return TableLayout(
        table=table.table_id,
        partition=partition,
        cluster_by=tuple(table.clustering_fields or ()),
        kms_key_name=encryption.kms_key_name if encryption is not None else None,
        require_partition_filter=bool(table.require_partition_filter) and partition is not None,
        partition_expiration_days=expiration if partition is not None else None,
        policy_tags=tuple(
            (f.name, f.policy_tags.names[0])
            for f in table.schema
            if f.policy_tags is not None and f.policy_tags.names
        ),
    )
