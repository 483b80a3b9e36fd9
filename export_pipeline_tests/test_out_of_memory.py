"""Running out of memory is permanent, and the error names the file, the limit and what to do.

The memory error is real: the conversion runs in a child process under an
address-space limit (RLIMIT_AS, set after its imports), on a file whose one
line is larger than that limit allows, with the line bound raised so that the
converter tries to hold it.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import textwrap
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pyarrow as pa

from export_pipeline.errors import OutOfMemoryError, classify
from export_pipeline.memory import memory_limit

_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    from pathlib import Path
    import export_pipeline.dynamodb.convert.run  # everything imported before the limit
    from export_pipeline.dynamodb.convert import convert_full_export
    from export_pipeline.errors import classify
    vm = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1])
    limit = vm * 1024 + (160 << 20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
    try:
        convert_full_export([Path(sys.argv[1])], Path(sys.argv[2]), max_line_bytes=1 << 31)
        print(json.dumps({"outcome": "converted"}))
    except BaseException as error:
        verdict = classify(error)
        print(json.dumps({"type": type(error).__name__, "message": str(error),
                          "transient": verdict.transient, "hint": verdict.hint}))
    """
)


def test_a_memory_error_names_the_file_and_the_limit_and_is_permanent(tmp_path: Path) -> None:
    path = tmp_path / "huge-line.json.gz"
    with gzip.open(path, "wb", compresslevel=1) as out:
        out.write(b'{"Item": {"s": {"S": "')
        for _ in range(256):  # a 256 MiB line, 160 MiB of room
            out.write(b"m" * (1 << 20))
        out.write(b'"}}}\n')
    child = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(path), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(child.stdout.strip().splitlines()[-1])
    assert report["type"] == "OutOfMemoryError", (report, child.stderr[-2000:])
    assert report["message"].startswith(f"{path}: out of memory converting this file")
    assert "RLIMIT_AS" in report["message"]  # the limit that applied
    assert "dynamodb.max_parallel_files" in report["message"]  # how to get under it
    assert report["transient"] is False and "max_parallel_files" in report["hint"]


def test_memory_errors_are_never_transient() -> None:
    for error in (
        MemoryError(),
        pa.ArrowMemoryError("malloc of size 1073741824 failed"),
        OutOfMemoryError("s3://b/k", "converting this file", "lower x"),
    ):
        verdict = classify(error)
        assert not verdict.transient, error
        assert verdict.hint


def test_out_of_memory_names_the_s3_object_once_known() -> None:
    error = OutOfMemoryError("/tmp/x/00001-part.json.gz", "converting this file", "lower x")
    moved = error.at("s3://bucket/AWSDynamoDB/1/data/part.json.gz")
    assert str(moved).startswith("s3://bucket/AWSDynamoDB/1/data/part.json.gz: out of memory")
    assert moved.limit == error.limit and memory_limit() in str(moved)


def test_a_killed_worker_process_is_reported_as_out_of_memory(tmp_path: Path) -> None:
    """A converter worker that dies (the OOM killer's SIGKILL) breaks its process pool."""
    from export_pipeline.dynamodb.convert import run

    data = tmp_path / "a.json.gz"
    data.write_bytes(gzip.compress(b'{"Item": {"pk": {"N": "1"}}}\n'))
    try:
        with run._out_of_memory(data, 2):
            raise BrokenProcessPool("A child process terminated abruptly")
    except OutOfMemoryError as error:
        assert str(error).startswith(f"{data}: out of memory converting this file")
        assert "worker process was killed" in str(error)
    else:
        raise AssertionError("BrokenProcessPool was not turned into OutOfMemoryError")
