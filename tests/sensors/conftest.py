"""Fixtures of the sensor tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance, instance_for_test

from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.intake.kafka import KafkaGateway
from tests.conftest import missing_service
from tests.support.kafka import OwnBroker
from tests.support.servers import ServerDidNotStart


@pytest.fixture
def own_broker(
    vault_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[OwnBroker]:
    """A broker this test may kill and restart empty; the test's environment points at it."""
    try:
        broker = OwnBroker(tmp_path / "own-broker.log")
    except (ServerDidNotStart, OSError) as exc:
        missing_service(f"no Kafka-protocol broker of our own: {exc}")
    monkeypatch.setenv("REPOVAULT_KAFKA_BOOTSTRAP", broker.bootstrap)
    vault_env["REPOVAULT_KAFKA_BOOTSTRAP"] = broker.bootstrap
    yield broker
    broker.stop()


@pytest.fixture
def instance(vault_env: dict[str, str]) -> Iterator[DagsterInstance]:
    """A Dagster instance of the test's own, with the test's topics created."""
    KafkaGateway(Settings.from_env()).ensure_topics()
    with instance_for_test() as inst:
        yield inst
