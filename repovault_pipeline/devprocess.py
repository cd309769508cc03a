"""The processes `make run` starts, recorded under REPOVAULT_HOME/run/ so that `make stop` stops
those of this home, and only those: never a broker or a Dagster of another checkout.

A record holds the pid and the process's start time (from /proc), so a pid the system reused for
an unrelated process is never signalled. Linux only, like `make run`'s embedded broker.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

STOP_GRACE_S = 20.0  # then SIGKILL: dagster dev's children finish their in-flight work first


@dataclass(frozen=True)
class RecordedProcess:
    """A process this home started (it leads its own process group)."""

    name: str
    pid: int
    started: int  # clock ticks since boot, /proc/<pid>/stat field 22
    detail: str = ""  # e.g. the broker's address

    @property
    def alive(self) -> bool:
        return _start_ticks(self.pid) == self.started


def run_dir(home: Path) -> Path:
    return home / "run"


def record(home: Path, name: str, pid: int, detail: str = "") -> RecordedProcess:
    started = _start_ticks(pid)
    if started is None:
        raise ProcessLookupError(f"{name} (pid {pid}) exited before it could be recorded")
    proc = RecordedProcess(name, pid, started, detail)
    path = run_dir(home) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(proc)))
    return proc


def recorded(home: Path, name: str) -> RecordedProcess | None:
    """The live process this home recorded as `name`; a stale record is removed."""
    path = run_dir(home) / f"{name}.json"
    try:
        proc = RecordedProcess(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if proc.alive:
        return proc
    path.unlink(missing_ok=True)
    return None


def forget(home: Path, name: str) -> None:
    (run_dir(home) / f"{name}.json").unlink(missing_ok=True)


def stop(procs: Iterable[RecordedProcess], grace_s: float = STOP_GRACE_S) -> list[int]:
    """SIGTERM each process's group and every descendant that left it, SIGKILL whatever is left
    of them (or joined the groups meanwhile) after `grace_s`; returns the pids signalled."""
    groups = [proc.pid for proc in procs if proc.alive]
    targets = {m for pgid in groups for m in {pgid, *group_members(pgid), *descendants(pgid)}}
    _signal_all(targets, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while (left := [pid for pid in targets if running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    late = {m for pgid in groups for m in group_members(pgid)} - targets
    _signal_all([*left, *late], signal.SIGKILL)
    return sorted(targets | late)


def group_members(pgid: int) -> list[int]:
    return [pid for pid, stat in _all_stats() if stat[2] == pgid]


def descendants(pid: int) -> list[int]:
    """Every process below `pid` in the process tree (children, grandchildren...), from /proc."""
    children: dict[int, list[int]] = {}
    for child, stat in _all_stats():
        children.setdefault(stat[0], []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _signal_all(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
            os.kill(pid, sig)


def running(pid: int) -> bool:
    """Alive and not a zombie (a zombie has exited; its parent has yet to reap it)."""
    stat = _stat(pid)
    return stat is not None and stat[1] != "Z"


def _all_stats() -> list[tuple[int, tuple[int, str, int, int]]]:
    stats = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            stats.append((int(entry.name), stat))
    return stats


def _stat(pid: int) -> tuple[int, str, int, int] | None:
    """(parent pid, state, process group, start time) of `pid`, None when it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name may hold spaces and ")"
    return int(fields[1]), fields[0], int(fields[2]), int(fields[19])


def _start_ticks(pid: int) -> int | None:
    stat = _stat(pid)
    return stat[3] if stat is not None and stat[1] != "Z" else None
