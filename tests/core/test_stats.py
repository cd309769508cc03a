"""`vault_stats` figures against rows this test writes into PostgreSQL and a repository it
archives into the S3 server: every count, percentile and byte total is the one expected."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from sqlalchemy import insert

from repovault_pipeline.cli import main as cli
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.lineage.requests import LineageStore, now, open_lineage
from repovault_pipeline.core.lineage.stats import compute_stats, failure_reason
from repovault_pipeline.core.lineage.tables import repo_requests, repo_state
from repovault_pipeline.core.vault.store import open_store


def row(n: int, status: str, source: str, created: datetime, **times: object) -> dict:
    base = {c.name: None for c in repo_requests.columns}
    base.update(
        request_id=f"req-{n}",
        repo_url=f"https://example.com/o/r{n}.git",
        repo_id=f"example.com/o/r{n}",
        source=source,
        status=status,
        creation_timestamp=created,
    )
    base.update(times)
    return base


@pytest.fixture
def rows(private_lineage: str) -> tuple[LineageStore, datetime]:
    lineage = open_lineage(private_lineage)
    at = now()
    t0 = at - timedelta(hours=2)
    s = timedelta(seconds=1)
    written = [
        # five completed runs: queue waits 1, 2, 3, 4, 100 s; start wait 10 s; run 5 s or 50 s
        row(
            n,
            "completed",
            "cli",
            t0,
            inyector_timestamp=t0 + q * s,
            worker_start_timestamp=t0 + (q + 10) * s,
            worker_finishing_timestamp=t0 + (q + 10 + r) * s,
        )
        for n, (q, r) in enumerate([(1, 5), (2, 5), (3, 5), (4, 5), (100, 50)])
    ]
    old = at - timedelta(days=3)  # outside the 24 h window
    written.append(
        row(
            10,
            "unchanged",
            "refresh",
            old,
            inyector_timestamp=old + s,
            worker_start_timestamp=old + 2 * s,
            worker_finishing_timestamp=old + 999 * s,
        )
    )
    for n, name in ((11, "x"), (12, "y")):
        written.append(
            row(
                n,
                "failed",
                "kafka",
                t0,
                worker_finishing_timestamp=t0 + s,
                error=f"repository not found or not readable (fatal: '{name}' 404); set "
                "GITHUB_TOKEN",
            )
        )
    written.append(
        row(
            13,
            "failed",
            "api",
            t0,
            worker_finishing_timestamp=t0 + s,
            error="git clone ran past REPOVAULT_GIT_TIMEOUT_S=1800s and was aborted",
        )
    )
    written.append(row(14, "pending", "trending", t0))
    written.append(row(15, "rejected", "kafka", t0, error="not a URL"))
    with lineage.engine.begin() as conn:
        conn.execute(insert(repo_requests), written)
    return lineage, at


def test_figures_match_the_rows_and_the_store(
    rows, archived, capsys: pytest.CaptureFixture
) -> None:
    lineage, at = rows
    _, result = archived
    settings = Settings.from_env()
    stats = compute_stats(settings, open_store(settings), lineage, at=at)
    f = stats.figures
    assert f["requests_total"] == 11
    assert (f["requests_completed"], f["requests_unchanged"], f["requests_failed"]) == (5, 1, 3)
    assert (f["requests_pending"], f["requests_rejected"], f["requests_in_progress"]) == (1, 1, 0)
    assert (f["requests_source_cli"], f["requests_source_kafka"]) == (5, 3)
    assert (f["requests_source_api"], f["requests_source_refresh"], f["requests_source_ui"]) == (
        1,
        1,
        0,
    )
    assert (f["queue_wait_count_24h"], f["queue_wait_p50_s"], f["queue_wait_p95_s"]) == (5, 3, 100)
    assert (f["start_wait_p50_s"], f["start_wait_p95_s"]) == (10, 10)
    assert (f["run_time_count_24h"], f["run_time_p50_s"], f["run_time_p95_s"]) == (5, 5, 50)
    assert f["failures_24h"] == 3
    assert stats.failures == {
        "repository not found or not readable": 2,
        "git clone ran past REPOVAULT_GIT_TIMEOUT_S=s and was aborted": 1,
    }
    assert f["archived_repositories"] == 1
    assert f["bundle_bytes"] == f["latest_bundle_bytes"] == result.bundle_size
    assert (f["tree_bytes"], f["tree_files"]) == (result.tree_bytes, result.tree_files)
    assert stats.largest == [
        {"repo_id": result.repo_id, "bundle_bytes": result.bundle_size, "bucket": result.bucket}
    ]
    assert f["past_refresh_interval"] == 0 and f["oldest_check_age_h"] < 1

    # A day later the repository is past REPOVAULT_REFRESH_INTERVAL_H=24 ...
    hour = timedelta(hours=1)
    later = at + 25 * hour
    stale = compute_stats(settings, open_store(settings), lineage, at=later)
    assert [s["repo_id"] for s in stale.stale] == [result.repo_id]
    assert (
        stale.figures["past_refresh_interval"] == 1 and stale.figures["queue_wait_count_24h"] == 0
    )
    # ... unless repo_state says it was checked meanwhile.
    with lineage.engine.begin() as conn:
        conn.execute(
            insert(repo_state),
            [
                {
                    "repo_id": result.repo_id,
                    "repo_url": "x",
                    "last_checked_at": at + timedelta(hours=2),
                }
            ],
        )
    fresh = compute_stats(settings, open_store(settings), lineage, at=later)
    assert fresh.figures["past_refresh_interval"] == 0
    assert fresh.figures["oldest_check_age_h"] == pytest.approx(23, abs=0.01)

    assert cli(["stats", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["figures"]["requests_total"] == 11
    assert printed["figures"]["archived_repositories"] == 1
    assert cli(["stats"]) == 0
    out = capsys.readouterr().out
    assert "requests_failed" in out and "repository not found or not readable" in out


def test_failure_reasons_group_what_varies() -> None:
    assert failure_reason("ref refs/heads/x is 0123456789ab in the bundle; retry") == (
        "ref refs/heads/x is in the bundle"
    )
    assert failure_reason(None) == "no reason recorded"
