"""GitHub's REST API endpoints (REPOVAULT_GITHUB_API, GITHUB_TOKEN): an organisation's or a
user's repositories, a repository's issues, pull requests, comments, reviews, labels,
milestones and releases, and the repository search trending falls back on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import quote

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

API_VERSION = "2022-11-28"


@dataclass(frozen=True)
class GitHub(ForgeApi):
    """GitHub, or a GitHub Enterprise server, at `api`."""

    name = "github"
    token_env = "GITHUB_TOKEN"

    @classmethod
    def from_settings(cls, settings: Settings) -> GitHub:
        return cls(settings.github_api, settings.github_token)

    def api_headers(self) -> dict[str, str]:
        return {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION}

    def credentials(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def repos_of(self, kind: str, name: str) -> tuple[str, dict[str, str]]:
        if kind == "github-org":
            return f"{self.api}/orgs/{quote(name)}/repos", {"type": "all"}
        return f"{self.api}/users/{quote(name)}/repos", {"type": "owner"}

    def listed_repo(self, item: dict[str, Any]) -> ListedRepo:
        return ListedRepo(
            full_name=str(item["full_name"]),
            clone_url=str(item["clone_url"]),
            fork=bool(item.get("fork")),
            archived=bool(item.get("archived")),
            private=bool(item.get("private")),
            # `updated_at` moves with the repository's own record, `pushed_at` with any push.
            stamp=stamp(item.get("updated_at"), item.get("pushed_at")),
        )

    def project(self, ref: RepoRef) -> str:
        return "/".join(ref.path)

    def feeds(self, project: str) -> tuple[Feed, ...]:
        base = f"/repos/{project}"
        dated = {"state": "all", "sort": "updated", "direction": "asc"}
        return (
            Feed("issues", f"{base}/issues", dated, "since"),
            Feed("comments", f"{base}/issues/comments", {"sort": "updated"}, "since"),
            Feed("review_comments", f"{base}/pulls/comments", {"sort": "updated"}, "since"),
            Feed("labels", f"{base}/labels"),
            Feed("milestones", f"{base}/milestones", {"state": "all"}),
            Feed("releases", f"{base}/releases"),
        )

    def children(self, project: str, kind: str, record: dict[str, Any]) -> list[tuple[str, str]]:
        if kind == "pull_requests":
            return [("reviews", f"/repos/{project}/pulls/{record['number']}/reviews")]
        return []

    def kind_of(self, feed: Feed, record: dict[str, Any]) -> str:
        """GitHub lists pull requests among issues; they are kept as pull requests."""
        if feed.kind == "issues" and "pull_request" in record:
            return "pull_requests"
        return feed.kind

    def release_assets(self, release: dict[str, Any]) -> list[ReleaseAsset]:
        return [
            ReleaseAsset(str(a["id"]), a["name"], a["url"], a.get("updated_at", ""))
            for a in release.get("assets", [])
        ]

    def create_repository(self, client: ForgeClient, owner: str, name: str) -> ListedRepo:
        """`POST /user/repos` when `owner` is the token's user, else `/orgs/{owner}/repos`."""
        me = f"{self.api}/user"
        login = str(answer(client.get(self, me), me).get("login", ""))
        url = (
            f"{self.api}/user/repos"
            if login.lower() == owner.lower()
            else f"{self.api}/orgs/{quote(owner)}/repos"
        )
        body = {"name": name, "private": True, "has_wiki": True}
        response = client.post(self, url, body)
        # GitHub answers 422, Gitea (which builds on this class) 409.
        if response.status_code in (409, 422) and "already exists" in response.text:
            raise RepositoryExists(f"{owner}/{name} already exists on {self.api}")
        return self.listed_repo(answer(response, url, 201))

    def search_created(
        self, since: date, language: str | None, per_page: int
    ) -> tuple[str, dict[str, str]]:
        """URL and query of the most-starred repositories created after `since`."""
        query = f"created:>{since.isoformat()}"
        if language:
            query += f' language:"{language}"'
        params = {"q": query, "sort": "stars", "order": "desc", "per_page": str(per_page)}
        return f"{self.api}/search/repositories", params
