"""Reading a finished RDS snapshot export in S3: its info files and its Parquet files.

Layout (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_ExportSnapshot.html):

    <S3Prefix>/<id>/export_info_<id>.json
    <S3Prefix>/<id>/export_tables_info_<id>_from_<a>_to_<b>.json   (one or more)
    <S3Prefix>/<id>/<database>/<database>.<table>/<batch>/part-….parquet   (MySQL)
    <S3Prefix>/<id>/<database>/<schema>.<table>/<batch>/part-….parquet     (PostgreSQL)

AWS says the file naming may change, so a table's data is every `*.parquet`
under its own folder (listing is right here: the folder belongs to that table
and that export alone). Row counts and schemas come from Parquet footers,
fetched with ranged GETs: no row is downloaded or decoded for them.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import struct
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from export_pipeline.s3_uri import s3_uri

_FOOTER_TAIL = 8  # 4-byte little-endian footer length + b"PAR1"
_FIRST_READ = 64 * 1024
# Keys that a table's `tableStatistics` may carry a row count under (AWS does not
# document one; these are the spellings seen in public readers and our emulator).
_ROW_COUNT_KEYS = ("numberOfRows", "rowCount", "rows", "numRows", "exportedRowCount")


class ExportFilesError(RuntimeError):
    """The export's files are missing or not what AWS writes; the message names the file."""


@dataclass(frozen=True)
class ExportLocation:
    """Where one export task wrote its files."""

    bucket: str
    prefix: str
    export_task_identifier: str

    @property
    def root(self) -> str:
        prefix = self.prefix.strip("/")
        return f"{prefix}/{self.export_task_identifier}" if prefix else self.export_task_identifier

    def table_folder(self, *parts: str) -> str:
        """A table's folder, from its name parts as `target` spells them.

        MySQL `database.table`: `<database>/<database>.<table>/`; PostgreSQL
        `database.schema.table`: `<database>/<schema>.<table>/` (AWS's layouts).
        """
        database, *rest = parts
        folder = ".".join(parts) if len(parts) == 2 else ".".join(rest)
        return f"{self.root}/{database}/{folder}/"

    def uri(self, key: str = "") -> str:
        return s3_uri(self.bucket, key or self.root + "/")


@dataclass(frozen=True)
class TableInfo:
    """One entry of `perTableStatus` in export_tables_info."""

    target: str
    status: str
    columns: tuple[tuple[str, str], ...]  # (column name, originalType), in table order
    row_count: int | None
    raw: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class ParquetObject:
    key: str
    size: int
    num_rows: int
    schema: pa.Schema = field(repr=False, compare=False)


def _get_json(s3: Any, bucket: str, key: str) -> Any:
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        raise ExportFilesError(f"{s3_uri(bucket, key)} is missing") from None
    try:
        return json.loads(body)
    except ValueError as exc:
        raise ExportFilesError(f"{s3_uri(bucket, key)} is not valid JSON: {exc}") from None


def list_keys(s3: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """Every object under `prefix` ({Key, Size, …}), across pages."""
    objects: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        objects.extend(page.get("Contents", []))
    return objects


def read_export_info(s3: Any, location: ExportLocation) -> dict[str, Any]:
    """export_info_<id>.json as a dict."""
    key = f"{location.root}/export_info_{location.export_task_identifier}.json"
    info = _get_json(s3, location.bucket, key)
    if not isinstance(info, dict):
        raise ExportFilesError(f"{s3_uri(location.bucket, key)}: expected a JSON object")
    return info


# export_info field -> DescribeExportTasks field: which export, of what, written where.
_INFO_FIELDS = {
    "exportTaskIdentifier": "ExportTaskIdentifier",
    "sourceArn": "SourceArn",
    "snapshotTime": "SnapshotTime",
    "s3Bucket": "S3Bucket",
    "s3Prefix": "S3Prefix",
}


def _millisecond(value: Any) -> Any:
    """A time (ISO text or datetime) to the millisecond, AWS's precision; others unchanged."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC).replace(microsecond=value.microsecond // 1000 * 1000)
    return value


def export_info_disagreement(info: dict[str, Any], task: dict[str, Any]) -> str | None:
    """The first field of export_info that disagrees with DescribeExportTasks' `task`, or None.

    A field missing from either side is not compared (AWS does not document
    export_info's fields as required); S3 prefixes compare without slashes at the ends.
    """
    for field_name, api_name in _INFO_FIELDS.items():
        stated, reported = info.get(field_name), task.get(api_name)
        if stated is None or reported is None:
            continue
        if field_name == "s3Prefix":
            same = str(stated).strip("/") == str(reported).strip("/")
        else:
            same = _millisecond(stated) == _millisecond(reported)
        if not same:
            shown = reported.isoformat() if isinstance(reported, dt.datetime) else repr(reported)
            return (
                f"field {field_name!r} is {stated!r} but DescribeExportTasks says {api_name} "
                f"{shown}"
            )
    return None


def checked_export_info(s3: Any, location: ExportLocation, task: dict[str, Any]) -> dict[str, Any]:
    """export_info_<id>.json, checked against the task AWS's API describes.

    Anyone allowed to write to the bucket can rewrite the file; only AWS
    writes DescribeExportTasks' answer, which is what the load uses (the
    snapshot time of `_exported_at`). A disagreement fails the load.
    """
    info = read_export_info(s3, location)
    reason = export_info_disagreement(info, task)
    if reason is not None:
        key = f"{location.root}/export_info_{location.export_task_identifier}.json"
        raise ExportFilesError(
            f"{s3_uri(location.bucket, key)}: {reason}; the file does not describe this "
            "export, nothing was loaded (export again, and check who can write to the bucket)"
        )
    return info


def _row_count(statistics: dict[str, Any]) -> int | None:
    for name in _ROW_COUNT_KEYS:
        value = statistics.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def read_tables_info(s3: Any, location: ExportLocation) -> dict[str, TableInfo]:
    """Every export_tables_info_<id>_from_<a>_to_<b>.json, merged; keyed by `target`."""
    pattern = re.compile(
        re.escape(f"{location.root}/export_tables_info_{location.export_task_identifier}_from_")
        + r"\d+_to_\d+\.json$"
    )
    keys = sorted(
        o["Key"] for o in list_keys(s3, location.bucket, f"{location.root}/export_tables_info_")
    )
    keys = [k for k in keys if pattern.match(k)]
    if not keys:
        raise ExportFilesError(
            f"{location.uri()}: no export_tables_info_{location.export_task_identifier}_from_*_to_*"
            ".json (is the export complete?)"
        )
    tables: dict[str, TableInfo] = {}
    for key in keys:
        document = _get_json(s3, location.bucket, key)
        entries = document.get("perTableStatus") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise ExportFilesError(f"{s3_uri(location.bucket, key)}: no 'perTableStatus' list")
        for entry in entries:
            target = entry.get("target")
            if not isinstance(target, str):
                raise ExportFilesError(f"{s3_uri(location.bucket, key)}: an entry has no 'target'")
            mappings = (entry.get("schemaMetadata") or {}).get("originalTypeMappings") or []
            columns = tuple((m["columnName"], m["originalType"]) for m in mappings)
            tables[target] = TableInfo(
                target=target,
                status=str(entry.get("status", "")),
                columns=columns,
                row_count=_row_count(entry.get("tableStatistics") or {}),
                raw=entry,
            )
    return tables


def list_table_parquet(s3: Any, location: ExportLocation, *parts: str) -> list[dict]:
    """Every `*.parquet` object in the table's folder, in key order (batches, then parts)."""
    folder = location.table_folder(*parts)
    objects = [o for o in list_keys(s3, location.bucket, folder) if o["Key"].endswith(".parquet")]
    return sorted(objects, key=lambda o: _natural_key(o["Key"]))


def _natural_key(key: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def read_parquet_footer(s3: Any, bucket: str, key: str, size: int) -> pq.FileMetaData:
    """The file's Parquet metadata, from at most two ranged GETs of its end."""
    if size < 12:
        raise ExportFilesError(f"{s3_uri(bucket, key)}: {size} bytes is too small for Parquet")
    first = min(size, _FIRST_READ)
    tail = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={size - first}-{size - 1}")[
        "Body"
    ].read()
    if tail[-4:] != b"PAR1":
        raise ExportFilesError(f"{s3_uri(bucket, key)}: not a Parquet file (no PAR1 at the end)")
    (footer_length,) = struct.unpack("<I", tail[-_FOOTER_TAIL:-4])
    if footer_length + _FOOTER_TAIL + 4 > size:
        raise ExportFilesError(f"{s3_uri(bucket, key)}: footer length {footer_length} is invalid")
    if footer_length + _FOOTER_TAIL > len(tail):
        start = size - footer_length - _FOOTER_TAIL
        tail = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{size - 1}")[
            "Body"
        ].read()
    footer = tail[-(footer_length + _FOOTER_TAIL) :]
    try:
        # A minimal file (magic + footer) is enough for the metadata parser.
        return pq.read_metadata(pa.BufferReader(b"PAR1" + footer))
    except (pa.ArrowException, OSError) as exc:
        raise ExportFilesError(f"{s3_uri(bucket, key)}: unreadable Parquet footer: {exc}") from None


def inspect_table_files(s3: Any, location: ExportLocation, *parts: str) -> list[ParquetObject]:
    """The table's Parquet files with their row counts and Arrow schemas (footers only)."""
    files = []
    for obj in list_table_parquet(s3, location, *parts):
        metadata = read_parquet_footer(s3, location.bucket, obj["Key"], obj["Size"])
        files.append(
            ParquetObject(
                key=obj["Key"],
                size=obj["Size"],
                num_rows=metadata.num_rows,
                schema=metadata.schema.to_arrow_schema(),
            )
        )
    return files
