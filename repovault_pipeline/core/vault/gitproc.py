"""One `git` process, hardened: started with every dangerous config off (`HARDENING`), fed
and drained from threads, killed with its helpers, and its failure read from stderr (not
found, network, disk full) with credentials masked."""

from __future__ import annotations

import logging
import os
import re
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

from repovault_pipeline.core.common.errors import (
    ArchiveError,
    RepoNotFound,
    TransientError,
)
from repovault_pipeline.core.common.redact import mask_secrets

HARDENING = (
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "protocol.file.allow=never",
    "-c",
    "protocol.ext.allow=never",
    "-c",
    "credential.helper=",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "submodule.recurse=false",
)

PROGRESS_EVERY_S = 5.0
_NOT_FOUND = (
    "repository not found",
    "not found",
    "does not appear to be a git repository",
    "could not read username",
    "authentication failed",
    "terminal prompts disabled",
    "permission denied",
    "returned error: 401",
    "returned error: 403",
    "returned error: 404",
)
_TRANSIENT = (
    "could not resolve host",
    "connection refused",
    "couldn't connect to server",  # curl 7.8x+ says this of a refused connection
    "connection timed out",
    "timed out",
    "rpc failed",
    "early eof",
    "connection reset",
    "remote end hung up",
    "returned error: 5",
    "gnutls_handshake",
    "ssl connect error",
    "ssl_error",
    "temporary failure",
    "network is unreachable",
    "operation too slow",
)
# What git (or a helper it ran: index-pack, pack-objects) prints when a write hits ENOSPC or the
# disk quota; git then reports the symptom, e.g. `fetch-pack: invalid index-pack output`.
_DISK_FULL = ("no space left on device", "disk quota exceeded")
MB = 1024 * 1024
# git's clone progress: `Receiving objects:  66% (2/3), 1.20 MiB | 1.20 MiB/s`.
_RECEIVED = re.compile(r"Receiving objects:[^\r\n]*?, (\d+(?:\.\d+)?) (bytes|KiB|MiB|GiB)")
_UNITS = {"bytes": 1, "KiB": 1024, "MiB": MB, "GiB": 1024 * MB}


def start(
    args: Sequence[str],
    cwd: Path | None,
    env: dict[str, str],
    stdin: bool,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """`git` hardened, with the inherited environment (PATH, HOME) under `env`; stdin is a pipe
    when the caller feeds it, else nothing (git never waits for input)."""
    return subprocess.Popen(
        ["git", *HARDENING, *args],
        cwd=cwd,
        env={**os.environ, "LANGUAGE": "C", **env},
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=new_session,
    )


@contextmanager
def exit_waiter(popen: subprocess.Popen[bytes]) -> Iterator[Callable[[float], bool]]:
    """`exited(timeout)`: whether the process ended within `timeout` s, woken the moment it
    does by its pidfd (Linux). `Popen.wait(timeout)` polls with sleeps of up to 50 ms, which
    added ~10 ms to each short git command: a chain restore runs dozens of them."""
    try:
        pidfd: int | None = os.pidfd_open(popen.pid)
    except (AttributeError, OSError):  # not Linux, or the process is gone already
        pidfd = None

    def exited(timeout: float) -> bool:
        if pidfd is None:
            with suppress(subprocess.TimeoutExpired):
                popen.wait(timeout)
        else:
            select.select([pidfd], [], [], timeout)  # readable once the process has ended
        return popen.poll() is not None

    try:
        yield exited
    finally:
        if pidfd is not None:
            os.close(pidfd)


def feed(stdin: IO[bytes], chunks: Iterable[bytes]) -> None:
    """Write to a child's stdin from a thread, so that reading its output never deadlocks."""
    try:
        for chunk in chunks:
            stdin.write(chunk)
        stdin.flush()
    except (BrokenPipeError, ValueError):
        pass  # the reader stopped early (an upload failed): nothing more to send
    finally:
        with suppress(BrokenPipeError, ValueError):
            stdin.close()


def disk_full(stderr: str) -> bool:
    """git's stderr says a write failed for lack of space (its last line may only say
    `fetch-pack: invalid index-pack output`)."""
    lower = stderr.lower()
    return any(marker in lower for marker in _DISK_FULL)


def existing(path: Path | None) -> Path | None:
    """`path` or its nearest existing parent (a clone's folder exists only while git runs)."""
    if path is None:
        return None
    return next((p for p in (path, *path.parents) if p.exists()), None)


def free_bytes(path: Path | None) -> int | None:
    found = existing(path)
    return shutil.disk_usage(found).free if found is not None else None


def mb(size: int) -> str:
    return f"{size / MB:.1f} MB"


def received_bytes(stderr: str) -> int:
    """The most bytes git's progress says it received (0 when it printed none)."""
    return max((int(float(n) * _UNITS[unit]) for n, unit in _RECEIVED.findall(stderr)), default=0)


def classify(command: str, stderr: str, tokens: tuple[str | None, ...]) -> ArchiveError:
    """Turn git's stderr into an error a user can act on, credentials masked."""
    text = mask_secrets(stderr, tokens).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    fatal = [ln for ln in lines if ln.lower().startswith(("fatal:", "error:", "remote:"))]
    detail = (fatal or lines or [f"git {command} failed"])[-1]
    lower = text.lower()
    if any(marker in lower for marker in _NOT_FOUND):
        return RepoNotFound(
            f"repository not found or not readable ({detail}); "
            "for a private repository set GITHUB_TOKEN or REPOVAULT_SSH_KEY"
        )
    if any(marker in lower for marker in _TRANSIENT):
        return TransientError(f"git {command}: network error: {detail}")
    return ArchiveError(f"git {command} failed: {detail}")


def drain(stream: IO[bytes] | None, sink: object) -> None:
    if stream is None:
        return
    for chunk in iter(
        lambda: stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536), b""
    ):
        sink(chunk)  # type: ignore[operator]


class StderrTail:
    """Keeps the end of git's stderr for error messages and logs clone progress now and then."""

    def __init__(self, logger: logging.Logger | None, keep: int = 16384) -> None:
        self._buf = bytearray()
        self._keep = keep
        self._log = logger
        self._last = time.monotonic()

    def feed(self, chunk: bytes) -> None:
        self._buf.extend(chunk)
        del self._buf[: -self._keep]
        if self._log and time.monotonic() - self._last >= PROGRESS_EVERY_S:
            self._last = time.monotonic()
            latest = self._buf.replace(b"\r", b"\n").strip().rsplit(b"\n", 1)[-1]
            self._log.info("git: %s", mask_secrets(latest.decode(errors="replace")))

    def text(self) -> str:
        return self._buf.decode(errors="replace")


def tree_size(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            with suppress(FileNotFoundError):  # git renames temporary packs while we walk
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def kill_group(popen: subprocess.Popen) -> None:
    """Kill git and its helpers (remote-https, index-pack): they share its process group."""
    with suppress(ProcessLookupError):
        os.killpg(popen.pid, signal.SIGKILL)
