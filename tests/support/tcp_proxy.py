"""A loopback TCP proxy that can be broken on purpose: the S3 connection dying mid-upload."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time

_REQUEST_LINE = re.compile(rb"(?:^|\r\n)(GET|PUT|POST|DELETE|HEAD) (/\S*) HTTP/1\.[01]\r\n")
# A final answer, not `100 Continue` (which only lets the client send the request's body).
_FINAL_STATUS = re.compile(rb"HTTP/1\.[01] [2-5]\d\d ")


class BreakableProxy:
    """Forwards 127.0.0.1:<port> to `target`; after `break_after` client bytes, or when the
    client sends `break_on` (a byte string, e.g. a SQL statement), resets every connection and
    refuses new ones until `heal()`. With `hold` set, new connections are accepted and never
    answered (a server that hangs). Records the HTTP request lines it forwards (method, path),
    so a test can tell exactly what was uploaded. With `delay_s`, it forwards at most `chunk`
    bytes at a time in either direction and sleeps `delay_s` after each: a slow link (a
    trickling server, an upload that takes long enough to be interrupted). `pause()` stops
    forwarding on every open connection until `resume()`: a writer frozen mid-upload; with
    `pause_on` set, the first client bytes holding it pause the link before they are forwarded
    (a writer frozen at a known point, e.g. its first `tree/` upload); `wait_paused` waits for
    that. `pause_except(request)` pauses it but lets a request whose request line holds
    `request` through (the one in flight, else the next): the server carries it out and
    `answered` is set, while its answer waits with the others (a lease renewal the store took,
    its writer frozen before it heard)."""

    def __init__(
        self, target_port: int, break_after: int | None = None, break_on: bytes | None = None
    ) -> None:
        self.target_port = target_port
        self.break_after = break_after
        self.break_on = break_on
        self.hold = False
        self.pause_on: bytes | None = None
        self.answered = threading.Event()
        self._let_through: bytes | None = None
        self._request: dict[socket.socket, bytes] = {}  # client -> its latest request line
        self._paused = threading.Event()
        self._held: list[socket.socket] = []
        self.delay_s = 0.0
        self.chunk = 65536
        self.forwarded = 0
        self.requests: list[tuple[str, str]] = []
        self.broken = False
        self._flowing = threading.Event()
        self._flowing.set()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @classmethod
    def black_hole(cls) -> BreakableProxy:
        """A server that accepts every connection and never answers (a hung PostgreSQL or S3,
        a frozen load balancer): `held` counts the connections it swallowed."""
        hole = cls(target_port=0)
        hole.hold = True
        return hole

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def puts(self, bucket: str, prefix: str = "") -> list[str]:
        """Keys PUT into `bucket` (under `prefix`) through this proxy, in order."""
        from urllib.parse import unquote

        start = f"/{bucket}/{prefix}"
        return [
            unquote(path.split("?")[0])[len(bucket) + 2 :]
            for method, path in self.requests
            if method == "PUT" and unquote(path).startswith(start)
        ]

    def pause(self) -> None:
        self._flowing.clear()
        self._paused.set()

    def pause_except(self, request: bytes) -> None:
        with self._lock:
            self._let_through = request
            self.answered.clear()
            self.pause()

    def _excepted(self, client: socket.socket, data: bytes, asking: bool) -> bool:
        """Whether `data`, sent by `client` (`asking`) or to it, goes through the paused link:
        the request `pause_except` lets through, in flight or to come, and a `100 Continue`
        for it; its final answer waits with the others. Called under `_lock`."""
        if self._let_through is None or self._let_through not in self._request.get(client, b""):
            return False
        if asking or not _FINAL_STATUS.search(data):
            return True
        self._let_through = None  # carried out: its answer waits
        self.answered.set()
        return False

    @property
    def paused(self) -> bool:
        return not self._flowing.is_set()

    def wait_paused(self, timeout: float) -> bool:
        return self._paused.wait(timeout)

    def resume(self) -> None:
        self._paused.clear()
        self._flowing.set()

    def heal(self) -> None:
        with self._lock:
            self.broken = False
            self.break_after = None
            self.break_on = None

    def close(self) -> None:
        self._flowing.set()
        self._server.close()
        self._break()
        for conn in self._held:
            with contextlib.suppress(OSError):
                conn.close()

    def _break(self) -> None:
        self.broken = True
        for conn in list(self._conns):
            # Linger 0: the close resets the connection. shutdown first: a close alone, while
            # another thread is blocked in recv() on the socket, leaves the socket open and the
            # client waiting for an answer until its read timeout.
            with contextlib.suppress(OSError):
                conn.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.close()
        self._conns.clear()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self.broken:
                client.close()
                continue
            if self.hold:
                self._held.append(client)
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                if self.broken:  # broken while this connection was being set up
                    client.close()
                    upstream.close()
                    continue
                self._conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, counts: bool) -> None:
        try:
            while data := src.recv(self.chunk):
                with self._lock:  # atomic with `pause_except`: let through, or sent before it
                    if counts:
                        found = list(_REQUEST_LINE.finditer(data))
                        self.requests += [(m[1].decode(), m[2].decode()) for m in found]
                        if found:
                            self._request[src] = found[-1][0]
                        self.forwarded += len(data)
                        if (self.break_after is not None and self.forwarded > self.break_after) or (
                            self.break_on is not None and self.break_on in data
                        ):
                            self._break()
                            return
                        if self.pause_on is not None and self.pause_on in data:
                            self.pause_on = None
                            self.pause()
                    flows = self._flowing.is_set() or self._excepted(
                        src if counts else dst, data, counts
                    )
                if not flows:
                    self._flowing.wait()
                dst.sendall(data)
                if self.delay_s:
                    time.sleep(self.delay_s)
        except OSError:
            pass
        finally:
            # shutdown, not only close: the other direction's thread is blocked in recv() on
            # these sockets, and a close alone neither wakes it nor sends the FIN.
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
