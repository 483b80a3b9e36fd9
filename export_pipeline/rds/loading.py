"""Loading one exported RDS table into BigQuery, lossless and atomically.

Only what is specific to RDS exports lives here; the BigQuery writes are the
shared layer's (`export_pipeline.bigquery`):

0. Every file's columns must hold the Parquet type AWS writes for their
   original type (the engine's `type_disagreement`: `rds/parquet_types`,
   `postgres/parquet_types`), else the table fails, nothing loaded.
1. The table's Parquet files go, unchanged, into a fresh staging table
   (`load_parquet_to_staging`) whose schema is what BigQuery's Parquet
   loader makes of AWS's types (`bigquery_schema_from_parquet`: decimals as
   NUMERIC or exact STRING). Each file is a `ParquetSource` whose stream is
   the S3 object's body, sent straight into a resumable upload: rows are
   never decoded in Python, nothing is copied to disk, and memory per upload
   is bounded by the client's resumable chunk (100 MiB), not by the file
   size. The staging row count is checked against the Parquet footers.
2. One query counts, per column that can meet unrepresentable values (zero
   dates, TIME beyond 24 h, non-UTF-8 CHAR, JSON BigQuery cannot parse), how
   many there are; that decides TIME vs STRING and whether a `<col>__raw`
   column keeps the originals.
3. `replace_table` swaps the new contents in with one `CREATE OR REPLACE
   TABLE … AS SELECT <typed expressions>, <snapshot time> AS _exported_at
   FROM staging`: if anything fails before or in it, the previous table is
   untouched. Column descriptions (each column's MySQL name and type) and
   the table description come with it.

Schema drift: BigQuery mirrors the newest snapshot, so a column the previous
BigQuery table had and the new snapshot lacks is not kept (its values exist
nowhere in the source any more). It is not dropped silently either: the
result names it (`columns_removed`) and `warn` says so.

Column names BigQuery cannot take are mapped with `naming.column_names`;
Parquet loads match columns by name, so such a table's files are first
rewritten with the new names (Arrow, in batches, through a temporary file).
Personal data (`RdsTableSettings.columns`) is handled in the same copy: an
excluded column is left out, a hashed one holds the HMAC text of its values
(`column_hashing`) and is a STRING column. These are the only cases where the
files are not passed through as they are.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import pyarrow as pa
from google.api_core.exceptions import NotFound
from google.cloud import bigquery

from export_pipeline.bigquery.deletes import KeptDeletes, count_live_rows
from export_pipeline.bigquery.gcs_staging import GcsStaging, delete_staged
from export_pipeline.bigquery.layout import LayoutError, TableLayout
from export_pipeline.bigquery.parquet_schema import bigquery_schema_from_parquet
from export_pipeline.bigquery.publish import SelectColumn, replace_table
from export_pipeline.bigquery.schema_policy import SchemaChange, SchemaPolicy
from export_pipeline.bigquery.staging import (
    ParquetSource,
    StagingLoadError,
    load_parquet_to_staging,
    staging_table_id,
)
from export_pipeline.bigquery.tables import BigQueryPublishError, TableId
from export_pipeline.column_hashing import HashKey
from export_pipeline.naming import (
    INTERNAL_PREFIX,
    PIPELINE_COLUMNS,
    column_names,
    quote_identifier,
)
from export_pipeline.rds.engine import MYSQL, ColumnMapping, Engine
from export_pipeline.rds.export_files import (
    ExportFilesError,
    ExportLocation,
    ParquetObject,
    TableInfo,
    inspect_table_files,
)
from export_pipeline.rds.parquet_rewrite import Rewrite, rewrite
from export_pipeline.rds.types import RAW_SUFFIX
from export_pipeline.s3_uri import s3_uri
from export_pipeline.table_settings import DeletesMode, RdsTableSettings

EXPORTED_AT_COLUMN = "_exported_at"


class RdsLoadError(RuntimeError):
    """A table could not be loaded; the message names the table and the cause."""


@dataclass(frozen=True)
class PlannedColumn:
    """One final column: where it comes from and how it is typed."""

    name: str  # BigQuery name (also the staging name)
    mapping: ColumnMapping
    raw_name: str  # name of the `__raw` column, used only when needed
    hashed: bool = False  # holds the HMAC text of the values (`column_hashing`)


@dataclass(frozen=True)
class ColumnProfile:
    """What the profiling query found about one fallible column's staged values."""

    # Non-NULL values the typed form cannot hold; for an ARRAY column whose export
    # also holds NULLs, its empty arrays too (a REPEATED column cannot tell them apart).
    misfits: int = 0
    fallback_misfits: int = 0  # values the whole-column fallback form cannot hold either
    nulls: int = 0  # NULL values (counted for ARRAY columns only)


@dataclass
class TableLoadResult:
    table_id: str
    row_count: int
    expected_row_count: int
    expected_row_count_source: str
    files: int
    bytes_loaded: int
    unrepresentable: dict[str, int]
    schema: list[bigquery.SchemaField]
    upload_seconds: float
    total_seconds: float
    replace_seconds: float = 0.0
    renamed_columns: dict[str, str] = field(default_factory=dict)
    # Columns of the previous BigQuery table that the new snapshot no longer has.
    columns_removed: list[str] = field(default_factory=list)
    # How the columns differ from the previous load's (`schema_policy`).
    schema_change: SchemaChange | None = None


def plan_columns(
    info: TableInfo, parquet_schema: pa.Schema | None, engine: Engine = MYSQL
) -> list[PlannedColumn]:
    """Final columns in table order, with BigQuery names and the engine's conversions."""
    if not info.columns:
        raise RdsLoadError(f"{info.target}: the export lists no columns (originalTypeMappings)")
    source_names = [name for name, _ in info.columns]
    if parquet_schema is not None and list(parquet_schema.names) != source_names:
        raise RdsLoadError(
            f"{info.target}: Parquet columns {parquet_schema.names} differ from the export's "
            f"column list {source_names}"
        )
    raw_sources = {name: _raw_source_name(name, source_names) for name in source_names}
    names = column_names([*source_names, *raw_sources.values()])
    staged_types: list[str] | None = None
    if parquet_schema is not None:
        # BigQuery's own Parquet conversion (`export_pipeline.bigquery`), on the BigQuery names.
        renamed = pa.schema(
            [f.with_name(names[f.name]) for f in parquet_schema]  # type: ignore[index]
        )
        staged_types = [f.field_type for f in bigquery_schema_from_parquet(renamed)]
    planned = []
    for index, (source, original_type) in enumerate(info.columns):
        staged = (
            staged_types[index]
            if staged_types is not None
            else engine.expected_staging_type(original_type)
        )
        planned.append(
            PlannedColumn(
                name=names[source],
                mapping=engine.map_column(source, original_type, staged),
                raw_name=names[raw_sources[source]],
            )
        )
    return planned


def governed_columns(
    info: TableInfo, columns: list[PlannedColumn], settings: RdsTableSettings
) -> list[PlannedColumn]:
    """The planned columns without the excluded ones, hashed ones typed STRING as loaded.

    A column named in `columns` that the table does not have fails the load:
    a misspelt name would otherwise let a personal-data column through.
    """
    source_names = {c.mapping.source_name for c in columns}
    unknown = sorted(set(settings.columns) - source_names)
    if unknown:
        raise RdsLoadError(
            f"{info.target}: columns {', '.join(map(repr, unknown))} configured as "
            f"exclude/hash are not columns of the table ({', '.join(sorted(source_names))}); "
            "fix the names under rds.instances[].tables in pipeline.yaml"
        )
    governed = []
    for column in columns:
        source = column.mapping.source_name
        if source in settings.excluded_columns:
            continue
        if source in settings.hashed_columns:
            mapping = dataclasses.replace(
                column.mapping,
                staging_type="STRING",
                target_type="STRING",
                conversion=type(column.mapping.conversion).AS_LOADED,
            )
            column = dataclasses.replace(column, mapping=mapping, hashed=True)
        governed.append(column)
    return governed


def _bytes_are_text(column: PlannedColumn) -> bool:
    """A binary Parquet column that holds text (MySQL CHAR, which AWS writes as bytes)."""
    return getattr(column.mapping, "conversion", None) == "char_bytes"


def _raw_source_name(name: str, taken: list[str]) -> str:
    candidate = name + RAW_SUFFIX
    while candidate in taken:
        candidate += "_"
    return candidate


def _check_same_schema(files: list[ParquetObject], target: str) -> pa.Schema | None:
    if not files:
        return None
    first = files[0].schema
    for other in files[1:]:
        if not other.schema.equals(first):
            raise RdsLoadError(
                f"{target}: {other.key} has schema {other.schema} but {files[0].key} has {first}"
            )
    return first


def _check_aws_types(info: TableInfo, schema: pa.Schema, where: str, engine: Engine) -> None:
    """Every column holds what AWS writes for its original type (MySQL: `parquet_types`),
    or the table fails before anything is loaded: a cast would change its values silently."""
    assert engine.type_disagreement is not None
    for (name, original_type), parquet_field in zip(info.columns, schema, strict=True):
        reason = engine.type_disagreement(name, original_type, parquet_field.type)
        if reason is not None:
            raise RdsLoadError(
                f"{info.target}: {where}: {reason}; nothing was loaded (the file is not what "
                "the export wrote for this table: export the snapshot again)"
            )


def _layout(
    info: TableInfo, columns: list[PlannedColumn], settings: RdsTableSettings
) -> TableLayout:
    """The table's layout on its BigQuery column names, checked against their final types.

    The final type of a fallible column can fall back to STRING when values
    do not fit; the check uses the mapped type, and `replace_table` checks
    again against the columns actually published.
    """
    names = {c.mapping.source_name: c.name for c in columns}
    names[EXPORTED_AT_COLUMN] = EXPORTED_AT_COLUMN
    try:
        layout = TableLayout.from_settings(
            info.target, settings.bigquery, names, settings.cluster_by
        )
        schema = [bigquery.SchemaField(c.name, c.mapping.target_type) for c in columns]
        layout.check([*schema, bigquery.SchemaField(EXPORTED_AT_COLUMN, "TIMESTAMP")])
    except LayoutError as error:
        raise RdsLoadError(f"{error}; nothing was loaded") from None
    return layout


def _staging_schema(columns: list[PlannedColumn]) -> list[bigquery.SchemaField]:
    return [bigquery.SchemaField(c.name, c.mapping.staging_type) for c in columns]


def _s3_source(s3: Any, bucket: str, obj: ParquetObject, change: Rewrite) -> ParquetSource:
    """One export file as a staging source, streamed from S3 when opened.

    When nothing is to change the stream is the GetObject body itself. With
    renames (column names BigQuery cannot take) or personal data (excluded or
    hashed columns) the file is rewritten through a temporary file first,
    since Parquet loads match columns by name: streamed in batches
    (`parquet_rewrite`), so memory is bounded by a batch and disk by twice
    the file's size.
    """

    @contextmanager
    def open_object() -> Iterator[BinaryIO]:
        body = s3.get_object(Bucket=bucket, Key=obj.key)["Body"]
        if not change.needed:
            yield body
            return
        with tempfile.TemporaryFile() as original, tempfile.TemporaryFile() as rewritten:
            for chunk in body.iter_chunks(1 << 20):
                original.write(chunk)
            original.seek(0)
            rewrite(original, rewritten, change)
            rewritten.seek(0)
            yield rewritten

    return ParquetSource(s3_uri(bucket, obj.key), obj.num_rows, obj.size, open_object)


def _profile(
    client: bigquery.Client, staging_sql: str, columns: list[PlannedColumn], engine: Engine
) -> dict[str, ColumnProfile]:
    """Per fallible column, how many non-NULL values its typed form cannot hold (and, for
    ARRAY columns and fallbacks, what decides the column's form), in one query.

    A condition holding a subquery (arrays, json keys) is computed as a column
    of an inner query and counted outside it: bqemulator's DuckDB takes
    minutes over such a subquery inside an aggregate, and a second over the
    same subquery in a plain SELECT. Plain conditions are counted directly,
    which the emulator runs faster; BigQuery runs both forms alike.
    """
    fallible = [c for c in columns if c.mapping.fallible]
    if not fallible:
        return {}
    conditions: list[tuple[str, str]] = []  # (result name, condition SQL)
    for index, column in enumerate(fallible):
        source = quote_identifier(column.name)
        mapping = column.mapping
        fits = engine.fits(mapping, source)
        conditions.append((f"c{index}", f"{source} IS NOT NULL AND NOT ({fits})"))
        if mapping.mode == "REPEATED":
            typed = engine.typed_expression(mapping, source)
            conditions.append((f"n{index}", f"{source} IS NULL"))
            conditions.append(
                (
                    f"e{index}",
                    f"{source} IS NOT NULL AND IF({fits}, ARRAY_LENGTH({typed}) = 0, FALSE)",
                )
            )
        if mapping.fallback is not None:
            fallback_fits = engine.fits(mapping.fallback, source)
            conditions.append((f"f{index}", f"{source} IS NOT NULL AND NOT ({fallback_fits})"))
    inner: list[str] = []
    counts: list[str] = []
    for name, condition in conditions:
        if "SELECT" in condition:
            flag = f"{INTERNAL_PREFIX}_{name}"
            inner.append(f"({condition}) AS {flag}")
            counts.append(f"COUNTIF({flag}) AS {name}")
        else:
            counts.append(f"COUNTIF({condition}) AS {name}")
    source_sql = f"(SELECT *, {', '.join(inner)} FROM {staging_sql})" if inner else staging_sql
    query = f"SELECT {', '.join(counts)} FROM {source_sql}"
    row = dict(next(iter(client.query(query).result())).items())
    profiles = {}
    for index, column in enumerate(fallible):
        nulls = int(row.get(f"n{index}") or 0)
        empties = int(row.get(f"e{index}") or 0) if nulls else 0
        profiles[column.name] = ColumnProfile(
            misfits=int(row[f"c{index}"] or 0) + empties,
            fallback_misfits=int(row.get(f"f{index}") or 0),
            nulls=nulls,
        )
    return profiles


def unrepresentable_counts(
    columns: list[PlannedColumn], profiles: dict[str, ColumnProfile]
) -> dict[str, int]:
    """The asset's `unrepresentable_values`: per column, the values its typed form cannot
    hold; where the column took its fallback form, the fallback's own misfits are
    counted under the `__raw` column that keeps them."""
    counts: dict[str, int] = {}
    for column in columns:
        profile = profiles.get(column.name)
        if profile is None or not profile.misfits:
            continue
        counts[column.name] = profile.misfits
        if column.mapping.fallback is not None and profile.fallback_misfits:
            counts[column.raw_name] = profile.fallback_misfits
    return counts


def _type_name(mapping: ColumnMapping) -> str:
    return f"ARRAY<{mapping.target_type}>" if mapping.mode == "REPEATED" else mapping.target_type


def final_select(
    columns: list[PlannedColumn],
    profiles: dict[str, ColumnProfile],
    exported_at: dt.datetime,
    engine: Engine = MYSQL,
) -> list[SelectColumn]:
    """The final table's columns: typed expressions over staging, with descriptions.

    Each is `typed` (`types.typed_expression` yields the target type by
    construction): no CAST is added around it, which on bqemulator would
    round the NUMERIC columns of a query using `SAFE.PARSE_JSON` or
    `SAFE.PARSE_DATE` (see `SelectColumn`); `replace_table` still checks
    the resulting column types.

    A column whose export holds a value its typed form cannot hold is, when
    its mapping has a `fallback`, built in that form for every row (an
    ARRAY column as JSON); a REPEATED column's description says whether its
    empty arrays stand for the source's NULLs or its empty arrays.
    """
    selects: list[SelectColumn] = []
    for column in columns:
        source = quote_identifier(column.name)
        mapping = column.mapping
        description = f"{engine.name} `{mapping.source_name}` {mapping.original_type}"
        profile = profiles.get(column.name, ColumnProfile())
        bad = profile.misfits
        if mapping.whole_column_text and bad:
            # Some value does not fit the typed column: keep the whole column as exact text.
            selects.append(
                SelectColumn(
                    column.name,
                    source,
                    "STRING",
                    description=f"{description}; text because {bad} value(s) do not fit "
                    f"{mapping.target_type}",
                    typed=True,
                )
            )
            continue
        raw_count = bad
        if bad and mapping.fallback is not None:
            description += f"; {mapping.fallback.target_type} because {bad} value(s) do not fit "
            description += _type_name(mapping)
            mapping, raw_count = mapping.fallback, profile.fallback_misfits
        elif mapping.mode == "REPEATED":
            description += (
                "; an empty array is a NULL of the source (the export holds no empty array)"
                if profile.nulls
                else "; an empty array is an empty array of the source (the export holds no NULL)"
            )
        typed = engine.typed_expression(mapping, source)
        selects.append(
            SelectColumn(
                column.name,
                typed,
                mapping.target_type,
                mode=mapping.mode,
                description=description,
                typed=True,
            )
        )
        if mapping.fallible and raw_count:
            selects.append(
                SelectColumn(
                    column.raw_name,
                    f"IF({source} IS NOT NULL AND ({typed}) IS NULL, {source}, NULL)",
                    mapping.raw_type,
                    description=f"Original value of `{mapping.source_name}` where it is not a "
                    f"valid {mapping.target_type} ({raw_count} row(s) in this export)",
                    typed=True,
                )
            )
    selects.append(
        SelectColumn.timestamp(EXPORTED_AT_COLUMN, exported_at, "Snapshot time of the RDS export")
    )
    hashed = {c.name for c in columns if c.hashed}
    return [
        dataclasses.replace(
            s, description=f"{s.description}; hashed: HMAC-SHA256 of the value's text"
        )
        if s.name in hashed
        else s
        for s in selects
    ]


def _columns_of(client: bigquery.Client, target: TableId) -> list[str]:
    """The BigQuery table's column names, or none when it does not exist yet."""
    try:
        return [f.name for f in client.get_table(target.reference).schema]
    except NotFound:
        return []


def removed_columns(previous: list[str], new: list[str]) -> list[str]:
    """Source columns of the previous table missing from the new one.

    The pipeline's own columns and `<col>__raw` companions (present only
    while a column holds unrepresentable values) are not source columns.
    """
    kept = set(new) | set(PIPELINE_COLUMNS)
    return [
        name
        for name in previous
        if name not in kept
        and not (name.endswith(RAW_SUFFIX) and name[: -len(RAW_SUFFIX)] in previous)
    ]


def kept_deletes(
    info: TableInfo,
    columns: list[PlannedColumn],
    settings: RdsTableSettings,
    exported_at: dt.datetime,
) -> KeptDeletes | None:
    """How a `soft`/`history` table keeps rows the snapshot lacks (None: `hard`).

    The configured `key` names source columns; a deletion is dated at the
    snapshot time (the first export that no longer holds the row).
    """
    if settings.deletes is DeletesMode.HARD:
        return None
    assert settings.key  # validated with the configuration
    by_source = {c.mapping.source_name: c.name for c in columns}
    missing = [k for k in settings.key if k not in by_source]
    if missing:
        raise RdsLoadError(
            f"{info.target}: key column(s) {missing} (rds.instances[].tables.{info.target}.key) "
            f"are not columns of the export ({sorted(by_source)}); fix the key in pipeline.yaml"
        )
    return KeptDeletes(
        settings.deletes,
        tuple(by_source[k] for k in settings.key),
        exported_at,
        bookkeeping_columns=tuple(PIPELINE_COLUMNS),
    )


def load_export_table(
    *,
    s3: Any,
    client: bigquery.Client,
    location: ExportLocation,
    info: TableInfo,
    table_ref: str,
    exported_at: dt.datetime,
    description: str,
    log: Callable[[str], None] = lambda _m: None,
    warn: Callable[[str], None] | None = None,
    parallel_uploads: int = 1,
    engine: Engine = MYSQL,
    settings: RdsTableSettings | None = None,
    hash_key: HashKey | None = None,
    gcs: GcsStaging | None = None,
) -> TableLoadResult:
    """Load `info.target` from the export into `table_ref` (project.dataset.table).

    `warn` (default: `log`) hears about columns the new snapshot removed.
    `settings`: the table's governed settings: personal data (`hash_key` is
    needed when they hash a column), schema changes, `deletes` (soft/history
    keep rows the snapshot lacks, by `key`; the row count is then of the rows
    it holds) and the `bigquery` layout (clustered on `key` by default),
    resolved against the export's columns and checked before anything is staged.
    `gcs`: stage the Parquet in GCS and load it from there (the staged objects
    are deleted with the staging table, after publishing or on failure).
    """
    settings = settings or RdsTableSettings()
    assert EXPORTED_AT_COLUMN in PIPELINE_COLUMNS
    started = time.monotonic()
    try:
        files = inspect_table_files(s3, location, *info.target.split("."))
    except ExportFilesError as exc:
        raise RdsLoadError(f"{info.target}: {exc}") from None
    parquet_schema = _check_same_schema(files, info.target)
    columns = governed_columns(info, plan_columns(info, parquet_schema, engine), settings)
    if parquet_schema is not None and engine.type_disagreement is not None:
        _check_aws_types(info, parquet_schema, s3_uri(location.bucket, files[0].key), engine)
    deletes = kept_deletes(info, columns, settings, exported_at)
    layout = _layout(info, columns, settings)
    renames = {c.mapping.source_name: c.name for c in columns if c.mapping.source_name != c.name}
    change = Rewrite(
        renames=renames,
        dropped=frozenset(settings.excluded_columns),
        hashed=frozenset(settings.hashed_columns),
        bytes_are_text=frozenset(c.mapping.source_name for c in columns if _bytes_are_text(c)),
        hash_key=hash_key,
    )
    target = TableId.parse(table_ref)
    staging = staging_table_id(target, f"{location.export_task_identifier}/{uuid.uuid4()}")
    try:
        upload_started = time.monotonic()
        load_parquet_to_staging(
            client,
            [_s3_source(s3, location.bucket, obj, change) for obj in files],
            staging,
            _staging_schema(columns),
            labels={"source": "rds"},
            timeout=None,
            parallel_uploads=parallel_uploads,
            encryption=layout.encryption,
            gcs=gcs,
        )
        upload_seconds = time.monotonic() - upload_started
        replace_started = time.monotonic()
        profiles = _profile(client, staging.sql, columns, engine)
        selects = final_select(columns, profiles, exported_at, engine)
        removed = removed_columns(_columns_of(client, target), [c.name for c in selects])
        published = replace_table(
            client,
            staging=staging,
            target=target,
            select_columns=selects,
            table_description=description,
            labels={"export_pipeline_source": "rds"},
            drop_staging=False,  # dropped below, also on failure
            deletes=deletes,
            layout=layout,
            schema_policy=SchemaPolicy(settings.schema_changes),
        )
        rows = published.rows if deletes is None else count_live_rows(client, target)
        replace_seconds = time.monotonic() - replace_started
    except (StagingLoadError, BigQueryPublishError) as error:
        raise RdsLoadError(f"{info.target}: {error}") from error
    finally:
        # Also on failure (the shared layer keeps it for diagnosis): a half-filled
        # staging table is of no use to a re-run, which always starts a fresh one.
        client.delete_table(staging.reference, not_found_ok=True)
        delete_staged(gcs, staging)
    if removed and deletes is not None:
        (warn or log)(
            f"{info.target}: column(s) {', '.join(removed)} of {table_ref} are not in the new "
            f"snapshot; deletes: {deletes.mode.value} keeps them, NULL in this snapshot's rows"
        )
    elif removed:
        (warn or log)(
            f"{info.target}: column(s) {', '.join(removed)} of {table_ref} are not in the new "
            "snapshot and are no longer in BigQuery (BigQuery mirrors the newest snapshot; "
            "their old values are in the earlier exports in S3)"
        )
    schema = [c.schema_field for c in selects]
    expected = sum(f.num_rows for f in files)
    source = "Parquet footers"
    if info.row_count is not None:
        expected, source = info.row_count, "export table statistics"
    return TableLoadResult(
        table_id=table_ref,
        row_count=rows,
        expected_row_count=expected,
        expected_row_count_source=source,
        files=len(files),
        bytes_loaded=sum(f.size for f in files),
        unrepresentable=unrepresentable_counts(columns, profiles),
        schema=schema,
        upload_seconds=upload_seconds,
        total_seconds=time.monotonic() - started,
        replace_seconds=replace_seconds,
        renamed_columns=renames,
        columns_removed=removed,
        schema_change=published.schema_change,
    )
