"""Smart-HTTP git server: `git http-backend` behind a small threaded HTTP server.

Run as `python -m tests.support.git_http_server ROOT PORT [--require-token-from-env VAR]`;
serves every repository under ROOT at http://127.0.0.1:PORT/<path>, for clones only
(receive-pack is off). Every request is printed on stdout, when it arrives, as `REQUEST ` and a
JSON object (method, path, upload-pack command, Authorization header or null): what the server
received, read back with `logged_requests`. With `--require-token-from-env`, it answers 401 to
any request without the `Authorization` header git sends for that token (GitHub's
`x-access-token` basic auth): a stand-in for github.com serving a private repository.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import re
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote

_LOGGED = "REQUEST "


class LoggedRequest(NamedTuple):
    method: str
    path: str
    command: str  # upload-pack command: `ls-refs`, `fetch`, `-` for none
    authorization: str | None


class GitHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    root = "."
    required_authorization: str | None = None

    def do_GET(self) -> None:
        self._cgi()

    def do_POST(self) -> None:
        self._cgi()

    def log_message(self, format: str, *args: object) -> None:
        return

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _cgi(self) -> None:
        path, _, query = self.path.partition("?")
        body = self._body()
        authorization = self.headers.get("Authorization")
        command = _upload_pack_command(body, self.headers.get("Content-Encoding", ""))
        print(
            _LOGGED
            + json.dumps(LoggedRequest(self.command, path, command, authorization)._asdict()),
            flush=True,
        )
        if self.required_authorization and authorization != self.required_authorization:
            self.send_response(401, "Unauthorized")
            self.send_header("WWW-Authenticate", 'Basic realm="GitHub"')
            self.end_headers()
            return
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": self.root,
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": unquote(path),
            "QUERY_STRING": query,
            "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": self.client_address[0],
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
        }
        for header, var in (
            ("Git-Protocol", "GIT_PROTOCOL"),
            ("Content-Encoding", "HTTP_CONTENT_ENCODING"),
        ):
            if self.headers.get(header):
                env[var] = self.headers[header]
        proc = subprocess.Popen(
            ["git", "http-backend"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        feeder = threading.Thread(target=_feed, args=(proc.stdin, body), daemon=True)
        feeder.start()
        assert proc.stdout is not None
        status, headers = "200 OK", []
        while True:
            line = proc.stdout.readline().rstrip(b"\r\n")
            if not line:
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "status":
                status = value.strip()
            else:
                headers.append((name, value.strip()))
        code, _, reason = status.partition(" ")
        self.send_response(int(code), reason or None)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        for chunk in iter(lambda: proc.stdout.read1(65536), b""):
            self.wfile.write(chunk)
        proc.wait()
        feeder.join()


def _upload_pack_command(body: bytes, encoding: str) -> str:
    """`ls-refs` or `fetch` (protocol v2), `fetch` for a v0 request that wants objects."""
    if encoding == "gzip":
        body = gzip.decompress(body)
    found = re.search(rb"command=([a-z-]+)", body[:256])
    if found:
        return found[1].decode()
    return "fetch" if b"want " in body[:256] else "-"


def logged_requests(log: Path, path_prefix: str = "") -> list[LoggedRequest]:
    """Every request the server logged to `log`, for paths under `path_prefix`, in order."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    found = [
        LoggedRequest(**json.loads(line[len(_LOGGED) :]))
        for line in lines
        if line.startswith(_LOGGED)
    ]
    return [r for r in found if r.path.startswith(path_prefix)]


def _feed(stdin, body: bytes) -> None:
    try:
        stdin.write(body)
    except BrokenPipeError:
        pass
    finally:
        stdin.close()


def serve(root: str, port: int, token: str | None = None, user: str = "x-access-token") -> None:
    GitHandler.root = os.path.abspath(root)
    if token:
        basic = base64.b64encode(f"{user}:{token}".encode()).decode()
        GitHandler.required_authorization = f"Basic {basic}"
    server = ThreadingHTTPServer(("127.0.0.1", port), GitHandler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("port", type=int)
    parser.add_argument("--require-token-from-env", metavar="VAR")
    parser.add_argument("--token-user", default="x-access-token", help="GitLab's is oauth2")
    args = parser.parse_args()
    token = os.environ[args.require_token_from_env] if args.require_token_from_env else None
    serve(args.root, args.port, token, args.token_user)
