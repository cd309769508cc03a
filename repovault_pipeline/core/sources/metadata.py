"""Forge metadata of one repository, kept beside its git snapshots: issues and pull/merge
requests with their comments and reviews, labels, milestones, releases and release assets.

Layout in the repository's bucket (docs/contract.md, "Forge metadata"):

    metadata/snapshots/<id>/<kind>.jsonl   records new or changed since the previous snapshot
    metadata/snapshots/<id>/index.json     every record known at this snapshot: kind -> id -> digest
    metadata/snapshots/<id>/manifest.json  written last: the commit marker
    metadata/latest.json                   the newest complete metadata snapshot
    metadata/assets/<sha256>               release asset contents, content-addressed

A run asks the forge only for what changed since the previous snapshot (GitHub `since`, GitLab
`updated_after`, with an overlap) and writes only records whose digest differs from the index, so
a re-read after an interrupted run stores no duplicate. Every `full_every_d` days a full pass
reads everything again, which also finds deleted records and changes the forge did not date.
Snapshots are deltas: restoring one replays every snapshot up to it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, urlsplit

import requests

from repovault_pipeline.core.common.errors import ArchiveError, TransientError
from repovault_pipeline.core.common.http import api_session, rate_limit
from repovault_pipeline.core.common.identity import RepoRef, bucket_name, github_web_origin
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.vault import crypt
from repovault_pipeline.core.vault.latest import move_latest
from repovault_pipeline.core.vault.layout import Layout, new_snapshot_id
from repovault_pipeline.core.vault.lease import Lease
from repovault_pipeline.core.vault.reader import SnapshotReader
from repovault_pipeline.core.vault.records import Latest, SnapshotRecord
from repovault_pipeline.core.vault.store import ObjectStore, file_sha256

log = logging.getLogger(__name__)

PREFIX = "metadata/"
# latest.json and snapshots/<id>/manifest.json under PREFIX
LAYOUT = Layout(SnapshotRecord, PREFIX, tree=False)
KINDS = (
    "issues",
    "pull_requests",
    "comments",
    "reviews",
    "review_comments",
    "labels",
    "milestones",
    "releases",
)
ASSETS = "assets"  # index entry: release asset id@updated -> sha256:size, so none is fetched twice
OVERLAP = timedelta(minutes=5)  # forge clocks and eventual consistency: re-read a little


class RateLimited(ArchiveError):
    """The forge API refused to answer more until its rate limit resets."""


def snapshot_key(snapshot_id: str, name: str) -> str:
    return f"{PREFIX}snapshots/{snapshot_id}/{name}"


def asset_key(sha256: str, sealing: crypt.Sealing | None = None) -> str:
    """Content-addressed; encrypted copies per set of recipients (`crypt.Sealing.seal`)."""
    if sealing is None:
        return f"{PREFIX}assets/{sha256}"
    return f"{PREFIX}assets/{sha256}.{sealing.seal}{crypt.AGE_SUFFIX}"


def records_key(snapshot_id: str, kind: str, sealing: crypt.Sealing | None) -> str:
    """`<kind>.jsonl` of a snapshot; `.jsonl.age` when its manifest says it is encrypted."""
    name = f"{kind}.jsonl" + (crypt.AGE_SUFFIX if sealing else "")
    return snapshot_key(snapshot_id, name)


def digest(record: dict) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Feed:
    """One paged listing of the forge: `kind` of its records, and the query parameter that asks
    only for records updated after a time (None: the listing is always read whole)."""

    kind: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    since_param: str | None = None


@dataclass(frozen=True)
class Forge:
    """How to read one repository's metadata from GitHub or GitLab."""

    name: str
    api: str
    project: str  # GitHub: owner/name; GitLab: the URL-encoded project path
    token: str | None

    @property
    def feeds(self) -> tuple[Feed, ...]:
        if self.name == "github":
            base = f"/repos/{self.project}"
            dated = {"state": "all", "sort": "updated", "direction": "asc"}
            return (
                Feed("issues", f"{base}/issues", dated, "since"),
                Feed("comments", f"{base}/issues/comments", {"sort": "updated"}, "since"),
                Feed("review_comments", f"{base}/pulls/comments", {"sort": "updated"}, "since"),
                Feed("labels", f"{base}/labels"),
                Feed("milestones", f"{base}/milestones", {"state": "all"}),
                Feed("releases", f"{base}/releases"),
            )
        base = f"/projects/{self.project}"
        dated = {"scope": "all", "order_by": "updated_at", "sort": "asc"}
        return (
            Feed("issues", f"{base}/issues", dated, "updated_after"),
            Feed(
                "pull_requests",
                f"{base}/merge_requests",
                {**dated, "state": "all"},
                "updated_after",
            ),
            Feed("labels", f"{base}/labels"),
            Feed("milestones", f"{base}/milestones"),
            Feed("releases", f"{base}/releases"),
        )

    def children(self, kind: str, record: dict) -> list[tuple[str, str]]:
        """Listings that belong to one changed record: (kind, path)."""
        if self.name == "github":
            if kind == "pull_requests":
                return [("reviews", f"/repos/{self.project}/pulls/{record['number']}/reviews")]
            return []
        noun = {"issues": "issues", "pull_requests": "merge_requests"}.get(kind)
        if noun is None:
            return []
        return [("comments", f"/projects/{self.project}/{noun}/{record['iid']}/notes")]

    def kind_of(self, feed: Feed, record: dict) -> str:
        """GitHub lists pull requests among issues; they are kept as pull requests."""
        if self.name == "github" and feed.kind == "issues" and "pull_request" in record:
            return "pull_requests"
        return feed.kind

    def release_assets(self, release: dict) -> list[dict]:
        """(id, name, url, updated) of each downloadable file of a release."""
        if self.name == "github":
            return [
                {
                    "id": str(a["id"]),
                    "name": a["name"],
                    "url": a["url"],
                    "updated": a.get("updated_at", ""),
                }
                for a in release.get("assets", [])
            ]
        links = (release.get("assets") or {}).get("links", [])
        return [
            {"id": str(a["id"]), "name": a["name"], "url": a["url"], "updated": ""} for a in links
        ]


def forge_of(ref: RepoRef, settings: Settings) -> Forge | None:
    """The forge API that knows `ref`: the one whose web host is the repository's host."""
    _, github_host, _ = github_web_origin(settings.github_api)
    if ref.host == github_host:
        return Forge(
            "github", settings.github_api.rstrip("/"), "/".join(ref.path), settings.github_token
        )
    gitlab = urlsplit(settings.gitlab_api)
    if ref.host == (gitlab.hostname or "").lower():
        project = quote("/".join(ref.path), safe="")
        return Forge("gitlab", settings.gitlab_api.rstrip("/"), project, settings.gitlab_token)
    return None


@dataclass
class MetadataResult:
    """What one metadata run did; `changed` counts records written per kind."""

    repo_id: str
    bucket: str
    snapshot_id: str | None = None
    full: bool = False
    changed: dict[str, int] = field(default_factory=dict)
    deleted: int = 0
    records: int = 0
    assets_uploaded: int = 0
    requests: int = 0

    @property
    def outcome(self) -> str:
        return "completed" if self.snapshot_id else "unchanged"


class ForgeClient:
    """Paged GETs against one forge API: Link headers followed, the token sent only to the
    API's own origin, rate limits turned into `RateLimited` with the reset time."""

    def __init__(self, forge: Forge, settings: Settings) -> None:
        self.forge = forge
        self.origin = _origin(forge.api)
        self.session = api_session(retries=3, backoff_s=0.5, user_agent="repovault-metadata")
        self.timeout = min(settings.git_timeout_s, 60)
        self.requests = 0

    def _headers(self, url: str, accept: str) -> dict[str, str]:
        headers = {"Accept": accept}
        if self.forge.token and _origin(url) == self.origin:
            if self.forge.name == "github":
                headers["Authorization"] = f"Bearer {self.forge.token}"
            else:
                headers["PRIVATE-TOKEN"] = self.forge.token
        return headers

    def get(
        self,
        url: str,
        params: dict[str, str] | None = None,
        stream: bool = False,
        accept: str = "application/json",
    ) -> requests.Response:
        try:
            response = self.session.get(
                url,
                params=params,
                headers=self._headers(url, accept),
                timeout=self.timeout,
                stream=stream,
            )
        except requests.RequestException as exc:
            raise TransientError(
                f"{self.forge.name} API unreachable: {type(exc).__name__}"
            ) from None
        self.requests += 1
        self._raise_for(response, url)
        return response

    def _raise_for(self, response: requests.Response, url: str) -> None:
        status = response.status_code
        if status < 400:
            return
        path = urlsplit(url).path
        limited = rate_limit(response)
        if limited is not None:
            when = (
                f"{limited.retry_at:%Y-%m-%dT%H:%M:%SZ}" if limited.retry_at else "an unknown time"
            )
            raise RateLimited(
                f"{self.forge.name} API rate limit reached reading {path}; it resets at {when}. "
                "Nothing of this pass was committed; the next run continues from the last "
                "metadata snapshot (set a token to raise the limit)"
            )
        if status in (401, 403, 404):
            hint = (
                "the token is refused"
                if status == 401
                else ("no such repository, or it is private: set the forge token")
            )
            raise ArchiveError(f"{self.forge.name} API answered {status} for {path}: {hint}")
        raise TransientError(f"{self.forge.name} API answered {status} for {path}")

    def pages(self, path_or_url: str, params: dict[str, str]) -> Iterator[dict]:
        url: str | None = path_or_url if "://" in path_or_url else self.forge.api + path_or_url
        query: dict[str, str] | None = {**params, "per_page": "100"}
        while url:
            response = self.get(url, query)
            records = response.json()
            if not isinstance(records, list):
                raise ArchiveError(f"{self.forge.name} API gave no list for {urlsplit(url).path}")
            yield from records
            url = response.links.get("next", {}).get("url")
            query = None  # the next link carries the query

    def download(self, url: str, dest: Path) -> tuple[str, int]:
        """Stream a release asset to `dest`; return its sha256 and size."""
        sha, size = hashlib.sha256(), 0
        with (
            self.get(url, stream=True, accept="application/octet-stream") as response,
            dest.open("wb") as out,
        ):
            for chunk in response.iter_content(256 * 1024):
                sha.update(chunk)
                size += len(chunk)
                out.write(chunk)
        return sha.hexdigest(), size


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


class MetadataArchiver:
    """Reads a repository's forge metadata and commits a metadata snapshot of what changed."""

    def __init__(
        self, settings: Settings, store: ObjectStore, logger: logging.Logger | None = None
    ):
        self.settings = settings
        self.store = store
        self.log = logger or log
        self.sealing = crypt.sealing(settings.encrypt_recipients)

    def latest(self, bucket: str) -> dict | None:
        """The newest manifest, with the time of the last read from `latest.json` (a read that
        found nothing new moves only that). A `latest.json` naming a missing or incomplete
        snapshot is damage: the newest complete snapshot is used, and this run's pointer write
        repairs it."""
        pointer = SnapshotReader(self.store, bucket, LAYOUT).pointer()
        if pointer.manifest is None:
            return None
        if pointer.damage:
            self.log.warning("%s: %s; this run repairs it", bucket, pointer.damage)
            return pointer.manifest.model_dump(exclude_unset=True)
        latest = pointer.latest.model_dump(exclude_unset=True) if pointer.latest else {}
        return {**pointer.manifest.model_dump(exclude_unset=True), **latest}

    def index(self, bucket: str, manifest: dict | None) -> dict[str, dict[str, str]]:
        return read_index(self.store, bucket, manifest["snapshot_id"] if manifest else None)

    def archive(self, ref: RepoRef, forge: Forge) -> MetadataResult:
        bucket = bucket_name(ref.repo_id, self.settings.bucket_prefix)
        self.store.ensure_bucket(bucket)
        result = MetadataResult(ref.repo_id, bucket)
        previous = self.latest(bucket)
        index = self.index(bucket, previous)
        started = datetime.now(UTC)
        since: datetime | None = None
        full = previous is None or started - datetime.fromisoformat(
            previous["last_full_at"]
        ) >= timedelta(days=self.settings.metadata_full_every_d)
        if previous is not None and not full:
            since = datetime.fromisoformat(previous["fetched_at"]) - OVERLAP
        client = ForgeClient(forge, self.settings)
        with tempfile.TemporaryDirectory(prefix="repovault-metadata-") as tmp:
            changed, seen = self._read(client, forge, index, since, Path(tmp), result)
            result.requests = client.requests
            if full:  # what the whole listing no longer holds was deleted upstream
                for kind in ("issues", "pull_requests", "labels", "milestones", "releases"):
                    gone = set(index[kind]) - seen.get(kind, set())
                    result.deleted += len(gone)
                    for key in gone:
                        del index[kind][key]
            result.full = full
            result.changed = {kind: len(records) for kind, records in changed.items() if records}
            result.records = sum(len(index[kind]) for kind in KINDS)
            if not result.changed and not result.deleted and previous is not None:
                self._touch(bucket, previous, started, full)
                return result
            self._commit(bucket, previous, index, changed, started, full, result)
        return result

    def _read(
        self,
        client: ForgeClient,
        forge: Forge,
        index: dict[str, dict[str, str]],
        since: datetime | None,
        tmp: Path,
        result: MetadataResult,
    ) -> tuple[dict[str, list[dict]], dict[str, set[str]]]:
        changed: dict[str, list[dict]] = {kind: [] for kind in KINDS}  # ASSETS is not a kind
        seen: dict[str, set[str]] = {}

        def keep(kind: str, record: dict) -> bool:
            key, value = str(record["id"]), digest(record)
            seen.setdefault(kind, set()).add(key)
            if index[kind].get(key) == value:
                return False
            index[kind][key] = value
            changed[kind].append(record)
            return True

        for feed in forge.feeds:
            params = dict(feed.params)
            if since is not None and feed.since_param:
                params[feed.since_param] = since.strftime("%Y-%m-%dT%H:%M:%SZ")
            for record in client.pages(feed.path, params):
                kind = forge.kind_of(feed, record)
                if kind == "releases":
                    record = self._with_assets(client, forge, record, index[ASSETS], tmp, result)
                if keep(kind, record):
                    for child_kind, path in forge.children(kind, record):
                        for child in client.pages(path, {}):
                            keep(child_kind, child)
        return changed, seen

    def _with_assets(
        self,
        client: ForgeClient,
        forge: Forge,
        release: dict,
        known: dict[str, str],
        tmp: Path,
        result: MetadataResult,
    ) -> dict:
        """The release with `repovault_assets`: each file downloaded and stored once, under its
        sha256; an asset already in the index (same id, same update time) is not fetched."""
        stored = []
        for asset in forge.release_assets(release):
            seen_as = f"{asset['id']}@{asset['updated']}"
            sha = known[seen_as].split(":")[0] if seen_as in known else None
            # Known, but not stored as this run stores it (recipients changed): fetched again.
            if sha is not None and self._holds(result.bucket, asset_key(sha, self.sealing)):
                size = int(known[seen_as].split(":")[1])
            else:
                path = tmp / "asset"
                sha, size = client.download(asset["url"], path)
                key = asset_key(sha, self.sealing)
                if not self._holds(result.bucket, key):
                    upload = path
                    if self.sealing is not None:
                        upload = path.with_name("asset.age")
                        crypt.encrypt_file(self.sealing, path, upload)
                    self.store.put_file(result.bucket, key, upload)
                    upload.unlink()
                    result.assets_uploaded += 1
                path.unlink(missing_ok=True)
                known[seen_as] = f"{sha}:{size}"
            stored.append(
                {
                    "id": asset["id"],
                    "name": asset["name"],
                    "size": size,
                    "sha256": sha,
                    "key": asset_key(sha, self.sealing),
                }
            )
        return {**release, "repovault_assets": stored}

    def _holds(self, bucket: str, key: str) -> bool:
        return any(o.key == key for o in self.store.list(bucket, key))

    def _commit(
        self,
        bucket: str,
        previous: dict | None,
        index: dict[str, dict[str, str]],
        changed: dict[str, list[dict]],
        started: datetime,
        full: bool,
        result: MetadataResult,
    ) -> None:
        index_bytes = json.dumps(index, sort_keys=True).encode()
        snapshot_id = new_snapshot_id(
            hashlib.sha256(index_bytes).hexdigest(), previous["snapshot_id"] if previous else None
        )
        with Lease.acquire(
            self.store,
            bucket,
            snapshot_id,
            self.settings.lease_ttl_s,
            self.settings.lease_wait_s,
            self.log,
        ) as lease:
            files = {}
            for kind, records in changed.items():
                if records:
                    body = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()
                    self.store.put_bytes(
                        bucket,
                        records_key(snapshot_id, kind, self.sealing),
                        crypt.encrypt_bytes(self.sealing, body) if self.sealing else body,
                        content_type="application/x-ndjson",
                    )
                    files[kind] = {"records": len(records), "bytes": len(body)}
            self.store.put_bytes(
                bucket,
                snapshot_key(snapshot_id, "index.json"),
                index_bytes,
                content_type="application/json",
            )
            manifest = {
                "repo_id": result.repo_id,
                "snapshot_id": snapshot_id,
                "previous": previous["snapshot_id"] if previous else None,
                "fetched_at": started.isoformat(),
                "full": full,
                "last_full_at": started.isoformat()
                if full or previous is None
                else previous["last_full_at"],
                "files": files,
                "records": result.records,
                "deleted": result.deleted,
                # The records and release assets are encrypted to these age recipients; the
                # index (record ids and digests) stays readable: the next run reads it.
                **({"encryption": self.sealing.record().model_dump()} if self.sealing else {}),
            }
            lease.confirm()  # the manifest is the commit marker
            self.store.put_bytes(
                bucket,
                snapshot_key(snapshot_id, "manifest.json"),
                json.dumps(manifest, indent=1).encode(),
                content_type="application/json",
            )
            lease.confirm()
            move_latest(self.store, bucket, LAYOUT, Latest(snapshot_id=snapshot_id), self.log)
        result.snapshot_id = snapshot_id

    def _touch(self, bucket: str, previous: dict, started: datetime, full: bool) -> None:
        """Nothing changed: no snapshot, but the next incremental read starts from now. Under
        the lease, by the code snapshot's rules (`move_latest`): never onto a snapshot older
        than a complete one named already, a pointer to a missing one repaired."""
        # The manifest is immutable; the time of the last read lives in latest.json instead.
        doc = {"snapshot_id": previous["snapshot_id"], "fetched_at": started.isoformat()}
        if full:
            doc["last_full_at"] = started.isoformat()
        with Lease.acquire(
            self.store,
            bucket,
            previous["snapshot_id"],
            self.settings.lease_ttl_s,
            self.settings.lease_wait_s,
            self.log,
        ) as lease:
            lease.confirm()
            move_latest(self.store, bucket, LAYOUT, Latest.model_validate(doc), self.log)


def read_index(
    store: ObjectStore, bucket: str, snapshot_id: str | None
) -> dict[str, dict[str, str]]:
    """Every record known at `snapshot_id` (kind -> id -> digest) and the known release assets."""
    raw = store.get_bytes(bucket, snapshot_key(snapshot_id, "index.json")) if snapshot_id else None
    known = json.loads(raw) if raw else {}
    return {key: dict(known.get(key, {})) for key in (*KINDS, ASSETS)}


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
        pointer = SnapshotReader(store, bucket, LAYOUT).pointer()
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
        for o in store.list(bucket, PREFIX + "snapshots/")
        if o.key.endswith("/manifest.json")
    )
    if snapshot_id not in committed:
        raise ArchiveError(f"{repo_id} has no metadata snapshot {snapshot_id}")
    state: dict[str, dict[str, dict]] = {kind: {} for kind in KINDS}
    reader = SnapshotReader(store, bucket, LAYOUT)
    for sid in committed[: committed.index(snapshot_id) + 1]:
        sealed = crypt.Sealing.of(reader.manifest(sid))
        what = f"metadata snapshot {sid} of {repo_id}"
        for kind in KINDS:
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
    index: dict[str, dict[str, str]],
    identity: Path | None,
) -> RestoredMetadata:
    dest.mkdir(parents=True, exist_ok=True)
    counts = {}
    for kind in KINDS:
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
        crypt.Sealing.of(SnapshotReader(store, bucket, LAYOUT).manifest(snapshot_id)),
        identity,
    )
    return RestoredMetadata(repo_id, snapshot_id, dest, counts, assets)


def _id_order(key: str) -> tuple[int, str]:
    return (int(key), key) if key.isdigit() else (0, key)


def _write_markdown(
    dest: Path, state: dict[str, dict[str, dict]], index: dict[str, dict[str, str]]
) -> None:
    """issues/<number>.md and pull_requests/<number>.md: the thread as a person reads it."""
    comments: dict[tuple[str | None, str], list[dict]] = {}
    for key in sorted(index["comments"], key=_id_order):
        comment = state["comments"].get(key)
        if comment is None:
            continue
        thread: tuple[str | None, str]
        if "issue_url" in comment:  # GitHub: issues and pull requests share their numbers
            thread = (None, comment["issue_url"].rsplit("/", 1)[-1])
        else:  # GitLab: a note names its issue or merge request
            kind = "pull_requests" if comment.get("noteable_type") == "MergeRequest" else "issues"
            thread = (kind, str(comment.get("noteable_iid", "")))
        comments.setdefault(thread, []).append(comment)
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
                str(record.get("body") or record.get("description") or ""),
                "",
            ]
            for comment in comments.get((None, number), []) + comments.get((kind, number), []):
                who = comment.get("user") or comment.get("author") or {}
                author = who.get("login") or who.get("username") or ""
                lines += ["---", f"comment {author}".rstrip(), "", str(comment.get("body", "")), ""]
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


def wanted(settings: Settings, forge: Forge | None, requested: bool | None = None) -> str | None:
    """Why this run keeps no metadata, or None when it does. `requested` is the request's own
    choice; else REPOVAULT_KEEP_METADATA: `on`, `off`, or `auto` (on when the forge's token is
    set: without one, a large repository exhausts the anonymous rate limit at once)."""
    if forge is None:
        return "no forge API is known for this host (REPOVAULT_GITHUB_API, REPOVAULT_GITLAB_API)"
    if requested is False:
        return "the request asked for no metadata"
    if requested is None and settings.keep_metadata == "off":
        return "REPOVAULT_KEEP_METADATA=off"
    if requested is None and settings.keep_metadata == "auto" and not forge.token:
        token = "GITHUB_TOKEN" if forge.name == "github" else "GITLAB_TOKEN"
        return f"no {token} (REPOVAULT_KEEP_METADATA=auto); set it, or REPOVAULT_KEEP_METADATA=on"
    return None
