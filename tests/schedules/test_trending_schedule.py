"""`trending_top10_schedule` evaluated as the daemon (or "Test schedule") does, against a local
GitHub stand-in and PostgreSQL lineage: it plans one `trending_intake_job` run and writes
nothing; that run, executed, records the requests and publishes them to `pendientes`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from dagster import (
    DagsterInstance,
    DefaultScheduleStatus,
    RunRequest,
    build_schedule_context,
    instance_for_test,
)
from dagster._core.definitions.schedule_definition import ScheduleExecutionData

from repovault_pipeline.core.lineage.requests import LineageStore, open_lineage
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
from tests.support.kafka import read_json

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


def planned(data: ScheduleExecutionData) -> tuple[RunRequest, list[dict]]:
    """The tick's one intake run request and the entries of its config."""
    [request] = data.run_requests
    return request, request.run_config["ops"]["request_trending"]["config"]["entries"]


def assert_nothing_written(instance: DagsterInstance, store: LineageStore) -> None:
    assert instance.get_dynamic_partitions("repositories") == []
    assert trending_rows(store) == 0
    assert instance.get_runs() == []


def test_schedule_is_declared_as_the_spec_says() -> None:
    sched = defs.get_repository_def().get_schedule_def("trending_top10_schedule")
    assert sched.cron_schedule == "0 6 * * *"
    assert sched.execution_timezone == "UTC"
    assert sched.default_status == DefaultScheduleStatus.RUNNING
    assert sched.job_name == "trending_intake_job"


def test_tick_plans_the_top_ten_and_writes_nothing(
    github: FakeGitHub, trending_env: LineageStore, instance: DagsterInstance
) -> None:
    github.page()
    first = evaluate(instance)
    assert first.skip_message is None
    request, entries = planned(first)
    assert request.run_key == "trending:2025-01-15"
    assert request.tags["repovault/trending_date"] == "2025-01-15"
    assert request.tags["repovault/trending_list"] == "page"
    assert request.tags["dagster/schedule_name"] == "trending_top10_schedule"
    assert [e["rank"] for e in entries] == list(range(1, 11))
    assert [e["repo_url"].removeprefix("https://").lower() for e in entries] == TOP_TEN
    assert entries[2]["repo_url"] == "https://github.com/Byaidu/PDFMathTranslate"
    assert all(e.get("reason") is None for e in entries)
    assert request.run_config["ops"]["request_trending"]["config"]["requested_at"] == (
        TICK.isoformat()
    )
    assert_nothing_written(instance, trending_env)

    # The same tick evaluated again (daemon restart): the same run key and requests.
    again_request, again = planned(evaluate(instance))
    assert again_request.run_key == request.run_key and again == entries
    assert_nothing_written(instance, trending_env)
    assert len(github.hits_on("/trending")) == 2


def test_next_day_is_a_new_set_of_requests(
    github: FakeGitHub, trending_env: LineageStore, instance: DagsterInstance
) -> None:
    github.page()
    today, today_entries = planned(evaluate(instance))
    tomorrow, tomorrow_entries = planned(evaluate(instance, TICK.replace(day=16)))
    assert tomorrow.run_key == "trending:2025-01-16" != today.run_key
    ids = {e["request_id"] for e in today_entries}
    assert not ids & {e["request_id"] for e in tomorrow_entries}


def test_the_intake_run_records_and_requests_the_tick(
    vault_env: dict[str, str],
    github: FakeGitHub,
    trending_env: LineageStore,
    instance: DagsterInstance,
) -> None:
    page = TRENDING_HTML.replace(
        b'href="/vercel/next.js" data-view', b'href="/vercel/-next" data-view'
    )
    github.page(page)
    request, entries = planned(evaluate(instance))
    # A refused entry is part of the plan, with its reason; the next one moved up.
    [refused] = [e for e in entries if e.get("reason")]
    assert (refused["rank"], refused["repo_url"]) == (4, "https://github.com/vercel/-next")
    requested = [e for e in entries if not e.get("reason")]
    assert [e["repo_url"].removeprefix("https://").lower() for e in requested] == [
        *TOP_TEN[:3],
        *TOP_TEN[4:],
        "github.com/yt-dlp/yt-dlp",
    ]
    assert_nothing_written(instance, trending_env)

    intake = defs.get_job_def("trending_intake_job")
    assert intake.execute_in_process(run_config=request.run_config, instance=instance).success
    rows = {r.request_id: r for r in trending_env.find(limit=50) if r.source == "trending"}
    assert len(rows) == 11
    row = rows[refused["request_id"]]
    assert (row.repo_url, row.status, row.repo_id) == (
        "https://github.com/vercel/-next",
        "rejected",
        None,
    )
    assert "'-next' is not a valid owner or repository name" in row.error
    # uuid5 of "trending:2025-01-15:github.com/vercel/-next", computed by hand
    assert row.request_id == "0719582a-3e14-5e25-9962-968b8d2cb60b"
    assert row.creation_timestamp == TICK
    for entry in requested:
        row = rows[entry["request_id"]]
        assert (row.status, row.repo_url, row.creation_timestamp) == (
            "pending",
            entry["repo_url"],
            TICK,
        )
    messages = read_json(vault_env["REPOVAULT_TOPIC_PENDING"])
    assert sorted((m["request_id"], m["source"]) for m in messages) == sorted(
        (e["request_id"], "trending") for e in requested
    )
    # Executed again (a re-execution): no new row; the injector's run keys (request:<id>) make
    # the republished requests the same runs.
    assert intake.execute_in_process(run_config=request.run_config, instance=instance).success
    assert trending_rows(trending_env) == 11


def test_changed_page_falls_back_to_the_search_api(
    github: FakeGitHub, trending_env: LineageStore, instance: DagsterInstance
) -> None:
    github.page(CHANGED_HTML)
    github.search_api()
    request, entries = planned(evaluate(instance))
    expected = [
        f"github.com/{item['full_name'].lower()}" for item in json.loads(SEARCH_JSON)["items"][:10]
    ]
    assert [e["repo_url"].removeprefix("https://").lower() for e in entries] == expected
    assert request.tags["repovault/trending_list"] == "search_api"
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
    _, entries = planned(evaluate(instance))
    # the schedule's own warning, on its log (the parser's log line has no markup hint)
    logged = "".join(capfd.readouterr())
    assert "trending card #4 has no readable repository link (has GitHub changed" in logged
    assert "https://github.com/vercel/next.js" not in [e["repo_url"] for e in entries]
    assert len(entries) == 10  # the next card moved up
