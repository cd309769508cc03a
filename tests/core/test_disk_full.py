"""A full disk is reported as what it is, not as git's symptom (issue 20, item 8)."""

from __future__ import annotations

from pathlib import Path

from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.vault.gitops import GitClient
from repovault_pipeline.core.vault.gitproc import disk_full, received_bytes

# What `git clone` printed on a 1 MB tmpfs (git 2.47, smart HTTP and file://).
CLONE_STDERR = (
    "Cloning into bare repository '/work/r.git'...\n"
    "remote: Enumerating objects: 3, done.\n"
    "Receiving objects:  33% (1/3)\rReceiving objects:  66% (2/3), 716.00 KiB | 1.40 MiB/s\r"
    "fatal: write error: No space left on device\n"
    "fatal: fetch-pack: invalid index-pack output\n"
)


def test_git_stderr_of_a_full_disk_is_recognised_with_what_was_received() -> None:
    assert disk_full(CLONE_STDERR)
    assert not disk_full("fatal: fetch-pack: invalid index-pack output\n")
    assert not disk_full("fatal: unable to access 'x': Could not resolve host: x\n")
    assert received_bytes(CLONE_STDERR) == 716 * 1024
    assert received_bytes("Receiving objects: 100% (3/3), done.\n") == 0


def test_the_message_names_the_work_folder_its_free_space_and_the_need(tmp_path: Path) -> None:
    work = tmp_path / "work"
    client = GitClient(Settings(work_dir=work))
    clone = work / "repo-x" / "repo.git"
    error = str(client.work_dir_full("clone", clone, 2 * 1024 * 1024, 3 * 1024 * 1024))
    assert f"REPOVAULT_WORK_DIR={work.absolute()} is full (" in error
    assert " MB free of " in error  # measured on the disk that holds it (work/ does not exist)
    assert "needs more than the 2.0 MB free when git clone started" in error
    assert "3.0 MB received before the disk filled" in error
    assert "index-pack" not in error

    elsewhere = str(client.work_dir_full("fetch", tmp_path / "restore-dest", None))
    assert f"the disk holding {tmp_path / 'restore-dest'} is full" in elsewhere
    assert "needs" not in elsewhere
