"""Which memory limit this process runs under, in words, for the out-of-memory errors.

The cgroup's limit (what the kernel's OOM killer enforces), else the
address-space limit, else the machine's memory. `errors.OutOfMemoryError`
and `errors.classify` quote it, so that the message says which limit to raise.
"""

from __future__ import annotations

import resource
from pathlib import Path

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
