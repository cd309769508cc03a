"""Work folders of runs (clone, bundle, spooled blobs) under REPOVAULT_WORK_DIR.

Each run holds an exclusive `flock` on a lock file inside its folder for as long as it uses the
folder. The kernel drops the lock when the process dies, however it dies (SIGKILL included), so
the next run to start removes every folder whose lock it can take: the clones of killed runs go
at once, and a folder of a run that is still alive is never touched.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import threading
import time
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_FILE = ".repovault-run.lock"
# A folder without its lock file is being created right now (the lock follows its mkdir), or
# was left by a run killed in that instant or by an older RepoVault: removed once this old.
UNLOCKED_GRACE_S = 60.0

_held: dict[Path, int] = {}  # folder -> fd holding its lock, in this process
_held_guard = threading.Lock()


def make_work_dir(root: Path, label: str, path: Path | None = None) -> Path:
    """An empty private folder for one run under `root`, locked by this process."""
    path = path or root / f"{label}-{uuid.uuid4().hex[:12]}"
    remove_work_dir(path)
    path.mkdir(parents=True)
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    with _held_guard:
        _held[path] = fd
    return path


def remove_work_dir(path: Path) -> None:
    """Delete a run's folder, then let go of its lock."""
    shutil.rmtree(path, ignore_errors=True)
    with _held_guard:
        fd = _held.pop(path, None)
    if fd is not None:
        os.close(fd)


def sweep_orphans(root: Path) -> list[Path]:
    """Remove the folders under `root` that no living run holds; return them. Every run calls
    it when it starts, whether it will clone or not."""
    if not root.is_dir():
        return []
    removed = []
    for child in sorted(root.iterdir()):
        try:
            if child.is_dir() and not child.is_symlink() and _take_orphan(child):
                removed.append(child)
        except FileNotFoundError:
            continue  # removed by its own run while we looked
    if removed:
        log.info("removed %d work folder(s) of runs that died: %s", len(removed), removed)
    return removed


def _take_orphan(folder: Path) -> bool:
    lock = folder / LOCK_FILE
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        if time.time() - folder.stat().st_mtime > UNLOCKED_GRACE_S:
            shutil.rmtree(folder, ignore_errors=True)
            return True
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a living run holds it
        if os.fstat(fd).st_ino != os.stat(lock).st_ino:
            return False  # its run recreated the folder meanwhile: that lock is not ours
        shutil.rmtree(folder, ignore_errors=True)
        return True
    finally:
        os.close(fd)
