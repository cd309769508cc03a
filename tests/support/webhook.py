"""A webhook receiver on loopback: what Apprise's `json://` notifications post, as a chat
service or an alerting gateway would receive them (a ThreadingHTTPServer in the test)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pydantic import BaseModel


class Received(BaseModel):
    """One POST: its path, the Apprise JSON body (`title`, `message`, `type`...) and headers."""

    path: str
    title: str
    message: str
    raw: str


class Webhook:
    """Collects every POST; `url` is the Apprise URL that posts to it (with a user and a
    password in it: Apprise sends them as Basic auth, and they must never show up anywhere)."""

    PASSWORD = "hook-pa55word-never-shown"

    def __init__(self, status: int = 200) -> None:
        self.received: list[Received] = []
        self.status = status
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                body = json.loads(raw)
                hook.received.append(
                    Received(path=self.path, title=body["title"], message=body["message"], raw=raw)
                )
                self.send_response(hook.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"json://ops:{self.PASSWORD}@127.0.0.1:{self.port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def titles(self) -> list[str]:
        return [r.title for r in self.received]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
