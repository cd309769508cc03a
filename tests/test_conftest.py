"""The suite's fixtures reuse a broker on 127.0.0.1:9092 only if it answers Kafka requests; its
longest tests start first, one per worker."""

from __future__ import annotations

import socket

from tests.support.kafka import speaks_kafka
from tests.support.ordering import long_ones_first, long_rank, slice_sizes


def test_only_a_kafka_broker_is_taken_for_one(git_base_url: str, kafka_bootstrap: str) -> None:
    assert speaks_kafka(kafka_bootstrap)
    assert not speaks_kafka(git_base_url.removeprefix("http://"), timeout_s=2)  # HTTP answers
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        assert not speaks_kafka(f"127.0.0.1:{silent.getsockname()[1]}", timeout_s=2)


def test_each_worker_starts_with_its_share_of_the_long_tests() -> None:
    """What worksteal first hands each of 3 workers begins with the long tests, longest first
    and dealt round; the rest keep their order and every test stays."""
    items = [f"tests/t{n:02}.py::test" for n in range(20)]
    rank = {"tests/t15.py::test": 0, "tests/t03.py::test": 1, "tests/t19.py::test": 2}
    rank |= {"tests/t07.py::test": 3}
    ordered = long_ones_first(items, rank.get, workers=3)
    assert sorted(ordered) == items
    assert slice_sizes(20, 3) == [6, 7, 7]
    slices = [ordered[:6], ordered[6:13], ordered[13:]]
    assert [s[0] for s in slices] == [
        "tests/t15.py::test",
        "tests/t03.py::test",
        "tests/t19.py::test",
    ]
    assert slices[0][1] == "tests/t07.py::test"
    assert [i for i in ordered if i not in rank] == [i for i in items if i not in rank]
    assert long_rank("tests/test_forget.py::test_forget_drops") is not None
    assert long_rank("tests/test_forget_not.py::test") is None
