"""Start and stop the real servers the tests talk to, each on its own loopback port.

Tests run in parallel (pytest-xdist), so a port picked free may be taken by another worker before
our server binds it. A server is only trusted once the listening socket on its port is seen to
belong to the process we started (or one of its children); a server that dies before listening
is started again on another port.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
START_ATTEMPTS = 3


def free_port() -> int:
    """A port nothing listened on a moment ago: for servers started through `serving`, which
    checks that it got it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def closed_port() -> Iterator[int]:
    """A port that refuses connections for as long as the block runs: bound, never listening,
    so no other process can take it meanwhile."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on `port` on loopback or any address (IPv4 and IPv6)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                inodes.add(fields[9])
    return inodes


def _family(pid: int) -> list[int]:
    """`pid` and all its descendants (from every process's parent in /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, ()))
    return found


def owns_listener(proc: subprocess.Popen, port: int) -> bool:
    """Whether the socket listening on `port` belongs to `proc` or a child of it."""
    inodes = _listening_inodes(port)
    if not inodes:
        return False
    for pid in _family(proc.pid):
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return True
    return False


class ServerDidNotStart(RuntimeError):
    pass


def wait_for_listener(proc: subprocess.Popen, port: int, timeout: float = 30) -> None:
    """Wait until `proc` itself listens on `port`; `ServerDidNotStart` if it exits first or
    another process holds the port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if owns_listener(proc, port):
            return
        if proc.poll() is not None:
            raise ServerDidNotStart(
                f"{proc.args[0]} exited with {proc.returncode} before listening on {port}"
            )
        time.sleep(0.05)
    raise ServerDidNotStart(f"{proc.args[0]} does not listen on 127.0.0.1:{port} after {timeout}s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def start_listening(
    start: Callable[[int], subprocess.Popen], attempts: int = START_ATTEMPTS
) -> tuple[subprocess.Popen, int]:
    """`start(port)` on a free port until the process it returns listens there itself."""
    for attempt in range(attempts):
        port = free_port()
        proc = None
        try:
            proc = start(port)
            wait_for_listener(proc, port)
            return proc, port
        except ServerDidNotStart:
            if proc is not None:
                stop(proc)
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A server process in a session of its own, its output appended to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )


@contextmanager
def serving(
    command: Callable[[int], list[str]], log: Path, env: dict[str, str] | None = None
) -> Iterator[int]:
    """Run `command(port)` until the block ends; yields the port it listens on."""
    proc, port = start_listening(lambda port: spawn(command(port), log, env))
    try:
        yield port
    finally:
        stop(proc)


@contextmanager
def git_http_server(
    root: Path, log: Path, require_token: str | None = None, token_user: str = "x-access-token"
) -> Iterator[str]:
    """Yields the base URL of a smart-HTTP git server over `root` that logs every request to
    `log` (see the module)."""

    def command(port: int) -> list[str]:
        cmd = [sys.executable, "-m", "tests.support.git_http_server", str(root), str(port)]
        if require_token:
            cmd += ["--require-token-from-env", "REPOVAULT_TEST_REQUIRED_TOKEN"]
            cmd += ["--token-user", token_user]
        return cmd

    # The token travels in the environment, not on a command line others can read.
    env = {"REPOVAULT_TEST_REQUIRED_TOKEN": require_token} if require_token else None
    with serving(command, log, env) as port:
        yield f"http://127.0.0.1:{port}"


@contextmanager
def s3_server(log: Path) -> Iterator[str]:
    """Yields the endpoint of moto's S3 server mode: a real S3 protocol peer over HTTP."""
    with serving(_moto, log) as port:
        yield f"http://127.0.0.1:{port}"


def _moto(port: int) -> list[str]:
    return [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)]


class FreshS3:
    """moto's S3 server on a port of its own, which `restart` replaces by a new, empty one on
    the same port: no object, no bucket and no memory of what the last one held (moto keeps
    everything in its process and answers slower the more it held)."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.proc, self.port = start_listening(lambda port: spawn(_moto(port), log))
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def restart(self) -> None:
        stop(self.proc)
        self.proc = spawn(_moto(self.port), self.log)
        wait_for_listener(self.proc, self.port)

    def stop(self) -> None:
        stop(self.proc)
