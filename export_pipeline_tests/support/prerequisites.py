"""Programs and servers from the machine that some tests need, checked once before any test.

A test that needs one is marked `@pytest.mark.needs("chromium")` (or
"mariadb", "postgresql", "rabbitmq", "redis"). Before the first test runs, conftest checks the
prerequisites of the selected tests only, and when one is missing stops the
whole run with one line per missing program: what is missing and what to
install. The run fails (pytest's exit status 1), it is not skipped: a suite
that silently left out the UI or the MariaDB tests would pass without them.
Deselect those tests (`--ignore` / `-m "not needs"`) to run the rest without it.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

# Names Debian and other distributions give the Chromium binary, in the order tried.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
MARIADB_ADDRESS = ("127.0.0.1", 3306)
POSTGRESQL_ADDRESS = ("127.0.0.1", 5432)
RABBITMQ_ADDRESS = ("127.0.0.1", 5672)
REDIS_ADDRESS = ("127.0.0.1", 6379)


def find_chromium() -> str | None:
    """The first Chromium on PATH, or None."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def accepts_connections(address: tuple[str, int], timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection(address, timeout=timeout):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class Prerequisite:
    name: str
    present: Callable[[], bool]
    missing: str  # the one line: what is missing, what to install or start


PREREQUISITES = {
    "chromium": Prerequisite(
        "chromium",
        lambda: find_chromium() is not None,
        "Chromium is not on PATH (looked for " + ", ".join(CHROMIUM_NAMES) + "): "
        "install it, e.g. `apt-get install -y chromium`",
    ),
    "mariadb": Prerequisite(
        "mariadb",
        lambda: accepts_connections(MARIADB_ADDRESS),
        "no MariaDB/MySQL server at 127.0.0.1:3306 (user root, no password): install and "
        "start one, e.g. `apt-get install -y mariadb-server && service mariadb start`",
    ),
    "postgresql": Prerequisite(
        "postgresql",
        lambda: accepts_connections(POSTGRESQL_ADDRESS),
        "no PostgreSQL server at 127.0.0.1:5432 (user postgres, trust auth): install and "
        "start one, e.g. `apt-get install -y postgresql && service postgresql start`",
    ),
    "rabbitmq": Prerequisite(
        "rabbitmq",
        lambda: accepts_connections(RABBITMQ_ADDRESS),
        "no RabbitMQ broker at 127.0.0.1:5672 (user guest, password guest): install and "
        "start one, e.g. `apt-get install -y rabbitmq-server && service rabbitmq-server start`",
    ),
    "redis": Prerequisite(
        "redis",
        lambda: accepts_connections(REDIS_ADDRESS),
        "no Redis server at 127.0.0.1:6379 (no password): install and start one, "
        "e.g. `apt-get install -y redis-server && service redis-server start`",
    ),
}


def missing_lines(needed: Iterable[str]) -> list[str]:
    """One line per needed prerequisite that is absent (unknown names are errors too)."""
    lines = []
    for name in sorted(set(needed)):
        prerequisite = PREREQUISITES.get(name)
        if prerequisite is None:
            lines.append(f"unknown test prerequisite {name!r} (known: {sorted(PREREQUISITES)})")
        elif not prerequisite.present():
            lines.append(f"missing test prerequisite: {prerequisite.missing}")
    return lines
