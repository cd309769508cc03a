"""Restore to a forge (`repovault restore --push URL`): a snapshot rebuilt in a temporary bare
repository by the restore's own machinery (its bundle, or its chain's, each checked against its
manifest, then every ref and HEAD), then pushed so that the target's branches and tags are the
snapshot's: its LFS objects first (`git lfs push --all`), then every branch and tag; optionally
the wiki's snapshot to the target's wiki (`<URL without .git>.wiki.git`, where GitHub and GitLab
serve it).

Safe by default: the target is read (`git ls-remote`) before anything is downloaded, and one
that has any branch or tag, or that is the repository the snapshot was taken from, is refused
unless `force`. With `force` the push is a mirror of branches and tags: the target's others are
deleted. Afterwards the target is read again and must list exactly the snapshot's refs.
Credentials in the URL (`https://user:token@host/...`) leave it at once: git gets them in its
environment, for that origin only, and no message, log or answer holds them.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from repovault_pipeline.core.common.errors import ArchiveError, RepoNotFound
from repovault_pipeline.core.common.identity import (
    InvalidRepoUrl,
    RepoRef,
    parse_repo_url,
    wiki_ref,
)
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.vault.gitops import BasicAuth, GitClient
from repovault_pipeline.core.vault.lfs import lfs_endpoint
from repovault_pipeline.core.vault.localrepo import LocalRepo
from repovault_pipeline.core.vault.rebuild import RestoreError, check_refs_and_head, fetch_snapshot
from repovault_pipeline.core.vault.restore import (
    Found,
    find_snapshot,
    repair_advice,
    restore_lfs_objects,
)
from repovault_pipeline.core.vault.store import ObjectStore

REMOTE = "target"
HEADS, TAGS = "refs/heads/", "refs/tags/"
MIRROR = (f"{HEADS}*:{HEADS}*", f"{TAGS}*:{TAGS}*")
SHOWN_REFS = 5  # refs a refusal names


class InvalidTarget(InvalidRepoUrl):
    """A push target (or `--create` name) that cannot be used; `str()` is the one-line reason."""


class PushRefused(ArchiveError):
    """The target is not empty, or is the snapshot's own source: nothing was pushed; `--force`
    overrides. `reason`: `target_not_empty` or `same_repository`."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class PushTarget:
    """Where to push: the URL without credentials (`ref.url`, what messages show), and the
    credentials the URL carried, if any."""

    ref: RepoRef
    auth: BasicAuth | None = None


def push_target(raw: str, settings: Settings) -> PushTarget:
    """`raw` checked like a repository URL (REPOVAULT_ALLOWED_SCHEMES and _HOSTS: a push goes
    only where RepoVault may reach), except that an http(s) URL may carry credentials, which
    are taken out of it."""
    text = raw.strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 (raises ValueError for a bad port, said by parse_repo_url)
    except ValueError:
        parts = None
    user = password = None
    if parts and parts.scheme.lower() in ("http", "https") and parts.username is not None:
        user, password = unquote(parts.username), unquote(parts.password or "")
        netloc = parts.netloc.rpartition("@")[2]
        text = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    try:
        ref = parse_repo_url(text, settings.allowed_schemes, settings.allowed_hosts)
    except InvalidRepoUrl as exc:
        raise InvalidTarget(f"push URL: {exc}") from None
    auth = BasicAuth((ref.scheme, ref.host, ref.port), user, password or "") if user else None
    return PushTarget(ref, auth)


@dataclass(frozen=True)
class PushedPart:
    """One repository pushed (the code, or the wiki): which snapshot, where, what."""

    snapshot_id: str
    url: str
    branches: int
    tags: int
    lfs_objects: int = 0
    lfs_missing: int = 0  # objects the snapshot lacks (lost upstream): not pushed
    deleted: int = 0  # branches and tags of the target not in the snapshot, deleted (force)
    default_branch: str | None = None  # the snapshot's
    target_head: str | None = None  # the branch the target's HEAD names after the push

    def line(self, what: str) -> str:
        lfs = f", {self.lfs_objects} LFS objects" if self.lfs_objects or self.lfs_missing else ""
        deleted = f", {self.deleted} other refs deleted" if self.deleted else ""
        return (
            f"pushed {what} snapshot {self.snapshot_id} to {self.url}: {self.branches} branches, "
            f"{self.tags} tags{lfs}{deleted}; the target lists exactly the snapshot's refs"
        )

    def warnings(self, what: str) -> list[str]:
        said = []
        if self.lfs_missing:
            said.append(
                f"{what}: {self.lfs_missing} LFS objects were not on the source when the "
                "snapshot was taken and are not pushed; those files stay pointer files"
            )
        if self.default_branch and self.target_head != self.default_branch:
            said.append(
                f"{what}: the snapshot's default branch is {self.default_branch} but the "
                f"target's HEAD names {self.target_head or 'no branch'}: set the default "
                "branch in the forge's repository settings"
            )
        return said


@dataclass(frozen=True)
class Pushed:
    repo_id: str
    code: PushedPart
    wiki: PushedPart | None = None

    def lines(self) -> list[str]:
        said = [self.code.line(f"{self.repo_id}")]
        said.append(self.wiki.line("its wiki") if self.wiki else "wiki: not pushed (--wiki)")
        return said

    def warnings(self) -> list[str]:
        said = self.code.warnings("code")
        return said + (self.wiki.warnings("wiki") if self.wiki else [])


def push_snapshot(
    settings: Settings,
    store: ObjectStore,
    ref: RepoRef,
    target: PushTarget,
    snapshot_id: str | None = None,
    wiki: bool = False,
    force: bool = False,
) -> Pushed:
    """Push `ref`'s snapshot (the latest, or `snapshot_id`) to `target`, and with `wiki` its
    latest wiki snapshot to the target's wiki. Every refusal comes before any download."""
    if target.ref.repo_id == ref.repo_id and not force:
        raise PushRefused(
            f"{target.ref.url} is {ref.repo_id} itself, the repository the snapshot was taken "
            "from; pass --force to overwrite it with the snapshot",
            "same_repository",
        )
    parts = [(find_snapshot(settings, store, ref, snapshot_id), target.ref)]
    if wiki:
        parts.append((find_snapshot(settings, store, ref, wiki=True), wiki_ref(target.ref)))
    client = GitClient(settings, auth=target.auth)
    present = [_refs_of(client, url, url is not target.ref) for _, url in parts]
    if not force:
        for (_, url), refs in zip(parts, present, strict=True):
            if refs:
                raise PushRefused(_not_empty(url, refs), "target_not_empty")
    done = [
        _push(settings, client, found, url, refs)
        for (found, url), refs in zip(parts, present, strict=True)
    ]
    return Pushed(ref.repo_id, done[0], done[1] if wiki else None)


def _refs_of(client: GitClient, url: RepoRef, is_wiki: bool) -> dict[str, str]:
    """The target's branches and tags; a target not found says how it comes to exist."""
    try:
        return client.ls_remote(url).refs
    except RepoNotFound as exc:
        if is_wiki:
            todo = (
                "forges create a wiki's repository when its first page is saved on the web: "
                "save one page, then push with --force"
            )
        else:
            todo = "create it first (on the forge, or with --create) and check its credentials"
        raise RepoNotFound(f"the push target {url.url}: {exc}; {todo}") from None


def _not_empty(url: RepoRef, refs: dict[str, str]) -> str:
    branches = sorted(n.removeprefix(HEADS) for n in refs if n.startswith(HEADS))
    tags = sorted(n.removeprefix(TAGS) for n in refs if n.startswith(TAGS))
    names = [*branches, *tags]
    more = ", ..." if len(names) > SHOWN_REFS else ""
    return (
        f"{url.url} is not empty: it has {len(branches)} branches and {len(tags)} tags "
        f"({', '.join(names[:SHOWN_REFS])}{more}); pass --force to overwrite them (the target "
        "then equals the snapshot: its other branches and tags are deleted)"
    )


def _push(
    settings: Settings, client: GitClient, found: Found, url: RepoRef, present: dict[str, str]
) -> PushedPart:
    """Rebuild `found` in a temporary bare repository, push its LFS objects and refs to `url`,
    then check the target lists exactly the snapshot's refs."""
    manifest = found.manifest
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="repovault-push-", dir=settings.work_dir) as tmp:
        repo = LocalRepo(Path(tmp) / "repo.git", client)
        client.run(["init", "--bare", "--quiet", "--template=", str(repo.path)])
        try:
            fetch_snapshot(found.reader, manifest, repo, settings.decrypt_identity)
            check_refs_and_head(repo, manifest)
            objects, _ = restore_lfs_objects(
                found.reader.store,
                found.reader.bucket,
                manifest,
                repo.path,
                settings.decrypt_identity,
            )
        except RestoreError as exc:
            advice = repair_advice(found.reader, manifest.snapshot_id, manifest.repo_url)
            raise RestoreError(f"{exc}; {advice}", exc.reason) from None
        repo.git("remote", "add", REMOTE, url.url)
        if objects:
            _push_lfs(repo, url)
        _push_refs(repo, url, manifest.default_branch, bool(present))
    after = client.ls_remote(url)
    if after.refs != manifest.refs:
        differ = sorted(set(after.refs.items()) ^ set(manifest.refs.items()))
        raise ArchiveError(
            f"after the push {url.url} lists {len(after.refs)} branches and tags, the snapshot "
            f"{len(manifest.refs)}; {len(differ)} differ (first: {differ[0][0]}): the forge "
            "refused some (a protected branch?); see its settings, then push with --force"
        )
    return PushedPart(
        snapshot_id=manifest.snapshot_id,
        url=url.url,
        branches=sum(n.startswith(HEADS) for n in manifest.refs),
        tags=sum(n.startswith(TAGS) for n in manifest.refs),
        lfs_objects=objects,
        lfs_missing=manifest.lfs.missing if manifest.lfs else 0,
        deleted=len(set(present) - set(manifest.refs)),
        default_branch=manifest.default_branch,
        target_head=after.default_branch,
    )


def _push_lfs(repo: LocalRepo, url: RepoRef) -> None:
    """`git lfs push --all`: every object the refs point to, to the target's LFS endpoint (its
    own, whatever a `.lfsconfig` says); objects the snapshot lacks are skipped, not invented."""
    if shutil.which("git-lfs") is None:
        raise ArchiveError(
            "the snapshot has LFS objects but git-lfs is not installed; install git-lfs "
            "(Debian package git-lfs), then push again"
        )
    for key, value in (
        ("lfs.url", lfs_endpoint(url)),
        ("lfs.locksverify", "false"),
        ("lfs.allowincompletepush", "true"),
    ):
        repo.git("config", key, value)
    repo.client.run(["lfs", "push", "--all", REMOTE], ref=url, cwd=repo.path)


def _push_refs(repo: LocalRepo, url: RepoRef, default_branch: str | None, force: bool) -> None:
    """The default branch first (an empty forge repository takes the first branch pushed as
    its default), then every branch and tag; with `force`, overwriting and deleting the
    target's others (`--prune`)."""
    if default_branch and not force:
        first = f"{HEADS}{default_branch}"
        repo.client.run(["push", "--quiet", REMOTE, f"{first}:{first}"], ref=url, cwd=repo.path)
    refspecs = [f"+{spec}" for spec in MIRROR] if force else list(MIRROR)
    options = ["--prune"] if force else []
    repo.client.run(["push", "--quiet", *options, REMOTE, *refspecs], ref=url, cwd=repo.path)
