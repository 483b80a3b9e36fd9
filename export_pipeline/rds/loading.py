"""Loading one exported MySQL table into BigQuery, lossless and atomically.

1. The table's Parquet files go, unchanged, into a fresh staging table whose
   schema is what BigQuery's Parquet loader makes of AWS's types (BQ-core's
   `bigquery_schema_from_parquet`: decimals as NUMERIC or exact STRING). Each
   file is streamed from S3 straight into a resumable upload: rows are never
   decoded in Python, and memory per upload is bounded by the client's
   resumable chunk (google-cloud-bigquery: 100 MiB), not by the file size.
   The staging row count is checked against the Parquet footers.
2. One query counts, per column that can meet unrepresentable values (zero
   dates, TIME beyond 24 h, non-UTF-8 CHAR, JSON BigQuery cannot parse), how
   many there are; that decides TIME vs STRING and whether a `<col>__raw`
   column keeps the originals.
3. `CREATE OR REPLACE TABLE … AS SELECT <typed expressions>, <snapshot time>
   AS _exported_at FROM staging` swaps the new contents in in one statement:
   if anything fails before or in it, the previous table is untouched. Column
   descriptions (each column's MySQL name and type) and the table description
   follow through BQ-core's `apply_metadata`.

Column names BigQuery cannot take are mapped with `naming.column_names`;
Parquet loads match columns by name, so such a table's files are first
rewritten with the new names (Arrow, columnar, through a temporary file) —
the one case where the files are not passed through as they are.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from google.cloud import bigquery

from export_pipeline.bigquery.evolve import apply_metadata
from export_pipeline.bigquery.parquet_schema import bigquery_schema_from_parquet
from export_pipeline.bigquery.publish import SelectColumn
from export_pipeline.bigquery.staging import (
    DECIMAL_TARGET_TYPES,
    create_staging_table,
    staging_table_id,
)
from export_pipeline.bigquery.tables import TableId
from export_pipeline.naming import PIPELINE_COLUMNS, column_names, quote_identifier
from export_pipeline.rds.export_files import (
    ExportFilesError,
    ExportLocation,
    ParquetObject,
    TableInfo,
    inspect_table_files,
)
from export_pipeline.rds.mysql_types import (
    RAW_SUFFIX,
    ColumnMapping,
    Conversion,
    MySqlType,
    map_column,
    typed_expression,
)

EXPORTED_AT_COLUMN = "_exported_at"


class RdsLoadError(RuntimeError):
    """A table could not be loaded; the message names the table and the cause."""


@dataclass(frozen=True)
class PlannedColumn:
    """One final column: where it comes from and how it is typed."""

    name: str  # BigQuery name (also the staging name)
    mapping: ColumnMapping
    raw_name: str  # name of the `__raw` column, used only when needed


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


def plan_columns(info: TableInfo, parquet_schema: pa.Schema | None) -> list[PlannedColumn]:
    """Final columns in table order, with BigQuery names and conversions."""
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
        # BigQuery's own Parquet conversion (BQ-core), on the BigQuery names.
        renamed = pa.schema(
            [f.with_name(names[f.name]) for f in parquet_schema]  # type: ignore[index]
        )
        staged_types = [f.field_type for f in bigquery_schema_from_parquet(renamed)]
    planned = []
    for index, (source, original_type) in enumerate(info.columns):
        staged = (
            staged_types[index]
            if staged_types is not None
            else expected_staging_type(original_type)
        )
        planned.append(
            PlannedColumn(
                name=names[source],
                mapping=map_column(source, original_type, staged),
                raw_name=names[raw_sources[source]],
            )
        )
    return planned


def _raw_source_name(name: str, taken: list[str]) -> str:
    candidate = name + RAW_SUFFIX
    while candidate in taken:
        candidate += "_"
    return candidate


def expected_staging_type(original_type: str) -> str:
    """The staging type AWS's Parquet mapping gives a MySQL type.

    Only needed for a table the export wrote no Parquet file for (nothing to
    read a schema from): DATE, TIME and JSON are text, CHAR unannotated bytes,
    DATETIME a UTC TIMESTAMP_MICROS; everything else loads as its final type.
    """
    probe = map_column("c", original_type, "STRING")
    if probe.target_type in ("DATE", "TIME", "JSON"):
        return "STRING"
    if probe.conversion is Conversion.AS_LOADED and probe.target_type == "STRING":
        base = MySqlType.parse(original_type).base
        return "BYTES" if base in ("char", "nchar", "national char", "character") else "STRING"
    if probe.target_type == "DATETIME":
        return "TIMESTAMP"
    return probe.target_type


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


def _staging_schema(columns: list[PlannedColumn]) -> list[bigquery.SchemaField]:
    return [bigquery.SchemaField(c.name, c.mapping.staging_type) for c in columns]


def _load_config(schema: list[bigquery.SchemaField]) -> bigquery.LoadJobConfig:
    return bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET,
        write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
        create_disposition=bigquery.CreateDisposition.CREATE_NEVER,
        schema=schema,
        decimal_target_types=list(DECIMAL_TARGET_TYPES),
    )


def _upload_file(
    s3: Any,
    client: bigquery.Client,
    bucket: str,
    obj: ParquetObject,
    staging: TableId,
    job_config: bigquery.LoadJobConfig,
    renames: dict[str, str],
) -> None:
    """Upload one export file into the staging table.

    BQ-core's `load_parquet_to_staging` takes local paths; the export lives in
    S3, so this streams each object instead of downloading it first.
    """
    body = s3.get_object(Bucket=bucket, Key=obj.key)["Body"]
    if not renames:
        # Streamed: without `size` the client always uses a resumable upload,
        # which reads the S3 body in chunks (google-cloud-bigquery's chunk size,
        # 100 MiB) instead of the multipart upload that reads it whole.
        job = client.load_table_from_file(
            body, staging.reference, job_config=job_config, rewind=False
        )
    else:
        with tempfile.TemporaryFile() as original, tempfile.TemporaryFile() as renamed:
            for chunk in body.iter_chunks(1 << 20):
                original.write(chunk)
            original.seek(0)
            table = pq.read_table(original)
            table = table.rename_columns([renames.get(n, n) for n in table.column_names])
            pq.write_table(table, renamed, compression="zstd")
            renamed.seek(0)
            job = client.load_table_from_file(
                renamed, staging.reference, job_config=job_config, rewind=False
            )
    try:
        job.result()
    except Exception as error:
        raise RdsLoadError(
            f"loading s3://{bucket}/{obj.key} into {staging} failed: {error}"
        ) from error


def _profile(
    client: bigquery.Client, staging_sql: str, columns: list[PlannedColumn]
) -> dict[str, int]:
    """Per fallible column, how many non-NULL values its typed form cannot hold."""
    fallible = [c for c in columns if c.mapping.fallible]
    if not fallible:
        return {}
    selects = []
    for index, column in enumerate(fallible):
        source = quote_identifier(column.name)
        typed = typed_expression(column.mapping, source)
        selects.append(f"COUNTIF({source} IS NOT NULL AND ({typed}) IS NULL) AS c{index}")
    row = next(iter(client.query(f"SELECT {', '.join(selects)} FROM {staging_sql}").result()))
    return {column.name: int(row[f"c{index}"] or 0) for index, column in enumerate(fallible)}


def final_select(
    columns: list[PlannedColumn], unrepresentable: dict[str, int], exported_at: dt.datetime
) -> list[SelectColumn]:
    """The final table's columns: typed expressions over staging, with descriptions."""
    selects: list[SelectColumn] = []
    for column in columns:
        source = quote_identifier(column.name)
        mapping = column.mapping
        description = f"MySQL `{mapping.source_name}` {mapping.mysql_type}"
        bad = unrepresentable.get(column.name, 0)
        if mapping.conversion is Conversion.TIME_TEXT and bad:
            # Some value is outside a BigQuery TIME: keep the whole column as MySQL's text.
            selects.append(
                SelectColumn(
                    column.name,
                    source,
                    "STRING",
                    description=f"{description}; text because {bad} value(s) lie outside "
                    "00:00:00-23:59:59.999999",
                )
            )
            continue
        typed = typed_expression(mapping, source)
        selects.append(
            SelectColumn(column.name, typed, mapping.target_type, description=description)
        )
        if mapping.fallible and bad:
            selects.append(
                SelectColumn(
                    column.raw_name,
                    f"IF({source} IS NOT NULL AND ({typed}) IS NULL, {source}, NULL)",
                    mapping.raw_type,
                    description=f"Original value of `{mapping.source_name}` where it is not a "
                    f"valid {mapping.target_type} ({bad} row(s) in this export)",
                )
            )
    stamp = exported_at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    selects.append(
        SelectColumn(
            EXPORTED_AT_COLUMN,
            f"TIMESTAMP '{stamp}+00'",
            "TIMESTAMP",
            description="Snapshot time of the RDS export",
        )
    )
    return selects


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
    parallel_uploads: int = 1,
) -> TableLoadResult:
    """Load `info.target` from the export into `table_ref` (project.dataset.table)."""
    assert EXPORTED_AT_COLUMN in PIPELINE_COLUMNS
    started = time.monotonic()
    database, table = info.target.split(".", 1)
    try:
        files = inspect_table_files(s3, location, database, table)
    except ExportFilesError as exc:
        raise RdsLoadError(f"{info.target}: {exc}") from None
    columns = plan_columns(info, _check_same_schema(files, info.target))
    renames = {c.mapping.source_name: c.name for c in columns if c.mapping.source_name != c.name}
    target = TableId.parse(table_ref)
    staging = staging_table_id(target, f"{location.export_task_identifier}/{uuid.uuid4()}")
    schema_for_staging = _staging_schema(columns)
    create_staging_table(client, staging, schema_for_staging, labels={"source": "rds"})
    job_config = _load_config(schema_for_staging)
    staging_sql = staging.sql
    try:
        upload_started = time.monotonic()

        def upload(obj: ParquetObject) -> None:
            _upload_file(s3, client, location.bucket, obj, staging, job_config, renames)
            log(f"{info.target}: loaded {obj.key} ({obj.size} bytes)")

        if parallel_uploads <= 1 or len(files) <= 1:
            for obj in files:
                upload(obj)
        else:
            # Load jobs appending to one table may run at once (BigQuery allows it);
            # the worker mostly waits on the network, so threads suffice.
            with ThreadPoolExecutor(max_workers=parallel_uploads) as pool:
                list(pool.map(upload, files))
        upload_seconds = time.monotonic() - upload_started
        # Checked on the table, not per job: bqemulator's load jobs report the
        # table's total as output_rows, BigQuery the job's own rows.
        staged_rows = int(client.get_table(staging.reference).num_rows or 0)
        footer_rows = sum(f.num_rows for f in files)
        if staged_rows != footer_rows:
            raise RdsLoadError(
                f"{info.target}: staging holds {staged_rows} rows, the export's Parquet "
                f"footers say {footer_rows}"
            )
        replace_started = time.monotonic()
        unrepresentable = _profile(client, staging_sql, columns)
        selects = final_select(columns, unrepresentable, exported_at)
        # One statement: the old table stays as it was unless it succeeds.
        # Not BQ-core's `replace_table`: it declares the column list in the CTAS,
        # and bqemulator 1.4.0 turns a NUMERIC there into DECIMAL(18,3), which
        # fails on BIGINT UNSIGNED / DECIMAL(38,9) values. Without the list the
        # types come from the expressions (the same on BigQuery); descriptions
        # and labels follow with BQ-core's `apply_metadata`.
        assigned = ", ".join(f"{c.expression} AS {quote_identifier(c.name)}" for c in selects)
        client.query(
            f"CREATE OR REPLACE TABLE {target.sql} AS SELECT {assigned} FROM {staging.sql}"
        ).result()
        published = apply_metadata(
            client,
            target,
            [c.schema_field for c in selects],
            description,
            {"export_pipeline_source": "rds"},
        )
        replace_seconds = time.monotonic() - replace_started
    finally:
        # Also on failure (BQ-core keeps it for diagnosis): a half-filled staging
        # table is of no use to a re-run, which always starts a fresh one.
        client.delete_table(staging.reference, not_found_ok=True)
    schema = [c.schema_field for c in selects]
    expected = sum(f.num_rows for f in files)
    source = "Parquet footers"
    if info.row_count is not None:
        expected, source = info.row_count, "export table statistics"
    return TableLoadResult(
        table_id=table_ref,
        row_count=int(published.num_rows or 0),
        expected_row_count=expected,
        expected_row_count_source=source,
        files=len(files),
        bytes_loaded=sum(f.size for f in files),
        unrepresentable={k: v for k, v in unrepresentable.items() if v},
        schema=schema,
        upload_seconds=upload_seconds,
        total_seconds=time.monotonic() - started,
        replace_seconds=replace_seconds,
        renamed_columns=renames,
    )
