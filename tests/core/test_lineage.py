"""`repo_requests` upserts against PostgreSQL: a request's first timestamps stay, and a final
row is never reopened by a replayed or bogus message."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.engine.url import make_url

from repovault_pipeline.core.lineage.requests import LineageStore, now, open_lineage
from repovault_pipeline.core.lineage.rows import Injected

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


def test_connections_are_bounded_and_the_url_own_options_kept(pg_url: str) -> None:
    """REPOVAULT_DB_TIMEOUT_S reaches the server as statement_timeout, and stays after a
    rollback; an `options` given in REPOVAULT_DB_URL itself still applies."""
    url = make_url(pg_url).update_query_dict({"options": "-c application_name=rv-test"})
    store = LineageStore(url.render_as_string(hide_password=False), timeout_s=7)
    try:
        for _ in range(2):  # the second time on the pooled connection, rolled back once
            with store.engine.connect() as conn:
                assert conn.execute(text("SHOW statement_timeout")).scalar() == "7s"
                assert conn.execute(text("SHOW application_name")).scalar() == "rv-test"
    finally:
        store.dispose()


def test_a_retried_step_shows_why_until_the_request_ends(vault_env: dict[str, str]) -> None:
    lineage = open_lineage(os.environ["REPOVAULT_DB_URL"])
    request_id = lineage.record_pending(URL, REPO_ID, "ui")
    lineage.record_started(request_id, URL, REPO_ID, "ui", "run-1")
    token = "ghp_" + "x" * 36
    lineage.record_retrying(request_id, 1, 4, f"git clone: network error (token {token})")
    # The retry starts again: the row still says why the attempt before it failed.
    lineage.record_started(request_id, URL, REPO_ID, "ui", "run-1", keep_error=True)
    row = lineage.get(request_id)
    assert row.status == "in_progress"
    assert row.error.startswith("attempt 1 of 4 failed: git clone: network error (token ")
    assert row.error.endswith("; retrying") and token not in row.error

    lineage.record_finished(request_id, "completed", snapshot_id="s", head_commit="h")
    assert lineage.get(request_id).error is None  # the outcome replaces the note
    lineage.record_retrying(request_id, 2, 4, "late")  # a closed row is never reopened
    assert (lineage.get(request_id).status, lineage.get(request_id).error) == ("completed", None)


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
