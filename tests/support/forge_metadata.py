"""A forge REST API on loopback for one repository's metadata, GitHub-shaped (issues with pull
requests among them, comments, reviews, labels, milestones, releases with a downloadable asset)
or GitLab-shaped (`/api/v4/projects/<path>`: issues, merge requests, notes, labels, milestones,
releases with asset links). Pages of `page_size` with Link headers, `since` / `updated_after`
honoured, a token-only mode, and a rate limit that can be made to strike after a number of
requests. Every request is logged."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlsplit


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
        self._next_id = 1000
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.web = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.api = self.web + ("/api/v4" if shape == "gitlab" else "")
        self.base = (
            f"/api/v4/projects/{quote(self.repo, safe='')}"
            if shape == "gitlab"
            else f"/repos/{self.repo}"
        )
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
        if self.shape == "gitlab":
            issue["iid"] = issue.pop("number")
            issue["description"] = issue.pop("body")
            issue["pull"] = pull  # which listing serves it; dropped from the answers
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
                    fake.log.append(
                        {
                            "path": parts.path,
                            "query": query,
                            "authorization": self.headers.get("Authorization"),
                            "private_token": self.headers.get("PRIVATE-TOKEN"),
                        }
                    )
                    answered = len(fake.log) - 1
                if fake.rate_limit_after is not None and answered >= fake.rate_limit_after:
                    reset = str(int(datetime.now(UTC).timestamp()) + 3600)
                    body = json.dumps({"message": "API rate limit exceeded"}).encode()
                    headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}
                    return self._send(403, body, headers)
                sent = self.headers.get("Authorization", self.headers.get("PRIVATE-TOKEN"))
                if fake.token and sent not in (f"Bearer {fake.token}", fake.token):
                    return self._send(404, b'{"message": "Not Found"}', {})
                prefix = f"{fake.base}/releases/assets/"
                if parts.path.startswith(prefix):
                    content = fake.asset_content[int(parts.path[len(prefix) :])]
                    return self._send(200, content, {"Content-Type": "application/octet-stream"})
                items = fake._listing(parts.path, query)
                if items is None:
                    return self._send(404, b'{"message": "Not Found"}', {})
                page = int(query.get("page", "1"))
                size = fake.page_size
                chunk = items[(page - 1) * size : page * size]
                headers = {"Content-Type": "application/json"}
                if page * size < len(items):
                    rest = {**query, "page": str(page + 1)}
                    link = "&".join(f"{k}={v}" for k, v in rest.items())
                    headers["Link"] = f'<{fake.web}{parts.path}?{link}>; rel="next"'
                return self._send(200, json.dumps(chunk).encode(), headers)

        return Handler
