"""Hostile data files: a line or a file larger than DynamoDB can export fails at once.

Every test runs through each full-export parser (native, Arrow's reader, per
line: the `conversion_path` fixture); the bounds are checked on the
decompressed stream, before any parser sees a line. The bombs are scaled
down through the converter's own parameters (`max_line_bytes`,
`declared_items`), so the tests assert the bound without needing the memory
an unbounded run would take.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pyarrow as pa
import pytest

from export_pipeline.dynamodb.convert import (
    MAX_LINE_BYTES,
    ConversionError,
    convert_full_export,
    convert_incremental_export,
    read,
)

each_parser = pytest.mark.usefixtures("conversion_path")


def _item_line(number: int, text: str = "x") -> bytes:
    return orjson.dumps({"Item": {"pk": {"N": str(number)}, "s": {"S": text}}}) + b"\n"


def _change_line(number: int, text: str = "x") -> bytes:
    return (
        orjson.dumps(
            {
                "Metadata": {"WriteTimestampMicros": {"N": str(1_700_000_000_000_000 + number)}},
                "Keys": {"pk": {"N": str(number)}},
                "NewImage": {"pk": {"N": str(number)}, "s": {"S": text}},
            }
        )
        + b"\n"
    )


def test_the_documented_line_bound_covers_dynamodbs_largest_item() -> None:
    # 400 KB items; a list of NULLs takes 14 bytes of JSON per byte of item.
    assert MAX_LINE_BYTES >= 2 * 14 * 400 * 1024


@each_parser
def test_a_line_over_the_bound_fails_at_once_naming_the_file_and_line(tmp_path: Path) -> None:
    long_line = _item_line(4, "y" * 1_000_000)
    path = tmp_path / "long.json.gz"
    path.write_bytes(gzip.compress(b"".join(_item_line(i) for i in range(3)) + long_line))
    with pytest.raises(ConversionError) as caught:
        convert_full_export([path], tmp_path / "out", max_line_bytes=64 * 1024)
    assert caught.value.line == 4
    assert str(path) in str(caught.value)
    assert "longer than 65536 bytes" in str(caught.value)


@each_parser
def test_a_line_without_an_end_over_the_bound_fails(tmp_path: Path) -> None:
    path = tmp_path / "unterminated.json.gz"
    path.write_bytes(gzip.compress(b'{"Item": {"s": {"S": "' + b"z" * 300_000))
    with pytest.raises(ConversionError, match=r"line 1: .*longer than 100000 bytes"):
        convert_full_export([path], tmp_path / "out", max_line_bytes=100_000)


@each_parser
def test_lines_at_the_bound_are_converted(tmp_path: Path) -> None:
    lines = [_item_line(i, "w" * 5_000) for i in range(40)]
    bound = max(len(line) for line in lines) - 1  # the line end does not count
    path = tmp_path / "ok.json.gz"
    path.write_bytes(gzip.compress(b"".join(lines)[:-1]))  # the last line without its end
    result = convert_full_export(
        [path], tmp_path / "out", max_line_bytes=bound, declared_items={path: 40}
    )
    assert result.item_count == 40


@each_parser
def test_an_incremental_line_over_the_bound_fails(tmp_path: Path) -> None:
    path = tmp_path / "changes.json.gz"
    path.write_bytes(gzip.compress(_change_line(1) + _change_line(2, "q" * 500_000)))
    with pytest.raises(ConversionError) as caught:
        convert_incremental_export(
            [path], tmp_path / "out", key_attributes=["pk"], max_line_bytes=50_000
        )
    assert caught.value.line == 2 and "longer than 50000 bytes" in str(caught.value)


@each_parser
def test_more_lines_than_the_manifest_declares_fail_while_streaming(tmp_path: Path) -> None:
    path = tmp_path / "bomb.json.gz"
    path.write_bytes(gzip.compress(b"".join(_item_line(i) for i in range(50_000))))
    with pytest.raises(ConversionError) as caught:
        convert_full_export([path], tmp_path / "out", declared_items={str(path): 10})
    # It stops at the first line too many, not after converting the file.
    assert caught.value.line == 11
    assert "more than the 10 item(s) its manifest entry declares" in str(caught.value)


@each_parser
def test_an_incremental_file_with_more_lines_than_declared_fails(tmp_path: Path) -> None:
    path = tmp_path / "changes.json.gz"
    path.write_bytes(gzip.compress(b"".join(_change_line(i) for i in range(30))))
    with pytest.raises(ConversionError) as caught:
        convert_incremental_export(
            [path], tmp_path / "out", key_attributes=["pk"], declared_items={path: 29}
        )
    assert caught.value.line == 30


@each_parser
def test_a_file_declared_empty_must_be_empty(tmp_path: Path) -> None:
    path = tmp_path / "one.json.gz"
    path.write_bytes(gzip.compress(b'{"Item": {"pk": {"N": "1"'))  # not even a whole line
    with pytest.raises(ConversionError, match="more than the 0 item"):
        convert_full_export([path], tmp_path / "out", declared_items={path: 0})


_PEAK_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    from pathlib import Path
    from export_pipeline.dynamodb.convert import ConversionError, convert_full_export
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        convert_full_export([Path(sys.argv[1])], Path(sys.argv[2]))
        outcome = "converted"
    except ConversionError as error:
        outcome = str(error)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"outcome": outcome, "growth_kib": after - before}))
    """
)


def test_a_gzip_bomb_line_is_refused_within_the_memory_bound(tmp_path: Path) -> None:
    """A 4 x MAX_LINE_BYTES line (~50 KB of gzip) fails with peak RSS growth under the bound.

    The bound is on the stream, before any parser, so the default path measures it.
    Run in a fresh process so that its peak RSS (the kernel's high-water mark)
    is this conversion's alone. Without the bound, the line is gathered whole
    (about four times its length at the peak).
    """
    size = 4 * MAX_LINE_BYTES
    path = tmp_path / "bomb.json.gz"
    with gzip.open(path, "wb", compresslevel=9) as out:
        out.write(b'{"Item": {"s": {"S": "')
        for _ in range(size // (1 << 20)):
            out.write(b"a" * (1 << 20))
        out.write(b'"}}}\n')
    script = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, str(path), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    report = json.loads(script.stdout.strip().splitlines()[-1])
    assert "line 1" in report["outcome"] and "longer than" in report["outcome"]
    # The stream holds at most one batch plus one line in flight.
    bound_kib = (read.MAX_BATCH_BYTES + 2 * MAX_LINE_BYTES) // 1024
    assert report["growth_kib"] < bound_kib, report


@each_parser
def test_intermediate_batches_are_written_compressed(tmp_path: Path) -> None:
    """Pass 1's Arrow files are compressed: disk per batch well under its decoded size."""
    from export_pipeline.dynamodb.convert.parse_arrow import SchemaHint

    lines = b"".join(_item_line(i, "same text " * 50) for i in range(2_000))
    path = tmp_path / "repetitive.json.gz"
    path.write_bytes(gzip.compress(lines))
    (blob,) = read.blobs(path, batch_size=10_000)
    info = read.convert_blob(path, 0, 0, blob, tmp_path, SchemaHint())
    written = Path(info.ipc_path).stat().st_size
    with pa.memory_map(info.ipc_path) as source:
        decoded = pa.ipc.open_file(source).read_all().nbytes
    assert decoded > 1_000_000 and written < decoded / 5, (written, decoded)
