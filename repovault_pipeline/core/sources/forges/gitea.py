"""Gitea's REST API endpoints (REPOVAULT_GITEA_API, GITEA_TOKEN), which Forgejo and Codeberg
serve too: an organisation's or a user's repositories, a repository's issues, pull requests,
comments, reviews, labels, milestones and releases with their attachments."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from repovault_pipeline.core.common.identity import RepoRef
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.sources.forges.forge import (
    Feed,
    ForgeApi,
    ListedRepo,
    ReleaseAsset,
    stamp,
)

# Gitea answers at most its MAX_RESPONSE_ITEMS (50 unless configured) a page, whatever is asked.
PAGE_LIMIT = "50"


@dataclass(frozen=True)
class Gitea(ForgeApi):
    """A Gitea or Forgejo server (Codeberg by default) at `api` (`.../api/v1`)."""

    name = "gitea"
    token_env = "GITEA_TOKEN"

    @classmethod
    def from_settings(cls, settings: Settings) -> Gitea:
        return cls(settings.gitea_api, settings.gitea_token)

    def api_headers(self) -> dict[str, str]:
        return {"Accept": "application/json"}

    def credentials(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"} if self.token else {}

    def page_query(self) -> dict[str, str]:
        return {"limit": PAGE_LIMIT}

    def repos_of(self, kind: str, name: str) -> tuple[str, dict[str, str]]:
        owner = "orgs" if kind == "gitea-org" else "users"
        return f"{self.api}/{owner}/{quote(name)}/repos", {}

    def listed_repo(self, item: dict[str, Any]) -> ListedRepo:
        return ListedRepo(
            full_name=str(item["full_name"]),
            clone_url=str(item["clone_url"]),
            fork=bool(item.get("fork")),
            archived=bool(item.get("archived")),
            private=bool(item.get("private")),
            # Moves with pushes and with the repository's own record.
            stamp=stamp(item.get("updated_at")),
        )

    def project(self, ref: RepoRef) -> str:
        return "/".join(quote(part) for part in ref.path)

    def feeds(self, project: str) -> tuple[Feed, ...]:
        base = f"/repos/{project}"
        return (
            Feed("issues", f"{base}/issues", {"state": "all", "type": "issues"}, "since"),
            # Gitea's pull request listing takes no `since`: read whole, kept by digest.
            Feed("pull_requests", f"{base}/pulls", {"state": "all", "sort": "recentupdate"}),
            Feed("comments", f"{base}/issues/comments", {}, "since"),  # issues' and pulls'
            Feed("labels", f"{base}/labels"),
            Feed("milestones", f"{base}/milestones", {"state": "all"}),
            Feed("releases", f"{base}/releases"),
        )

    def children(self, project: str, kind: str, record: dict[str, Any]) -> list[tuple[str, str]]:
        if kind == "pull_requests":
            return [("reviews", f"/repos/{project}/pulls/{record['number']}/reviews")]
        return []

    def kind_of(self, feed: Feed, record: dict[str, Any]) -> str:
        return feed.kind

    def release_assets(self, release: dict[str, Any]) -> list[ReleaseAsset]:
        """Attachments, downloaded from the web host (the API's own origin on Gitea)."""
        return [
            ReleaseAsset(
                str(a["id"]), a["name"], a["browser_download_url"], a.get("created_at", "")
            )
            for a in release.get("assets") or []
        ]
