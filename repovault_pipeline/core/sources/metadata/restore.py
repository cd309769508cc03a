"""Restoring forge metadata: the snapshots replayed up to one into plain files a person reads.

Apart from archiving because it shares nothing with it but the layout (`layout`): it reads the
committed snapshots (manifests found by listing, as the vault's restore does) and never writes
to the bucket. Snapshots are deltas: restoring one replays every snapshot up to it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from repovault_pipeline.core.common.errors import ArchiveError
from repovault_pipeline.core.sources.metadata.layout import (
    RECORD_KINDS,
    Index,
    read_index,
    records_key,
)
from repovault_pipeline.core.vault import crypt
from repovault_pipeline.core.vault.layout import METADATA
from repovault_pipeline.core.vault.reader import SnapshotReader
from repovault_pipeline.core.vault.store import ObjectStore, file_sha256


@dataclass(frozen=True)
class RestoredMetadata:
    repo_id: str
    snapshot_id: str
    dest: Path
    records: dict[str, int]
    assets: int
    note: str | None = None  # latest.json was damaged: which snapshot was restored instead


def restore_metadata(
    store: ObjectStore,
    bucket: str,
    repo_id: str,
    dest: Path,
    snapshot_id: str | None = None,
    identity: Path | None = None,
) -> RestoredMetadata:
    """Replay the metadata snapshots up to `snapshot_id` (default: the latest) into `dest`:
    `<kind>.jsonl` (the newest version of every record, by id), one Markdown file per issue and
    pull request with its comments and reviews, and the release assets under
    `releases/<tag>/<name>`, each checked against its sha256. Encrypted snapshots are
    decrypted with `identity` (`crypt.NotDecryptable` when it cannot)."""
    if dest.exists() and any(dest.iterdir()):
        raise ArchiveError(f"{dest} is not empty; restore into a new or empty folder")
    note = None
    if snapshot_id is None:
        pointer = SnapshotReader(store, bucket, METADATA).pointer()
        if pointer.manifest is None:
            damage = f" ({pointer.damage})" if pointer.damage else ""
            raise ArchiveError(
                f"{repo_id} has no metadata snapshot{damage}; archive it with a forge token"
            )
        snapshot_id = pointer.manifest.snapshot_id
        if pointer.damage:
            note = f"{pointer.damage}: restored that one; the next run repairs the pointer"
    committed = sorted(
        o.key.split("/")[2]
        for o in store.list(bucket, METADATA.snapshots)
        if o.key.endswith("/manifest.json")
    )
    if snapshot_id not in committed:
        raise ArchiveError(f"{repo_id} has no metadata snapshot {snapshot_id}")
    state: dict[str, dict[str, dict]] = {kind: {} for kind in RECORD_KINDS}
    reader = SnapshotReader(store, bucket, METADATA)
    for sid in committed[: committed.index(snapshot_id) + 1]:
        sealed = crypt.Sealing.of(reader.manifest(sid))
        what = f"metadata snapshot {sid} of {repo_id}"
        for kind in RECORD_KINDS:
            raw = store.get_bytes(bucket, records_key(sid, kind, sealed))
            if raw is not None and sealed is not None:
                raw = crypt.decrypt_bytes(identity, sealed, what, raw)
            for line in (raw or b"").splitlines():
                record = json.loads(line)
                state[kind][str(record["id"])] = record
    index = read_index(store, bucket, snapshot_id)
    created = not dest.exists()
    try:
        done = _write_metadata(store, bucket, repo_id, snapshot_id, dest, state, index, identity)
        return replace(done, note=note)
    except BaseException:
        # A failed restore leaves nothing behind: DEST is as it was (absent or empty).
        shutil.rmtree(dest, ignore_errors=True)
        if not created:
            dest.mkdir(parents=True, exist_ok=True)
        raise


def _write_metadata(
    store: ObjectStore,
    bucket: str,
    repo_id: str,
    snapshot_id: str,
    dest: Path,
    state: dict[str, dict[str, dict]],
    index: Index,
    identity: Path | None,
) -> RestoredMetadata:
    dest.mkdir(parents=True, exist_ok=True)
    counts = {}
    for kind in RECORD_KINDS:
        records = [
            state[kind][key] for key in sorted(index[kind], key=_id_order) if key in state[kind]
        ]
        counts[kind] = len(records)
        with (dest / f"{kind}.jsonl").open("w") as out:
            out.writelines(json.dumps(r, sort_keys=True) + "\n" for r in records)
    _write_markdown(dest, state, index)
    assets = _restore_assets(
        store,
        bucket,
        dest,
        [state["releases"][k] for k in index["releases"] if k in state["releases"]],
        crypt.Sealing.of(SnapshotReader(store, bucket, METADATA).manifest(snapshot_id)),
        identity,
    )
    return RestoredMetadata(repo_id, snapshot_id, dest, counts, assets)


def _id_order(key: str) -> tuple[int, str]:
    return (int(key), key) if key.isdigit() else (0, key)


def _thread(comment: dict) -> tuple[str | None, str]:
    """The issue or pull request a comment belongs to: (kind, number), kind None where issues
    and pull requests share their numbers (GitHub, Gitea)."""
    url = comment.get("issue_url") or comment.get("pull_request_url")
    if url is not None or "issue_url" in comment:  # GitHub, Gitea
        return None, str(url or "").rsplit("/", 1)[-1]
    for key, kind in (("pullrequest", "pull_requests"), ("issue", "issues")):  # Bitbucket
        if isinstance(comment.get(key), dict):
            return kind, str(comment[key].get("id", ""))
    # GitLab: a note names its issue or merge request
    kind = "pull_requests" if comment.get("noteable_type") == "MergeRequest" else "issues"
    return kind, str(comment.get("noteable_iid", ""))


def _text(record: dict) -> str:
    """A record's text: `body` (GitHub, Gitea), `description` (GitLab), `content.raw`
    (Bitbucket)."""
    content = record.get("content")
    raw = content.get("raw") if isinstance(content, dict) else None
    return str(record.get("body") or record.get("description") or raw or "")


def _write_markdown(dest: Path, state: dict[str, dict[str, dict]], index: Index) -> None:
    """issues/<number>.md and pull_requests/<number>.md: the thread as a person reads it."""
    comments: dict[tuple[str | None, str], list[dict]] = {}
    for key in sorted(index["comments"], key=_id_order):
        comment = state["comments"].get(key)
        if comment is None:
            continue
        comments.setdefault(_thread(comment), []).append(comment)
    for kind in ("issues", "pull_requests"):
        folder = dest / kind
        folder.mkdir(exist_ok=True)
        for key in index[kind]:
            record = state[kind].get(key)
            if record is None:
                continue
            number = str(record.get("number", record.get("iid", key)))
            lines = [
                f"# #{number} {record.get('title', '')}",
                "",
                f"state: {record.get('state', '')}",
                "",
                _text(record),
                "",
            ]
            for comment in comments.get((None, number), []) + comments.get((kind, number), []):
                who = comment.get("user") or comment.get("author") or {}
                author = who.get("login") or who.get("username") or who.get("nickname") or ""
                lines += ["---", f"comment {author}".rstrip(), "", _text(comment), ""]
            (folder / f"{number}.md").write_text("\n".join(lines))


def _restore_assets(
    store: ObjectStore,
    bucket: str,
    dest: Path,
    releases: list[dict],
    sealed: crypt.Sealing | None,
    identity: Path | None,
) -> int:
    """Each release asset into `releases/<tag>/<name>`; an encrypted copy (its key ends in
    `.age`) decrypted with `identity` for the recipients `sealed` names."""
    count = 0
    for release in releases:
        tag = str(release.get("tag_name") or release.get("tag") or release["id"])
        for asset in release.get("repovault_assets", []):
            target = dest / "releases" / _safe(tag) / _safe(asset["name"])
            target.parent.mkdir(parents=True, exist_ok=True)
            if asset["key"].endswith(crypt.AGE_SUFFIX):  # whatever the snapshot's own sealing
                stored = target.with_name(target.name + crypt.AGE_SUFFIX)
                store.download(bucket, asset["key"], stored)
                what = f"release asset {asset['name']} of {tag}"
                try:
                    crypt.decrypt_file(identity, sealed or crypt.Sealing(()), what, stored, target)
                finally:
                    stored.unlink(missing_ok=True)
            else:
                store.download(bucket, asset["key"], target)
            if file_sha256(target) != asset["sha256"]:
                raise ArchiveError(
                    f"release asset {asset['name']} of {tag} does not match its sha256 "
                    f"({asset['key']}); the stored copy is damaged"
                )
            count += 1
    return count


def _safe(name: str) -> str:
    """A file name from the forge, never a path."""
    cleaned = name.replace("/", "_").replace("\\", "_").strip()
    return "_" if cleaned in ("", ".", "..") else cleaned
