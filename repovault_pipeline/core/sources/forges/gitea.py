"""Gitea's REST API endpoints (REPOVAULT_GITEA_API, GITEA_TOKEN), which Forgejo and Codeberg
serve too: an organisation's or a user's repositories, a repository's issues, pull requests,
comments, reviews, labels, milestones and releases with their attachments. Gitea follows
GitHub's shapes where they meet (a listed repository, a project's path, a pull request's
reviews): those are GitHub's code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.sources.forges.forge import Feed, ReleaseAsset
from repovault_pipeline.core.sources.forges.github import GitHub

# Gitea answers at most its MAX_RESPONSE_ITEMS (50 unless configured) a page, whatever is asked.
PAGE_LIMIT = "50"


@dataclass(frozen=True)
class Gitea(GitHub):
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

    def feeds(self, project: str) -> tuple[Feed, ...]:
        base = f"/repos/{project}"
        return (
            Feed("issues", f"{base}/issues", {"state": "all", "type": "issues"}, "since"),
            # Gitea's pull request listing takes no `since`: read whole (oldest first, so an
            # update while it is paged moves nothing), kept by digest.
            Feed("pull_requests", f"{base}/pulls", {"state": "all", "sort": "oldest"}),
            Feed("comments", f"{base}/issues/comments", {}, "since"),  # issues' and pulls'
            Feed("labels", f"{base}/labels"),
            Feed("milestones", f"{base}/milestones", {"state": "all"}),
            Feed("releases", f"{base}/releases"),
        )

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
