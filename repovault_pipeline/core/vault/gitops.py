"""Git, hardened: clone untrusted remotes, bundle them and read HEAD's files from git objects.

Every command is a `git` process of its own (`_start`) with an environment that disables hooks,
system and global config, credential helpers, prompts and every transport but the allowed
schemes, and with `--` before any URL. Credentials travel in the environment (`GIT_CONFIG_*`),
never on a command line, in a config file or in a message.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from repovault_pipeline.core.common.errors import (
    ArchiveError,
    GitTimeout,
    RepoNotFound,
    RepoTooLarge,
    TransientError,
    WorkDirFull,
)
from repovault_pipeline.core.common.identity import RepoRef, github_web_origin
from repovault_pipeline.core.common.redact import mask_secrets
from repovault_pipeline.core.common.settings import Settings

log = logging.getLogger(__name__)

HARDENING = (
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "protocol.file.allow=never",
    "-c",
    "protocol.ext.allow=never",
    "-c",
    "credential.helper=",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "submodule.recurse=false",
)
MODE_SYMLINK = "120000"
MODE_SUBMODULE = "160000"
PROGRESS_EVERY_S = 5.0
_NOT_FOUND = (
    "repository not found",
    "not found",
    "does not appear to be a git repository",
    "could not read username",
    "authentication failed",
    "terminal prompts disabled",
    "permission denied",
    "returned error: 401",
    "returned error: 403",
    "returned error: 404",
)
_TRANSIENT = (
    "could not resolve host",
    "connection refused",
    "couldn't connect to server",  # curl 7.8x+ says this of a refused connection
    "connection timed out",
    "timed out",
    "rpc failed",
    "early eof",
    "connection reset",
    "remote end hung up",
    "returned error: 5",
    "gnutls_handshake",
    "ssl connect error",
    "ssl_error",
    "temporary failure",
    "network is unreachable",
    "operation too slow",
)
# What git (or a helper it ran: index-pack, pack-objects) prints when a write hits ENOSPC or the
# disk quota; git then reports the symptom, e.g. `fetch-pack: invalid index-pack output`.
_DISK_FULL = ("no space left on device", "disk quota exceeded")
MB = 1024 * 1024
# git's clone progress: `Receiving objects:  66% (2/3), 1.20 MiB | 1.20 MiB/s`.
_RECEIVED = re.compile(r"Receiving objects:[^\r\n]*?, (\d+(?:\.\d+)?) (bytes|KiB|MiB|GiB)")
_UNITS = {"bytes": 1, "KiB": 1024, "MiB": MB, "GiB": 1024 * MB}


def _ssh_option(name: str, path: Path) -> str:
    """`Name=path` as ssh parses it: `%` expands tokens, whitespace splits unless quoted."""
    value = str(path).replace("%", "%%")
    return f'{name}="{value}"' if any(c.isspace() for c in value) else f"{name}={value}"


@dataclass(frozen=True)
class RemoteState:
    """What the remote advertises: branch and tag refs, and the branch HEAD points at."""

    refs: dict[str, str]
    default_branch: str | None


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


class GitClient:
    """Runs git for one repository reference with the hardened environment of `settings`."""

    def __init__(self, settings: Settings, logger: logging.Logger | None = None) -> None:
        self.settings = settings
        self.log = logger or log

    def environment(
        self, ref: RepoRef | None = None, protocols: tuple[str, ...] | None = None
    ) -> dict[str, str]:
        """Environment of every git command; `protocols` overrides the allowed transports."""
        env = {
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "",
            "SSH_ASKPASS": "",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_ALLOW_PROTOCOL": ":".join(protocols or self.settings.allowed_schemes),
            "GIT_PROTOCOL_FROM_USER": "0",
            "GIT_CONFIG_COUNT": "0",
            "LC_ALL": "C",
        }
        env["GIT_SSH_COMMAND"] = self._ssh_command()
        credentials = self._credentials(ref)
        if credentials is not None:
            (scheme, host, port), basic = credentials
            # git sends its extra header to wherever a redirect led, on every later request of
            # the command: with a credential attached, redirects are not followed at all.
            env.update(
                GIT_CONFIG_COUNT="2",
                GIT_CONFIG_KEY_0=f"http.{scheme}://{host}{f':{port}' if port else ''}/.extraheader",
                GIT_CONFIG_VALUE_0=f"Authorization: Basic {basic}",
                GIT_CONFIG_KEY_1="http.followRedirects",
                GIT_CONFIG_VALUE_1="false",
            )
        return env

    def _credentials(self, ref: RepoRef | None) -> tuple[tuple[str, str, int | None], str] | None:
        """The web origin `ref` is on and the basic credentials git sends there: GITHUB_TOKEN
        only to the web host of REPOVAULT_GITHUB_API, GITLAB_TOKEN only to that of
        REPOVAULT_GITLAB_API (GitLab's `oauth2` user); nothing for any other host."""
        if ref is None:
            return None
        settings = self.settings
        for token, api, user in (
            (settings.github_token, settings.github_api, "x-access-token"),
            (settings.gitlab_token, settings.gitlab_api, "oauth2"),
        ):
            web = github_web_origin(api)
            if token and (ref.scheme, ref.host, ref.port) == web:
                return web, base64.b64encode(f"{user}:{token}".encode()).decode()
        return None

    def _ssh_command(self) -> str:
        """ssh reads no config file (`-F /dev/null`: not the user's ~/.ssh/config), never
        prompts, and remembers host keys in `REPOVAULT_SSH_KNOWN_HOSTS`, never ~/.ssh: new hosts
        are added on first use, a changed key is refused."""
        known_hosts = self.settings.ssh_known_hosts.absolute()
        with suppress(OSError):  # read-only (keys pinned by the operator): ssh only reads it
            known_hosts.parent.mkdir(parents=True, exist_ok=True)
        ssh = ["ssh", "-F", os.devnull, "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]
        ssh += ["-o", "StrictHostKeyChecking=accept-new", "-o", "UpdateHostKeys=no"]
        ssh += ["-o", _ssh_option("UserKnownHostsFile", known_hosts)]
        if self.settings.ssh_key:
            ssh += [
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                _ssh_option("IdentityFile", self.settings.ssh_key.absolute()),
            ]
        return shlex.join(ssh)

    def ls_remote(self, ref: RepoRef) -> RemoteState:
        """The remote's refs without cloning: the cheap check behind the `unchanged` outcome."""
        out = self.run(["ls-remote", "--symref", "--", ref.url], ref=ref)
        refs: dict[str, str] = {}
        default_branch = None
        for line in out.decode(errors="replace").splitlines():
            left, _, name = line.partition("\t")
            if left.startswith("ref: ") and name == "HEAD":
                default_branch = left[len("ref: ") :].removeprefix("refs/heads/")
            elif _is_archived_ref(name):
                refs[name] = left
        return RemoteState(refs=refs, default_branch=default_branch)

    def clone(self, ref: RepoRef, dest: Path) -> LocalRepo:
        """Bare clone of every branch and tag, aborted past the size cap or the timeout."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.log.info("cloning %s", ref.url)
        self.run(
            ["clone", "--bare", "--template=", "--progress", "--", ref.url, str(dest)],
            ref=ref,
            watch=dest,
        )
        return LocalRepo(dest, self)

    def run(
        self,
        args: list[str],
        ref: RepoRef | None = None,
        cwd: Path | None = None,
        watch: Path | None = None,
        protocols: tuple[str, ...] | None = None,
        stdin: bytes | None = None,
    ) -> bytes:
        """Run git (fed `stdin`) and classify a failure; kill it past the timeout or when
        `watch` outgrows the size cap."""
        code, stdout, stderr = self.run_status(args, ref, cwd, watch, protocols, stdin)
        if code != 0:
            tokens = (self.settings.github_token, self.settings.gitlab_token)
            raise _classify(args[0], stderr, tokens)
        return stdout

    def run_status(
        self,
        args: list[str],
        ref: RepoRef | None = None,
        cwd: Path | None = None,
        watch: Path | None = None,
        protocols: tuple[str, ...] | None = None,
        stdin: bytes | None = None,
        stderr_keep: int = 16384,
    ) -> tuple[int, bytes, str]:
        """`run`, returning git's exit status, stdout and the last `stderr_keep` bytes of its
        stderr instead of raising for a non-zero status (for commands whose output says more
        than their status); the timeout, the size cap and a full disk still raise."""
        free_before = _free_bytes(watch or cwd)
        popen = _start(
            args, cwd, self.environment(ref, protocols), stdin is not None, new_session=True
        )
        if stdin is not None:
            threading.Thread(target=_feed, args=(popen.stdin, [stdin]), daemon=True).start()
        stdout, stderr = bytearray(), _StderrTail(self.log if watch else None, stderr_keep)
        readers = [
            threading.Thread(target=_drain, args=(popen.stdout, stdout.extend), daemon=True),
            threading.Thread(target=_drain, args=(popen.stderr, stderr.feed), daemon=True),
        ]
        for reader in readers:
            reader.start()
        cap = self.settings.max_repo_mb * MB
        deadline = time.monotonic() + self.settings.git_timeout_s
        failure: ArchiveError | None = None
        received = 0  # the most `watch` held: git deletes a clone that failed
        while popen.poll() is None:
            try:
                popen.wait(timeout=0.2)  # returns as soon as git exits: no 0.2 s tail per command
                break
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() > deadline:
                failure = GitTimeout(
                    f"git {args[0]} ran past REPOVAULT_GIT_TIMEOUT_S={self.settings.git_timeout_s}s"
                    " and was aborted"
                )
            elif watch is not None and (received := max(received, _tree_size(watch))) > cap:
                failure = RepoTooLarge(
                    f"repository is larger than REPOVAULT_MAX_REPO_MB={self.settings.max_repo_mb}"
                    f" ({received // MB} MB received so far); clone aborted"
                )
            if failure:
                _kill_group(popen)
                break
        popen.wait()
        for reader in readers:
            reader.join(timeout=5)
        if failure:
            raise failure
        if watch is not None and (size := _tree_size(watch)) > cap:
            raise RepoTooLarge(
                f"repository is {size // (1024 * 1024)} MB, larger than "
                f"REPOVAULT_MAX_REPO_MB={self.settings.max_repo_mb}"
            )
        if popen.returncode != 0 and disk_full(stderr.text()):
            received = max(received, received_bytes(stderr.text()))
            raise self.work_dir_full(args[0], watch or cwd, free_before, received)
        return popen.returncode, bytes(stdout), stderr.text()

    def work_dir_full(
        self, command: str, folder: Path | None, free_before: int | None, received: int = 0
    ) -> WorkDirFull:
        """The error for a git command that ran out of disk writing into `folder`: which folder
        (the work folder, by its variable, when it is under it), what is free there now, and
        what the repository needed: more than was free when the command started (git deletes a
        failed clone, so its size is gone), and what the clone had received, when known."""
        work_dir = self.settings.work_dir.absolute()
        folder = (folder or work_dir).absolute()
        if folder.is_relative_to(work_dir):
            where = f"the work folder REPOVAULT_WORK_DIR={work_dir} is full"
            todo = "free space there or point REPOVAULT_WORK_DIR at a larger disk, then retry"
        else:
            where = f"the disk holding {folder} is full"
            todo = "free space there or choose a folder on a larger disk, then retry"
        existing = _existing(folder)
        if existing is not None:
            usage = shutil.disk_usage(existing)
            where += f" ({_mb(usage.free)} free of {_mb(usage.total)})"
        needs = []
        if free_before is not None:
            needs.append(f"more than the {_mb(free_before)} free when git {command} started")
        if received:
            needs.append(f"{_mb(received)} received before the disk filled")
        need = f"; the repository needs {', '.join(needs)}" if needs else ""
        return WorkDirFull(f"git {command}: no space left on device: {where}{need}; {todo}")


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

    def create_bundle(self, dest: Path) -> None:
        """`git bundle` of every ref, then `git bundle verify`: unrestorable is an error."""
        self.git("bundle", "create", "--quiet", str(dest), "--all")
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
        proc = _start(["cat-file", "--batch"], self.path, self.client.environment(), True)
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


def _start(
    args: Sequence[str],
    cwd: Path | None,
    env: dict[str, str],
    stdin: bool,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """`git` hardened, with the inherited environment (PATH, HOME) under `env`; stdin is a pipe
    when the caller feeds it, else nothing (git never waits for input)."""
    return subprocess.Popen(
        ["git", *HARDENING, *args],
        cwd=cwd,
        env={**os.environ, "LANGUAGE": "C", **env},
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=new_session,
    )


def _feed_ids(stdin: IO[bytes], shas: Sequence[str]) -> None:
    _feed(
        stdin,
        (
            "".join(f"{sha}\n" for sha in shas[i : i + 512]).encode()
            for i in range(0, len(shas), 512)
        ),
    )


def _feed(stdin: IO[bytes], chunks: Iterable[bytes]) -> None:
    """Write to a child's stdin from a thread, so that reading its output never deadlocks."""
    try:
        for chunk in chunks:
            stdin.write(chunk)
        stdin.flush()
    except (BrokenPipeError, ValueError):
        pass  # the reader stopped early (an upload failed): nothing more to send
    finally:
        with suppress(BrokenPipeError, ValueError):
            stdin.close()


def refs_digest(refs: dict[str, str]) -> str:
    """sha256 of the sorted `sha name` lines: equal digests, equal branches and tags. What
    `repo_state` keeps of a snapshot's refs, so a refresh compares without reading manifests."""
    lines = "".join(f"{sha} {name}\n" for name, sha in sorted(refs.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def _is_archived_ref(name: str) -> bool:
    return name.startswith(("refs/heads/", "refs/tags/")) and not name.endswith("^{}")


def disk_full(stderr: str) -> bool:
    """git's stderr says a write failed for lack of space (its last line may only say
    `fetch-pack: invalid index-pack output`)."""
    lower = stderr.lower()
    return any(marker in lower for marker in _DISK_FULL)


def _existing(path: Path | None) -> Path | None:
    """`path` or its nearest existing parent (a clone's folder exists only while git runs)."""
    if path is None:
        return None
    return next((p for p in (path, *path.parents) if p.exists()), None)


def _free_bytes(path: Path | None) -> int | None:
    existing = _existing(path)
    return shutil.disk_usage(existing).free if existing is not None else None


def _mb(size: int) -> str:
    return f"{size / MB:.1f} MB"


def received_bytes(stderr: str) -> int:
    """The most bytes git's progress says it received (0 when it printed none)."""
    return max((int(float(n) * _UNITS[unit]) for n, unit in _RECEIVED.findall(stderr)), default=0)


def _classify(command: str, stderr: str, tokens: tuple[str | None, ...]) -> ArchiveError:
    """Turn git's stderr into an error a user can act on, credentials masked."""
    text = mask_secrets(stderr, tokens).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    fatal = [ln for ln in lines if ln.lower().startswith(("fatal:", "error:", "remote:"))]
    detail = (fatal or lines or [f"git {command} failed"])[-1]
    lower = text.lower()
    if any(marker in lower for marker in _NOT_FOUND):
        return RepoNotFound(
            f"repository not found or not readable ({detail}); "
            "for a private repository set GITHUB_TOKEN or REPOVAULT_SSH_KEY"
        )
    if any(marker in lower for marker in _TRANSIENT):
        return TransientError(f"git {command}: network error: {detail}")
    return ArchiveError(f"git {command} failed: {detail}")


def _drain(stream: IO[bytes] | None, sink: object) -> None:
    if stream is None:
        return
    for chunk in iter(
        lambda: stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536), b""
    ):
        sink(chunk)  # type: ignore[operator]


class _StderrTail:
    """Keeps the end of git's stderr for error messages and logs clone progress now and then."""

    def __init__(self, logger: logging.Logger | None, keep: int = 16384) -> None:
        self._buf = bytearray()
        self._keep = keep
        self._log = logger
        self._last = time.monotonic()

    def feed(self, chunk: bytes) -> None:
        self._buf.extend(chunk)
        del self._buf[: -self._keep]
        if self._log and time.monotonic() - self._last >= PROGRESS_EVERY_S:
            self._last = time.monotonic()
            latest = self._buf.replace(b"\r", b"\n").strip().rsplit(b"\n", 1)[-1]
            self._log.info("git: %s", mask_secrets(latest.decode(errors="replace")))

    def text(self) -> str:
        return self._buf.decode(errors="replace")


def _tree_size(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            with suppress(FileNotFoundError):  # git renames temporary packs while we walk
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _kill_group(popen: subprocess.Popen) -> None:
    """Kill git and its helpers (remote-https, index-pack): they share its process group."""
    with suppress(ProcessLookupError):
        os.killpg(popen.pid, signal.SIGKILL)
