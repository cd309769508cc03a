"""Work folders: a killed run's clone is removed by the next run to start, a living run's never."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from repovault_pipeline.core.vault.workdir import make_work_dir, remove_work_dir, sweep_orphans
from tests.support.servers import REPO_ROOT
from tests.support.vault_checks import kill


def start_holder(root: Path) -> tuple[subprocess.Popen, Path]:
    """Another process that made a work folder under `root` and is still working in it."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from repovault_pipeline.core.vault.workdir import make_work_dir\n"
            f"folder = make_work_dir(Path({str(root)!r}), 'repo-x')\n"
            "(folder / 'repo.git').mkdir()\n"
            "print(folder, flush=True)\n"
            "time.sleep(600)\n",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    return proc, Path(proc.stdout.readline().decode().strip())


def test_a_living_runs_folder_stays_and_a_killed_runs_folder_goes(tmp_path: Path) -> None:
    root = tmp_path / "work"
    proc, folder = start_holder(root)
    try:
        assert (folder / "repo.git").is_dir()
        mine = make_work_dir(root, "repo-y")
        assert sweep_orphans(root) == []  # the living run's folder stays, and this one's
        assert folder.is_dir() and mine.is_dir()
    finally:
        kill(proc)

    assert folder.is_dir()  # SIGKILL: the run could not clean up
    assert sweep_orphans(root) == [folder]  # the next run to start removes it at once
    assert not folder.exists() and mine.is_dir()
    remove_work_dir(mine)
    assert list(root.iterdir()) == []


def test_folders_without_a_lock_go_only_once_old(tmp_path: Path) -> None:
    root = tmp_path / "work"
    young, old = root / "being-created", root / "left-by-an-older-version"
    young.mkdir(parents=True)
    old.mkdir()
    (old / "repo.bundle").write_bytes(b"x")
    hour_ago = time.time() - 3600
    os.utime(old, (hour_ago, hour_ago))
    assert sweep_orphans(root) == [old]
    assert young.is_dir() and not old.exists()
