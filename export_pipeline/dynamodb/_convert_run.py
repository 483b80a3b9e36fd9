"""Orchestration of a conversion: pass 1 in parallel, plan the schema, pass 2 in parallel.

Worker processes come from a `forkserver` context (forking a process that
runs threads, as Dagster's does, is unsafe); the forkserver preloads the
converter so each worker starts without re-importing pyarrow.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import math
import multiprocessing
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from pathlib import Path

from export_pipeline.dynamodb import _convert_read as rd
from export_pipeline.dynamodb import _convert_write as wr
from export_pipeline.dynamodb import types as t
from export_pipeline.dynamodb.convert import (
    DELETED_COLUMN,
    WRITE_TIMESTAMP_COLUMN,
    ColumnSpec,
    ConversionError,
    ConversionResult,
)
from export_pipeline.naming import column_names

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


def _executor(workers: int) -> Executor:
    if workers <= 1:
        return _InlineExecutor()
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["export_pipeline.dynamodb._convert_run"])
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init)


def run_conversion(
    files: Sequence[Path],
    out_dir: Path,
    *,
    incremental: bool,
    key_attributes: tuple[str, ...],
    batch_size: int,
    max_workers: int,
    progress: ProgressCallback | None = None,
) -> ConversionResult:
    if batch_size < 1 or max_workers < 1:
        raise ValueError("batch_size and max_workers must be at least 1")
    paths = [Path(f) for f in files]
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

    nonempty = [i for i, p in enumerate(paths) if sizes[str(p)] > 0]
    shares = max(1, min(max_workers, math.ceil(max_workers / max(len(nonempty), 1))))
    tasks = [(i, s) for i in nonempty for s in range(shares)]
    tmp_dir = Path(tempfile.mkdtemp(prefix=".convert-", dir=out_dir))
    try:
        total_bytes = sum(sizes.values())
        workers = min(max_workers, len(tasks)) if total_bytes >= PARALLEL_MIN_BYTES else 1
        with _executor(workers) as pool:
            futures = [
                pool.submit(
                    rd.read_share,
                    paths[i],
                    i,
                    s,
                    shares,
                    tmp_dir,
                    batch_size,
                    incremental,
                    key_attributes,
                )
                for i, s in tasks
            ]
            shares_done = _collect(futures, paths, sizes, tmp_dir, batch_size, progress)
            plan = _plan(shares_done, incremental, key_attributes)
            ordered = sorted(
                ((r.file_index, b.first_line, b) for r in shares_done for b in r.batches),
                key=lambda entry: entry[:2],
            )
            groups = _group_batches(ordered, max(1, ROWS_PER_FILE // batch_size))
            outputs = [out_dir / f"{OUTPUT_PREFIX}{n:05d}.parquet" for n in range(len(groups))]
            planned = [c for c, _spec in plan]
            writes = [
                pool.submit(wr.write_batches, group, planned, output)
                for group, output in zip(groups, outputs, strict=True)
            ]
            for future in writes:
                future.result()
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)

    items_per_file = {str(p): 0 for p in paths}
    for result in shares_done:
        items_per_file[str(paths[result.file_index])] += result.lines
    return ConversionResult(
        parquet_files=outputs,
        columns=[spec for _c, spec in plan],
        item_count=sum(items_per_file.values()),
        items_per_file=items_per_file,
        bytes_read=sum(sizes.values()),
    )


def _group_batches(ordered: list, per_file: int) -> list[list[rd.BatchInfo]]:
    """Consecutive batches of one input file, at most `per_file` to an output file."""
    groups: list[list[rd.BatchInfo]] = []
    current_file = None
    for file_index, _line, batch in ordered:
        if file_index != current_file or len(groups[-1]) >= per_file:
            groups.append([])
            current_file = file_index
        groups[-1].append(batch)
    return groups


def _collect(
    futures: list[Future],
    paths: list[Path],
    sizes: dict[str, int],
    tmp_dir: Path,
    batch_size: int,
    progress: ProgressCallback | None,
) -> list[rd.ShareResult]:
    """Wait for pass 1; while waiting, report progress from the batches written so far."""
    if progress is None:
        return [future.result() for future in futures]
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
        return [future.result() for future in futures]
    finally:
        stop.set()
        reporter.join()


def _plan(
    results: list[rd.ShareResult], incremental: bool, key_attributes: tuple[str, ...]
) -> list[tuple[wr.PlannedColumn, ColumnSpec]]:
    """Final columns, in a stable order: keys, other attributes by name, converter columns."""
    tags: dict[str, dict[str, str | None]] = {key: {} for key in key_attributes}
    rank = {t.INT64: 0, t.NUMERIC: 1, t.STRING: 2}
    for result in results:
        for batch in result.batches:
            for raw in batch.columns:
                if raw.attribute is None:
                    continue
                seen = tags.setdefault(raw.attribute, {})
                old = seen.get(raw.tag)
                new = raw.number_kind
                if old is None or (new is not None and rank[new] > rank[old]):
                    seen[raw.tag] = new
    names = _bigquery_names(list(tags), incremental)
    order = list(key_attributes) + sorted(a for a in tags if a not in key_attributes)
    plan = []
    for attribute in order:
        column_type = wr.combine(tags[attribute])
        seen_tags = ", ".join(sorted(tags[attribute])) or "none"
        role = "key attribute" if attribute in key_attributes else "attribute"
        spec = ColumnSpec(
            name=names[attribute],
            source_name=attribute,
            bq_type=column_type.bq_type,
            mode=column_type.mode,
            description=f"DynamoDB {role} {attribute!r} (DynamoDB types: {seen_tags})",
        )
        plan.append((wr.PlannedColumn(names[attribute], attribute, None, column_type), spec))
    if incremental:
        for name, tag, column_type, text in (
            (
                DELETED_COLUMN,
                rd.DELETED_TAG,
                t.ColumnType(t.BOOL),
                "True when the change deleted the item (no NewImage); the row then holds the Keys",
            ),
            (
                WRITE_TIMESTAMP_COLUMN,
                rd.TIMESTAMP_TAG,
                t.ColumnType(t.INT64),
                "Metadata.WriteTimestampMicros of the change (microseconds since the epoch)",
            ),
        ):
            spec = ColumnSpec(name, None, column_type.bq_type, column_type.mode, text)
            plan.append((wr.PlannedColumn(name, None, tag, column_type), spec))
    return plan


def _bigquery_names(attributes: list[str], incremental: bool) -> dict[str, str]:
    """`naming.column_names`, plus: never reuse a name the converter adds itself."""
    names = column_names(attributes)
    if incremental:
        reserved = {DELETED_COLUMN, WRITE_TIMESTAMP_COLUMN}
        for attribute, name in names.items():
            if name.lower() in reserved:
                suffix = hashlib.sha1(attribute.encode("utf-8")).hexdigest()[:6]
                names[attribute] = f"{name}_{suffix}"
    return names
