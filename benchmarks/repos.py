"""Deterministic synthetic repositories for the benchmark, written with `git fast-import`.

One fast-import stream builds a thousand commits in seconds where a thousand `git commit`s would
take minutes. Content comes from a seeded `random.Random` and every commit carries a fixed date,
so the same spec yields the same commit hashes on every machine, and a cached repository is
reused only while its spec (and this generator's version) is unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import BinaryIO

from tests.support.repos import GIT_ENV, git, git_bytes

GENERATOR_VERSION = 1
EPOCH = 1_700_000_000  # 2023-11-14T22:13:20Z: first commit; each next one an hour later
AUTHOR = b"RepoVault Bench <bench@repovault.invalid>"
MARKER = "repovault-bench.json"
CHANGED_PATH = "README.md"
WORK_REF = "refs/bench/work"  # where fast-import writes the one-file commits, deleted after
_VOCABULARY = (
    "alpha beta gamma delta archive bucket bundle commit branch tag tree blob object store "
    "upload snapshot manifest latest retention partition sensor cursor offset request lineage "
    "kafka dagster minio clone mirror fetch pack index delta stream worker thread pool budget "
    "bytes files path mode symlink submodule retry backoff timeout error reason status event"
)
_WORDS = tuple(_VOCABULARY.split())
_EXTENSIONS = (".py", ".py", ".py", ".md", ".txt", ".json", ".c", ".h", ".yaml")


@dataclass(frozen=True)
class RepoSpec:
    """How big a synthetic repository is; `binaries` are sizes (bytes) of random binary files."""

    name: str
    files: int
    commits: int
    avg_file_bytes: int
    binaries: tuple[int, ...] = ()
    binary_updates: int = 0
    seed: int = 0

    def digest(self) -> str:
        doc = json.dumps({**asdict(self), "v": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha256(doc.encode()).hexdigest()[:16]


SPECS = {
    "small": RepoSpec("small", files=100, commits=20, avg_file_bytes=1500, seed=11),
    "medium": RepoSpec("medium", files=2000, commits=300, avg_file_bytes=3000, seed=12),
    "large": RepoSpec(
        "large",
        files=10_000,
        commits=1000,
        avg_file_bytes=3000,
        binaries=(3 << 20, 5 << 20, 8 << 20),
        binary_updates=2,
        seed=13,
    ),
}


@dataclass(frozen=True)
class BenchRepo:
    """A repository served over HTTP, generated or a copy of a real one (`benchmarks.real`).
    Its branch can be moved to commits that change one file (`changed_path`) and back."""

    name: str
    bare: Path
    url: str
    branch: str  # the ref HEAD points to, e.g. refs/heads/main
    base_commit: str
    changed_path: str
    head_files: int
    head_bytes: int
    pack_bytes: int
    commits: int
    refs: int
    seed: int = 0
    source: str = "generated"  # or the path of the real repository copied

    @property
    def real(self) -> bool:
        return self.source != "generated"

    @cached_property
    def changed_commit(self) -> str:
        """One commit after the base that changes one file (contenders f and g)."""
        [sha] = self._one_file_commits(1, 1, 1, "bench: change one file")
        return sha

    def small_commits(self, count: int) -> list[str]:
        """`count` commits after the base, each changing the same one file again: the
        incremental section moves the branch along them."""
        return self._one_file_commits(2, count, 3, "bench: small commit {n}")

    def set_head(self, changed: bool) -> None:
        """Point the branch at the commit that changes one file (for f and g), or back."""
        self.move_main(self.changed_commit if changed else self.base_commit)

    def move_main(self, commit: str) -> None:
        git(self.bare, "update-ref", self.branch, commit)

    def _texts(self, rng: random.Random, count: int) -> Iterator[bytes]:
        """A generated repository's file gets a new text each time; a real one's file a small
        edit of its HEAD content, so the change looks like a real commit's."""
        text = git_bytes(self.bare, "cat-file", "blob", f"{self.base_commit}:{self.changed_path}")
        for _ in range(count):
            text = _edit(rng, text) if self.real else _text(rng, 900)
            yield text

    def _one_file_commits(self, salt: int, count: int, hour: int, message: str) -> list[str]:
        """`count` commits in a row after the base, the n-th dated `hour + n` hours after it,
        each setting `changed_path` (mode kept) to the next text of `random.Random(seed +
        salt)`; deterministic, kept as objects on no ref."""
        when = int(git(self.bare, "log", "-1", "--format=%ct", self.base_commit))
        mode = git(self.bare, "ls-tree", self.base_commit, "--", self.changed_path).split()[0]
        texts = self._texts(random.Random(self.seed + salt), count)

        def write(stream: _Stream) -> None:
            for n, text in enumerate(texts):
                parent = None if n else self.base_commit
                label = message.format(n=n + 1)
                stream.commit(WORK_REF, n + 1, when + 3600 * (hour + n), label, parent)
                stream.put(self.changed_path, text, mode)
                stream.out.write(b"\n")

        _fast_import(self.bare, write)
        shas = git(self.bare, "rev-list", "--reverse", f"{self.base_commit}..{WORK_REF}")
        git(self.bare, "update-ref", "-d", WORK_REF)
        return shas.split()


def _text(rng: random.Random, size: int) -> bytes:
    lines = []
    total = 0
    while total < size:
        a, b, c, d, e = rng.choices(_WORDS, k=5)
        line = f"{a} {b} = {c}_{rng.getrandbits(32):08x}  # {d} {e}\n"
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()


def _edit(rng: random.Random, content: bytes) -> bytes:
    """A small edit: a few lines replaced and one appended, as real commits mostly are."""
    lines = content.splitlines(keepends=True)
    for _ in range(min(3, len(lines))):
        lines[rng.randrange(len(lines))] = _text(rng, 1)
    lines.append(_text(rng, 1))
    return b"".join(lines)


class _Stream:
    """Writes a fast-import stream: inline blobs, so no marks are needed for files."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out

    def commit(
        self, ref: str, mark: int, when: int, message: str, parent: str | None = None
    ) -> None:
        msg = message.encode()
        self.out.write(
            b"commit %s\nmark :%d\nauthor %s %d +0000\ncommitter %s %d +0000\ndata %d\n%s\n"
            % (ref.encode(), mark, AUTHOR, when, AUTHOR, when, len(msg), msg)
        )
        if parent:
            self.out.write(b"from %s\n" % parent.encode())

    def put(self, path: str, data: bytes, mode: str = "100644") -> None:
        self.out.write(b"M %s inline %s\ndata %d\n" % (mode.encode(), path.encode(), len(data)))
        self.out.write(data + b"\n")

    def ref(self, name: str, mark: int) -> None:
        self.out.write(b"reset %s\nfrom :%d\n\n" % (name.encode(), mark))


def _paths(rng: random.Random, count: int) -> Iterator[str]:
    for i in range(count):
        depth = rng.randint(1, 3)
        dirs = "/".join(f"{rng.choice(_WORDS)}{rng.randrange(8)}" for _ in range(depth))
        yield f"src/{dirs}/file_{i:05d}{rng.choice(_EXTENSIONS)}"


def _history(spec: RepoSpec, stream: _Stream) -> None:
    """The whole history of `spec` on refs/heads/main, plus a `develop` branch and tags."""
    rng = random.Random(spec.seed)
    pending = list(_paths(rng, spec.files))
    text: dict[str, bytes] = {}
    initial = len(pending) // 2
    per_commit = -(-(len(pending) - initial) // max(1, spec.commits - 1))
    binary_at = {
        spec.commits * (i + 1) // (len(spec.binaries) + 2): i for i in range(len(spec.binaries))
    }
    updates_at = {
        spec.commits * (k + 3) // (spec.binary_updates + 4) for k in range(spec.binary_updates)
    }
    tag_every = max(1, spec.commits // 5)
    for n in range(spec.commits):
        message = f"commit {n}: {rng.choice(_WORDS)}"
        stream.commit("refs/heads/main", n + 1, EPOCH + 3600 * n, message)
        if n == 0:
            stream.put("README.md", _text(rng, 800))
            stream.put("bin/run.sh", b'#!/bin/sh\nexec python -m project "$@"\n', "100755")
            stream.put("docs/readme-link", b"../README.md", "120000")
        adds, pending = (
            (pending[:initial], pending[initial:])
            if n == 0
            else (pending[:per_commit], pending[per_commit:])
        )
        for path in adds:
            size = rng.randint(spec.avg_file_bytes // 4, spec.avg_file_bytes * 7 // 4)
            text[path] = _text(rng, size)
            stream.put(path, text[path])
        if n > 0:
            for path in rng.sample(sorted(text), min(len(text), rng.randint(1, 8))):
                text[path] = _edit(rng, text[path])
                stream.put(path, text[path])
        if n in binary_at:
            i = binary_at[n]
            stream.put(f"assets/blob_{i}.bin", rng.randbytes(spec.binaries[i]))
        if n in updates_at and spec.binaries:
            stream.put("assets/blob_0.bin", rng.randbytes(spec.binaries[0]))
        stream.out.write(b"\n")
        if n and n % tag_every == 0:
            stream.ref(f"refs/tags/v0.{n // tag_every}", n + 1)
    stream.ref("refs/heads/develop", spec.commits * 3 // 4)


def _fast_import(bare: Path, write: object) -> None:
    proc = subprocess.Popen(
        ["git", "fast-import", "--quiet", "--done"],
        cwd=bare,
        stdin=subprocess.PIPE,
        env={**os.environ, **GIT_ENV},
    )
    assert proc.stdin is not None
    with proc.stdin as out:
        write(_Stream(out))  # type: ignore[operator]
        out.write(b"done\n")
    if proc.wait() != 0:
        raise RuntimeError(f"git fast-import failed in {bare}")


def head_entries(bare: Path) -> Iterator[tuple[str, str, int, str]]:
    """The blobs of HEAD (symlinks included, submodules not): mode, object id, size, path."""
    out = git_bytes(bare, "ls-tree", "-r", "-l", "-z", "--full-tree", "HEAD").decode()
    for entry in filter(None, out.split("\0")):
        info, path = entry.split("\t", 1)
        mode, kind, sha, size = info.split()
        if kind == "blob":
            yield mode, sha, int(size), path


def head_stats(bare: Path) -> tuple[int, int]:
    """Number and total bytes of HEAD's files: what every contender stores under `tree/`."""
    sizes = [size for _, _, size, _ in head_entries(bare)]
    return len(sizes), sum(sizes)


def pack_bytes(bare: Path) -> int:
    return sum(p.stat().st_size for p in (bare / "objects" / "pack").glob("*.pack"))


def ref_count(bare: Path) -> int:
    """Branches and tags: what RepoVault archives."""
    return len(git(bare, "for-each-ref", "refs/heads", "refs/tags").splitlines())


def ensure_repo(spec: RepoSpec, served_root: Path, base_url: str) -> BenchRepo:
    """The repository of `spec` under `served_root/bench/`, generated unless already there."""
    bare = served_root / "bench" / f"{spec.name}.git"
    marker = bare / MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("digest") == spec.digest():
        doc = json.loads(marker.read_text())
    else:
        if bare.exists():
            subprocess.run(["rm", "-rf", str(bare)], check=True)
        bare.parent.mkdir(parents=True, exist_ok=True)
        git(bare.parent, "init", "-q", "--bare", "-b", "main", bare.name)
        _fast_import(bare, lambda stream: _history(spec, stream))
        git(bare, "symbolic-ref", "HEAD", "refs/heads/main")
        git(bare, "gc", "--quiet")  # one well-deltified pack, packed refs: as a hosted repo
        files, head_bytes = head_stats(bare)
        doc = {
            "digest": spec.digest(),
            "base": git(bare, "rev-parse", "refs/heads/main"),
            "files": files,
            "head_bytes": head_bytes,
            "pack_bytes": pack_bytes(bare),
            "refs": ref_count(bare),
        }
        marker.write_text(json.dumps(doc, indent=1))
    repo = BenchRepo(
        name=spec.name,
        bare=bare,
        url=f"{base_url}/bench/{spec.name}.git",
        branch="refs/heads/main",
        base_commit=doc["base"],
        changed_path=CHANGED_PATH,
        head_files=doc["files"],
        head_bytes=doc["head_bytes"],
        pack_bytes=doc["pack_bytes"],
        commits=spec.commits,
        refs=doc["refs"],
        seed=spec.seed,
    )
    repo.set_head(changed=False)
    return repo
