"""The resources as definitions.py configures them: EnvVar fields for the variables that are set,
the Settings default for the others, and a field's value winning over the environment."""

from __future__ import annotations

import pytest
from dagster import EnvVar

from repovault_pipeline.definitions import repovault_resources
from repovault_pipeline.resources import KafkaResource, LineageResource


def test_set_variables_become_env_vars_and_unset_ones_stay_empty(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REPOVAULT_KAFKA_BOOTSTRAP", "broker:9092")
    monkeypatch.setenv("REPOVAULT_S3_ENDPOINT", "http://minio:9000")
    monkeypatch.delenv("REPOVAULT_DB_URL", raising=False)
    resources = repovault_resources()
    kafka, vault, lineage = resources["kafka"], resources["vault"], resources["lineage"]
    assert isinstance(kafka, KafkaResource) and isinstance(lineage, LineageResource)
    assert kafka.bootstrap == EnvVar("REPOVAULT_KAFKA_BOOTSTRAP")
    assert vault.s3.endpoint_url == EnvVar("REPOVAULT_S3_ENDPOINT")
    assert vault.s3 is resources["s3"]
    assert lineage.db_url is None
    # Resolved when a run or tick initializes it, from that moment's environment.
    monkeypatch.setenv("REPOVAULT_KAFKA_BOOTSTRAP", "other:9092")
    with kafka.process_config_and_initialize_cm() as initialized:
        assert initialized.settings().kafka_bootstrap == "other:9092"


def test_a_configured_field_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPOVAULT_TOPIC_COMPLETED", "from-env")
    monkeypatch.setenv("REPOVAULT_TOPIC_PENDING", "pending-env")
    settings = KafkaResource(topic_completed="from-field").settings()
    assert settings.topics.completed == "from-field"
    assert settings.topics.pending == "pending-env"


def test_the_store_talks_to_s3_through_the_dagster_aws_resource(
    vault_env: dict[str, str],
) -> None:
    """With REPOVAULT_S3_ENDPOINT set, `vault`'s store uses the client of its `s3` resource
    (dagster-aws's S3Resource), configured for path-style addressing, against the S3 server."""
    resources = repovault_resources()
    vault, s3 = resources["vault"], resources["s3"]
    with vault.process_config_and_initialize_cm() as initialized:
        store = initialized.store()
        assert store.client.meta.config.s3 == {"addressing_style": "path"}
        assert store.client.meta.endpoint_url == vault_env["REPOVAULT_S3_ENDPOINT"]
        bucket = f"{vault_env['REPOVAULT_BUCKET_PREFIX']}resource-check"
        store.ensure_bucket(bucket)
        store.put_bytes(bucket, "k", b"through the resource")
    with s3.process_config_and_initialize_cm() as initialized_s3:
        stored = initialized_s3.get_client().get_object(Bucket=bucket, Key="k")
    assert stored["Body"].read() == b"through the resource"
