"""The one HTTP client of the forge REST APIs (GitHub, GitLab, Gitea, Bitbucket): GETs on a
retrying session (`common.http.api_session`) and the one POST (a repository created to restore
into), a forge's token attached only to a URL on that forge's own API origin, pagination by the
forge's next-page link (`Forge.page`), and the answers a caller cannot use raised as typed
errors (`RateLimited`, `PageError`s), so each
caller words them for its own reader.

Redirects: followed by default, and then `GuardedSession` drops every credential on the way to
another host; a caller that must not be redirected at all asks `allow_redirects=False`. A
next-page link to another origin is refused (`ForeignNextPage`): a page is read only from the
API that was asked.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import requests

from repovault_pipeline import __version__
from repovault_pipeline.core.common.errors import ArchiveError
from repovault_pipeline.core.common.http import api_session, rate_limit
from repovault_pipeline.core.common.redact import mask_secrets
from repovault_pipeline.core.sources.forges.forge import Forge

MAX_PAGES = 1000  # 100,000 records: a Link loop never keeps a caller busy for ever
DEFAULT_TIMEOUT_S = (5.0, 30.0)
USER_AGENT = f"repovault/{__version__}"


class RateLimited(ArchiveError):
    """A forge refused with a rate limit; `retry_at` says when it lifts, when the forge said."""

    def __init__(self, message: str, retry_at: datetime | None = None, status: int = 429) -> None:
        super().__init__(message)
        self.retry_at = retry_at
        self.status = status


class PageError(ArchiveError):
    """A page of a listing that cannot be used; `url` is the page asked for."""

    def __init__(self, message: str, url: str) -> None:
        super().__init__(message)
        self.url = url


class ForgeRefused(PageError):
    """The forge answered a status other than 200."""

    def __init__(self, status: int, url: str) -> None:
        super().__init__(f"{shown(url)} answered HTTP {status}", url)
        self.status = status


class Unreachable(PageError):
    """No answer came, after the session's retries; `reason` names the failure."""

    def __init__(self, exc: requests.RequestException, url: str) -> None:
        self.reason = type(exc).__name__
        super().__init__(f"{shown(url)} is unreachable ({self.reason})", url)


class UnreadablePage(PageError):
    """The page is not a JSON list."""


class ForeignNextPage(PageError):
    """The page links its next page on another origin."""


class TooManyPages(PageError):
    """More than MAX_PAGES pages: a Link loop, or a listing no tick should read."""


def origin(url: str) -> tuple[str, str, int | None]:
    """Scheme, host and port: what a token is bound to."""
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


def shown(url: str) -> str:
    """A URL fit for a message: no query, no credentials."""
    return mask_secrets(url.split("?", 1)[0])


class ForgeClient:
    """GETs against forge APIs on one retrying session; `requests` counts the answers."""

    def __init__(
        self,
        *,
        session: requests.Session | None = None,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT_S,
        retries: int = 2,
        backoff_s: float = 0.5,
        user_agent: str = USER_AGENT,
    ) -> None:
        self.session = session or api_session(retries, backoff_s, user_agent)
        self.timeout = timeout
        self.requests = 0

    def headers(self, forge: Forge | None, url: str, accept: str | None) -> dict[str, str]:
        """The forge's API headers (or just `accept`), and its token when `url` is on its API."""
        headers = {"Accept": accept} if accept else dict(forge.api_headers() if forge else {})
        if forge is not None and origin(url) == origin(forge.api):
            headers.update(forge.credentials())
        return headers

    def get(
        self,
        forge: Forge | None,
        url: str,
        params: dict[str, str] | None = None,
        *,
        accept: str | None = None,
        stream: bool = False,
        allow_redirects: bool = True,
    ) -> requests.Response:
        """One GET; `requests.RequestException` when no answer came (after the retries)."""
        return self._send(
            "GET",
            forge,
            url,
            accept,
            params=params,
            stream=stream,
            allow_redirects=allow_redirects,
        )

    def post(self, forge: Forge, url: str, body: dict[str, Any]) -> requests.Response:
        """One POST of `body` as JSON, never redirected (a redirect could carry it elsewhere);
        `requests.RequestException` when no answer came. The only POST: creating a repository
        to restore into."""
        return self._send("POST", forge, url, None, json=body, allow_redirects=False)

    def _send(
        self, method: str, forge: Forge | None, url: str, accept: str | None, **options: Any
    ) -> requests.Response:
        response = self.session.request(
            method, url, headers=self.headers(forge, url, accept), timeout=self.timeout, **options
        )
        self.requests += 1
        return response

    def pages(
        self,
        forge: Forge,
        url: str,
        params: dict[str, str],
        *,
        accept: str | None = None,
        allow_redirects: bool = True,
    ) -> Iterator[list[Any]]:
        """The items of each page, following the forge's next-page link on the API's origin.
        Raises `RateLimited` or a `PageError` at the page that failed; the pages before it
        were yielded."""
        query: dict[str, str] | None = {**params, **forge.page_query()}
        for page in range(1, MAX_PAGES + 1):
            try:
                response = self.get(
                    forge, url, query, accept=accept, allow_redirects=allow_redirects
                )
            except requests.RequestException as exc:
                raise Unreachable(exc, url) from None
            with response:
                check(response, url)
                try:
                    items, next_url = forge.page(response)
                except (ValueError, AttributeError):
                    items = next_url = None
                if not isinstance(items, list):
                    raise UnreadablePage(f"{shown(url)} answered no list", url)
            yield items
            if next_url is None:
                return
            if origin(next_url) != origin(url):
                raise ForeignNextPage(
                    f"page {page} links its next page on another host; refused", url
                )
            url, query = next_url, None  # the next link carries the query
        raise TooManyPages(f"more than {MAX_PAGES} pages", url)


def answer(response: requests.Response, url: str, ok: int = 200) -> dict[str, Any]:
    """The JSON object of an answer of status `ok`; `check`'s errors, or `UnreadablePage`."""
    check(response, url, ok)
    try:
        doc = response.json()
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise UnreadablePage(f"{shown(url)} answered no JSON object", url)
    return doc


def check(response: requests.Response, url: str, ok: int = 200) -> None:
    """`RateLimited` for a rate limit, `ForgeRefused` for any other status but `ok`."""
    limited = rate_limit(response)
    if limited is not None:
        raise RateLimited(
            f"{shown(url)} is rate limited (HTTP {limited.status})",
            limited.retry_at,
            limited.status,
        )
    if response.status_code != ok:
        raise ForgeRefused(response.status_code, url)
