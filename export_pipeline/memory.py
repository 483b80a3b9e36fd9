"""Running out of memory: which limit applied, and an error that says how to raise it.

Running out of memory is not transient: the same file on the same worker needs
the same memory, so retrying the step only repeats the failure (and its
cost). `OutOfMemoryError` is therefore a `PermanentError`; its message names
the S3 object being worked on, the limit that applied and how to raise it.
The converters raise it for a `MemoryError` (Python's, or Arrow's
`ArrowMemoryError`) and for a worker process that died mid-task (the kernel's
OOM killer sends SIGKILL, which the pool reports as `BrokenProcessPool`).
"""

from __future__ import annotations

import resource
from pathlib import Path

from export_pipeline.errors import PermanentError

# cgroup v2, then v1: the container's limit, which is what the OOM killer enforces.
_CGROUP_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
)
_NO_LIMIT_ABOVE = 1 << 60  # cgroup v1 writes a huge number for "no limit"


def _gib(size: int) -> str:
    return f"{size / (1 << 30):.1f} GiB"


def memory_limit() -> str:
    """The memory limit this process runs under, in words (for error messages)."""
    for path in _CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < _NO_LIMIT_ABOVE:
            return f"{_gib(int(text))} (the container's cgroup limit, {path})"
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        return f"{_gib(soft)} of address space (RLIMIT_AS, `ulimit -v`)"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"the machine's {_gib(int(line.split()[1]) * 1024)} (no container limit)"
    except OSError:
        pass
    return "unknown"


class OutOfMemoryError(PermanentError):
    """A step ran out of memory on a file; permanent (a retry needs the same memory)."""

    def __init__(self, where: str, doing: str, how_to_raise: str, limit: str = "") -> None:
        self.where = where
        self.doing = doing
        self.how_to_raise = how_to_raise
        self.limit = limit or memory_limit()
        super().__init__(
            f"{where}: out of memory {doing} (memory limit: {self.limit}); {how_to_raise}"
        )

    @property
    def hint(self) -> str:  # type: ignore[override]
        return self.how_to_raise

    def at(self, where: str) -> OutOfMemoryError:
        """The same error naming `where` (an S3 URI) instead of a local path."""
        return OutOfMemoryError(where, self.doing, self.how_to_raise, self.limit)

    def __reduce__(self):  # keep the fields across process boundaries
        return (OutOfMemoryError, (self.where, self.doing, self.how_to_raise, self.limit))
