"""HTTP for the forge APIs and the trending page: one way to build a session that retries.

Plain requests + urllib3, no Dagster: every client of a remote HTTP API (trending page, GitHub
and GitLab APIs) shares the same bounded retry rules, and the same rule for redirects: no
credential follows one to another host (`GuardedSession`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from repovault_pipeline.core.common.redact import credential_header

RETRY_AFTER_MAX_S = 10.0  # a 503's Retry-After is honoured up to this; a tick never waits longer


class _BoundedRetry(Retry):
    """urllib3's Retry with a cap on the wait a server may ask for in Retry-After, which only a
    503 earns: a rate limit (429) can last an hour and is reported to the caller instead."""

    RETRY_AFTER_STATUS_CODES = frozenset({503})

    def get_retry_after(self, response: Any) -> float | None:
        wait = super().get_retry_after(response)
        return None if wait is None else min(wait, RETRY_AFTER_MAX_S)


class GuardedSession(requests.Session):
    """A session that never sends a credential to another host on a redirect. requests drops
    only `Authorization` there; GitLab's `PRIVATE-TOKEN` (and any `*-Token`, `X-Api-Key`,
    `Cookie` header) would follow a forge's redirect to wherever it points. Another host is
    what requests calls one (`should_strip_auth`): another host name or port, or https
    downgraded to http."""

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: Any) -> None:
        super().rebuild_auth(prepared_request, response)
        if self.should_strip_auth(response.request.url, prepared_request.url):
            for name in [n for n in prepared_request.headers if credential_header(n)]:
                del prepared_request.headers[name]


def api_session(retries: int, backoff_s: float, user_agent: str) -> requests.Session:
    """A session whose every GET is retried by urllib3: connection errors and 5xx answers, at
    most `retries` more times, exponential backoff, a 503's Retry-After honoured (capped). Read
    timeouts and rate limits (403/429) are not retried: the caller reports them."""
    retry = _BoundedRetry(
        total=max(0, retries),
        connect=max(0, retries),
        read=False,  # a read timeout is raised as itself, not retried
        status=max(0, retries),
        other=0,
        redirect=0,
        backoff_factor=backoff_s,
        status_forcelist=(500, 502, 503, 504),
        allowed_methods=("GET",),
        respect_retry_after_header=True,
        raise_on_status=False,
        raise_on_redirect=False,
    )
    session = GuardedSession()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers["User-Agent"] = user_agent
    return session


@dataclass(frozen=True)
class RateLimit:
    """A forge refused with a rate limit; `retry_at` is when it lifts, when the forge said."""

    status: int
    retry_at: datetime | None


def rate_limit(resp: requests.Response) -> RateLimit | None:
    """A 429, or a 403 with GitHub's/GitLab's rate-limit headers (Retry-After, or
    X-RateLimit-Remaining: 0 / RateLimit-Remaining: 0 with a reset time): when it lifts."""
    if resp.status_code not in (403, 429):
        return None
    headers = resp.headers
    retry_after = headers.get("Retry-After", "").strip()
    reset = (headers.get("X-RateLimit-Reset") or headers.get("RateLimit-Reset") or "").strip()
    remaining = headers.get("X-RateLimit-Remaining") or headers.get("RateLimit-Remaining") or ""
    if resp.status_code == 403 and not (retry_after or remaining.strip() == "0"):
        return None
    return RateLimit(resp.status_code, _retry_at(retry_after, reset))


def _retry_at(retry_after: str, reset: str) -> datetime | None:
    now = datetime.now(UTC)
    if retry_after.isdigit():
        return now + timedelta(seconds=int(retry_after))
    if retry_after:
        try:
            return parsedate_to_datetime(retry_after).astimezone(UTC)
        except (TypeError, ValueError):
            pass
    if reset.isdigit():
        return datetime.fromtimestamp(int(reset), UTC)
    return None
