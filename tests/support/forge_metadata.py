"""A forge REST API on loopback for one repository's metadata, GitHub-shaped (issues with pull
requests among them, comments, reviews, labels, milestones, releases with a downloadable asset),
GitLab-shaped (`/api/v4/projects/<path>`: issues, merge requests, notes, labels, milestones,
releases with asset links), Gitea-shaped (`/api/v1/repos/<owner>/<name>`: issues, pulls,
comments naming their issue or pull, reviews, labels, milestones, releases with attachments
downloaded from the web host) or Bitbucket-shaped (`/2.0/repositories/<ws>/<slug>`: pull
requests of every state, issues with their comments only while `issue_tracker` is on, else
404; no releases). Pages of `page_size` with Link headers (Bitbucket: the body's `next`),
`since` / `updated_after` honoured, a token-only mode, and a rate limit that can be made to
strike after a number of requests (a 403 with GitHub's headers; Gitea, Bitbucket: 429 with
Retry-After). Every request is logged."""

from __future__ import annotations

import base64
import json
import re
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlencode, urlsplit

# Where each shape serves its API below the web host, and the repository below the API.
API_PATHS = {"github": "", "gitlab": "/api/v4", "gitea": "/api/v1", "bitbucket": "/2.0"}


def stamp(minutes_ago: float = 0) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeGitHub:
    def __init__(self, owner: str, name: str, page_size: int = 2, shape: str = "github") -> None:
        self.repo = f"{owner}/{name}"
        self.shape = shape
        self.page_size = page_size
        self.issues: list[dict] = []
        self.comments: list[dict] = []
        self.reviews: dict[int, list[dict]] = {}
        self.labels = [{"id": 1, "name": "bug", "color": "d73a4a"}]
        self.milestones = [{"id": 7, "number": 1, "title": "v1", "state": "open"}]
        self.releases: list[dict] = []
        self.asset_content: dict[int, bytes] = {}
        self.log: list[dict] = []
        self.rate_limit_after: int | None = None  # requests answered before a 403 rate limit
        self.token: str | None = None
        self.username = "backup-bot"  # Bitbucket: the token is this user's app password
        self.issue_tracker = True  # Bitbucket: off, the issues listing answers 404
        self._next_id = 1000
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.web = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.api = self.web + API_PATHS[shape]
        self.base = API_PATHS[shape] + {
            "gitlab": f"/projects/{quote(self.repo, safe='')}",
            "bitbucket": f"/repositories/{self.repo}",
        }.get(shape, f"/repos/{self.repo}")
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def add_issue(self, title: str, pull: bool = False, minutes_ago: float = 60) -> dict:
        number = len(self.issues) + 1
        issue = {
            "id": self.new_id(),
            "number": number,
            "title": title,
            "body": f"body of {title}",
            "state": "open",
            "labels": [self.labels[0]],
            "updated_at": stamp(minutes_ago),
        }
        if self.shape in ("gitlab", "gitea", "bitbucket"):
            issue["pull"] = pull  # which listing serves it; dropped from the answers
        if self.shape == "gitlab":
            issue["iid"] = issue.pop("number")
            issue["description"] = issue.pop("body")
        elif self.shape == "bitbucket":  # ids of their own for issues and pull requests
            issue["id"] = len([i for i in self.issues if i["pull"] == pull]) + 1
            del issue["number"], issue["labels"]
            issue["updated_on"] = issue.pop("updated_at")
            text = issue.pop("body")
            issue.update({"description": text} if pull else {"content": {"raw": text}})
        elif self.shape == "gitea" and pull:
            self.reviews[number] = []
        elif pull:
            issue["pull_request"] = {"url": f"{self.api}{self.base}/pulls/{number}"}
            self.reviews[number] = []
        self.issues.append(issue)
        return issue

    def edit_issue(self, number: int, **changes: object) -> None:
        issue = self.issues[number - 1]
        issue.update(changes, updated_at=stamp())

    def add_comment(self, issue: dict, body: str, minutes_ago: float = 60) -> None:
        comment = {"id": self.new_id(), "body": body, "updated_at": stamp(minutes_ago)}
        if self.shape == "gitlab":
            kind = "MergeRequest" if issue["pull"] else "Issue"
            comment.update(noteable_type=kind, noteable_iid=issue["iid"])
        elif self.shape == "gitea":  # the one of the two URLs that applies; the other empty
            url = f"{self.web}/{self.repo}/{'pulls' if issue['pull'] else 'issues'}/"
            comment["pull_request_url"] = url + str(issue["number"]) if issue["pull"] else ""
            comment["issue_url"] = "" if issue["pull"] else url + str(issue["number"])
        elif self.shape == "bitbucket":
            owner = "pullrequest" if issue["pull"] else "issue"
            comment.update({owner: {"id": issue["id"]}, "content": {"raw": comment.pop("body")}})
        else:
            comment["issue_url"] = f"{self.api}{self.base}/issues/{issue['number']}"
        self.comments.append(comment)

    def add_review(self, pull: dict, state: str, body: str) -> None:
        self.reviews[pull["number"]].append({"id": self.new_id(), "state": state, "body": body})

    def add_release(self, tag: str, asset_name: str, content: bytes) -> None:
        asset_id = self.new_id()
        self.asset_content[asset_id] = content
        url = f"{self.web}{self.base}/releases/assets/{asset_id}"
        release = {"id": self.new_id(), "tag_name": tag, "name": f"Release {tag}"}
        if self.shape == "gitlab":
            release["assets"] = {"links": [{"id": asset_id, "name": asset_name, "url": url}]}
        elif self.shape == "gitea":  # attachments, downloaded from the web host
            url = f"{self.web}/{self.repo}/releases/download/{tag}/{asset_id}"
            self.asset_content[asset_id] = content
            release["assets"] = [
                {
                    "id": asset_id,
                    "name": asset_name,
                    "size": len(content),
                    "browser_download_url": url,
                    "created_at": stamp(60),
                }
            ]
        else:
            release["assets"] = [
                {
                    "id": asset_id,
                    "name": asset_name,
                    "size": len(content),
                    "url": url,
                    "updated_at": stamp(60),
                }
            ]
        self.releases.append(release)

    def requests_to(self, path_part: str) -> list[dict]:
        return [r for r in self.log if path_part in r["path"]]

    def _listing(self, path: str, query: dict[str, str]) -> list[dict] | None:
        if self.shape == "gitlab":
            return self._gitlab_listing(path, query)
        if self.shape == "gitea":
            return self._gitea_listing(path, query)
        if self.shape == "bitbucket":
            return self._bitbucket_listing(path, query)
        base = self.base
        since = query.get("since")
        dated = {
            f"{base}/issues": self.issues,
            f"{base}/issues/comments": self.comments,
            f"{base}/pulls/comments": [],
        }
        if path in dated:
            items = sorted(dated[path], key=lambda i: i["updated_at"])
            return [i for i in items if since is None or i["updated_at"] >= since]
        whole = {
            f"{base}/labels": self.labels,
            f"{base}/milestones": self.milestones,
            f"{base}/releases": self.releases,
        }
        if path in whole:
            return whole[path]
        if path.startswith(f"{base}/pulls/") and path.endswith("/reviews"):
            return self.reviews.get(int(path.split("/")[-2]))
        return None

    def _gitlab_listing(self, path: str, query: dict[str, str]) -> list[dict] | None:
        base, since = self.base, query.get("updated_after")

        def shown(items: list[dict]) -> list[dict]:
            items = sorted(items, key=lambda i: i["updated_at"])
            dated = [i for i in items if since is None or i["updated_at"] >= since]
            return [{k: v for k, v in i.items() if k != "pull"} for i in dated]

        if path == f"{base}/issues":
            return shown([i for i in self.issues if not i["pull"]])
        if path == f"{base}/merge_requests":
            return shown([i for i in self.issues if i["pull"]])
        for noun, kind in (("issues", "Issue"), ("merge_requests", "MergeRequest")):
            if path.startswith(f"{base}/{noun}/") and path.endswith("/notes"):
                iid = int(path.split("/")[-2])
                return [
                    c
                    for c in self.comments
                    if c["noteable_type"] == kind and c["noteable_iid"] == iid
                ]
        whole = {
            f"{base}/labels": self.labels,
            f"{base}/milestones": self.milestones,
            f"{base}/releases": self.releases,
        }
        return whole.get(path)

    def _gitea_listing(self, path: str, query: dict[str, str]) -> list[dict] | None:
        base, since = self.base, query.get("since")

        def shown(items: list[dict], dated: bool = True) -> list[dict]:
            items = sorted(items, key=lambda i: i["updated_at"])
            kept = [i for i in items if not dated or since is None or i["updated_at"] >= since]
            return [{k: v for k, v in i.items() if k != "pull"} for i in kept]

        if path == f"{base}/issues" and query.get("type") == "issues":
            return shown([i for i in self.issues if not i["pull"]])
        if path == f"{base}/pulls":  # no `since` on Gitea's pulls
            return shown([i for i in self.issues if i["pull"]], dated=False)
        if path == f"{base}/issues/comments":
            return shown(self.comments)
        if path.startswith(f"{base}/pulls/") and path.endswith("/reviews"):
            return self.reviews.get(int(path.split("/")[-2]))
        whole = {
            f"{base}/labels": self.labels,
            f"{base}/milestones": self.milestones,
            f"{base}/releases": self.releases,
        }
        return whole.get(path)

    def _bitbucket_listing(self, path: str, query: dict[str, str]) -> list[dict] | None:
        base = self.base
        listed = {
            f"{base}/pullrequests": [i for i in self.issues if i["pull"]],
            f"{base}/issues": [i for i in self.issues if not i["pull"]],
        }
        if path == f"{base}/issues" and not self.issue_tracker:
            return None
        if path in listed:
            return [{k: v for k, v in i.items() if k != "pull"} for i in listed[path]]
        for noun, owner in (("pullrequests", "pullrequest"), ("issues", "issue")):
            if path.startswith(f"{base}/{noun}/") and path.endswith("/comments"):
                number = int(path.split("/")[-2])
                return [c for c in self.comments if c.get(owner, {}).get("id") == number]
        return None

    def _page(self, items: list[dict], page: int, path: str, multi: dict) -> tuple[bytes, dict]:
        """One page of `items`: a JSON list with a Link header, or Bitbucket's paged object."""
        size = self.page_size
        chunk = items[(page - 1) * size : page * size]
        headers = {"Content-Type": "application/json"}
        link = None
        if page * size < len(items):
            link = f"{self.web}{path}?" + urlencode({**multi, "page": [page + 1]}, doseq=True)
            headers["Link"] = f'<{link}>; rel="next"'
        if self.shape != "bitbucket":
            return json.dumps(chunk).encode(), headers
        headers.pop("Link", None)
        body = {"pagelen": size, "page": page, "values": chunk, **({"next": link} if link else {})}
        return json.dumps(body).encode(), headers

    def _authorised(self, headers: dict[str, str | None]) -> bool:
        if not self.token:
            return True
        basic = base64.b64encode(f"{self.username}:{self.token}".encode()).decode()
        sent = headers["authorization"] or headers["private_token"]
        return sent in (f"Bearer {self.token}", self.token, f"token {self.token}", f"Basic {basic}")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                with fake._lock:
                    logged = {
                        "path": parts.path,
                        "query": query,
                        "multi": parse_qs(parts.query),
                        "authorization": self.headers.get("Authorization"),
                        "private_token": self.headers.get("PRIVATE-TOKEN"),
                    }
                    fake.log.append(logged)
                    answered = len(fake.log) - 1
                if fake.rate_limit_after is not None and answered >= fake.rate_limit_after:
                    if fake.shape in ("gitea", "bitbucket"):
                        return self._send(429, b'{"error": "rate limited"}', {"Retry-After": "60"})
                    reset = str(int(datetime.now(UTC).timestamp()) + 3600)
                    body = json.dumps({"message": "API rate limit exceeded"}).encode()
                    headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}
                    return self._send(403, body, headers)
                if not fake._authorised(logged):
                    return self._send(404, b'{"message": "Not Found"}', {})
                asset = re.search(r"/releases/(?:assets|download/[^/]+)/(\d+)$", parts.path)
                if asset:
                    content = fake.asset_content[int(asset.group(1))]
                    return self._send(200, content, {"Content-Type": "application/octet-stream"})
                items = fake._listing(parts.path, query)
                if items is None:
                    return self._send(404, b'{"message": "Not Found"}', {})
                page = int(query.get("page", "1"))
                return self._send(200, *fake._page(items, page, parts.path, logged["multi"]))

        return Handler
