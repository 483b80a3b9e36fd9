"""The manifest reader and the verified download, on AWS-format samples in the local S3."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from export_pipeline.dynamodb.convert import convert_full_export, convert_incremental_export
from export_pipeline.dynamodb.export_files import (
    ExportIntegrityError,
    ManifestError,
    download_data_files,
    parse_manifest_files,
    read_manifest,
    resolve_key,
    verify_item_counts,
)
from export_pipeline_tests.support.aws_samples import FULL_SUMMARY_KEY, INCREMENTAL_SUMMARY_KEY


def _upload_sample(aws_clients, bucket: str, root: Path) -> None:
    """Put a sample export (`support.aws_samples`) into a fresh bucket under its own keys."""
    aws_clients.s3.create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": aws_clients.region}
    )
    for path in sorted(root.rglob("*")):
        if path.is_file():
            aws_clients.s3.put_object(
                Bucket=bucket, Key=path.relative_to(root).as_posix(), Body=path.read_bytes()
            )


def test_resolve_key_accepts_keys_with_and_without_the_prefix() -> None:
    assert resolve_key("exports/AWSDynamoDB/x/m.json", "exports") == "exports/AWSDynamoDB/x/m.json"
    assert resolve_key("AWSDynamoDB/x/m.json", "exports") == "exports/AWSDynamoDB/x/m.json"
    assert resolve_key("AWSDynamoDB/x/m.json", None) == "AWSDynamoDB/x/m.json"
    assert resolve_key("a/b/AWSDynamoDB/m.json", "a/b/") == "a/b/AWSDynamoDB/m.json"


def test_manifest_files_errors_name_the_line() -> None:
    with pytest.raises(ManifestError, match=r"m.json, line 2: field 'md5Checksum' is missing"):
        parse_manifest_files(
            '{"itemCount": 1, "md5Checksum": "x", "dataFileS3Key": "k"}\n'
            '{"itemCount": 1, "dataFileS3Key": "k2"}\n',
            "m.json",
            None,
        )


def test_full_sample_reads_downloads_and_converts(
    aws_clients, unique_name, tmp_path, aws_samples
) -> None:
    bucket = f"sample-{unique_name}"
    _upload_sample(aws_clients, bucket, aws_samples.dynamodb_full)
    manifest = read_manifest(aws_clients.s3, bucket, FULL_SUMMARY_KEY)
    assert manifest.export_arn.endswith(":table/Orders/export/01764115200000-5f3e2a1b")
    assert manifest.export_type == "FULL_EXPORT" and not manifest.is_incremental
    assert manifest.export_time == datetime(2025, 11, 26, tzinfo=UTC)
    assert manifest.item_count == 3 and manifest.billed_size_bytes == 1234
    assert [f.item_count for f in manifest.files] == [2, 1, 0]

    local = download_data_files(aws_clients.s3, manifest, tmp_path / "raw")
    sizes = sorted(p.stat().st_size for p in local)
    assert sizes[0] == 0  # the empty partition: a zero-byte file, accepted
    result = convert_full_export(list(local), tmp_path / "parquet", max_workers=1)
    verify_item_counts([manifest], local, result.items_per_file)
    assert result.item_count == 3


def test_incremental_sample_reads_from_the_shared_data_folder(
    aws_clients, unique_name, tmp_path, aws_samples
):
    bucket = f"sample-{unique_name}"
    _upload_sample(aws_clients, bucket, aws_samples.dynamodb_incremental)
    # Another export's file in the shared folder must not be picked up (no listing).
    aws_clients.s3.put_object(
        Bucket=bucket, Key="exports/AWSDynamoDB/data/someoneelse.json.gz", Body=b"junk"
    )
    manifest = read_manifest(aws_clients.s3, bucket, INCREMENTAL_SUMMARY_KEY)
    assert manifest.is_incremental
    assert manifest.export_from_time == datetime(2025, 11, 26, 0, tzinfo=UTC)
    assert manifest.export_to_time == datetime(2025, 11, 26, 1, tzinfo=UTC)
    assert manifest.data_as_of == manifest.export_to_time
    assert [f.key for f in manifest.files] == [
        "exports/AWSDynamoDB/data/k3d7q2wzmxe5hbnup4ravtyl6i.json.gz"
    ]
    local = download_data_files(aws_clients.s3, manifest, tmp_path / "raw")
    assert len(local) == 1
    result = convert_incremental_export(
        list(local), tmp_path / "parquet", key_attributes=["orderId"], max_workers=1
    )
    verify_item_counts([manifest], local, result.items_per_file)
    assert result.item_count == 3


def test_manifest_files_key_without_prefix_is_accepted(
    aws_clients, unique_name, aws_samples
) -> None:
    bucket = f"sample-{unique_name}"
    _upload_sample(aws_clients, bucket, aws_samples.dynamodb_full)
    text = (aws_samples.dynamodb_full / FULL_SUMMARY_KEY).read_text()
    aws_clients.s3.put_object(
        Bucket=bucket,
        Key=FULL_SUMMARY_KEY,
        Body=text.replace('"exports/AWSDynamoDB/', '"AWSDynamoDB/'),
    )
    manifest = read_manifest(aws_clients.s3, bucket, FULL_SUMMARY_KEY)
    assert manifest.files_key == "exports/AWSDynamoDB/01764115200000-5f3e2a1b/manifest-files.json"
    assert len(manifest.files) == 3


def test_corrupt_data_file_fails_naming_it(aws_clients, unique_name, tmp_path, aws_samples) -> None:
    bucket = f"sample-{unique_name}"
    _upload_sample(aws_clients, bucket, aws_samples.dynamodb_full)
    manifest = read_manifest(aws_clients.s3, bucket, FULL_SUMMARY_KEY)
    victim = manifest.files[1].key
    aws_clients.s3.put_object(Bucket=bucket, Key=victim, Body=b"not what was exported")
    with pytest.raises(ExportIntegrityError, match=victim.replace(".", r"\.")) as caught:
        download_data_files(aws_clients.s3, manifest, tmp_path / "raw")
    expected = base64.b64encode(hashlib.md5(b"not what was exported").digest()).decode()
    assert expected in str(caught.value)


def test_item_count_mismatch_fails_naming_the_file(
    aws_clients, unique_name, tmp_path, aws_samples
) -> None:
    bucket = f"sample-{unique_name}"
    _upload_sample(aws_clients, bucket, aws_samples.dynamodb_full)
    manifest = read_manifest(aws_clients.s3, bucket, FULL_SUMMARY_KEY)
    local = download_data_files(aws_clients.s3, manifest, tmp_path / "raw")
    result = convert_full_export(list(local), tmp_path / "parquet", max_workers=1)
    counts = dict(result.items_per_file)
    first = next(iter(local))
    counts[str(first)] += 1
    with pytest.raises(
        ExportIntegrityError, match="holds 3 items but the manifest's itemCount is 2"
    ):
        verify_item_counts([manifest], local, counts)


def test_missing_summary_is_a_clear_error(aws_clients, unique_name, aws_samples) -> None:
    bucket = f"sample-{unique_name}"
    _upload_sample(aws_clients, bucket, aws_samples.dynamodb_full)
    with pytest.raises(ManifestError, match="manifest not found"):
        read_manifest(aws_clients.s3, bucket, "exports/AWSDynamoDB/nope/manifest-summary.json")
