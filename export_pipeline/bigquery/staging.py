"""Loading Parquet into a fresh staging table: uploaded by the worker, or read from GCS.

Several uploads are not atomic (each load job commits on its own), so data
never goes straight into a table readers use: it lands in a staging table
that `publish` then swaps in with one statement. The staging table is
created for each attempt with an explicit schema and a unique name (a retry
never appends to a half-filled table from an earlier attempt), and expires
after `STAGING_EXPIRATION` so that an abandoned one vanishes by itself.

Files are passed to `load_table_from_file` as open streams (a local file,
or any binary stream a `ParquetSource` opens, e.g. an S3 object body), which
the client sends as a resumable upload in bounded chunks
(google-cloud-bigquery: 100 MiB), so a file is never read whole into memory
here and a remote one needs no temporary copy.

With GCS staging (`gcs_staging`), the same files are streamed to GCS and
BigQuery reads them there (`load_uris_to_staging`): load jobs over gs:// URIs,
as few as BigQuery's per-job limits allow, and no data bytes sent to BigQuery
by the worker.

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
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pyarrow.parquet as pq
from google.api_core.exceptions import GoogleAPIError
from google.cloud import bigquery
from google.cloud.bigquery import SchemaField

from export_pipeline.bigquery.gcs_staging import (
    GcsStaging,
    GcsUri,
    delete_staged,
    upload_sources,
)
from export_pipeline.bigquery.parquet_schema import bigquery_schema_of_files
from export_pipeline.bigquery.tables import BigQueryPublishError, TableId

STAGING_EXPIRATION = dt.timedelta(hours=6)
STAGING_PREFIX = "_staging_"
# NUMERIC first (exact, fast), then STRING (exact text) for decimals that do
# not fit NUMERIC. BIGNUMERIC is left out: the emulator cannot hold it and
# STRING is lossless; see parquet_schema.
DECIMAL_TARGET_TYPES = ("NUMERIC", "STRING")
_LABEL_VALUE = re.compile(r"[^a-z0-9_\-]")

# BigQuery's load-job limits (https://cloud.google.com/bigquery/quotas#load_jobs):
# at most 10,000 source URIs in one job's configuration, at most 15 TB across
# the input files of one Parquet load job, and 1,500 load jobs per table per
# day (failed ones included). `load_uris_to_staging` splits its URIs into as
# few jobs as these allow; a wildcard URI counts as one URI, and the size its
# matches add up to is the caller's to declare (`GcsUri.size`).
MAX_URIS_PER_LOAD_JOB = 10_000
MAX_BYTES_PER_LOAD_JOB = 15 * 10**12
LOAD_JOBS_PER_TABLE_PER_DAY = 1_500


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
    encryption: bigquery.EncryptionConfiguration | None = None,
) -> bigquery.Table:
    """(Re)create `staging` empty with `schema`, expiring after `expiration`.

    Dropped first if it exists: a staging table from a failed attempt with
    the same name must not contribute rows to this one. `encryption`: the
    CMEK of the table it stages for (`layout.TableLayout.encryption`).
    """
    client.delete_table(staging.reference, not_found_ok=True)
    table = bigquery.Table(staging.reference, schema=list(schema))
    table.expires = dt.datetime.now(dt.UTC) + expiration
    table.labels = {"export_pipeline": "staging", **dict(labels or {})}
    table.description = "export_pipeline staging table; safe to delete, expires by itself."
    table.encryption_configuration = encryption
    return client.create_table(table)


def _load_config(
    schema: Sequence[SchemaField],
    job_labels: Mapping[str, str] | None,
    encryption: bigquery.EncryptionConfiguration | None = None,
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
    if encryption is not None:
        config.destination_encryption_configuration = encryption
    return config


@dataclass(frozen=True)
class ParquetSource:
    """One Parquet file to load, wherever it lives (local disk, S3, a rewritten copy).

    `open()` returns a context manager yielding a readable binary stream at
    the file's first byte; it need not be seekable (an S3 GetObject body is
    fine), and is read in the client's resumable-upload chunks, never whole.
    `rows` is the row count the file's footer states (checked against the
    staging table), `size` its length in bytes (0: skipped, no rows).
    """

    name: str
    rows: int
    size: int
    open: Callable[[], AbstractContextManager[BinaryIO]]

    @classmethod
    def from_path(cls, path: Path) -> ParquetSource:
        """A local file; a zero-byte one (not Parquet, holds no rows) has rows=0."""
        path = Path(path)
        size = path.stat().st_size
        rows = pq.ParquetFile(path).metadata.num_rows if size else 0
        return cls(str(path), rows, size, lambda: path.open("rb"))


def _run_load_job(
    start: Callable[[], bigquery.LoadJob],
    described: str,
    staging: TableId,
    timeout: float | None,
) -> bigquery.LoadJob:
    """Start a load job into `staging` and wait for it; errors name what it loads."""
    job = None
    try:
        job = start()
        job.result(timeout=timeout)
    except (GoogleAPIError, concurrent.futures.TimeoutError) as error:
        raise StagingLoadError(
            f"loading {described} into {staging} failed: {error}"
            + (f"; job {job.job_id}, errors {job.errors}" if job is not None else "")
        ) from error
    if job.errors:
        raise StagingLoadError(f"loading {described} into {staging} reported errors: {job.errors}")
    return job


def _upload(
    client: bigquery.Client,
    source: ParquetSource,
    staging: TableId,
    config: bigquery.LoadJobConfig,
    timeout: float | None,
) -> None:
    """One load job appending `source` to `staging`; errors name the file."""

    def start() -> bigquery.LoadJob:
        with source.open() as stream:
            # No `size`: the client then always uses a resumable upload, sent
            # in bounded chunks. (With a size under 5 MB it would use a
            # multipart upload, which reads the stream whole and which
            # bqemulator 1.4.0 rejects.) No rewind: the stream is fresh at its
            # start, and an S3 body cannot seek.
            return client.load_table_from_file(
                stream, staging.reference, job_config=config, rewind=False
            )

    job = _run_load_job(start, source.name, staging, timeout)
    if job.output_rows is None:
        raise StagingLoadError(f"loading {source.name} into {staging}: job reported no row count")


def load_job_batches(
    uris: Sequence[GcsUri],
    *,
    max_uris: int = MAX_URIS_PER_LOAD_JOB,
    max_bytes: int = MAX_BYTES_PER_LOAD_JOB,
) -> list[list[GcsUri]]:
    """`uris` in order, cut into the fewest consecutive groups within both per-job limits.

    A single URI larger than `max_bytes` cannot be loaded by any job: ValueError
    naming it (split the data into more files).
    """
    batches: list[list[GcsUri]] = []
    current: list[GcsUri] = []
    current_bytes = 0
    for item in uris:
        if item.size > max_bytes:
            raise ValueError(
                f"{item.uri}: {item.size} bytes is more than one BigQuery load job reads "
                f"({max_bytes}); write it as several files"
            )
        if current and (len(current) >= max_uris or current_bytes + item.size > max_bytes):
            batches.append(current)
            current, current_bytes = [], 0
        current.append(item)
        current_bytes += item.size
    if current:
        batches.append(current)
    return batches


def _load_uris(
    client: bigquery.Client,
    batch: Sequence[GcsUri],
    staging: TableId,
    config: bigquery.LoadJobConfig,
    timeout: float | None,
) -> None:
    """One load job appending the objects of `batch` to `staging`; errors name the URIs."""
    described = batch[0].uri + (f" and {len(batch) - 1} more" if len(batch) > 1 else "")
    _run_load_job(
        lambda: client.load_table_from_uri(
            [u.uri for u in batch], staging.reference, job_config=config
        ),
        described,
        staging,
        timeout,
    )


def load_uris_to_staging(
    client: bigquery.Client,
    uris: Sequence[GcsUri],
    staging: TableId,
    schema: Sequence[SchemaField],
    *,
    job_labels: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    expected_rows: int | None = None,
    timeout: float | None = 1800,
    encryption: bigquery.EncryptionConfiguration | None = None,
    on_loaded: Callable[[Sequence[GcsUri]], None] | None = None,
) -> StagingResult:
    """Create `staging` with `schema` and fill it by load jobs reading `uris` from GCS.

    No byte passes through this process: BigQuery reads the objects itself,
    with the caller's credentials (the caller needs storage.objects.get and
    list on them). The URIs go in the fewest jobs that BigQuery's per-job
    limits allow (`load_job_batches`), one after another. The row checks are
    those of `load_parquet_to_staging`: the staging table must hold the rows
    the URIs' footers state (when every `GcsUri.rows` is known) and
    `expected_rows` when given; a mismatch or a failed job raises
    `StagingLoadError` and the staging table is never published.
    `on_loaded` is called after each job with the URIs it loaded.
    """
    schema = list(schema)
    create_staging_table(client, staging, schema, labels=labels, encryption=encryption)
    config = _load_config(schema, job_labels, encryption)
    batches = load_job_batches(uris)
    if len(batches) > LOAD_JOBS_PER_TABLE_PER_DAY:
        raise StagingLoadError(
            f"{staging}: {len(uris)} URIs need {len(batches)} load jobs, more than BigQuery's "
            f"{LOAD_JOBS_PER_TABLE_PER_DAY} per table per day; write fewer, larger files"
        )
    for batch in batches:
        _load_uris(client, batch, staging, config, timeout)
        if on_loaded is not None:
            on_loaded(batch)
    rows = int(client.get_table(staging.reference).num_rows or 0)
    if all(u.rows is not None for u in uris):
        stated = sum(u.rows or 0 for u in uris)
        if rows != stated:
            raise StagingLoadError(
                f"{staging}: holds {rows} rows after loading {len(uris)} URIs whose footers "
                f"say {stated}"
            )
    if expected_rows is not None and rows != expected_rows:
        raise StagingLoadError(
            f"{staging}: loaded {rows} rows from {len(uris)} URIs, expected {expected_rows}"
        )
    return StagingResult(
        table=staging, schema=schema, rows=rows, bytes=sum(u.size for u in uris), files=len(uris)
    )


def load_parquet_to_staging(
    client: bigquery.Client,
    files: Sequence[Path | ParquetSource],
    staging: TableId,
    schema: Sequence[SchemaField] | None,
    *,
    job_labels: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    expected_rows: int | None = None,
    timeout: float | None = 1800,
    parallel_uploads: int = 1,
    on_loaded: Callable[[ParquetSource], None] | None = None,
    encryption: bigquery.EncryptionConfiguration | None = None,
    gcs: GcsStaging | None = None,
) -> StagingResult:
    """Create `staging` with `schema` and load every Parquet file into it.

    `files`: local paths, or `ParquetSource`s for files streamed from
    elsewhere (RDS streams S3 objects with no temporary copy).
    `schema=None`: the files' own Parquet schema is the source of truth
    (derived with `bigquery_schema_of_files`; local paths only, all must
    agree). Zero-byte files are skipped (they hold no rows, and are not
    Parquet). Each load job's errors are checked (`StagingLoadError` naming
    the file), and the staging table must end up with as many rows as the
    files' footers say. If `expected_rows` is given (e.g. a manifest's item
    count), the total must match it too. `labels` are added to the staging
    table's; `parallel_uploads` > 1 runs that many load jobs at once (BigQuery
    allows concurrent appends to one table; the threads mostly wait on the
    network); `on_loaded` is called after each file (e.g. to log it);
    `encryption` (CMEK) encrypts the staging table and its load jobs.

    `gcs`: stage in Google Cloud Storage instead (`gcs_staging`): every file
    is streamed to the attempt's folder and checked there, then load jobs
    read exactly those gs:// URIs (`load_uris_to_staging`, same row checks);
    `parallel_uploads` and `on_loaded` then apply to the GCS uploads. The
    objects stay until the caller has published: `gcs_staging.delete_staged`.
    If an upload or a load job fails, the objects are deleted here.
    """
    sources = [f if isinstance(f, ParquetSource) else ParquetSource.from_path(f) for f in files]
    non_empty = [s for s in sources if s.size > 0]
    if schema is None:
        paths = [f for f in files if not isinstance(f, ParquetSource)]
        if len(paths) != len(files):
            raise ValueError(f"{staging}: schema=None needs local paths to read the schema from")
        schema = bigquery_schema_of_files([p for p in map(Path, paths) if p.stat().st_size > 0])
    schema = list(schema)
    if gcs is not None:
        return _load_through_gcs(
            client,
            gcs,
            non_empty,
            staging,
            schema,
            job_labels=job_labels,
            labels=labels,
            expected_rows=expected_rows,
            timeout=timeout,
            parallel_uploads=parallel_uploads,
            on_loaded=on_loaded,
            encryption=encryption,
        )
    create_staging_table(client, staging, schema, labels=labels, encryption=encryption)
    config = _load_config(schema, job_labels, encryption)

    def upload(source: ParquetSource) -> None:
        _upload(client, source, staging, config, timeout)
        if on_loaded is not None:
            on_loaded(source)

    if parallel_uploads <= 1 or len(non_empty) <= 1:
        for source in non_empty:
            upload(source)
    else:
        with concurrent.futures.ThreadPoolExecutor(max_workers=parallel_uploads) as pool:
            list(pool.map(upload, non_empty))
    file_rows = sum(s.rows for s in non_empty)
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
        table=staging,
        schema=schema,
        rows=rows,
        bytes=sum(s.size for s in non_empty),
        files=len(non_empty),
    )


def _load_through_gcs(
    client: bigquery.Client,
    gcs: GcsStaging,
    sources: Sequence[ParquetSource],
    staging: TableId,
    schema: Sequence[SchemaField],
    *,
    job_labels: Mapping[str, str] | None,
    labels: Mapping[str, str] | None,
    expected_rows: int | None,
    timeout: float | None,
    parallel_uploads: int,
    on_loaded: Callable[[ParquetSource], None] | None,
    encryption: bigquery.EncryptionConfiguration | None,
) -> StagingResult:
    """Upload every source to GCS (all checked), then load BigQuery from those URIs only."""
    uris = upload_sources(
        gcs, sources, staging, parallel_uploads=parallel_uploads, on_uploaded=on_loaded
    )
    try:
        return load_uris_to_staging(
            client,
            uris,
            staging,
            schema,
            job_labels=job_labels,
            labels=labels,
            expected_rows=expected_rows,
            timeout=timeout,
            encryption=encryption,
        )
    except BaseException:
        delete_staged(gcs, staging)
        raise
