"""A full export converted in steps over groups of its data files.

The conversion of one export is split so that each piece can run in its own
Dagster step (its own process, or its own pod with `k8s_job_executor`), and
none needs more local disk than two data files and their Parquet:

1. `file_groups`: the manifest's data files, `files_per_step` at a time.
2. `learn_group_types` (one step per group): each file is downloaded
   (MD5-checked while it streams), read once for its attribute types and
   item count, and deleted; the result is a small summary (`GroupTypes`).
3. `merge_group_types` (one step): every group's summary, checked against
   the manifest (each file's itemCount and the export's total), becomes the
   final columns, by exactly the rules of a conversion in one process
   (`convert.run.plan_columns`: lossless types, recorded columns, personal data).
4. `convert_group` (one step per group): each file is downloaded again,
   converted with those columns, its item count checked again, its Parquet
   handed to staging (`ParquetStaging`: the run's GCS folder, or a run-scoped
   local folder when steps share a host) and the file deleted.
5. `conversion_result`: the groups' Parquet as one `ConversionResult`, for
   `loading.load_exports(converted=...)` to publish as it publishes any full
   export.

Every value crossing steps is a frozen dataclass of plain values (the
manifest, type summaries, staged locations): no secrets (the hash key is
read from the environment by the step that hashes it).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pyarrow.parquet as pq

from export_pipeline.bigquery.gcs_staging import GcsStaging, GcsUri, delete_folder, upload_sources
from export_pipeline.bigquery.staging import ParquetSource
from export_pipeline.bigquery.tables import TableId
from export_pipeline.dynamodb.column_names import RecordedColumns
from export_pipeline.dynamodb.convert import ColumnSpec, ConversionResult, PersonalData
from export_pipeline.dynamodb.convert import write as wr
from export_pipeline.dynamodb.convert.run import (
    ObservedTypes,
    convert_file_with_plan,
    learn_file_types,
    merge_observed,
    plan_columns,
)
from export_pipeline.dynamodb.export_files import (
    DataFile,
    ExportIntegrityError,
    ExportManifest,
    download_data_file,
    verify_item_counts,
)
from export_pipeline.dynamodb.loading import Log, check_item_total, naming_s3_objects

DEFAULT_FILES_PER_STEP = 2


@dataclass(frozen=True)
class FileGroup:
    """Consecutive data files of one export's manifest, converted by one step."""

    manifest: ExportManifest
    number: int  # 0-based, in manifest order
    first: int  # manifest index of its first file
    files: tuple[DataFile, ...]

    @property
    def name(self) -> str:
        """`group_0003`: the step's mapping key (letters, digits and `_` only)."""
        return f"group_{self.number:04d}"

    def local_name(self, offset: int) -> str:
        """The local copy's name: by manifest position, never after the key (a key may hold
        anything)."""
        return f"{self.first + offset:05d}.json.gz"


def file_groups(manifest: ExportManifest, files_per_step: int) -> list[FileGroup]:
    """The manifest's data files in groups of `files_per_step` (the last may be smaller)."""
    if files_per_step < 1:
        raise ValueError("files_per_step must be at least 1")
    files = manifest.files
    return [
        FileGroup(manifest, number, first, files[first : first + files_per_step])
        for number, first in enumerate(range(0, len(files), files_per_step))
    ]


@dataclass(frozen=True)
class GroupTypes:
    """What learning a group's types found: small, whatever the files' size."""

    manifest: ExportManifest
    group: int
    items_per_file: dict[str, int]  # S3 key -> items read
    observed: ObservedTypes
    bytes_read: int  # compressed bytes downloaded


@dataclass(frozen=True)
class ConversionPlan:
    """The final columns of an export, decided once over every group's types."""

    export_arn: str
    columns: tuple[tuple[wr.PlannedColumn, ColumnSpec], ...]
    item_count: int


@dataclass(frozen=True)
class StagedFile:
    """One Parquet file in staging: where, its size and its rows (from its footer)."""

    location: str  # a local path, or a gs:// URI
    size: int
    rows: int


@dataclass(frozen=True)
class GroupParquet:
    """A converted group: where its Parquet is, and what it read."""

    group: int
    items_per_file: dict[str, int]  # S3 key -> items converted
    staged: tuple[StagedFile, ...]
    folders: tuple[str, ...]  # staging folders it wrote (one per data file)
    bytes_read: int


class ParquetStaging(Protocol):
    """Where converted Parquet waits between the steps that write it and the load."""

    def put(self, files: Sequence[Path], folder: str) -> list[StagedFile]:
        """Move local Parquet `files` into staging under `folder` (replacing what an
        earlier attempt left there); where each one is now."""
        ...

    def delete(self, folders: Sequence[str]) -> None:
        """Remove staged folders (after a successful publish; a missing one is fine)."""
        ...


def _staged_file(location: str, local: Path) -> StagedFile:
    return StagedFile(location, local.stat().st_size, pq.ParquetFile(local).metadata.num_rows)


@dataclass(frozen=True)
class LocalStaging:
    """Staging in a run-scoped folder every step of the run can read (one machine).

    Multiprocess steps of one host share it; steps on other hosts need
    `GcsParquetStaging` (configuration `gcs`).
    """

    root: Path

    def put(self, files: Sequence[Path], folder: str) -> list[StagedFile]:
        target_dir = self.root / folder
        shutil.rmtree(target_dir, ignore_errors=True)
        target_dir.mkdir(parents=True)
        staged = []
        for local in files:
            target = target_dir / local.name
            shutil.move(local, target)
            staged.append(_staged_file(str(target), target))
        return staged

    def delete(self, folders: Sequence[str]) -> None:
        for folder in folders:
            shutil.rmtree(self.root / folder, ignore_errors=True)


@dataclass(frozen=True)
class GcsParquetStaging:
    """Staging in the run's GCS folder: each data file's Parquet in a folder of its own
    (`<prefix>/<run>/<table>__<folder>/`), uploaded and checked by `gcs_staging`."""

    gcs: GcsStaging
    target: TableId  # the BigQuery table the Parquet is for (names the folders)

    def _subject(self, folder: str) -> TableId:
        return TableId(self.target.project, self.target.dataset, f"{self.target.table}__{folder}")

    def put(self, files: Sequence[Path], folder: str) -> list[StagedFile]:
        sources = [ParquetSource.from_path(local) for local in files]
        uris = upload_sources(self.gcs, sources, self._subject(folder))
        staged = [_staged_file(u.uri, local) for u, local in zip(uris, files, strict=True)]
        for local in files:
            local.unlink()
        return staged

    def delete(self, folders: Sequence[str]) -> None:
        for folder in folders:
            delete_folder(self.gcs, self.gcs.folder(self._subject(folder)))


def _fetch(s3: Any, group: FileGroup, offset: int, work_dir: Path) -> Path:
    """One data file of `group`, downloaded into `work_dir` with its MD5 checked."""
    work_dir.mkdir(parents=True, exist_ok=True)
    local = work_dir / group.local_name(offset)
    download_data_file(s3, group.manifest, group.files[offset], local)
    return local


def _fetched(s3: Any, group: FileGroup, work_dir: Path) -> Iterator[tuple[DataFile, Path]]:
    """The group's files in order, each downloaded while the one before is processed.

    The caller deletes each file when done with it, so at most two data files
    (the one in work, the next one arriving) are on local disk at a time. A
    download still running when the caller stops is waited for and removed.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="dynamodb-download") as downloads:
        pending: Future[Path] | None = None
        try:
            for offset, entry in enumerate(group.files):
                current = pending or downloads.submit(_fetch, s3, group, offset, work_dir)
                pending = None
                local = current.result()
                if offset + 1 < len(group.files):
                    pending = downloads.submit(_fetch, s3, group, offset + 1, work_dir)
                yield entry, local
        finally:
            if pending is not None:
                with contextlib.suppress(Exception):
                    pending.result().unlink(missing_ok=True)


def _check_count(group: FileGroup, entry: DataFile, local: Path, items: int) -> None:
    """The items read from one file against its manifest itemCount (names the S3 object)."""
    verify_item_counts([group.manifest], {local: entry}, {str(local): items})


def learn_group_types(
    s3: Any,
    group: FileGroup,
    work_dir: Path,
    *,
    personal_data: PersonalData | None = None,
    max_workers: int = 2,
    log: Log | None = None,
) -> GroupTypes:
    """Each file of `group` in turn (the next one downloading meanwhile): download (MD5),
    read its types and items, delete.

    Raises `ExportIntegrityError` naming the S3 object of a file whose MD5,
    content or item count does not match its manifest entry.
    """
    items: dict[str, int] = {}
    observed: list[ObservedTypes] = []
    size = 0
    with contextlib.closing(_fetched(s3, group, work_dir)) as files:
        for entry, local in files:
            try:
                size += local.stat().st_size
                with naming_s3_objects(group.manifest, {local: entry}):
                    count, types = learn_file_types(
                        local,
                        work_dir,
                        declared_items=entry.item_count,
                        personal_data=personal_data,
                        max_workers=max_workers,
                    )
            finally:
                local.unlink(missing_ok=True)
            _check_count(group, entry, local, count)
            items[entry.key] = count
            observed.append(types)
    if log:
        log(f"{group.name}: {len(group.files)} data file(s), {sum(items.values())} items")
    return GroupTypes(group.manifest, group.number, items, merge_observed(observed), size)


def merge_group_types(
    groups: Sequence[GroupTypes],
    *,
    recorded: RecordedColumns,
    personal_data: PersonalData | None = None,
) -> ConversionPlan:
    """The export's final columns from every group's types, after the manifest checks.

    Every listed file must have been read with its itemCount, and the total
    must be the export's itemCount: otherwise nothing is converted.
    """
    manifest = groups[0].manifest
    if any(g.manifest.export_arn != manifest.export_arn for g in groups):
        raise ValueError("groups of different exports cannot be merged")
    items = {key: n for g in groups for key, n in g.items_per_file.items()}
    for entry in manifest.files:
        if items.get(entry.key) != entry.item_count:
            raise ExportIntegrityError(
                manifest.uri(entry.key),
                f"holds {items.get(entry.key, 'no')} items read but the manifest's itemCount "
                f"is {entry.item_count}; nothing was loaded",
            )
    total = sum(items.values())
    check_item_total(manifest, total)
    observed = merge_observed(g.observed for g in groups)
    plan = plan_columns(observed, False, (), recorded, personal_data)
    return ConversionPlan(manifest.export_arn, tuple(plan), total)


def convert_group(
    s3: Any,
    group: FileGroup,
    plan: ConversionPlan,
    work_dir: Path,
    staging: ParquetStaging,
    *,
    personal_data: PersonalData | None = None,
    max_workers: int = 2,
    log: Log | None = None,
) -> GroupParquet:
    """Each file of `group` in turn: download (MD5), convert with `plan`, stage, delete.

    On local disk at a time: the file in work, its intermediate batches and
    its Parquet, and the next file arriving. Item counts are checked again
    against the manifest.
    """
    if plan.export_arn != group.manifest.export_arn:
        raise ValueError(f"plan of {plan.export_arn} given for {group.manifest.export_arn}")
    planned = [p for p, _spec in plan.columns]
    key = (personal_data or PersonalData()).key
    items: dict[str, int] = {}
    staged: list[StagedFile] = []
    folders: list[str] = []
    size = 0
    out_dir = work_dir / "parquet"
    with contextlib.closing(_fetched(s3, group, work_dir)) as files:
        for entry, local in files:
            try:
                size += local.stat().st_size
                with naming_s3_objects(group.manifest, {local: entry}):
                    count, parquet = convert_file_with_plan(
                        local,
                        out_dir,
                        f"dynamodb-{local.name.split('.')[0]}-",
                        planned,
                        declared_items=entry.item_count,
                        hash_key=key,
                        max_workers=max_workers,
                    )
            finally:
                local.unlink(missing_ok=True)
            try:
                _check_count(group, entry, local, count)
            except ExportIntegrityError:
                shutil.rmtree(out_dir, ignore_errors=True)
                raise
            folder = f"{group.name}_{local.name.split('.')[0]}"
            staged.extend(staging.put(parquet, folder))
            folders.append(folder)
            items[entry.key] = count
    if log:
        log(
            f"{group.name}: converted {sum(items.values())} items of {len(group.files)} data "
            f"file(s) into {len(staged)} Parquet file(s)"
        )
    return GroupParquet(group.number, items, tuple(staged), tuple(folders), size)


def conversion_result(
    plan: ConversionPlan, groups: Sequence[GroupParquet]
) -> tuple[ConversionResult, list[GcsUri]]:
    """Every group's Parquet as one conversion, in manifest order, with today's totals;
    and its GCS objects, when staged there (then the result lists no local file)."""
    ordered = sorted(groups, key=lambda g: g.group)
    items = {key: n for g in ordered for key, n in g.items_per_file.items()}
    if sum(items.values()) != plan.item_count:
        raise ExportIntegrityError(
            plan.export_arn,
            f"the converted groups hold {sum(items.values())} items, the types were learned "
            f"from {plan.item_count}; nothing was loaded",
        )
    staged = [s for g in ordered for s in g.staged]
    uris = [GcsUri(s.location, s.size, s.rows) for s in staged if s.location.startswith("gs://")]
    if uris and len(uris) != len(staged):
        raise ValueError("a conversion's Parquet is either all in GCS or all local")
    result = ConversionResult(
        parquet_files=[] if uris else [Path(s.location) for s in staged],
        columns=[spec for _p, spec in plan.columns],
        item_count=plan.item_count,
        items_per_file=items,
        bytes_read=sum(g.bytes_read for g in ordered),
    )
    return result, uris
