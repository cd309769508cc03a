"""Real histories carry objects written in a legacy format (pallets/werkzeug's commits without
a space before the email, bad time zones, zero-padded file modes...) that forges serve as they
are: a copy of them archives, verifies and restores. Damage (a missing or corrupt object) still
fails `verify`."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from pathlib import Path

from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.vault.gitops import GitClient
from repovault_pipeline.core.vault.localrepo import LocalRepo, parse_fsck
from tests.core.test_restore import bundle_key, edit_manifest, put
from tests.support.archiving import archive
from tests.support.repos import ServedRepo, git, git_bytes
from tests.support.user_checks import console

# One commit per defect git fsck reports on real histories: (message id, author/committer
# lines, extra header lines).
GOOD = "A U Thor <a@example.com> 1112911993 +0200"
DEFECTS = {
    "missingSpaceBeforeEmail": (
        "author Armin Ronacher<armin@example.com> 1112911993 +0200",
        "",
    ),
    "badTimezone": (f"author {GOOD.replace('+0200', '+99999')}", ""),
    "badDate": ("author A U Thor <a@example.com> yesterday +0200", ""),
    "missingEmail": ("author A U Thor 1112911993 +0200", ""),
    "nulInHeader": (f"author {GOOD}", "encoding utf\0-8\n"),
}


def write_legacy_history(repo: ServedRepo) -> str:
    """On top of `main` of the served repository: a commit for each defect of DEFECTS and one
    whose tree has a zero-padded file mode (`0100644`), then a well-formed HEAD commit. Written
    with `hash-object --literally` (git refuses to write them otherwise). Returns HEAD."""
    bare = repo.bare
    parent = repo.head()
    tree = git(bare, "rev-parse", "main^{tree}")
    blob = git_bytes(bare, "hash-object", "-w", "--stdin", stdin=b"legacy\n").decode()
    padded = b"0100644 legacy.txt\0" + bytes.fromhex(blob)
    padded_tree = _literal(bare, "tree", padded)
    for author, header in [*DEFECTS.values(), (f"author {GOOD}", "")]:
        body = f"tree {tree}\nparent {parent}\n{author}\ncommitter {GOOD}\n{header}\nold\n"
        parent = _literal(bare, "commit", body.encode())
    body = f"tree {padded_tree}\nparent {parent}\nauthor {GOOD}\ncommitter {GOOD}\n\npadded\n"
    parent = _literal(bare, "commit", body.encode())
    head = git_bytes(bare, "commit-tree", "-p", parent, "-m", "today", tree).decode()
    git(bare, "update-ref", "refs/heads/main", head)
    return head


def _literal(bare: Path, kind: str, body: bytes) -> str:
    return git_bytes(
        bare, "hash-object", "-t", kind, "--literally", "-w", "--stdin", stdin=body
    ).decode()


def test_a_history_in_legacy_formats_archives_verifies_and_restores(
    vault_env: dict[str, str], make_repo: Callable[..., ServedRepo], tmp_path: Path
) -> None:
    repo = make_repo("werkzeug")
    repo.commit({"README.md": "hello\n"})
    repo.push()
    head = write_legacy_history(repo)
    fsck = subprocess.run(
        ["git", "-C", str(repo.bare), "fsck", "--full"], capture_output=True, text=True
    )
    assert fsck.returncode != 0 and "missingSpaceBeforeEmail" in fsck.stderr  # what git says

    result = archive(repo)  # over http, as from the forge
    assert (result.outcome, result.head_commit) == ("completed", head)

    verified = console("repovault", "verify", "--deep", repo.url, cwd=tmp_path)
    assert verified.returncode == 0, verified.stderr
    assert f"snapshot {result.snapshot_id} restores" in verified.stdout
    assert "git fsck finds no damage (legacy formatting the source carries: " in verified.stdout
    for msg_id in [*DEFECTS, "zeroPaddedFilemode"]:
        assert f"{msg_id} in 1" in verified.stdout

    restored = console("repovault", "restore", repo.repo_id, str(tmp_path / "out"), cwd=tmp_path)
    assert restored.returncode == 0, restored.stderr
    assert git(tmp_path / "out", "rev-parse", "HEAD") == head
    assert git(tmp_path / "out", "rev-list", "--count", "HEAD") == "9"


def test_a_bundle_missing_an_object_still_fails(
    vault_env: dict[str, str], make_repo: Callable[..., ServedRepo], tmp_path: Path
) -> None:
    """A bundle the manifest vouches for (size, sha256, refs) whose pack lacks a blob."""
    repo = make_repo("damaged")
    repo.commit({"a.txt": "a\n", "b.txt": "b\n"})
    repo.push()
    result = archive(repo)
    lost = git(repo.bare, "rev-parse", "main:b.txt")
    objects = git(repo.bare, "rev-list", "--objects", "--all").splitlines()
    kept = "".join(f"{line.split()[0]}\n" for line in objects if not line.startswith(lost))
    pack = git_bytes(repo.bare, "pack-objects", "--stdout", stdin=kept.encode())
    data = f"# v2 git bundle\n{repo.head()} refs/heads/main\n\n".encode() + pack
    put(result, bundle_key(result), data)
    edit_manifest(
        result,
        lambda m: m["bundle"].update(size=len(data), sha256=hashlib.sha256(data).hexdigest()),
    )
    verified = console("repovault", "verify", "--deep", repo.repo_id, cwd=tmp_path)
    assert verified.returncode == 1
    assert ": bundle_invalid: " in verified.stderr


def test_git_fsck_output_is_read_by_message_id(tmp_path: Path) -> None:
    """Legacy formats are counted; a missing object, a broken link or a corrupt object is
    damage, as is a failing status with nothing said."""
    report = parse_fsck(
        "warning in tree 0687: zeroPaddedFilemode: contains zero-padded file modes\n"
        "error in commit 2316: badTimezone: invalid author/committer line - bad time zone\n"
        "error in commit 259e: missingSpaceBeforeEmail: invalid author/committer line\n"
        "warning in blob 11aa: gitmodulesParse: could not parse gitmodules blob\n"
        "warning in tree 22bb: somethingNew: a warning git fsck passes with\n"
        "notice: HEAD points to an unborn branch (master)\n",
        1,
    )
    assert report.damage == []
    assert report.legacy == {
        "zeroPaddedFilemode": 1,
        "badTimezone": 1,
        "missingSpaceBeforeEmail": 1,
        "gitmodulesParse": 1,
    }
    assert parse_fsck("error in tree 33cc: badTree: cannot be parsed\n", 1).damage
    assert parse_fsck("", 2).damage == ["git fsck exited with status 2"]

    bare = tmp_path / "r.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    blob = git_bytes(bare, "hash-object", "-w", "--stdin", stdin=b"hi\n").decode()
    tree = git_bytes(bare, "mktree", stdin=f"100644 blob {blob}\ta.txt\n".encode()).decode()
    commit = git_bytes(bare, "commit-tree", "-m", "x", tree).decode()
    git(bare, "update-ref", "refs/heads/main", commit)
    local = LocalRepo(bare, GitClient(Settings.from_env()))
    assert local.fsck().damage == []
    (bare / "objects" / blob[:2] / blob[2:]).unlink()
    damage = local.fsck().damage
    assert f"missing blob {blob}" in damage and any("broken link" in ln for ln in damage)
