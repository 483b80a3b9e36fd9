"""The configuration file: valid files load, invalid ones name the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from export_pipeline.config import (
    DEFAULT_CONFIG_PATH,
    ConfigError,
    DynamoDBExportMode,
    Environment,
    load_config,
    parse_config,
)

MINIMAL = {
    "aws": {"region": "eu-west-1", "export_bucket": "my-bucket"},
    "bigquery": {"project": "my-project-1"},
}


def _parse(raw: dict, path: Path = Path("/tmp/p.yaml")):
    return parse_config(yaml.safe_dump(raw), path)


def test_shipped_demo_config_loads() -> None:
    config = load_config(DEFAULT_CONFIG_PATH)
    assert config.environment is Environment.LOCAL
    assert {t.name for t in config.dynamodb.tables} == {"Orders", "Products"}
    assert config.rds.instances[0].tables()[0] == ("shop", "customers")


def test_defaults_of_a_minimal_file() -> None:
    config = _parse(MINIMAL)
    assert config.bigquery.dataset == "aws_raw"
    assert config.aws.export_prefix == "exports"
    assert config.dynamodb.tables == []
    assert config.schedule.cron == "0 3 * * *"
    assert config.resolved_environment() is Environment.LOCAL


def test_environment_variable_overrides_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPORT_PIPELINE_ENV", "production")
    assert _parse(MINIMAL).resolved_environment() is Environment.PRODUCTION
    monkeypatch.setenv("EXPORT_PIPELINE_ENV", "staging")
    with pytest.raises(ConfigError, match="EXPORT_PIPELINE_ENV"):
        _parse(MINIMAL).resolved_environment()


@pytest.mark.parametrize(
    ("patch", "field", "expected"),
    [
        ({"aws": {"region": "europe", "export_bucket": "b-1"}}, "aws.region", "AWS region"),
        (
            {"aws": {"region": "eu-west-1", "export_bucket": "Bad_Bucket"}},
            "aws.export_bucket",
            "S3",
        ),
        (
            {"aws": {"region": "eu-west-1", "export_bucket": "b-1", "export_prefix": "a/../b"}},
            "aws.export_prefix",
            "prefix",
        ),
        ({"bigquery": {"project": "p"}}, "bigquery.project", "project id"),
        (
            {"bigquery": {"project": "my-project-1", "dataset": "raw data"}},
            "bigquery.dataset",
            "dataset",
        ),
        (
            {"dynamodb": {"tables": [{"name": "Orders", "mode": "sometimes"}]}},
            "dynamodb.tables.0.mode",
            "full",
        ),
        ({"dynamodb": {"tables": [{"name": "x`; DROP"}]}}, "dynamodb.tables.0.name", "table name"),
        ({"dynamodb": {"tables": [{"name": "Orders"}, {"name": "Orders"}]}}, "dynamodb", "twice"),
        ({"schedule": {"cron": "every day"}}, "schedule.cron", "cron"),
        ({"schedule": {"timezone": "Mars/Olympus"}}, "schedule.timezone", "IANA"),
        ({"surprise": 1}, "surprise", "unknown field"),
    ],
)
def test_invalid_values_name_file_field_and_expectation(patch, field, expected) -> None:
    raw = {**MINIMAL, **patch}
    with pytest.raises(ConfigError) as error:
        _parse(raw, Path("/etc/pipeline-under-test.yaml"))
    message = str(error.value)
    assert "/etc/pipeline-under-test.yaml" in message
    assert field in message
    assert expected in message


RDS = {
    "identifier": "shopdb",
    "export_only": ["shop.orders"],
    "iam_role_arn": "arn:aws:iam::123456789012:role/r",
    "kms_key_id": "alias/k",
}


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"identifier": "1shop"}, "identifier"),
        ({"identifier": "shop--db"}, "identifier"),
        ({"export_only": ["shop"]}, "export_only"),
        ({"export_only": ["shop.or ders"]}, "export_only"),
        ({"export_only": []}, "export_only"),
        ({"iam_role_arn": "role/r"}, "iam_role_arn"),
        ({"kind": "serverless"}, "kind"),
    ],
)
def test_invalid_rds_instances(patch, field) -> None:
    raw = {**MINIMAL, "rds": {"instances": [{**RDS, **patch}]}}
    with pytest.raises(ConfigError, match=rf"rds\.instances\.0\.{field}"):
        _parse(raw)


def test_missing_required_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"bigquery: required field is missing"):
        _parse({"aws": MINIMAL["aws"]})
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("aws: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from export_pipeline.config import current_config

    path = tmp_path / "other.yaml"
    raw = {**MINIMAL, "dynamodb": {"tables": [{"name": "Events", "mode": "incremental"}]}}
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("EXPORT_PIPELINE_CONFIG", str(path))
    config = current_config()
    assert config.dynamodb.tables[0].mode is DynamoDBExportMode.INCREMENTAL
    assert config.source_path == str(path)
