"""A full DynamoDB export converted in steps over groups of files: 1 step at a time vs 2.

    python bench/dynamodb_fanout.py                       # 10,000,000 items in 32 files
    python bench/dynamodb_fanout.py --items 2000000       # a quicker look
    python bench/dynamodb_fanout.py --pin                 # each step on one CPU of its own

The export is generated once (`_dynamodb_data.write_export_file`) into
`--data-dir` and reused by later runs: `--distinct` files are generated, the
others are byte copies of them (the converter does not deduplicate keys, so
copies cost the same to convert as new items and generate in no time).

Each step runs as Dagster's multiprocess executor runs it: a fresh process
(forkserver, one task per process) calling the same functions the steps
call (`export_pipeline.dynamodb.fan_out`): learn the types of a group, merge
them once, convert each group. The steps read the data files through an
S3 client over local files (`get_object` with a streamed body), so the MD5
checks run as in production and the network is not what is measured.
`--workers` is `dynamodb.max_parallel_files`, the converter threads inside
one step (1: a step per core, as a pod with one CPU).

Printed per run: wall time, peak RSS of the largest step, peak local disk
of the largest step (sampled every 20 ms), against the bound of two data
files and their Parquet; and the speed-up of 2 parallel steps over 1.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import multiprocessing
import os
import platform
import resource
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _dynamodb_data import write_export_file

from export_pipeline.dynamodb import fan_out
from export_pipeline.dynamodb.column_names import RecordedColumns
from export_pipeline.dynamodb.export_files import DataFile, ExportManifest

BUCKET = "bench-exports"
SAMPLE_SECONDS = 0.02


class _Body:
    """A streamed object body, as botocore's `StreamingBody` reads."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def iter_chunks(self, size: int):
        with self._path.open("rb") as handle:
            while chunk := handle.read(size):
                yield chunk


class FileS3:
    """`get_object` over a folder whose relative paths are the keys (one bucket)."""

    class exceptions:
        NoSuchKey = FileNotFoundError

    def __init__(self, root: Path) -> None:
        self.root = root

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        path = self.root / Key
        if not path.is_file():
            raise FileNotFoundError(Key)
        return {"Body": _Body(path)}


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return base64.b64encode(digest.digest()).decode("ascii")


def build_export(data_dir: Path, items: int, files: int, distinct: int) -> ExportManifest:
    """The export's data files in `data_dir` (generated once) and its manifest."""
    stamp = data_dir / "export.json"
    wanted = {"items": items, "files": files, "distinct": distinct}
    per_file = [items // files + (1 if n < items % files else 0) for n in range(files)]
    if stamp.exists() and json.loads(stamp.read_text()).get("wanted") == wanted:
        entries = json.loads(stamp.read_text())["entries"]
    else:
        shutil.rmtree(data_dir, ignore_errors=True)
        started = time.monotonic()
        generated: dict[int, list[Path]] = {}  # items per file -> files generated
        entries = []
        for n in range(files):
            key = f"AWSDynamoDB/01-bench/data/{n:05d}.json.gz"
            path = data_dir / key
            same = generated.setdefault(per_file[n], [])
            if len(same) < distinct:
                write_export_file(path, per_file[n], seed=20251126 + n)
                same.append(path)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(same[n % len(same)], path)
            entries.append({"key": key, "items": per_file[n], "md5": _md5(path)})
        stamp.write_text(json.dumps({"wanted": wanted, "entries": entries}))
        seconds = time.monotonic() - started
        print(f"generated {items:,} items in {files} files in {seconds:.1f} s", flush=True)
    return ExportManifest(
        bucket=BUCKET,
        summary_key="AWSDynamoDB/01-bench/manifest-summary.json",
        files_key="AWSDynamoDB/01-bench/manifest-files.json",
        export_arn="arn:aws:dynamodb:eu-west-1:123456789012:table/bench/export/01-bench",
        table_arn="arn:aws:dynamodb:eu-west-1:123456789012:table/bench",
        export_type="FULL_EXPORT",
        item_count=items,
        billed_size_bytes=0,
        output_format="DYNAMODB_JSON",
        export_time=datetime(2026, 12, 7, tzinfo=UTC),
        export_from_time=None,
        export_to_time=None,
        files=tuple(DataFile(e["key"], e["items"], e["md5"]) for e in entries),
    )


@dataclass(frozen=True)
class StepFigures:
    seconds: float
    cpu_seconds: float  # user + system, every thread of the step
    peak_rss_mb: float
    peak_disk_bytes: int


def _folder_bytes(folder: Path) -> int:
    total = 0
    for root, _dirs, names in os.walk(folder):
        for name in names:
            with contextlib.suppress(OSError):  # removed while walking
                total += os.stat(os.path.join(root, name)).st_size
    return total


_FREE_CPUS: Any = None  # a queue of CPU numbers no running step holds (set per pool process)


def _hand_out_cpus(free_cpus: Any) -> None:
    global _FREE_CPUS
    _FREE_CPUS = free_cpus


def _measured(work: Any) -> tuple[Any, StepFigures]:
    """Run `work(work_dir)` in this (fresh) step process, sampling its local disk.

    With `--pin`, the step holds one CPU of its own while it runs (as a pod
    with a one-CPU limit): the download thread and the converter share it.
    """
    if _FREE_CPUS is not None:
        cpu_number = _FREE_CPUS.get()
        os.sched_setaffinity(0, {cpu_number})
    try:
        return _measured_on(work)
    finally:
        if _FREE_CPUS is not None:
            _FREE_CPUS.put(cpu_number)


def _measured_on(work: Any) -> tuple[Any, StepFigures]:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-step-") as folder:
        work_dir = Path(folder)
        peak = [0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(SAMPLE_SECONDS):
                peak[0] = max(peak[0], _folder_bytes(work_dir))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            result = work(work_dir)
        finally:
            stop.set()
            sampler.join()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime
    return result, StepFigures(time.monotonic() - started, cpu, usage.ru_maxrss / 1024, peak[0])


def learn_step(task: tuple[Path, fan_out.FileGroup, int]) -> tuple[Any, StepFigures]:
    root, group, workers = task
    return _measured(
        lambda work_dir: fan_out.learn_group_types(
            FileS3(root), group, work_dir, max_workers=workers
        )
    )


def convert_step(
    task: tuple[Path, fan_out.FileGroup, fan_out.ConversionPlan, Path, int],
) -> tuple[Any, StepFigures]:
    root, group, plan, staged, workers = task
    staging = fan_out.LocalStaging(staged)
    return _measured(
        lambda work_dir: fan_out.convert_group(
            FileS3(root), group, plan, work_dir, staging, max_workers=workers
        )
    )


def convert_in_steps(
    root: Path,
    manifest: ExportManifest,
    steps: int,
    files_per_step: int,
    workers: int,
    pin: bool = False,
) -> tuple[float, list[StepFigures], int, int]:
    """The whole conversion with `steps` steps at once; (seconds, figures, items, parquet bytes)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["export_pipeline.dynamodb.fan_out"])
    groups = fan_out.file_groups(manifest, files_per_step)
    staged = root.parent / f"staged-{steps}"
    shutil.rmtree(staged, ignore_errors=True)
    started = time.monotonic()
    free_cpus = None
    if pin:
        free_cpus = context.Manager().Queue()
        for number in sorted(os.sched_getaffinity(0))[:steps]:
            free_cpus.put(number)
    with context.Pool(
        steps, initializer=_hand_out_cpus, initargs=(free_cpus,), maxtasksperchild=1
    ) as pool:
        learned = pool.map(learn_step, [(root, g, workers) for g in groups], chunksize=1)
        plan = fan_out.merge_group_types([r for r, _f in learned], recorded=RecordedColumns())
        tasks = [(root, g, plan, staged, workers) for g in groups]
        converted = pool.map(convert_step, tasks, chunksize=1)
    seconds = time.monotonic() - started
    result, _uris = fan_out.conversion_result(plan, [r for r, _f in converted])
    parquet = sum(p.stat().st_size for p in result.parquet_files)
    shutil.rmtree(staged, ignore_errors=True)
    return seconds, [f for _r, f in learned + converted], result.item_count, parquet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000_000)
    parser.add_argument("--files", type=int, default=32)
    parser.add_argument("--distinct", type=int, default=4, help="files generated, not copied")
    parser.add_argument("--files-per-step", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1, help="converter threads per step")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="each running step holds one CPU of its own (a pod with a one-CPU limit)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "export_pipeline_bench_fanout",
    )
    args = parser.parse_args()
    root = args.data_dir / "s3"
    manifest = build_export(root, args.items, args.files, args.distinct)
    sizes = sorted((root / f.key).stat().st_size for f in manifest.files)
    print(
        f"{platform.node()} {platform.machine()} {os.cpu_count()} CPU(s), Python "
        f"{platform.python_version()}; {args.items:,} items in {args.files} files "
        f"({sum(sizes) / 2**20:,.0f} MiB gzip, largest {sizes[-1] / 2**20:.1f} MiB), "
        f"{args.files_per_step} files per step, {args.workers} thread(s) per step"
        f"{', one CPU per step' if args.pin else ''}; load "
        f"average before: {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    runs = {}
    for steps in (1, 2):
        seconds, figures, items, parquet = convert_in_steps(
            root, manifest, steps, args.files_per_step, args.workers, args.pin
        )
        assert items == args.items, items
        runs[steps] = seconds
        rss = max(f.peak_rss_mb for f in figures)
        disk = max(f.peak_disk_bytes for f in figures)
        cpu = sum(f.cpu_seconds for f in figures)
        print(
            f"{steps} step(s) at once: {seconds:6.1f} s ({items / seconds:,.0f} items/s), "
            f"CPU {cpu:.1f} s in {len(figures)} steps, peak RSS per step {rss:.0f} MB, peak "
            f"local disk per step {disk / 2**20:.1f} MiB (Parquet written: "
            f"{parquet / 2**20:,.0f} MiB); load average after: {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    print(
        f"speed-up of 2 parallel steps over 1: {runs[1] / runs[2]:.2f}x; peak local disk per "
        f"step = {disk / sizes[-1]:.1f}x the largest data file (it, the next one arriving, "
        "its intermediate batches and its Parquet)",
        flush=True,
    )


if __name__ == "__main__":
    main()
