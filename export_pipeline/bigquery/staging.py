"""Loading local Parquet files into a fresh staging table, one load job per file.

Several uploads are not atomic (each load job commits on its own), so data
never goes straight into a table readers use: it lands in a staging table
that `publish` then swaps in with one statement. The staging table is
created for each attempt with an explicit schema and a unique name (a retry
never appends to a half-filled table from an earlier attempt), and expires
after `STAGING_EXPIRATION` so that an abandoned one vanishes by itself.

Files are passed to `load_table_from_file` as open file objects, which the
client sends as a resumable upload in bounded chunks, so a file is never read
whole into memory here.

Emulator differences (bqemulator 1.4.0): table expiration is accepted but not
stored or enforced; multipart uploads (what the client uses for a small
file when told its size) are rejected, so no size is passed; and a Parquet
load into a table that does not exist without an explicit schema fails, so
both paths here create the table with an explicit schema first, which real
BigQuery accepts just the same.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
from google.api_core.exceptions import GoogleAPIError
from google.cloud import bigquery
from google.cloud.bigquery import SchemaField

from export_pipeline.bigquery.parquet_schema import bigquery_schema_of_files
from export_pipeline.bigquery.tables import BigQueryPublishError, TableId

STAGING_EXPIRATION = dt.timedelta(hours=6)
STAGING_PREFIX = "_staging_"
# NUMERIC first (exact, fast), then STRING (exact text) for decimals that do
# not fit NUMERIC. BIGNUMERIC is left out: the emulator cannot hold it and
# STRING is lossless; see parquet_schema.
DECIMAL_TARGET_TYPES = ("NUMERIC", "STRING")
_LABEL_VALUE = re.compile(r"[^a-z0-9_\-]")


class StagingLoadError(BigQueryPublishError):
    """A load job into a staging table failed or loaded an unexpected row count."""


@dataclass(frozen=True)
class StagingResult:
    """What a staging load produced: the table, its schema, rows loaded, bytes uploaded."""

    table: TableId
    schema: list[SchemaField]
    rows: int
    bytes: int
    files: int


def label_value(text: str) -> str:
    """`text` made into a valid BigQuery label value (lower-case, ≤ 63 chars of [a-z0-9_-])."""
    return _LABEL_VALUE.sub("_", text.lower())[:63]


def staging_table_id(target: TableId, run_id: str) -> TableId:
    """A staging table for `target`, unique per run (and per attempt if run_id includes it).

    `_staging_<target>_<hash>`: the hash of the run id keeps the name short
    and valid whatever the run id holds, and distinct per run.
    """
    digest = hashlib.sha256(run_id.encode("utf-8")).hexdigest()[:12]
    name = f"{STAGING_PREFIX}{target.table}"[: 1024 - 13]
    return target.sibling(f"{name}_{digest}")


def create_staging_table(
    client: bigquery.Client,
    staging: TableId,
    schema: Sequence[SchemaField],
    *,
    labels: Mapping[str, str] | None = None,
    expiration: dt.timedelta = STAGING_EXPIRATION,
) -> bigquery.Table:
    """(Re)create `staging` empty with `schema`, expiring after `expiration`.

    Dropped first if it exists: a staging table from a failed attempt with
    the same name must not contribute rows to this one.
    """
    client.delete_table(staging.reference, not_found_ok=True)
    table = bigquery.Table(staging.reference, schema=list(schema))
    table.expires = dt.datetime.now(dt.UTC) + expiration
    table.labels = {"export_pipeline": "staging", **dict(labels or {})}
    table.description = "export_pipeline staging table; safe to delete, expires by itself."
    return client.create_table(table)


def _load_config(
    schema: Sequence[SchemaField], job_labels: Mapping[str, str] | None
) -> bigquery.LoadJobConfig:
    parquet_options = bigquery.ParquetOptions()
    parquet_options.enable_list_inference = True
    config = bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET,
        write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
        create_disposition=bigquery.CreateDisposition.CREATE_NEVER,
        schema=list(schema),
        decimal_target_types=list(DECIMAL_TARGET_TYPES),
        parquet_options=parquet_options,
    )
    if job_labels:
        config.labels = dict(job_labels)
    return config


def load_parquet_to_staging(
    client: bigquery.Client,
    files: Sequence[Path],
    staging: TableId,
    schema: Sequence[SchemaField] | None,
    *,
    job_labels: Mapping[str, str] | None = None,
    expected_rows: int | None = None,
    timeout: float | None = 1800,
) -> StagingResult:
    """Create `staging` with `schema` and load every Parquet file into it.

    `schema=None`: the files' own Parquet schema is the source of truth
    (derived with `bigquery_schema_of_files`; all files must agree).
    Zero-byte files are skipped (they hold no rows, and are not Parquet).
    Each load job's errors are checked (`StagingLoadError` naming the
    file), and the staging table must end up with as many rows as the files'
    footers say. If `expected_rows` is given (e.g. a manifest's item count),
    the total must match it too.
    """
    paths = [Path(f) for f in files]
    non_empty = [p for p in paths if p.stat().st_size > 0]
    if schema is None:
        schema = bigquery_schema_of_files(non_empty)
    schema = list(schema)
    create_staging_table(client, staging, schema)
    config = _load_config(schema, job_labels)
    file_rows = 0
    uploaded = 0
    for path in non_empty:
        size = path.stat().st_size
        job = None
        try:
            with path.open("rb") as stream:
                # No `size`: the client then always uses a resumable upload,
                # sent in bounded chunks. (With a size under 5 MB it would use
                # a multipart upload, which bqemulator 1.4.0 rejects.)
                job = client.load_table_from_file(
                    stream, staging.reference, job_config=config, rewind=True
                )
            job.result(timeout=timeout)
        except (GoogleAPIError, concurrent.futures.TimeoutError) as error:
            raise StagingLoadError(
                f"loading {path} into {staging} failed: {error}"
                + (f"; job {job.job_id}, errors {job.errors}" if job is not None else "")
            ) from error
        if job.errors:
            raise StagingLoadError(f"loading {path} into {staging} reported errors: {job.errors}")
        if job.output_rows is None:
            raise StagingLoadError(f"loading {path} into {staging}: job reported no row count")
        file_rows += pq.ParquetFile(path).metadata.num_rows
        uploaded += size
    # Counted on the table rather than by adding up each job's output_rows:
    # bqemulator 1.4.0 reports the table's cumulative row count as a load
    # job's output_rows, BigQuery the job's own rows; the fresh table's count
    # is right on both.
    rows = int(client.get_table(staging.reference).num_rows or 0)
    if rows != file_rows:
        raise StagingLoadError(
            f"{staging}: holds {rows} rows after loading {len(non_empty)} files "
            f"whose footers say {file_rows}"
        )
    if expected_rows is not None and rows != expected_rows:
        raise StagingLoadError(
            f"{staging}: loaded {rows} rows from {len(non_empty)} files, expected {expected_rows}"
        )
    return StagingResult(
        table=staging, schema=schema, rows=rows, bytes=uploaded, files=len(non_empty)
    )
