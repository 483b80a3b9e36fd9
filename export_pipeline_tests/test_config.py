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
    assert config.rds.instances[0].loaded_tables()[0] == ("shop", "customers")


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
            "dynamodb.tables[Orders].mode",
            "full",
        ),
        ({"dynamodb": {"tables": [{"name": "x`; DROP"}]}}, "dynamodb.tables[0].name", "table name"),
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
    with pytest.raises(ConfigError, match=rf"rds\.instances\[[^]]+\]\.{field}"):
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


def _demo_with_typo(tmp_path: Path) -> Path:
    """The shipped pipeline.yaml with `mode:` of table Orders misspelt `mod:`."""
    text = DEFAULT_CONFIG_PATH.read_text(encoding="utf-8")
    assert "      mode: incremental" in text
    bad = tmp_path / "pipeline.yaml"
    bad.write_text(text.replace("      mode: incremental", "      mod: incremental", 1))
    return bad


def test_a_misspelt_key_names_the_table_and_suggests_the_key(tmp_path: Path) -> None:
    bad = _demo_with_typo(tmp_path)
    with pytest.raises(ConfigError) as error:
        load_config(bad)
    assert str(error.value) == (
        f"{bad}: dynamodb.tables[Orders].mod: unknown field; did you mean 'mode'? "
        "(valid here: name, mode, wait, deletes, schema_changes, columns, bigquery)"
    )


@pytest.mark.parametrize(
    ("raw", "line"),
    [
        ({"dynamo": {}}, "dynamo: unknown field; did you mean 'dynamodb'?"),
        ({"bigquery": {"project": "my-project-1", "datset": "x"}}, "did you mean 'dataset'?"),
        ({"schedule": {"zzz": 1}}, "schedule.zzz: unknown field; (valid here: cron, timezone)"),
    ],
)
def test_unknown_keys_suggest_the_nearest_valid_one(raw: dict, line: str) -> None:
    with pytest.raises(ConfigError) as error:
        _parse({**MINIMAL, **raw})
    assert line in str(error.value)
    assert len(str(error.value).splitlines()) == 1


def test_the_job_command_prints_one_line_and_no_traceback(tmp_path: Path) -> None:
    """`dagster job execute` (a real subprocess) stops at the configuration, in one line."""
    import os
    import subprocess
    import sys

    bad = _demo_with_typo(tmp_path)
    env = {**os.environ, "EXPORT_PIPELINE_CONFIG": str(bad)}
    dagster = str(Path(sys.executable).parent / "dagster")
    result = subprocess.run(
        [dagster, "job", "execute", "-m", "export_pipeline", "-j", "aws_to_bigquery"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: {bad}: dynamodb.tables[Orders].mod: unknown field; "
        "did you mean 'mode'? "
        "(valid here: name, mode, wait, deletes, schema_changes, columns, bigquery)"
    ]
    assert "Traceback" not in result.stderr + result.stdout


def test_a_key_given_twice_is_refused_in_one_line_with_its_place(tmp_path: Path) -> None:
    """YAML keeps the last of two equal keys; a second `tables:` would drop the first."""
    text = (DEFAULT_CONFIG_PATH.read_text(encoding="utf-8")).replace(
        "      snapshot_type: any\n", "      snapshot_type: any\n      snapshot_type: manual\n", 1
    )
    bad = tmp_path / "pipeline.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(bad)
    message = str(error.value)
    line = text.splitlines().index("      snapshot_type: manual") + 1
    assert message.startswith(f"{bad}:{line}:7: not valid YAML: key 'snapshot_type' is given twice")
    assert "\n" not in message


def test_unclosed_yaml_is_one_line_with_its_place(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("aws: [unclosed\n")
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path / "bad.yaml")
    assert str(error.value).startswith(f"{tmp_path / 'bad.yaml'}:2:1: not valid YAML: ")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("gcs", "expected"),
    [
        ({"staging_bucket": "Upper-Case"}, "GCS bucket name"),
        ({"staging_bucket": "goog-staging"}, "GCS bucket name"),
        ({"staging_bucket": "b" * 64}, "GCS bucket name"),
        ({"staging_bucket": "ok-bucket", "staging_prefix": "a/../b"}, "prefix"),
        ({"staging_bucket": "ok-bucket", "staging_prefix": "runs/*"}, "prefix"),
        ({"staging_prefix": "x"}, "staging_bucket"),
        ({"staging_bucket": "ok-bucket", "stagin_prefix": "x"}, "staging_prefix"),
    ],
)
def test_the_gcs_section_is_checked_like_the_rest(gcs, expected) -> None:
    with pytest.raises(ConfigError) as error:
        _parse({**MINIMAL, "gcs": gcs})
    assert "gcs" in str(error.value)
    assert expected in str(error.value)


def test_gcs_staging_is_optional_and_its_prefix_is_normalised() -> None:
    assert _parse(MINIMAL).gcs is None
    staged = _parse({**MINIMAL, "gcs": {"staging_bucket": "my_bucket.example.com"}}).gcs
    assert (staged.staging_bucket, staged.staging_prefix) == ("my_bucket.example.com", "staging")
    nested = _parse({**MINIMAL, "gcs": {"staging_bucket": "b-1", "staging_prefix": "/a/b/"}})
    assert nested.gcs.staging_prefix == "a/b"
    assert load_config(DEFAULT_CONFIG_PATH).gcs is not None  # the demo stages in GCS
