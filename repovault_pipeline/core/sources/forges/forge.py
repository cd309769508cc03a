"""What every forge (GitHub, GitLab, Gitea, Bitbucket) offers RepoVault: the `Forge` protocol
its class implements, and the plain records its endpoints answer with.

Callers pick a forge object (`forges.forge_of`, `forges.forge_named`) and ask it for endpoints;
no caller branches on a forge's name. The HTTP itself is `client.ForgeClient`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import requests

from repovault_pipeline.core.common.errors import ArchiveError
from repovault_pipeline.core.common.identity import RepoRef

if TYPE_CHECKING:
    from repovault_pipeline.core.sources.forges.client import ForgeClient


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


class RepositoryExists(ArchiveError):
    """The forge refused to create a repository: one of that name exists."""


@dataclass(frozen=True)
class Feed:
    """One paged listing of a repository's metadata: `kind` of its records, and the query
    parameter that asks only for records updated after a time (None: always read whole)."""

    kind: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    since_param: str | None = None
    absent: str | None = None  # what a 404 means ("no issue tracker"): a note, not a failure


@dataclass(frozen=True)
class ReleaseAsset:
    """One downloadable file of a release; `updated` is empty when the forge does not date it."""

    id: str
    name: str
    url: str
    updated: str = ""


@dataclass(frozen=True)
class ForgeApi:
    """Where a forge's API is and the token it takes: what every forge class is built on."""

    api: str
    token: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "api", self.api.rstrip("/"))

    def page_query(self) -> dict[str, str]:
        """GitHub's and GitLab's page size; Gitea and Bitbucket name theirs differently."""
        return {"per_page": "100"}

    def page(self, response: requests.Response) -> tuple[object, str | None]:
        """A JSON list, its next page in the Link header (GitHub, GitLab, Gitea)."""
        return response.json(), response.links.get("next", {}).get("url")


class Forge(Protocol):
    """One forge's REST API: where it is, whose token it takes, and its endpoints."""

    @property
    def name(self) -> str:
        """ "github", "gitlab"."""
        ...

    @property
    def token_env(self) -> str:
        """The variable its token comes from, for messages."""
        ...

    @property
    def api(self) -> str:
        """The API base, without a trailing slash."""
        ...

    @property
    def token(self) -> str | None: ...

    def api_headers(self) -> dict[str, str]:
        """Headers of every API call, credentials aside."""
        ...

    def credentials(self) -> dict[str, str]:
        """The token's header; empty without a token. Sent only to `api`'s own origin."""
        ...

    def repos_of(self, kind: str, name: str) -> tuple[str, dict[str, str]]:
        """URL and query listing the repositories of a tracked source (`listing.Source`)."""
        ...

    def listed_repo(self, item: dict[str, Any]) -> ListedRepo:
        """One item of that listing."""
        ...

    def project(self, ref: RepoRef) -> str:
        """How the API names `ref` in its paths."""
        ...

    def feeds(self, project: str) -> tuple[Feed, ...]:
        """The metadata listings of a project."""
        ...

    def children(self, project: str, kind: str, record: dict[str, Any]) -> list[tuple[str, str]]:
        """Listings that belong to one changed record: (kind, path)."""
        ...

    def kind_of(self, feed: Feed, record: dict[str, Any]) -> str:
        """The kind a record of `feed` is kept as."""
        ...

    def release_assets(self, release: dict[str, Any]) -> list[ReleaseAsset]:
        """The downloadable files of a release."""
        ...

    def create_repository(self, client: ForgeClient, owner: str, name: str) -> ListedRepo:
        """Create the private, empty repository `owner/name` (an organisation, group or the
        token's own user) and return it; `RepositoryExists` when the name is taken, the
        client's errors for any other refusal."""
        ...

    def page_query(self) -> dict[str, str]:
        """The query asking for the largest page the forge serves."""
        ...

    def page(self, response: requests.Response) -> tuple[object, str | None]:
        """A page's items (a list, when the answer is usable) and its next page's URL."""
        ...


def stamp(*times: object) -> str | None:
    """A listing's activity times as one comparable stamp; None when the forge gave none."""
    given = [str(t) for t in times if t]
    return " ".join(given)[:64] if given else None
