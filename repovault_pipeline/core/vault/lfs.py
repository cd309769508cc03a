"""Git LFS objects (docs/contract.md, "Object layout": `lfs/<oid>`): fetched for every
archived ref, stored content-addressed in the repository's bucket, restored into a clone's
`.git/lfs/objects`.

An object is stored once per bucket whatever the number of snapshots referring to it; each
snapshot lists the oids it needs in its `lfs.json`, written before its manifest. An oid is the
sha256 of the object's content: checked before an upload and after a download, so a corrupt
object is never stored under an oid nor restored as one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from repovault_pipeline.core.common.errors import (
    ArchiveError,
    GitTimeout,
    RepoTooLarge,
    TransientError,
)
from repovault_pipeline.core.common.identity import RepoRef
from repovault_pipeline.core.vault import crypt
from repovault_pipeline.core.vault.localrepo import LocalRepo
from repovault_pipeline.core.vault.records import LfsIndex, LfsSummary
from repovault_pipeline.core.vault.store import ObjectStore, file_sha256
from repovault_pipeline.core.vault.upload import ParallelUploader

log = logging.getLogger(__name__)

LFS_PREFIX = "lfs/"
LFS_INDEX = "lfs.json"
_TIPS_PER_GREP = 200


class LfsError(ArchiveError):
    """An LFS object is missing or does not match its oid."""


@dataclass
class LfsObjects:
    """The LFS objects every archived ref refers to: those fetched into the clone, and those
    the server could not give (lost upstream: listed, never invented)."""

    objects: dict[str, int] = field(default_factory=dict)  # oid -> size
    missing: dict[str, int] = field(default_factory=dict)
    paths: dict[str, list[str]] = field(default_factory=dict)  # oid -> paths naming it, any ref
    head: dict[str, str] = field(default_factory=dict)  # HEAD's LFS files: path -> oid

    @property
    def bytes(self) -> int:
        return sum(self.objects.values())

    def missing_paths(self) -> list[str]:
        """The paths, in any archived commit, of pointer files whose object is missing."""
        return sorted({p for oid in self.missing for p in self.paths.get(oid, [])})

    def summary(self, index_key: str) -> LfsSummary:
        """The manifest's `lfs` of a snapshot keeping these objects (`index_key`: its
        `lfs.json`)."""
        return LfsSummary(
            objects=len(self.objects),
            bytes=self.bytes,
            missing=len(self.missing),
            missing_paths=self.missing_paths(),
            index=index_key,
        )


def missing_detail(count: int, paths: list[str], shown: int = 5) -> str:
    """The `lfs_missing` reason of a snapshot: how many objects, and which files stay pointers."""
    more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
    return (
        f"{count} LFS objects its history points to were not on the server; these files stay "
        f"pointer files: {', '.join(paths[:shown])}{more}"
    )


def object_key(oid: str, seal: str | None = None) -> str:
    """`lfs/<oid>`; encrypted, `lfs/<oid>.<seal>.age` (`crypt.Sealing.seal`: one copy per set
    of recipients, so new recipients get copies they can open)."""
    return f"{LFS_PREFIX}{oid}.{seal}{crypt.AGE_SUFFIX}" if seal else f"{LFS_PREFIX}{oid}"


def index_keys(index: LfsIndex) -> dict[str, str]:
    """oid -> object key of the objects a snapshot's `lfs.json` lists."""
    sealed = crypt.Sealing.of(index)
    seal = sealed.seal if sealed else None
    return {oid: object_key(oid, seal) for oid in index.objects}


def local_path(git_dir: Path, oid: str) -> Path:
    """Where git-lfs keeps `oid` in a repository (`git_dir` is the bare clone or `.git`)."""
    return git_dir / "lfs" / "objects" / oid[:2] / oid[2:4] / oid


def uses_lfs(repo: LocalRepo) -> bool:
    """Some `.gitattributes` of some branch's or tag's commit routes files through the LFS
    filter: the cheap test that spares a history scan to repositories that never used LFS."""
    out = repo.git(
        "for-each-ref",
        "--format=%(objecttype) %(objectname) %(*objecttype) %(*objectname)",
        "refs/heads",
        "refs/tags",
    )
    tips = set()
    for line in out.splitlines():
        kind, sha, *peeled = line.split(" ")
        if kind == "commit":
            tips.add(sha)
        elif peeled[:1] == ["commit"]:
            tips.add(peeled[1])
    unique = sorted(tips)
    for start in range(0, len(unique), _TIPS_PER_GREP):
        args = ["grep", "-l", "-F", "filter=lfs", *unique[start : start + _TIPS_PER_GREP]]
        args += ["--", ":(glob)**/.gitattributes"]
        try:
            if repo.git(*args).strip():
                return True
        except ArchiveError:
            continue  # git grep exits 1 when nothing matches
    return False


def lfs_endpoint(ref: RepoRef) -> str:
    """The LFS API of the remote as the forges serve it (`<repo>.git/info/lfs`); for ssh,
    the remote itself (git-lfs asks it over ssh). Set in the clone's config, it overrides any
    `.lfsconfig` of the repository, which must not send RepoVault's requests elsewhere."""
    if ref.scheme == "ssh":
        return ref.url
    base = ref.url if ref.url.endswith(".git") else f"{ref.url}.git"
    return f"{base}/info/lfs"


def fetch(repo: LocalRepo, ref: RepoRef) -> LfsObjects:
    """`git lfs fetch --all` into the bare clone: the objects of every ref and of their
    history. An object the server no longer has is reported missing; a network failure is
    raised (transient, retried)."""
    if shutil.which("git-lfs") is None:
        raise ArchiveError(
            "this repository uses Git LFS but git-lfs is not installed; install git-lfs "
            "(Debian package git-lfs) or set REPOVAULT_KEEP_LFS=false"
        )
    repo.git("config", "lfs.url", lfs_endpoint(ref))
    for key in ("lfs.fetchinclude", "lfs.fetchexclude"):
        repo.git("config", key, "")
    listed = _ls_files(repo, "--all")
    wanted = {f["oid"]: int(f["size"]) for f in listed}
    if not wanted:
        return LfsObjects()
    failure: ArchiveError | None = None
    try:
        fetch_all = ["lfs", "fetch", "--all", "origin"]
        repo.client.run(fetch_all, ref=ref, cwd=repo.path, watch=repo.path)
    except (GitTimeout, RepoTooLarge, TransientError):
        raise
    except ArchiveError as exc:
        failure = exc  # objects the server does not have, judged below
    found = LfsObjects()
    for f in listed:
        found.paths.setdefault(f["oid"], []).append(f["name"])
    for oid, size in sorted(wanted.items()):
        path = local_path(repo.path, oid)
        target = found.objects if path.is_file() and path.stat().st_size == size else found.missing
        target[oid] = size
    if failure is not None and not found.missing:
        raise failure
    if found.missing:
        repo.client.log.warning(
            "%d of %d LFS objects could not be fetched from the remote (first: %s); the "
            "snapshot lists them as missing",
            len(found.missing),
            len(wanted),
            next(iter(found.missing)),
        )
    return found


def head_files(repo: LocalRepo, commit: str) -> dict[str, str]:
    """The LFS files of `commit`: path -> oid (what `tree/` stores the content of)."""
    return {f["name"]: f["oid"] for f in _ls_files(repo, commit)}


def _ls_files(repo: LocalRepo, *args: str) -> list[dict]:
    return json.loads(repo.git("lfs", "ls-files", "--json", *args) or "{}").get("files") or []


def unstored(
    store: ObjectStore, bucket: str, lfs: LfsObjects, seal: str | None = None
) -> dict[str, int]:
    """The objects (oid -> size) the bucket does not hold yet: same key and size, or, for
    encrypted copies (whose size age decides), same key."""
    stored = {info.key: info.size for info in store.list(bucket, LFS_PREFIX)}

    def held(oid: str, size: int) -> bool:
        key = object_key(oid, seal)
        return key in stored if seal else stored.get(key) == size

    return {oid: size for oid, size in lfs.objects.items() if not held(oid, size)}


def upload(
    uploader: ParallelUploader,
    git_dir: Path,
    objects: dict[str, int],
    sealing: crypt.Sealing | None = None,
    work_dir: Path | None = None,
) -> int:
    """Queue `objects` (oid -> size, from `unstored`), each checked against its oid first and,
    with `sealing`, encrypted into `work_dir` (streamed, removed once uploaded); returns how
    many."""
    for oid, size in objects.items():
        path = local_path(git_dir, oid)
        _check(path, oid, size, "in the clone")
        if sealing is None:
            uploader.put_file(object_key(oid), path)
            continue
        fd, name = tempfile.mkstemp(dir=work_dir, prefix="lfs-", suffix=crypt.AGE_SUFFIX)
        os.close(fd)
        crypt.encrypt_file(sealing, path, Path(name))
        uploader.put_file(object_key(oid, sealing.seal), Path(name), remove_after=True)
    return len(objects)


def index_doc(lfs: LfsObjects, sealing: crypt.Sealing | None = None) -> LfsIndex:
    """`lfs.json`: the objects stored, those missing (oid -> size), and the paths of the
    missing ones (oid -> paths), which restores and checks name; with `encryption` (the
    recipients) when the objects are stored encrypted."""
    missing_paths = {oid: sorted(set(lfs.paths.get(oid, []))) for oid in lfs.missing}
    index = LfsIndex(objects=lfs.objects, missing=lfs.missing, missing_paths=missing_paths)
    if sealing:
        index.encryption = sealing.record()
    return index


def restore(
    store: ObjectStore,
    bucket: str,
    index: LfsIndex,
    git_dir: Path,
    identity: Path | None = None,
    what: str = "LFS objects",
) -> int:
    """Download every object of a snapshot's `lfs.json` into `git_dir`'s LFS store (decrypted
    with `identity` when stored encrypted; `what` names them then), each checked against its
    oid; returns how many."""
    sealed = crypt.Sealing.of(index)
    keys = index_keys(index)
    for oid, size in sorted(index.objects.items()):
        target = local_path(git_dir, oid)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        os.close(fd)
        part = Path(name)
        stored = part.with_name(part.name + crypt.AGE_SUFFIX)
        try:
            if sealed is None:
                store.download(bucket, keys[oid], part)
            else:
                store.download(bucket, keys[oid], stored)
                crypt.decrypt_file(identity, sealed, what, stored, part)
            _check(part, oid, size, f"stored as {keys[oid]}")
            part.replace(target)
        finally:
            part.unlink(missing_ok=True)
            stored.unlink(missing_ok=True)
    return len(index.objects)


def _check(path: Path, oid: str, size: int, where: str) -> None:
    if not path.is_file():
        raise LfsError(f"LFS object {oid[:12]} {where} is missing")
    actual, digest = path.stat().st_size, file_sha256(path)
    if digest != oid or actual != size:
        raise LfsError(
            f"LFS object {oid[:12]} {where} does not match its oid ({actual} bytes, sha256 "
            f"{digest[:12]}): it is corrupt; restore another snapshot (--snapshot)"
        )
