"""Tracked sources (docs/contract.md, `repo_sources`): which repositories a GitHub organisation or
user, or a GitLab group with its subgroups, holds today.

Plain Python, no Dagster. A listing is complete only when every page (Link headers) answered;
a rate limit, a 5xx that outlasted the retries or a bad page makes it incomplete, with the
reason, and nothing downstream treats an incomplete listing as the whole truth (a repository
missing from it is not `gone`). Tokens go only to their own API host: GITHUB_TOKEN to
REPOVAULT_GITHUB_API, GITLAB_TOKEN to REPOVAULT_GITLAB_API; a next-page link to another host
is refused. Clone URLs pass `parse_repo_url` with the configured schemes and hosts; refused
ones are reported, never archived.
"""

from __future__ import annotations

import builtins
import fnmatch
import re
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import quote, urlsplit

import requests

from repovault_pipeline import __version__
from repovault_pipeline.core.common.http import api_session, rate_limit
from repovault_pipeline.core.common.identity import InvalidRepoUrl, RepoRef, parse_repo_url
from repovault_pipeline.core.common.redact import mask_secrets
from repovault_pipeline.core.common.settings import Settings

KINDS = {"github:org": "github-org", "github:user": "github-user", "gitlab:group": "gitlab-group"}
PER_PAGE = 100
MAX_PAGES = 1000  # 100,000 repositories: a Link loop never keeps a tick busy for ever
DEFAULT_TIMEOUT_S = (5.0, 30.0)
GITHUB_API_VERSION = "2022-11-28"
_GITHUB_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$")
_GITLAB_PATH = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$")
_NEXT_LINK = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')


class InvalidSource(ValueError):
    """A source spec RepoVault cannot track; `str()` says what to give instead."""


@dataclass(frozen=True)
class Filters:
    """What of a source is archived: forks and archived repositories may be skipped; names
    (the last path segment) must match one `include` pattern, when any, and no `exclude`."""

    skip_forks: bool = False
    skip_archived: bool = False
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def keeps(self, repo: ListedRepo) -> bool:
        name = repo.name.lower()
        if (self.skip_forks and repo.fork) or (self.skip_archived and repo.archived):
            return False
        if self.include and not any(fnmatch.fnmatchcase(name, p.lower()) for p in self.include):
            return False
        return not any(fnmatch.fnmatchcase(name, p.lower()) for p in self.exclude)


@dataclass(frozen=True)
class Source:
    """A tracked source: `kind` (github-org, github-user, gitlab-group), its `name` (an
    organisation, a user, a group path) and the forge `host` it lives on."""

    kind: str
    name: str
    host: str
    filters: Filters = field(default_factory=Filters)

    @property
    def source_id(self) -> str:
        return f"{self.kind}:{self.host}/{self.name.lower()}"

    @property
    def spec(self) -> str:
        prefix = next(k for k, v in KINDS.items() if v == self.kind)
        return f"{prefix}/{self.name}"


@dataclass(frozen=True)
class ListedRepo:
    """One repository as the forge lists it."""

    full_name: str
    clone_url: str
    fork: bool = False
    archived: bool = False
    private: bool = False
    stamp: str | None = None  # when the forge last saw activity: refresh's metadata signal

    @property
    def name(self) -> str:
        return self.full_name.rsplit("/", 1)[-1]


@dataclass
class Listing:
    """What one listing found. `complete` only when every page answered: then, and only then,
    a repository missing from `repos` is missing upstream."""

    source: Source
    repos: list[tuple[RepoRef, ListedRepo]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # full name, reason
    filtered: int = 0
    complete: bool = False
    error: str | None = None
    retry_at: datetime | None = None


def parse_source(text: str, settings: Settings, filters: Filters | None = None) -> Source:
    """`github:org/NAME`, `github:user/NAME` or `gitlab:group/PATH` -> a `Source`, or
    `InvalidSource` with one line saying what to give."""
    raw = text.strip()
    prefix, _, name = raw.partition("/")
    kind = KINDS.get(prefix.lower())
    if kind is None or not name:
        raise InvalidSource(
            f"{mask_secrets(raw)[:80]!r} is not a source; give github:org/NAME, "
            "github:user/NAME or gitlab:group/PATH"
        )
    name = name.strip("/")
    if kind == "gitlab-group":
        if not _GITLAB_PATH.match(name) or ".." in name or len(name) > 255:
            raise InvalidSource(f"{name[:80]!r} is not a GitLab group path (group/subgroup/...)")
        return Source(kind, name, api_host(settings.gitlab_api), filters or Filters())
    if not _GITHUB_NAME.match(name) or "--" in name:
        raise InvalidSource(
            f"{name[:80]!r} is not a GitHub organisation or user name "
            "(up to 39 letters, digits or single hyphens)"
        )
    return Source(kind, name, api_host(settings.github_api), filters or Filters())


def api_host(api: str) -> str:
    """The forge host an API base serves: api.github.com -> github.com; the rest as given."""
    netloc = urlsplit(api).netloc.lower().rsplit("@", 1)[-1]
    return netloc.removeprefix("api.")


class ForgeClient:
    """Lists the repositories of sources over the GitHub and GitLab REST APIs."""

    def __init__(
        self,
        settings: Settings,
        session: requests.Session | None = None,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT_S,
        retries: int = 2,
        backoff_s: float = 0.5,
    ) -> None:
        self.settings = settings
        self.session = session or api_session(retries, backoff_s, f"repovault/{__version__}")
        self.timeout = timeout

    def list(self, source: Source) -> Listing:
        """Every repository of `source` that its filters keep; never raises for what the forge
        answered (the reason is in `Listing.error` and the listing is incomplete)."""
        listing = Listing(source)
        if source.kind == "gitlab-group":
            base = self.settings.gitlab_api.rstrip("/")
            url = f"{base}/groups/{quote(source.name, safe='')}/projects"
            params = {
                "include_subgroups": "true",
                "per_page": str(PER_PAGE),
                "order_by": "id",
                "sort": "asc",
            }
            headers = {"PRIVATE-TOKEN": self.settings.gitlab_token or ""}
            convert = _gitlab_repo
        else:
            base = self.settings.github_api.rstrip("/")
            if source.kind == "github-org":
                url, params = f"{base}/orgs/{quote(source.name)}/repos", {"type": "all"}
            else:
                url, params = f"{base}/users/{quote(source.name)}/repos", {"type": "owner"}
            params["per_page"] = str(PER_PAGE)
            headers = {
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": GITHUB_API_VERSION,
            }
            if self.settings.github_token:
                headers["Authorization"] = f"Bearer {self.settings.github_token}"
            convert = _github_repo
        headers = {k: v for k, v in headers.items() if v}
        origin = urlsplit(base)[:2]
        try:
            for page in range(1, MAX_PAGES + 1):
                items, next_url = self._page(url, params, headers, listing, page)
                if items is None:
                    return listing
                for item in items:
                    self._add(listing, convert(item))
                if next_url is None:
                    listing.complete = True
                    return listing
                if urlsplit(next_url)[:2] != origin:
                    listing.error = (
                        f"page {page} links its next page on another host; refused (the token "
                        "goes only to its API host): the listing is incomplete"
                    )
                    return listing
                url, params = next_url, {}
            listing.error = f"more than {MAX_PAGES} pages; the listing is incomplete"
        except (KeyError, TypeError, AttributeError, ValueError):
            listing.error = "the forge answered a page RepoVault cannot read; incomplete listing"
        return listing

    def _page(
        self,
        url: str,
        params: dict[str, str],
        headers: dict[str, str],
        listing: Listing,
        page: int,
    ) -> tuple[builtins.list[dict] | None, str | None]:
        """One page's items and the next page's URL; None and `listing.error` on failure."""
        shown = mask_secrets(url.split("?", 1)[0])
        try:
            resp = self.session.get(
                url, params=params, headers=headers, timeout=self.timeout, allow_redirects=False
            )
        except requests.RequestException as exc:
            listing.error = (
                f"{shown} is unreachable ({type(exc).__name__}) at page {page}; "
                "the listing is incomplete"
            )
            return None, None
        with resp:
            if (limited := rate_limit(resp)) is not None:
                listing.retry_at = limited.retry_at
                at = limited.retry_at
                until = f"until {at:%Y-%m-%d %H:%M:%SZ}" if at else "for now"
                listing.error = (
                    f"rate limited {until} (HTTP {resp.status_code} at page {page}); "
                    "the listing waits for the next tick"
                )
                return None, None
            if resp.status_code == 404:
                listing.error = f"{listing.source.spec} does not exist or is not visible (HTTP 404)"
                return None, None
            if resp.status_code != 200:
                listing.error = (
                    f"{shown} answered HTTP {resp.status_code} at page {page}; "
                    "the listing is incomplete"
                )
                return None, None
            items = resp.json()
            if not isinstance(items, list):
                raise ValueError("not a list")
            match = _NEXT_LINK.search(resp.headers.get("Link", ""))
            return items, match.group(1) if match else None

    def _add(self, listing: Listing, repo: ListedRepo) -> None:
        if not listing.source.filters.keeps(repo):
            listing.filtered += 1
            return
        try:
            ref = parse_repo_url(
                repo.clone_url, self.settings.allowed_schemes, self.settings.allowed_hosts
            )
        except InvalidRepoUrl as exc:
            listing.refused.append((repo.full_name, str(exc)))
            return
        listing.repos.append((ref, repo))


def _github_repo(item: dict) -> ListedRepo:
    return ListedRepo(
        full_name=str(item["full_name"]),
        clone_url=str(item["clone_url"]),
        fork=bool(item.get("fork")),
        archived=bool(item.get("archived")),
        private=bool(item.get("private")),
        # `updated_at` moves with the repository's own record, `pushed_at` with any push.
        stamp=_stamp(item.get("updated_at"), item.get("pushed_at")),
    )


def _gitlab_repo(item: dict) -> ListedRepo:
    return ListedRepo(
        full_name=str(item["path_with_namespace"]),
        clone_url=str(item["http_url_to_repo"]),
        fork=item.get("forked_from_project") is not None,
        archived=bool(item.get("archived")),
        private=item.get("visibility", "public") != "public",
        # Moves with pushes, issues, merge requests and their comments (GitLab throttles it).
        stamp=_stamp(item.get("last_activity_at")),
    )


def _stamp(*times: object) -> str | None:
    """The listing's activity times as one comparable stamp; None when the forge gave none."""
    given = [str(t) for t in times if t]
    return " ".join(given)[:64] if given else None
