"""Benchmark: hostile export files, peak memory and disk, the usual approach vs. ours.

    python bench/hostile_bounds.py              # 256 MiB line, 2,000,000-line bomb, 256 MiB Parquet
    python bench/hostile_bounds.py --scale 4    # everything four times larger

Three files someone with write access to the export bucket could leave there
(generated under bench/out/, git-ignored), each handled in a fresh subprocess
by a baseline and by ours:

- long line: one DynamoDB JSON line of `256 MiB x scale` (a string of one
  letter, about 250 KB of gzip). Baseline: the usual converter, `gzip.open`
  and `orjson.loads` per line, which holds the line. Ours:
  `convert_full_export`, which stops at MAX_LINE_BYTES;
- gzip bomb: `2,000,000 x scale` valid items (about 130 MB decompressed per
  2 million) in a file whose manifest entry declares 1,000. Baseline: ours
  without the manifest's count (the count compared after converting, as the
  pipeline did before). Ours: `declared_items` from the manifest, checked
  while streaming;
- Parquet bomb: a column to rename holding `256 x scale` copies of one 1 MiB
  string (a 50 KB file per 256). Baseline: `pq.read_table`, rename,
  `pq.write_table`. Ours: `parquet_rewrite.rewrite_renamed`.

Peak RSS is the kernel's (`wait4`: the subprocess's high-water mark, so no
short peak is missed). Peak disk is the largest size of the subprocess's work
directory, sampled every 10 ms (a peak shorter than that can be missed; the
work directories only grow until the end). Each line also gives the bound
docs/performance.md states for ours, and whether it held.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from export_pipeline.dynamodb.convert import MAX_LINE_BYTES  # noqa: E402

MIB = 1 << 20
BASE_RSS = 300 * MIB  # interpreter, pyarrow, numpy: what any step has before it reads a byte

LONG_LINE_BASELINE = r"""
import gzip, sys, orjson
with gzip.open(sys.argv[1], "rb") as lines:
    for line in lines:
        orjson.loads(line)
"""
CONVERT = r"""
import sys
from pathlib import Path
from export_pipeline.dynamodb.convert import ConversionError, convert_full_export
declared = None if sys.argv[3] == "-" else {sys.argv[1]: int(sys.argv[3])}
try:
    result = convert_full_export([Path(sys.argv[1])], Path(sys.argv[2]), declared_items=declared)
    print(f"converted {result.item_count} items", file=sys.stderr)
except ConversionError as error:
    print(f"refused: {str(error)[-110:]}", file=sys.stderr)
"""
PARQUET_BASELINE = r"""
import sys, pyarrow.parquet as pq
table = pq.read_table(sys.argv[1])
table = table.rename_columns(["bad_name" if n == "bad name" else n for n in table.column_names])
pq.write_table(table, sys.argv[2] + "/copy.parquet", compression="zstd")
"""
PARQUET_OURS = r"""
import sys
from export_pipeline.rds.parquet_rewrite import rewrite_renamed
with open(sys.argv[1], "rb") as source, open(sys.argv[2] + "/copy.parquet", "wb") as target:
    rewrite_renamed(source, target, {"bad name": "bad_name"})
"""


def _dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # removed while walking
                total += os.stat(os.path.join(root, name)).st_size
    return total


def measure(script: str, args: list[str]) -> tuple[int, int, float, str]:
    """(peak RSS bytes, peak disk bytes of its work directory, seconds, last stderr line)."""
    with tempfile.TemporaryDirectory(dir=HERE / "out") as work:
        peak_disk = 0
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak_disk
            while not stop.wait(0.01):
                peak_disk = max(peak_disk, _dir_size(Path(work)))

        sampler = threading.Thread(target=sample, daemon=True)
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-c", script, *args[:1], work, *args[1:]],
            stderr=subprocess.PIPE,
            text=True,
            cwd=HERE.parent,
        )
        sampler.start()
        stderr = process.stderr.read() if process.stderr else ""
        _pid, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - started
        stop.set()
        sampler.join()
        peak_disk = max(peak_disk, _dir_size(Path(work)))
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else f"exit {process.returncode}"
    return usage.ru_maxrss * 1024, peak_disk, seconds, last


def write_long_line(path: Path, size: int) -> None:
    with gzip.open(path, "wb", compresslevel=6) as out:
        out.write(b'{"Item": {"pk": {"S": "x"}, "s": {"S": "')
        for _ in range(size // MIB):
            out.write(b"a" * MIB)
        out.write(b'"}}}\n')


def write_item_bomb(path: Path, items: int) -> None:
    """`items` distinct valid items (so that they do not compress away on disk)."""
    with gzip.open(path, "wb", compresslevel=9) as out:
        for start in range(0, items, 10_000):
            out.write(
                b"".join(
                    b'{"Item": {"pk": {"S": "k%d"}, "n": {"N": "%d"}, "note": {"S": "%x"}}}\n'
                    % (i, i * 7919, i * 2654435761)
                    for i in range(start, min(start + 10_000, items))
                )
            )


def write_parquet_bomb(path: Path, copies: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    column = pa.DictionaryArray.from_arrays(
        pa.array([0] * copies, pa.int32()), pa.array(["v" * MIB])
    )
    table = pa.table({"bad name": column, "n": pa.array(range(copies))})
    pq.write_table(table, path, store_schema=False)  # AWS's files carry no Arrow schema


def report(name: str, bound: tuple[int, int], baseline: tuple, ours: tuple) -> None:
    print(f"\n{name}")
    for label, (rss, disk, seconds, last) in (("baseline", baseline), ("ours", ours)):
        print(
            f"  {label:8s} peak RSS {rss / MIB:8.1f} MiB, peak disk {disk / MIB:8.1f} MiB, "
            f"{seconds:6.1f} s  [{last}]"
        )
    rss_bound, disk_bound = bound
    held = ours[0] <= rss_bound and ours[1] <= disk_bound
    print(
        f"  ratio baseline/ours: RSS {baseline[0] / ours[0]:.1f}x, disk "
        f"{f'{baseline[1] / ours[1]:.1f}x' if ours[1] else 'none for ours'}; "
        "documented bound for ours: RSS "
        f"{rss_bound / MIB:.0f} MiB, disk {disk_bound / MIB:.0f} MiB -> "
        f"{'held' if held else 'EXCEEDED'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=1)
    args = parser.parse_args()
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

    long_line = out / f"hostile-long-line-{args.scale}.json.gz"
    if not long_line.exists():
        write_long_line(long_line, 256 * MIB * args.scale)
    # Ours holds at most one 4 MiB chunk plus one line under the bound, before it stops.
    bound = (BASE_RSS + 4 * MIB + 2 * MAX_LINE_BYTES, 0)
    report(
        f"long line: {256 * args.scale} MiB in one line ({long_line.stat().st_size / MIB:.2f} "
        "MiB gzip)",
        bound,
        measure(LONG_LINE_BASELINE, [str(long_line)]),
        measure(CONVERT, [str(long_line), "-"]),
    )

    bomb = out / f"hostile-item-bomb-{args.scale}.json.gz"
    items = 2_000_000 * args.scale
    if not bomb.exists():
        write_item_bomb(bomb, items)
    declared = 1_000
    # Ours stops at line declared + 1: at most the batches cut so far (workers + 1 in
    # flight, each under 4 MiB + MAX_LINE_BYTES, about 11 times that in memory); disk:
    # the intermediate files of those lines.
    bound = (
        BASE_RSS + 3 * 11 * (4 * MIB + MAX_LINE_BYTES),
        declared * (MAX_LINE_BYTES + 1) + 3 * (4 * MIB + MAX_LINE_BYTES),
    )
    report(
        f"gzip bomb: {items:,} items where the manifest declares {declared:,} "
        f"({bomb.stat().st_size / MIB:.2f} MiB gzip)",
        bound,
        measure(CONVERT, [str(bomb), "-"]),
        measure(CONVERT, [str(bomb), str(declared)]),
    )

    parquet = out / f"hostile-parquet-bomb-{args.scale}.parquet"
    copies = 256 * args.scale
    if not parquet.exists():
        write_parquet_bomb(parquet, copies)
    # Ours: one batch of rows (dictionary-encoded text: its dictionary, 1 MiB here) on top
    # of the base, and on disk the copy, about the size of the original.
    bound = (BASE_RSS + 32 * MIB, 2 * parquet.stat().st_size + MIB)
    report(
        f"Parquet bomb: {copies} copies of one 1 MiB value in a column to rename "
        f"({parquet.stat().st_size / 1024:.0f} KiB)",
        bound,
        measure(PARQUET_BASELINE, [str(parquet)]),
        measure(PARQUET_OURS, [str(parquet)]),
    )
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
