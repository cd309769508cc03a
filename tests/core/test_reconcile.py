"""Reconciliation decisions, row by row, against real PostgreSQL lineage, the S3 server and the
broker; Dagster's runs are stood in for by a table of statuses (the `RunHistory` protocol)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from repovault_pipeline.core.common.identity import parse_repo_url
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.intake.kafka import KafkaGateway
from repovault_pipeline.core.intake.reconcile import MAX_REPUBLISH, Reconciler, ReconcileState
from repovault_pipeline.core.intake.runs import RecordedOutcome
from repovault_pipeline.core.intake.submit import submit
from repovault_pipeline.core.lineage.requests import LineageStore, now, open_lineage
from repovault_pipeline.core.lineage.rows import Injected
from repovault_pipeline.core.vault.store import open_store
from tests.support.kafka import read_json


@dataclass
class Runs:
    """Runs as the orchestrator would report them."""

    statuses: dict[str, str] = field(default_factory=dict)
    outcomes: dict[str, RecordedOutcome] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    by_request: dict[str, list[str]] = field(default_factory=dict)

    def status(self, run_id: str) -> str | None:
        return self.statuses.get(run_id)

    def recorded_outcome(self, run_id: str) -> RecordedOutcome | None:
        return self.outcomes.get(run_id)

    def failure_reason(self, run_id: str) -> str | None:
        return self.failures.get(run_id)

    def runs_of_request(self, request_id: str) -> list[str]:
        return self.by_request.get(request_id, [])

    def fail(self, run_id: str, reason: str) -> None:
        self.statuses[run_id] = "FAILURE"
        self.failures[run_id] = reason


@pytest.fixture
def lineage(private_lineage: str) -> LineageStore:
    gateway = KafkaGateway(Settings.from_env())
    gateway.ensure_topics()
    gateway.close()
    return open_lineage(os.environ["REPOVAULT_DB_URL"])


def reconcile(runs: Runs, state: ReconcileState | None = None):
    settings = Settings.from_env()
    gateway = KafkaGateway(settings)
    try:
        return Reconciler(open_lineage(settings.db_url), runs, open_store(settings), gateway).run(
            state or ReconcileState()
        )
    finally:
        gateway.close()


def started(lineage: LineageStore, name: str, run_id: str) -> str:
    request_id = f"{name}-{os.urandom(4).hex()}"
    lineage.record_started(
        request_id, f"http://127.0.0.1:9/o/{name}.git", f"127.0.0.1:9/o/{name}", "cli", run_id
    )
    return request_id


def test_in_progress_rows_get_the_outcome_of_their_ended_run(
    lineage: LineageStore, vault_env: dict[str, str]
) -> None:
    running = started(lineage, "running", "run-running")
    recorded = started(lineage, "recorded", "run-recorded")
    gone = started(lineage, "gone", "run-gone")
    crashed = started(lineage, "crashed", "run-crashed")
    silent = started(lineage, "silent", "run-silent")
    partial = started(lineage, "partial", "run-partial")
    missing = {"lfs_missing": "1 LFS objects its history points to were not on the server"}
    runs = Runs(
        statuses={
            "run-running": "STARTED",
            "run-recorded": "FAILURE",
            "run-crashed": "FAILURE",
            "run-silent": "CANCELED",
            "run-partial": "FAILURE",
        },
        outcomes={
            "run-recorded": RecordedOutcome("unchanged", "snap-1", "c0ffee", 0),
            # as upload_snapshot's output metadata holds it (`outcome_metadata`)
            "run-partial": RecordedOutcome.from_metadata(
                {
                    "outcome": "completed",
                    "snapshot_id": "snap-2",
                    "head_commit": "beef",
                    "bytes_uploaded": 10,
                    "reasons": json.dumps(missing),
                }
            ),
        },
        failures={"run-crashed": "step repo_archive.clone_repo failed: worker killed"},
    )

    report, _ = reconcile(runs)

    assert report.closed == {
        recorded: "unchanged",
        gone: "failed",
        crashed: "failed",
        silent: "failed",
        partial: "partial",  # a run that recorded a missing part is never `completed`
    }
    assert lineage.get(partial).reasons == missing
    assert lineage.get(running).status == "in_progress"
    row = lineage.get(recorded)
    assert (row.snapshot_id, row.head_commit, row.error) == ("snap-1", "c0ffee", None)
    assert lineage.get(gone).error == "run run-gone no longer exists and recorded no outcome"
    assert lineage.get(crashed).error == (
        "run run-crashed ended FAILURE: step repo_archive.clone_repo failed: worker killed"
    )
    assert (
        lineage.get(silent).error == "run run-silent ended CANCELED without recording its outcome"
    )
    assert all(
        lineage.get(r).worker_finishing_timestamp >= lineage.get(r).worker_start_timestamp
        for r in report.closed
    )
    events = {e["request_id"]: e for e in read_json(vault_env["REPOVAULT_TOPIC_COMPLETED"])}
    assert {r: e["status"] for r, e in events.items()} == report.closed
    assert events[recorded]["run_id"] == "run-recorded"
    assert events[partial]["reasons"] == missing and events[recorded]["reasons"] == {}

    again, _ = reconcile(runs)  # closed rows are final: a second pass does nothing
    assert again.closed == {}
    assert len(read_json(vault_env["REPOVAULT_TOPIC_COMPLETED"])) == 5


def test_final_rows_are_never_touched(lineage: LineageStore) -> None:
    ids = {}
    for status in ("completed", "unchanged", "failed"):
        ids[status] = started(lineage, status, f"run-{status}")
        lineage.record_finished(
            ids[status], status, error="as it was" if status == "failed" else None
        )
    old = now() - timedelta(hours=2)
    ids["rejected"] = lineage.record_pending("bad", "127.0.0.1:9/o/bad", "kafka", created_at=old)
    lineage.record_finished(ids["rejected"], "rejected", error="bad")
    before = {status: lineage.get(i) for status, i in ids.items()}

    # Every run is gone and every row is old: nothing here is in progress or pending.
    report, _ = reconcile(Runs())

    assert all(r not in report.closed for r in ids.values())
    assert report.republished == []
    assert {status: lineage.get(i) for status, i in ids.items()} == before


def test_stale_pending_requests_are_republished_then_failed(
    lineage: LineageStore, vault_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPOVAULT_REPUBLISH_AFTER_S", "0")
    old = now() - timedelta(minutes=30)
    lost = lineage.record_pending(
        "http://127.0.0.1:9/o/lost.git", "127.0.0.1:9/o/lost", "cli", created_at=old
    )
    queued = lineage.record_pending(
        "http://127.0.0.1:9/o/q.git", "127.0.0.1:9/o/q", "cli", created_at=old
    )
    runs = Runs(by_request={queued: ["run-queued"]})

    state = ReconcileState()
    for attempt in range(1, MAX_REPUBLISH + 1):
        report, state = reconcile(runs, ReconcileState.load(state.dump()))
        assert report.republished == [lost] and report.closed == {}
        assert state.republished[lost][0] == attempt
    republished = [
        m for m in read_json(vault_env["REPOVAULT_TOPIC_PENDING"]) if m["request_id"] == lost
    ]
    assert len(republished) == MAX_REPUBLISH
    assert {(m["repo_url"], m["source"]) for m in republished} == {
        ("http://127.0.0.1:9/o/lost.git", "cli")
    }
    assert lineage.get(lost).status == "pending"

    report, state = reconcile(runs, state)  # the last try is over: give up

    assert report.closed == {lost: "failed"} and state.republished == {}
    row = lineage.get(lost)
    assert row.status == "failed" and "never became a run" in row.error
    assert "kafka_injector_sensor" in row.error
    assert lineage.get(queued).status == "pending"  # it has a run: not ours to republish
    [event] = [
        e for e in read_json(vault_env["REPOVAULT_TOPIC_COMPLETED"]) if e["request_id"] == lost
    ]
    assert (event["status"], event["run_id"]) == ("failed", None)


def test_a_republished_request_keeps_what_it_asked_for(
    lineage: LineageStore, vault_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`keep` and `force` live in the row, so the message published again carries them: a
    request `repovault submit --force` made, and one a third party's message made."""
    monkeypatch.setenv("REPOVAULT_REPUBLISH_AFTER_S", "0")
    settings = Settings.from_env()
    ref = parse_repo_url("http://127.0.0.1:9/o/forced.git", ("http",), ("127.0.0.1",))
    [(_, submitted)] = submit(
        settings, lambda: lineage, [ref], "cli", keep={"lfs": False, "wiki": True}, force=True
    )
    at = now() - timedelta(minutes=5)
    crm = f"crm-{os.urandom(4).hex()}"
    injected = Injected(
        crm, "http://127.0.0.1:9/o/crm.git", "127.0.0.1:9/o/crm", "crm", at, at, keep={"lfs": True}
    )
    assert lineage.record_injected([injected]) == {}

    report, _ = reconcile(Runs())

    assert set(report.republished) >= {submitted, crm}
    messages = read_json(vault_env["REPOVAULT_TOPIC_PENDING"])
    again = [m for m in messages if m["request_id"] == submitted]
    assert len(again) == 2  # the submitted message, then the republished one
    assert all((m["keep"], m["force"]) == ({"lfs": False, "wiki": True}, True) for m in again)
    [third_party] = [m for m in messages if m["request_id"] == crm]
    assert (third_party["keep"], third_party.get("force"), third_party["source"]) == (
        {"lfs": True},
        None,
        "crm",
    )
    row = lineage.get(submitted)
    assert (row.keep, row.force) == ({"lfs": False, "wiki": True}, True)


def test_a_pending_request_waits_before_being_republished(
    lineage: LineageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPOVAULT_REPUBLISH_AFTER_S", "600")
    fresh = lineage.record_pending("http://127.0.0.1:9/o/f.git", "127.0.0.1:9/o/f", "cli")
    stale = lineage.record_pending(
        "http://127.0.0.1:9/o/s.git",
        "127.0.0.1:9/o/s",
        "cli",
        created_at=now() - timedelta(hours=1),
    )
    report, state = reconcile(Runs())
    assert stale in report.republished and fresh not in report.republished
    report, state = reconcile(Runs(), state)  # republished a moment ago: wait again
    assert stale not in report.republished
