"""`export-pipeline dynamodb-to-parquet`: convert DynamoDB export data files by hand.

    export-pipeline dynamodb-to-parquet DATA.json.gz... -o OUT_DIR
        [--incremental --key ATTR [--key ATTR]] [--batch-size N] [--workers N]

Useful to inspect what the pipeline would load (the same converter), or to
convert an export copied from S3 by hand. On a terminal it shows progress on
stderr; it always ends with a summary: files, items, columns and their types.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from export_pipeline.dynamodb.convert import (
    DEFAULT_BATCH_SIZE,
    ConversionError,
    parser_name,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `dynamodb-to-parquet` subcommand (called by export_pipeline.cli)."""
    parser = subparsers.add_parser(
        "dynamodb-to-parquet",
        help="convert DynamoDB export data files (gzip DynamoDB JSON) to Parquet",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE.json.gz")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="OUT_DIR")
    parser.add_argument(
        "--incremental", action="store_true", help="the files belong to an incremental export"
    )
    parser.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="ATTR",
        help="key attribute (repeat for a sort key); required with --incremental",
    )
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N")
    parser.add_argument("--workers", type=int, default=2, metavar="N")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from export_pipeline.dynamodb.convert.run import run_conversion

    if args.incremental and not args.key:
        print("error: --incremental needs --key ATTR (the table's key attributes)", file=sys.stderr)
        return 2
    if args.key and not args.incremental:
        print("error: --key only applies with --incremental", file=sys.stderr)
        return 2
    total_bytes = sum(f.stat().st_size for f in args.files if f.exists())
    started = time.monotonic()
    progress = _Progress(len(args.files), total_bytes, started) if sys.stderr.isatty() else None
    try:
        result = run_conversion(
            args.files,
            args.output,
            incremental=args.incremental,
            key_attributes=tuple(args.key),
            batch_size=args.batch_size,
            max_workers=args.workers,
            progress=progress,
        )
    except (ConversionError, ValueError) as exc:
        if progress:
            progress.clear()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if progress:
        progress.clear()
    elapsed = time.monotonic() - started
    print(f"files read:     {len(result.items_per_file)} ({result.bytes_read / 1e6:.1f} MB gzip)")
    print(f"parsed by:      {parser_name(args.incremental)}")
    print(
        f"items:          {result.item_count:,} in {elapsed:.1f}s "
        f"({result.item_count / max(elapsed, 1e-9):,.0f} items/s)"
    )
    print(f"parquet files:  {len(result.parquet_files)} in {args.output}")
    print(f"columns ({len(result.columns)}):")
    width = max((len(c.name) for c in result.columns), default=0)
    for spec in result.columns:
        kind = f"ARRAY<{spec.bq_type}>" if spec.mode == "REPEATED" else spec.bq_type
        source = "" if spec.source_name in (None, spec.name) else f"  <- {spec.source_name!r}"
        print(f"  {spec.name:<{width}}  {kind}{source}")
    return 0


class _Progress:
    """One self-rewriting stderr line: files read, items, MB/s."""

    def __init__(self, files: int, total_bytes: int, started: float) -> None:
        self.files = files
        self.total_bytes = total_bytes
        self.started = started

    def __call__(self, files_done: int, items: int, bytes_done: int) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        text = (
            f"files {files_done}/{self.files}, ~{items:,} items ({items / elapsed:,.0f}/s), "
            f"{bytes_done / 1e6:.1f}/{self.total_bytes / 1e6:.1f} MB gzip "
            f"({bytes_done / 1e6 / elapsed:.1f} MB/s)"
        )
        sys.stderr.write("\r\033[K" + text)
        sys.stderr.flush()

    def clear(self) -> None:
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()
