"""What differs between the database engines an RDS snapshot export can hold.

Snapshot choice, export task identifiers, reuse, waits, sensors, reading the
export's files and the BigQuery load are the same for every engine
(`export_pipeline.rds`). What is the engine's own is gathered in one `Engine`:
its name, the AWS `Engine` values that belong to it, and its column types
(`<engine folder>/types.py`: original type → BigQuery type and SQL). MySQL's
is `MYSQL` here; PostgreSQL's is `export_pipeline.postgres.engine.POSTGRES`.

The engine a configuration names (or implies, `RdsInstanceConfig.engine_family`)
is checked against what AWS reports for the instance or cluster before an
export is started, so a PostgreSQL database is never loaded with MySQL's types.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from botocore.exceptions import ClientError

from export_pipeline.config import ENGINE_FAMILIES, RdsInstanceConfig
from export_pipeline.errors import PermanentError
from export_pipeline.rds import types as mysql_types
from export_pipeline.rds.parquet_types import type_disagreement as mysql_type_disagreement


class EngineMismatchError(PermanentError):
    """The configured engine is not the one AWS reports; the message says what to set."""


class ColumnMapping(Protocol):
    """One column's typing, as the loader uses it (each engine's `types.ColumnMapping`)."""

    source_name: str
    staging_type: str
    target_type: str

    @property
    def original_type(self) -> str: ...

    @property
    def fallible(self) -> bool:
        """Whether some value may not fit the target type (then counted, kept in `__raw`)."""

    @property
    def raw_type(self) -> str: ...

    @property
    def whole_column_text(self) -> bool:
        """Whether one value that does not fit turns the whole column into exact text."""

    @property
    def mode(self) -> str:
        """NULLABLE, or REPEATED for an ARRAY column (which BigQuery cannot make NULL)."""

    @property
    def fallback(self) -> Any:
        """The mapping the whole column takes when some value does not fit this one, or None."""


@dataclass(frozen=True)
class Engine:
    """An engine family's own rules; see the module docstring."""

    family: str  # the configuration's `engine`: "mysql", "postgres"
    name: str  # in descriptions and messages: "MySQL"
    map_column: Callable[[str, str, str], Any]  # (name, originalType, staging type) → mapping
    typed_expression: Callable[[Any, str], str]  # (mapping, staging column SQL) → typed SQL
    expected_staging_type: Callable[[str], str]  # originalType → staging type without Parquet
    # (mapping, staging column SQL) → a condition true exactly where the typed value
    # is not NULL, cheaper to count than the typed value itself; None: test that.
    fits_expression: Callable[[Any, str], str | None] | None = None
    # (column, originalType, Parquet type) → why the file's type is not the one AWS
    # writes for that originalType, or None; None: not checked for this engine.
    type_disagreement: Callable[[str, str, Any], str | None] | None = None

    @property
    def aws_engines(self) -> frozenset[str]:
        return ENGINE_FAMILIES[self.family]

    def fits(self, mapping: Any, column_sql: str) -> str:
        """SQL true where a non-NULL staging value has a typed value (for counting misfits)."""
        cheaper = self.fits_expression(mapping, column_sql) if self.fits_expression else None
        return cheaper or f"({self.typed_expression(mapping, column_sql)}) IS NOT NULL"


MYSQL = Engine(
    family="mysql",
    name="MySQL",
    map_column=mysql_types.map_column,
    typed_expression=mysql_types.typed_expression,
    expected_staging_type=mysql_types.expected_staging_type,
    type_disagreement=mysql_type_disagreement,
)


def reported_engine(rds: Any, source: RdsInstanceConfig) -> str:
    """The `Engine` DescribeDBInstances / DescribeDBClusters reports for the source."""
    try:
        if source.kind == "cluster":
            found = rds.describe_db_clusters(DBClusterIdentifier=source.identifier)["DBClusters"]
        else:
            found = rds.describe_db_instances(DBInstanceIdentifier=source.identifier)["DBInstances"]
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise EngineMismatchError(
            f"rds.instances[{source.identifier}]: cannot describe {source.kind} "
            f"{source.identifier!r} ({code}); check identifier and kind"
        ) from None
    if not found:
        raise EngineMismatchError(
            f"rds.instances[{source.identifier}]: no {source.kind} {source.identifier!r}"
        )
    return str(found[0].get("Engine", ""))


def check_engine(rds: Any, source: RdsInstanceConfig, engine: Engine) -> str:
    """AWS's engine for the source; an error naming the field when it is not `engine`'s."""
    reported = reported_engine(rds, source)
    if reported.lower() not in engine.aws_engines:
        family = next((f for f, names in ENGINE_FAMILIES.items() if reported in names), None)
        fix = (
            f"set engine: {family} (and export_only in its form)"
            if family
            else "this engine's snapshot exports are not supported"
        )
        raise EngineMismatchError(
            f"rds.instances[{source.identifier}].engine: configured as {engine.family} but AWS "
            f"reports Engine {reported!r} for {source.kind} {source.identifier}; {fix}"
        )
    return reported
