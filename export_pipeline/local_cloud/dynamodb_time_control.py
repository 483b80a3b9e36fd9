"""Client of the local cloud's DynamoDB time control (tests and demos only).

Point-in-time exports need history: an incremental window is at least 15
minutes and must start after PITR was enabled. Rather than waiting, tests and
the demo ask the local AWS server to move a table's recorded past (change log,
PITR enable time, creation time) back by N seconds. The server side is
`dynamodb_exports.control_routes()`; there is no such thing on AWS, so the
pipeline never calls this module.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from export_pipeline.local_cloud.dynamodb_exports import CHANGE_LOG_PATH, SHIFT_HISTORY_PATH


class TimeControlError(RuntimeError):
    """The local cloud refused or could not answer a time-control request."""


def _post(endpoint_url: str, path: str, payload: dict[str, Any]) -> dict[str, Any]:
    data = json.dumps(payload).encode("utf-8")
    request = urllib.request.Request(
        endpoint_url.rstrip("/") + path,
        data=data,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")
        raise TimeControlError(f"{path} on {endpoint_url}: HTTP {exc.code}: {detail}") from None


def shift_history(
    endpoint_url: str,
    table_name: str,
    seconds: float,
    region: str,
    account_id: str | None = None,
) -> dict[str, Any]:
    """Move everything recorded about `table_name` `seconds` into the past."""
    payload: dict[str, Any] = {"TableName": table_name, "Seconds": seconds, "Region": region}
    if account_id:
        payload["AccountId"] = account_id
    return _post(endpoint_url, SHIFT_HISTORY_PATH, payload)


def change_log(
    endpoint_url: str, table_name: str, region: str, account_id: str | None = None
) -> list[dict[str, Any]]:
    """The server's change log of `table_name`: one dict per committed item write."""
    payload: dict[str, Any] = {"TableName": table_name, "Region": region}
    if account_id:
        payload["AccountId"] = account_id
    return _post(endpoint_url, CHANGE_LOG_PATH, payload)["Entries"]
