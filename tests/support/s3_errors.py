"""A tiny HTTP server that answers every S3 request with one error status and S3 error code, or
never answers: a real peer for the 5xx, throttling, access-denied and hanging answers moto does
not give."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackHttp:
    """A threaded HTTP server on 127.0.0.1 serving `handler`: the test's own S3 peers."""

    def _serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class FailingS3(LoopbackHttp):
    """Serves on 127.0.0.1:<port>; every request gets `status` with `<Code>code</Code>`, or,
    with `status` None, no answer until the server closes."""

    def __init__(self, status: int | None, code: str = "") -> None:
        self.status = status
        self.code = code
        self.requests = 0
        self._closed = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                owner.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                if owner.status is None:
                    owner._closed.wait()
                    return
                body = (
                    '<?xml version="1.0" encoding="UTF-8"?>'
                    f"<Error><Code>{owner.code}</Code><Message>test answer</Message></Error>"
                ).encode()
                self.send_response(owner.status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _answer

            def log_message(self, format: str, *args: object) -> None:
                return

        self._serve(Handler)

    def close(self) -> None:
        self._closed.set()
        super().close()
