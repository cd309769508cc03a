"""Reading the trending list: the page first, GitHub's Search API (most-starred repositories
created in the last 7 days, through the forge layer) when the page fails or yields no
repository, so a tick still has something to archive.

Both reads share the forge layer's client (`forges.client.ForgeClient`: one retrying session,
the token only on the API's origin) and the same bounds: a redirect is followed only within the
host that was asked, a body is read up to a size and a time, and a rate limit is a
`RateLimited` with the time it lifts.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from repovault_pipeline import __version__
from repovault_pipeline.core.common.errors import ArchiveError
from repovault_pipeline.core.common.http import rate_limit
from repovault_pipeline.core.common.redact import mask_secrets
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.sources.forges.client import ForgeClient, RateLimited
from repovault_pipeline.core.sources.forges.forge import Forge
from repovault_pipeline.core.sources.forges.github import GitHub
from repovault_pipeline.core.sources.trending.page import (
    REPO_PATH,
    TrendingRepo,
    check_language,
    check_since,
    parse_trending_page,
    trending_page_url,
)

SEARCH_WINDOW_DAYS = 7
SEARCH_PER_PAGE = 25  # as many as the trending page shows, so rejected entries can be replaced
TRENDING_TIMEOUT_S = (5.0, 20.0)  # connect, read: a tick never waits on GitHub for long
TRENDING_RETRIES = 1  # one more attempt on a connection error or a 5xx; timeouts are not retried
MAX_REDIRECTS = 5
MAX_BODY_BYTES = 8 * 1024 * 1024  # the real page is well under 1 MB


class TrendingError(ArchiveError):
    """The trending list could not be read from one source; `str()` says why."""


class TrendingUnavailable(TrendingError):
    """Neither the trending page nor the Search API gave a list."""

    def __init__(self, page_error: ArchiveError, api_error: ArchiveError) -> None:
        super().__init__(f"trending page: {page_error}; GitHub search API: {api_error}")
        self.page_error = page_error
        self.api_error = api_error

    @property
    def rate_limited(self) -> bool:
        return isinstance(self.page_error, RateLimited) or isinstance(self.api_error, RateLimited)


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


def parse_search_response(payload: Any) -> list[TrendingRepo]:
    """Repositories of a GitHub Search API answer (`items`), in its order."""
    if not isinstance(payload, dict) or not isinstance(payload.get("items"), list):
        raise TrendingError("the answer has no 'items' list; is REPOVAULT_GITHUB_API right?")
    repos = []
    for item in payload["items"]:
        if not isinstance(item, dict):
            continue
        match = REPO_PATH.match(str(item.get("full_name") or ""))
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


class TrendingClient:
    """Reads the trending list: the page first, the Search API when the page is of no use."""

    def __init__(
        self,
        settings: Settings,
        *,
        timeout: float | tuple[float, float] = TRENDING_TIMEOUT_S,
        retries: int = TRENDING_RETRIES,
        backoff_s: float = 1.0,
    ) -> None:
        self.settings = settings
        self.timeout = timeout
        self.github = GitHub.from_settings(settings)
        self.client = ForgeClient(
            timeout=timeout,
            retries=retries,
            backoff_s=backoff_s,
            user_agent=f"repovault/{__version__} (+trending schedule)",
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
        except (TrendingError, RateLimited) as page_error:
            try:
                listing = self.fetch_search_api(language, since, as_of)
            except (TrendingError, RateLimited) as api_error:
                raise TrendingUnavailable(page_error, api_error) from None
            return replace(listing, fallback_reason=str(page_error))

    def fetch_page(self, language: str | None = None, since: str = "daily") -> TrendingList:
        url = trending_page_url(self.settings.trending_url, language)
        since = check_since(since)
        shown = _shown(f"{url}?since={since}")
        body = self._get(None, url, {"since": since}, accept="text/html", what=shown)
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
        url, params = self.github.search_created(created, language, SEARCH_PER_PAGE)
        shown = _shown(url)
        body = self._get(self.github, url, params, what=shown)
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
        forge: Forge | None,
        url: str,
        params: dict[str, str],
        *,
        what: str,
        accept: str | None = None,
    ) -> str:
        """GET of `forge`'s API (None: the page) with bounded time; the session retries
        connection errors and 5xx answers. Redirects are followed only within the host that
        was asked."""
        try:
            for _ in range(MAX_REDIRECTS + 1):
                with self.client.get(
                    forge, url, params, accept=accept, stream=True, allow_redirects=False
                ) as resp:
                    if resp.is_redirect:
                        url, params = _same_host_redirect(url, resp, what), {}
                        continue
                    limited = _rate_limit(resp, what, forge is not None and not forge.token)
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
