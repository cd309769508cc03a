"""GitLab's REST API endpoints (REPOVAULT_GITLAB_API, GITLAB_TOKEN): a group's projects with its
subgroups', and a project's issues, merge requests, notes, labels, milestones and releases."""

from __future__ import annotations

from dataclasses import dataclass
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

# The notes of a record live under its own noun.
_NOTEABLE = {"issues": "issues", "pull_requests": "merge_requests"}


@dataclass(frozen=True)
class GitLab(ForgeApi):
    """gitlab.com, or a self-managed GitLab, at `api` (`.../api/v4`)."""

    name = "gitlab"
    token_env = "GITLAB_TOKEN"

    @classmethod
    def from_settings(cls, settings: Settings) -> GitLab:
        return cls(settings.gitlab_api, settings.gitlab_token)

    def api_headers(self) -> dict[str, str]:
        return {}

    def credentials(self) -> dict[str, str]:
        return {"PRIVATE-TOKEN": self.token} if self.token else {}

    def repos_of(self, kind: str, name: str) -> tuple[str, dict[str, str]]:
        params = {"include_subgroups": "true", "order_by": "id", "sort": "asc"}
        return f"{self.api}/groups/{quote(name, safe='')}/projects", params

    def listed_repo(self, item: dict[str, Any]) -> ListedRepo:
        return ListedRepo(
            full_name=str(item["path_with_namespace"]),
            clone_url=str(item["http_url_to_repo"]),
            fork=item.get("forked_from_project") is not None,
            archived=bool(item.get("archived")),
            private=item.get("visibility", "public") != "public",
            # Moves with pushes, issues, merge requests and their comments (GitLab throttles it).
            stamp=stamp(item.get("last_activity_at")),
        )

    def project(self, ref: RepoRef) -> str:
        return quote("/".join(ref.path), safe="")

    def feeds(self, project: str) -> tuple[Feed, ...]:
        base = f"/projects/{project}"
        dated = {"scope": "all", "order_by": "updated_at", "sort": "asc"}
        return (
            Feed("issues", f"{base}/issues", dated, "updated_after"),
            Feed(
                "pull_requests",
                f"{base}/merge_requests",
                {**dated, "state": "all"},
                "updated_after",
            ),
            Feed("labels", f"{base}/labels"),
            Feed("milestones", f"{base}/milestones"),
            Feed("releases", f"{base}/releases"),
        )

    def children(self, project: str, kind: str, record: dict[str, Any]) -> list[tuple[str, str]]:
        noun = _NOTEABLE.get(kind)
        if noun is None:
            return []
        return [("comments", f"/projects/{project}/{noun}/{record['iid']}/notes")]

    def kind_of(self, feed: Feed, record: dict[str, Any]) -> str:
        return feed.kind

    def release_assets(self, release: dict[str, Any]) -> list[ReleaseAsset]:
        links = (release.get("assets") or {}).get("links", [])
        return [ReleaseAsset(str(a["id"]), a["name"], a["url"]) for a in links]

    def create_repository(self, client: ForgeClient, owner: str, name: str) -> ListedRepo:
        """`POST /projects` into the namespace (group, subgroup or user) `owner` names, whose
        id `GET /namespaces/{path}` gives."""
        where = f"{self.api}/namespaces/{quote(owner, safe='')}"
        namespace = answer(client.get(self, where), where)["id"]
        url = f"{self.api}/projects"
        body = {"name": name, "path": name, "namespace_id": namespace, "visibility": "private"}
        response = client.post(self, url, body)
        if response.status_code == 400 and "has already been taken" in response.text:
            raise RepositoryExists(f"{owner}/{name} already exists on {self.api}")
        return self.listed_repo(answer(response, url, 201))
