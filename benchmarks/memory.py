"""Peak memory of a contender process and of the git processes it runs.

Two Linux details shape this module:
- `ru_maxrss` survives exec: a process started from a 60 MB parent reports at least 60 MB.
  Contenders are therefore started through `sh` (a ~1 MB process that forks them), so their own
  `RUSAGE_SELF` peak is theirs alone.
- For the same reason `RUSAGE_CHILDREN` of a contender is at least the contender's own size
  when it started git, so it cannot tell how big git got. Git's memory (and the total of the
  process tree, which is what a container limit sees) is sampled from /proc instead.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")


def spawn_isolated(cmd: list[str], **popen_kwargs: object) -> subprocess.Popen:
    """Start `cmd` as a forked child of a small `sh` (not exec'd by it: `; exit` stops dash from
    exec-ing the last command), so its ru_maxrss does not inherit this process's size."""
    script = '"$@"; exit $?'
    return subprocess.Popen(["sh", "-c", script, "sh", *cmd], **popen_kwargs)  # type: ignore[call-overload]


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for task in os.scandir(f"/proc/{pid}/task"):
            kids += [int(k) for k in Path(task.path, "children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return kids


def _is_git(pid: int) -> bool:
    """git, git-remote-http, ...; not a forked child that has yet to exec (it would show the
    contender's own pages)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().startswith("git")
    except (FileNotFoundError, ProcessLookupError):
        return False


def _rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0


class TreeSampler:
    """Polls the descendants of `root` (the `sh` of `spawn_isolated`) every `interval` seconds:
    the peak of the contender's RSS plus its git processes', and the peak of the largest git
    process. Sampling can miss a spike shorter than the interval."""

    def __init__(self, root: int, interval: float = 0.1) -> None:
        self.root = root
        self.interval = interval
        self.total_peak = 0
        self.git_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            contenders = _children(self.root)
            below, frontier = [], [k for pid in contenders for k in _children(pid)]
            while frontier:
                pid = frontier.pop()
                below.append(pid)
                frontier += _children(pid)
            sizes = [_rss(pid) for pid in below if _is_git(pid)]
            total = sum(_rss(pid) for pid in contenders) + sum(sizes)
            self.total_peak = max(self.total_peak, total)
            self.git_peak = max([self.git_peak, *sizes])
            self._stop.wait(self.interval)


def mb(n_bytes: float) -> float:
    """MB = 10^6 bytes, one decimal."""
    return round(n_bytes / 1e6, 1)
