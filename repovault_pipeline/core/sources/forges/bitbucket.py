"""Bitbucket Cloud's REST API 2.0 endpoints (REPOVAULT_BITBUCKET_API, BITBUCKET_USERNAME with an
app password): a workspace's repositories, a repository's pull requests and their comments,
and its issues with their comments when its issue tracker is on. Bitbucket has no releases
(its Downloads are not archived) and no labels or milestones of pull requests."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import requests

from repovault_pipeline.core.common.identity import RepoRef
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.sources.forges.client import ForgeClient, answer
from repovault_pipeline.core.sources.forges.forge import (
    Feed,
    ForgeApi,
    ListedRepo,
    ReleaseAsset,
    RepositoryExists,
    stamp,
)

# The largest page every listing used here serves (pull requests: 50).
PAGE_LEN = "50"
_PR_STATES = "state=OPEN&state=MERGED&state=DECLINED&state=SUPERSEDED"


@dataclass(frozen=True)
class Bitbucket(ForgeApi):
    """Bitbucket Cloud at `api` (`https://api.bitbucket.org/2.0`); `token` is the app password
    of `username`, used only when both are set (HTTP basic authentication)."""

    username: str | None = None

    name = "bitbucket"
    token_env = "BITBUCKET_APP_PASSWORD"

    @classmethod
    def from_settings(cls, settings: Settings) -> Bitbucket:
        username, password = settings.bitbucket_username, settings.bitbucket_app_password
        signed_in = bool(username and password)
        return cls(settings.bitbucket_api, password if signed_in else None, username)

    def api_headers(self) -> dict[str, str]:
        return {"Accept": "application/json"}

    def credentials(self) -> dict[str, str]:
        if not self.token:
            return {}
        basic = base64.b64encode(f"{self.username}:{self.token}".encode()).decode()
        return {"Authorization": f"Basic {basic}"}

    def page_query(self) -> dict[str, str]:
        return {"pagelen": PAGE_LEN}

    def page(self, response: requests.Response) -> tuple[object, str | None]:
        """`values`, and the next page as the body's `next` URL (no Link header)."""
        body = response.json()
        if not isinstance(body, dict):
            return None, None
        next_url = body.get("next")
        return body.get("values"), next_url if isinstance(next_url, str) else None

    def repos_of(self, kind: str, name: str) -> tuple[str, dict[str, str]]:
        return f"{self.api}/repositories/{quote(name)}", {}

    def listed_repo(self, item: dict[str, Any]) -> ListedRepo:
        https = next(c["href"] for c in item["links"]["clone"] if c["name"] == "https")
        return ListedRepo(
            full_name=str(item["full_name"]),
            clone_url=_without_user(str(https)),
            fork=item.get("parent") is not None,
            archived=False,  # Bitbucket Cloud does not archive repositories
            private=bool(item.get("is_private")),
            stamp=stamp(item.get("updated_on")),
        )

    def create_repository(self, client: ForgeClient, owner: str, name: str) -> ListedRepo:
        """`POST /repositories/{workspace}/{slug}`, private."""
        url = f"{self.api}/repositories/{quote(owner)}/{quote(name)}"
        response = client.post(self, url, {"scm": "git", "is_private": True})
        if response.status_code == 400 and "already exists" in response.text:
            raise RepositoryExists(f"{owner}/{name} already exists on {self.api}")
        return self.listed_repo(answer(response, url))

    def project(self, ref: RepoRef) -> str:
        return "/".join(quote(part) for part in ref.path)

    def feeds(self, project: str) -> tuple[Feed, ...]:
        base = f"/repositories/{project}"
        # Pull requests first: a 404 there is a missing repository, not a missing tracker.
        return (
            Feed("pull_requests", f"{base}/pullrequests?{_PR_STATES}"),
            Feed("issues", f"{base}/issues", absent="no issue tracker"),
        )

    def children(self, project: str, kind: str, record: dict[str, Any]) -> list[tuple[str, str]]:
        noun = {"pull_requests": "pullrequests", "issues": "issues"}.get(kind)
        if noun is None:
            return []
        return [("comments", f"/repositories/{project}/{noun}/{record['id']}/comments")]

    def kind_of(self, feed: Feed, record: dict[str, Any]) -> str:
        return feed.kind

    def release_assets(self, release: dict[str, Any]) -> list[ReleaseAsset]:
        return []


def _without_user(url: str) -> str:
    """Bitbucket's https clone link names the signed-in user (`https://user@bitbucket.org/...`):
    RepoVault's clone URLs carry no user; the credentials are git's (`vault.gitops`)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
