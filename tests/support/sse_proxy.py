"""An HTTP proxy in front of the S3 server that drops the server-side encryption headers of
every request: a real S3 peer that cannot honour SSE (an S3-compatible store or gateway that
ignores `x-amz-server-side-encryption`), which stores the object in the clear and says nothing
unless its answer is read. moto itself honours, and echoes, every SSE request."""

from __future__ import annotations

import http.client
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from tests.support.s3_errors import LoopbackHttp

_SSE = "x-amz-server-side-encryption"


class SseDroppingProxy(LoopbackHttp):
    """Forwards 127.0.0.1:<port> to `target` (an S3 endpoint URL) without SSE headers;
    `dropped` counts the requests that carried them."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.dropped = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if not k.lower().startswith(_SSE)}
                if len(headers) != len(self.headers):
                    owner.dropped += 1
                upstream = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                finally:
                    upstream.close()
                self.send_response(answer.status)
                hop = ("transfer-encoding", "connection")
                if self.command != "HEAD":  # a HEAD's length is the object's: passed on
                    hop += ("content-length",)
                    self.send_header("Content-Length", str(len(data)))
                for name, value in answer.getheaders():
                    if name.lower() not in hop:
                        self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

            def log_message(self, format: str, *args: object) -> None:
                return

        self._serve(Handler)
