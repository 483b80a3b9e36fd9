"""The tests' AWS-format sample exports (`support.aws_samples`) are the same bytes every time."""

from __future__ import annotations

from pathlib import Path

from export_pipeline_tests.support.aws_samples import write_aws_samples


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_samples_are_written_byte_for_byte_the_same(tmp_path: Path) -> None:
    write_aws_samples(tmp_path / "a")
    write_aws_samples(tmp_path / "b")
    first, second = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert first == second
    # full: 5 manifest files + 3 data; incremental: 5 + 1; RDS: 2 info files + 3 Parquet
    assert len(first) == 19
    empty = [key for key, body in first.items() if not body]
    assert sorted(k.rsplit("/", 1)[-1] for k in empty) == [
        "_started",
        "_started",
        "zd5ivbq3ywgo6lkfnexh2r7tma.json.gz",  # the empty partition of the full export
    ]
