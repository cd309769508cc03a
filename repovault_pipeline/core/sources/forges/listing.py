"""Tracked sources (docs/contract.md, `repo_sources`): which repositories a GitHub organisation
or user, a GitLab group with its subgroups, a Gitea organisation or user or a Bitbucket
workspace holds today.

Plain Python, no Dagster. A listing is complete only when every page (the forge's next-page
links) answered;
a rate limit, a 5xx that outlasted the retries or a bad page makes it incomplete, with the
reason, and nothing downstream treats an incomplete listing as the whole truth (a repository
missing from it is not `gone`). Tokens go only to their own API host (`client.ForgeClient`);
a next-page link to another host is refused. Clone URLs pass `parse_repo_url` with the
configured schemes and hosts; refused ones are reported, never archived.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

import requests

from repovault_pipeline.core.common.identity import InvalidRepoUrl, RepoRef, parse_repo_url
from repovault_pipeline.core.common.redact import mask_secrets
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.sources.forges import forge_named
from repovault_pipeline.core.sources.forges.client import (
    DEFAULT_TIMEOUT_S,
    ForeignNextPage,
    ForgeClient,
    ForgeRefused,
    PageError,
    RateLimited,
    TooManyPages,
    Unreachable,
)
from repovault_pipeline.core.sources.forges.forge import ListedRepo

# A source spec's prefix -> the source's kind.
SOURCE_KINDS = {
    "github:org": "github-org",
    "github:user": "github-user",
    "gitlab:group": "gitlab-group",
    "gitea:org": "gitea-org",
    "gitea:user": "gitea-user",
    "bitbucket:workspace": "bitbucket-ws",
}
_SPECS = "github:org/NAME, github:user/NAME, gitlab:group/PATH, gitea:org/NAME, gitea:user/NAME "
_SPECS += "or bitbucket:workspace/NAME"
_GITHUB_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$")
_GITLAB_PATH = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$")
# A Gitea owner name, a Bitbucket workspace id: one segment, no leading dot or hyphen.
_OWNER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")


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
    """A tracked source: `kind` (github-org, github-user, gitlab-group, gitea-org, gitea-user,
    bitbucket-ws), its `name` (an organisation, a user, a group path, a workspace) and the
    forge `host` it lives on."""

    kind: str
    name: str
    host: str
    filters: Filters = field(default_factory=Filters)

    @property
    def source_id(self) -> str:
        return f"{self.kind}:{self.host}/{self.name.lower()}"

    @property
    def spec(self) -> str:
        prefix = next(k for k, v in SOURCE_KINDS.items() if v == self.kind)
        return f"{prefix}/{self.name}"


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
    """A source spec (`_SPECS`) -> a `Source`, or `InvalidSource` with one line saying what to
    give."""
    raw = text.strip()
    prefix, _, name = raw.partition("/")
    kind = SOURCE_KINDS.get(prefix.lower())
    if kind is None or not name.strip("/"):
        raise InvalidSource(f"{mask_secrets(raw)[:80]!r} is not a source; give {_SPECS}")
    name = name.strip("/")
    forge = kind.split("-", 1)[0]
    if forge == "gitlab":
        if not _GITLAB_PATH.match(name) or ".." in name or len(name) > 255:
            raise InvalidSource(f"{name[:80]!r} is not a GitLab group path (group/subgroup/...)")
        return Source(kind, name, api_host(settings.gitlab_api), filters or Filters())
    if forge in ("gitea", "bitbucket"):
        if not _OWNER_NAME.match(name):
            whose = "Gitea owner" if forge == "gitea" else "Bitbucket workspace"
            raise InvalidSource(
                f"{name[:80]!r} is not a {whose} name (one name of letters, digits, '_', '.' "
                "or '-', without '/')"
            )
        api = settings.gitea_api if forge == "gitea" else settings.bitbucket_api
        return Source(kind, name, api_host(api), filters or Filters())
    if not _GITHUB_NAME.match(name) or "--" in name:
        raise InvalidSource(
            f"{name[:80]!r} is not a GitHub organisation or user name "
            "(up to 39 letters, digits or single hyphens)"
        )
    return Source(kind, name, api_host(settings.github_api), filters or Filters())


def api_host(api: str) -> str:
    """The forge host an API base serves: api.github.com -> github.com, api.bitbucket.org ->
    bitbucket.org; the rest as given."""
    netloc = urlsplit(api).netloc.lower().rsplit("@", 1)[-1]
    return netloc.removeprefix("api.")


class SourceLister:
    """Lists the repositories of tracked sources, each on its own forge (`forges.forge_named`)."""

    def __init__(
        self,
        settings: Settings,
        session: requests.Session | None = None,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT_S,
        retries: int = 2,
        backoff_s: float = 0.5,
    ) -> None:
        self.settings = settings
        self.client = ForgeClient(
            session=session, timeout=timeout, retries=retries, backoff_s=backoff_s
        )

    def list(self, source: Source) -> Listing:
        """Every repository of `source` that its filters keep; never raises for what the forge
        answered (the reason is in `Listing.error` and the listing is incomplete). Redirects are
        not followed: the token goes to the API host that was asked, and nowhere else."""
        listing = Listing(source)
        forge = forge_named(source.kind.split("-", 1)[0], self.settings)
        url, params = forge.repos_of(source.kind, source.name)
        page = 0  # pages read
        try:
            for items in self.client.pages(forge, url, params, allow_redirects=False):
                page += 1
                for item in items:
                    self._add(listing, forge.listed_repo(item))
            listing.complete = True
        except RateLimited as exc:
            listing.retry_at = exc.retry_at
            until = f"until {exc.retry_at:%Y-%m-%d %H:%M:%SZ}" if exc.retry_at else "for now"
            listing.error = (
                f"rate limited {until} (HTTP {exc.status} at page {page + 1}); "
                "the listing waits for the next tick"
            )
        except PageError as exc:
            listing.error = _incomplete(exc, source, page + 1)
        except (KeyError, TypeError, AttributeError, ValueError):
            listing.error = "the forge answered a page RepoVault cannot read; incomplete listing"
        return listing

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


def _incomplete(exc: PageError, source: Source, page: int) -> str:
    """Why a listing stopped at `page`, and that it is incomplete."""
    if isinstance(exc, ForgeRefused) and exc.status == 404:
        return f"{source.spec} does not exist or is not visible (HTTP 404)"
    if isinstance(exc, ForgeRefused | Unreachable):
        return f"{exc} at page {page}; the listing is incomplete"
    if isinstance(exc, ForeignNextPage):
        return f"{exc} (the token goes only to its API host): the listing is incomplete"
    if isinstance(exc, TooManyPages):
        return f"{exc}; the listing is incomplete"
    return "the forge answered a page RepoVault cannot read; incomplete listing"
