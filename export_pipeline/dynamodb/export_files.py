"""Reading a DynamoDB export's manifests and fetching exactly the files they list.

An export is described by `manifest-summary.json` (what was exported, when,
how many items) and `manifest-files.json` (JSON Lines: one object per data
file with its key, item count and base64 MD5). Data files are chosen from
`manifest-files.json` only, never by listing a prefix: incremental exports of
a table all write into one shared `AWSDynamoDB/data/` folder, so a listing
would mix exports.

What the export is — its ARN, table, type, item count and point in time (or
incremental window) — is what DescribeExport says: only AWS writes that,
while anyone allowed to write to the bucket can rewrite a manifest. A
manifest that disagrees (`checked_against_api`) fails the load naming the
file and the field.

Every downloaded file is checked against its manifest MD5 while it streams to
disk, and against its manifest item count — while it is converted (a line
beyond the count stops the conversion there) and after — before anything is
sent to BigQuery: a mismatch raises `ExportIntegrityError`
naming the file, and nothing is published.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import IncompleteReadError, ResponseStreamingError

from export_pipeline.s3_uri import s3_uri, shown_key

FULL_EXPORT = "FULL_EXPORT"
INCREMENTAL_EXPORT = "INCREMENTAL_EXPORT"
_CHUNK = 1024 * 1024
# A connection that breaks mid-body is retried per file (a fresh GET, a fresh
# MD5), so one reset does not cost the whole step; botocore already retries
# the request itself, but not a body that breaks while being read.
_STREAM_ERRORS = (ResponseStreamingError, IncompleteReadError, ConnectionError)
_DOWNLOAD_ATTEMPTS = 3


class ManifestError(ValueError):
    """A manifest is missing, not JSON, or lacks a field; the message names the S3 object."""


class ExportIntegrityError(RuntimeError):
    """A data file does not match its manifest entry (MD5 or item count)."""

    def __init__(self, uri: str, message: str) -> None:
        self.uri = uri
        super().__init__(f"{uri}: {message}")


@dataclass(frozen=True)
class DataFile:
    """One line of `manifest-files.json`."""

    key: str
    item_count: int
    md5_base64: str
    etag: str | None = None


@dataclass(frozen=True)
class ExportManifest:
    """`manifest-summary.json` and the data files its `manifest-files.json` lists."""

    bucket: str
    summary_key: str
    files_key: str
    export_arn: str
    table_arn: str
    export_type: str  # FULL_EXPORT | INCREMENTAL_EXPORT
    item_count: int
    billed_size_bytes: int
    output_format: str
    export_time: datetime | None  # full exports
    export_from_time: datetime | None  # incremental exports (inclusive)
    export_to_time: datetime | None  # incremental exports (exclusive)
    files: tuple[DataFile, ...]

    @property
    def summary_uri(self) -> str:
        return s3_uri(self.bucket, self.summary_key)

    @property
    def is_incremental(self) -> bool:
        return self.export_type == INCREMENTAL_EXPORT

    @property
    def data_as_of(self) -> datetime:
        """The point in time the data reflect: ExportTime, or ExportToTime."""
        moment = self.export_to_time if self.is_incremental else self.export_time
        assert moment is not None
        return moment

    def uri(self, key: str) -> str:
        return s3_uri(self.bucket, key)


def parse_time(value: str | None) -> datetime | None:
    """An ISO-8601 manifest timestamp (`2025-11-26T00:00:00.000Z`) as an aware datetime."""
    if value is None:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def resolve_key(key: str, prefix: str | None) -> str:
    """An S3 key from a manifest, with the export's `s3Prefix` in front exactly once.

    AWS's own examples disagree on whether `manifestFilesS3Key` (and the data
    file keys) include the prefix, so both spellings are accepted.
    """
    key = key.lstrip("/")
    prefix = (prefix or "").strip("/")
    if not prefix or key == prefix or key.startswith(prefix + "/"):
        return key
    return f"{prefix}/{key}"


def _get_bytes(s3: Any, bucket: str, key: str) -> bytes:
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        raise ManifestError(f"{s3_uri(bucket, key)}: manifest not found") from None


def _utf8(data: bytes, where: str) -> str:
    """A manifest's text (AWS writes UTF-8 JSON)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{where}: not UTF-8 ({exc})") from None


def _require(document: Mapping[str, Any], field: str, where: str) -> Any:
    if field not in document:
        raise ManifestError(f"{where}: field {field!r} is missing")
    return document[field]


def parse_manifest_files(text: str, where: str, prefix: str | None) -> tuple[DataFile, ...]:
    """The entries of a `manifest-files.json` (JSON Lines), keys resolved against `prefix`."""
    files = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        here = f"{where}, line {number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{here}: not JSON ({exc})") from None
        if not isinstance(entry, dict):
            raise ManifestError(f"{here}: expected a JSON object")
        count = _require(entry, "itemCount", here)
        if not isinstance(count, int) or count < 0:
            raise ManifestError(f"{here}: itemCount must be a non-negative integer, got {count!r}")
        key = resolve_key(str(_require(entry, "dataFileS3Key", here)), prefix)
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise ManifestError(
                f"{here}: dataFileS3Key {shown_key(key)} is not UTF-8, so no S3 key"
            ) from None
        files.append(
            DataFile(
                key=key,
                item_count=count,
                md5_base64=str(_require(entry, "md5Checksum", here)),
                etag=entry.get("etag"),
            )
        )
    return tuple(files)


def read_manifest(s3: Any, bucket: str, summary_key: str) -> ExportManifest:
    """Read `manifest-summary.json` at `summary_key` and the `manifest-files.json` it names."""
    where = s3_uri(bucket, summary_key)
    try:
        summary = json.loads(_utf8(_get_bytes(s3, bucket, summary_key), where))
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{where}: not JSON ({exc})") from None
    if not isinstance(summary, dict):
        raise ManifestError(f"{where}: expected a JSON object")
    prefix = summary.get("s3Prefix")
    files_key = resolve_key(str(_require(summary, "manifestFilesS3Key", where)), prefix)
    files_where = s3_uri(bucket, files_key)
    files_text = _utf8(_get_bytes(s3, bucket, files_key), files_where)
    export_type = summary.get("exportType") or FULL_EXPORT
    if export_type not in (FULL_EXPORT, INCREMENTAL_EXPORT):
        raise ManifestError(f"{where}: unknown exportType {export_type!r}")
    manifest = ExportManifest(
        bucket=bucket,
        summary_key=summary_key,
        files_key=files_key,
        export_arn=str(_require(summary, "exportArn", where)),
        table_arn=str(_require(summary, "tableArn", where)),
        export_type=export_type,
        item_count=int(_require(summary, "itemCount", where)),
        billed_size_bytes=int(summary.get("billedSizeBytes") or 0),
        output_format=str(summary.get("outputFormat") or "DYNAMODB_JSON"),
        export_time=parse_time(summary.get("exportTime")),
        export_from_time=parse_time(summary.get("exportFromTime")),
        export_to_time=parse_time(summary.get("exportToTime")),
        files=parse_manifest_files(files_text, files_where, prefix),
    )
    if manifest.output_format != "DYNAMODB_JSON":
        raise ManifestError(
            f"{where}: outputFormat {manifest.output_format!r} is not supported "
            "(the pipeline requests DYNAMODB_JSON)"
        )
    if manifest.is_incremental:
        if manifest.export_from_time is None or manifest.export_to_time is None:
            raise ManifestError(f"{where}: incremental export without exportFromTime/ToTime")
    elif manifest.export_time is None:
        raise ManifestError(f"{where}: field 'exportTime' is missing")
    listed = sum(f.item_count for f in manifest.files)
    if listed != manifest.item_count:
        raise ManifestError(
            f"{where}: itemCount {manifest.item_count} differs from the sum of "
            f"{files_where}'s itemCounts ({listed})"
        )
    return manifest


def _millisecond(value: datetime) -> datetime:
    """`value` to the millisecond (truncated): the precision AWS states export times in."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def checked_against_api(manifest: ExportManifest, description: Mapping[str, Any]) -> ExportManifest:
    """`manifest`, its identity and times taken from DescribeExport's `description`.

    Raises `ManifestError` naming the manifest and the first field that
    disagrees with the API: exportArn, tableArn, exportType, itemCount (where
    DescribeExport gives one), exportTime (full) or exportFromTime /
    exportToTime (incremental). Times are compared to the millisecond, the
    precision of both AWS's manifests and its API.
    """
    where = manifest.summary_uri
    arn = description.get("ExportArn", "?")
    spec = description.get("IncrementalExportSpecification") or {}
    api: dict[str, tuple[Any, Any]] = {  # manifest field -> (manifest value, API value)
        "exportArn": (manifest.export_arn, description.get("ExportArn")),
        "tableArn": (manifest.table_arn, description.get("TableArn")),
        "exportType": (manifest.export_type, description.get("ExportType") or FULL_EXPORT),
    }
    if description.get("ItemCount") is not None:
        api["itemCount"] = (manifest.item_count, description["ItemCount"])
    if manifest.is_incremental:
        api["exportFromTime"] = (manifest.export_from_time, spec.get("ExportFromTime"))
        api["exportToTime"] = (manifest.export_to_time, spec.get("ExportToTime"))
    else:
        api["exportTime"] = (manifest.export_time, description.get("ExportTime"))
    times: dict[str, datetime] = {}
    for field, (stated, reported) in api.items():
        if reported is None:
            raise ManifestError(
                f"{where}: field {field!r} cannot be checked: DescribeExport of {arn} gives no "
                f"{field[0].upper() + field[1:]}; nothing was loaded"
            )
        if isinstance(reported, datetime):
            reported = times[field] = _millisecond(reported)
            stated = _millisecond(stated) if isinstance(stated, datetime) else stated
        if stated != reported:
            shown = [
                v.isoformat() if isinstance(v, datetime) else repr(v) for v in (stated, reported)
            ]
            raise ManifestError(
                f"{where}: field {field!r} is {shown[0]} but DescribeExport of {arn} says "
                f"{shown[1]}; the manifest does not describe this export, nothing was loaded "
                "(export again, and check who can write to the export bucket)"
            )
    return replace(
        manifest,
        export_time=times.get("exportTime"),
        export_from_time=times.get("exportFromTime"),
        export_to_time=times.get("exportToTime"),
    )


def download_data_files(
    s3: Any,
    manifest: ExportManifest,
    dest_dir: Path,
    *,
    log: Callable[[str], None] | None = None,
) -> dict[Path, DataFile]:
    """Stream every listed data file into `dest_dir`, verifying each one's MD5.

    Returns local path -> manifest entry, in manifest order. Raises
    `ExportIntegrityError` naming the first file whose MD5 differs.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    local: dict[Path, DataFile] = {}
    for index, entry in enumerate(manifest.files):
        # Named by position, never after the key: a key may hold anything (NUL bytes,
        # `..`, 1,024 bytes); the index keeps names unique across exports.
        path = dest_dir / f"{index:05d}.json.gz"
        download_data_file(s3, manifest, entry, path)
        local[path] = entry
        if log:
            log(f"downloaded {manifest.uri(entry.key)} ({path.stat().st_size} bytes, MD5 ok)")
    return local


def download_data_file(s3: Any, manifest: ExportManifest, entry: DataFile, path: Path) -> None:
    """Stream one listed data file to `path`, verifying its MD5 against the manifest.

    Raises `ExportIntegrityError` naming the S3 object when the MD5 differs
    (the partial copy is removed) or the object is missing.
    """
    actual = _download(s3, manifest, entry, path)
    if actual != entry.md5_base64:
        path.unlink(missing_ok=True)
        raise ExportIntegrityError(
            manifest.uri(entry.key),
            f"MD5 {actual} differs from the manifest's md5Checksum {entry.md5_base64} "
            f"({manifest.uri(manifest.files_key)}); nothing was loaded",
        )


def _download(s3: Any, manifest: ExportManifest, entry: DataFile, path: Path) -> str:
    """Stream one listed data file to `path`; returns its base64 MD5."""
    attempt = 1
    while True:
        digest = hashlib.md5(usedforsecurity=False)
        try:
            body = s3.get_object(Bucket=manifest.bucket, Key=entry.key)["Body"]
            with path.open("wb") as out:
                for chunk in body.iter_chunks(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            return base64.b64encode(digest.digest()).decode("ascii")
        except s3.exceptions.NoSuchKey:
            raise ExportIntegrityError(
                manifest.uri(entry.key),
                f"listed in {manifest.uri(manifest.files_key)} but missing from S3; "
                "nothing was loaded",
            ) from None
        except _STREAM_ERRORS:
            if attempt == _DOWNLOAD_ATTEMPTS:
                raise  # still transient: the step's retry policy takes over
            attempt += 1


def verify_item_counts(
    manifests: Sequence[ExportManifest],
    local_files: Mapping[Path, DataFile],
    items_per_file: Mapping[str, int],
) -> None:
    """Check the converter's per-file item counts against the manifest entries.

    `items_per_file` maps the local path (as a string) to the lines read.
    Raises `ExportIntegrityError` naming the S3 object of the first mismatch.
    """
    bucket = manifests[0].bucket if manifests else ""
    for path, entry in local_files.items():
        counted = items_per_file.get(str(path))
        if counted is None:
            counted = items_per_file.get(str(path.resolve()), -1)
        if counted != entry.item_count:
            raise ExportIntegrityError(
                s3_uri(bucket, entry.key),
                f"holds {counted} items but the manifest's itemCount is {entry.item_count}; "
                "nothing was loaded",
            )
