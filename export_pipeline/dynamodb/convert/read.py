"""Pass 1: stream one gzip data file, parse lines, write typed intermediate batches.

Why two passes: a column's type depends on every value of the attribute
(one decimal among a million integers makes it NUMERIC), so nothing final
can be written before the whole export is read. Pass 1 therefore writes each
batch of `batch_size` lines as an Arrow IPC file in a *raw* typed form, one
column per (attribute, DynamoDB type) pair — numbers as their exact text,
binary decoded, maps already turned into JSON text — and returns small
statistics (types seen, narrowest number kind). Pass 2 (`write`)
then casts each batch to the final schema, columnar, without re-parsing.

Full exports (`blobs`, `convert_blob`): the decompressed stream is cut into
batches of whole lines without splitting it into lines (a batch ends near
`MAX_BATCH_BYTES`, or after `batch_size` lines); each batch is parsed in a
worker thread by the first path that accepts it: the native parser
(`parse_native`), Arrow's JSON reader (`parse_arrow`), or line by
line with orjson, which is also what reports bad input with its line number.

Incremental exports (`read_share`): each batch of change lines goes to the
native parser, or line by line with orjson when it declines (which also
reports bad input with its line number). A file can be read by several
worker processes at once ("shares"): each decompresses the whole stream
(cheap) but parses only the batches `index % shares == share`, so one big
file still uses every core without shipping lines between processes.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from export_pipeline.dynamodb.convert import parse_lines, parse_native
from export_pipeline.dynamodb.convert import values as cv
from export_pipeline.dynamodb.convert.model import (
    DELETED_TAG,
    MAX_ITEM_BYTES,
    MAX_LINE_BYTES,
    TIMESTAMP_TAG,
    BatchInfo,
    Blob,
    ConversionError,
    RawColumn,
    ShareResult,
)
from export_pipeline.dynamodb.convert.parse_arrow import SchemaHint, raw_columns

try:  # ISA-L's inflate: the same gzip, about three times faster than zlib's
    from isal import isal_zlib as zlib
except ImportError:  # pragma: no cover - a platform without isal wheels
    import zlib  # type: ignore[no-redef]

READ_CHUNK = 1 << 20
DECOMPRESSED_CHUNK = 4 << 20
# A full-export batch ends near this many decompressed bytes (over it by at
# most one line), or after `batch_size` lines if that comes first.
MAX_BATCH_BYTES = 4 << 20  # a batch in work takes about 11x this in memory (measured)
# Pass 1's Arrow files are compressed, so that the work directory holds about the
# size of the gzip input, not of the decoded items (LZ4: the fastest codec Arrow IPC
# has; bench/dynamodb_convert.py measures its cost, docs/performance.md).
INTERMEDIATE_COMPRESSION = "lz4"
# Full-export batches go through the native parser first (if built), then Arrow's
# JSON reader (see parse_arrow); the tests switch these off to compare paths.
NATIVE_ENABLED = True
COLUMNAR_ENABLED = True


def _decompressed(path: Path) -> Iterator[bytes]:
    """Decompressed chunks (at most DECOMPRESSED_CHUNK bytes each) of a (possibly
    multi-member) gzip file; a b"" file -> none."""
    decompressor = zlib.decompressobj(31)
    fed = False
    with path.open("rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            while True:
                try:
                    data = decompressor.decompress(chunk, DECOMPRESSED_CHUNK)
                except zlib.error as exc:
                    raise ConversionError(path, f"corrupt gzip data: {exc}") from exc
                fed = True
                if data:
                    yield data
                if decompressor.eof:
                    chunk = decompressor.unused_data
                    decompressor = zlib.decompressobj(31)
                    fed = False
                    if not chunk:
                        break
                else:
                    chunk = decompressor.unconsumed_tail
                    if not chunk and len(data) < DECOMPRESSED_CHUNK:
                        break  # all input used and no output pending
    if fed and not decompressor.eof:
        raise ConversionError(path, "truncated gzip data (unexpected end of file)")


@dataclass(frozen=True)
class StreamBounds:
    """What one data file may hold, checked on its decompressed stream while it is read.

    `max_line_bytes`: the longest line (without its line end). `declared_items`:
    the file's itemCount in the manifest (None: unknown); a file may hold no
    more lines, so its decompressed size is at most
    `declared_items * (max_line_bytes + 1)` bytes.
    """

    max_line_bytes: int = MAX_LINE_BYTES
    declared_items: int | None = None


def _bounded(path: Path, bounds: StreamBounds) -> Iterator[bytes]:
    """`_decompressed(path)`, failing at the first line over the bounds (never after the file).

    A chunk is at most DECOMPRESSED_CHUNK bytes, so memory while finding out
    is one chunk, whatever the line. Costs one `count` and one `rfind` per
    chunk (memchr speed); a scan of every line end only when the line bound
    is smaller than a chunk (the tests' scaled-down bounds).
    """
    limit = bounds.max_line_bytes
    declared = bounds.declared_items
    ends = 0  # line ends seen so far
    current = 0  # bytes of the line in progress
    for data in _decompressed(path):
        last = data.rfind(b"\n")
        if last < 0:
            current += len(data)
        else:
            first = data.find(b"\n")
            if current + first > limit:
                raise _line_too_long(path, ends + 1, limit)
            if last > first and limit < last - first:
                _check_inner_lines(path, data, first, last, ends, limit)
            ends += data.count(b"\n", first, last + 1)
            current = len(data) - last - 1
        if current > limit:
            raise _line_too_long(path, ends + 1, limit)
        if declared is not None and ends + (current > 0) > declared:
            raise ConversionError(
                path,
                f"more than the {declared} item(s) its manifest entry declares "
                "(itemCount); reading stopped here",
                line=declared + 1,
            )
        yield data


def _check_inner_lines(
    path: Path, data: bytes, first: int, last: int, ends: int, limit: int
) -> None:
    """Raise for the first line between line ends `first` and `last` of `data` over `limit`."""
    import numpy as np

    positions = np.flatnonzero(np.frombuffer(data, np.uint8, last - first + 1, first) == 10)
    lengths = np.diff(positions) - 1
    over = np.flatnonzero(lengths > limit)
    if len(over):
        raise _line_too_long(path, ends + 2 + int(over[0]), limit)


def _line_too_long(path: Path, line: int, limit: int) -> ConversionError:
    return ConversionError(
        path,
        f"line longer than {limit} bytes: no DynamoDB item's export line is that long "
        f"(items are at most {MAX_ITEM_BYTES} bytes); reading stopped here",
        line=line,
    )


def _lines(path: Path, bounds: StreamBounds) -> Iterator[list[bytes]]:
    """Complete lines of a gzip file, in chunks (the incremental path)."""
    rest = b""
    for data in _bounded(path, bounds):
        parts = (rest + data).split(b"\n")
        rest = parts.pop()
        if parts:
            yield parts
    if rest:
        yield [rest]


def blobs(path: Path, batch_size: int, bounds: StreamBounds | None = None) -> Iterator[Blob]:
    """The decompressed file cut into batches of whole lines, never split into lines.

    A batch ends near MAX_BATCH_BYTES, so that large items cannot blow up
    memory: at the last line end before it in the decompressed chunk where
    the limit falls, else at the first one after it (a batch exceeds the
    limit by at most one line). It ends sooner after `batch_size` lines.
    Cutting costs one `rfind` and one `count` per batch, at memchr speed.
    No line is longer than `bounds.max_line_bytes` (`_bounded`), so a batch
    is at most MAX_BATCH_BYTES + max_line_bytes.
    """
    pieces: list[bytes | memoryview] = []  # the current batch so far
    size = 0  # bytes in pieces
    first = 1
    for data in _bounded(path, bounds or StreamBounds()):
        start = 0  # data[:start] is in earlier batches
        while size + len(data) - start >= MAX_BATCH_BYTES:
            limit = start + MAX_BATCH_BYTES - size
            end = data.rfind(b"\n", start, limit) + 1 or data.find(b"\n", limit) + 1
            if not end:
                break  # a line longer than the rest of this chunk
            pieces.append(memoryview(data)[start:end])
            for blob in _by_count(b"".join(pieces), first, batch_size):
                yield blob
                first += blob.rows
            pieces, size, start = [], 0, end
        if start < len(data):
            pieces.append(memoryview(data)[start:] if start else data)
            size += len(data) - start
    if size:
        yield from _by_count(b"".join(pieces), first, batch_size)


def _by_count(data: bytes, first: int, batch_size: int) -> Iterator[Blob]:
    """`data` (whole lines; the file's last may lack its line end) as batches of at most
    `batch_size` lines."""
    rows = data.count(b"\n") + (not data.endswith(b"\n"))
    if rows <= batch_size:
        yield Blob(data, first, rows)
        return
    start = 0
    while start < len(data):
        end = start
        for _ in range(batch_size):
            end = data.find(b"\n", end) + 1
            if not end:
                end = len(data)
                break
        blob = data[start:end]
        lines = blob.count(b"\n") + (not blob.endswith(b"\n"))
        yield Blob(blob, first, lines)
        first += lines
        start = end


class _BatchWriter:
    """Accumulates one batch of rows column-wise and writes it as Arrow IPC."""

    def __init__(self, path: Path, tmp_dir: Path, prefix: str, batch_size: int) -> None:
        self.path = path
        self.tmp_dir = tmp_dir
        self.prefix = prefix
        self.batch_size = batch_size
        self.count = 0

    def flush(self, cols: dict[tuple, list], rows: int, first_line: int) -> BatchInfo:
        """Write a batch gathered as Python lists (the per-line path)."""
        arrays: list[pa.Array] = []
        raw_columns: list[RawColumn] = []
        for (attribute, tag), values in cols.items():
            if len(values) != rows:
                del values[rows:]
            try:
                raw = self._raw_column(attribute, tag, values, len(arrays))
            except MemoryError:
                raise  # not bad input: run_conversion names the file and the limit
            except (cv.ValueError_, ValueError, TypeError, pa.ArrowException) as exc:
                line = first_line + _first_bad_row(tag, values)
                where = f"attribute {attribute!r}" if attribute is not None else tag
                raise ConversionError(self.path, f"{where}: {exc}", line=line) from exc
            if raw is None:
                raw_columns.append(RawColumn(attribute, tag, None))
                continue
            array, kind = raw
            raw_columns.append(RawColumn(attribute, tag, len(arrays), kind))
            arrays.append(array)
        return self._write(arrays, raw_columns, rows, first_line)

    def flush_arrays(self, cols: dict[tuple, pa.Array], rows: int, first_line: int) -> BatchInfo:
        """Write a batch gathered as raw Arrow columns (the columnar path).

        Raises ValueError_ for a value the per-line path must report.
        """
        arrays: list[pa.Array] = []
        raw_columns: list[RawColumn] = []
        for (attribute, tag), array in cols.items():
            if tag == "NULL":
                raw_columns.append(RawColumn(attribute, tag, None))
                continue
            kind = None
            if tag == "N" or tag == TIMESTAMP_TAG:
                kind = cv.number_kind_of_array(array)
            elif tag == "NS":
                kind = cv.number_kind_of_array(array.flatten())
            raw_columns.append(RawColumn(attribute, tag, len(arrays), kind))
            arrays.append(array)
        return self._write(arrays, raw_columns, rows, first_line)

    def _write(
        self, arrays: list[pa.Array], raw_columns: list[RawColumn], rows: int, first_line: int
    ) -> BatchInfo:
        ipc_path = self.tmp_dir / f"{self.prefix}-{self.count:06d}.arrow"
        self.count += 1
        table = pa.Table.from_arrays(arrays, names=[str(i) for i in range(len(arrays))])
        options = pa.ipc.IpcWriteOptions(compression=INTERMEDIATE_COMPRESSION)
        with (
            pa.OSFile(str(ipc_path), "wb") as sink,
            pa.ipc.new_file(sink, table.schema, options=options) as out,
        ):
            out.write_table(table)
        return BatchInfo(str(ipc_path), rows, first_line, raw_columns)

    @staticmethod
    def _raw_column(
        attribute: str | None, tag: str, values: list, _index: int
    ) -> tuple[pa.Array, str | None] | None:
        if tag == "S":
            return pa.array(values, pa.string()), None
        if tag == "N" or tag == TIMESTAMP_TAG:
            array = pa.array(values, pa.string())
            return array, cv.number_kind_of_array(array)
        if tag == "BOOL" or tag == DELETED_TAG:
            if not all(v is None or v is True or v is False for v in values):
                raise cv.ValueError_("BOOL value must be true or false")
            return pa.array(values, pa.bool_()), None
        if tag == "NULL":
            return None
        if tag == "B":
            return pa.array(cv.decode_base64_list(values), pa.binary()), None
        if tag == "SS":
            return pa.array(values, pa.list_(pa.string())), None
        if tag == "NS":
            array = pa.array(values, pa.list_(pa.string()))
            return array, cv.number_kind_of_array(array.flatten())
        if tag == "BS":
            decoded = [None if v is None else cv.decode_base64_list(v) for v in values]
            return pa.array(decoded, pa.list_(pa.binary())), None
        if tag == "M" or tag == "L":  # already JSON text (converted while parsing)
            return pa.array(values, pa.string()), None
        raise cv.ValueError_(f"unknown DynamoDB type descriptor {tag!r}")


def _first_bad_row(tag: str, values: list) -> int:
    """Row of the first value that fails alone (for the error's line number)."""
    for row, value in enumerate(values):
        if value is None:
            continue
        try:
            _BatchWriter._raw_column(None, tag, [value], 0)
        except Exception:
            return row
    return 0


def convert_blob(
    path: Path, file_index: int, number: int, blob: Blob, tmp_dir: Path, hint: SchemaHint
) -> BatchInfo:
    """Full export: one batch of lines -> an intermediate batch file (runs in a thread).

    The native parser first, then Arrow's reader; the per-line path when
    neither applies, which also reports bad input with its line number.
    """
    writer = _BatchWriter(path, tmp_dir, f"f{file_index:05d}-b{number:06d}", blob.rows)
    for enabled, read in (
        (NATIVE_ENABLED, lambda: parse_native.raw_columns(blob.data, blob.rows)),
        (COLUMNAR_ENABLED, lambda: raw_columns(blob.data, blob.rows, hint)),
    ):
        columns = read() if enabled else None
        if columns is not None:
            try:
                return writer.flush_arrays(columns, blob.rows, blob.first_line)
            except MemoryError:
                raise
            except (cv.ValueError_, ValueError, TypeError, pa.ArrowException):
                break  # a bad value: the per-line path reports it with its line number
    lines = blob.data.split(b"\n")
    if not lines[-1]:
        lines.pop()  # the end of the last line, not an empty line
    cols: dict[tuple, list] = {}
    parse_lines.parse_items(path, lines, cols, 0, blob.rows, blob.first_line - 1)
    return writer.flush(cols, blob.rows, blob.first_line)


def read_share(
    path: Path,
    file_index: int,
    share: int,
    shares: int,
    tmp_dir: Path,
    batch_size: int,
    key_attributes: tuple[str, ...],
    bounds: StreamBounds | None = None,
) -> ShareResult:
    """Incremental export: parse this worker's share of `path` line by line (see module doc)."""
    result = ShareResult(file_index, share)
    writer = _BatchWriter(path, tmp_dir, f"f{file_index:05d}-s{share:03d}", batch_size)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # millions of short-lived dicts would trigger it constantly
    try:
        line_no = 0  # 0-based index of the next line in the file
        lines: list[bytes] = []  # this worker's current batch
        batch_first = 0
        for chunk in _lines(path, bounds or StreamBounds()):
            start = 0
            while start < len(chunk):
                batch_index = line_no // batch_size
                in_batch = min(len(chunk) - start, (batch_index + 1) * batch_size - line_no)
                if batch_index % shares == share:
                    if not lines:
                        batch_first = line_no + 1
                    lines += chunk[start : start + in_batch]
                    result.lines += in_batch
                    if len(lines) == batch_size:
                        result.batches.append(
                            _change_batch(path, writer, lines, batch_first, key_attributes)
                        )
                        lines = []
                start += in_batch
                line_no += in_batch
        if lines:
            result.batches.append(_change_batch(path, writer, lines, batch_first, key_attributes))
    finally:
        if gc_was_enabled:
            gc.enable()
    return result


def _change_batch(
    path: Path,
    writer: _BatchWriter,
    lines: list[bytes],
    first_line: int,
    key_attributes: tuple[str, ...],
) -> BatchInfo:
    """One batch of change lines: the native parser, or line by line when it declines."""
    rows = len(lines)
    if NATIVE_ENABLED:
        parsed = parse_native.change_columns(b"\n".join(lines), rows, key_attributes)
        if parsed is not None:
            images, deleted, stamps = parsed
            columns = {(None, DELETED_TAG): deleted, (None, TIMESTAMP_TAG): stamps, **images}
            try:
                return writer.flush_arrays(columns, rows, first_line)
            except MemoryError:
                raise
            except (cv.ValueError_, ValueError, TypeError, pa.ArrowException):
                pass  # a bad value: the per-line path reports it with its line number
    cols: dict[tuple, list] = {}
    parse_lines.parse_changes(path, lines, cols, 0, rows, first_line - 1, key_attributes)
    return writer.flush(cols, rows, first_line)
