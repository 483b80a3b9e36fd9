"""Where the embedded local cloud lives: its state folder, ports and fake credentials.

Everything here is static (known before the cloud runs), so resources can be
configured when the definitions load and the cloud started lazily when a run
first needs it. Tests point `EXPORT_PIPELINE_LOCAL_DIR` and the port
variables elsewhere to get a private cloud.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

STATE_DIR_ENV = "EXPORT_PIPELINE_LOCAL_DIR"
AWS_PORT_ENV = "EXPORT_PIPELINE_LOCAL_AWS_PORT"
BIGQUERY_PORT_ENV = "EXPORT_PIPELINE_LOCAL_BIGQUERY_PORT"
BIGQUERY_GRPC_PORT_ENV = "EXPORT_PIPELINE_LOCAL_BIGQUERY_GRPC_PORT"
GCS_PORT_ENV = "EXPORT_PIPELINE_LOCAL_GCS_PORT"
# `enforce`: the AWS server checks every call against the caller's IAM policies
# (`iam_enforcement.py`); anything else (the default): it checks nothing.
IAM_ENV = "EXPORT_PIPELINE_LOCAL_IAM"
ENFORCE = "enforce"

# Fake credentials: distinctive so that a test can scan logs and metadata for
# them (they must never appear there, exactly like real secrets).
LOCAL_AWS_ACCESS_KEY_ID = "AKIALOCALCLOUD0FAKE1"
LOCAL_AWS_SECRET_ACCESS_KEY = "localcloud/FAKE+secret+never+log+this+0001"
LOCAL_ACCOUNT_ID = "123456789012"  # moto's default account
LOCAL_BIGQUERY_PROJECT = "export-pipeline-local"
# `.local_cloud/` in the checkout's root (beside pipeline.yaml), like `.venv/`.
DEFAULT_STATE_DIR = Path(__file__).resolve().parents[2] / ".local_cloud"


@dataclass(frozen=True)
class LocalCloudSettings:
    state_dir: Path
    aws_port: int = 4566
    bigquery_port: int = 9050
    bigquery_grpc_port: int = 9060
    gcs_port: int = 4443
    host: str = "127.0.0.1"
    bigquery_project: str = LOCAL_BIGQUERY_PROJECT
    aws_access_key_id: str = LOCAL_AWS_ACCESS_KEY_ID
    aws_secret_access_key: str = LOCAL_AWS_SECRET_ACCESS_KEY
    # Checked when the AWS server starts; a running server keeps its mode until `down`.
    enforce_iam: bool = False

    @property
    def aws_endpoint_url(self) -> str:
        return f"http://{self.host}:{self.aws_port}"

    @property
    def bigquery_api_endpoint(self) -> str:
        return f"http://{self.host}:{self.bigquery_port}"

    @property
    def gcs_endpoint(self) -> str:
        """The local GCS JSON API root (what STORAGE_EMULATOR_HOST would name)."""
        return f"http://{self.host}:{self.gcs_port}"

    @property
    def gcs_root(self) -> Path:
        return gcs_root(self.state_dir)

    @classmethod
    def from_env(cls) -> LocalCloudSettings:
        """Settings from the environment, defaulting to `<repo>/.local_cloud` and fixed ports."""
        return cls(
            state_dir=Path(os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR),
            aws_port=int(os.environ.get(AWS_PORT_ENV) or 4566),
            bigquery_port=int(os.environ.get(BIGQUERY_PORT_ENV) or 9050),
            bigquery_grpc_port=int(os.environ.get(BIGQUERY_GRPC_PORT_ENV) or 9060),
            gcs_port=int(os.environ.get(GCS_PORT_ENV) or 4443),
            enforce_iam=os.environ.get(IAM_ENV, "").strip().lower() == ENFORCE,
        )


def gcs_root(state_dir: Path) -> Path:
    """Where the local GCS server stores object `name` of bucket `b`: `<root>/b/name`.

    bqemulator resolves `gs://b/name` under the same folder (its
    BQEMU_GCS_LOCAL_ROOT), so its load jobs read what the pipeline uploaded.
    """
    return state_dir / "gcs"
