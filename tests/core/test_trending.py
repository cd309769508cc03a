"""The trending client against a real local HTTP server: the page, the API fallback, failures."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from repovault_pipeline import cli
from repovault_pipeline.core.common.http import RETRY_AFTER_MAX_S, api_session
from repovault_pipeline.core.common.settings import ConfigError, Settings
from repovault_pipeline.core.sources.forges.client import RateLimited
from repovault_pipeline.core.sources.trending.client import (
    TrendingClient,
    TrendingError,
    TrendingUnavailable,
)
from repovault_pipeline.core.sources.trending.page import (
    InvalidTrendingOption,
    TrendingPage,
    check_language,
    language_slug,
    parse_count,
    parse_trending_page,
    trending_page_url,
)
from repovault_pipeline.core.sources.trending.tick import (
    plan_trending_tick,
    trending_request_id,
    trending_run_key,
)
from tests.fixtures.trending.server import (
    CHANGED_HTML,
    HTML,
    JSON,
    SEARCH_JSON,
    TRENDING_HTML,
    Answer,
    FakeGitHub,
    fake_github,
)

LANGUAGES = [
    line
    for line in (Path(__file__).parents[1] / "fixtures/trending/languages.txt")
    .read_text()
    .splitlines()
    if line and not line.startswith("#")
]

TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
AS_OF = datetime(2025, 1, 15, 6, 0, tzinfo=UTC)

# The fixture's cards, in page order (what GitHub showed; not computed by the parser).
PAGE_ORDER = [
    "microsoft/markitdown",
    "ghostty-org/ghostty",
    "Byaidu/PDFMathTranslate",
    "vercel/next.js",
    "jwasham/coding-interview-university",
    "n8n-io/n8n",
    "astral-sh/uv",
    "langchain-ai/open_deep_research",
    "hiyouga/LLaMA-Factory",
    "mrdoob/three.js",
    "yt-dlp/yt-dlp",
    "gradio-app/gradio",
    "Genesis-Embodied-AI/Genesis",
    "DrewThomasson/ebook2audiobook",
    "bytedance/monolith",
    "torvalds/linux",
    "home-assistant/core",
    "facebook/react",
    "dotnet/runtime",
    "pytorch/pytorch",
    "jupyter/notebook",
    "apple/swift",
    "kubernetes/kubernetes",
    "rust-lang/rust",
    "excalidraw/excalidraw",
]
API_ORDER = [item["full_name"] for item in json.loads(SEARCH_JSON)["items"]]


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    with fake_github() as fake:
        yield fake


def settings_for(fake: FakeGitHub, **extra: str) -> Settings:
    env = {
        "REPOVAULT_TRENDING_URL": f"{fake.url}/trending",
        "REPOVAULT_GITHUB_API": f"{fake.url}/api",
        **extra,
    }
    return Settings.from_env(env)


def client_for(fake: FakeGitHub, timeout: float = 2.0, **extra: str) -> TrendingClient:
    return TrendingClient(settings_for(fake, **extra), timeout=timeout, backoff_s=0)


# --------------------------------------------------------------------------- parsing


def test_fixture_page_parses_all_25_cards_in_page_order() -> None:
    page = parse_trending_page(TRENDING_HTML.decode())
    repos = page.repos
    assert (page.cards, page.unreadable) == (25, ())
    assert [r.full_name for r in repos] == PAGE_ORDER
    first = repos[0]
    assert (first.description, first.language, first.stars, first.stars_in_period) == (
        "Python tool for converting files and office documents to Markdown.",
        "Python",
        38214,
        1487,
    )
    # emoji markup inside the description, a card without language, one without description
    assert repos[1].description.startswith("👻 Ghostty is a fast")
    assert repos[4].language is None and repos[4].stars == 309877
    assert repos[7].description is None and repos[7].name == "open_deep_research"
    # entities decoded; nothing from the "Built by" avatars or the star button leaks in
    assert repos[8].description == "Unified Efficient Fine-Tuning of 100+ LLMs & VLMs (ACL 2024)"
    assert repos[14].description == "ByteDance's Recommendation System"
    assert repos[18].language == "C#" and repos[20].language == "Jupyter Notebook"
    assert repos[3].url == "https://github.com/vercel/next.js"


def test_changed_markup_yields_no_repository() -> None:
    assert parse_trending_page(CHANGED_HTML.decode()) == TrendingPage((), 0)


def test_card_without_repository_link_is_reported_with_its_position(
    caplog: pytest.LogCaptureFixture,
) -> None:
    html = TRENDING_HTML.decode().replace('href="/vercel/next.js" data-view', "data-view", 1)
    with caplog.at_level(logging.WARNING):
        page = parse_trending_page(html)
    assert (page.cards, page.unreadable) == (25, (4,))
    assert [r.full_name for r in page.repos] == PAGE_ORDER[:3] + PAGE_ORDER[4:]
    assert "trending card #4 has no readable repository link" in caplog.text
    not_a_url = html.replace('href="/astral-sh/uv" data-view', 'href="http://[x" data-view', 1)
    assert parse_trending_page(not_a_url).unreadable == (4, 7)


@pytest.mark.parametrize("level", ["h1", "h3", "h6"])
def test_repository_link_is_found_in_a_heading_of_any_level(level: str) -> None:
    """Pages from 2019-2020 put the link in an h1; current ones in an h2."""
    html = TRENDING_HTML.decode().replace('<h2 class="h3 lh-condensed">', f"<{level}>")
    html = html.replace("</a>  </h2>", f"</a>  </{level}>")
    assert html.count(f"<{level}>") == 25
    page = parse_trending_page(html)
    assert [r.full_name for r in page.repos] == PAGE_ORDER
    assert page.repos[0].stars == 38214


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("38,214", 38214),
        ("12.3k", 12300),
        ("1.2m", 1_200_000),
        ("1.5K stars today", 1500),
        ("  987 stars this week", 987),
        ("no number", None),
        (None, None),
    ],
)
def test_counts_as_github_writes_them(text: str | None, count: int | None) -> None:
    assert parse_count(text) == count


@pytest.mark.parametrize(
    ("language", "path"),
    [
        (None, "/trending"),
        ("Python", "/trending/python"),
        ("C++", "/trending/c++"),
        ("C#", "/trending/c%23"),
        ("Jupyter Notebook", "/trending/jupyter-notebook"),
        ("Cap'n Proto", "/trending/cap'n-proto"),
        ("F*", "/trending/f*"),
        ("Graphviz (DOT)", "/trending/graphviz-(dot)"),
        ("Ren'Py", "/trending/ren'py"),
        ("Objective-C++", "/trending/objective-c++"),
        ("1C Enterprise", "/trending/1c-enterprise"),
        ("Visual Basic .NET", "/trending/visual-basic-.net"),
        ("F#", "/trending/f%23"),
        ("Pro*C", "/trending/pro*c"),
        ("Unknown languages", "/trending/unknown"),
        ("  jupyter   notebook ", "/trending/jupyter-notebook"),
    ],
)
def test_language_slug(language: str | None, path: str) -> None:
    assert (
        trending_page_url("https://github.com/trending/", language) == f"https://github.com{path}"
    )


def test_every_name_of_githubs_language_menu_gets_the_menus_slug() -> None:
    """The menu as GitHub served it (name, tab, the slug of its link), saved 2026-08-20."""
    lines = (Path(__file__).parents[1] / "fixtures/trending/language_menu.tsv").read_text()
    menu = dict(line.split("\t") for line in lines.splitlines() if not line.startswith("#"))
    assert len(menu) > 800 and menu["Graphviz (DOT)"] == "graphviz-(dot)"
    wrong = {
        name: trending_page_url("https://github.com/trending", name)
        for name, slug in menu.items()
        if trending_page_url("https://github.com/trending", name)
        != f"https://github.com/trending/{slug}"
    }
    assert wrong == {}


def test_every_language_of_linguist_is_accepted_and_slugged_as_a_path_segment() -> None:
    assert len(LANGUAGES) > 800
    for name in LANGUAGES:
        assert check_language(name) == name
        slug = language_slug(name)
        assert slug == slug.lower() and " " not in slug and "/" not in slug
        assert "#" not in slug and "?" not in slug


@pytest.mark.parametrize("language", ["../admin", "py?x=1", "a/b", "x" * 80, "c%23", "a\nb"])
def test_language_that_is_not_a_name_is_refused(language: str) -> None:
    with pytest.raises(InvalidTrendingOption):
        trending_page_url("https://github.com/trending", language)


def test_since_and_language_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {"REPOVAULT_TRENDING_SINCE": "Weekly", "REPOVAULT_TRENDING_LANGUAGE": " Rust "}
    )
    assert (settings.trending_since, settings.trending_language) == ("weekly", "Rust")
    assert Settings.from_env({}).trending_since == "daily"
    with pytest.raises(ConfigError, match="REPOVAULT_TRENDING_SINCE"):
        Settings.from_env({"REPOVAULT_TRENDING_SINCE": "yearly"})


# --------------------------------------------------------------------------- over HTTP


def test_page_is_read_over_http_with_language_and_period(github: FakeGitHub) -> None:
    github.page(path="/trending/python")
    listing = client_for(github, GITHUB_TOKEN=TOKEN).fetch(language="Python", since="weekly")
    assert listing.source == "page" and listing.fallback_reason is None
    assert [r.full_name for r in listing.repos] == PAGE_ORDER
    (hit,) = github.hits
    assert hit.path == "/trending/python" and hit.query == {"since": "weekly"}
    assert "authorization" not in hit.headers  # the token is for the API only
    assert hit.headers["user-agent"].startswith("repovault/")


def test_changed_markup_falls_back_to_search_api(github: FakeGitHub) -> None:
    github.page(CHANGED_HTML)
    github.search_api()
    listing = client_for(github, GITHUB_TOKEN=TOKEN).fetch(since="daily", as_of=AS_OF)
    assert listing.source == "search_api"
    assert "no repository cards" in listing.fallback_reason
    assert [r.full_name for r in listing.repos] == API_ORDER
    assert listing.repos[1].language == "Python" and listing.repos[1].stars == 7423
    assert listing.repos[1].stars_in_period is None
    (hit,) = github.hits_on("/api/search/repositories")
    assert hit.query["q"] == "created:>2025-01-08"
    assert (hit.query["sort"], hit.query["order"]) == ("stars", "desc")
    assert hit.headers["accept"] == "application/vnd.github+json"
    assert hit.headers["x-github-api-version"] == "2022-11-28"
    assert hit.headers["authorization"] == f"Bearer {TOKEN}"


def test_api_without_token_sends_no_authorization(github: FakeGitHub) -> None:
    github.page(CHANGED_HTML)
    github.search_api()
    listing = client_for(github).fetch(language="Rust", as_of=AS_OF)
    assert listing.source == "search_api"
    (hit,) = github.hits_on("/api/search/repositories")
    assert "authorization" not in hit.headers
    assert hit.query["q"] == 'created:>2025-01-08 language:"Rust"'


def test_http_500_is_retried_once_then_falls_back(github: FakeGitHub) -> None:
    github.answer("/trending", Answer(500, b"oops", HTML))
    github.search_api()
    listing = client_for(github).fetch(as_of=AS_OF)
    assert listing.source == "search_api"
    assert "HTTP 500" in listing.fallback_reason
    assert len(github.hits_on("/trending")) == 2  # one retry, no more


def test_5xx_then_success_uses_the_page(github: FakeGitHub) -> None:
    github.answer("/trending", Answer(502, b"", HTML), Answer(200, TRENDING_HTML, HTML))
    listing = client_for(github).fetch()
    assert listing.source == "page" and len(listing.repos) == 25
    assert github.hits_on("/api/search/repositories") == []


def test_503_with_retry_after_waits_then_uses_the_page(github: FakeGitHub) -> None:
    github.answer(
        "/trending",
        Answer(503, b"busy", {**HTML, "Retry-After": "1"}),
        Answer(200, TRENDING_HTML, HTML),
    )
    listing = client_for(github).fetch()
    assert listing.source == "page"
    first, second = github.hits_on("/trending")
    assert second.at - first.at >= 0.9  # the server's Retry-After was honoured


def test_a_retry_after_longer_than_a_tick_may_wait_is_capped() -> None:
    retry = api_session(1, 0, "test").get_adapter("https://x").max_retries
    answer = type("Answer", (), {"headers": {"Retry-After": "3600"}})()
    assert retry.get_retry_after(answer) == RETRY_AFTER_MAX_S


def test_a_redirect_to_another_host_is_refused(github: FakeGitHub) -> None:
    with fake_github() as elsewhere:
        elsewhere.page()
        github.answer("/trending", Answer(302, b"", {"Location": f"{elsewhere.url}/trending"}))
        with pytest.raises(TrendingError, match="redirected to another host") as caught:
            client_for(github).fetch_page()
        assert elsewhere.hits == []
    assert "REPOVAULT_TRENDING_URL" in str(caught.value)


def test_a_redirect_on_the_same_host_is_followed(github: FakeGitHub) -> None:
    github.answer("/trending", Answer(301, b"", {"Location": "/trending/moved"}))
    github.page(path="/trending/moved")
    listing = client_for(github).fetch_page(since="weekly")
    assert [r.full_name for r in listing.repos] == PAGE_ORDER
    assert [h.path for h in github.hits] == ["/trending", "/trending/moved"]


def test_rate_limits_give_a_clear_reason_and_are_not_retried(github: FakeGitHub) -> None:
    reset = int((datetime.now(UTC) + timedelta(minutes=42)).timestamp())
    github.answer("/trending", Answer(429, b"slow down", {**HTML, "Retry-After": "120"}))
    github.answer(
        "/api/search/repositories",
        Answer(
            403,
            b'{"message":"API rate limit exceeded"}',
            {**JSON, "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)},
        ),
    )
    with pytest.raises(TrendingUnavailable) as caught:
        client_for(github, GITHUB_TOKEN=TOKEN).fetch(as_of=AS_OF)
    err = caught.value
    assert err.rate_limited
    assert isinstance(err.page_error, RateLimited) and isinstance(err.api_error, RateLimited)
    assert err.api_error.retry_at == datetime.fromtimestamp(reset, UTC)
    assert f"{datetime.fromtimestamp(reset, UTC):%Y-%m-%d %H:%M:%S}Z" in str(err)
    assert "rate limited (HTTP 429)" in str(err) and "rate limited (HTTP 403)" in str(err)
    assert TOKEN not in str(err)
    assert len(github.hits_on("/trending")) == 1
    assert len(github.hits_on("/api/search/repositories")) == 1


def test_rate_limit_without_token_suggests_one(github: FakeGitHub) -> None:
    github.answer(
        "/api/search/repositories",
        Answer(403, b"{}", {**JSON, "Retry-After": "Wed, 15 Jan 2025 07:00:00 GMT"}),
    )
    with pytest.raises(RateLimited, match="GITHUB_TOKEN") as caught:
        client_for(github).fetch_search_api(as_of=AS_OF)
    assert caught.value.retry_at == datetime(2025, 1, 15, 7, 0, tzinfo=UTC)


def test_plain_403_is_an_http_error_not_a_rate_limit(github: FakeGitHub) -> None:
    github.answer("/trending", Answer(403, b"forbidden", HTML))
    with pytest.raises(TrendingError, match="HTTP 403") as caught:
        client_for(github).fetch_page()
    assert not isinstance(caught.value, RateLimited)


def test_timeout_is_bounded_and_falls_back(github: FakeGitHub) -> None:
    hang = threading.Event()  # the page never answers while the client waits
    github.answer("/trending", Answer(200, TRENDING_HTML, HTML, held=hang))
    github.search_api()
    try:
        listing = client_for(github, timeout=0.3).fetch(as_of=AS_OF)
    finally:
        hang.set()
    assert listing.source == "search_api"
    assert "timed out after 0.3s" in listing.fallback_reason
    assert len(github.hits_on("/trending")) == 1  # a timeout is not retried


def test_both_sources_failing_says_why_for_each(github: FakeGitHub) -> None:
    github.page(CHANGED_HTML)
    github.answer("/api/search/repositories", Answer(500, b"{}", JSON))
    with pytest.raises(TrendingUnavailable) as caught:
        client_for(github).fetch(as_of=AS_OF)
    message = str(caught.value)
    assert message.startswith("trending page: ") and "no repository cards" in message
    assert "GitHub search API: " in message and "HTTP 500" in message
    assert not caught.value.rate_limited


def test_unreachable_server_is_an_error_not_a_crash() -> None:
    with fake_github() as fake:
        settings = settings_for(fake)
    client = TrendingClient(settings, timeout=0.5, backoff_s=0)
    with pytest.raises(TrendingUnavailable, match="unreachable"):
        client.fetch(as_of=AS_OF)


def test_api_answer_that_is_not_json(github: FakeGitHub) -> None:
    github.answer("/api/search/repositories", Answer(200, b"<html>login</html>", HTML))
    with pytest.raises(TrendingError, match="did not answer JSON"):
        client_for(github).fetch_search_api(as_of=AS_OF)


# --------------------------------------------------------------------------- a tick's plan


def test_plan_takes_the_top_ten_with_stable_keys(github: FakeGitHub) -> None:
    github.page()
    settings = settings_for(github)
    plan = plan_trending_tick(settings, AS_OF, client=TrendingClient(settings, backoff_s=0))
    assert plan.skip_reason is None
    assert [r.repo_id for r in plan.runs] == [f"github.com/{n.lower()}" for n in PAGE_ORDER[:10]]
    run = plan.runs[3]
    assert run.run_key == "trending:2025-01-15:github.com/vercel/next.js"
    # uuid5 of the run key, computed once by hand: a row id that must never change
    assert run.request_id == "cddd2f3d-5107-55f6-90d0-981c4be47e00"
    assert run.repo_url == "https://github.com/vercel/next.js"
    assert run.tags["repovault/source"] == "trending"
    assert run.tags["repovault/trending_date"] == "2025-01-15"
    assert run.tags["repovault/trending_rank"] == "4"
    again = plan_trending_tick(
        settings, AS_OF + timedelta(minutes=3), client=TrendingClient(settings, backoff_s=0)
    )
    assert [r.run_key for r in again.runs] == [r.run_key for r in plan.runs]
    next_day = trending_run_key(AS_OF.date() + timedelta(days=1), run.repo_id)
    assert next_day == "trending:2025-01-16:github.com/vercel/next.js"
    assert trending_request_id(next_day) == "fe6cbb61-850c-5ab4-bbaa-200391c1b148"


def test_plan_skips_without_fetching_when_github_is_not_allowed(github: FakeGitHub) -> None:
    github.page()
    settings = settings_for(github, REPOVAULT_ALLOWED_HOSTS="gitlab.com")
    plan = plan_trending_tick(settings, AS_OF)
    assert plan.runs == ()
    assert "REPOVAULT_ALLOWED_HOSTS=gitlab.com" in plan.skip_reason
    assert github.hits == []


# --------------------------------------------------------------------------- the CLI


def test_cli_trending_prints_the_list_without_requesting(
    github: FakeGitHub,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path,
) -> None:
    github.page(path="/trending/rust")
    monkeypatch.setenv("REPOVAULT_TRENDING_URL", f"{github.url}/trending")
    monkeypatch.setenv("REPOVAULT_GITHUB_API", f"{github.url}/api")
    monkeypatch.setenv("REPOVAULT_ALLOWED_HOSTS", "github.com")
    monkeypatch.setenv("REPOVAULT_DB_URL", f"sqlite:///{tmp_path}/lineage.db")
    assert cli.main(["trending", "--language", "Rust", "--since", "monthly", "--limit", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["rank", "repository", "stars"]
    assert [line.split()[1] for line in out[1:]] == PAGE_ORDER[:3]
    assert out[1].split()[:4] == ["1", "microsoft/markitdown", "38,214", "1,487"]
    assert [re.split(r"\s{2,}", line)[5] for line in out[1:]] == ["yes"] * 3  # archivable
    assert github.hits_on("/trending/rust")[0].query == {"since": "monthly"}
    assert not (tmp_path / "lineage.db").exists()  # nothing recorded


def test_cli_trending_lists_what_the_allowed_hosts_would_refuse(
    github: FakeGitHub, tmp_path: Path
) -> None:
    """Listing is not cloning: with github.com not allowed, `repovault trending` (a subprocess
    in a folder of its own) still prints the list, each entry marked as not archivable and the
    reason said once; nothing is written anywhere."""
    github.page()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {
        **os.environ,
        "REPOVAULT_TRENDING_URL": f"{github.url}/trending",
        "REPOVAULT_GITHUB_API": f"{github.url}/api",
        "REPOVAULT_ALLOWED_HOSTS": "gitlab.com",
        "REPOVAULT_ALLOWED_SCHEMES": "https,ssh",
        "REPOVAULT_DB_URL": f"sqlite:///{tmp_path}/lineage.db",
    }
    done = subprocess.run(
        [str(Path(sys.executable).with_name("repovault")), "trending", "--limit", "3"],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert out[0].split()[:6] == ["rank", "repository", "stars", "stars", "today", "language"]
    assert [line.split()[1] for line in out[1:]] == PAGE_ORDER[:3]
    assert all(re.split(r"\s{2,}", line)[5] == "no" for line in out[1:])
    assert done.stderr.splitlines() == [
        "#1, #2, #3 would not be archived: host 'github.com' is not allowed "
        "(REPOVAULT_ALLOWED_HOSTS=gitlab.com)",
        "nothing would be requested: trending repositories live on https://github.com, which is "
        "not allowed (REPOVAULT_ALLOWED_HOSTS=gitlab.com, REPOVAULT_ALLOWED_SCHEMES=https,ssh); "
        "add github.com and https to archive them",
    ]
    assert list(elsewhere.iterdir()) == [] and not (tmp_path / "lineage.db").exists()


def test_cli_trending_bad_language_is_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["trending", "--language", "../etc"]) == 2
    assert "language" in capsys.readouterr().err


def test_cli_trending_failure_is_exit_1(
    github: FakeGitHub, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    github.answer("/trending", Answer(500, b"", HTML))
    github.answer("/api/search/repositories", Answer(429, b"", {**JSON, "Retry-After": "60"}))
    monkeypatch.setenv("REPOVAULT_TRENDING_URL", f"{github.url}/trending")
    monkeypatch.setenv("REPOVAULT_GITHUB_API", f"{github.url}/api")
    monkeypatch.setenv("REPOVAULT_ALLOWED_HOSTS", "github.com")
    assert cli.main(["trending"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "rate limited" in err and "HTTP 500" in err
