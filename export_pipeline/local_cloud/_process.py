"""Background server processes of the local cloud: start detached, identify, stop.

Each server runs as its own session leader (so a Ctrl-C in the terminal that
ran `export-pipeline local up` does not take it down) with its output in a log
file under the state folder and a pid file beside it. The pid file records the
process's start time as the kernel reports it: a pid alone can be reused by an
unrelated process after ours exits, and `down` must never signal a process it
did not start.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


class LocalCloudError(RuntimeError):
    """The local cloud could not be started, reached or stopped; the message says why."""


@dataclass(frozen=True)
class ProcessRecord:
    """What a pid file holds: enough to recognise the process later."""

    name: str
    pid: int
    start_ticks: int | None  # field 22 of /proc/<pid>/stat; None where /proc is absent
    command: list[str]
    host: str
    port: int
    extra_ports: dict[str, int]
    log_path: str
    started_at: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def read(cls, path: Path) -> ProcessRecord | None:
        """The record in `path`, or None if there is none or it is unreadable."""
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return cls(**raw)
        except (FileNotFoundError, ValueError, TypeError):
            return None

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        tmp.replace(path)


def process_start_ticks(pid: int) -> int | None:
    """The kernel's start time of `pid` (clock ticks since boot), None if not known."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def _process_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()[0]


def is_alive(record: ProcessRecord) -> bool:
    """True if the process in `record` still runs and is the one we started."""
    try:
        os.kill(record.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # exists but is not ours to signal: certainly not our server
    if Path("/proc").is_dir():
        if _process_state(record.pid) in (None, "Z", "X"):
            return False  # exited (a zombie waiting for its parent counts as gone)
        if record.start_ticks is not None and process_start_ticks(record.pid) != record.start_ticks:
            return False  # the pid now belongs to a process started later
        # An empty command line is a process still inside exec() (its arguments
        # are not mapped yet: seen right after Popen returns, under load). Only
        # a child this process started can be ours then; any other process
        # whose arguments are not visible yet is left alone.
        command = process_command(record.pid)
        if not command:
            return any(child.pid == record.pid for child in _CHILDREN)
        return command == record.command
    return True


def process_command(pid: int) -> list[str] | None:
    """The argv of `pid` as the kernel reports it, None if not known."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]]


def spawn(
    name: str,
    command: list[str],
    *,
    log_path: Path,
    pid_path: Path,
    cwd: Path,
    host: str,
    port: int,
    extra_ports: dict[str, int] | None = None,
    env: dict[str, str] | None = None,
) -> ProcessRecord:
    """Start `command` detached from this process, log to `log_path`, record it in `pid_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {name}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    record = ProcessRecord(
        name=name,
        pid=proc.pid,
        start_ticks=process_start_ticks(proc.pid),
        command=command,
        host=host,
        port=port,
        extra_ports=dict(extra_ports or {}),
        log_path=str(log_path),
        started_at=time.time(),
    )
    record.write(pid_path)
    # Keep the Popen object reachable so that Python reaps the child if it
    # exits while this process is still alive (no zombie lingers in `status`).
    _CHILDREN.append(proc)
    return record


_CHILDREN: list[subprocess.Popen[bytes]] = []


def stop(record: ProcessRecord, *, timeout: float = 10.0) -> bool:
    """Stop the process of `record` if it is still ours; True if it was running."""
    return stop_all([record], timeout=timeout)[0]


def stop_all(records: list[ProcessRecord], *, timeout: float = 10.0) -> list[bool]:
    """SIGTERM those of `records` that are still ours, together; SIGKILL any left after
    `timeout`. Returns, per record, whether it was running."""
    running = [is_alive(record) for record in records]
    for record, alive in zip(records, running, strict=True):
        if alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for record, alive in zip(records, running, strict=True):
        if alive and not _wait_gone(record, max(0.0, deadline - time.monotonic())):
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.pid, signal.SIGKILL)
            _wait_gone(record, 5.0)
    return running


def _wait_gone(record: ProcessRecord, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap_children()
        if not is_alive(record):
            return True
        time.sleep(0.05)
    return not is_alive(record)


def _reap_children() -> None:
    for proc in list(_CHILDREN):
        if proc.poll() is not None:
            _CHILDREN.remove(proc)


def http_get_json(url: str, timeout: float = 2.0) -> dict | None:
    """GET `url` and parse JSON; None on any connection/HTTP/parse failure."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            if response.status != 200:
                return None
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def wait_until(
    ready: Callable[[], bool],
    *,
    record: ProcessRecord,
    timeout: float,
    what: str,
) -> None:
    """Poll `ready` until True; fail early if the process died, or after `timeout`."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        if ready():
            return
        _reap_children()
        if not is_alive(record):
            raise LocalCloudError(
                f"{what} exited during start-up; see its log {record.log_path}:\n"
                + tail(Path(record.log_path))
            )
        if time.monotonic() > deadline:
            raise LocalCloudError(
                f"{what} did not answer within {timeout:.0f}s (pid {record.pid}); "
                f"see its log {record.log_path}:\n" + tail(Path(record.log_path))
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "  (no log)"
    return "\n".join("  | " + line for line in text.splitlines()[-lines:])


@contextlib.contextmanager
def file_lock(path: Path, *, timeout: float = 300.0) -> Iterator[None]:
    """An exclusive lock across processes (flock on `path`), given up after `timeout`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LocalCloudError(
                        f"another process has held {path} for over {timeout:.0f}s; "
                        "is an `export-pipeline local up` stuck?"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def python_command(module: str, *args: str) -> list[str]:
    """Run `module` with this interpreter (the project's venv)."""
    return [sys.executable, "-m", module, *args]


def port_is_free(host: str, port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # The servers set SO_REUSEADDR too: a port held only by TIME_WAIT is free to them.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def owner_argument(pid: int) -> str:
    """`--owner` value naming process `pid` (pid and start time, so reuse is detected)."""
    return f"{pid}:{process_start_ticks(pid) or ''}"


def exit_with_owner(owner: str | None, *, interval: float = 1.0) -> None:
    """If `owner` ("pid:start_ticks") is given, SIGTERM this process once the owner is gone.

    A test session starts a private cloud and stops it at the end; if the
    session is killed instead (SIGKILL, a crashed CI job), this keeps its
    servers from running on forever.
    """
    if not owner:
        return
    import threading

    pid_text, _, ticks_text = owner.partition(":")
    pid, ticks = int(pid_text), int(ticks_text) if ticks_text else None

    def owner_alive() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        if ticks is not None and process_start_ticks(pid) not in (None, ticks):
            return False
        return _process_state(pid) not in ("Z", "X")

    def watch() -> None:
        while owner_alive():
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="exit-with-owner", daemon=True).start()


def serve_until_stopped(server: Any, owner: str | None, log: logging.Logger) -> None:
    """Serve `server` (a `serve_forever`/`shutdown` server) until SIGTERM, SIGINT or `owner` exits.

    Every local-cloud server stops the same way: a signal asks for a
    shutdown from another thread (`shutdown` waits for `serve_forever`,
    which runs in this one), then the socket is closed.
    """
    import threading

    def _shutdown(signum: int, _frame: object) -> None:
        log.info("signal %s: shutting down", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _shutdown)
    signal.signal(signal.SIGINT, _shutdown)
    exit_with_owner(owner)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        log.info("stopped")
