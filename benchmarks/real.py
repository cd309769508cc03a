"""Real repositories for the benchmark: a bare repository on disk (`git clone --mirror URL`
gives one), served as a copy so the user's repository is never written to.

The copy (`git clone --bare`, objects hardlinked where the filesystem allows) keeps branches and
tags only, what RepoVault archives: a forge's `refs/pull/*` would only make every clone bigger.
The one-file commits of contenders f, g and the incremental section are small edits of one
text file of HEAD (a README first), written into the copy.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.support.repos import git, git_bytes

from .repos import BenchRepo, head_entries, head_stats, pack_bytes, ref_count

TEXT_LIMIT = 64 << 10  # a changed file at most this big: a small edit of a source file


class NotABareRepository(ValueError):
    """`--real` named something that is not a bare git repository."""


def parse(entry: str) -> tuple[str, Path]:
    """`[NAME=]PATH` -> (NAME, PATH); the default name is the folder's, or its parent's when
    the folder is a generic `repo` or `NAME.git`, made URL-safe."""
    name, _, path_text = entry.rpartition("=")
    path = Path(path_text).expanduser().resolve()
    if not name:
        stem = path.name.removesuffix(".git")
        name = path.parent.name if stem in ("", "repo") else stem
    bare = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "--is-bare-repository"],
        capture_output=True,
        text=True,
        check=False,
    )
    if bare.stdout.strip() != "true":
        raise NotABareRepository(
            f"--real {entry}: {path} is not a bare git repository "
            "(make one with `git clone --mirror URL`)"
        )
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "real", path


def changed_file(bare: Path) -> str:
    """The file the one-file commits edit: a README at the top if there is one, else the first
    non-empty text file of HEAD (by path) up to `TEXT_LIMIT`; deterministic."""
    candidates = sorted(
        (not path.lower().startswith("readme"), path, sha)
        for mode, sha, size, path in head_entries(bare)
        if mode == "100644" and 0 < size <= TEXT_LIMIT
    )
    for _, path, sha in candidates:
        data = git_bytes(bare, "cat-file", "blob", sha)
        if b"\0" not in data and data.strip():
            return path
    raise RuntimeError(f"{bare}: HEAD has no text file to change")


def serve(name: str, source: Path, served_root: Path, base_url: str) -> BenchRepo:
    """A fresh copy of `source` at `served_root/real/NAME.git`, served at its URL."""
    bare = served_root / "real" / f"{name}.git"
    subprocess.run(["rm", "-rf", str(bare)], check=True)
    bare.parent.mkdir(parents=True, exist_ok=True)
    git(bare.parent, "clone", "-q", "--bare", str(source), bare.name)
    git(bare, "remote", "remove", "origin")
    files, head_bytes = head_stats(bare)
    return BenchRepo(
        name=name,
        bare=bare,
        url=f"{base_url}/real/{name}.git",
        branch=git(bare, "symbolic-ref", "HEAD"),
        base_commit=git(bare, "rev-parse", "HEAD"),
        changed_path=changed_file(bare),
        head_files=files,
        head_bytes=head_bytes,
        pack_bytes=pack_bytes(bare),
        commits=int(git(bare, "rev-list", "--count", "--branches", "--tags")),
        refs=ref_count(bare),
        source=str(source),
    )
