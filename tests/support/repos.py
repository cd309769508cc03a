"""Git repositories the tests generate and serve: a working copy pushed to a bare repository
under the git server's root."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

GIT_ENV = {
    "GIT_AUTHOR_NAME": "RepoVault Tests",
    "GIT_AUTHOR_EMAIL": "tests@repovault.invalid",
    "GIT_COMMITTER_NAME": "RepoVault Tests",
    "GIT_COMMITTER_EMAIL": "tests@repovault.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


def git_bytes(cwd: Path, *args: str, stdin: bytes = b"") -> bytes:
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        input=stdin,
        check=True,
        capture_output=True,
        env={**os.environ, **GIT_ENV},
    ).stdout.strip()


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV},
    ).stdout.strip()


class ServedRepo:
    """A repository served at `url`; edit it with `commit`, `branch`, `tag`, then `push`."""

    def __init__(
        self, served_root: Path, work_root: Path, base_url: str, owner: str, name: str
    ) -> None:
        self.bare = served_root / owner / f"{name}.git"
        self.work = work_root / owner / name
        self.url = f"{base_url}/{owner}/{name}.git"
        self.bare.parent.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True)
        git(self.work, "init", "-q", "-b", "main")
        git(self.bare.parent, "init", "-q", "--bare", self.bare.name)
        git(self.work, "remote", "add", "origin", str(self.bare))

    @property
    def repo_id(self) -> str:
        """Its `repo_id`: the partition key and the key of its lineage rows and bucket."""
        return self.url.removeprefix("http://").removesuffix(".git")

    def head(self) -> str:
        """The commit its served `main` points to: what a restore must give back."""
        return self.refs()["refs/heads/main"]

    def write(self, files: dict[str, bytes | str | None]) -> None:
        for path, content in files.items():
            target = self.work / path
            if content is None:
                git(self.work, "rm", "-q", path)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content.encode() if isinstance(content, str) else content)
            git(self.work, "add", path)

    def track_lfs(self, pattern: str) -> None:
        """Route `pattern` through Git LFS; `push` then uploads the objects to the git server's
        LFS endpoint over HTTP (the push of commits goes to the bare repository on disk)."""
        git(self.work, "lfs", "install", "--local")
        git(self.work, "config", "lfs.url", f"{self.url}/info/lfs")
        git(self.work, "config", "lfs.locksverify", "false")
        git(self.work, "lfs", "track", pattern)
        git(self.work, "add", ".gitattributes")

    def lfs_store(self) -> Path:
        """Where the git server keeps this repository's LFS objects."""
        return self.bare / "lfs" / "objects"

    def symlink(self, path: str, target: str) -> None:
        os.symlink(target, self.work / path)
        git(self.work, "add", path)

    def commit(
        self, files: dict[str, bytes | str | None] | None = None, message: str = "change"
    ) -> str:
        self.write(files or {})
        git(self.work, "commit", "-q", "--allow-empty", "-m", message)
        return git(self.work, "rev-parse", "HEAD")

    def branch(self, name: str, checkout: bool = True) -> None:
        git(self.work, "checkout", "-q", "-b", name) if checkout else git(self.work, "branch", name)

    def checkout(self, name: str) -> None:
        git(self.work, "checkout", "-q", name)

    def tag(self, name: str, annotated: bool = False) -> None:
        git(self.work, "tag", *(["-a", "-m", name] if annotated else []), name)

    def push(self) -> None:
        git(
            self.work,
            "push",
            "-q",
            "--force",
            "--prune",
            "origin",
            "refs/heads/*:refs/heads/*",
            "refs/tags/*:refs/tags/*",
        )
        git(self.bare, "symbolic-ref", "HEAD", "refs/heads/main")

    def refs(self) -> dict[str, str]:
        out = git(
            self.bare,
            "for-each-ref",
            "--format=%(objectname) %(refname)",
            "refs/heads",
            "refs/tags",
        )
        return {name: sha for sha, name in (line.split(" ", 1) for line in out.splitlines())}

    def commit_tree(self, files: dict[bytes, bytes], branch: str = "main") -> str:
        """Commit `files` (path bytes -> content) straight into the served repository with
        plumbing: trees git itself refuses to check out (`..`, `.git`, any byte in a name)."""
        nested: dict = {}
        for path, content in files.items():
            *folders, name = path.split(b"/")
            node = nested
            for folder in folders:
                node = node.setdefault(folder, {})
            node[name] = content
        tree = self._mktree(nested)
        commit = git_bytes(self.bare, "commit-tree", "-m", "crafted tree", tree).decode()
        git(self.bare, "update-ref", f"refs/heads/{branch}", commit)
        return commit

    def _mktree(self, node: dict) -> str:
        listing = b""
        for name, value in node.items():
            if isinstance(value, dict):
                listing += b"040000 tree " + self._mktree(value).encode() + b"\t" + name + b"\0"
            else:
                sha = git_bytes(self.bare, "hash-object", "-w", "--stdin", stdin=value)
                listing += b"100644 blob " + sha + b"\t" + name + b"\0"
        return git_bytes(self.bare, "mktree", "-z", stdin=listing).decode()


def lost_lfs_object(repo: ServedRepo) -> None:
    """Two LFS files pushed to `repo`, then one of them (`model.bin`) lost by the forge: what
    its history points to is no longer served (a run of it ends `partial`, `lfs_missing`)."""
    repo.track_lfs("*.bin")
    repo.commit({"model.bin": os.urandom(4000), "kept.bin": os.urandom(3000)})
    repo.push()
    lost = hashlib.sha256((repo.work / "model.bin").read_bytes()).hexdigest()
    (repo.lfs_store() / lost[:2] / lost[2:4] / lost).unlink()
