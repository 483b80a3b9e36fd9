"""Local clouds of a test's own: free ports, settings, an in-process moto server.

The session-wide local cloud (the `local_cloud` fixture) runs moto in its own
process with a fixed export duration. Tests of the DynamoDB export emulation
itself want exports that finish in a fraction of a second and many throw-away
tables, so they start `in_process_aws_server`: moto's real HTTP server
(`ThreadedMotoServer`) on a free loopback port, in the test process, after
`dynamodb_exports.install()`, the same patched code the local cloud's server
runs, reached over real HTTP by boto3. Tests that need a whole cloud with its
own up/down cycle start one from `fresh_local_cloud_settings`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from export_pipeline.local_cloud import dynamodb_exports
from export_pipeline.local_cloud.settings import LocalCloudSettings


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports that nothing listens on right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def fresh_local_cloud_settings(state_dir: Path) -> LocalCloudSettings:
    """Settings for a separate cloud (own state folder, own free ports); not started.

    IAM is enforced when the environment asks for it (`EXPORT_PIPELINE_LOCAL_IAM`).
    """
    aws_port, bigquery_port, grpc_port, gcs_port = free_ports(4)
    return LocalCloudSettings(
        state_dir=state_dir,
        aws_port=aws_port,
        bigquery_port=bigquery_port,
        bigquery_grpc_port=grpc_port,
        gcs_port=gcs_port,
        enforce_iam=LocalCloudSettings.from_env().enforce_iam,
    )


@contextmanager
def in_process_aws_server(state_dir: Path, export_seconds: float = 0.3) -> Iterator[str]:
    """Serve moto (with `install(state_dir)` applied) on 127.0.0.1; yield its endpoint URL.

    Exports stay IN_PROGRESS for `export_seconds` while it runs. moto keeps
    its in-process state in module globals, shared by every such server of
    the test process: it is reset on entry and on exit (`/moto-api/reset`),
    so one test module's buckets and tables never show up in another's.
    """
    from moto.server import ThreadedMotoServer

    dynamodb_exports.install(state_dir)
    previous = dynamodb_exports.export_seconds_override
    dynamodb_exports.export_seconds_override = export_seconds
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    url = None
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        _reset(url)
        yield url
    finally:
        if url is not None:
            with contextlib.suppress(OSError):
                _reset(url)
        server.stop()
        dynamodb_exports.export_seconds_override = previous


def _reset(url: str) -> None:
    """Empty moto's in-process backends (its documented reset endpoint)."""
    request = urllib.request.Request(f"{url}/moto-api/reset", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def restore_environment(previous: dict[str, str | None]) -> None:
    """Put environment variables back as `previous` recorded them (None: unset)."""
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
