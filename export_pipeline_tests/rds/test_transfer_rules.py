"""Rules of `transfer: storage_transfer` that need no cloud: configuration, names, tables."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from export_pipeline.config import ConfigError, RdsTransfer, parse_config
from export_pipeline.rds.engine import MYSQL
from export_pipeline.rds.export_files import ExportLocation, TableInfo
from export_pipeline.rds.transfer import export_transfer, gcs_uri, worker_reason
from export_pipeline.storage_transfer import job_name
from export_pipeline.table_settings import RdsTableSettings

ROLE = "arn:aws:iam::123456789012:role/storage-transfer-reader"
# Google's pattern for a job name chosen by the caller (TransferJob.name).
GOOGLE_JOB_NAME = re.compile(r"^transferJobs/(?!OPI)[A-Za-z0-9\-._~]*[A-Za-z0-9]$")


def _raw() -> dict:
    """The demo configuration without its rds transfer settings (each test sets its own)."""
    raw = yaml.safe_load((Path(__file__).parents[2] / "pipeline.yaml").read_text())
    raw["rds"].pop("transfer", None)
    raw["rds"].pop("storage_transfer_role_arn", None)
    return raw


def _parse(raw: dict):
    return parse_config(yaml.safe_dump(raw), Path("pipeline.yaml"))


def test_transfer_defaults_to_the_worker_and_instances_override_it():
    raw = _raw()
    assert all(
        _parse(raw).rds.transfer_of(i) is RdsTransfer.WORKER for i in _parse(raw).rds.instances
    )
    raw["rds"]["transfer"] = "storage_transfer"
    raw["rds"]["storage_transfer_role_arn"] = ROLE
    raw["rds"]["instances"][1]["transfer"] = "worker"
    config = _parse(raw)
    shopdb, appdb = config.rds.instances
    assert config.rds.transfer_of(shopdb) is RdsTransfer.STORAGE_TRANSFER
    assert config.rds.transfer_of(appdb) is RdsTransfer.WORKER


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda raw: raw["rds"].update(transfer="storage_transfer"),
            "pipeline.yaml: rds: Value error, storage_transfer_role_arn: required because "
            "shopdb, appdb use transfer: storage_transfer",
        ),
        (
            lambda raw: (
                raw["rds"].update(transfer="storage_transfer", storage_transfer_role_arn=ROLE),
                raw.pop("gcs"),
            ),
            "gcs: required because shopdb, appdb use transfer: storage_transfer",
        ),
        (
            lambda raw: raw["rds"]["instances"][0].update(transfer="storage-transfer"),
            "pipeline.yaml: rds.instances[shopdb].transfer: Input should be 'worker' or "
            "'storage_transfer'",
        ),
        (
            lambda raw: raw["rds"].update(storage_transfer_role_arn="reader"),
            "rds.storage_transfer_role_arn: Value error, expected an IAM role ARN",
        ),
    ],
)
def test_a_bad_transfer_setting_fails_in_one_line_naming_the_field(change, expected):
    raw = _raw()
    change(raw)
    with pytest.raises(ConfigError) as raised:
        _parse(raw)
    message = str(raised.value)
    assert "\n" not in message
    assert expected in message


@given(st.text(min_size=1, max_size=200))
def test_job_names_are_deterministic_and_googles(identifier):
    name = job_name("export-pipeline-rds", identifier)
    assert name == job_name("export-pipeline-rds", identifier)
    assert GOOGLE_JOB_NAME.fullmatch(name) and len(name) <= 128


# RDS export task identifiers: a letter, then letters, digits and single hyphens, <= 60.
_EXPORT_IDS = st.from_regex(r"[a-z](-?[a-z0-9]){0,59}", fullmatch=True)


@given(_EXPORT_IDS, _EXPORT_IDS)
def test_two_exports_never_share_a_job(first, second):
    names = {job_name("export-pipeline-rds", first), job_name("export-pipeline-rds", second)}
    assert len(names) == (1 if first == second else 2)


def test_one_job_per_export_copying_only_the_chosen_tables():
    location = ExportLocation("exports-bucket", "exports/rds", "rds-shopdb-2026-12-07-ab12")
    transfer = export_transfer(
        location=location,
        project_id="my-project",
        role_arn=ROLE,
        staging_bucket="staging-bucket",
        staging_prefix="staging",
        tables=[("shop", "type_zoo"), ("shop", "orders")],
        description="test",
    )
    assert transfer.job_name == "transferJobs/export-pipeline-rds-rds-shopdb-2026-12-07-ab12"
    assert transfer.source_path == "exports/rds/rds-shopdb-2026-12-07-ab12/"
    assert (
        transfer.sink_uri == "gs://staging-bucket/staging/rds-transfer/rds-shopdb-2026-12-07-ab12/"
    )
    assert transfer.include_prefixes == ("shop/shop.orders/", "shop/shop.type_zoo/")
    key = "exports/rds/rds-shopdb-2026-12-07-ab12/shop/shop.orders/1/part-00000.parquet"
    assert gcs_uri(transfer, key) == (
        "gs://staging-bucket/staging/rds-transfer/rds-shopdb-2026-12-07-ab12/"
        "shop/shop.orders/1/part-00000.parquet"
    )
    job = transfer.job()
    assert "schedule" not in job  # runs only when asked (transferJobs.run)
    assert job["transfer_spec"]["aws_s3_data_source"]["role_arn"] == ROLE


def _info(*columns: tuple[str, str]) -> TableInfo:
    return TableInfo("shop.t", "COMPLETE", tuple(columns), None, {})


def test_tables_the_worker_must_rewrite_stay_on_the_worker():
    plain = _info(("id", "bigint"), ("note", "varchar(20)"))
    assert worker_reason(plain, RdsTableSettings(), MYSQL) is None
    hashed = RdsTableSettings.model_validate({"columns": {"note": "hash"}})
    assert "exclude or hash columns" in str(worker_reason(plain, hashed, MYSQL))
    renamed = _info(("id", "bigint"), ("order-total", "int"))
    assert "'order-total'" in str(worker_reason(renamed, RdsTableSettings(), MYSQL))


def test_the_storage_transfer_role_templates_render_for_the_configuration():
    from export_pipeline.iam_policies import PolicyRenderError, load_template, render

    config = _parse(_raw())
    with pytest.raises(PolicyRenderError, match="--google-subject-id is needed"):
        render(load_template("storage-transfer-role-trust"), config)
    trust = render(load_template("storage-transfer-role-trust"), config, google_subject_id="42")
    [statement] = trust["Statement"]
    assert statement["Principal"] == {"Federated": "accounts.google.com"}
    assert statement["Condition"]["StringEquals"] == {"accounts.google.com:sub": "42"}
    key = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    policy = render(load_template("storage-transfer-role-policy"), config, kms_key_arns=[key])
    grants = {s["Action"]: s["Resource"] for s in policy["Statement"]}
    bucket, prefix = config.aws.export_bucket, config.aws.export_prefix
    assert grants == {
        "s3:ListBucket": [f"arn:aws:s3:::{bucket}"],
        "s3:GetObject": [f"arn:aws:s3:::{bucket}/{prefix}/rds/*"],
        "kms:Decrypt": [key],
    }
