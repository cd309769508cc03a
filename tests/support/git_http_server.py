"""Smart-HTTP git server: `git http-backend` behind a small threaded HTTP server.

Run as `python -m tests.support.git_http_server ROOT PORT`; serves every repository under ROOT
at http://127.0.0.1:PORT/<path>, for clones only (receive-pack is off). Every request is
printed on stdout as `REQUEST <method> <path> <command>` when it arrives, so a test can see
what git asked for; `<command>` is the upload-pack command (`ls-refs`, `fetch`; `-` for none).
"""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

_LOGGED = "REQUEST "


class GitHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    root = "."

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
        command = _upload_pack_command(body, self.headers.get("Content-Encoding", ""))
        print(f"{_LOGGED}{self.command} {path} {command}", flush=True)
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


def logged_requests(log: Path, path_prefix: str = "") -> list[tuple[str, str, str]]:
    """(method, path, upload-pack command) of every request the server logged to `log`, for
    paths under `path_prefix`."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    found = []
    for line in lines:
        if line.startswith(_LOGGED):
            method, path, command = line[len(_LOGGED) :].split(" ")
            if path.startswith(path_prefix):
                found.append((method, path, command))
    return found


def _feed(stdin, body: bytes) -> None:
    try:
        stdin.write(body)
    except BrokenPipeError:
        pass
    finally:
        stdin.close()


def serve(root: str, port: int) -> None:
    GitHandler.root = os.path.abspath(root)
    server = ThreadingHTTPServer(("127.0.0.1", port), GitHandler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
