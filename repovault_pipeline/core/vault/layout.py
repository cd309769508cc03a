"""Where snapshots live in a repository's bucket (docs/contract.md, "Object layout"): the key
names, the `Layout` of the code's snapshots and of its wiki's, and snapshot ids."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

from repovault_pipeline.core.common.errors import ArchiveError
from repovault_pipeline.core.vault.records import Manifest, SnapshotRecord

LATEST_KEY = "latest.json"
SNAPSHOTS = "snapshots/"
MANIFEST = "manifest.json"
BUNDLE = "repo.bundle"
TREE_INDEX = "tree.json"
MAX_CLOCK_AHEAD_S = 300  # a previous snapshot dated further ahead is a clock fault, not a wait

M = TypeVar("M", bound=SnapshotRecord)


@dataclass(frozen=True)
class Layout(Generic[M]):
    """Where one series of snapshots lives in the bucket, and the model of its manifests: the
    repository's own at the root (with `tree/` of HEAD), its wiki under `wiki/` (bundle and
    manifest only), its forge metadata under `metadata/` (sources/metadata/, whose manifests
    the vault reads only for their id and encryption). All follow
    the same rules: manifest last, then `latest.json`, retention."""

    manifest: type[M]
    prefix: str = ""
    tree: bool = True

    @property
    def latest_key(self) -> str:
        return f"{self.prefix}{LATEST_KEY}"

    @property
    def snapshots(self) -> str:
        return f"{self.prefix}{SNAPSHOTS}"

    def snapshot_key(self, snapshot_id: str, name: str) -> str:
        return f"{self.snapshots}{snapshot_id}/{name}"


CODE = Layout(Manifest)
WIKI = Layout(Manifest, "wiki/", tree=False)
METADATA = Layout(SnapshotRecord, "metadata/", tree=False)


def snapshot_key(snapshot_id: str, name: str) -> str:
    return CODE.snapshot_key(snapshot_id, name)


def stamp(snapshot_id: str) -> str:
    """The UTC time a snapshot id starts with, as written (`yyyymmddTHHMMSSZ`)."""
    return snapshot_id.split("-", 1)[0]


def new_snapshot_id(head_commit: str, previous: str | None = None) -> str:
    """`<UTC yyyymmddTHHMMSSZ>-<12 hex of HEAD>`, strictly after `previous` so that ids sort in
    the order snapshots were taken (two runs within one second wait for the next). A `previous`
    dated more than MAX_CLOCK_AHEAD_S ahead (a writer with a fast clock) is an ArchiveError
    saying so, not a wait until that date."""
    while True:
        now = datetime.now(UTC)
        taken = f"{now:%Y%m%dT%H%M%SZ}"
        if previous is None or taken > stamp(previous):
            return f"{taken}-{head_commit[:12]}"
        ahead = _stamp_time(previous) - now
        if ahead.total_seconds() > MAX_CLOCK_AHEAD_S:
            raise ArchiveError(
                f"the latest snapshot {previous} is dated {ahead.total_seconds() / 3600:.1f} h "
                "ahead of this host's clock: "
                "the clock of the host that wrote it (or of this one) is wrong; fix the clocks "
                "(NTP), then delete that snapshot or wait until its date; nothing was written"
            )
        time.sleep(1.05 - datetime.now(UTC).microsecond / 1e6)


def taken_at(snapshot_id: str) -> datetime | None:
    """The UTC time a snapshot id starts with; None for an id RepoVault did not write."""
    try:
        return datetime.strptime(stamp(snapshot_id), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def _stamp_time(snapshot_id: str) -> datetime:
    # Not a snapshot id RepoVault wrote: wait as for any other.
    return taken_at(snapshot_id) or datetime.now(UTC)
