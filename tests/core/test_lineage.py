"""`repo_requests` upserts against PostgreSQL: a request's first timestamps stay, and a final
row is never reopened by a replayed or bogus message."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest

from repovault_pipeline.core.lineage import Injected, now, open_lineage

URL, REPO_ID = "http://127.0.0.1:9/o/lineage.git", "127.0.0.1:9/o/lineage"


def test_retries_and_replays_keep_the_first_timestamps(vault_env: dict[str, str]) -> None:
    lineage = open_lineage(os.environ["REPOVAULT_DB_URL"])
    t0 = now() - timedelta(minutes=10)
    request_id = lineage.record_pending(URL, REPO_ID, "cli", created_at=t0)
    first_read = t0 + timedelta(seconds=1)
    lineage.record_injected([Injected(request_id, URL, REPO_ID, "cli", t0, first_read)])
    lineage.record_injected(
        [Injected(request_id, URL, REPO_ID, "cli", t0, first_read + timedelta(minutes=1))]
    )
    first_start = t0 + timedelta(seconds=2)
    lineage.record_started(request_id, URL, REPO_ID, "cli", "run-1", started_at=first_start)
    lineage.record_finished(request_id, "failed", error="network", finished_at=first_start)
    # A retry of the step, or a re-execution of the run, starts again later.
    lineage.record_started(
        request_id, URL, REPO_ID, "cli", "run-2", started_at=first_start + timedelta(minutes=5)
    )

    row = lineage.get(request_id)
    assert (row.inyector_timestamp, row.worker_start_timestamp) == (first_read, first_start)
    assert (row.status, row.run_id, row.error, row.worker_finishing_timestamp) == (
        "in_progress",
        "run-2",
        None,
        None,
    )


def test_a_bad_message_claiming_a_closed_request_does_not_reopen_it(
    vault_env: dict[str, str],
) -> None:
    lineage = open_lineage(os.environ["REPOVAULT_DB_URL"])
    request_id = lineage.record_pending(URL, REPO_ID, "cli")
    lineage.record_started(request_id, URL, REPO_ID, "cli", "run-1")
    lineage.record_finished(request_id, "completed", snapshot_id="s", head_commit="h")
    before = lineage.get(request_id)

    bogus = Injected(request_id, "garbage", None, "kafka", now(), now(), error="malformed JSON")
    lineage.record_rejected([bogus])

    assert lineage.get(request_id) == before


def test_a_part_failing_after_the_row_closed_makes_it_partial_never_a_failed_one(
    vault_env: dict[str, str],
) -> None:
    """`partial` comes with its reasons, and only a request whose code was kept becomes it."""
    lineage = open_lineage(os.environ["REPOVAULT_DB_URL"])
    kept = lineage.record_pending(URL, REPO_ID, "cli")
    lineage.record_started(kept, URL, REPO_ID, "cli", "run-1")
    with pytest.raises(ValueError, match="exactly when it has reasons"):
        lineage.record_finished(kept, "partial")
    lineage.record_finished(
        kept, "partial", snapshot_id="snap", reasons={"lfs_missing": "2 LFS objects ..."}
    )
    row = lineage.record_part_failed(kept, "metadata_failed", "rate limit reached")
    assert row is not None and row.status == "partial" and row.snapshot_id == "snap"
    assert row.reasons == {
        "lfs_missing": "2 LFS objects ...",
        "metadata_failed": "rate limit reached",
    }
    assert row.error == "lfs_missing: 2 LFS objects ...; metadata_failed: rate limit reached"

    failed = lineage.record_pending(URL, REPO_ID, "cli")
    lineage.record_started(failed, URL, REPO_ID, "cli", "run-2")
    lineage.record_finished(failed, "failed", error="clone failed")
    assert lineage.record_part_failed(failed, "metadata_failed", "x") is None
    assert (lineage.get(failed).status, lineage.get(failed).reasons) == ("failed", None)
