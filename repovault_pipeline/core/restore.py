"""Get a repository back: a working clone rebuilt from a stored bundle, checked against its
manifest (HEAD and every ref)."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import ArchiveError
from .gitops import GitClient, LocalRepo
from .identity import InvalidRepoUrl, RepoRef, bucket_name, parse_repo_id, parse_repo_url
from .settings import Settings
from .snapshot import SnapshotReader, file_sha256
from .store import ObjectStore


class RestoreError(ArchiveError):
    """The snapshot cannot be restored or does not match its manifest."""


@dataclass(frozen=True)
class Restored:
    repo_id: str
    snapshot_id: str
    head_commit: str
    refs: int
    dest: Path


def resolve_target(target: str, settings: Settings) -> RepoRef:
    """A URL (validated like a request) or a `repo_id` as `repovault list` prints it."""
    try:
        return parse_repo_url(target, settings.allowed_schemes, settings.allowed_hosts)
    except InvalidRepoUrl as url_error:
        if "://" in target or target.count("/") < 2:
            raise url_error
        return parse_repo_id(target)


def restore(
    settings: Settings, store: ObjectStore, ref: RepoRef, dest: Path, snapshot_id: str | None = None
) -> Restored:
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InvalidRepoUrl(f"{dest} exists and is not empty; give a new or empty folder")
    reader = SnapshotReader(store, bucket_name(ref.repo_id, settings.bucket_prefix))
    manifest = reader.manifest(snapshot_id) if snapshot_id else reader.latest()
    if manifest is None:
        which = f"snapshot {snapshot_id}" if snapshot_id else "snapshot"
        raise RestoreError(f"no {which} of {ref.repo_id} is stored; `repovault list` shows what is")

    created = not dest.exists()
    try:
        return _rebuild(settings, store, reader.bucket, manifest, dest)
    except BaseException:
        # A failed restore leaves nothing behind: DEST is as it was (absent or empty).
        shutil.rmtree(dest, ignore_errors=True)
        if not created:
            dest.mkdir(parents=True, exist_ok=True)
        raise


def _rebuild(
    settings: Settings, store: ObjectStore, bucket: str, manifest: dict, dest: Path
) -> Restored:
    client = GitClient(settings)
    with tempfile.TemporaryDirectory(prefix="repovault-restore-") as tmp:
        bundle = Path(tmp) / "repo.bundle"
        store.download(bucket, manifest["bundle"]["key"], bundle)
        if file_sha256(bundle) != manifest["bundle"]["sha256"]:
            raise RestoreError(
                f"bundle of snapshot {manifest['snapshot_id']} fails its sha256 check"
            )
        dest.mkdir(parents=True, exist_ok=True)
        client.run(["init", "--quiet", "--template=", str(dest)])
        # The bundle is a local file we downloaded and checked: allow the file transport here only.
        client.run(
            ["fetch", "--quiet", "--update-head-ok", "--", str(bundle), "refs/*:refs/*"],
            cwd=dest,
            protocols=("file",),
        )
    repo = LocalRepo(dest, client)
    repo.git("symbolic-ref", "HEAD", f"refs/heads/{manifest['default_branch']}")
    repo.git("reset", "--quiet", "--hard")
    repo.git("remote", "add", "origin", manifest["repo_url"])
    head = repo.head_commit()
    if head != manifest["head_commit"] or repo.refs() != manifest["refs"]:
        raise RestoreError(
            f"restored clone does not match manifest {manifest['snapshot_id']}: HEAD {head[:12]}"
        )
    return Restored(manifest["repo_id"], manifest["snapshot_id"], head, len(manifest["refs"]), dest)
