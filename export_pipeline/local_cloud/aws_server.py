"""The AWS half of the local cloud: moto's server, in this process, on loopback.

Run as `python -m export_pipeline.local_cloud.aws_server --host H --port P --state-dir D`
(`control.up` does). Before serving, it calls `install(state_dir)` of the
export emulations (`dynamodb_exports`, `rds_exports`): they replace methods of
moto's models so that ExportTableToPointInTime and StartExportTask write what
AWS writes. Such patches only act in the process that serves the requests,
which is why this server runs moto in-process instead of moto's own CLI.

Besides moto's API it answers `GET /_local_cloud/health` with its pid, state
folder and installed hooks: `control` uses that to tell its own server from
anything else listening on the port.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

from export_pipeline.local_cloud._process import serve_until_stopped
from export_pipeline.local_cloud.settings import (
    LOCAL_ACCOUNT_ID,
    LOCAL_AWS_ACCESS_KEY_ID,
    LOCAL_AWS_SECRET_ACCESS_KEY,
)

HEALTH_PATH = "/_local_cloud/health"

_log = logging.getLogger("export_pipeline.local_cloud.aws_server")


def install_hooks(state_dir: Path, modules: Iterable[ModuleType]) -> list[str]:
    """Call `install(state_dir)` of every export emulation; return their names.

    One that fails to install stops the server: a half-faithful cloud would mislead.
    """
    installed = []
    for module in modules:
        module.install(state_dir)
        installed.append(module.__name__)
        _log.info("installed %s", module.__name__)
    return installed


class _HealthMiddleware:
    """Answers the health path itself; everything else goes to moto."""

    def __init__(self, app: Callable[..., Any], info: dict[str, Any]) -> None:
        self._app = app
        self._body = json.dumps({"status": "ok", **info}).encode()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO") == HEALTH_PATH and environ.get("REQUEST_METHOD") == "GET":
            start_response(
                "200 OK",
                [("Content-Type", "application/json"), ("Content-Length", str(len(self._body)))],
            )
            return [self._body]
        return self._app(environ, start_response)


def serve(
    host: str,
    port: int,
    state_dir: Path,
    owner: str | None = None,
    *,
    enforce_iam: bool = False,
) -> None:
    """Install the hooks, then serve moto on host:port until SIGTERM/SIGINT (or owner exit).

    `enforce_iam`: check every call against the caller's IAM policies
    (`iam_enforcement.enable`; the local cloud's own keys are an administrator's).
    """
    os.environ.setdefault("MOTO_PORT", str(port))  # moto builds some URLs from it
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    # Imported here, in the server process only: they patch moto's models.
    from export_pipeline.local_cloud import dynamodb_exports, iam_enforcement, rds_exports

    state_dir.mkdir(parents=True, exist_ok=True)
    installed = install_hooks(state_dir, (dynamodb_exports, rds_exports))
    if enforce_iam:
        iam_enforcement.enable(
            LOCAL_ACCOUNT_ID, LOCAL_AWS_ACCESS_KEY_ID, LOCAL_AWS_SECRET_ACCESS_KEY
        )

    class _QuietHandler(MotoRequestHandler):
        # Request lines can carry presigned-URL credentials in the query
        # string; keep them out of the log. Server errors are still logged.
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            if str(code).startswith("5"):
                path = self.path.split("?", 1)[0]
                _log.error("%s %s -> %s", self.command, path, code)

    app = _HealthMiddleware(
        DomainDispatcherApplication(create_backend_app),
        {
            "pid": os.getpid(),
            "state_dir": str(state_dir),
            "install_hooks": installed,
            "iam": "enforced" if enforce_iam else "not checked",
        },
    )
    server = make_server(host, port, app, threaded=True, request_handler=_QuietHandler)

    _log.info("moto serving on http://%s:%s (state %s)", host, port, state_dir)
    serve_until_stopped(server, owner, _log)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--owner", help="pid:start_ticks of a process whose exit stops us")
    parser.add_argument(
        "--enforce-iam", action="store_true", help="check calls against the caller's IAM policies"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # werkzeug's own "Running on..." banner and per-request lines are not needed.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    serve(args.host, args.port, args.state_dir.resolve(), args.owner, enforce_iam=args.enforce_iam)


if __name__ == "__main__":
    main()
