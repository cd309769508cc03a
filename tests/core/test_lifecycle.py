"""`RequestLifecycle` against PostgreSQL lineage and a publisher that records what it is given:
each step writes the row before its message or event, a retried step announces nothing new, a
request the broker never took is closed `failed`, and a row changed meanwhile is left alone."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from repovault_pipeline.core.common.settings import Topics
from repovault_pipeline.core.intake.kafka import BrokerUnavailable
from repovault_pipeline.core.intake.lifecycle import NewRequest, Outcome, RequestLifecycle
from repovault_pipeline.core.lineage.requests import METADATA_FAILED, open_lineage

URL, REPO_ID = "http://127.0.0.1:9/o/lifecycle.git", "127.0.0.1:9/o/lifecycle"


@dataclass
class Recorded:
    """A publisher that keeps (topic, key, decoded value); `down` raises like a lost broker."""

    sent: list[tuple[str, str | None, dict]] = field(default_factory=list)
    down: bool = False

    def publish(self, topic: str, messages: Sequence[tuple[str | None, bytes]]) -> None:
        if self.down:
            raise BrokerUnavailable("broker at 127.0.0.1:1 unreachable")
        self.sent += [(topic, key, json.loads(value)) for key, value in messages]

    def publish_status(
        self, topic: str, key: str, event: bytes, logger: logging.Logger | None = None
    ) -> bool:
        self.publish(topic, [(key, event)])
        return True


def lifecycle(events: Recorded) -> RequestLifecycle:
    return RequestLifecycle(open_lineage(os.environ["REPOVAULT_DB_URL"]), events, Topics())


def test_a_request_queued_started_and_failed(vault_env: dict[str, str]) -> None:
    events = Recorded()
    requests = lifecycle(events)
    request_id = requests.queue(NewRequest(URL, REPO_ID, "cli", keep={"wiki": False}))
    assert requests.lineage.get(request_id).status == "pending"
    requests.start(request_id, URL, REPO_ID, "cli", "run-1")
    requests.start(request_id, URL, REPO_ID, "cli", "run-1", retry_number=1)  # no second event
    requests.retrying(request_id, 1, 4, "network")
    assert requests.lineage.get(request_id).error == "attempt 1 of 4 failed: network; retrying"
    requests.fail(request_id, REPO_ID, "run-1", "clone timed out")

    row = requests.lineage.get(request_id)
    assert (row.status, row.error, row.run_id) == ("failed", "clone timed out", "run-1")
    kinds = [(topic, value.get("status", "request")) for topic, _, value in events.sent]
    assert kinds == [
        ("pendientes", "request"),
        ("en_proceso", "in_progress"),
        ("completados", "failed"),
    ]
    assert events.sent[0][2]["keep"] == {"wiki": False}
    assert events.sent[2][2]["error"] == "clone timed out"


def test_a_request_the_broker_never_took_is_failed(vault_env: dict[str, str]) -> None:
    events = Recorded(down=True)
    requests = lifecycle(events)
    with pytest.raises(BrokerUnavailable):
        requests.queue(NewRequest(URL, REPO_ID, "cli", request_id="lifecycle-not-queued"))
    row = requests.lineage.get("lifecycle-not-queued")
    assert (row.status, row.error) == (
        "failed",
        "not queued: broker at 127.0.0.1:1 unreachable",
    )


def test_close_leaves_a_changed_row_alone_and_part_failed_turns_it_partial(
    vault_env: dict[str, str],
) -> None:
    events = Recorded()
    requests = lifecycle(events)
    request_id = requests.queue(NewRequest(URL, REPO_ID, "cli"))
    requests.start(request_id, URL, REPO_ID, "cli", "run-2")
    done = Outcome("completed", "snap-1", "c0ffee", 10)
    assert not requests.close(request_id, REPO_ID, "run-1", done, only_run_id="run-1")
    assert requests.close(request_id, REPO_ID, "run-2", done, only_run_id="run-2")
    row = requests.part_failed(request_id, REPO_ID, "run-2", METADATA_FAILED, "API said 500")

    assert row is not None and (row.status, row.reasons) == (
        "partial",
        {METADATA_FAILED: "API said 500"},
    )
    closings = [value for topic, _, value in events.sent if topic == "completados"]
    assert [(e["status"], e["snapshot_id"]) for e in closings] == [
        ("completed", "snap-1"),
        ("partial", "snap-1"),
    ]
    assert closings[1]["error"] == "metadata_failed: API said 500"
