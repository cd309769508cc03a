"""A forge API on loopback: the GitHub and GitLab REST shapes RepoVault lists sources with.

A real HTTP server (threaded, in the test process) answering
`/orgs/NAME/repos`, `/users/NAME/repos` (GitHub) and `/api/v4/groups/PATH/projects` (GitLab,
`include_subgroups`), paged by `page_size` with Link headers. Private repositories are listed
only to a request carrying the server's token (`Authorization: Bearer` for GitHub,
`PRIVATE-TOKEN` for GitLab). `rate_limited` names answer 403 with GitHub's reset headers;
`fail_page` makes one page of a name answer 500. Clone URLs point at the test git server.
Each repository's `updated_at` is what GitHub lists as `updated_at` and GitLab as
`last_activity_at`; `touch` moves it, as a new issue or release does upstream.
Every request is kept in `requests` (path and headers) so tests can see where tokens went.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class ForgeRepo:
    full_name: str  # owner/name, or group/sub/name on GitLab
    private: bool = False
    fork: bool = False
    archived: bool = False
    updated_at: str = "2026-01-01T00:00:00Z"


@dataclass
class ForgeApi:
    git_base_url: str
    token: str | None = None
    page_size: int = 2
    repos: dict[str, list[ForgeRepo]] = field(default_factory=dict)  # org/user/group -> repos
    rate_limited: set[str] = field(default_factory=set)
    fail_page: dict[str, int] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    url: str = ""

    def add(self, owner: str, name: str, **flags: bool) -> ForgeRepo:
        repo = ForgeRepo(f"{owner}/{name}", **flags)
        self.repos.setdefault(owner.split("/")[0], []).append(repo)
        return repo

    def touch(self, full_name: str, updated_at: str) -> None:
        for repos in self.repos.values():
            for repo in repos:
                if repo.full_name == full_name:
                    repo.updated_at = updated_at

    def remove(self, full_name: str) -> None:
        for repos in self.repos.values():
            repos[:] = [r for r in repos if r.full_name != full_name]

    def visible(self, owner: str, authorised: bool, subgroups: bool) -> list[ForgeRepo]:
        found = []
        for repo in self.repos.get(owner.split("/")[0], []):
            parent = repo.full_name.rsplit("/", 1)[0]
            inside = parent == owner or (subgroups and parent.startswith(owner + "/"))
            if inside and (authorised or not repo.private):
                found.append(repo)
        return found


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    api: ForgeApi

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:
        api = self.api
        api.requests.append((self.path, dict(self.headers.items())))
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        path = parts.path
        if path.startswith("/api/v4/groups/") and path.endswith("/projects"):
            owner = unquote(path[len("/api/v4/groups/") : -len("/projects")])
            authorised = api.token is not None and self.headers.get("PRIVATE-TOKEN") == api.token
            subgroups = query.get("include_subgroups") == "true"
            gitlab = True
        elif path.startswith(("/orgs/", "/users/")) and path.endswith("/repos"):
            owner = unquote(path.split("/")[2])
            auth = self.headers.get("Authorization")
            authorised = api.token is not None and auth == f"Bearer {api.token}"
            subgroups, gitlab = False, False
        else:
            return self._send(404, {"message": "Not Found"})
        if owner in api.rate_limited:
            reset = str(int(time.time()) + 3600)
            return self._send(
                403,
                {"message": "API rate limit exceeded"},
                {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset},
            )
        if not api.repos.get(owner.split("/")[0]) and owner not in api.repos:
            return self._send(404, {"message": "Not Found"})
        page = int(query.get("page", "1"))
        if api.fail_page.get(owner) == page:
            return self._send(500, {"message": "Internal Server Error"})
        repos = api.visible(owner, authorised, subgroups)
        size = min(api.page_size, int(query.get("per_page", "30")))
        chunk = repos[(page - 1) * size : page * size]
        headers = {}
        if page * size < len(repos):
            nxt = dict(query, page=str(page + 1))
            link = f"{api.url}{path}?" + "&".join(f"{k}={v}" for k, v in nxt.items())
            headers["Link"] = f'<{link}>; rel="next"'
        body = [self._gitlab(r) if gitlab else self._github(r) for r in chunk]
        self._send(200, body, headers)

    def _github(self, repo: ForgeRepo) -> dict:
        return {
            "full_name": repo.full_name,
            "clone_url": f"{self.api.git_base_url}/{repo.full_name}.git",
            "fork": repo.fork,
            "archived": repo.archived,
            "private": repo.private,
            "updated_at": repo.updated_at,
            "pushed_at": "2026-01-01T00:00:00Z",
        }

    def _gitlab(self, repo: ForgeRepo) -> dict:
        return {
            "path_with_namespace": repo.full_name,
            "http_url_to_repo": f"{self.api.git_base_url}/{repo.full_name}.git",
            "forked_from_project": {"id": 1} if repo.fork else None,
            "archived": repo.archived,
            "visibility": "private" if repo.private else "public",
            "last_activity_at": repo.updated_at,
        }

    def _send(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def forge_api(
    git_base_url: str, token: str | None = None, page_size: int = 2
) -> Iterator[ForgeApi]:
    """A running forge API; its base URL is `api.url` (GitLab's is `api.url + '/api/v4'`)."""
    api = ForgeApi(git_base_url, token, page_size)
    handler = type("Handler", (_Handler,), {"api": api})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
