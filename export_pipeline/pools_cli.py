"""`export-pipeline pools`: the graph's concurrency pools, and creating them up front.

    export-pipeline pools          # list the pools of the configured graph
    export-pipeline pools --set    # create each on the Dagster instance ($DAGSTER_HOME)

Why: every BigQuery table and every export source has a pool with limit 1
(`deploy/dagster.yaml`: `pools: default_limit: 1`), so loads into one table
never overlap. Dagster creates a pool's slots the first time a step uses it,
and two runs whose steps start at the same instant on a pool that does not
exist yet can both create a slot and both run (Dagster's first-use
initialisation is not serialised on SQLite). Creating the pools at deploy,
and again after adding a table, closes that window. Re-running is harmless.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from export_pipeline.config import PipelineConfig
from export_pipeline.registry import configured_sources

DEFAULT_LIMIT = 1  # as deploy/dagster.yaml; the instance's own default_limit wins


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `pools` subcommand (called by export_pipeline.cli)."""
    parser = subparsers.add_parser(
        "pools",
        help="list the graph's concurrency pools; --set creates them on the Dagster instance",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--set", action="store_true", help="create every pool with its limit on $DAGSTER_HOME"
    )
    parser.set_defaults(func=run)


def pool_names(config: PipelineConfig) -> list[str]:
    """The pools of the graph built from `config`, in definition order, each once."""
    pools = [
        pool
        for source in configured_sources(config)
        for unit in source.units()
        for pool in (unit.pool, *(table.pool for table in unit.tables))
    ]
    return list(dict.fromkeys(pools))


def set_pools(instance: Any, pools: list[str]) -> int:
    """Create each pool with the instance's default limit (else 1); returns that limit."""
    limit = instance.global_op_concurrency_default_limit or DEFAULT_LIMIT
    for pool in pools:
        instance.event_log_storage.set_concurrency_slots(pool, limit)
    return limit


def run(args: argparse.Namespace) -> int:
    from export_pipeline.config import current_config

    pools = pool_names(current_config())
    if not args.set:
        print("\n".join(pools))
        return 0
    from dagster import DagsterInstance
    from dagster._core.errors import DagsterHomeNotSetError

    try:
        instance = DagsterInstance.get()
    except DagsterHomeNotSetError:
        print("error: set DAGSTER_HOME to the Dagster instance's folder", file=sys.stderr)
        return 2
    with instance:
        limit = set_pools(instance, pools)
    for pool in pools:
        print(f"{pool}: limit {limit}")
    return 0
