"""Smart-HTTP git server: `git http-backend` behind a small threaded HTTP server, with a Git LFS
endpoint of its own.

Run as `python -m tests.support.git_http_server ROOT PORT [--require-token-from-env VAR]`;
serves every repository under ROOT at http://127.0.0.1:PORT/<path>, for clones and pushes
(`http.receivepack`: what a restore to a forge pushes into). Every request is printed on
stdout, when it arrives, as `REQUEST ` and a JSON object (method, path, upload-pack command,
Authorization header or null, how many `have` lines a fetch negotiated with): what the server
received, read back with `logged_requests`. With `--require-token-from-env`, it answers 401
to any request without the `Authorization` header git sends for that token (GitHub's
`x-access-token` basic auth): a stand-in for github.com serving a private repository.

Git LFS: `POST <repo>.git/info/lfs/objects/batch` answers the batch API (`basic` transfer),
and `GET`/`PUT <repo>.git/info/lfs/objects/<oid>` read and write the objects, kept on disk in
the bare repository's own `lfs/objects/<aa>/<bb>/<oid>` (where git-lfs keeps them); a `PUT`
whose content does not hash to its oid is refused. So `git lfs push` and `git lfs fetch` work
against it over HTTP, as they do against GitHub.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote

_LOGGED = "REQUEST "
_LOG_LOCK = threading.Lock()
_LFS = re.compile(r"^/(?P<repo>.+?\.git)/info/lfs/objects/(?P<rest>batch|[0-9a-f]{64})$")
LFS_JSON = "application/vnd.git-lfs+json"


class LoggedRequest(NamedTuple):
    method: str
    path: str
    command: str  # upload-pack command: `ls-refs`, `fetch`, `-` for none
    authorization: str | None
    haves: int = 0  # `have` lines of an upload-pack request: commits the client already holds


class GitHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    root = "."
    required_authorization: str | None = None

    def do_GET(self) -> None:
        self._cgi()

    def do_POST(self) -> None:
        self._cgi()

    def do_PUT(self) -> None:
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
        encoding = self.headers.get("Content-Encoding", "")
        command = _upload_pack_command(body, encoding)
        haves = _have_lines(body, encoding) if command == "fetch" else 0
        entry = json.dumps(
            LoggedRequest(self.command, path, command, authorization, haves)._asdict()
        )
        with _LOG_LOCK:  # one whole line per request, whatever the threads (LFS uploads)
            sys.stdout.write(f"{_LOGGED}{entry}\n")
            sys.stdout.flush()
        if self.required_authorization and authorization != self.required_authorization:
            self.send_response(401, "Unauthorized")
            self.send_header("WWW-Authenticate", 'Basic realm="GitHub"')
            self.end_headers()
            return
        lfs = _LFS.match(unquote(path))
        if lfs:
            self._lfs(Path(self.root) / lfs["repo"], lfs["repo"], lfs["rest"], body)
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
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "http.receivepack",
            "GIT_CONFIG_VALUE_0": "true",
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

    def _lfs(self, repo: Path, name: str, rest: str, body: bytes) -> None:
        """The LFS batch API and its object transfers, over `repo`'s `lfs/objects`."""
        if not (repo / "HEAD").is_file() or ".." in name.split("/"):
            self._reply(404, {"message": "Repository not found"})
        elif rest == "batch" and self.command == "POST":
            self._batch(repo, name, json.loads(body or b"{}"))
        elif self.command == "GET" and _lfs_path(repo, rest).is_file():
            data = _lfs_path(repo, rest).read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif self.command == "PUT" and rest != "batch":
            if hashlib.sha256(body).hexdigest() != rest:
                self._reply(422, {"message": "content does not match its oid"})
                return
            target = _lfs_path(repo, rest)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(body)
            self._reply(200, {})
        else:
            self._reply(404, {"message": "Object does not exist"})

    def _batch(self, repo: Path, name: str, request: dict) -> None:
        base = f"http://{self.headers.get('Host')}/{name}/info/lfs/objects/"
        upload = request.get("operation") == "upload"
        answers = []
        for obj in request.get("objects", []):
            oid, size = str(obj.get("oid")), obj.get("size")
            answer: dict = {"oid": oid, "size": size, "authenticated": True}
            present = re.fullmatch(r"[0-9a-f]{64}", oid) and _lfs_path(repo, oid).is_file()
            if upload and not present:
                answer["actions"] = {"upload": {"href": base + oid}}
            elif not upload and present:
                answer["actions"] = {"download": {"href": base + oid}}
            elif not upload:
                answer["error"] = {"code": 404, "message": "Object does not exist"}
            answers.append(answer)
        self._reply(200, {"transfer": "basic", "objects": answers})

    def _reply(self, code: int, doc: dict) -> None:
        data = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", LFS_JSON)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _lfs_path(repo: Path, oid: str) -> Path:
    return repo / "lfs" / "objects" / oid[:2] / oid[2:4] / oid


def _upload_pack_command(body: bytes, encoding: str) -> str:
    """`ls-refs` or `fetch` (protocol v2), `fetch` for a v0 request that wants objects."""
    if encoding == "gzip":
        body = gzip.decompress(body)
    found = re.search(rb"command=([a-z-]+)", body[:256])
    if found:
        return found[1].decode()
    return "fetch" if b"want " in body[:256] else "-"


def _have_lines(body: bytes, encoding: str) -> int:
    """How many `have <sha>` pkt-lines the request carries (its negotiation)."""
    if encoding == "gzip":
        body = gzip.decompress(body)
    return len(re.findall(rb"[0-9a-f]{4}have [0-9a-f]{40}", body))


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
