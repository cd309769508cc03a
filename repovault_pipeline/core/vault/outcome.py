"""What an archive run did (`ArchiveResult`) and the status it gives the request: the reasons
a request ends `partial` that the vault itself finds (LFS objects missing, the wiki failed)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from repovault_pipeline.core.vault import lfs
from repovault_pipeline.core.vault.gitops import refs_digest
from repovault_pipeline.core.vault.records import LfsSummary

if TYPE_CHECKING:
    from repovault_pipeline.core.vault.prepare import Prepared

# Why a request is `partial`: its code snapshot is stored, a part it asked to keep is not.
LFS_MISSING, WIKI_FAILED = "lfs_missing", "wiki_failed"


def final_status(outcome: str, reasons: Mapping[str, str] | None) -> str:
    """A run's status: `partial` when any part it was asked to keep is missing, whatever the
    code snapshot's outcome (`completed`, `unchanged`)."""
    return "partial" if reasons else outcome


@dataclass
class ArchiveResult:
    """What a run did, for lineage, metadata and the CLI."""

    repo_id: str
    repo_url: str
    bucket: str
    outcome: str  # of the code snapshot: "completed" or "unchanged"
    snapshot_id: str | None
    head_commit: str
    default_branch: str | None
    bytes_uploaded: int = 0
    files_uploaded: int = 0
    files_deleted: int = 0
    tree_files: int = 0
    tree_bytes: int = 0
    bundle_size: int = 0
    snapshots_deleted: int = 0
    clone_s: float = 0.0
    upload_s: float = 0.0
    duration_s: float = 0.0
    refs_digest: str | None = None  # of the refs the latest snapshot holds: refresh compares
    lfs_objects: int = 0
    lfs_bytes: int = 0
    lfs_uploaded: int = 0
    lfs_missing: int = 0
    keep: dict[str, bool] = field(default_factory=dict)
    wiki_outcome: str | None = None  # completed, unchanged, absent, failed; None: not kept
    wiki_snapshot_id: str | None = None
    wiki_refs_digest: str | None = None  # of the wiki's refs (none: no wiki); None: not kept
    fresh: str | None = None  # why a snapshot was written although nothing changed
    lfs_missing_paths: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)  # parts kept missing: name -> detail

    @classmethod
    def starting(cls, prepared: Prepared) -> ArchiveResult:
        """The result of a run that writes nothing; the writes update it."""
        result = cls(
            repo_id=prepared.repo_id,
            repo_url=prepared.repo_url,
            bucket=prepared.bucket,
            outcome="unchanged" if prepared.unchanged else "completed",
            snapshot_id=prepared.snapshot_id,
            head_commit=prepared.head_commit,
            default_branch=prepared.default_branch,
            clone_s=round(prepared.clone_s, 3),
            refs_digest=refs_digest(prepared.refs),
            # Recorded as chosen; metadata left to REPOVAULT_KEEP_METADATA is not a choice here.
            keep={k: v for k, v in asdict(prepared.keep).items() if v is not None},
        )
        wiki = prepared.wiki
        if prepared.keep.wiki:
            result.wiki_outcome = "unchanged" if prepared.wiki_found else "absent"
            result.wiki_snapshot_id = wiki.snapshot_id if wiki else None
            result.wiki_refs_digest = refs_digest(wiki.refs if wiki else {})
        if prepared.wiki_error:
            result.wiki_outcome = "failed"
            result.reasons[WIKI_FAILED] = prepared.wiki_error
        return result

    @property
    def status(self) -> str:
        """The request's status: `partial` when a part it asked to keep is missing."""
        return final_status(self.outcome, self.reasons)

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "status": self.status}

    def held_lfs(self, summary: LfsSummary | None) -> None:
        """`lfs_missing` when the snapshot the request ends with lacks LFS objects its history
        points to (`summary`: its manifest's `lfs`; None: LFS objects not kept)."""
        self.lfs_missing = summary.missing if summary else 0
        self.lfs_missing_paths = list(summary.missing_paths) if summary else []
        if self.lfs_missing:
            self.reasons[LFS_MISSING] = lfs.missing_detail(self.lfs_missing, self.lfs_missing_paths)
