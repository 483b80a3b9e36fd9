"""Deleted source rows kept in BigQuery: `deletes: soft` and `deletes: history`.

`soft`: a row the source deleted stays in the table with `_deleted_at` (TIMESTAMP)
set to when the deletion was seen; a row that comes back clears it (NULL). A row
deleted earlier keeps its first `_deleted_at` on later loads.

`history`: the table behaves as `soft`, and `<table>_history` (`history`) keeps
every version of every row. The current table stays `soft` rather than `hard`
so that `history` is `soft` plus a table: switching between the two never drops
rows, and "what was deleted, and when" is answered without reading the history.

Which time is the deletion's:
- a full load (RDS snapshot, DynamoDB full export, the seed of an incremental
  table): the time of the export that no longer holds the row (`as_of`);
- a DynamoDB incremental load: the change's own time, `change_time` (SQL over
  the staging table, from Metadata.WriteTimestampMicros); where a change has
  no time of its own, `as_of`.

Both ways run inside the transaction that publishes the load (`publish`):
a full load becomes `DELETE` of the rows whose key the load holds, `UPDATE`
of the rest (`_deleted_at` set where still NULL), `INSERT` of the load,
instead of one `CREATE OR REPLACE TABLE`, which BigQuery does not allow in a
transaction; an incremental load is two MERGEs (each key's latest upsert,
then each key whose latest change is a delete gets `_deleted_at`) instead of
one that deletes (`merge_statements`). The key (`key_columns`) must identify
one row of a load: a load that holds a key twice fails the transaction with
the key named.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from google.cloud import bigquery
from google.cloud.bigquery import SchemaField

from export_pipeline.bigquery import history
from export_pipeline.bigquery.evolve import Convert, Widen
from export_pipeline.bigquery.sql import string_literal
from export_pipeline.bigquery.tables import TableId
from export_pipeline.bigquery.watermark import Statement, timestamp_literal
from export_pipeline.naming import quote_identifier
from export_pipeline.table_settings import DeletesMode

DELETED_AT = history.DELETED_AT
DELETED_AT_FIELD = SchemaField(
    DELETED_AT,
    "TIMESTAMP",
    description="When the source deleted this row (NULL: the source holds it). Set by the "
    "first load that saw the deletion; cleared when the row comes back.",
)
# Columns of the MERGE sources (`merge_statements`).
CHANGE_TIME = "__export_pipeline_change_time"
DELETED = "__export_pipeline_deleted"
DUPLICATE_KEY_MARKER = "export_pipeline duplicate key"


@dataclass(frozen=True)
class KeptDeletes:
    """How a `soft` or `history` table keeps what the source deleted.

    - `key_columns`: target columns that identify a row (RDS: `key` from the
      settings; DynamoDB: the key schema's columns).
    - `as_of`: the time of the export being loaded (aware).
    - `change_time`: SQL over the staging table giving each change's TIMESTAMP
      (incremental loads); None: every change is at `as_of`.
    - `bookkeeping_columns`: pipeline columns that are not part of a row's
      value (e.g. `_exported_at`): never compared, never versioned.
    """

    mode: DeletesMode
    key_columns: tuple[str, ...]
    as_of: dt.datetime
    change_time: str | None = None
    bookkeeping_columns: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.mode is DeletesMode.HARD:
            raise ValueError("KeptDeletes is for soft and history deletes, not hard")
        if not self.key_columns:
            raise ValueError(f"deletes: {self.mode.value} needs key columns")
        if self.as_of.tzinfo is None:
            raise ValueError("KeptDeletes.as_of must be timezone-aware")
        for name in self.key_columns:
            quote_identifier(name)  # validates

    @property
    def keeps_history(self) -> bool:
        return self.mode is DeletesMode.HISTORY

    @property
    def change_time_sql(self) -> str:
        """Each change's TIMESTAMP, over staging columns; `as_of` where it has none."""
        as_of = timestamp_literal(self.as_of)
        if self.change_time is None:
            return as_of
        return f"COALESCE({self.change_time}, {as_of})"

    def _unversioned(self) -> set[str]:
        return {c.lower() for c in (*self.bookkeeping_columns, DELETED_AT)}

    def _key_check(self, target: TableId, staging: TableId, key_sql: Sequence[str]) -> Statement:
        """Abort the transaction if the load holds a key twice (soft deletes need one row each)."""
        keys = ", ".join(key_sql)
        message = string_literal(
            f"{DUPLICATE_KEY_MARKER}: the load of {target.dotted} holds a key "
            f"({', '.join(self.key_columns)}) more than once; the configured key must identify "
            "one row"
        )
        return Statement(
            f"SELECT IF(EXISTS(SELECT 1 FROM {staging.sql} GROUP BY {keys} HAVING COUNT(*) > 1), "
            f"ERROR({message}), 0)"
        )

    def replace_statements(
        self,
        client: bigquery.Client,
        *,
        target: TableId,
        staging: TableId,
        pairs: Sequence[tuple[str, str]],
        widen: Widen,
        convert: Convert,
        job_labels: dict[str, str] | None,
    ) -> list[Statement]:
        """The statements making `target` the load in `staging`, deleted rows kept.

        `pairs`: (quoted target column, SQL over staging typed as the target
        column), as `publish` builds them; they include `_deleted_at` (NULL).
        Prepares the history table first (outside the transaction) when kept.
        """
        by_name = {name.strip("`").lower(): sql for name, sql in pairs}
        key_sql = [by_name[k.lower()] for k in self.key_columns]
        quoted_keys = [quote_identifier(k) for k in self.key_columns]
        loaded_keys = ", ".join(
            f"{sql} AS {k}" for sql, k in zip(key_sql, quoted_keys, strict=True)
        )
        match = " AND ".join(f"n.{k} = t.{k}" for k in quoted_keys)
        statements = [self._key_check(target, staging, key_sql)]
        if self.keeps_history:
            statements += history.snapshot_statements(
                client,
                target=target,
                staging=staging,
                pairs=pairs,
                key_columns=self.key_columns,
                as_of=self.as_of,
                unversioned=self._unversioned(),
                widen=widen,
                convert=convert,
                job_labels=job_labels,
            )
        statements += [
            Statement(
                f"DELETE FROM {target.sql} AS t WHERE EXISTS (SELECT 1 FROM "
                f"(SELECT {loaded_keys} FROM {staging.sql}) AS n WHERE {match})"
            ),
            # Every row left is one the load does not hold: deleted as of this export,
            # unless an earlier load saw it deleted already.
            Statement(
                f"UPDATE {target.sql} SET {quote_identifier(DELETED_AT)} = "
                f"{timestamp_literal(self.as_of)} WHERE {quote_identifier(DELETED_AT)} IS NULL"
            ),
            Statement(
                f"INSERT INTO {target.sql} ({', '.join(name for name, _ in pairs)}) "
                f"SELECT {', '.join(sql for _, sql in pairs)} FROM {staging.sql}"
            ),
        ]
        return statements

    def merge_statements(
        self,
        client: bigquery.Client,
        *,
        target: TableId,
        staging: TableId,
        pairs: Sequence[tuple[str, str]],
        key_columns: Sequence[str],
        partition: str,
        order_column: str,
        deleted_sql: str,
        widen: Widen,
        convert: Convert,
        job_labels: dict[str, str] | None,
        prune: str = "",
    ) -> list[Statement]:
        """The statements applying incremental changes with deleted rows kept.

        `pairs` as in `replace_statements` (with `_deleted_at`, NULL);
        `key_columns` quoted target names; `partition` the key as SQL over
        staging; `deleted_sql` BOOL over staging; `prune` a condition on the
        target (` AND t.<key> BETWEEN …`, `layout_sync.pruning_condition`)
        added to both MERGEs' match, so BigQuery can skip blocks. Two MERGEs: the latest
        upsert of each key first (its values, `_deleted_at` cleared), then
        each key whose latest change is a delete gets `_deleted_at` where
        it has none. So a key that came back and went again within one load
        (a chain of exports) holds its last values and the later deletion's
        time, and one deleted all along keeps its first.
        """
        statements: list[Statement] = []
        if self.keeps_history:
            statements += history.change_statements(
                client,
                target=target,
                staging=staging,
                pairs=pairs,
                key_columns=[k.strip("`") for k in key_columns],
                deleted_sql=deleted_sql,
                change_time_sql=self.change_time_sql,
                unversioned=self._unversioned(),
                widen=widen,
                convert=convert,
                job_labels=job_labels,
            )
        latest = (
            f"QUALIFY ROW_NUMBER() OVER (PARTITION BY {partition} "
            f"ORDER BY {quote_identifier(order_column)} DESC) = 1"
        )
        on = " AND ".join(f"t.{k} = s.{k}" for k in key_columns) + prune
        names = [name for name, _ in pairs]
        update = ", ".join(f"{n} = s.{n}" for n in names if n not in key_columns)
        upserts = (
            f"SELECT {', '.join(f'{sql} AS {name}' for name, sql in pairs)} "
            f"FROM {staging.sql} WHERE NOT {deleted_sql} {latest}"
        )
        statements.append(
            Statement(
                f"MERGE {target.sql} AS t USING ({upserts}) AS s ON {on} "
                f"WHEN MATCHED THEN UPDATE SET {update} "
                f"WHEN NOT MATCHED THEN INSERT ({', '.join(names)}) "
                f"VALUES ({', '.join(f's.{n}' for n in names)})"
            )
        )
        by_name = {name: sql for name, sql in pairs}
        keys = ", ".join(f"{by_name[k]} AS {k}" for k in key_columns)
        last_changes = (
            f"SELECT {keys}, {deleted_sql} AS {DELETED}, {self.change_time_sql} AS "
            f"{CHANGE_TIME} FROM {staging.sql} WHERE TRUE {latest}"
        )
        column = quote_identifier(DELETED_AT)
        statements.append(
            Statement(
                f"MERGE {target.sql} AS t USING (SELECT * FROM ({last_changes}) WHERE "
                f"{DELETED}) AS s ON {on} WHEN MATCHED THEN UPDATE SET "
                f"{column} = COALESCE(t.{column}, s.{CHANGE_TIME})"
            )
        )
        return statements


def live_rows_filter(schema: Sequence[SchemaField]) -> str:
    """SQL condition for the rows the source holds (every row if there is no `_deleted_at`)."""
    if any(f.name.lower() == DELETED_AT for f in schema):
        return f"{quote_identifier(DELETED_AT)} IS NULL"
    return "TRUE"


def count_live_rows(client: bigquery.Client, target: TableId) -> int:
    """Rows of `target` the source holds (soft-deleted rows not counted)."""
    schema = client.get_table(target.reference).schema
    rows = list(
        client.query(
            f"SELECT COUNT(*) AS n FROM {target.sql} WHERE {live_rows_filter(schema)}"
        ).result()
    )
    return int(rows[0]["n"])
