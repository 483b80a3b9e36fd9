"""`load_parquet_to_staging` through GCS: streamed uploads, checked, then gs:// loads only.

Faults are real streams that break (a source body that ends early or
raises midway, as an S3 body can); GCS and BigQuery are the session's local
servers.
"""

from __future__ import annotations

import contextlib
import io
import os
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from google.cloud.bigquery import SchemaField

from export_pipeline.bigquery.gcs_staging import GcsStaging, GcsStagingError, delete_staged
from export_pipeline.bigquery.staging import ParquetSource, load_parquet_to_staging
from export_pipeline_tests.support.bigquery import rows

SCHEMA = [SchemaField("id", "STRING", mode="REQUIRED"), SchemaField("blob", "BYTES")]
CHUNK = 256 * 1024


def _parquet(prefix: str, count: int, blob_bytes: int = 8) -> bytes:
    table = pa.table(
        {
            "id": [f"{prefix}-{i}" for i in range(count)],
            "blob": [os.urandom(blob_bytes) for _ in range(count)],
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="none")
    return buffer.getvalue()


class _Trickle(io.RawIOBase):
    """A body that returns at most `step` bytes per read and may break after `fail_after`."""

    def __init__(self, data: bytes, step: int = 1000, fail_after: int | None = None) -> None:
        self._data, self._step, self._fail_after, self._at = data, step, fail_after, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._fail_after is not None and self._at >= self._fail_after:
            raise ConnectionResetError("connection reset by peer (test fault)")
        end = len(self._data) if size < 0 else self._at + min(size, self._step)
        piece = self._data[self._at : end]
        self._at += len(piece)
        return piece


def _source(name: str, data: bytes, rows_: int, **trickle) -> ParquetSource:  # type: ignore[no-untyped-def]
    return ParquetSource(
        name, rows_, len(data), lambda: contextlib.closing(_Trickle(data, **trickle))
    )


@pytest.fixture
def gcs(gcs_client, pipeline_config, unique_name):  # type: ignore[no-untyped-def]
    staging = GcsStaging(
        gcs_client,
        pipeline_config.gcs.staging_bucket,
        f"{pipeline_config.gcs.staging_prefix}/{unique_name}",
        run=str(uuid.uuid4()),
        chunk_bytes=CHUNK,
    )
    yield staging
    for blob in gcs_client.list_blobs(staging.bucket, prefix=staging.prefix + "/"):
        blob.delete()


def _names(gcs: GcsStaging, prefix: str) -> list[str]:
    return [b.name for b in gcs.client.list_blobs(gcs.bucket, prefix=prefix)]


def _load_jobs_into(bigquery_client, table: str) -> list:  # type: ignore[no-untyped-def]
    jobs = bigquery_client.list_jobs(max_results=200)
    return [j for j in jobs if j.job_type == "load" and j.destination.table_id == table]


def test_files_stream_to_gcs_in_chunks_and_load_from_gs_uris_only(
    bigquery_client, table_id, gcs
) -> None:
    big = _parquet("big", 300, blob_bytes=2000)  # ~600 KB: three chunks, short reads
    small = _parquet("small", 5)
    staging = table_id("_staging_gcs")
    sources = [
        _source("s3://bucket/a/part-1.parquet", big, 300),
        _source("x/part-1.parquet", small, 5),
    ]
    result = load_parquet_to_staging(
        bigquery_client, sources, staging, SCHEMA, expected_rows=305, gcs=gcs
    )

    assert (result.rows, result.files, result.bytes) == (305, 2, len(big) + len(small))
    got = rows(bigquery_client, f"SELECT COUNT(DISTINCT id) AS n FROM {staging.sql}")
    assert got == [{"n": 305}]
    folder = gcs.folder(staging)
    assert folder == f"{gcs.prefix}/{gcs.run}/{staging.table}/"
    staged = _names(gcs, folder)
    assert staged == [f"{folder}00000-part-1.parquet", f"{folder}00001-part-1.parquet"]
    assert gcs.client.bucket(gcs.bucket).blob(staged[0]).download_as_bytes() == big
    # BigQuery's own record: one load job, reading exactly the staged objects.
    [job] = _load_jobs_into(bigquery_client, staging.table)
    assert sorted(job.source_uris) == [f"gs://{gcs.bucket}/{name}" for name in staged]

    assert delete_staged(gcs, staging) == 2
    assert _names(gcs, folder) == []
    assert delete_staged(gcs, staging) == 0  # a second cleanup is harmless


def test_an_upload_that_fails_midway_loads_nothing_and_leaves_no_object(
    bigquery_client, table_id, gcs
) -> None:
    target = table_id("target")
    bigquery_client.query(f"CREATE TABLE {target.sql} AS SELECT 'kept' AS id").result()
    good = _parquet("good", 3)
    bad = _parquet("bad", 300, blob_bytes=2000)
    staging = table_id("_staging_fault")
    sources = [
        _source("good.parquet", good, 3),
        ParquetSource(
            "bad.parquet",
            300,
            len(bad),
            # The body breaks after one chunk was sent, as a reset S3 connection does.
            lambda: contextlib.closing(_Trickle(bad, step=CHUNK, fail_after=CHUNK)),
        ),
    ]
    with pytest.raises(GcsStagingError, match="connection reset") as error:
        load_parquet_to_staging(bigquery_client, sources, staging, SCHEMA, gcs=gcs)
    assert "bad.parquet" in str(error.value)

    assert _load_jobs_into(bigquery_client, staging.table) == []  # no load job started
    assert _names(gcs, gcs.folder(staging)) == []  # the good file's object was removed too
    assert rows(bigquery_client, f"SELECT id FROM {target.sql}") == [{"id": "kept"}]


def test_objects_left_under_the_prefix_by_earlier_attempts_are_never_loaded(
    bigquery_client, table_id, gcs
) -> None:
    staging = table_id("_staging_stale")
    bucket = gcs.client.bucket(gcs.bucket)
    stale = _parquet("stale", 7)
    # A crashed attempt of another name, and one of this very name (same folder).
    other = f"{gcs.prefix}/{gcs.run}/_staging_stale_earlier/00000-part.parquet"
    same = f"{gcs.folder(staging)}00007-leftover.parquet"
    for name in (other, same):
        bucket.blob(name).upload_from_string(stale)

    fresh = _parquet("fresh", 4)
    result = load_parquet_to_staging(
        bigquery_client, [_source("part.parquet", fresh, 4)], staging, SCHEMA, gcs=gcs
    )

    assert result.rows == 4
    ids = {r["id"] for r in rows(bigquery_client, f"SELECT id FROM {staging.sql}")}
    assert ids == {f"fresh-{i}" for i in range(4)}
    [job] = _load_jobs_into(bigquery_client, staging.table)
    assert job.source_uris == [f"gs://{gcs.bucket}/{gcs.folder(staging)}00000-part.parquet"]
    assert _names(gcs, gcs.folder(staging)) == [f"{gcs.folder(staging)}00000-part.parquet"]
    assert _names(gcs, other) == [other]  # another attempt's: the lifecycle rule's to remove
