"""The suite's fixtures reuse a broker on 127.0.0.1:9092 only if it answers Kafka requests."""

from __future__ import annotations

import socket

from tests.support.kafka import speaks_kafka


def test_only_a_kafka_broker_is_taken_for_one(git_base_url: str, kafka_bootstrap: str) -> None:
    assert speaks_kafka(kafka_bootstrap)
    assert not speaks_kafka(git_base_url.removeprefix("http://"), timeout_s=2)  # HTTP answers
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        assert not speaks_kafka(f"127.0.0.1:{silent.getsockname()[1]}", timeout_s=2)
