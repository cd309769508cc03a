"""A bare clone on local disk (`LocalRepo`): its refs, HEAD, bundle, HEAD's files and their
blobs, and what `git fsck` says of it (`FsckReport`)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO

from repovault_pipeline.core.common.errors import (
    ArchiveError,
)
from repovault_pipeline.core.vault.gitproc import feed, start

if TYPE_CHECKING:
    from repovault_pipeline.core.vault.gitops import GitClient

MODE_SYMLINK = "120000"
MODE_SUBMODULE = "160000"


@dataclass(frozen=True)
class Head:
    """What a snapshot calls HEAD: the commit whose files `tree/` holds, the branch a restore
    checks out (None when the remote's HEAD names no branch), and the ref the commit came from."""

    commit: str
    branch: str | None
    ref: str


@dataclass(frozen=True, slots=True)
class TreeEntry:
    path: str
    mode: str
    sha: str
    size: int

    @property
    def is_symlink(self) -> bool:
        return self.mode == MODE_SYMLINK


# git fsck's message ids (`git help fsck-msgids`) that say how a commit, tag or tree is
# written, not whether the history is whole: histories written by old or foreign tools carry
# them (pallets/werkzeug has commits with `missingSpaceBeforeEmail`), forges serve them as they
# are, and git clones, fetches, bundles and checks them out. A copy holding them is faithful.
LEGACY_FORMAT_IDS = frozenset(
    name.lower()
    for name in (
        "badDate",
        "badDateOverflow",
        "badEmail",
        "badFilemode",
        "badName",
        "badTagName",
        "badTimezone",
        "duplicateEntries",
        "emptyName",
        "extraHeaderEntry",
        "fullPathname",
        "hasDot",
        "hasDotdot",
        "hasDotgit",
        "largePathname",
        "missingAuthor",
        "missingCommitter",
        "missingEmail",
        "missingNameBeforeEmail",
        "missingSpaceBeforeDate",
        "missingSpaceBeforeEmail",
        "missingTaggerEntry",
        "multipleAuthors",
        "nulInCommit",
        "nulInHeader",
        "nullSha1",
        "treeNotSorted",
        "unterminatedHeader",
        "zeroPaddedDate",
        "zeroPaddedFilemode",
    )
)
FSCK_OUTPUT_KEEP = 4 * 1024 * 1024
_FSCK_MESSAGE = re.compile(r"(error|warning) in (?:commit|tree|tag|blob) [0-9a-f]+: (\w+): ")


@dataclass(frozen=True)
class FsckReport:
    """What `git fsck` found: objects written in a legacy format (message id -> count), which
    a faithful copy may hold, and damage (missing or corrupt objects, broken links, anything
    else git calls an error), which a restore cannot get past."""

    legacy: dict[str, int]
    damage: list[str]


def parse_fsck(output: str, returncode: int) -> FsckReport:
    """Sort git fsck's lines by message id. Warnings of other ids are not damage (git fsck
    passes with them too); an unexplained failing status is."""
    legacy: dict[str, int] = {}
    damage: list[str] = []
    for line in (ln.strip() for ln in output.splitlines()):
        found = _FSCK_MESSAGE.match(line)
        if found:
            level, msg_id = found.groups()
            if _is_legacy(msg_id):
                legacy[msg_id] = legacy.get(msg_id, 0) + 1
            elif level == "error":
                damage.append(line)
        elif line and not line.startswith(("notice:", "warning:", "Checking ")):
            damage.append(line)
    if returncode != 0 and not damage and not legacy:
        damage.append(f"git fsck exited with status {returncode}")
    return FsckReport(legacy, damage)


def _is_legacy(msg_id: str) -> bool:
    """A legacy-format id, or one of the checks of .gitmodules/.gitattributes content (guards
    against crafted submodule or attribute files, which a restore never acts on)."""
    lowered = msg_id.lower()
    return lowered in LEGACY_FORMAT_IDS or lowered.startswith(("gitmodules", "gitattributes"))


class LocalRepo:
    """A bare clone on local disk: its refs, its bundle, its HEAD tree."""

    def __init__(self, path: Path, client: GitClient) -> None:
        self.path = path
        self.client = client

    def git(self, *args: str) -> str:
        return self.client.run(list(args), cwd=self.path).decode(errors="replace")

    def refs(self) -> dict[str, str]:
        out = self.git(
            "for-each-ref", "--format=%(objectname) %(refname)", "refs/heads", "refs/tags"
        )
        pairs = (line.split(" ", 1) for line in out.splitlines() if line)
        return {name: sha for sha, name in pairs}

    def missing(self, shas: set[str]) -> set[str]:
        """Those of `shas` whose object this repository does not have."""
        if not shas:
            return set()
        stdin = "".join(f"{sha}\n" for sha in sorted(shas)).encode()
        out = self.client.run(["cat-file", "--batch-check"], cwd=self.path, stdin=stdin)
        return {
            line.split()[0]
            for line in out.decode(errors="replace").splitlines()
            if line.endswith(" missing")
        }

    def _maybe(self, *args: str) -> str | None:
        """Output of a git query, or None when git says no (exit status 1)."""
        try:
            return self.git(*args).strip() or None
        except ArchiveError:
            return None

    def head_commit(self) -> str:
        commit = self._maybe("rev-parse", "--verify", "--quiet", "HEAD^{commit}")
        if commit is None:
            raise ArchiveError("HEAD has no commit")
        return commit

    def head(self) -> Head:
        """HEAD on a branch: that branch. HEAD detached (the remote advertised a bare commit):
        that commit, no branch. HEAD unborn (a repository with tags but no branch, or a HEAD
        naming a deleted branch): the newest branch or tag (by commit or tag date) that points
        to a commit, no branch."""
        symbolic = self._maybe("symbolic-ref", "--quiet", "HEAD")
        commit = self._maybe("rev-parse", "--verify", "--quiet", "HEAD^{commit}")
        if commit is not None:
            if symbolic is not None:
                return Head(commit, symbolic.removeprefix("refs/heads/"), symbolic)
            return Head(commit, None, "HEAD")
        out = self.git(
            "for-each-ref",
            "--sort=-creatordate",
            "--format=%(refname) %(objecttype) %(objectname) %(*objecttype) %(*objectname)",
            "refs/heads",
            "refs/tags",
        )
        for line in out.splitlines():
            name, kind, sha, *peeled = line.split(" ")
            if kind == "commit":
                return Head(sha, None, name)
            if peeled[:1] == ["commit"]:
                return Head(peeled[1], None, name)
        raise ArchiveError(
            "the repository has no branch and no tag that points to a commit: nothing to archive"
        )

    def fsck(self) -> FsckReport:
        """`git fsck --full` of every object, read by message id (`parse_fsck`)."""
        code, stdout, stderr = self.client.run_status(
            ["fsck", "--full", "--no-dangling", "--no-progress"],
            cwd=self.path,
            stderr_keep=FSCK_OUTPUT_KEEP,
        )
        return parse_fsck(stdout.decode(errors="replace") + "\n" + stderr, code)

    def create_bundle(self, dest: Path, exclude: Iterable[str] = ()) -> None:
        """`git bundle` of every ref, then `git bundle verify`: unrestorable is an error. With
        `exclude` (commits this repository has), only the objects they do not reach: an
        incremental bundle, whose prerequisites are the excluded commits it builds on. git
        refuses an incremental bundle that would carry no ref (nothing new): an ArchiveError."""
        stdin = "".join(f"^{sha}\n" for sha in sorted(exclude)).encode()
        self.client.run(
            ["bundle", "create", "--quiet", str(dest), "--all", "--stdin"],
            cwd=self.path,
            stdin=stdin,
        )
        self.git("bundle", "verify", "--quiet", str(dest))

    def tree(self, commit: str) -> tuple[list[TreeEntry], dict[str, str]]:
        """HEAD's files (regular files and symlinks) and its submodules (path -> commit). Every
        path is kept, however odd (`..`, `.git`, control characters, invalid UTF-8, read with
        surrogateescape): the object layout decides how to store it."""
        raw = self.client.run(["ls-tree", "-r", "-z", "-l", "--full-tree", commit], cwd=self.path)
        entries: list[TreeEntry] = []
        submodules: dict[str, str] = {}
        for record in raw.split(b"\0"):
            if not record:
                continue
            meta, _, path_bytes = record.partition(b"\t")
            mode, kind, sha, size = meta.decode().split()
            path = path_bytes.decode("utf-8", errors="surrogateescape")
            if mode == MODE_SUBMODULE:
                submodules[path] = sha
            elif kind == "blob":
                entries.append(TreeEntry(path=path, mode=mode, sha=sha, size=int(size)))
        return entries, submodules

    def blobs(self, shas: Sequence[str]) -> Iterator[Blob]:
        """The contents of `shas`, in order, from one `git cat-file --batch`.

        A writer thread sends every id up front while this generator reads the answers, so
        reading 10,000 small blobs costs no round trip each. Contents come from git objects,
        never from a checkout, so a symlink is its target text and nothing is followed. Each
        blob must be read (`read` or `copy_to`) before the next is taken.
        """
        proc = start(["cat-file", "--batch"], self.path, self.client.environment(), True)
        stdin, stdout = proc.stdin, proc.stdout
        assert stdin is not None and stdout is not None
        feeder = threading.Thread(target=_feed_ids, args=(stdin, shas), daemon=True)
        feeder.start()
        try:
            for sha in shas:
                header = stdout.readline().split()
                if len(header) != 3 or header[1] != b"blob":
                    raise ArchiveError(f"git object {sha} is missing from the clone")
                blob = Blob(int(header[2]), stdout)
                yield blob
                blob.skip_rest()
                stdout.read(1)  # the newline that ends each record
        finally:
            if proc.poll() is None:  # stopped early: do not wait for unread answers
                proc.kill()
            proc.wait()
            feeder.join(timeout=5)


class Blob:
    """One blob's content on the cat-file stream: read it whole, or copy it in chunks."""

    def __init__(self, size: int, stream: IO[bytes]) -> None:
        self._stream = stream
        self._left = size

    def read(self) -> bytes:
        return b"".join(self._chunks(self._left))

    def copy_to(self, out: BinaryIO, chunk: int = 256 * 1024) -> None:
        for data in self._chunks(chunk):
            out.write(data)

    def skip_rest(self) -> None:
        for _ in self._chunks(1024 * 1024):
            pass

    def _chunks(self, chunk: int) -> Iterator[bytes]:
        while self._left:
            data = self._stream.read(min(chunk, self._left))
            if not data:  # git died mid-answer: fail instead of waiting for bytes forever
                raise ArchiveError("git cat-file stopped before the end of a blob")
            self._left -= len(data)
            yield data


def _feed_ids(stdin: IO[bytes], shas: Sequence[str]) -> None:
    feed(
        stdin,
        (
            "".join(f"{sha}\n" for sha in shas[i : i + 512]).encode()
            for i in range(0, len(shas), 512)
        ),
    )
