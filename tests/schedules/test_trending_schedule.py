"""`trending_top10_schedule` evaluated as the daemon does, against a local GitHub stand-in and
PostgreSQL lineage."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from dagster import (
    DagsterInstance,
    DefaultScheduleStatus,
    build_schedule_context,
    instance_for_test,
)
from dagster._core.definitions.schedule_definition import ScheduleExecutionData

from repovault_pipeline.core.lineage import LineageStore, open_lineage
from repovault_pipeline.definitions import defs
from repovault_pipeline.resources import LineageResource
from repovault_pipeline.schedules import trending_top10_schedule
from tests.fixtures.trending.server import (
    CHANGED_HTML,
    JSON,
    SEARCH_JSON,
    TRENDING_HTML,
    Answer,
    FakeGitHub,
    fake_github,
)

TICK = datetime(2025, 1, 15, 6, 0, tzinfo=UTC)
# The fixture page's first ten cards, as partition keys (written out, not computed).
TOP_TEN = [
    "github.com/microsoft/markitdown",
    "github.com/ghostty-org/ghostty",
    "github.com/byaidu/pdfmathtranslate",
    "github.com/vercel/next.js",
    "github.com/jwasham/coding-interview-university",
    "github.com/n8n-io/n8n",
    "github.com/astral-sh/uv",
    "github.com/langchain-ai/open_deep_research",
    "github.com/hiyouga/llama-factory",
    "github.com/mrdoob/three.js",
]


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    with fake_github() as fake:
        yield fake


@pytest.fixture
def trending_env(monkeypatch: pytest.MonkeyPatch, github: FakeGitHub, pg_url: str) -> LineageStore:
    """The schedule's environment: GitHub on the local server, lineage in PostgreSQL.

    Only the services the schedule uses (the full `vault_env` also needs S3 and Kafka)."""
    for key in ("GITHUB_TOKEN", "REPOVAULT_TRENDING_LANGUAGE", "REPOVAULT_TRENDING_SINCE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("REPOVAULT_DB_URL", pg_url)
    monkeypatch.setenv("REPOVAULT_ALLOWED_HOSTS", "github.com,127.0.0.1")
    monkeypatch.setenv("REPOVAULT_ALLOWED_SCHEMES", "https,ssh,http")
    monkeypatch.setenv("REPOVAULT_TRENDING_URL", f"{github.url}/trending")
    monkeypatch.setenv("REPOVAULT_GITHUB_API", f"{github.url}/api")
    store = open_lineage(pg_url)
    with store.engine.begin() as conn:  # the session database is shared: start from no rows
        conn.exec_driver_sql("DELETE FROM repo_requests WHERE source = 'trending'")
    yield store
    store.dispose()


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as inst:
        yield inst


def evaluate(instance: DagsterInstance, when: datetime = TICK) -> ScheduleExecutionData:
    with build_schedule_context(
        instance=instance,
        scheduled_execution_time=when,
        resources={"lineage": LineageResource()},
        repository_def=defs.get_repository_def(),
    ) as context:
        return trending_top10_schedule.evaluate_tick(context)


def trending_rows(store: LineageStore) -> int:
    with store.engine.connect() as conn:
        return conn.exec_driver_sql(
            "SELECT count(*) FROM repo_requests WHERE source = 'trending'"
        ).scalar_one()


def test_schedule_is_declared_as_the_spec_says() -> None:
    sched = defs.get_repository_def().get_schedule_def("trending_top10_schedule")
    assert sched.cron_schedule == "0 6 * * *"
    assert sched.execution_timezone == "UTC"
    assert sched.default_status == DefaultScheduleStatus.RUNNING
    assert sched.job_name == "archive_repo_job"


def test_tick_requests_the_top_ten_once(
    github: FakeGitHub, trending_env: LineageStore, instance: DagsterInstance
) -> None:
    github.page()
    first = evaluate(instance)
    assert first.skip_message is None
    requests = first.run_requests
    assert len(requests) == 10
    assert [r.partition_key for r in requests] == TOP_TEN
    assert [r.run_key for r in requests] == [f"trending:2025-01-15:{key}" for key in TOP_TEN]
    assert set(instance.get_dynamic_partitions("repositories")) == set(TOP_TEN)

    third = requests[2]
    assert third.tags["repovault/source"] == "trending"
    assert third.tags["repovault/repo_url"] == "https://github.com/Byaidu/PDFMathTranslate"
    assert third.tags["repovault/trending_date"] == "2025-01-15"
    assert third.tags["repovault/trending_rank"] == "3"
    assert third.tags["repovault/requested_at"] == TICK.isoformat()
    assert third.tags["dagster/schedule_name"] == "trending_top10_schedule"

    # The same tick evaluated again (daemon restart): same keys, same request ids, same rows.
    again = evaluate(instance)
    assert [r.run_key for r in again.run_requests] == [r.run_key for r in requests]
    assert [r.tags["repovault/request_id"] for r in again.run_requests] == [
        r.tags["repovault/request_id"] for r in requests
    ]
    for request in requests:
        rows = trending_env.find(repo_id=request.partition_key)
        assert len(rows) == 1, request.partition_key
        row = rows[0]
        assert (row.request_id, row.source, row.status) == (
            request.tags["repovault/request_id"],
            "trending",
            "pending",
        )
        assert row.creation_timestamp == TICK
        assert row.repo_url == request.tags["repovault/repo_url"]
    assert trending_rows(trending_env) == 10
    assert len(github.hits_on("/trending")) == 2


def test_next_day_is_a_new_set_of_requests(
    github: FakeGitHub, trending_env: LineageStore, instance: DagsterInstance
) -> None:
    github.page()
    today = evaluate(instance)
    tomorrow = evaluate(instance, TICK.replace(day=16))
    assert [r.partition_key for r in tomorrow.run_requests] == TOP_TEN
    assert not {r.run_key for r in today.run_requests} & {r.run_key for r in tomorrow.run_requests}
    assert len(trending_env.find(repo_id=TOP_TEN[0])) == 2


def test_refused_entry_gets_a_rejected_row_and_the_next_moves_up(
    github: FakeGitHub, trending_env: LineageStore, instance: DagsterInstance
) -> None:
    page = TRENDING_HTML.replace(
        b'href="/vercel/next.js" data-view', b'href="/vercel/-next" data-view'
    )
    github.page(page)
    data = evaluate(instance)
    assert [r.partition_key for r in data.run_requests] == [
        *TOP_TEN[:3],
        *TOP_TEN[4:],
        "github.com/yt-dlp/yt-dlp",
    ]
    (row,) = [r for r in trending_env.find(statuses=["rejected"]) if r.source == "trending"]
    assert (row.repo_url, row.status, row.repo_id) == (
        "https://github.com/vercel/-next",
        "rejected",
        None,
    )
    assert "'-next' is not a valid owner or repository name" in row.error
    # uuid5 of "trending:2025-01-15:github.com/vercel/-next", computed by hand
    assert row.request_id == "0719582a-3e14-5e25-9962-968b8d2cb60b"
    assert row.creation_timestamp == TICK
    again = evaluate(instance)  # a re-evaluated tick writes no second row
    assert len(again.run_requests) == 10
    assert trending_rows(trending_env) == 11


def test_changed_page_falls_back_to_the_search_api(
    github: FakeGitHub, trending_env: LineageStore, instance: DagsterInstance
) -> None:
    github.page(CHANGED_HTML)
    github.search_api()
    data = evaluate(instance)
    expected = [
        f"github.com/{item['full_name'].lower()}" for item in json.loads(SEARCH_JSON)["items"][:10]
    ]
    assert [r.partition_key for r in data.run_requests] == expected
    assert {r.tags["repovault/trending_list"] for r in data.run_requests} == {"search_api"}
    assert github.hits_on("/api/search/repositories")[0].query["q"] == "created:>2025-01-08"


def test_nothing_to_request_is_a_skip_with_the_reason(
    github: FakeGitHub, trending_env: LineageStore, instance: DagsterInstance
) -> None:
    github.page(CHANGED_HTML)
    github.answer(
        "/api/search/repositories",
        Answer(
            403,
            b'{"message":"API rate limit exceeded"}',
            {**JSON, "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1736924400"},
        ),
    )
    data = evaluate(instance)
    assert data.run_requests == []
    assert "no repository cards" in data.skip_message
    assert "rate limited (HTTP 403); retry after 2025-01-15 07:00:00Z" in data.skip_message
    assert instance.get_dynamic_partitions("repositories") == []
    assert trending_rows(trending_env) == 0


def test_github_not_allowed_is_a_skip_not_a_crash(
    github: FakeGitHub,
    trending_env: LineageStore,
    instance: DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    github.page()
    monkeypatch.setenv("REPOVAULT_ALLOWED_HOSTS", "gitlab.example.com")
    data = evaluate(instance)
    assert data.run_requests == []
    assert "REPOVAULT_ALLOWED_HOSTS=gitlab.example.com" in data.skip_message
    assert github.hits == []


def test_a_card_without_a_readable_link_is_logged_with_its_rank(
    github: FakeGitHub,
    trending_env: LineageStore,
    instance: DagsterInstance,
    capfd: pytest.CaptureFixture[str],
) -> None:
    page = TRENDING_HTML.replace(b'href="/vercel/next.js" data-view', b"data-view", 1)
    github.page(page)
    tick = evaluate(instance)
    # the schedule's own warning, on its log (the parser's log line has no markup hint)
    logged = "".join(capfd.readouterr())
    assert "trending card #4 has no readable repository link (has GitHub changed" in logged
    assert "github.com/vercel/next.js" not in [r.partition_key for r in tick.run_requests]
    assert len(tick.run_requests) == 10  # the next card moved up
