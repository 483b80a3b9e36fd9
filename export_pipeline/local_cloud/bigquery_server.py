"""The BigQuery half of the local cloud: bqemulator (REST + gRPC, DuckDB inside), offline.

Run as
`python -m export_pipeline.local_cloud.bigquery_server --host H --port P --grpc-port G
--state-dir D --project X` (`control.up` does). Its tables persist in
`D/bigquery/bqemulator.duckdb`, so they survive `down`/`up`.

Offline start-up: bqemulator runs `INSTALL spatial; LOAD spatial` when its
engine starts, and `INSTALL` would download the extension. `INSTALL` is a
no-op once DuckDB's extension folder (`~/.duckdb/extensions/v<duckdb>/<platform>/`)
holds it, so before the emulator starts we install it there from the file
that the `duckdb-extension-spatial` wheel ships (same version as `duckdb`).
That is a 0.4 s copy, done once per HOME; with no writable HOME the folder
goes under the state folder instead. The best-effort `avro` extension is
switched off (it would try the network at every start; nothing here loads
Avro).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from export_pipeline.local_cloud._process import exit_with_owner
from export_pipeline.local_cloud.settings import gcs_root

_log = logging.getLogger("export_pipeline.local_cloud.bigquery_server")


class SpatialExtensionError(RuntimeError):
    """DuckDB's spatial extension cannot be installed from the bundled wheel."""


def bundled_spatial_extension() -> Path:
    """The spatial extension file shipped by `duckdb-extension-spatial` for this DuckDB."""
    import duckdb

    try:
        import duckdb_extension_spatial
    except ImportError:
        raise SpatialExtensionError(
            "the package duckdb-extension-spatial is not installed; bqemulator needs DuckDB's "
            "spatial extension offline: pip install "
            f"'duckdb-extension-spatial=={duckdb.__version__}'"
        ) from None
    root = Path(duckdb_extension_spatial.__file__).parent / "extensions"
    path = root / f"v{duckdb.__version__}" / "spatial.duckdb_extension"
    if not path.is_file():
        shipped = sorted(p.name for p in root.glob("v*")) if root.is_dir() else []
        raise SpatialExtensionError(
            f"duckdb is {duckdb.__version__} but duckdb-extension-spatial ships the spatial "
            f"extension for {shipped or 'no version'} (looked for {path}); pin both to the "
            "same version"
        )
    return path


def _spatial_installed(duckdb_module) -> bool:  # type: ignore[no-untyped-def]
    with duckdb_module.connect(":memory:") as con:
        row = con.execute(
            "SELECT installed FROM duckdb_extensions() WHERE extension_name = 'spatial'"
        ).fetchone()
    return bool(row and row[0])


@contextlib.contextmanager
def _install_lock() -> Iterator[None]:
    # Two emulators starting at once in a fresh HOME would both copy the file.
    path = Path(tempfile.gettempdir()) / f"export_pipeline_duckdb_spatial.{os.getuid()}.lock"
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def ensure_spatial_extension(fallback_home: Path) -> None:
    """Make `INSTALL spatial` a no-op for DuckDB in this process (see the module docstring).

    Installs into DuckDB's default extension folder under $HOME. If $HOME is
    missing or not writable, points HOME at `fallback_home` (this process
    only: DuckDB reads HOME when a connection opens) and installs there.
    """
    import duckdb

    with _install_lock():
        if _spatial_installed(duckdb):
            return
        source = bundled_spatial_extension()
        try:
            with duckdb.connect(":memory:") as con:
                con.execute(f"INSTALL '{source}'")
        except duckdb.Error as exc:
            _log.warning("cannot install spatial under HOME=%s (%s)", os.environ.get("HOME"), exc)
            fallback_home.mkdir(parents=True, exist_ok=True)
            os.environ["HOME"] = str(fallback_home)
            if _spatial_installed(duckdb):
                return
            try:
                with duckdb.connect(":memory:") as con:
                    con.execute(f"INSTALL '{source}'")
            except duckdb.Error as exc2:
                raise SpatialExtensionError(
                    f"cannot install DuckDB's spatial extension from {source}: {exc2}"
                ) from exc2
        _log.info("installed DuckDB spatial extension from %s", source)
    if not _spatial_installed(duckdb):
        raise SpatialExtensionError(f"spatial still not installed after INSTALL '{source}'")


def emulator_settings(host: str, port: int, grpc_port: int, state_dir: Path, project: str):  # type: ignore[no-untyped-def]
    """bqemulator's settings for the local cloud: loopback, persistent, no network."""
    from bqemulator.config import LogFormat, LogLevel, PersistenceMode, Settings

    data_dir = state_dir / "bigquery"
    return Settings(
        rest_host=host,
        rest_port=port,
        grpc_host=host,
        grpc_port=grpc_port,
        persistence_mode=PersistenceMode.PERSISTENT,
        data_dir=data_dir,
        default_project_id=project,
        upload_staging_dir=data_dir / "uploads",
        # Where the local GCS server keeps object `name` of bucket `b` as a plain
        # file (`gcs_server.py`): load jobs read gs://b/name from there.
        gcs_local_root=gcs_root(state_dir),
        enable_format_extensions=False,
        log_level=LogLevel.INFO,
        log_format=LogFormat.JSON,
        metrics_enabled=False,
        admin_enabled=False,
    )


def serve(
    host: str, port: int, grpc_port: int, state_dir: Path, project: str, owner: str | None = None
) -> None:
    """Install the spatial extension if needed, then run bqemulator until SIGTERM/SIGINT."""
    state_dir.mkdir(parents=True, exist_ok=True)
    ensure_spatial_extension(state_dir / "duckdb-home")
    from bqemulator.server import run_forever

    settings = emulator_settings(host, port, grpc_port, state_dir, project)
    for folder in (settings.data_dir, settings.upload_staging_dir, settings.gcs_local_root):
        folder.mkdir(parents=True, exist_ok=True)
    _log.info(
        "bqemulator serving on http://%s:%s (gRPC %s, data %s)",
        host,
        port,
        grpc_port,
        settings.data_dir,
    )
    exit_with_owner(owner)
    run_forever(settings)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--owner", help="pid:start_ticks of a process whose exit stops us")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        serve(
            args.host,
            args.port,
            args.grpc_port,
            args.state_dir.resolve(),
            args.project,
            args.owner,
        )
    except SpatialExtensionError as exc:
        _log.error("%s", exc)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
