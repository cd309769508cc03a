"""Refresh: which archived repositories changed upstream, for the price of one `git ls-remote`
each (two when the wiki is kept) and no Dagster run (docs/contract.md: `refresh_sensor`,
`repovault refresh`).

The repositories that are due (not checked for REPOVAULT_REFRESH_INTERVAL_H) are asked for their
refs in parallel, at most REPOVAULT_HOST_CONCURRENCY at once per host. Three signals are
compared with what `repo_state` recorded from the latest snapshots: the code's refs, the wiki's
refs (when its runs keep the wiki) and the forge's activity stamp that the latest listing of its
source recorded (when its runs keep metadata; no API request here). Only changed repositories
come back, saying which signals moved, with a run key that names what was seen, so the same
change is never requested twice. A remote that says "not found" twice in a row is `gone`; one
that fails UNREACHABLE_AFTER checks in a row is `unreachable`. Neither touches a snapshot.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from repovault_pipeline.core.common.errors import ArchiveError, RepoNotFound
from repovault_pipeline.core.common.identity import (
    InvalidRepoUrl,
    RepoRef,
    parse_repo_url,
    wiki_ref,
)
from repovault_pipeline.core.common.redact import mask_secrets
from repovault_pipeline.core.common.settings import Keep, Settings
from repovault_pipeline.core.intake.kafka import KafkaGateway
from repovault_pipeline.core.intake.lifecycle import NewRequest, RequestLifecycle
from repovault_pipeline.core.lineage.requests import LineageStore
from repovault_pipeline.core.sources.fleet import FleetStore, due_before
from repovault_pipeline.core.sources.fleet_rows import RepoState
from repovault_pipeline.core.sources.forges import forge_of
from repovault_pipeline.core.sources.metadata.archive import wanted
from repovault_pipeline.core.vault.gitops import GitClient, refs_digest

REFRESH_SOURCE = "refresh"
MAX_WORKERS = 64  # threads waiting on git processes; the per-host limit is the real bound
_REFRESH_NAMESPACE = uuid.UUID("8a4e2c61-1f0b-4d7e-b1c9-6a2d9e0f3b57")
log = logging.getLogger(__name__)
CODE_REFS, WIKI, METADATA = "code refs", "wiki", "metadata"  # the signals, as reasons say them


@dataclass(frozen=True)
class Seen:
    """What one check saw upstream: the code's refs digest, the wiki's (None: its runs do not
    keep the wiki) and the listed forge stamp (None: no metadata kept, or never listed)."""

    code: str
    wiki: str | None = None
    metadata: str | None = None

    @property
    def digest(self) -> str:
        """sha256 of the three: what the run key names."""
        text = f"{self.code}\n{self.wiki or '-'}\n{self.metadata or '-'}"
        return hashlib.sha256(text.encode()).hexdigest()

    def differs(self, state: RepoState) -> tuple[str, ...]:
        """Which of the signals differ from what the latest snapshots recorded; one never
        recorded (a row older than the signal) differs."""
        moved = [
            (CODE_REFS, self.code != state.refs_digest),
            (WIKI, self.wiki is not None and self.wiki != state.wiki_digest),
            (METADATA, self.metadata is not None and self.metadata != state.metadata_stamp),
        ]
        return tuple(name for name, differs in moved if differs)


@dataclass(frozen=True)
class Change:
    """A repository whose code refs, wiki refs or forge stamp differ from its latest
    snapshots'."""

    repo_id: str
    repo_url: str
    seen: Seen
    changed: tuple[str, ...]  # which signals moved (CODE_REFS, WIKI, METADATA)
    source_id: str | None = None  # its tracked source, whose `keep` its run follows

    @property
    def digest(self) -> str:
        return self.seen.digest

    @property
    def reason(self) -> str:
        """What changed, for the operator: `code refs`, `wiki`, `metadata`, comma separated."""
        return ", ".join(self.changed)

    @property
    def run_key(self) -> str:
        """Names what was seen: a second tick that sees the same asks for nothing new."""
        return f"refresh:{self.repo_id}:{self.digest[:12]}"

    @property
    def request_id(self) -> str:
        return str(uuid.uuid5(_REFRESH_NAMESPACE, self.run_key))


@dataclass
class RefreshOutcome:
    checked: int = 0
    unchanged: list[str] = field(default_factory=list)
    changed: list[Change] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # repo_id, reason
    gone: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"checked {self.checked}: {len(self.changed)} changed, {len(self.unchanged)} "
            f"unchanged, {len(self.failed)} failed, {len(self.gone)} gone"
        )


def host_key(ref: RepoRef) -> str:
    return ref.host if ref.port is None else f"{ref.host}:{ref.port}"


class _HostLimiter:
    """At most `limit` git operations against one host at a time."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._hosts: dict[str, threading.Semaphore] = defaultdict(
            lambda: threading.BoundedSemaphore(self.limit)
        )

    def slot(self, host: str) -> threading.Semaphore:
        with self._lock:
            return self._hosts[host]


def check(
    settings: Settings,
    states: Sequence[RepoState],
    git: GitClient | None = None,
    keeps: dict[str, dict[str, bool]] | None = None,
) -> RefreshOutcome:
    """Ask every remote in `states` for its refs (and its wiki's, when kept) and sort them;
    `keeps` are the sources' choices (FleetStore.keeps). Records nothing."""
    git = git or GitClient(settings, log)
    limiter = _HostLimiter(settings.host_concurrency)
    outcome = RefreshOutcome(checked=len(states))
    todo: list[tuple[RepoState, RepoRef]] = []
    for state in states:
        try:
            ref = parse_repo_url(state.repo_url, settings.allowed_schemes, settings.allowed_hosts)
        except InvalidRepoUrl as exc:
            outcome.failed.append((state.repo_id, str(exc)))
            continue
        todo.append((state, ref))

    def one(item: tuple[RepoState, RepoRef]) -> None:
        state, ref = item
        keep = settings.keep.choose((keeps or {}).get(state.source_id or "", {}))
        with limiter.slot(host_key(ref)):
            try:
                digest = _remote_digest(git, ref)
            except RepoNotFound as exc:
                # Confirmation: a second answer, not one failed request, makes a repository gone.
                try:
                    digest = _remote_digest(git, ref)
                except RepoNotFound:
                    outcome.gone.append(state.repo_id)
                    return
                except ArchiveError:
                    outcome.failed.append((state.repo_id, mask_secrets(str(exc))))
                    return
            except ArchiveError as exc:
                outcome.failed.append((state.repo_id, mask_secrets(str(exc))))
                return
            try:
                wiki = _wiki_digest(git, ref) if keep.wiki else None
            except ArchiveError as exc:
                outcome.failed.append((state.repo_id, f"its wiki: {mask_secrets(str(exc))}"))
                return
        stamp = state.forge_stamp if _keeps_metadata(settings, ref, keep) else None
        seen = Seen(digest, wiki, stamp)
        if changed := seen.differs(state):
            outcome.changed.append(Change(state.repo_id, ref.url, seen, changed, state.source_id))
        else:
            outcome.unchanged.append(state.repo_id)

    hosts = len({host_key(ref) for _, ref in todo})
    workers = min(MAX_WORKERS, settings.host_concurrency * max(1, hosts))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="refresh") as pool:
        list(pool.map(one, todo))
    outcome.changed.sort(key=lambda c: c.repo_id)
    return outcome


def _remote_digest(git: GitClient, ref: RepoRef) -> str:
    return refs_digest(git.ls_remote(ref).refs)


def _wiki_digest(git: GitClient, ref: RepoRef) -> str:
    """The wiki's refs digest; that of no refs when the forge has no wiki for the repository
    (as the archive run records it)."""
    try:
        return _remote_digest(git, wiki_ref(ref))
    except RepoNotFound:
        return refs_digest({})


def _keeps_metadata(settings: Settings, ref: RepoRef, keep: Keep) -> bool:
    return wanted(settings, forge_of(ref, settings), keep.metadata) is None


def refresh(
    settings: Settings,
    fleet: FleetStore,
    at: datetime,
    repo_ids: Sequence[str] | None = None,
    limit: int = 10_000,
    git: GitClient | None = None,
) -> RefreshOutcome:
    """Check `repo_ids` (else the due repositories, at most `limit`) and record what was seen."""
    outcome = plan_refresh(settings, fleet, at, repo_ids, limit, git)
    record_refresh(fleet, at, outcome)
    return outcome


def plan_refresh(
    settings: Settings,
    fleet: FleetStore,
    at: datetime,
    repo_ids: Sequence[str] | None = None,
    limit: int = 10_000,
    git: GitClient | None = None,
) -> RefreshOutcome:
    """`check` `repo_ids` (else the due repositories, at most `limit`); records nothing."""
    if repo_ids is not None:
        states = fleet.get(repo_ids)
    else:
        states = fleet.due(due_before(at, settings.refresh_interval_h), limit)
    return check(settings, states, git, fleet.keeps())


def record_refresh(fleet: FleetStore, at: datetime, outcome: RefreshOutcome) -> None:
    """Every checked repository gets `last_checked_at`; failures and `gone` are marked."""
    fleet.record_checks(
        at,
        unchanged=outcome.unchanged,
        changed=[c.repo_id for c in outcome.changed],
        failed=[repo_id for repo_id, _ in outcome.failed],
        gone=outcome.gone,
    )
    for repo_id, reason in outcome.failed:
        log.warning("refresh of %s failed: %s", repo_id, reason)


def publish_changes(
    settings: Settings,
    lineage: LineageStore,
    gateway: KafkaGateway,
    changes: Sequence[Change],
    at: datetime,
    keeps: dict[str, dict[str, bool]] | None = None,
) -> list[Change]:
    """Request a run for each change through `pendientes`, like `repovault submit`; a change
    already requested (same refs, same request id) is not published again. Returns those
    published."""
    requests = RequestLifecycle(lineage, gateway, settings.topics)
    published = []
    for change in changes:
        if lineage.get(change.request_id) is not None:
            continue
        keep = (keeps or {}).get(change.source_id or "")
        requests.queue(
            NewRequest(change.repo_url, change.repo_id, REFRESH_SOURCE, change.request_id, at, keep)
        )
        published.append(change)
    return published
