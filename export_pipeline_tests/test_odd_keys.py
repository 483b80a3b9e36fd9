"""Every file-level error names the S3 object, whatever its key: NUL bytes, control
characters, very long names, text that is not UTF-8. Keys are shown escaped (as
Python's repr escapes them) and cut to a readable length; local copies are never
named after the key."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from export_pipeline.dynamodb.export_files import (
    ExportIntegrityError,
    ManifestError,
    download_data_files,
    read_manifest,
)
from export_pipeline.s3_uri import MAX_SHOWN_KEY, s3_uri
from export_pipeline_tests.support.aws_samples import FULL_SUMMARY_KEY

ODD_KEYS = [
    "exports/AWSDynamoDB/data/nul\x00byte.json.gz",
    "exports/AWSDynamoDB/data/" + "n" * 300 + ".json.gz",
    "exports/AWSDynamoDB/data/tab\there\x1b[31m\x7f.json.gz",
]


@given(st.text())
def test_a_rendered_uri_is_printable_bounded_and_exact_when_it_can_be(key: str) -> None:
    shown = s3_uri("bucket", key)
    assert shown.startswith("s3://bucket/")
    assert shown.isprintable()
    assert len(shown) <= len("s3://bucket/") + MAX_SHOWN_KEY
    if key.isprintable() and "\\" not in key and len(key) <= MAX_SHOWN_KEY:
        assert shown == f"s3://bucket/{key}"


def test_escaping_keeps_keys_apart() -> None:
    assert s3_uri("b", "a\x00b") == "s3://b/a\\x00b"
    assert s3_uri("b", "a\\x00b") != s3_uri("b", "a\x00b")
    assert s3_uri("b", "caf\udce9") == "s3://b/caf\\udce9"  # not UTF-8: escaped, not raised


def _md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


def _export_with_key(aws_clients, bucket: str, root: Path, key: str, body: bytes) -> None:
    """The sample full export, its first data file moved to `key` holding `body`."""
    aws_clients.s3.create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": aws_clients.region}
    )
    for path in sorted(root.rglob("*")):
        if path.is_file():
            aws_clients.s3.put_object(
                Bucket=bucket, Key=path.relative_to(root).as_posix(), Body=path.read_bytes()
            )
    summary = json.loads((root / FULL_SUMMARY_KEY).read_text())
    files_key = summary["manifestFilesS3Key"]
    entries = [json.loads(line) for line in (root / files_key).read_text().splitlines() if line]
    assert entries[1]["itemCount"] == 1  # `body` holds one item too
    entries[1].update(dataFileS3Key=key, md5Checksum=_md5(body))
    aws_clients.s3.put_object(Bucket=bucket, Key=key, Body=body)
    aws_clients.s3.put_object(
        Bucket=bucket, Key=files_key, Body="".join(json.dumps(e) + "\n" for e in entries)
    )


@pytest.mark.parametrize("key", ODD_KEYS, ids=["nul", "long", "control"])
def test_odd_keys_download_and_their_errors_name_them(
    aws_clients, unique_name, tmp_path, aws_samples, key
) -> None:
    bucket = f"odd-{unique_name}"
    body = gzip.compress(b'{"Item": {"pk": {"S": "z"}}}\n')
    _export_with_key(aws_clients, bucket, aws_samples.dynamodb_full, key, body)
    manifest = read_manifest(aws_clients.s3, bucket, FULL_SUMMARY_KEY)
    local = download_data_files(aws_clients.s3, manifest, tmp_path / "raw")
    assert sorted(e.key for e in local.values()) == sorted(e.key for e in manifest.files)
    # The object changes after the manifest was written: the MD5 check names it.
    aws_clients.s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress(b"other\n"))
    with pytest.raises(ExportIntegrityError) as caught:
        download_data_files(aws_clients.s3, manifest, tmp_path / "again")
    message = str(caught.value)
    assert message.startswith(s3_uri(bucket, key) + ": MD5")
    assert message.isprintable()


def test_a_key_that_is_not_utf8_fails_naming_the_manifest_line(
    aws_clients, unique_name, aws_samples
) -> None:
    bucket = f"odd-{unique_name}"
    body = gzip.compress(b'{"Item": {"pk": {"S": "z"}}}\n')
    _export_with_key(aws_clients, bucket, aws_samples.dynamodb_full, "exports/x.json.gz", body)
    summary = json.loads((aws_samples.dynamodb_full / FULL_SUMMARY_KEY).read_text())
    files_key = summary["manifestFilesS3Key"]
    text = aws_clients.s3.get_object(Bucket=bucket, Key=files_key)["Body"].read()
    # A lone surrogate: valid JSON, but no S3 key (keys are UTF-8).
    tampered = text.replace(b"exports/x.json.gz", b"exports/x\\udce9.json.gz")
    aws_clients.s3.put_object(Bucket=bucket, Key=files_key, Body=tampered)
    with pytest.raises(ManifestError, match=r"line 2: dataFileS3Key .*x\\udce9.*not UTF-8"):
        read_manifest(aws_clients.s3, bucket, FULL_SUMMARY_KEY)
    # Bytes that are not UTF-8 in the manifest itself.
    aws_clients.s3.put_object(Bucket=bucket, Key=files_key, Body=text + b"\xff\xfe\n")
    with pytest.raises(ManifestError, match="not UTF-8"):
        read_manifest(aws_clients.s3, bucket, FULL_SUMMARY_KEY)
