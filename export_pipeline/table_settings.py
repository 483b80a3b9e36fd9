"""Per-table settings a data team governs: layout, personal data, deletes, schema changes.

Each DynamoDB table entry and each RDS table (`rds.instances[].tables`) takes
the same settings, so a rule such as "hash this column" or "keep deletes as
history" reads the same for every source. They are validated with the rest
of `pipeline.yaml`: an error names the file, the table and the field.

Why these shapes:
- BigQuery allows one partitioning spec per table (a column with a
  granularity, ingestion time, or an integer range) and at most four
  clustering columns; labels and policy tags follow BigQuery's own naming
  rules, checked here so a typo fails before any export is paid for.
- `columns` names source columns (DynamoDB attribute names, RDS column names)
  as the source spells them, because that is the name a data team knows.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

HASH_KEY_ENV_VAR = "EXPORT_PIPELINE_HASH_KEY"
MAX_CLUSTERING_COLUMNS = 4

_LABEL_KEY = re.compile(r"^[\w\-]{1,63}$", re.UNICODE)
_LABEL_VALUE = re.compile(r"^[\w\-]{0,63}$", re.UNICODE)
_KMS_KEY_NAME = re.compile(
    r"^projects/[^/\s]+/locations/[^/\s]+/keyRings/[^/\s]+/cryptoKeys/[^/\s]+$"
)
_POLICY_TAG = re.compile(
    r"^projects/[^/\s]+/locations/[^/\s]+/taxonomies/[^/\s]+/policyTags/[^/\s]+$"
)
_ENV_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class StrictModel(BaseModel):
    """Unknown keys are errors: a misspelt option must not be ignored silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DeletesMode(StrEnum):
    """What a row deleted at the source becomes in BigQuery."""

    HARD = "hard"
    SOFT = "soft"
    HISTORY = "history"


class SchemaChanges(StrEnum):
    """Which source schema changes a load may publish."""

    ALLOW = "allow"
    ALLOW_COLUMNS = "allow_columns"
    BLOCK = "block"


class ColumnTreatment(StrEnum):
    """What happens to one personal-data column before it leaves the worker."""

    EXCLUDE = "exclude"
    HASH = "hash"


class Granularity(StrEnum):
    HOUR = "HOUR"
    DAY = "DAY"
    MONTH = "MONTH"
    YEAR = "YEAR"


class IntegerRange(StrictModel):
    column: str = Field(description="INT64 column to partition on.")
    start: int = Field(description="Start of the first partition (inclusive).")
    end: int = Field(description="End of the last partition (exclusive).")
    interval: int = Field(gt=0, description="Width of each partition.")

    @model_validator(mode="after")
    def _ordered(self) -> IntegerRange:
        if self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be greater than start ({self.start})")
        if (self.end - self.start) // self.interval > 10_000:
            raise ValueError("more than 10,000 partitions: BigQuery's limit per table")
        return self


class Partitioning(StrictModel):
    """Exactly one of: a column with a granularity, ingestion time, an integer range."""

    column: str | None = Field(default=None, description="DATE, DATETIME or TIMESTAMP column.")
    granularity: Granularity | None = Field(
        default=None, description="HOUR, DAY, MONTH or YEAR (with `column`; default DAY)."
    )
    ingestion: Granularity | None = Field(
        default=None, description="Partition by ingestion time at this granularity."
    )
    integer_range: IntegerRange | None = Field(default=None)

    @model_validator(mode="after")
    def _one_kind(self) -> Partitioning:
        kinds = [k for k in ("column", "ingestion", "integer_range") if getattr(self, k)]
        if len(kinds) != 1:
            raise ValueError(
                "expected exactly one of {column, granularity}, {ingestion} or "
                f"{{integer_range}}, got {kinds or 'none'}"
            )
        if self.granularity is not None and self.column is None:
            raise ValueError("granularity goes with column")
        return self

    @property
    def column_name(self) -> str | None:
        """The partitioning column, if the table is partitioned on one."""
        if self.integer_range is not None:
            return self.integer_range.column
        return self.column


class BigQueryTableSettings(StrictModel):
    partition: Partitioning | None = Field(default=None)
    cluster_by: list[str] | None = Field(
        default=None,
        description="Clustering columns (at most 4). Default: the DynamoDB key schema, or "
        "the RDS table's `key` when given.",
    )
    labels: dict[str, str] = Field(default_factory=dict)
    kms_key_name: str | None = Field(
        default=None, description="Cloud KMS key that encrypts the table and its jobs' output."
    )
    policy_tags: dict[str, str] = Field(
        default_factory=dict, description="Column name -> Data Catalog policy tag."
    )
    require_partition_filter: bool = Field(default=False)
    partition_expiration_days: float | None = Field(default=None, gt=0)

    @field_validator("cluster_by")
    @classmethod
    def _cluster_by(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not 1 <= len(value) <= MAX_CLUSTERING_COLUMNS:
            raise ValueError(
                f"expected 1 to {MAX_CLUSTERING_COLUMNS} clustering columns, got {len(value)}"
            )
        if len({v.lower() for v in value}) != len(value):
            raise ValueError("a clustering column is listed twice")
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, label in value.items():
            if not _LABEL_KEY.fullmatch(key) or key != key.lower() or not key[0].isalpha():
                raise ValueError(
                    f"label key {key!r}: expected a lower-case letter, then up to 62 lower-case "
                    "letters, digits, _ or -"
                )
            if (
                not isinstance(label, str)
                or not _LABEL_VALUE.fullmatch(label)
                or label != label.lower()
            ):
                raise ValueError(
                    f"label {key}={label!r}: expected up to 63 lower-case letters, digits, _ or -"
                )
        return value

    @field_validator("kms_key_name")
    @classmethod
    def _kms(cls, value: str | None) -> str | None:
        if value is not None and not _KMS_KEY_NAME.fullmatch(value):
            raise ValueError(
                f"expected projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>, got {value!r}"
            )
        return value

    @field_validator("policy_tags")
    @classmethod
    def _policy_tags(cls, value: dict[str, str]) -> dict[str, str]:
        for column, tag in value.items():
            if not _POLICY_TAG.fullmatch(tag):
                raise ValueError(
                    f"policy tag of {column!r}: expected projects/<p>/locations/<l>/"
                    f"taxonomies/<t>/policyTags/<x>, got {tag!r}"
                )
        return value

    @model_validator(mode="after")
    def _partition_options(self) -> BigQueryTableSettings:
        if self.partition is None and (
            self.require_partition_filter or self.partition_expiration_days is not None
        ):
            raise ValueError(
                "require_partition_filter and partition_expiration_days need a partition"
            )
        return self


class TableSettings(StrictModel):
    """The governed settings shared by every source's tables."""

    deletes: DeletesMode = Field(
        default=DeletesMode.HARD,
        description="'hard': deleted rows are removed. 'soft': they stay with _deleted_at set; "
        "a row that comes back clears it. 'history': also a <table>_history table with every "
        "version (_valid_from, _valid_to, _is_current, _deleted_at).",
    )
    schema_changes: SchemaChanges = Field(
        default=SchemaChanges.ALLOW,
        description="'allow': columns are added and widened. 'allow_columns': only added; a "
        "type change or a removed column fails the load before publishing. 'block': any change "
        "fails the load before publishing.",
    )
    columns: dict[str, ColumnTreatment] = Field(
        default_factory=dict,
        description="Source column (DynamoDB attribute) -> 'exclude' (never reaches BigQuery) "
        "or 'hash' (HMAC-SHA256, keyed by the hash key, computed on the worker).",
    )
    bigquery: BigQueryTableSettings = Field(default_factory=BigQueryTableSettings)

    @field_validator("columns")
    @classmethod
    def _columns(cls, value: dict[str, ColumnTreatment]) -> dict[str, ColumnTreatment]:
        for name in value:
            if not name:
                raise ValueError("an empty column name")
        return value

    @property
    def hashed_columns(self) -> list[str]:
        return [c for c, t in self.columns.items() if t is ColumnTreatment.HASH]

    @property
    def excluded_columns(self) -> list[str]:
        return [c for c, t in self.columns.items() if t is ColumnTreatment.EXCLUDE]


class RdsTableSettings(TableSettings):
    """An RDS table's settings: a snapshot export carries no primary key, so it is configured."""

    key: Annotated[list[str] | None, Field(min_length=1)] = Field(
        default=None,
        description="The table's primary key columns: needed by soft and history deletes, and "
        "the default clustering.",
    )

    @model_validator(mode="after")
    def _key_for_deletes(self) -> RdsTableSettings:
        if self.deletes is not DeletesMode.HARD and not self.key:
            raise ValueError(
                f"deletes: {self.deletes.value} needs key (the columns that identify a row)"
            )
        return self

    @property
    def cluster_by(self) -> list[str] | None:
        """Clustering columns: configured, else the key (at most the first four)."""
        if self.bigquery.cluster_by is not None:
            return self.bigquery.cluster_by
        return self.key[:MAX_CLUSTERING_COLUMNS] if self.key else None


class HashKeySettings(StrictModel):
    """Where the secret that keys column hashing comes from (never the file itself)."""

    env_var: str = Field(
        default=HASH_KEY_ENV_VAR,
        description="Environment variable that holds the HMAC key of hashed columns.",
    )

    @field_validator("env_var")
    @classmethod
    def _env_var(cls, value: str) -> str:
        if not _ENV_VAR_NAME.fullmatch(value):
            raise ValueError(f"expected an environment variable name, got {value!r}")
        return value
