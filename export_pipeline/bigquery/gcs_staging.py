"""Staging Parquet in Google Cloud Storage, where BigQuery's load jobs read it.

With a `gcs` section in the configuration, `load_parquet_to_staging` puts
each file of an attempt at `gs://<bucket>/<prefix>/<run>/<staging table>/<n>-<file>`
and BigQuery fills the staging table by load jobs reading those URIs: the
worker streams each file once to GCS and sends BigQuery no data bytes.

Why it holds together:

- Each file is a resumable upload in `UPLOAD_CHUNK_BYTES` chunks, read from
  its stream as it goes (an S3 body is never read whole nor copied to disk),
  and conditional on no live object of that name (`ifGenerationMatch=0`):
  an upload never replaces an object it did not write.
- The size and MD5 GCS reports for each object must be those of the bytes
  this process sent; otherwise nothing is loaded (and the staging table's
  row count is checked against the files' footers after the load).
- Every upload of the attempt completes and is checked before the first load
  job starts, and the load jobs name exactly the objects this attempt wrote,
  never a wildcard over the folder: an object left under the prefix by a
  crashed attempt, or put there by anyone else, never reaches BigQuery. An
  unfinished resumable upload is not an object at all.
- The folder is per attempt (the staging table's name is): what a crashed
  attempt of the same name left is deleted before uploading; an upload or a
  load that fails deletes what it wrote; after publishing, the caller deletes
  the folder (`delete_staged`). A crash leaves objects only for the bucket's
  lifecycle rule (deploy/bigquery-roles.md, "GCS staging").
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO

from google.api_core.exceptions import GoogleAPIError, NotFound

from export_pipeline.bigquery.tables import BigQueryPublishError, TableId

if TYPE_CHECKING:
    from export_pipeline.bigquery.staging import ParquetSource

# A resumable upload's chunks must be multiples of 256 KiB; each is held in
# memory once while it is sent (per parallel upload).
UPLOAD_CHUNK_BYTES = 16 * 1024 * 1024
PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.\-]")


class GcsStagingError(BigQueryPublishError):
    """Staging in GCS failed (an upload, a check of what GCS holds); nothing was loaded."""


@dataclass(frozen=True)
class GcsUri:
    """A gs:// URI (an object, or a wildcard over objects) with what it holds.

    `size`: bytes (what the 15 TB per-job limit counts); `rows`: the rows the
    Parquet footers state, None if not known (then only `expected_rows` is checked).
    """

    uri: str
    size: int
    rows: int | None = None

    def __post_init__(self) -> None:
        if not self.uri.startswith("gs://") or "/" not in self.uri[5:]:
            raise ValueError(f"expected a gs://bucket/object URI, got {self.uri!r}")


@dataclass(frozen=True)
class GcsStaging:
    """Where, and with which client, one run stages its Parquet.

    `run`: the Dagster run id (names the run's folder). `client`: a
    `google.cloud.storage.Client`.
    """

    client: Any
    bucket: str
    prefix: str
    run: str
    chunk_bytes: int = UPLOAD_CHUNK_BYTES

    def folder(self, staging: TableId) -> str:
        """`<prefix>/<run>/<staging table>/`: one folder per attempt at one table."""
        parts = [self.prefix, _UNSAFE_NAME.sub("_", self.run), staging.table]
        return "/".join(p for p in parts if p) + "/"

    def uri(self, name: str) -> str:
        return f"gs://{self.bucket}/{name}"


class _SentBytes:
    """Reads a source stream for the upload, counting and hashing what is sent.

    `read(n)` returns exactly `n` bytes unless the stream ended: the upload
    takes a short chunk for the last one, so a stream that returns less
    (a network body, a decompressor) must not end the object early.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.size = 0
        self.md5 = hashlib.md5()

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            data = self._stream.read()
        else:
            pieces = []
            wanted = size
            while wanted > 0:
                piece = self._stream.read(wanted)
                if not piece:
                    break
                pieces.append(piece)
                wanted -= len(piece)
            data = b"".join(pieces)
        self.size += len(data)
        self.md5.update(data)
        return data

    def tell(self) -> int:
        return self.size

    def md5_base64(self) -> str:
        return base64.b64encode(self.md5.digest()).decode()


def _object_name(folder: str, index: int, source_name: str) -> str:
    base = _UNSAFE_NAME.sub("_", PurePosixPath(source_name.replace("\\", "/")).name) or "part"
    return f"{folder}{index:05d}-{base}"


def _upload_one(gcs: GcsStaging, name: str, source: ParquetSource) -> GcsUri:
    """Stream `source` to object `name`, then check GCS holds exactly what was sent."""
    blob = gcs.client.bucket(gcs.bucket).blob(name, chunk_size=gcs.chunk_bytes)
    with source.open() as stream:
        sent = _SentBytes(stream)
        # No size: always a resumable upload, in chunks, with the client's CRC32C check.
        blob.upload_from_file(
            sent, rewind=False, content_type=PARQUET_CONTENT_TYPE, if_generation_match=0
        )
    uri = gcs.uri(name)
    # `source.size` is the file's size where it lives; a rewritten copy (RDS
    # with renamed or personal-data columns) differs, so what counts is what was sent.
    if (blob.size, blob.md5_hash) != (sent.size, sent.md5_base64()):
        raise GcsStagingError(
            f"{uri}: GCS holds {blob.size} bytes with MD5 {blob.md5_hash}, but {sent.size} "
            f"bytes with MD5 {sent.md5_base64()} were sent (from {source.name})"
        )
    return GcsUri(uri, sent.size, source.rows)


def upload_sources(
    gcs: GcsStaging,
    sources: Sequence[ParquetSource],
    staging: TableId,
    *,
    parallel_uploads: int = 1,
    on_uploaded: Callable[[ParquetSource], None] | None = None,
) -> list[GcsUri]:
    """Upload every source into the attempt's folder; their URIs, in the sources' order.

    Returns only once every object is written and checked. If any upload
    fails, the folder is emptied again and `GcsStagingError` names the file.
    """
    folder = gcs.folder(staging)
    delete_folder(gcs, folder)  # a crashed attempt of the same name; never loaded
    names = [_object_name(folder, i, s.name) for i, s in enumerate(sources)]

    def upload(pair: tuple[str, ParquetSource]) -> GcsUri:
        name, source = pair
        try:
            uri = _upload_one(gcs, name, source)
        except (GoogleAPIError, OSError, ValueError) as error:
            raise GcsStagingError(
                f"uploading {source.name} to {gcs.uri(name)} failed: {error}"
            ) from error
        if on_uploaded is not None:
            on_uploaded(source)
        return uri

    try:
        if parallel_uploads <= 1 or len(sources) <= 1:
            return [upload(pair) for pair in zip(names, sources, strict=True)]
        with concurrent.futures.ThreadPoolExecutor(max_workers=parallel_uploads) as pool:
            return list(pool.map(upload, zip(names, sources, strict=True)))
    except BaseException:
        delete_folder(gcs, folder)
        raise


def delete_folder(gcs: GcsStaging, folder: str) -> int:
    """Delete every object under `folder` (a trailing-slash prefix); how many there were.

    Safe to repeat: an object already gone is not an error.
    """
    if not folder.endswith("/"):
        raise ValueError(f"expected a folder ending in '/', got {folder!r}")
    deleted = 0
    for blob in gcs.client.list_blobs(gcs.bucket, prefix=folder):
        try:
            blob.delete()
        except NotFound:
            continue
        deleted += 1
    return deleted


def delete_staged(gcs: GcsStaging | None, staging: TableId) -> int:
    """After publishing (or giving up on) `staging`: delete the objects it was loaded from.

    A no-op without GCS staging; returns how many objects were deleted.
    """
    if gcs is None:
        return 0
    return delete_folder(gcs, gcs.folder(staging))
