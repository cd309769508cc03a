"""GitHub trending: which repositories the daily schedule (and `repovault trending`) requests.

The trending page has no API, so its HTML is parsed (selectolax, the lexbor HTML5 parser): one
`<article class="Box-row">` card per repository, the repository link in the card's heading at
any level (`h1` in 2019-2020 pages, `h2` today). GitHub changes that markup from time to time;
when the page fails or yields no repository, the GitHub Search API (most-starred repositories
created in the last 7 days) stands in, so a tick still has something to archive.

Plain Python (no Dagster): the schedule glue only turns a `TickPlan` into run requests.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import requests
from selectolax.lexbor import LexborHTMLParser, LexborNode

from repovault_pipeline import __version__
from repovault_pipeline.core.common.errors import ArchiveError
from repovault_pipeline.core.common.http import api_session, rate_limit
from repovault_pipeline.core.common.identity import InvalidRepoUrl, RepoRef, parse_repo_url
from repovault_pipeline.core.common.redact import mask_secrets
from repovault_pipeline.core.common.settings import TRENDING_PERIODS, Settings
from repovault_pipeline.core.intake.kafka import KafkaGateway
from repovault_pipeline.core.intake.lifecycle import NewRequest, RequestLifecycle
from repovault_pipeline.core.intake.runs import request_tags
from repovault_pipeline.core.lineage.requests import LineageStore
from repovault_pipeline.core.lineage.rows import Injected

SINCE_CHOICES = TRENDING_PERIODS
TOP_N = 10
SEARCH_WINDOW_DAYS = 7
SEARCH_PER_PAGE = 25  # as many as the trending page shows, so rejected entries can be replaced
DEFAULT_TIMEOUT_S = (5.0, 20.0)  # connect, read: a tick never waits on GitHub for long
DEFAULT_RETRIES = 1  # one more attempt on a connection error or a 5xx; timeouts are not retried
MAX_REDIRECTS = 5
MAX_BODY_BYTES = 8 * 1024 * 1024  # the real page is well under 1 MB
GITHUB_API_VERSION = "2022-11-28"
TRENDING_SOURCE = "trending"

TAG_TRENDING_DATE = "repovault/trending_date"
TAG_TRENDING_RANK = "repovault/trending_rank"
TAG_TRENDING_LIST = "repovault/trending_list"  # "page" or "search_api": where the rank is from
_TRENDING_NAMESPACE = uuid.UUID("0d3c8f5e-2a77-4c53-9a43-6f0e7b1d9c24")

# Every character of a language name in GitHub's menu (github-linguist's languages.yml):
# letters, digits, space and # ' ( ) * + - . (C#, Cap'n Proto, Graphviz (DOT), F*, C++).
_LANGUAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 #'()*+._-]{0,49}$")
# Characters a URL path segment may carry as they are (RFC 3986 pchar); '#' and '%' are escaped.
_PATH_SAFE = "-._~!$&'()*+,;=:@"
# Menu entries that are not a linguist language name.
_MENU_SLUGS = {"unknown languages": "unknown"}
_REPO_PATH = re.compile(r"^/?(?P<owner>[A-Za-z0-9_.-]+)/(?P<name>[A-Za-z0-9_.-]+)/?$")
_COUNT = re.compile(r"(\d[\d,]*(?:\.\d+)?)\s*([kKmM]?)")
_MULTIPLIER = {"": 1, "k": 1_000, "m": 1_000_000}
_HEADING_LINK = ", ".join(f"h{level} a[href]" for level in range(1, 7))
log = logging.getLogger(__name__)


class TrendingError(ArchiveError):
    """The trending list could not be read from one source; `str()` says why."""


class RateLimited(TrendingError):
    """GitHub refused with a rate limit; `retry_at` says when it lifts, when GitHub said so."""

    def __init__(self, message: str, retry_at: datetime | None = None) -> None:
        super().__init__(message)
        self.retry_at = retry_at


class TrendingUnavailable(TrendingError):
    """Neither the trending page nor the Search API gave a list."""

    def __init__(self, page_error: TrendingError, api_error: TrendingError) -> None:
        super().__init__(f"trending page: {page_error}; GitHub search API: {api_error}")
        self.page_error = page_error
        self.api_error = api_error

    @property
    def rate_limited(self) -> bool:
        return isinstance(self.page_error, RateLimited) or isinstance(self.api_error, RateLimited)


class InvalidTrendingOption(ValueError):
    """A language or period the trending page cannot be asked for (bad input, not a failure)."""


@dataclass(frozen=True)
class TrendingRepo:
    """One entry of the list, as GitHub shows it."""

    owner: str
    name: str
    description: str | None = None
    language: str | None = None
    stars: int | None = None
    stars_in_period: int | None = None  # None from the Search API, which has no such figure

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def url(self) -> str:
        return f"https://github.com/{self.owner}/{self.name}"


@dataclass(frozen=True)
class TrendingList:
    """The repositories in page order, and where they came from."""

    repos: tuple[TrendingRepo, ...]
    source: str  # "page" or "search_api"
    url: str  # what was fetched (credentials masked)
    since: str
    language: str | None
    fallback_reason: str | None = None  # why the page was not used, when it was not
    unreadable: tuple[int, ...] = ()  # page positions (1-based) of cards without a repository link


# --------------------------------------------------------------------------- page parsing


@dataclass(frozen=True)
class TrendingPage:
    """The repository cards of a page in page order, and the positions of the cards whose
    repository link could not be read (a markup change shows there before it empties the list)."""

    repos: tuple[TrendingRepo, ...]
    cards: int
    unreadable: tuple[int, ...] = ()


def parse_trending_page(html: str) -> TrendingPage:
    """The `article.Box-row` cards of a trending page: the repository link is the first link in
    the card's heading, whatever its level; description, language and counts where present."""
    repos: list[TrendingRepo] = []
    unreadable: list[int] = []
    cards = LexborHTMLParser(html).css("article.Box-row")
    for position, card in enumerate(cards, start=1):
        link = card.css_first(_HEADING_LINK)
        href = (link.attributes.get("href") or "") if link is not None else ""
        match = _REPO_PATH.match(_url_path(href.strip()))
        if not match:
            log.warning("trending card #%d has no readable repository link; skipped", position)
            unreadable.append(position)
            continue
        repos.append(
            TrendingRepo(
                owner=match["owner"],
                name=match["name"],
                description=_text(card.css_first("p.col-9")),
                language=_text(card.css_first('span[itemprop="programmingLanguage"]')),
                stars=parse_count(_text(card.css_first('a[href$="/stargazers"]'))),
                stars_in_period=parse_count(
                    _text(card.css_first("span.d-inline-block.float-sm-right"))
                ),
            )
        )
    return TrendingPage(tuple(repos), len(cards), tuple(unreadable))


def _url_path(href: str) -> str:
    """The path of a link; empty for one that is not a URL at all (`http://[x`)."""
    try:
        return urlsplit(href).path
    except ValueError:
        return ""


def _text(node: LexborNode | None) -> str | None:
    """A node's text with white space folded; None for a missing or empty node."""
    if node is None:
        return None
    text = " ".join((node.text(deep=True, separator=" ") or "").split())
    return text or None


def parse_count(text: str | None) -> int | None:
    """The first count in `text` as GitHub writes them: `1,234`, `12.3k`, `1.2m`."""
    match = _COUNT.search(text or "")
    if not match:
        return None
    number, suffix = match.group(1).replace(",", ""), match.group(2).lower()
    return round(float(number) * _MULTIPLIER[suffix])


def parse_search_response(payload: Any) -> list[TrendingRepo]:
    """Repositories of a GitHub Search API answer (`items`), in its order."""
    if not isinstance(payload, dict) or not isinstance(payload.get("items"), list):
        raise TrendingError("the answer has no 'items' list; is REPOVAULT_GITHUB_API right?")
    repos = []
    for item in payload["items"]:
        if not isinstance(item, dict):
            continue
        match = _REPO_PATH.match(str(item.get("full_name") or ""))
        if not match:
            continue
        stars = item.get("stargazers_count")
        repos.append(
            TrendingRepo(
                owner=match["owner"],
                name=match["name"],
                description=" ".join(str(item.get("description") or "").split()) or None,
                language=item.get("language") or None,
                stars=stars if isinstance(stars, int) else None,
            )
        )
    return repos


# --------------------------------------------------------------------------- HTTP client


def check_since(since: str) -> str:
    value = (since or "").strip().lower()
    if value not in SINCE_CHOICES:
        raise InvalidTrendingOption(f"since={since!r} is not one of {', '.join(SINCE_CHOICES)}")
    return value


def check_language(language: str | None) -> str | None:
    """A language name as GitHub's menu lists it (Python, C++, C#, Cap'n Proto, F*), or None."""
    if language is None or not language.strip():
        return None
    value = language.strip()
    if not _LANGUAGE.match(value):
        raise InvalidTrendingOption(
            f"language {value[:60]!r} is not a language name; use the name GitHub's language "
            "menu shows (letters, digits, spaces and # ' ( ) * + - .)"
        )
    return value


def language_slug(language: str) -> str:
    """GitHub's URL slug of a language: linguist's default alias (lowercase, each white space
    a '-') with what a path segment cannot carry escaped: `C#` -> `c%23`, `Cap'n Proto` ->
    `cap'n-proto`, `Graphviz (DOT)` -> `graphviz-(dot)`."""
    name = " ".join(language.split()).lower()
    return _MENU_SLUGS.get(name) or quote(name.replace(" ", "-"), safe=_PATH_SAFE)


def trending_page_url(base: str, language: str | None) -> str:
    """`<trending url>[/<language slug>]`."""
    language = check_language(language)
    if not language:
        return base.rstrip("/")
    return f"{base.rstrip('/')}/{language_slug(language)}"


class TrendingClient:
    """Reads the trending list: the page first, the Search API when the page is of no use."""

    def __init__(
        self,
        settings: Settings,
        *,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        backoff_s: float = 1.0,
    ) -> None:
        self.settings = settings
        self.timeout = timeout
        self.session = api_session(
            retries, backoff_s, f"repovault/{__version__} (+trending schedule)"
        )

    def fetch(
        self,
        language: str | None = None,
        since: str = "daily",
        as_of: datetime | None = None,
    ) -> TrendingList:
        """The list in page order; raises `TrendingUnavailable` when both sources fail."""
        language = check_language(language)
        since = check_since(since)
        try:
            return self.fetch_page(language, since)
        except TrendingError as page_error:
            try:
                listing = self.fetch_search_api(language, since, as_of)
            except TrendingError as api_error:
                raise TrendingUnavailable(page_error, api_error) from None
            return replace(listing, fallback_reason=str(page_error))

    def fetch_page(self, language: str | None = None, since: str = "daily") -> TrendingList:
        url = trending_page_url(self.settings.trending_url, language)
        since = check_since(since)
        shown = _shown(f"{url}?since={since}")
        body = self._get(
            url, params={"since": since}, headers={"Accept": "text/html"}, what=shown, api=False
        )
        page = parse_trending_page(body)
        if not page.repos:
            found = (
                f"{page.cards} cards but none names a repository"
                if page.cards
                else "no repository cards"
            )
            raise TrendingError(f"{shown} has {found} (has GitHub changed its markup?)")
        return TrendingList(page.repos, "page", shown, since, language, unreadable=page.unreadable)

    def fetch_search_api(
        self,
        language: str | None = None,
        since: str = "daily",
        as_of: datetime | None = None,
    ) -> TrendingList:
        """Most-starred repositories created in the last 7 days: the closest public stand-in."""
        created = ((as_of or datetime.now(UTC)) - timedelta(days=SEARCH_WINDOW_DAYS)).date()
        query = f"created:>{created.isoformat()}"
        if language:
            query += f' language:"{language}"'
        url = f"{self.settings.github_api.rstrip('/')}/search/repositories"
        params = {"q": query, "sort": "stars", "order": "desc", "per_page": str(SEARCH_PER_PAGE)}
        headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": GITHUB_API_VERSION,
        }
        if self.settings.github_token:
            headers["Authorization"] = f"Bearer {self.settings.github_token}"
        shown = _shown(url)
        body = self._get(url, params=params, headers=headers, what=shown, api=True)
        try:
            payload = json.loads(body)
        except ValueError:
            raise TrendingError(f"{shown} did not answer JSON") from None
        try:
            repos = parse_search_response(payload)
        except TrendingError as exc:
            raise TrendingError(f"{shown}: {exc}") from None
        if not repos:
            raise TrendingError(f"{shown} found no repository created since {created}")
        return TrendingList(tuple(repos), "search_api", shown, since, language)

    def _get(
        self,
        url: str,
        *,
        params: dict[str, str],
        headers: dict[str, str],
        what: str,
        api: bool,
    ) -> str:
        """GET with bounded time; the session retries connection errors and 5xx answers.
        Redirects are followed only within the host that was asked."""
        try:
            for _ in range(MAX_REDIRECTS + 1):
                with self.session.get(
                    url,
                    params=params,
                    headers=headers,
                    timeout=self.timeout,
                    stream=True,
                    allow_redirects=False,
                ) as resp:
                    if resp.is_redirect:
                        url, params = _same_host_redirect(url, resp, what), {}
                        continue
                    limited = _rate_limit(resp, what, api and not self.settings.github_token)
                    if limited:
                        raise limited
                    if resp.status_code != 200:
                        raise TrendingError(
                            f"{what} answered HTTP {resp.status_code} {resp.reason or ''}".rstrip()
                        )
                    return _read_body(resp, what, time.monotonic() + 2 * _budget(self.timeout))
            raise TrendingError(f"{what} redirected more than {MAX_REDIRECTS} times")
        except requests.Timeout:
            raise TrendingError(f"{what} timed out after {_seconds(self.timeout)}") from None
        except requests.ConnectionError as exc:
            raise TrendingError(f"{what} is unreachable ({_reason(exc)})") from None
        except requests.RequestException as exc:
            raise TrendingError(f"{what} failed ({_reason(exc)})") from None


def _same_host_redirect(url: str, resp: requests.Response, what: str) -> str:
    """The redirect's target when it stays on the scheme, host and port that were asked; a
    redirect elsewhere is refused (a page that sends us to another host is not GitHub's)."""
    target = urljoin(resp.url or url, resp.headers.get("Location", ""))
    asked, went = urlsplit(url), urlsplit(target)
    if (went.scheme, went.netloc) != (asked.scheme, asked.netloc):
        raise TrendingError(
            f"{what} redirected to another host ({_shown(f'{went.scheme}://{went.netloc}')}); "
            "refused: check REPOVAULT_TRENDING_URL / REPOVAULT_GITHUB_API"
        )
    return target


def _read_body(resp: requests.Response, what: str, deadline: float) -> str:
    """The body, bounded in size and in time (a server trickling bytes never times out)."""
    chunks: list[bytes] = []
    size = 0
    for chunk in resp.iter_content(64 * 1024):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise TrendingError(f"{what} sent more than {MAX_BODY_BYTES // 2**20} MB")
        if time.monotonic() > deadline:
            raise TrendingError(f"{what} is sending too slowly; gave up")
        chunks.append(chunk)
    # requests assumes ISO-8859-1 for text/* without a charset; GitHub serves UTF-8.
    declared = "charset=" in resp.headers.get("Content-Type", "").lower()
    return b"".join(chunks).decode(
        resp.encoding if declared and resp.encoding else "utf-8", errors="replace"
    )


def _rate_limit(resp: requests.Response, what: str, hint_token: bool) -> RateLimited | None:
    """403/429 with GitHub's rate-limit headers (or any 429): when it lifts, if GitHub says."""
    limited = rate_limit(resp)
    if limited is None:
        return None
    retry_at = limited.retry_at
    when = f"; retry after {retry_at:%Y-%m-%d %H:%M:%SZ}" if retry_at else ""
    hint = "; set GITHUB_TOKEN for a higher limit" if hint_token else ""
    return RateLimited(f"{what} is rate limited (HTTP {resp.status_code}){when}{hint}", retry_at)


def _budget(timeout: float | tuple[float, float]) -> float:
    return max(timeout) if isinstance(timeout, tuple) else timeout


def _seconds(timeout: float | tuple[float, float]) -> str:
    return f"{_budget(timeout):g}s"


def _reason(exc: Exception) -> str:
    return exc.__class__.__name__


def _shown(url: str) -> str:
    return mask_secrets(url)


# --------------------------------------------------------------------------- a schedule tick


@dataclass(frozen=True)
class PlannedRun:
    """One run the tick requests; everything in it is derived from the tick date and repo."""

    rank: int
    repo: TrendingRepo
    repo_id: str
    repo_url: str
    run_key: str
    request_id: str
    tags: dict[str, str]


@dataclass(frozen=True)
class RejectedEntry:
    rank: int
    repo: TrendingRepo
    reason: str
    request_id: str


@dataclass(frozen=True)
class TickPlan:
    """What a tick does: the runs to request, the entries refused, or why it does nothing."""

    requested_at: datetime
    runs: tuple[PlannedRun, ...] = ()
    rejected: tuple[RejectedEntry, ...] = ()
    listing: TrendingList | None = None
    skip_reason: str | None = None


def trending_run_key(day: date, repo_id: str) -> str:
    """One run per repository per trending day: a re-evaluated tick gives the same keys."""
    return f"trending:{day.isoformat()}:{repo_id}"


def trending_request_id(run_key: str) -> str:
    """Derived from the run key, so a re-evaluated tick writes the same lineage row."""
    return str(uuid.uuid5(_TRENDING_NAMESPACE, run_key))


def plan_trending_tick(
    settings: Settings,
    scheduled_at: datetime | None = None,
    *,
    client: TrendingClient | None = None,
    limit: int = TOP_N,
    language: str | None = None,
    since: str | None = None,
    preview: bool = False,
) -> TickPlan:
    """Read the list and turn its first `limit` acceptable entries into planned runs.

    No side effect: the schedule hands it to the intake run (`accept_tick`); the CLI prints it.
    `scheduled_at` (default now) fixes the day of the run keys and the requests' time.
    An entry whose URL is refused (REPOVAULT_ALLOWED_*) is reported and the next one moves up.
    When github.com is not allowed the schedule does not read the list it could not use; a
    `preview` (`repovault trending`) reads it anyway, every entry refused with the reason.
    """
    requested_at = (scheduled_at or datetime.now(UTC)).astimezone(UTC)
    refused = None
    if "github.com" not in settings.allowed_hosts or "https" not in settings.allowed_schemes:
        refused = (
            "trending repositories live on https://github.com, which is not allowed "
            f"(REPOVAULT_ALLOWED_HOSTS={','.join(settings.allowed_hosts)}, "
            f"REPOVAULT_ALLOWED_SCHEMES={','.join(settings.allowed_schemes)}); "
            "add github.com and https to archive them"
        )
        if not preview:
            return TickPlan(requested_at, skip_reason=refused)
    client = client or TrendingClient(settings)
    language = language if language is not None else settings.trending_language
    try:
        listing = client.fetch(language, since or settings.trending_since, as_of=requested_at)
    except (TrendingError, InvalidTrendingOption) as exc:
        return TickPlan(requested_at, skip_reason=f"no trending list: {exc}")

    day = requested_at.date()
    runs: list[PlannedRun] = []
    rejected: list[RejectedEntry] = []
    seen: set[str] = set()
    for rank, repo in enumerate(listing.repos, start=1):
        if len(runs) >= limit:
            break
        key = trending_run_key(day, f"github.com/{repo.full_name}".lower())
        try:
            ref = parse_repo_url(repo.url, settings.allowed_schemes, settings.allowed_hosts)
        except InvalidRepoUrl as exc:
            rejected.append(RejectedEntry(rank, repo, str(exc), trending_request_id(key)))
            continue
        if ref.repo_id in seen:
            continue
        seen.add(ref.repo_id)
        run_key = trending_run_key(day, ref.repo_id)
        request_id = trending_request_id(run_key)
        tags = {
            **request_tags(request_id, ref.url, TRENDING_SOURCE, requested_at),
            TAG_TRENDING_DATE: day.isoformat(),
            TAG_TRENDING_RANK: str(rank),
            TAG_TRENDING_LIST: listing.source,
        }
        runs.append(PlannedRun(rank, repo, ref.repo_id, ref.url, run_key, request_id, tags))
    skip_reason = refused
    if not runs and not refused:
        reasons = "; ".join(f"{r.repo.full_name}: {r.reason}" for r in rejected[:3])
        skip_reason = f"none of the {len(listing.repos)} trending repositories can be requested"
        skip_reason += f" ({reasons})" if reasons else ""
    return TickPlan(requested_at, tuple(runs), tuple(rejected), listing, skip_reason)


@dataclass(frozen=True)
class TickEntry:
    """One entry of a tick as its intake run receives it (run config): requested, or refused
    with `reason`."""

    rank: int
    repo_url: str
    request_id: str
    reason: str | None = None


@dataclass
class TickAcceptance:
    """What the intake run did: the requests it queued and the entries it refused."""

    requested: list[tuple[TickEntry, RepoRef]] = field(default_factory=list)
    refused: list[TickEntry] = field(default_factory=list)


def tick_entries(plan: TickPlan) -> list[TickEntry]:
    """The plan's entries in rank order, for the intake run's config."""
    entries = [TickEntry(r.rank, r.repo_url, r.request_id) for r in plan.runs]
    entries += [TickEntry(r.rank, r.repo.url, r.request_id, r.reason) for r in plan.rejected]
    return sorted(entries, key=lambda e: e.rank)


def accept_tick(
    settings: Settings,
    lineage: LineageStore,
    gateway: KafkaGateway,
    requested_at: datetime,
    entries: list[TickEntry],
) -> TickAcceptance:
    """The trending intake run's work, never the schedule's evaluation (which must have no
    effect): a `rejected` row per refused entry, a `pending` row and a `pendientes` message per
    requested one; the injector turns those into archive runs like any request. Request ids
    derive from the tick's day and repository, so a re-executed intake run writes no new row and
    its messages map to the runs of the first (run key `request:<request_id>`). The config can
    be edited in the launchpad, so every URL is validated again."""
    done = TickAcceptance()
    for entry in entries:
        if entry.reason is not None:
            done.refused.append(entry)
            continue
        try:
            ref = parse_repo_url(entry.repo_url, settings.allowed_schemes, settings.allowed_hosts)
        except InvalidRepoUrl as exc:
            done.refused.append(replace(entry, reason=str(exc)))
            continue
        done.requested.append((entry, ref))
    lifecycle = RequestLifecycle(lineage, gateway, settings.topics)
    lifecycle.reject(
        [
            Injected(
                e.request_id,
                e.repo_url,
                None,
                TRENDING_SOURCE,
                created_at=requested_at,
                injected_at=requested_at,  # when the tick judged it
                error=e.reason,
            )
            for e in done.refused
        ]
    )
    lifecycle.queue_all(
        [
            NewRequest(ref.url, ref.repo_id, TRENDING_SOURCE, entry.request_id, requested_at)
            for entry, ref in done.requested
        ]
    )
    return done


def iter_rows(plan: TickPlan) -> Iterator[tuple[int, TrendingRepo, str | None]]:
    """Planned and rejected entries in rank order: (rank, repo, reason it is refused or None)."""
    entries: list[tuple[int, TrendingRepo, str | None]] = [
        (r.rank, r.repo, None) for r in plan.runs
    ]
    entries += [(r.rank, r.repo, r.reason) for r in plan.rejected]
    yield from sorted(entries, key=lambda e: e[0])
