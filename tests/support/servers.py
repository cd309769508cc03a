"""Start and stop the real servers the tests talk to, each on its own loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(
    host: str, port: int, proc: subprocess.Popen | None = None, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"{proc.args[0]} exited with {proc.returncode} before listening on {port}"
            )
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout}s")


@contextmanager
def running(
    cmd: list[str], port: int, log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen]:
    """Run `cmd` until the block ends; fail clearly if it never listens on `port`."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    try:
        wait_for_port("127.0.0.1", port, proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def git_http_server(
    root: Path, log: Path, require_token: str | None = None, token_user: str = "x-access-token"
) -> Iterator[str]:
    """Yields the base URL of a smart-HTTP git server over `root` that logs every request to
    `log` (see the module)."""
    port = free_port()
    cmd = [sys.executable, "-m", "tests.support.git_http_server", str(root), str(port)]
    # The token travels in the environment, not on a command line others can read.
    env = {"REPOVAULT_TEST_REQUIRED_TOKEN": require_token} if require_token else None
    if require_token:
        cmd += ["--require-token-from-env", "REPOVAULT_TEST_REQUIRED_TOKEN"]
        cmd += ["--token-user", token_user]
    with running(cmd, port, log, env):
        yield f"http://127.0.0.1:{port}"


@contextmanager
def s3_server(log: Path) -> Iterator[str]:
    """Yields the endpoint of moto's S3 server mode: a real S3 protocol peer over HTTP."""
    port = free_port()
    moto = Path(sys.executable).with_name("moto_server")
    with running([str(moto), "-H", "127.0.0.1", "-p", str(port)], port, log):
        yield f"http://127.0.0.1:{port}"
