"""A forge API on loopback: the GitHub, GitLab, Gitea and Bitbucket Cloud REST shapes RepoVault
lists sources with.

A real HTTP server (threaded, in the test process) answering
`/orgs/NAME/repos`, `/users/NAME/repos` (GitHub), `/api/v4/groups/PATH/projects` (GitLab,
`include_subgroups`), `/api/v1/orgs|users/NAME/repos` (Gitea, `limit`, X-Total-Count) and
`/2.0/repositories/WORKSPACE` (Bitbucket, `pagelen`, the next page as the body's `next`), paged
by `page_size` with Link headers (Bitbucket: `next`). Private repositories are listed only to a
request carrying the server's token (`Authorization: Bearer` for GitHub, `PRIVATE-TOKEN` for
GitLab, `Authorization: token` for Gitea, basic `username:token` for Bitbucket).
`rate_limited` names answer 403 with GitHub's reset headers (Gitea, Bitbucket: 429 with
Retry-After); `fail_page` makes one page of a name answer 500; `foreign_next` names link their
next page on another host (`localhost`). Clone URLs point at the test git server (Bitbucket's
name the signed-in user, as Bitbucket's do). Each repository's `updated_at` is what GitHub and
Gitea list as `updated_at`, GitLab as `last_activity_at`, Bitbucket as `updated_on`; `touch`
moves it, as a new issue or release does upstream.
Every request is kept in `requests` (path and headers) so tests can see where tokens went.

Creating repositories (what `repovault restore --create` asks): GitHub's `GET /user` (the
token's `login`), `POST /orgs/ORG/repos` and `POST /user/repos`; GitLab's
`GET /api/v4/namespaces/PATH` and `POST /api/v4/projects` (`namespace_id`). Each needs the
token, creates an empty bare repository (HEAD on `main`) under `served_root` on the test git
server and answers 201 with it; a name taken answers as the forges do (GitHub 422 "name already
exists on this account", GitLab 400 "has already been taken"). `created` lists the bodies.
"""

from __future__ import annotations

import base64
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
    username: str = "backup-bot"  # Bitbucket's user of the token (an app password)
    repos: dict[str, list[ForgeRepo]] = field(default_factory=dict)  # org/user/group -> repos
    rate_limited: set[str] = field(default_factory=set)
    fail_page: dict[str, int] = field(default_factory=dict)
    foreign_next: set[str] = field(default_factory=set)
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


# What each forge answers a repository name that is taken.
_GITHUB_TAKEN = [{"resource": "Repository", "field": "name", "code": "custom",
                  "message": "name already exists on this account"}]  # fmt: skip
_TAKEN: dict[str, tuple[int, dict]] = {
    "github": (422, {"message": "Repository creation failed.", "errors": _GITHUB_TAKEN}),
    "gitea": (409, {"message": "The repository with the same name already exists."}),
    "gitlab": (
        400,
        {"message": {"name": ["has already been taken"], "path": ["has already been taken"]}},
    ),
    "bitbucket": (
        400,
        {
            "type": "error",
            "error": {"message": "Repository with this Slug and Owner already exists."},
        },
    ),
}


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
        if path in ("/user", "/api/v1/user") and self._authorised(
            "gitea" if path.startswith("/api/v1") else "github"
        ):
            return self._send(200, {"login": api.login})
        if path.startswith("/api/v4/namespaces/") and self._authorised("gitlab"):
            full_path = unquote(path[len("/api/v4/namespaces/") :])
            if full_path not in api.namespaces:
                api.namespaces.append(full_path)
            index = api.namespaces.index(full_path) + 1
            return self._send(200, {"id": index, "full_path": full_path})
        routed = self._route(path, query)
        if routed is None:
            return self._send(404, {"message": "Not Found"})
        shape, owner, subgroups, authorised = routed
        if owner in api.rate_limited:
            if shape in ("gitea", "bitbucket"):
                return self._send(429, {"message": "Too Many Requests"}, {"Retry-After": "120"})
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
        asked = query.get("per_page") or query.get("limit") or query.get("pagelen") or "30"
        size = min(api.page_size, int(asked))
        chunk = repos[(page - 1) * size : page * size]
        headers = {"X-Total-Count": str(len(repos))} if shape == "gitea" else {}
        link = None
        if page * size < len(repos):
            nxt = dict(query, page=str(page + 1))
            base = api.url
            if owner in api.foreign_next:
                base = base.replace("127.0.0.1", "localhost")
            link = f"{base}{path}?" + "&".join(f"{k}={v}" for k, v in nxt.items())
            headers["Link"] = f'<{link}>; rel="next"'
        body = [getattr(self, f"_{shape}")(r) for r in chunk]
        if shape == "bitbucket":
            headers.pop("Link", None)
            paged = {"pagelen": size, "page": page, "size": len(repos), "values": body}
            return self._send(200, {**paged, **({"next": link} if link else {})}, headers)
        self._send(200, body, headers)

    def do_POST(self) -> None:
        """Create a repository (a bare one on the git server): GitHub `/user/repos`,
        `/orgs/O/repos`; Gitea the same under `/api/v1`; GitLab `/api/v4/projects` (by
        `namespace_id`); Bitbucket `/2.0/repositories/W/SLUG`. A taken name is refused in
        each forge's words."""
        api = self.api
        api.requests.append((self.path, dict(self.headers.items())))
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        path = urlsplit(self.path).path
        shape, owner, name = self._creating(path, body)
        if shape == "":
            return self._send(404, {"message": "Not Found"})
        if shape == "gitlab" and not owner:
            return self._send(404, {"message": "404 Namespace Not Found"})
        if not self._authorised(shape):
            return self._send(401, {"message": "Requires authentication"})
        assert api.served_root is not None, "forge_api(..., served_root=) to create repositories"
        bare = api.served_root / owner / f"{name}.git"
        if bare.exists():
            return self._send(*_TAKEN[shape])
        bare.parent.mkdir(parents=True, exist_ok=True)
        git(bare.parent, "init", "-q", "--bare", "-b", "main", bare.name)
        api.created.append(body)
        private = body.get("private", body.get("is_private", True))
        repo = ForgeRepo(f"{owner}/{name}", private=bool(private))
        if shape == "gitlab":
            repo.private = body.get("visibility", "private") != "public"
        self._send(200 if shape == "bitbucket" else 201, getattr(self, f"_{shape}")(repo))

    def _creating(self, path: str, body: dict) -> tuple[str, str, str]:
        """(shape, owner, name) of a create request; shape "" when the path creates nothing."""
        api, name = self.api, str(body.get("path") or body.get("name"))
        if path == "/api/v4/projects":
            index = int(body.get("namespace_id", 0))
            owner = api.namespaces[index - 1] if 0 < index <= len(api.namespaces) else ""
            return "gitlab", owner, name
        if path.startswith("/2.0/repositories/") and path.count("/") == 4:
            return "bitbucket", unquote(path.split("/")[3]), unquote(path.split("/")[4])
        shape, rest = (
            ("gitea", path[len("/api/v1") :]) if path.startswith("/api/v1/") else ("github", path)
        )
        if rest == "/user/repos":
            return shape, api.login, name
        if rest.startswith("/orgs/") and rest.endswith("/repos"):
            return shape, unquote(rest.split("/")[2]), name
        return "", "", ""

    def _authorised(self, shape: str) -> bool:
        token, auth = self.api.token, self.headers.get("Authorization")
        if token is None:
            return False
        if shape == "gitlab":
            return self.headers.get("PRIVATE-TOKEN") == token
        if shape == "bitbucket":
            basic = base64.b64encode(f"{self.api.username}:{token}".encode()).decode()
            return auth == f"Basic {basic}"
        return auth == (f"token {token}" if shape == "gitea" else f"Bearer {token}")

    def _route(self, path: str, query: dict[str, str]) -> tuple[str, str, bool, bool] | None:
        """(shape, owner, with subgroups, authorised) of a listing path; None: no listing."""
        token, auth = self.api.token, self.headers.get("Authorization")
        if path.startswith("/api/v4/groups/") and path.endswith("/projects"):
            owner = unquote(path[len("/api/v4/groups/") : -len("/projects")])
            authorised = token is not None and self.headers.get("PRIVATE-TOKEN") == token
            return "gitlab", owner, query.get("include_subgroups") == "true", authorised
        if path.startswith(("/api/v1/orgs/", "/api/v1/users/")) and path.endswith("/repos"):
            return "gitea", unquote(path.split("/")[4]), False, auth == f"token {token}"
        if path.startswith("/2.0/repositories/") and path.count("/") == 3:
            basic = base64.b64encode(f"{self.api.username}:{token}".encode()).decode()
            return "bitbucket", unquote(path.split("/")[3]), False, auth == f"Basic {basic}"
        if path.startswith(("/orgs/", "/users/")) and path.endswith("/repos"):
            return "github", unquote(path.split("/")[2]), False, auth == f"Bearer {token}"
        return None

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

    def _gitea(self, repo: ForgeRepo) -> dict:
        shown = {k: v for k, v in self._github(repo).items() if k != "pushed_at"}
        return {**shown, "mirror": False, "empty": False}

    def _bitbucket(self, repo: ForgeRepo) -> dict:
        scheme, _, host = self.api.git_base_url.partition("://")
        href = f"{scheme}://{self.api.username}@{host}/{repo.full_name}.git"
        return {
            "type": "repository",
            "full_name": repo.full_name,
            "is_private": repo.private,
            "parent": {"full_name": "upstream/" + repo.full_name} if repo.fork else None,
            "updated_on": repo.updated_at,
            "links": {
                "clone": [
                    {"name": "https", "href": href},
                    {"name": "ssh", "href": f"git@{host.split(':')[0]}:{repo.full_name}.git"},
                ]
            },
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
    """A running forge API; its base URL is `api.url` (GitLab's is `api.url + '/api/v4'`,
    Gitea's `api.url + '/api/v1'`, Bitbucket's `api.url + '/2.0'`); with `served_root` (the git
    server's), it creates repositories there."""
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
