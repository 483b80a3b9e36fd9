"""Benchmark: DynamoDB export data file -> BigQuery-ready files, baseline vs. our converter.

    python bench/dynamodb_convert.py                # 300,000 items
    python bench/dynamodb_convert.py --scale 10     # 3,000,000 items
    python bench/dynamodb_convert.py --incremental  # 300,000 change lines instead
    python bench/dynamodb_convert.py --breakdown    # also: CPU seconds per stage

Generates a deterministic export data file under bench/out/ (git-ignored;
reused when already there), then runs, each in its own subprocess:
- baseline: `json.loads` + boto3 `TypeDeserializer` per item (per change
  line: its NewImage, or Keys for a delete), written as NDJSON (the usual
  hand-written converter);
- ours: `convert_full_export` (or `convert_incremental_export`) to Parquet;
- ours with the native parser off (EXPORT_PIPELINE_NATIVE_PARSER=0): Arrow's
  JSON reader for full exports, orjson line by line for incremental ones,
  which shows what the parser itself contributes.
The headline ratio is wall time of the whole subprocess (interpreter start,
imports, conversion). Each subprocess also prints how long its conversion
took after its imports ("converting only"): the rate a long-running process
(a Dagster step) sees, without the fixed start-up cost that weighs on small
inputs.
Peak memory and CPU come from the kernel, not from sampling: `wait4` returns
the subprocess's peak RSS (its high-water mark, so no short peak is missed)
and its CPU seconds (its reaped children included). Were the subprocess to
start children (the incremental path does; this benchmark's full export does
not), their summed PSS is also sampled every 20 ms, and the larger figure is
reported. A sampler that read /proc every 10 ms for the process itself would
take CPU from a two-threaded converter on two cores, but not from the
single-threaded baseline, so it is not used.
`--breakdown` then converts the file once more in one thread, timing each
stage of the same code path (where the time goes, not how fast the run is).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench._dynamodb_data import write_export_file  # noqa: E402
from export_pipeline.dynamodb.convert import DEFAULT_BATCH_SIZE  # noqa: E402

BASELINE = r"""
import base64, gzip, json, sys, time
from decimal import Decimal
from boto3.dynamodb.types import Binary, TypeDeserializer

class ExportDeserializer(TypeDeserializer):
    # exports hold B as base64 text; boto3 expects bytes
    def _deserialize_b(self, value):
        return Binary(base64.b64decode(value))

def default(value):
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    if hasattr(value, "value"):  # boto3 Binary
        return base64.b64encode(value.value).decode()
    raise TypeError(type(value))

deserializer = ExportDeserializer()
started = time.perf_counter()
with gzip.open(sys.argv[1], "rt") as source, open(sys.argv[2], "w") as out:
    for line in source:
        record = json.loads(line)
        item = record.get("Item")
        if item is None:  # a change line: the new image, or the keys of a delete
            item = record.get("NewImage") or record["Keys"]
            item = {**item, "_deleted": {"BOOL": "NewImage" not in record}}
        plain = {k: deserializer.deserialize(v) for k, v in item.items()}
        out.write(json.dumps(plain, default=default) + "\n")
print(time.perf_counter() - started)
"""

OURS = r"""
import sys, time
from pathlib import Path
from export_pipeline.dynamodb.convert import convert_full_export, convert_incremental_export
from export_pipeline.dynamodb.convert import run  # what the conversions import

if __name__ == "__main__":
    started = time.perf_counter()
    files, out = [Path(sys.argv[1])], Path(sys.argv[2])
    sizes = dict(batch_size=int(sys.argv[3]), max_workers=int(sys.argv[4]))
    if sys.argv[5] == "incremental":
        convert_incremental_export(files, out, key_attributes=["pk"], **sizes)
    else:
        convert_full_export(files, out, **sizes)
    print(time.perf_counter() - started)
"""

BREAKDOWN = r"""
import gc, sys, tempfile, time
from pathlib import Path
start = time.process_time()
import pyarrow.parquet as pq
from export_pipeline.dynamodb.convert import parse_arrow as cc, read as rd
from export_pipeline.dynamodb.convert import run as run, values as cv
from export_pipeline.dynamodb.convert import write as wr
stages = {"imports (python start-up excluded)": time.process_time() - start}

def timed(name, function):
    def wrapper(*args, **kwargs):
        began = time.process_time()
        try:
            return function(*args, **kwargs)
        finally:
            stages[name] = stages.get(name, 0.0) + time.process_time() - began
    return wrapper

from export_pipeline.dynamodb.convert import parse_native as nat
nat.raw_columns = timed("native JSON parse + buffers to Arrow", nat.raw_columns)
cc._read_items = timed("Arrow JSON parse", cc._read_items)
cc._attribute = timed("raw columns (base64, nested JSON text, checks)", cc._attribute)
cv.number_kind_of_array = timed("number kinds", cv.number_kind_of_array)
rd._BatchWriter._write = timed("intermediate Arrow IPC write", rd._BatchWriter._write)
wr._final_table = timed("pass 2: IPC read + cast", wr._final_table)
pq.ParquetWriter.write_table = timed("pass 2: Parquet write (zstd)", pq.ParquetWriter.write_table)
gc.disable()
path, tmp, batch_size = Path(sys.argv[1]), Path(tempfile.mkdtemp()), int(sys.argv[2])
cut = timed("gzip decompress + cut into batches", lambda blobs: next(blobs, None))
blobs, infos, hint = rd.blobs(path, batch_size), [], cc.SchemaHint()
while (blob := cut(blobs)) is not None:
    infos.append(rd.convert_blob(path, 0, len(infos), blob, tmp, hint))
plan = [column for column, _spec in run._plan(infos, False, ())]
wr.write_batches(infos, plan, tmp / "out.parquet")
total = time.process_time() - start
stages["other"] = total - sum(stages.values())
print("CPU seconds by stage, one thread, in-process (the run above spreads them over threads):")
for name, seconds in stages.items():
    print(f"  {name:<50} {seconds:6.2f} s  {100 * seconds / total:4.0f}%")
print(f"  {'total':<50} {total:6.2f} s")
"""


def _descendants(pid: int) -> list[int]:
    """Children, grandchildren... of `pid` (reading task/*/children is cheap)."""
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    for child in children.read().split():
                        found.append(int(child))
                        stack.append(int(child))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


def _pss_kb(pids: list[int]) -> int:
    """Summed PSS, not RSS: forked workers share pages, which RSS would count once each."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as rollup:
                for line in rollup:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def _run(args: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float, float]:
    """(wall seconds, CPU seconds, peak memory in MB, converting seconds) of one subprocess run.

    Converting seconds are what the subprocess itself measured from after its
    imports to the end of its conversion (it prints them).

    CPU seconds and peak RSS are the kernel's (`wait4`): user + system time
    of the process and of the children it reaped, and the process's RSS
    high-water mark. The summed PSS of the process tree is sampled only
    while the process has children (see the module docstring).
    """
    os.sync()  # an earlier run's output still being written back would take CPU from this one
    start = time.perf_counter()
    process = subprocess.Popen(
        args, cwd=HERE.parent, stdout=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}
    )
    tree_peak_kb = 0
    finished = threading.Event()

    def sample_children() -> None:
        nonlocal tree_peak_kb
        while not finished.wait(0.02):
            children = _descendants(process.pid)
            if children:
                tree_peak_kb = max(tree_peak_kb, _pss_kb([process.pid, *children]))

    sampler = threading.Thread(target=sample_children, daemon=True)
    sampler.start()
    _pid, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    finished.set()
    sampler.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"{args[:3]} failed with exit code {process.returncode}")
    peak_kb = max(usage.ru_maxrss, tree_peak_kb)  # Linux reports ru_maxrss in kB
    converting = float(process.stdout.read().split()[-1])
    process.stdout.close()
    return elapsed, usage.ru_utime + usage.ru_stime, peak_kb / 1024, converting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=1, help="x 300,000 items")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument(
        "--incremental", action="store_true", help="an incremental export's change lines"
    )
    parser.add_argument(
        "--breakdown", action="store_true", help="also time each stage (single thread)"
    )
    options = parser.parse_args()
    if options.breakdown and options.incremental:
        parser.error("--breakdown times the full-export path only")
    items = 300_000 * options.scale
    out = HERE / "out"
    kind = "incremental" if options.incremental else "full"
    data = out / (f"changes-{items}.json.gz" if options.incremental else f"items-{items}.json.gz")
    if not data.exists():
        print(f"generating {items:,} {kind}-export lines -> {data}", file=sys.stderr)
        write_export_file(data, items, incremental=options.incremental)
    size_mb = data.stat().st_size / 1e6
    print(f"input: {items:,} {kind}-export lines, {size_mb:.1f} MB gzip")
    python = sys.executable
    baseline = None
    load = os.getloadavg()[0]
    print(f"load average before: {load:.1f} on {os.cpu_count()} CPUs (wall times suffer if high)")
    if not options.skip_baseline:
        baseline = _run([python, "-c", BASELINE, str(data), str(out / "baseline.ndjson")])
        _report("baseline (json + TypeDeserializer -> NDJSON)", items, baseline)
    command = [
        python,
        "-c",
        OURS,
        str(data),
        str(out / "parquet"),
        str(options.batch_size),
        str(options.workers),
        kind,
    ]
    function = "convert_incremental_export" if options.incremental else "convert_full_export"
    label = f"{function} -> Parquet, {options.workers} workers, batch {options.batch_size:,}"
    # Incremental conversions run in forkserver workers, which are the forkserver's
    # children: wait4 never counts their CPU, so no CPU figure is given for them.
    cpu = not options.incremental
    ours = _run(command)
    _report(f"ours ({label})", items, ours, cpu)
    without = _run(command, env={"EXPORT_PIPELINE_NATIVE_PARSER": "0"})
    _report("ours, native parser off (EXPORT_PIPELINE_NATIVE_PARSER=0)", items, without, cpu)
    if baseline:
        print(
            f"speed-up: {baseline[0] / ours[0]:.1f}x wall"
            + (f", {baseline[1] / ours[1]:.1f}x CPU" if cpu else "")
            + f"; converting only (after imports): {baseline[3] / ours[3]:.1f}x"
        )
    print(
        f"the native parser's share: {without[0] / ours[0]:.1f}x wall"
        + (f", {without[1] / ours[1]:.1f}x CPU" if cpu else "")
        + f"; converting only: {without[3] / ours[3]:.1f}x"
    )
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    if options.breakdown:
        started = time.perf_counter()
        subprocess.run([python, "-c", "pass"], check=True)
        print(f"python start-up: {time.perf_counter() - started:.2f} s wall")
        command = [python, "-c", BREAKDOWN, str(data), str(options.batch_size)]
        subprocess.run(command, cwd=HERE.parent, check=True)


def _report(
    label: str, items: int, figures: tuple[float, float, float, float], cpu: bool = True
) -> None:
    wall, cpu_seconds, peak, converting = figures
    cpu_text = f"{cpu_seconds:.2f} s CPU" if cpu else "CPU not counted (worker processes)"
    print(
        f"{label}: {wall:.2f} s wall, {cpu_text}, {items / wall:,.0f} items/s, "
        f"peak {peak:.0f} MB (peak RSS or the process tree's PSS); "
        f"converting only {converting:.2f} s"
    )


if __name__ == "__main__":
    main()
