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

Creating repositories (what `repovault restore --create` asks): GitHub's `GET /user` (the
token's `login`), `POST /orgs/ORG/repos` and `POST /user/repos`; GitLab's
`GET /api/v4/namespaces/PATH` and `POST /api/v4/projects` (`namespace_id`). Each needs the
token, creates an empty bare repository (HEAD on `main`) under `served_root` on the test git
server and answers 201 with it; a name taken answers as the forges do (GitHub 422 "name already
exists on this account", GitLab 400 "has already been taken"). `created` lists the bodies.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from tests.support.repos import git


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
    served_root: Path | None = None  # where created repositories go (the git server's root)
    login: str = "restorer"  # the token's user on GitHub
    namespaces: list[str] = field(default_factory=list)  # GitLab: id n is namespaces[n - 1]
    created: list[dict] = field(default_factory=list)  # the bodies of the repositories created

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
        if path == "/user" and self._authorised(False):
            return self._send(200, {"login": api.login})
        if path.startswith("/api/v4/namespaces/") and self._authorised(True):
            full_path = unquote(path[len("/api/v4/namespaces/") :])
            if full_path not in api.namespaces:
                api.namespaces.append(full_path)
            index = api.namespaces.index(full_path) + 1
            return self._send(200, {"id": index, "full_path": full_path})
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

    def do_POST(self) -> None:
        api = self.api
        api.requests.append((self.path, dict(self.headers.items())))
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        path = urlsplit(self.path).path
        gitlab = path == "/api/v4/projects"
        if gitlab:
            index = int(body.get("namespace_id", 0))
            if not 0 < index <= len(api.namespaces):
                return self._send(404, {"message": "404 Namespace Not Found"})
            owner = api.namespaces[index - 1]
        elif path == "/user/repos":
            owner = api.login
        elif path.startswith("/orgs/") and path.endswith("/repos"):
            owner = unquote(path.split("/")[2])
        else:
            return self._send(404, {"message": "Not Found"})
        if not self._authorised(gitlab):
            return self._send(401, {"message": "Requires authentication"})
        name = str(body.get("path") or body.get("name"))
        assert api.served_root is not None, "forge_api(..., served_root=) to create repositories"
        bare = api.served_root / owner / f"{name}.git"
        if bare.exists():
            if gitlab:
                taken = {"name": ["has already been taken"], "path": ["has already been taken"]}
                return self._send(400, {"message": taken})
            errors = [{"resource": "Repository", "field": "name", "code": "custom",
                       "message": "name already exists on this account"}]  # fmt: skip
            return self._send(422, {"message": "Repository creation failed.", "errors": errors})
        bare.parent.mkdir(parents=True, exist_ok=True)
        git(bare.parent, "init", "-q", "--bare", "-b", "main", bare.name)
        api.created.append(body)
        repo = ForgeRepo(f"{owner}/{name}", private=bool(body.get("private", True)))
        if gitlab:
            repo.private = body.get("visibility", "private") != "public"
        self._send(201, self._gitlab(repo) if gitlab else self._github(repo))

    def _authorised(self, gitlab: bool) -> bool:
        token = self.api.token
        if gitlab:
            return token is not None and self.headers.get("PRIVATE-TOKEN") == token
        return token is not None and self.headers.get("Authorization") == f"Bearer {token}"

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
    git_base_url: str,
    token: str | None = None,
    page_size: int = 2,
    served_root: Path | None = None,
) -> Iterator[ForgeApi]:
    """A running forge API; its base URL is `api.url` (GitLab's is `api.url + '/api/v4'`);
    with `served_root` (the git server's), it creates repositories there."""
    api = ForgeApi(git_base_url, token, page_size, served_root=served_root)
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
