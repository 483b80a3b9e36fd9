"""The local GCS server, through the official client and raw HTTP, as Google documents the API.

Each test works under a prefix of its own in the session cloud's staging
bucket, so they share the one server.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os

import google_crc32c
import pytest
import requests
from google.api_core.exceptions import BadRequest, NotFound, PreconditionFailed

from export_pipeline.config import PipelineConfig
from export_pipeline.local_cloud.settings import LocalCloudSettings

CHUNK = 256 * 1024  # the resumable-upload granularity Google requires


@pytest.fixture
def bucket(gcs_client, pipeline_config: PipelineConfig):  # type: ignore[no-untyped-def]
    assert pipeline_config.gcs is not None, "the demo configuration stages in GCS"
    return gcs_client.bucket(pipeline_config.gcs.staging_bucket)


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def test_chunked_resumable_upload_stores_the_plain_file_with_googles_checksums(
    bucket, local_cloud: LocalCloudSettings, unique_name: str
) -> None:
    data = os.urandom(3 * CHUNK + 1234)
    blob = bucket.blob(f"{unique_name}/dir/part-0.parquet", chunk_size=CHUNK)
    blob.upload_from_file(io.BytesIO(data), content_type="application/vnd.apache.parquet")

    blob.reload()
    assert blob.size == len(data)
    assert blob.md5_hash == _b64(hashlib.md5(data).digest())
    assert blob.crc32c == _b64(google_crc32c.Checksum(data).digest())
    assert blob.content_type == "application/vnd.apache.parquet"
    # Where bqemulator resolves gs://bucket/name: the object's bytes, as a plain file.
    stored = local_cloud.gcs_root / bucket.name / unique_name / "dir" / "part-0.parquet"
    assert stored.read_bytes() == data
    # Downloads are checked by the client against x-goog-hash, whole and by range.
    assert blob.download_as_bytes(checksum="crc32c") == data
    assert blob.download_as_bytes(start=CHUNK, end=CHUNK + 9) == data[CHUNK : CHUNK + 10]


def test_an_unfinished_resumable_upload_leaves_no_object(
    bucket, local_cloud: LocalCloudSettings, unique_name: str
) -> None:
    """Bytes of an upload that never completes are nowhere a listing or a load job looks."""
    name = f"{unique_name}/half.parquet"
    base = f"{local_cloud.gcs_endpoint}/upload/storage/v1/b/{bucket.name}/o"
    started = requests.post(
        base, params={"uploadType": "resumable"}, json={"name": name}, timeout=10
    )
    assert started.status_code == 200, started.text
    session = started.headers["Location"]
    chunk = requests.put(
        session,
        data=b"x" * CHUNK,
        headers={"Content-Range": f"bytes 0-{CHUNK - 1}/*"},
        timeout=10,
    )
    assert chunk.status_code == 308
    assert chunk.headers["Range"] == f"bytes=0-{CHUNK - 1}"

    assert list(bucket.list_blobs(prefix=unique_name)) == []
    assert not (local_cloud.gcs_root / bucket.name / unique_name).exists()
    with pytest.raises(NotFound):
        bucket.blob(name).reload()

    # The session resumes where the server says it stopped, and then the object exists.
    status = requests.put(session, headers={"Content-Range": "bytes */*"}, timeout=10)
    assert status.headers["Range"] == f"bytes=0-{CHUNK - 1}"
    done = requests.put(
        session,
        data=b"y" * 10,
        headers={"Content-Range": f"bytes {CHUNK}-{CHUNK + 9}/{CHUNK + 10}"},
        timeout=10,
    )
    assert done.status_code == 200, done.text
    assert done.json()["size"] == str(CHUNK + 10)
    assert bucket.blob(name).download_as_bytes() == b"x" * CHUNK + b"y" * 10


def test_listing_by_prefix_and_delimiter_in_pages(bucket, unique_name: str) -> None:
    names = [f"{unique_name}/a/{i}" for i in range(5)] + [f"{unique_name}/b", f"{unique_name}/c/d"]
    for name in names:
        bucket.blob(name).upload_from_string(name.encode())

    listed = [b.name for b in bucket.list_blobs(prefix=f"{unique_name}/", page_size=2)]
    assert listed == sorted(names)
    assert [b.name for b in bucket.list_blobs(prefix=f"{unique_name}/a/")] == names[:5]
    top = bucket.client.list_blobs(bucket, prefix=f"{unique_name}/", delimiter="/")
    assert [b.name for b in top] == [f"{unique_name}/b"]
    assert top.prefixes == {f"{unique_name}/a/", f"{unique_name}/c/"}


def test_generation_preconditions_and_delete(
    bucket, local_cloud: LocalCloudSettings, unique_name: str
) -> None:
    blob = bucket.blob(f"{unique_name}/deep/one")
    blob.upload_from_string(b"first", if_generation_match=0)
    with pytest.raises(PreconditionFailed):
        bucket.blob(blob.name).upload_from_string(b"second", if_generation_match=0)
    assert blob.download_as_bytes() == b"first"

    blob.delete()
    with pytest.raises(NotFound):
        blob.delete()
    assert list(bucket.list_blobs(prefix=unique_name)) == []
    # No empty folders are left behind in the bucket's tree.
    assert not (local_cloud.gcs_root / bucket.name / unique_name).exists()


def test_names_without_a_plain_file_form_are_refused_with_the_reason(
    bucket, unique_name: str
) -> None:
    with pytest.raises(BadRequest, match="cannot be stored by the local cloud"):
        bucket.blob(f"{unique_name}//double-slash").upload_from_string(b"x")
