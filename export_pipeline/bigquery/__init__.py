"""Shared BigQuery publishing: staging loads, atomic replace, MERGE with a high-water mark.

API (everything takes a `google.cloud.bigquery.Client`):

    TableId(project, dataset, table)            .sql  .dotted  .console_url  .sibling(name)
    require_dataset(client, project, dataset)   -> Dataset | DatasetNotFoundError (says the fix)
    staging_table_id(target, run_id)            -> TableId  (unique per run/attempt)
    load_parquet_to_staging(client, files: [Path | ParquetSource], staging, schema | None, *,
                            job_labels=None, labels=None, expected_rows=None,
                            parallel_uploads=1, on_loaded=None, encryption=None, gcs=None)
        -> StagingResult(table, schema, rows, bytes, files)
        schema=None: the Parquet files' own schema (bigquery_schema_of_files; paths only).
        gcs=GcsStaging(storage_client, bucket, prefix, run): files go to
        gs://bucket/prefix/run/<staging table>/ (each checked), then load jobs read
        exactly those URIs; after publishing call delete_staged(gcs, staging).
    ParquetSource(name, rows, size, open)       a file streamed from anywhere (e.g. S3):
        open() -> context manager yielding a binary stream; .from_path(path)
    load_uris_to_staging(client, uris: [GcsUri], staging, schema, *, job_labels=None,
                         labels=None, expected_rows=None, timeout=1800, encryption=None,
                         on_loaded=None) -> StagingResult
        BigQuery reads already-staged gs:// objects (no byte through the worker), in
        the fewest load jobs within MAX_URIS_PER_LOAD_JOB (10,000) and
        MAX_BYTES_PER_LOAD_JOB (15 TB); same row checks as load_parquet_to_staging.
    GcsUri(uri, size, rows=None)                a gs:// object or wildcard and what it holds
    delete_staged(gcs | None, staging) -> int   delete an attempt's staged objects (idempotent)
    (the `gcs` resource: `with context.resources.gcs.staging(run_id) as gcs:` -> GcsStaging | None)
    bigquery_schema_from_parquet(pyarrow.Schema) -> list[SchemaField]
    SelectColumn(name, expression, field_type, mode="NULLABLE", description=None, fields=())
        SelectColumn.passthrough(staging_field, description=None)
        SelectColumn.absent(field)                  NULL ([] if REPEATED) in every row
        SelectColumn.timestamp(name, value, description)   one exact TIMESTAMP in every row
    replace_table(client, *, staging, target, select_columns, table_description, labels=None,
                  watermark=None, expected_previous=None, job_labels=None, drop_staging=True)
        -> PublishResult(target, rows, console_url, schema)
    merge_changes(client, *, staging, target, key_columns, order_column, deleted_column,
                  columns, watermark, expected_previous, table_description=None, labels=None,
                  job_labels=None, drop_staging=True) -> PublishResult
    Both take `deletes=KeptDeletes(mode, key_columns, as_of, change_time=None, ...)`
    (deletes.py) for `deletes: soft`/`history`: deleted rows kept with `_deleted_at`,
    versions in `<table>_history` (history.py), in the same transaction.
    TableLayout.from_settings(table, settings.bigquery, {source name: BigQuery name},
                              default_cluster_by)   (layout.py; .check(schema) -> LayoutError)
        passed as `layout=` to replace_table / merge_changes, `encryption=layout.encryption`
        to load_parquet_to_staging: partitioning, clustering, labels, options, CMEK and
        policy tags on every write; a changed partitioning/clustering is applied first.
    Watermark(source_key, export_arn, exported_to: aware datetime)
    read_watermark(client, target, source_key) -> Watermark | None
    count_rows(client, target) -> int           (COUNT(*); numRows is stale after DML)
    reconcile_schema(client, target, desired) -> schema   add + widen columns, one rewrite
    widened_field(existing, wanted) -> SchemaField        (evolve.py)

Full source (DynamoDB full mode, RDS snapshot):

    staging = staging_table_id(target, f"{context.run_id}-{attempt}")
    load_parquet_to_staging(client, files, staging, schema)      # RDS: schema=None
    replace_table(client, staging=staging, target=target,
                  select_columns=[SelectColumn.passthrough(f) for f in result.schema],
                  table_description="...", labels={...})

Incremental source (DynamoDB incremental):

    previous = read_watermark(client, target, source_key)       # None: reseed needed
    # full export  -> replace_table(..., watermark=Watermark(key, arn, export_time),
    #                               expected_previous=previous)
    # incremental  -> merge_changes(..., watermark=Watermark(key, arn, export_to_time),
    #                               expected_previous=previous)
    # Data and mark commit together; WatermarkConflictError if the mark moved meanwhile.

Rules for `SelectColumn.expression` (SQL over staging columns; names only through
`export_pipeline.naming.quote_identifier`): scalar columns are CAST to `field_type`
for you (a raw staging column is fine); JSON/STRUCT/ARRAY expressions must produce
the type themselves (e.g. `PARSE_JSON(x)`); never write a bare `CAST(x AS NUMERIC)`
(bqemulator makes it DECIMAL(18,3)) — declare the column NUMERIC and let the cast
be added, or write `NUMERIC(38, 9)`.
"""

from export_pipeline.bigquery.evolve import (
    SchemaEvolutionError,
    reconcile_schema,
    widened_field,
)
from export_pipeline.bigquery.gcs_staging import (
    GcsStaging,
    GcsStagingError,
    GcsUri,
    delete_staged,
)
from export_pipeline.bigquery.layout import LayoutError, TableLayout
from export_pipeline.bigquery.parquet_schema import (
    ParquetSchemaError,
    bigquery_schema_from_parquet,
    bigquery_schema_of_files,
)
from export_pipeline.bigquery.publish import (
    PublishResult,
    SelectColumn,
    merge_changes,
    replace_table,
)
from export_pipeline.bigquery.staging import (
    ParquetSource,
    StagingLoadError,
    StagingResult,
    label_value,
    load_parquet_to_staging,
    load_uris_to_staging,
    staging_table_id,
)
from export_pipeline.bigquery.tables import (
    BigQueryPublishError,
    DatasetNotFoundError,
    TableId,
    count_rows,
    require_dataset,
)
from export_pipeline.bigquery.watermark import (
    Watermark,
    WatermarkConflictError,
    WatermarkInFutureError,
    read_watermark,
    state_table_for,
)

__all__ = [
    "BigQueryPublishError",
    "DatasetNotFoundError",
    "GcsStaging",
    "GcsStagingError",
    "GcsUri",
    "LayoutError",
    "ParquetSchemaError",
    "ParquetSource",
    "PublishResult",
    "SchemaEvolutionError",
    "SelectColumn",
    "StagingLoadError",
    "StagingResult",
    "TableId",
    "TableLayout",
    "Watermark",
    "WatermarkConflictError",
    "WatermarkInFutureError",
    "bigquery_schema_from_parquet",
    "bigquery_schema_of_files",
    "count_rows",
    "delete_staged",
    "label_value",
    "load_parquet_to_staging",
    "load_uris_to_staging",
    "merge_changes",
    "read_watermark",
    "reconcile_schema",
    "replace_table",
    "require_dataset",
    "staging_table_id",
    "state_table_for",
    "widened_field",
]
