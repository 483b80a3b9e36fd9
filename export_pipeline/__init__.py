"""export_pipeline: AWS DynamoDB and RDS (MySQL) data kept in step in Google BigQuery.

`dagster job execute -m export_pipeline -j aws_to_bigquery` finds the
definitions through `defs` below. It is loaded lazily so that importing a
submodule (the local cloud's server processes, the CLI) neither pulls in
every asset nor needs a valid `pipeline.yaml`.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "defs":
        from export_pipeline.definitions import defs

        return defs
    raise AttributeError(f"module 'export_pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "defs"])
