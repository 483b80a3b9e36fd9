"""RDS and Aurora PostgreSQL as a source: the RDS source with PostgreSQL's engine.

Everything an RDS export does is shared with MySQL (`export_pipeline.rds`:
snapshot choice, export task identifiers, reuse of running exports, waits,
the new-snapshot sensors, reading the export, the atomic BigQuery load and
the reload path). What is PostgreSQL's own is its `Engine`
(`export_pipeline.postgres.engine`): the accepted AWS engines (`postgres`,
`aurora-postgresql`) and the column types (`export_pipeline.postgres.types`).

Its units are the configured instances and clusters whose `engine` is
`postgres` (or whose export_only names `database.schema.table`); each such
table is one BigQuery table `rds_<database>_<schema>_<table>`.
"""

from __future__ import annotations

from export_pipeline.postgres.engine import POSTGRES
from export_pipeline.rds.source import RdsSource


class PostgresSource(RdsSource):
    """RDS instances and Aurora clusters (PostgreSQL), exported with StartExportTask."""

    kind = "rds_postgres"
    title = "RDS PostgreSQL snapshots"
    code_version = "rds-postgres-1"
    engine = POSTGRES
