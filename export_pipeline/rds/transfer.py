"""An RDS export's Parquet moved S3 -> Cloud Storage by Storage Transfer (not the worker).

One transfer job per export task, named from the task identifier
(`transferJobs/export-pipeline-rds-<identifier>`), copying the folders of
the tables that take this path from `s3://<bucket>/<prefix>/<identifier>/`
to `gs://<staging_bucket>/<staging_prefix>/rds-transfer/<identifier>/`. Every
table load of the export ensures the same job (`storage_transfer.ensure_transfer`):
the first one creates and runs it, the others (and a step re-executed after
a kill) find its operation and wait for it, so an export is copied once.

A table whose files must be rewritten before BigQuery sees them (`worker_reason`:
columns excluded or hashed as personal data, or names BigQuery cannot take)
is not copied: Storage Transfer copies objects as they are, and unhashed
personal data must not land in a staging bucket. Such a table goes through
the worker as with `transfer: worker`, and its load says so in one line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from export_pipeline.rds.engine import Engine
from export_pipeline.rds.export_files import ExportLocation, TableInfo
from export_pipeline.rds.loading import RdsLoadError, plan_columns
from export_pipeline.storage_transfer import (
    S3ToGcsTransfer,
    StorageTransferError,
    ensure_transfer,
    job_name,
    wait_for_transfer,
)
from export_pipeline.table_settings import RdsTableSettings

# Under gcs.staging_prefix: where the exports' copies land, one folder per export task.
TRANSFER_FOLDER = "rds-transfer"


def worker_reason(info: TableInfo, settings: RdsTableSettings, engine: Engine) -> str | None:
    """Why the table's files need the worker's rewrite (None: they are loaded as they are)."""
    if settings.columns:
        return (
            "its settings exclude or hash columns (rds.instances[].tables."
            f"{info.target}.columns), which the worker rewrites before BigQuery sees them"
        )
    try:
        renamed = [
            c.mapping.source_name
            for c in plan_columns(info, None, engine)
            if c.name != c.mapping.source_name
        ]
    except RdsLoadError:
        return None  # the load itself reports the problem
    if renamed:
        return (
            f"column names {', '.join(map(repr, renamed))} are not BigQuery names; the "
            "worker rewrites the files with the new names"
        )
    return None


def export_transfer(
    *,
    location: ExportLocation,
    project_id: str,
    role_arn: str,
    staging_bucket: str,
    staging_prefix: str,
    tables: Iterable[tuple[str, ...]],
    description: str,
) -> S3ToGcsTransfer:
    """The one transfer job of the export at `location`: the folders of `tables` (name parts)."""
    root = location.root + "/"
    sink = "/".join(p for p in (staging_prefix, TRANSFER_FOLDER, location.export_task_identifier))
    return S3ToGcsTransfer(
        job_name=job_name("export-pipeline-rds", location.export_task_identifier),
        project_id=project_id,
        source_bucket=location.bucket,
        source_path=root,
        role_arn=role_arn,
        sink_bucket=staging_bucket,
        sink_path=sink + "/",
        description=description,
        include_prefixes=tuple(
            sorted(location.table_folder(*parts)[len(root) :] for parts in tables)
        ),
    )


def gcs_uri(transfer: S3ToGcsTransfer, key: str) -> str:
    """Where the transfer puts S3 object `key` (under its source path)."""
    if not key.startswith(transfer.source_path):
        raise ValueError(f"{key} is not under {transfer.source_path}")
    return f"{transfer.sink_uri}{key[len(transfer.source_path) :]}"


def transferred_tables(
    tables: Mapping[str, TableInfo],
    loaded: Iterable[tuple[str, ...]],
    settings_of: Mapping[str, RdsTableSettings],
    engine: Engine,
) -> list[tuple[str, ...]]:
    """The loaded tables whose files the transfer copies (those `worker_reason` lets through)."""
    chosen = []
    for parts in loaded:
        name = ".".join(parts)
        info = tables.get(name)
        if info is None:
            continue  # not in the export: its load fails with the reason
        if worker_reason(info, settings_of.get(name) or RdsTableSettings(), engine) is None:
            chosen.append(parts)
    return chosen


@dataclass(frozen=True)
class StagedTable:
    """A table's export files in Cloud Storage: the gs:// URI of each S3 key, and how."""

    uris: dict[str, str]
    operation_name: str
    started: bool  # this load ran the transfer (False: it waited for another's, or reused it)
    transfer: S3ToGcsTransfer
    folder: str  # the table's S3 folder (its copy is the same path under the sink)


def _sink_sizes(gcs: Any, transfer: S3ToGcsTransfer, prefix: str) -> dict[str, int]:
    """{object name: size} of the sink's objects under `prefix`."""
    return {
        blob.name: int(blob.size or 0)
        for blob in gcs.list_blobs(transfer.sink_bucket, prefix=prefix)
    }


def _missing(
    gcs: Any, transfer: S3ToGcsTransfer, files: Mapping[str, int], folder: str
) -> list[str]:
    """The S3 keys of `files` whose copy is not in the sink with the same size."""
    sink_folder = transfer.sink_path + folder[len(transfer.source_path) :]
    present = _sink_sizes(gcs, transfer, sink_folder)
    return [
        key
        for key, size in files.items()
        if present.get(transfer.sink_path + key[len(transfer.source_path) :]) != size
    ]


def stage_table(
    *,
    client: Any,
    gcs: Any,
    transfer: S3ToGcsTransfer,
    folder: str,
    files: Mapping[str, int],
    what: str,
    max_interval_seconds: float,
    timeout_seconds: float,
    log: Callable[[str], None],
) -> StagedTable:
    """Have the export's transfer copy `files` ({S3 key: size}, all in `folder`) and check them.

    Every file must be in the sink with its size once the operation
    succeeded, or nothing is loaded. When some are not (an earlier load of
    this export deleted its staged copy after publishing), the job runs once
    more: it copies only what the sink lacks.
    """
    ensured = ensure_transfer(client, transfer)
    wait = dict(
        what=what,
        max_interval_seconds=max_interval_seconds,
        timeout_seconds=timeout_seconds,
        log=log,
    )
    log(
        f"{what}: {'started' if ensured.started else 'waiting for'} transfer "
        f"{ensured.operation_name} ({transfer.source_uri} -> {transfer.sink_uri})"
    )
    wait_for_transfer(client, ensured.operation_name, **wait)  # type: ignore[arg-type]
    missing = _missing(gcs, transfer, files, folder)
    if missing:
        log(f"{what}: {len(missing)} file(s) are not staged any more; running the transfer again")
        ensured = ensure_transfer(client, transfer, run_again=True)
        wait_for_transfer(client, ensured.operation_name, **wait)  # type: ignore[arg-type]
        missing = _missing(gcs, transfer, files, folder)
    if missing:
        raise StorageTransferError(
            f"{what}: transfer operation {ensured.operation_name} succeeded but {len(missing)} "
            f"file(s) are not in {transfer.sink_uri} with their S3 size (first: "
            f"{missing[0]}); is the table in the job's includePrefixes? nothing was loaded"
        )
    return StagedTable(
        {key: gcs_uri(transfer, key) for key in files},
        ensured.operation_name,
        ensured.started,
        transfer,
        folder,
    )


def delete_staged(gcs: Any, transfer: S3ToGcsTransfer, folder: str) -> int:
    """Delete the table's staged copy (after a successful publish); how many objects."""
    sink_folder = transfer.sink_path + folder[len(transfer.source_path) :]
    names = list(_sink_sizes(gcs, transfer, sink_folder))
    bucket = gcs.bucket(transfer.sink_bucket)
    for name in names:
        bucket.delete_blob(name)
    return len(names)
