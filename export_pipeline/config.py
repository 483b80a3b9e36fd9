"""The pipeline's configuration: one YAML file that says what to move where.

The file is `pipeline.yaml` at the repository root unless the
`EXPORT_PIPELINE_CONFIG` environment variable names another. It is validated
on load so that a typo fails before any export is paid for, with a message
naming the file, the field and what was expected.
"""

from __future__ import annotations

import difflib
import os
import re
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from export_pipeline.s3_locations import S3Location, parse_s3_location
from export_pipeline.table_settings import (
    HashKeySettings,
    RdsTableSettings,
    StrictModel,
    TableSettings,
)

CONFIG_ENV_VAR = "EXPORT_PIPELINE_CONFIG"
ENVIRONMENT_ENV_VAR = "EXPORT_PIPELINE_ENV"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = REPO_ROOT / "pipeline.yaml"

# AWS resource names as the services accept them; checked here so that a
# name can never smuggle quotes, slashes or spaces into an S3 key or SQL.
_DYNAMODB_TABLE_NAME = re.compile(r"^[A-Za-z0-9_.\-]{3,255}$")
_RDS_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9\-]{0,62}$")
_MYSQL_NAME = re.compile(r"^[A-Za-z0-9_$]{1,64}$")
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_S3_PREFIX = re.compile(r"^[A-Za-z0-9!_.*'()\-/]*$")
_REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
_BQ_PROJECT = re.compile(r"^[a-z][a-z0-9\-]{4,28}[a-z0-9]$")
_BQ_DATASET = re.compile(r"^[A-Za-z0-9_]{1,1024}$")
# Google's bucket naming rules (names with dots are domain-verified: 3-222 characters).
_GCS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9_.\-]{1,220}[a-z0-9]$")
# Object-name characters the pipeline's own prefix may hold (no wildcards, no '..').
_GCS_PREFIX = re.compile(r"^[A-Za-z0-9_.\-/]*$")


class ConfigError(ValueError):
    """The configuration file is missing or invalid; the message says where and why."""


class Environment(StrEnum):
    LOCAL = "local"
    PRODUCTION = "production"


class AwsConfig(StrictModel):
    region: str = Field(description="AWS region of the tables, snapshots and export bucket.")
    export_bucket: str = Field(description="S3 bucket the exports are written to.")
    export_prefix: str = Field(
        default="exports", description="Key prefix under which every export is written."
    )
    account_id: str | None = Field(
        default=None, description="AWS account id; looked up with STS when not given."
    )
    readable_s3_locations: list[str] = Field(
        default_factory=list,
        description="Extra S3 locations ('s3://bucket' or 's3://bucket/prefix') the pipeline "
        "may read exports from: exports made outside the pipeline (a Lambda, the console) "
        "that land outside export_prefix. They are added to the rendered IAM policy.",
    )

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not _REGION.fullmatch(value):
            raise ValueError(f"expected an AWS region such as 'eu-west-1', got {value!r}")
        return value

    @field_validator("export_bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        if not _BUCKET_NAME.fullmatch(value) or ".." in value:
            raise ValueError(
                "expected an S3 bucket name (3-63 lower-case letters, digits, dots, hyphens), "
                f"got {value!r}"
            )
        return value

    @field_validator("readable_s3_locations")
    @classmethod
    def _readable(cls, value: list[str]) -> list[str]:
        return [parse_s3_location(entry).uri for entry in value]

    def readable_locations(self, *own_prefixes: str) -> list[S3Location]:
        """Where exports may be read: `own_prefixes` under export_prefix, then the extra ones."""
        own = [
            S3Location(self.export_bucket, "/".join(p for p in (self.export_prefix, own) if p))
            for own in own_prefixes
        ]
        return own + [parse_s3_location(entry) for entry in self.readable_s3_locations]

    @field_validator("export_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.strip("/")
        if not _S3_PREFIX.fullmatch(value) or ".." in value.split("/"):
            raise ValueError(
                f"expected an S3 key prefix of letters, digits and !_.*'()-/ only, got {value!r}"
            )
        return value


class WaitMode(StrEnum):
    """How an export asset waits for its export (docs/operations.md, "Blocking vs sensor waits")."""

    BLOCKING = "blocking"
    SENSOR = "sensor"


_WAIT_DESCRIPTION = (
    "'blocking': the export asset waits for its export (small tables, CI). 'sensor': it only "
    "starts the export; export_completion_sensor requests the BigQuery load when it "
    "completes (large tables: no worker held for hours)."
)


class DynamoDBExportMode(StrEnum):
    FULL = "full"
    INCREMENTAL = "incremental"


class DynamoDBTableConfig(TableSettings):
    """One DynamoDB table: what to export, how, and the governed settings of its BigQuery table."""

    name: str = Field(description="DynamoDB table name.")
    mode: DynamoDBExportMode = Field(
        default=DynamoDBExportMode.FULL,
        description="'full': every run exports the whole table and replaces the BigQuery "
        "table. 'incremental': a full export seeds it, later runs apply the changes since "
        "the last export (deletes included) with a MERGE.",
    )
    wait: WaitMode = Field(default=WaitMode.BLOCKING, description=_WAIT_DESCRIPTION)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _DYNAMODB_TABLE_NAME.fullmatch(value):
            raise ValueError(
                f"expected a DynamoDB table name (3-255 of A-Z a-z 0-9 _ . -), got {value!r}"
            )
        return value


class DynamoDBConfig(StrictModel):
    tables: list[DynamoDBTableConfig] = Field(default_factory=list)
    export_timeout_minutes: float = Field(
        default=240, gt=0, description="How long to wait for one export before failing."
    )
    poll_max_interval_seconds: float = Field(
        default=60, gt=0, description="Upper bound of the backoff between DescribeExport calls."
    )
    max_parallel_files: int = Field(
        default=2,
        ge=1,
        description="Conversion workers: threads for full exports, processes for incremental ones.",
    )
    files_per_step: int = Field(
        default=2,
        ge=1,
        description="Data files of a full export per conversion step: the conversion runs "
        "as one Dagster step per group of this many files (docs/dynamodb.md, 'Conversion "
        "in steps').",
    )

    @model_validator(mode="after")
    def _unique(self) -> DynamoDBConfig:
        names = [t.name for t in self.tables]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"tables listed twice: {dupes}")
        return self


class SnapshotType(StrEnum):
    AUTOMATED = "automated"
    MANUAL = "manual"
    ANY = "any"


# RDS engine families and the AWS `Engine` values (DescribeDBInstances /
# DescribeDBClusters) that belong to each.
ENGINE_FAMILIES: dict[str, frozenset[str]] = {
    "mysql": frozenset({"mysql", "aurora-mysql", "aurora", "mariadb"}),
    "postgres": frozenset({"postgres", "aurora-postgresql"}),
}


def _engine_family(engine: str | None, export_only: list[str]) -> str:
    if engine is not None:
        return engine
    return "postgres" if any(e.count(".") == 2 for e in export_only) else "mysql"


class RdsInstanceConfig(StrictModel):
    identifier: str = Field(description="DB instance identifier or Aurora DB cluster identifier.")
    kind: Literal["instance", "cluster"] = Field(
        default="instance", description="'instance' for RDS, 'cluster' for Aurora."
    )
    engine: Literal["mysql", "postgres"] | None = Field(
        default=None,
        description="'mysql' (RDS/Aurora MySQL) or 'postgres' (RDS/Aurora PostgreSQL). The "
        "export asset reads the engine from DescribeDBInstances/DescribeDBClusters and fails "
        "when it disagrees. Unset: 'postgres' when an export_only entry has three parts "
        "(database.schema.table), else 'mysql'.",
    )
    export_only: list[str] = Field(
        description="What to export (StartExportTask's ExportOnly). MySQL: 'database.table', "
        "each one BigQuery table. PostgreSQL: 'database', 'database.schema' or "
        "'database.schema.table'; each 'database.schema.table' is one BigQuery table."
    )
    iam_role_arn: str = Field(description="Role that export.rds.amazonaws.com assumes.")
    kms_key_id: str = Field(description="KMS key (ARN or id) that encrypts the export.")
    snapshot_type: SnapshotType = Field(
        default=SnapshotType.ANY, description="Which snapshots count as the newest."
    )
    wait: WaitMode = Field(default=WaitMode.BLOCKING, description=_WAIT_DESCRIPTION)
    tables: dict[str, RdsTableSettings] = Field(
        default_factory=dict,
        description="Governed settings per loaded table, keyed as in export_only "
        "('database.table' or 'database.schema.table'): key, deletes, schema_changes, "
        "columns, bigquery. A table not listed takes the defaults.",
    )

    @field_validator("identifier")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _RDS_IDENTIFIER.fullmatch(value) or value.endswith("-") or "--" in value:
            raise ValueError(
                "expected an RDS identifier (a letter, then letters, digits, single hyphens; "
                f"at most 63), got {value!r}"
            )
        return value

    @field_validator("export_only")
    @classmethod
    def _export_only(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if not value:
            raise ValueError("expected at least one entry")
        for entry in value:
            parts = entry.split(".")
            if not 1 <= len(parts) <= 3 or not all(_MYSQL_NAME.fullmatch(p) for p in parts):
                raise ValueError(
                    "expected 'database.table' (MySQL) or 'database[.schema[.table]]' "
                    f"(PostgreSQL) with names of letters, digits, _ and $, got {entry!r}"
                )
        if len(set(value)) != len(value):
            raise ValueError("an entry is listed twice")
        family = _engine_family(info.data.get("engine"), value)
        for entry in value:
            if family == "mysql" and entry.count(".") != 1:
                raise ValueError(
                    f"{entry!r}: a MySQL source takes 'database.table' (set engine: postgres "
                    "for a PostgreSQL one)"
                )
        if family == "postgres" and not any(e.count(".") == 2 for e in value):
            raise ValueError(
                "no table named: add the tables to load into BigQuery as "
                "'database.schema.table' entries"
            )
        return value

    @field_validator("iam_role_arn")
    @classmethod
    def _role(cls, value: str) -> str:
        if not re.fullmatch(r"arn:aws[a-z\-]*:iam::\d{12}:role/[\w+=,.@/\-]+", value, re.ASCII):
            raise ValueError(f"expected an IAM role ARN, got {value!r}")
        return value

    @field_validator("kms_key_id")
    @classmethod
    def _kms(cls, value: str) -> str:
        if not re.fullmatch(r"[\w:/\-]+", value, re.ASCII):
            raise ValueError(f"expected a KMS key id, alias or ARN, got {value!r}")
        return value

    @model_validator(mode="after")
    def _settings_name_loaded_tables(self) -> RdsInstanceConfig:
        loaded = [".".join(parts) for parts in self.loaded_tables()]
        for name in self.tables:
            if name not in loaded:
                near = difflib.get_close_matches(name, loaded, n=1, cutoff=0.6)
                hint = f"did you mean {near[0]!r}? " if near else ""
                raise ValueError(
                    f"tables: {name!r} is not a table this instance loads; {hint}"
                    f"(loaded: {', '.join(loaded)})"
                )
        return self

    def table_settings(self, parts: tuple[str, ...]) -> RdsTableSettings:
        """The governed settings of one loaded table (defaults when not configured)."""
        return self.tables.get(".".join(parts)) or RdsTableSettings()

    @property
    def engine_family(self) -> str:
        """'mysql' or 'postgres': configured, or read from the shape of export_only."""
        return _engine_family(self.engine, self.export_only)

    def loaded_tables(self) -> list[tuple[str, ...]]:
        """The tables loaded into BigQuery, in configuration order, as name parts.

        MySQL: (database, table); PostgreSQL: (database, schema, table). Scopes
        broader than a table (PostgreSQL 'database', 'database.schema') are
        exported as configured but load nothing of their own.
        """
        wanted = 3 if self.engine_family == "postgres" else 2
        return [tuple(e.split(".")) for e in self.export_only if e.count(".") + 1 == wanted]


class RdsConfig(StrictModel):
    instances: list[RdsInstanceConfig] = Field(default_factory=list)
    adopt_foreign_exports: bool = Field(
        default=True,
        description="Use an export task of the same snapshot that was started outside the "
        "pipeline (running or complete) when its tables and S3 location fit, instead of "
        "starting (and paying for) a second one. false: always start the pipeline's own.",
    )
    export_timeout_minutes: float = Field(default=720, gt=0)
    poll_max_interval_seconds: float = Field(default=120, gt=0)

    @model_validator(mode="after")
    def _unique(self) -> RdsConfig:
        ids = [i.identifier for i in self.instances]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"instances listed twice: {dupes}")
        return self


class BigQueryConfig(StrictModel):
    project: str = Field(description="Google Cloud project that holds the dataset.")
    dataset: str = Field(default="aws_raw", description="Dataset the tables are written to.")
    location: str = Field(default="US", description="BigQuery location of the dataset and jobs.")
    hash_key: HashKeySettings = Field(
        default_factory=HashKeySettings,
        description="Where the HMAC key of columns configured as 'hash' is read from.",
    )

    @field_validator("project")
    @classmethod
    def _project(cls, value: str) -> str:
        if not _BQ_PROJECT.fullmatch(value):
            raise ValueError(f"expected a Google Cloud project id, got {value!r}")
        return value

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, value: str) -> str:
        if not _BQ_DATASET.fullmatch(value):
            raise ValueError(
                f"expected a BigQuery dataset name (letters, digits, underscores), got {value!r}"
            )
        return value


class GcsConfig(StrictModel):
    """Where Parquet is staged in Google Cloud Storage for BigQuery's load jobs."""

    staging_bucket: str = Field(
        description="GCS bucket the Parquet for BigQuery is staged in (same location as "
        "the dataset); staged objects are deleted after each table is published."
    )
    staging_prefix: str = Field(
        default="staging",
        description="Object-name prefix: objects go to <prefix>/<run>/<table>/<file>.",
    )

    @field_validator("staging_bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        if (
            not _GCS_BUCKET.fullmatch(value)
            or ".." in value
            or value.startswith("goog")
            or (len(value) > 63 and "." not in value)
        ):
            raise ValueError(
                "expected a GCS bucket name (3-63 lower-case letters, digits, hyphens, "
                f"underscores, dots; not starting with 'goog'), got {value!r}"
            )
        return value

    @field_validator("staging_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.strip("/")
        if not _GCS_PREFIX.fullmatch(value) or any(
            part in ("", ".", "..") for part in value.split("/") if value
        ):
            raise ValueError(
                "expected an object-name prefix of letters, digits and _.-/ (no empty, '.' or "
                f"'..' segments), got {value!r}"
            )
        return value


class ScheduleConfig(StrictModel):
    cron: str = Field(default="0 3 * * *", description="When the whole graph is refreshed.")
    timezone: str = Field(default="UTC", description="IANA timezone the cron is read in.")

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        from dagster._utils.schedules import is_valid_cron_string

        if not is_valid_cron_string(value):
            raise ValueError(f"expected a cron expression such as '0 3 * * *', got {value!r}")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"expected an IANA timezone such as 'Europe/Berlin', got {value!r}"
            ) from None
        return value


class PipelineConfig(StrictModel):
    environment: Environment | None = Field(
        default=None,
        description="'local' (the embedded local cloud) or 'production'. The "
        "EXPORT_PIPELINE_ENV environment variable overrides it; local when neither is set.",
    )
    aws: AwsConfig
    dynamodb: DynamoDBConfig = Field(default_factory=DynamoDBConfig)
    rds: RdsConfig = Field(default_factory=RdsConfig)
    bigquery: BigQueryConfig
    gcs: GcsConfig | None = Field(
        default=None,
        description="Stage Parquet in GCS and load BigQuery from gs:// URIs; absent: the "
        "Parquet is uploaded to BigQuery through the worker.",
    )
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    source_path: Annotated[str | None, Field(exclude=True)] = None

    @model_validator(mode="after")
    def _bigquery_names_unique(self) -> PipelineConfig:
        """Two sources must never load into one BigQuery table (names are folded to fit)."""
        from export_pipeline.naming import dynamodb_table_name, rds_table_name

        targets: dict[str, str] = {}
        sources = [
            (f"dynamodb table {t.name!r}", dynamodb_table_name(t.name))
            for t in self.dynamodb.tables
        ]
        sources += [
            (f"rds {i.identifier} table {'.'.join(parts)}", rds_table_name(*parts))
            for i in self.rds.instances
            for parts in i.loaded_tables()
        ]
        for source, target in sources:
            if target in targets:
                raise ValueError(
                    f"{targets[target]} and {source} would both load into BigQuery table "
                    f"{target!r}; rename or drop one of them"
                )
            targets[target] = source
        return self

    def resolved_environment(self) -> Environment:
        override = os.environ.get(ENVIRONMENT_ENV_VAR)
        if override:
            try:
                return Environment(override)
            except ValueError:
                raise ConfigError(
                    f"{ENVIRONMENT_ENV_VAR}={override!r}: expected 'local' or 'production'"
                ) from None
        return self.environment or Environment.LOCAL


def config_path() -> Path:
    """The configuration file in force: $EXPORT_PIPELINE_CONFIG or ./pipeline.yaml."""
    return Path(os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH)


def _item_label(item: object, index: int) -> str:
    """`[Orders]` for a list entry with a valid name or identifier, else `[<index>]`."""
    if isinstance(item, dict):
        for key, valid in (("name", _DYNAMODB_TABLE_NAME), ("identifier", _RDS_IDENTIFIER)):
            label = item.get(key)
            if isinstance(label, str) and valid.fullmatch(label):
                return f"[{label}]"
    return f"[{index}]"


def _where(raw: object, loc: tuple[int | str, ...]) -> tuple[str, type[BaseModel] | None]:
    """The field's path, naming list entries by their name, and the model that holds it."""
    parts: list[str] = []
    node: object = raw
    model: type[BaseModel] | None = PipelineConfig
    keyed_entries = False  # the node is a mapping of name -> model (rds tables)
    for step in loc:
        if isinstance(step, int):
            parts[-1:] = [f"{parts[-1] if parts else ''}{_item_label(_at(node, step), step)}"]
            node = _at(node, step)
            continue
        parts.append(str(step))
        node = node.get(step) if isinstance(node, dict) else None
        if keyed_entries:
            keyed_entries = False
            continue
        keyed_entries = _is_mapping_field(model, str(step))
        model = _field_model(model, str(step))
    return ".".join(parts) or "(top level)", model


def _at(node: object, index: int) -> object:
    return node[index] if isinstance(node, list) and 0 <= index < len(node) else None


def _field_model(model: type[BaseModel] | None, name: str) -> type[BaseModel] | None:
    """The model of field `name` of `model` (or of its list entries), if it is one."""
    if model is None or name not in model.model_fields:
        return None
    annotation = model.model_fields[name].annotation
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _is_mapping_field(model: type[BaseModel] | None, name: str) -> bool:
    if model is None or name not in model.model_fields:
        return False
    return getattr(model.model_fields[name].annotation, "__origin__", None) is dict


def _unknown_field_message(name: str, model: type[BaseModel] | None) -> str:
    """'unknown field', the nearest valid key when one is close, and the valid keys."""
    fields = list(model.model_fields) if model else []
    own = [f for f in getattr(model, "__annotations__", {}) if f in fields]
    valid = [f for f in own + [f for f in fields if f not in own] if f != "source_path"]
    near = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    hint = f"did you mean '{near[0]}'? " if near else ""
    return f"unknown field; {hint}(valid here: {', '.join(valid)})"


def _format_validation_error(path: Path, raw: object, error: ValidationError) -> str:
    """One line per problem: the file, the field (list entries by name), what to do."""
    lines = []
    for problem in error.errors():
        loc = tuple(problem["loc"])
        message = problem["msg"]
        if problem["type"] == "extra_forbidden" and loc:
            parent, model = _where(raw, loc[:-1])
            where = f"{parent}.{loc[-1]}" if loc[:-1] else str(loc[-1])
            message = _unknown_field_message(str(loc[-1]), model)
        else:
            where, _ = _where(raw, loc)
            if problem["type"] == "missing":
                message = "required field is missing"
        lines.append(f"{path}: {where}: {message}")
    return "\n".join(lines)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, but a key given twice in one mapping is an error.

    Plain YAML keeps the last of two equal keys, so a second `tables:` under
    one instance would silently drop the first one's settings.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} is given twice in one mapping (the second would replace "
                    "the first): merge the two",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_config(text: str, path: Path) -> PipelineConfig:
    """Parse and validate YAML text; errors name `path` and the offending field."""
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        config = PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(path, raw, exc)) from None
    return config.model_copy(update={"source_path": str(path)})


def load_config(path: Path | None = None) -> PipelineConfig:
    """Load the configuration file (default: `config_path()`)."""
    path = path or config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: configuration file not found (set {CONFIG_ENV_VAR} to another file)"
        ) from None
    return parse_config(text, path)


@cache
def _cached(path: str, mtime_ns: int) -> PipelineConfig:
    return load_config(Path(path))


def current_config() -> PipelineConfig:
    """The configuration in force, parsed once per file version."""
    path = config_path()
    try:
        mtime = path.stat().st_mtime_ns
    except FileNotFoundError:
        mtime = 0
    return _cached(str(path), mtime)
