"""Loading finished DynamoDB exports into BigQuery: verify, convert, publish.

Given export ARNs (one full export, or a chain of incremental ones), this
module finds each export's manifest through DescribeExport (and refuses one
that disagrees with it: the export's times and ARNs are AWS's API's), downloads
exactly the listed data files (MD5-checked while streaming), converts them
with `export_pipeline.dynamodb.convert`, checks the per-file item counts, and
only then touches BigQuery:

- a full export replaces the table atomically (staging table, then one
  replace), every row carrying `_exported_at` = the export time;
- incremental exports are merged (deduplicated by the table's key, deletes
  applied), in the same transaction as the high-water mark, so BigQuery and
  the mark can never disagree.

Nothing partial is ever published: any mismatch fails before the first
BigQuery write and names the S3 object.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster import Failure, MetadataValue, TableColumn, TableSchema
from google.api_core.exceptions import NotFound

from export_pipeline import bigquery as core
from export_pipeline.bigquery.deletes import count_live_rows
from export_pipeline.bigquery.layout import LayoutError, TableLayout
from export_pipeline.bigquery.schema_policy import SchemaChange
from export_pipeline.column_hashing import read_hash_key
from export_pipeline.config import DynamoDBExportMode, DynamoDBTableConfig, PipelineConfig
from export_pipeline.contract import LOAD_METADATA
from export_pipeline.dynamodb import bigquery_tables as bq
from export_pipeline.dynamodb.convert import (
    ConversionError,
    ConversionResult,
    PersonalData,
    convert_full_export,
    convert_incremental_export,
    parser_name,
)
from export_pipeline.dynamodb.export_files import (
    DataFile,
    ExportIntegrityError,
    ExportManifest,
    checked_against_api,
    download_data_files,
    read_manifest,
    resolve_key,
    verify_item_counts,
)
from export_pipeline.dynamodb.exports import (
    list_export_summaries,
    table_export_folder,
    table_name_from_arn,
)
from export_pipeline.dynamodb.run_config import LATEST
from export_pipeline.errors import OutOfMemoryError, PermanentError
from export_pipeline.naming import dynamodb_table_name
from export_pipeline.resources.bigquery import BigQueryResource
from export_pipeline.s3_locations import check_readable
from export_pipeline.table_settings import DeletesMode, TableSettings

Log = Callable[[str], None]


@dataclass
class LoadOutcome:
    """What the BigQuery asset reports: metadata and its row-count check."""

    metadata: dict[str, Any]
    check_passed: bool
    check_description: str
    check_metadata: dict[str, Any] = field(default_factory=dict)
    # How the columns differ from the previous load's (None: nothing loaded).
    schema_change: SchemaChange | None = None


def table_id(bigquery: BigQueryResource, config: PipelineConfig, table: str) -> core.TableId:
    """The BigQuery table of DynamoDB table `table`: the resource's project, config's dataset."""
    return core.TableId(bigquery.project, config.bigquery.dataset, dynamodb_table_name(table))


def read_mark(client: Any, target: core.TableId, table_arn: str) -> core.Watermark | None:
    """The BigQuery table's high-water mark (kept with the data), or None before the seed.

    The mark's source key is the DynamoDB table ARN.
    """
    return core.read_watermark(client, target, table_arn)


def manifest_key(description: dict[str, Any]) -> str:
    """The S3 key of manifest-summary.json from an ExportDescription (prefix once)."""
    key = description.get("ExportManifest")
    if not key:
        export_id = description["ExportArn"].rsplit("/", 1)[-1]
        key = f"AWSDynamoDB/{export_id}/manifest-summary.json"
    return resolve_key(key, description.get("S3Prefix"))


def _describe_completed(ddb: Any, arn: str, table: str) -> dict[str, Any]:
    # An export's ARN names its table (`…:table/<name>/export/<id>`): another table's
    # export is refused before DescribeExport, which the pipeline's least-privilege
    # policy denies for any table it does not load (an AccessDenied would hide why).
    if ":table/" in arn:
        _refuse_another_tables(arn, table_name_from_arn(arn), table)
    try:
        description = ddb.describe_export(ExportArn=arn)["ExportDescription"]
    except ddb.exceptions.ExportNotFoundException:
        raise Failure(description=f"{table}: export {arn} not found (DescribeExport)") from None
    _refuse_another_tables(arn, table_name_from_arn(description["TableArn"]), table)
    if description.get("ExportStatus") != "COMPLETED":
        failure = f"{description.get('FailureCode', '')} {description.get('FailureMessage', '')}"
        raise Failure(
            description=f"{table}: export {arn} is {description.get('ExportStatus')}, not "
            f"COMPLETED {failure.strip()}".strip()
        )
    return description


def _refuse_another_tables(arn: str, exported_table: str, table: str) -> None:
    if exported_table != table:
        raise Failure(
            description=f"export {arn} is of table {exported_table!r}, not {table!r}: "
            "refusing to load it into this table"
        )


def newest_full_export(ddb: Any, table: str, log: Log) -> str:
    """`export_arn: latest`: the ARN of the table's newest COMPLETED full export, by anyone."""
    table_arn = ddb.describe_table(TableName=table)["Table"]["TableArn"]
    completed = [
        summary
        for summary in list_export_summaries(ddb, table_arn)
        if summary.get("ExportStatus") == "COMPLETED"
        and summary.get("ExportType", "FULL_EXPORT") == "FULL_EXPORT"
    ]
    if not completed:
        raise Failure(
            description=f"{table}: export_arn 'latest': the table has no completed full "
            "export (ListExports)"
        )
    descriptions = [
        ddb.describe_export(ExportArn=s["ExportArn"])["ExportDescription"] for s in completed
    ]
    newest = max(descriptions, key=lambda d: d["ExportTime"])
    log(f"{table}: export_arn 'latest' is {newest['ExportArn']} (exported {newest['ExportTime']})")
    return str(newest["ExportArn"])


def _key_attributes(ddb: Any, table: str) -> list[str]:
    schema = ddb.describe_table(TableName=table)["Table"]["KeySchema"]
    order = {"HASH": 0, "RANGE": 1}
    return [k["AttributeName"] for k in sorted(schema, key=lambda k: order[k["KeyType"]])]


def _settings(config: PipelineConfig, table: str) -> DynamoDBTableConfig:
    """The table's pipeline.yaml entry (defaults for a table loaded without one)."""
    found = next((t for t in config.dynamodb.tables if t.name == table), None)
    return found or DynamoDBTableConfig(name=table)


def personal_data(config: PipelineConfig, table: str) -> PersonalData:
    """The table's excluded and hashed attributes, with the hash key when it hashes any.

    Raises `MissingHashKeyError` (one line naming the variable and the table)
    when a column is hashed and the key's environment variable is not set.
    """
    settings = _settings(config, table)
    if not settings.columns:
        return PersonalData()
    hashed = frozenset(settings.hashed_columns)
    key = read_hash_key(config.bigquery.hash_key.env_var, [table]) if hashed else None
    return PersonalData(frozenset(settings.excluded_columns), hashed, key)


class ExcludedKeyError(PermanentError):
    """A key attribute is configured `exclude`: rows could not be told apart or merged."""


def check_keys_kept(table: str, excluded: Collection[str], keys: Sequence[str]) -> None:
    """One line naming the table and the key attribute(s) that `columns` excludes."""
    wrong = [k for k in keys if k in excluded]
    if wrong:
        raise ExcludedKeyError(
            f"dynamodb.tables[{table}].columns: key attribute(s) {', '.join(wrong)} cannot be "
            "excluded (every row needs its key); hash them instead, or remove them from columns"
        )


def _download_all(
    s3: Any, manifests: Sequence[ExportManifest], work_dir: Path, log: Log
) -> dict[Path, DataFile]:
    local: dict[Path, DataFile] = {}
    for index, manifest in enumerate(manifests):
        local.update(download_data_files(s3, manifest, work_dir / "raw" / f"{index:03d}"))
    size = sum(path.stat().st_size for path in local)
    log(f"downloaded {len(local)} data file(s), {size:,} bytes, MD5 checked against the manifest")
    return local


@dataclass(frozen=True)
class _Load:
    """What every load step needs (one object instead of ten parameters)."""

    client: Any
    target: core.TableId
    table: str
    table_arn: str
    mode: DynamoDBExportMode
    run_id: str
    config: PipelineConfig
    s3: Any
    work_dir: Path
    log: Log
    started: float
    settings: TableSettings
    key_attributes: tuple[str, ...]  # the table's key schema
    gcs: core.GcsStaging | None = None  # stage the Parquet in GCS (None: upload it)

    @property
    def deletes(self) -> DeletesMode:
        return self.settings.deletes

    def layout(self, result: ConversionResult) -> TableLayout:
        """The table's layout for this conversion (`bigquery_tables.layout_of`).

        Incremental tables are clustered on the key schema by default; full ones
        only when configured.
        """
        default_cluster = (
            list(self.key_attributes) if self.mode is DynamoDBExportMode.INCREMENTAL else None
        )
        try:
            return bq.layout_of(
                self.client, self.target, self.table, self.settings, result, default_cluster
            )
        except LayoutError as error:
            raise Failure(description=f"{error}; nothing was loaded") from None


@dataclass(frozen=True)
class Converted:
    """A full export already converted to Parquet by earlier steps, ready to publish."""

    export_arn: str
    result: ConversionResult
    staged_uris: tuple[core.GcsUri, ...] = ()  # the Parquet's objects, when written to GCS


def export_manifests(
    arns: Sequence[str], *, table: str, config: PipelineConfig, ddb: Any, s3: Any, log: Log
) -> list[ExportManifest]:
    """The manifests of `arns` (`LATEST`: the newest full export), checked against
    DescribeExport and the readable locations; a full export only alone."""
    if list(arns) == [LATEST]:
        arns = [newest_full_export(ddb, table, log)]
    descriptions = [_describe_completed(ddb, arn, table) for arn in arns]
    readable = config.aws.readable_locations(table_export_folder(table))
    for description in descriptions:
        check_readable(
            f"{table}: export {description['ExportArn']}",
            description["S3Bucket"],
            description.get("S3Prefix") or "",
            readable,
        )
    manifests = [
        checked_against_api(read_manifest(s3, d["S3Bucket"], manifest_key(d)), d)
        for d in descriptions
    ]
    full = [m for m in manifests if not m.is_incremental]
    if full and len(manifests) > 1:
        raise Failure(
            description=f"{table}: a full export cannot be combined with other exports in one "
            f"load ({[m.export_arn for m in manifests]})"
        )
    return manifests


def load_exports(
    arns: Sequence[str],
    *,
    table: str,
    mode: DynamoDBExportMode,
    config: PipelineConfig,
    ddb: Any,
    s3: Any,
    bigquery: BigQueryResource,
    work_dir: Path,
    log: Log,
    run_id: str,
    gcs: core.GcsStaging | None = None,
    converted: Converted | None = None,
) -> LoadOutcome:
    """Bring the BigQuery table of `table` up to date from the given exports.

    `run_id` names this attempt's staging table (unique per attempt); `gcs`:
    BigQuery loads the Parquet from there (see `bigquery.gcs_staging`).
    `converted`: the full export's Parquet, when earlier steps converted it
    (`export_pipeline.dynamodb.fan_out`); otherwise this step converts it.
    """
    started = time.monotonic()
    target = table_id(bigquery, config, table)
    manifests = export_manifests(arns, table=table, config=config, ddb=ddb, s3=s3, log=log)
    full = [m for m in manifests if not m.is_incremental]
    if converted is not None and [m.export_arn for m in full] != [converted.export_arn]:
        raise Failure(
            description=f"{table}: the Parquet files converted in earlier steps are of export "
            f"{converted.export_arn}, not of {[m.export_arn for m in manifests]}; nothing was "
            "loaded (re-execute the whole load)"
        )
    table_arn = ddb.describe_table(TableName=table)["Table"]["TableArn"]
    with bigquery.get_client() as client:
        core.require_dataset(client, target.project, target.dataset)
        job = _Load(
            client,
            target,
            table,
            table_arn,
            mode,
            run_id,
            config,
            s3,
            work_dir,
            log,
            started,
            _settings(config, table),
            tuple(_key_attributes(ddb, table)),
            gcs,
        )
        if not manifests:
            log(f"{table}: no export to apply (BigQuery is already up to date)")
            return _outcome(job, [], None, _rows(job), "up_to_date")
        if full:
            check_keys_kept(table, job.settings.excluded_columns, job.key_attributes)
            return _load_full(job, full[0], converted)
        return _load_incremental(job, manifests, list(job.key_attributes))


def load_in_step(
    context: Any,
    config: PipelineConfig,
    table: str,
    mode: DynamoDBExportMode,
    arns: Sequence[str],
    converted: Converted | None = None,
) -> LoadOutcome:
    """`load_exports` with the step's resources, a scratch folder and the run's GCS staging.

    The one-step table asset and the stepped one's publish step load the same way;
    `converted`: what the stepped conversion already made of a full export.
    """
    resources = context.resources
    with (
        tempfile.TemporaryDirectory(prefix=f"ddb-{table}-") as work_dir,
        resources.gcs.staging(context.run.run_id) as gcs,
    ):
        return load_exports(
            list(arns),
            table=table,
            mode=mode,
            config=config,
            ddb=resources.dynamodb.get_client(),
            s3=resources.s3.get_client(),
            bigquery=resources.bigquery,
            work_dir=Path(work_dir),
            log=context.log.info,
            run_id=f"{context.run.run_id}-{uuid.uuid4().hex[:8]}",
            gcs=gcs,
            converted=converted,
        )


@contextmanager
def naming_s3_objects(manifest: ExportManifest, local: Mapping[Path, DataFile]) -> Iterator[None]:
    """Report a file the converter rejects (or runs out of memory on) by its S3 URI, not by
    its local copy's path."""
    try:
        yield
    except OutOfMemoryError as exc:
        entry = next((e for p, e in local.items() if str(p) == exc.where), None)
        if entry is None:
            raise
        raise exc.at(manifest.uri(entry.key)) from exc
    except ConversionError as exc:
        entry = next((e for p, e in local.items() if str(p) == exc.path), None)
        if entry is None:
            raise
        uri = manifest.uri(entry.key)
        raise ExportIntegrityError(
            uri, f"{str(exc).replace(exc.path, 'not readable', 1)}; nothing was loaded"
        ) from exc


def _declared_items(local: Mapping[Path, DataFile]) -> dict[Path | str, int]:
    """Each local copy's manifest itemCount: the converter stops at the first line beyond it."""
    return {path: entry.item_count for path, entry in local.items()}


def _rows(job: _Load) -> int:
    try:
        return core.count_rows(job.client, job.target)
    except NotFound:
        return 0


def _convert_full(job: _Load, manifest: ExportManifest) -> ConversionResult:
    local = _download_all(job.s3, [manifest], job.work_dir, job.log)
    started = time.monotonic()
    with naming_s3_objects(manifest, local):
        result = convert_full_export(
            list(local),
            job.work_dir / "parquet",
            max_workers=job.config.dynamodb.max_parallel_files,
            declared_items=_declared_items(local),
            recorded=bq.recorded(job.client, job.target),
            personal_data=personal_data(job.config, job.table),
        )
    job.log(
        f"{job.table}: converted {result.item_count} items in "
        f"{time.monotonic() - started:.1f}s with {parser_name()}"
    )
    verify_item_counts([manifest], local, result.items_per_file)
    check_item_total(manifest, result.item_count)
    return result


def check_item_total(manifest: ExportManifest, items: int) -> None:
    """Fail, naming the manifest, when the data files hold another count than its itemCount."""
    if items != manifest.item_count:
        raise Failure(
            description=f"{manifest.summary_uri}: itemCount {manifest.item_count} but the data "
            f"files hold {items} items; nothing was loaded"
        )


def _load_full(job: _Load, manifest: ExportManifest, converted: Converted | None) -> LoadOutcome:
    result = converted.result if converted is not None else _convert_full(job, manifest)
    staged_uris = converted.staged_uris if converted is not None else ()
    exported_at = manifest.data_as_of
    watermark = previous = None
    if job.mode is DynamoDBExportMode.INCREMENTAL:
        # Seeding (or re-seeding) an incremental table: data and mark move together.
        previous = read_mark(job.client, job.target, job.table_arn)
        watermark = core.Watermark(job.table_arn, manifest.export_arn, exported_at)
    job.log(
        f"{job.table}: {result.item_count} items in "
        f"{len(result.parquet_files) or len(staged_uris)} Parquet "
        f"file(s); replacing {job.target} as of {exported_at.isoformat()}"
    )
    staged, change = bq.replace_table(
        job.client,
        job.target,
        result,
        run_id=job.run_id,
        gcs=job.gcs,
        staged_uris=staged_uris,
        exported_at=exported_at,
        description=_table_description(manifest, [manifest]),
        watermark=watermark,
        expected_previous=previous,
        deletes=job.deletes,
        key_attributes=list(job.key_attributes),
        layout=job.layout(result),
        schema_changes=job.settings.schema_changes,
    )
    rows = count_live_rows(job.client, job.target)
    return _outcome(
        job,
        [manifest],
        result,
        rows,
        "full",
        staged_bytes=staged.bytes,
        schema_change=change,
        check=(
            rows == manifest.item_count,
            f"BigQuery has {rows} rows; the export manifest's itemCount is {manifest.item_count}",
            {"bigquery_rows": rows, "manifest_item_count": manifest.item_count},
        ),
    )


def _load_incremental(job: _Load, manifests: list[ExportManifest], keys: list[str]) -> LoadOutcome:
    manifests = sorted(manifests, key=lambda m: (m.export_from_time, m.export_to_time))
    previous = read_mark(job.client, job.target, job.table_arn)
    if previous is None:
        raise Failure(
            description=f"{job.table}: {job.target} has no high-water mark yet; an incremental "
            "export can only be applied after a full export seeded the table"
        )
    mark = previous.exported_to
    pending: list[ExportManifest] = []
    for manifest in manifests:
        assert manifest.export_from_time and manifest.export_to_time
        if manifest.export_to_time <= mark:
            # Its images are older than what BigQuery holds: applying it would go back in time.
            job.log(f"{job.table}: {manifest.export_arn} ends before the mark {mark}: skipped")
            continue
        reach = pending[-1].data_as_of if pending else mark
        if manifest.export_from_time > reach:
            raise Failure(
                description=f"{job.table}: gap in the incremental chain: {manifest.export_arn} "
                f"starts at {manifest.export_from_time.isoformat()}, but BigQuery reflects "
                f"{reach.isoformat()}; a full export is needed",
                metadata={"export_arn": manifest.export_arn},
            )
        pending.append(manifest)
    if not pending:
        return _outcome(job, [], None, _rows(job), "up_to_date")
    treatment = personal_data(job.config, job.table)
    check_keys_kept(job.table, treatment.excluded, keys)
    local = _download_all(job.s3, pending, job.work_dir, job.log)
    started = time.monotonic()
    with naming_s3_objects(pending[0], local):
        result = convert_incremental_export(
            list(local),
            job.work_dir / "parquet",
            key_attributes=keys,
            max_workers=job.config.dynamodb.max_parallel_files,
            declared_items=_declared_items(local),
            recorded=bq.recorded(job.client, job.target),
            personal_data=treatment,
        )
    job.log(
        f"{job.table}: converted {result.item_count} change(s) in "
        f"{time.monotonic() - started:.1f}s with {parser_name(incremental=True)}"
    )
    verify_item_counts(pending, local, result.items_per_file)
    new_mark = pending[-1].data_as_of
    job.log(
        f"{job.table}: merging {result.item_count} change(s) from {len(pending)} export(s) into "
        f"{job.target}; high-water mark {mark.isoformat()} -> {new_mark.isoformat()}"
    )
    window_start = pending[0].export_from_time
    assert window_start is not None
    staged, change = bq.merge_changes(
        job.client,
        job.target,
        result,
        run_id=job.run_id,
        gcs=job.gcs,
        key_attributes=keys,
        window_start=window_start,
        exported_at=new_mark,
        description=_table_description(pending[-1], pending),
        watermark=core.Watermark(job.table_arn, pending[-1].export_arn, new_mark),
        expected_previous=previous,
        deletes=job.deletes,
        layout=job.layout(result),
        schema_changes=job.settings.schema_changes,
    )
    rows = core.count_rows(job.client, job.target)
    distinct = bq.distinct_key_count(job.client, job.target, bq.key_columns(result, keys))
    return _outcome(
        job,
        pending,
        result,
        count_live_rows(job.client, job.target),
        "incremental",
        staged_bytes=staged.bytes,
        schema_change=change,
        check=(
            rows == distinct,
            f"{rows} rows for {distinct} distinct keys (an incremental manifest does not tell "
            "the table's item count; this checks the merge kept one row per key, rows kept "
            "as deleted included)",
            {"bigquery_rows": rows, "distinct_keys": distinct},
        ),
    )


def _table_description(last: ExportManifest, manifests: Sequence[ExportManifest]) -> str:
    if last.is_incremental:
        first = manifests[0]
        assert first.export_from_time and last.export_to_time
        when = (
            f"incremental export(s) {', '.join(m.export_arn for m in manifests)} covering "
            f"{first.export_from_time.isoformat()} .. {last.export_to_time.isoformat()}"
        )
    else:
        assert last.export_time
        when = f"full export {last.export_arn} at {last.export_time.isoformat()}"
    return f"DynamoDB table {last.table_arn}; last loaded from {when}."


def _outcome(
    job: _Load,
    manifests: Sequence[ExportManifest],
    result: ConversionResult | None,
    rows: int,
    how: str,
    *,
    staged_bytes: int = 0,
    check: tuple[bool, str, dict[str, Any]] | None = None,
    schema_change: SchemaChange | None = None,
) -> LoadOutcome:
    schema = bq.table_schema(job.client, job.target)
    metadata: dict[str, Any] = {
        "dagster/row_count": rows,
        "dagster/table_name": job.target.dotted,
        "dagster/column_schema": TableSchema(
            columns=[
                TableColumn(name=f.name, type=_type_name(f), description=f.description)
                for f in schema
            ]
        ),
        LOAD_METADATA: how,
        "export_arns": MetadataValue.json([m.export_arn for m in manifests]),
        "bytes_moved": (result.bytes_read if result is not None else 0) + staged_bytes,
        "bytes_downloaded_from_s3": result.bytes_read if result is not None else 0,
        "bytes_uploaded_to_bigquery": staged_bytes,
    }
    if manifests:
        metadata["export_arn"] = manifests[-1].export_arn
        metadata["data_as_of"] = manifests[-1].data_as_of.isoformat()
    if result is not None:
        metadata["items_converted"] = result.item_count
    if check is None:
        check = (True, f"{how}: no export applied, nothing to check", {"bigquery_rows": rows})
    passed, description, check_metadata = check
    return LoadOutcome(metadata, passed, description, check_metadata, schema_change)


def _type_name(field: Any) -> str:
    return f"ARRAY<{field.field_type}>" if field.mode == "REPEATED" else field.field_type
