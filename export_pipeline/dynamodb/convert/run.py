"""Orchestration of a conversion: pass 1 in parallel, plan the schema, pass 2 in parallel.

Full exports run in a thread pool of this process: the columnar path spends
its time in Arrow and numpy, which release the GIL, so threads use every
core without process start-up, a second decompression or pickled batches.
Incremental exports are parsed line by line in Python, so they use worker
processes from a `forkserver` context (forking a process that runs threads,
as Dagster's does, is unsafe); the forkserver preloads the converter so each
worker starts without re-importing pyarrow.
"""

from __future__ import annotations

import gc
import importlib.abc
import math
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import (
    FIRST_COMPLETED,
    Executor,
    Future,
    ThreadPoolExecutor,
    wait,
)
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from export_pipeline.dynamodb import types as t
from export_pipeline.dynamodb.column_names import RecordedColumns, describe
from export_pipeline.dynamodb.convert import read as rd
from export_pipeline.dynamodb.convert import write as wr
from export_pipeline.dynamodb.convert.model import (
    DEFAULT_BATCH_SIZE,
    DELETED_COLUMN,
    DELETED_TAG,
    TIMESTAMP_TAG,
    WRITE_TIMESTAMP_COLUMN,
    BatchInfo,
    ColumnSpec,
    ConversionError,
    ConversionResult,
    PersonalData,
    ShareResult,
)
from export_pipeline.dynamodb.convert.parse_arrow import SchemaHint
from export_pipeline.errors import OutOfMemoryError
from export_pipeline.naming import PIPELINE_COLUMNS, assign_columns, readable_column_name

OUTPUT_PREFIX = "dynamodb-part-"
# Below this much compressed input, starting worker processes costs more than it saves.
PARALLEL_MIN_BYTES = 2 << 20
# Rows per output Parquet file (one row group per batch inside): few enough
# files for BigQuery's 10,000-URI load limit, small enough to load in parallel.
ROWS_PER_FILE = 1_000_000
# (files fully read, items read so far (approximate while reading), compressed bytes of those files)
ProgressCallback = Callable[[int, int, int], None]


class _InlineExecutor(Executor):
    """Runs tasks in this process (one worker: no process start-up cost)."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[override]
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


def _worker_init() -> None:
    """Keep pandas out of worker processes.

    `pyarrow.array()` imports pandas on first use only to check for pandas
    types, which costs ~55 MB per process; the workers never see pandas
    objects, so they mark it unavailable (only in these worker processes).
    """
    if "pandas" not in sys.modules:
        sys.meta_path.insert(0, _NoPandas())


class _NoPandas(importlib.abc.MetaPathFinder):
    """Import hook of the worker processes: `import pandas` fails there."""

    def find_spec(self, fullname, path, target=None):  # type: ignore[override]
        if fullname == "pandas" or fullname.startswith("pandas."):
            raise ImportError("pandas is not loaded in converter worker processes")
        return None


def run_conversion(
    files: Sequence[Path],
    out_dir: Path,
    *,
    incremental: bool,
    key_attributes: tuple[str, ...],
    batch_size: int,
    max_workers: int,
    progress: ProgressCallback | None = None,
    max_line_bytes: int = rd.MAX_LINE_BYTES,
    declared_items: Mapping[Path | str, int] | None = None,
    recorded: RecordedColumns | None = None,
    personal_data: PersonalData | None = None,
) -> ConversionResult:
    personal_data = personal_data or PersonalData()
    if batch_size < 1 or max_workers < 1 or max_line_bytes < 1:
        raise ValueError("batch_size, max_workers and max_line_bytes must be at least 1")
    paths = [Path(f) for f in files]
    declared = {str(k): v for k, v in (declared_items or {}).items()}
    bounds = [rd.StreamBounds(max_line_bytes, declared.get(str(p))) for p in paths]
    sizes: dict[str, int] = {}
    for path in paths:
        try:
            sizes[str(path)] = path.stat().st_size
        except OSError as exc:
            raise ConversionError(path, f"cannot read data file: {exc}") from exc
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(f"{OUTPUT_PREFIX}*.parquet"):
        stale.unlink()  # our own output of an earlier run: re-running is safe

    tmp_dir = Path(tempfile.mkdtemp(prefix=".convert-", dir=out_dir))
    gc_was_enabled = gc.isenabled()
    gc.disable()  # the per-line paths create millions of short-lived dicts
    try:
        if incremental:
            nonempty = [i for i, p in enumerate(paths) if sizes[str(p)] > 0]
            shares = max(1, min(max_workers, math.ceil(max_workers / max(len(nonempty), 1))))
            tasks = [(i, s) for i in nonempty for s in range(shares)]
            big = sum(sizes.values()) >= PARALLEL_MIN_BYTES
            pool = _process_pool(min(max_workers, len(tasks)) if big else 1)
        else:
            pool = ThreadPoolExecutor(max_workers, thread_name_prefix="dynamodb-convert")
        with pool:
            if incremental:
                futures = [
                    pool.submit(
                        rd.read_share,
                        paths[i],
                        i,
                        s,
                        shares,
                        tmp_dir,
                        batch_size,
                        key_attributes,
                        bounds[i],
                    )
                    for i, s in tasks
                ]
                done = _collect(
                    futures, tasks, paths, sizes, tmp_dir, batch_size, max_workers, progress
                )
                batches = [(r.file_index, b) for r in done for b in r.batches]
            else:
                batches = _read_full(
                    paths, bounds, sizes, tmp_dir, batch_size, max_workers, pool, progress
                )
            items_per_file = {str(p): 0 for p in paths}
            for file_index, batch in batches:
                items_per_file[str(paths[file_index])] += batch.rows
            plan = _plan(
                [b for _i, b in batches],
                incremental,
                key_attributes,
                recorded or RecordedColumns(),
                personal_data,
            )
            batches.sort(key=lambda entry: (entry[0], entry[1].first_line))
            groups = _group_batches(batches, max_workers)
            outputs = [out_dir / f"{OUTPUT_PREFIX}{n:05d}.parquet" for n in range(len(groups))]
            planned = [c for c, _spec in plan]
            writes = [
                pool.submit(wr.write_batches, group, planned, output, personal_data.key)
                for group, output in zip(groups, outputs, strict=True)
            ]
            for future, output in zip(writes, outputs, strict=True):
                _result(future, output, max_workers)
    finally:
        if gc_was_enabled:
            gc.enable()
        shutil.rmtree(tmp_dir, ignore_errors=True)

    return ConversionResult(
        parquet_files=outputs,
        columns=[spec for _c, spec in plan],
        item_count=sum(items_per_file.values()),
        items_per_file=items_per_file,
        bytes_read=sum(sizes.values()),
    )


def _read_full(
    paths: list[Path],
    bounds: list[rd.StreamBounds],
    sizes: dict[str, int],
    tmp_dir: Path,
    batch_size: int,
    workers: int,
    pool: Executor,
    progress: ProgressCallback | None,
) -> list[tuple[int, BatchInfo]]:
    """Pass 1 of a full export: this thread decompresses and cuts batches, `workers` threads
    convert them. At most `workers + 1` batches are in flight, which bounds memory."""
    in_flight: set[Future] = set()
    done: list[tuple[int, BatchInfo]] = []
    indexes: dict[Future, int] = {}
    items = bytes_done = 0
    reported = time.monotonic()
    hint = SchemaHint()
    try:
        for file_index, path in enumerate(paths):
            if sizes[str(path)] == 0:
                continue  # AWS writes zero-byte files for empty partitions
            with _out_of_memory(path, workers):
                for number, blob in enumerate(rd.blobs(path, batch_size, bounds[file_index])):
                    while len(in_flight) > workers:
                        finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                        for f in finished:
                            index = indexes.pop(f)
                            done.append((index, _result(f, paths[index], workers)))
                    future = pool.submit(
                        rd.convert_blob, path, file_index, number, blob, tmp_dir, hint
                    )
                    indexes[future] = file_index
                    in_flight.add(future)
                    items += blob.rows
                    if progress is not None and time.monotonic() - reported >= 0.5:
                        progress(file_index, items, bytes_done)
                        reported = time.monotonic()
            bytes_done += sizes[str(path)]
        for future in in_flight:
            done.append((indexes[future], _result(future, paths[indexes[future]], workers)))
    except BaseException:
        for future in in_flight:
            future.cancel()
        raise
    if progress is not None:
        progress(len(paths), items, bytes_done)
    return done


def _read_one_file(
    path: Path,
    tmp_dir: Path,
    *,
    batch_size: int,
    max_workers: int,
    max_line_bytes: int,
    declared_items: int | None,
    pool: Executor,
) -> list[BatchInfo]:
    """Pass 1 of one full-export data file, as `run_conversion` reads each of its files."""
    try:
        sizes = {str(path): path.stat().st_size}
    except OSError as exc:
        raise ConversionError(path, f"cannot read data file: {exc}") from exc
    bounds = [rd.StreamBounds(max_line_bytes, declared_items)]
    done = _read_full([path], bounds, sizes, tmp_dir, batch_size, max_workers, pool, None)
    return sorted((batch for _index, batch in done), key=lambda batch: batch.first_line)


def learn_file_types(
    path: Path,
    work_dir: Path,
    *,
    declared_items: int | None,
    personal_data: PersonalData | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_workers: int = 2,
    max_line_bytes: int = rd.MAX_LINE_BYTES,
) -> tuple[int, ObservedTypes]:
    """Pass 1 of one full-export data file for its types only: (items, types seen).

    The same reader as `run_conversion`, so a file's types, bounds and errors
    are the same whether a whole export is converted in one process or its
    files are spread over steps; the intermediate batches are dropped at once.
    """
    tmp_dir = Path(tempfile.mkdtemp(prefix=".learn-", dir=work_dir))
    try:
        with ThreadPoolExecutor(max_workers, thread_name_prefix="dynamodb-learn") as pool:
            batches = _read_one_file(
                path,
                tmp_dir,
                batch_size=batch_size,
                max_workers=max_workers,
                max_line_bytes=max_line_bytes,
                declared_items=declared_items,
                pool=pool,
            )
        return sum(b.rows for b in batches), observed_types(batches, personal_data)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def convert_file_with_plan(
    path: Path,
    out_dir: Path,
    name_prefix: str,
    plan: Sequence[wr.PlannedColumn],
    *,
    declared_items: int | None,
    hash_key: Any = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_workers: int = 2,
    max_line_bytes: int = rd.MAX_LINE_BYTES,
) -> tuple[int, list[Path]]:
    """Both passes over one full-export data file, with a plan decided beforehand.

    Returns (items, Parquet files `<name_prefix>NNNNN.parquet` in `out_dir`).
    The plan comes from `plan_columns` over the types of the whole export, so
    every file of every step is written with the same schema. The
    intermediate batches of this one file are the only temporary data.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=".convert-", dir=out_dir))
    planned = list(plan)
    try:
        with ThreadPoolExecutor(max_workers, thread_name_prefix="dynamodb-convert") as pool:
            batches = _read_one_file(
                path,
                tmp_dir,
                batch_size=batch_size,
                max_workers=max_workers,
                max_line_bytes=max_line_bytes,
                declared_items=declared_items,
                pool=pool,
            )
            groups = _group_batches([(0, b) for b in batches], max_workers)
            outputs = [out_dir / f"{name_prefix}{n:05d}.parquet" for n in range(len(groups))]
            writes = [
                pool.submit(wr.write_batches, group, planned, output, hash_key)
                for group, output in zip(groups, outputs, strict=True)
            ]
            for future, output in zip(writes, outputs, strict=True):
                _result(future, output, max_workers)
        return sum(b.rows for b in batches), outputs
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


@contextmanager
def _out_of_memory(path: Path, workers: int) -> Iterator[None]:
    """A `MemoryError` while reading `path` (or a worker killed meanwhile, as the kernel's
    OOM killer does) becomes a permanent `OutOfMemoryError` naming the file and the limit."""
    try:
        yield
    except (MemoryError, BrokenProcessPool) as exc:
        died = isinstance(exc, BrokenProcessPool)
        raise OutOfMemoryError(
            str(path),
            "converting this file" + (" (a converter worker process was killed)" if died else ""),
            "give the step more memory, or lower dynamodb.max_parallel_files (here "
            f"{workers}); docs/performance.md gives the converter's peak memory per worker",
        ) from exc


def _result(future: Future, path: Path, workers: int) -> Any:
    """`future.result()`, a `MemoryError` naming `path`."""
    with _out_of_memory(path, workers):
        return future.result()


def _process_pool(workers: int) -> Executor:
    if workers <= 1:
        return _InlineExecutor()
    import multiprocessing  # only incremental exports use processes: imported here
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["export_pipeline.dynamodb.convert.run"])
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init)


def _group_batches(batches: list[tuple[int, BatchInfo]], workers: int) -> list[list[BatchInfo]]:
    """Consecutive batches of one input file to an output file, at most `ROWS_PER_FILE` rows.

    Files are cut to about equal sizes, in a multiple of `workers` where
    there are enough batches, so that every worker writes (pass 2 is one
    task per output file).
    """
    total = sum(b.rows for _i, b in batches)
    files = max(1, math.ceil(total / ROWS_PER_FILE))
    files = math.ceil(files / workers) * workers
    target = max(1, math.ceil(total / files))
    groups: list[list[BatchInfo]] = []
    current_file = None
    rows = 0
    for file_index, batch in batches:
        full = rows >= target or rows + batch.rows > ROWS_PER_FILE
        if file_index != current_file or full:
            groups.append([])
            current_file, rows = file_index, 0
        groups[-1].append(batch)
        rows += batch.rows
    return groups


def _collect(
    futures: list[Future],
    tasks: list[tuple[int, int]],
    paths: list[Path],
    sizes: dict[str, int],
    tmp_dir: Path,
    batch_size: int,
    workers: int,
    progress: ProgressCallback | None,
) -> list[ShareResult]:
    """Wait for pass 1; while waiting, report progress from the batches written so far."""

    def results() -> list[ShareResult]:
        return [
            _result(future, paths[file_index], workers)
            for future, (file_index, _share) in zip(futures, tasks, strict=True)
        ]

    if progress is None:
        return results()
    stop = threading.Event()

    def report() -> None:
        while not stop.wait(0.5):
            done = [f.result() for f in futures if f.done() and not f.exception()]
            finished = {r.file_index for r in done}
            items = sum(r.lines for r in done)
            in_flight = len(list(tmp_dir.glob("*.arrow"))) - sum(len(r.batches) for r in done)
            items += max(in_flight, 0) * batch_size
            progress(len(finished), items, sum(sizes[str(paths[i])] for i in finished))

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    try:
        return results()
    finally:
        stop.set()
        reporter.join()


# attribute -> DynamoDB type tag -> the narrowest number kind holding every value seen
# (None for tags that are not numbers): what pass 1 learns, small and serialisable, so
# groups of files can learn it apart and `merge_observed` joins them.
ObservedTypes = dict[str, dict[str, str | None]]
_NUMBER_RANK = {t.INT64: 0, t.NUMERIC: 1, t.STRING: 2}


def _see(observed: ObservedTypes, attribute: str, tag: str, kind: str | None) -> None:
    """Record that `attribute` held `tag` values needing number kind `kind` (widest wins)."""
    seen = observed.setdefault(attribute, {})
    old = seen.get(tag)
    if old is None or (kind is not None and _NUMBER_RANK[kind] > _NUMBER_RANK[old]):
        seen[tag] = kind


def observed_types(
    batches: Iterable[BatchInfo], personal_data: PersonalData | None = None
) -> ObservedTypes:
    """The types pass 1 saw in `batches`; excluded attributes are not recorded."""
    excluded = (personal_data or PersonalData()).excluded
    observed: ObservedTypes = {}
    for batch in batches:
        for raw in batch.columns:
            if raw.attribute is not None and raw.attribute not in excluded:
                _see(observed, raw.attribute, raw.tag, raw.number_kind)
    return observed


def merge_observed(parts: Iterable[ObservedTypes]) -> ObservedTypes:
    """The types of several groups of files together, as if one pass had read them all."""
    merged: ObservedTypes = {}
    for part in parts:
        for attribute, tags in part.items():
            for tag, kind in tags.items():
                _see(merged, attribute, tag, kind)
    return merged


def _plan(
    batches: list[BatchInfo],
    incremental: bool,
    key_attributes: tuple[str, ...],
    recorded: RecordedColumns,
    personal_data: PersonalData | None = None,
) -> list[tuple[wr.PlannedColumn, ColumnSpec]]:
    """`plan_columns` of the types seen in `batches`."""
    observed = observed_types(batches, personal_data)
    return plan_columns(observed, incremental, key_attributes, recorded, personal_data)


def plan_columns(
    observed: ObservedTypes,
    incremental: bool,
    key_attributes: tuple[str, ...],
    recorded: RecordedColumns,
    personal_data: PersonalData | None = None,
) -> list[tuple[wr.PlannedColumn, ColumnSpec]]:
    """Final columns, in a stable order: keys, other attributes by name, converter columns.

    Excluded attributes (`personal_data`) have no column; hashed ones are
    STRING columns of the HMAC of each value's text, whatever their types.

    An attribute the target table already holds keeps its column
    (`recorded`), and its type is decided over the DynamoDB types that
    column was typed for as well as this export's: the type a full export
    of every value the column has held would get, so full, incremental and
    reseed loads agree on what a value is (`"1"` and `1` stay apart).
    """
    personal_data = personal_data or PersonalData()
    tags: ObservedTypes = {key: {} for key in key_attributes}
    for attribute, seen in merge_observed([observed]).items():
        tags.setdefault(attribute, {}).update(seen)

    def see(attribute: str, tag: str, kind: str | None) -> None:
        _see(tags, attribute, tag, kind)

    existing = recorded.resolve(list(tags), lambda a: readable_column_name(a, _RESERVED))
    for attribute, column in existing.items():
        for tag in column.tags:
            see(attribute, tag, recorded_number_kind(tag, column.bq_type))
    names = assign_columns(
        list(tags),
        {a: c.name for a, c in existing.items()},
        recorded.taken,
        reserved=_RESERVED,
    )
    order = list(key_attributes) + sorted(a for a in tags if a not in key_attributes)
    plan = []
    for attribute in order:
        hashed = attribute in personal_data.hashed
        column_type = wr.combine(tags[attribute])
        column = existing.get(attribute)
        description = describe(attribute, tags[attribute], key=attribute in key_attributes)
        if hashed:
            column_type = t.ColumnType(t.STRING)
            description += "; hashed: HMAC-SHA256 of the value's text (lowercase hex)"
        elif column is not None:
            # Never narrower than the table's column: its rows then need no
            # conversion when merged (the column is only ever widened).
            current = t.ColumnType.from_bigquery(column.bq_type, column.mode)
            column_type = t.widen(current, column_type)
        spec = ColumnSpec(
            name=names[attribute],
            source_name=attribute,
            bq_type=column_type.bq_type,
            mode=column_type.mode,
            description=description,
        )
        planned = wr.PlannedColumn(names[attribute], attribute, None, column_type, hashed)
        plan.append((planned, spec))
    if incremental:
        for name, tag, column_type, text in (
            (
                DELETED_COLUMN,
                DELETED_TAG,
                t.ColumnType(t.BOOL),
                "True when the change deleted the item (no NewImage); the row then holds the Keys",
            ),
            (
                WRITE_TIMESTAMP_COLUMN,
                TIMESTAMP_TAG,
                t.ColumnType(t.INT64),
                "Metadata.WriteTimestampMicros of the change (microseconds since the epoch)",
            ),
        ):
            spec = ColumnSpec(name, None, column_type.bq_type, column_type.mode, text)
            plan.append((wr.PlannedColumn(name, None, tag, column_type), spec))
    return plan


# Columns the loader adds to DynamoDB tables; no attribute is given these names.
_RESERVED = (*PIPELINE_COLUMNS, WRITE_TIMESTAMP_COLUMN, DELETED_COLUMN)


def recorded_number_kind(tag: str, bq_type: str) -> str | None:
    """The number kind a recorded N/NS column stands for: its BigQuery type, if a number type."""
    if tag not in ("N", "NS"):
        return None
    kind = {"INTEGER": t.INT64, "INT64": t.INT64, "NUMERIC": t.NUMERIC, "STRING": t.STRING}
    return kind.get(bq_type.upper(), t.INT64)
