"""The embedded local cloud as the pipeline sees it: the one module it imports of it.

Everything else in `export_pipeline.local_cloud` is the cloud's inside (the
servers, the export emulations, the demo data). The pipeline's CLI, its
environment choice and its `cloud` resource reach the cloud only through
these names, so what the pipeline depends on is visible in one place.
"""

from __future__ import annotations

from export_pipeline.local_cloud._process import LocalCloudError
from export_pipeline.local_cloud.control import (
    FRESH_START_LINE,
    LocalCloudStatus,
    bigquery_client,
    down,
    ensure_running,
    gcs_client,
    mutate,
    pass_time,
    status,
    up,
)
from export_pipeline.local_cloud.principals import create_policy_bound_user, kms_key_arns
from export_pipeline.local_cloud.settings import LOCAL_ACCOUNT_ID, LocalCloudSettings

__all__ = [
    "FRESH_START_LINE",
    "LOCAL_ACCOUNT_ID",
    "LocalCloudError",
    "LocalCloudSettings",
    "LocalCloudStatus",
    "bigquery_client",
    "create_policy_bound_user",
    "down",
    "ensure_running",
    "gcs_client",
    "kms_key_arns",
    "mutate",
    "pass_time",
    "status",
    "up",
]
