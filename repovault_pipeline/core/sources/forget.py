"""`repovault forget`: an operator removes a repository the vault should never have known (a
mistyped URL, a test): its Dagster partition, its requests and its refresh state; its stored
snapshots stay unless `purge` asks to delete them too (the empty bucket stays)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from repovault_pipeline.core.common.identity import bucket_name
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.lineage.requests import LineageStore
from repovault_pipeline.core.sources.fleet import FleetStore
from repovault_pipeline.core.vault.store import ObjectStore


class UnknownRepository(ValueError):
    """Nothing of the repository is anywhere: nothing to forget."""


@dataclass(frozen=True)
class Forgotten:
    """What `forget` did, for its report."""

    repo_id: str
    partition: bool  # the partition existed and was dropped
    requests: int  # request rows deleted
    state: bool  # its refresh state row was deleted
    source_id: str | None  # the tracked source it was listed from, which may list it again
    bucket: str
    bucket_objects: int | None  # objects in the bucket: deleted with `purge`, else kept
    purged: bool

    def lines(self) -> list[str]:
        stored = (
            f"deleted the {self.bucket_objects} objects of bucket {self.bucket} (the empty bucket "
            "stays: RepoVault's S3 policy grants no s3:DeleteBucket)"
            if self.purged
            else f"kept bucket {self.bucket} ({self.bucket_objects} objects; --purge deletes it)"
            if self.bucket_objects is not None
            else f"nothing stored in bucket {self.bucket}"
        )
        done = [
            f"{self.repo_id}: "
            + ("dropped its partition" if self.partition else "no partition")
            + f"; deleted {self.requests} requests"
            + ("; deleted its refresh state" if self.state else ""),
            f"{self.repo_id}: {stored}",
        ]
        if self.source_id:
            done.append(
                f"{self.repo_id}: tracked source {self.source_id} listed it and lists it again "
                "unless its filters leave it out (`repovault track add SOURCE --exclude GLOB`)"
            )
        return done


def forget(
    settings: Settings,
    store: ObjectStore,
    lineage: LineageStore,
    repo_id: str,
    drop_partition: Callable[[str], bool],
    *,
    purge: bool = False,
) -> Forgotten:
    """Forget `repo_id` everywhere RepoVault keeps it. `drop_partition` removes the Dagster
    partition and says whether there was one. Refuses (UnknownRepository) when there is no
    trace of it, changing nothing."""
    bucket = bucket_name(repo_id, settings.bucket_prefix)
    # A bucket an earlier `purge` emptied is no trace: only stored objects are.
    has_bucket = bucket in store.list_buckets(bucket) and any(True for _ in store.list(bucket))
    fleet = FleetStore(lineage.engine)
    partition = drop_partition(repo_id)
    known = has_bucket or fleet.get([repo_id]) or lineage.find(repo_id=repo_id, limit=1)
    if not (partition or known):
        raise UnknownRepository(
            f"RepoVault knows no repository {repo_id}: no partition, request, state or "
            "bucket; `repovault list` and `repovault status` show what it knows"
        )
    requests = lineage.forget(repo_id)
    state = fleet.forget(repo_id)
    objects = None
    if has_bucket:
        objects = store.empty_bucket(bucket) if purge else sum(1 for _ in store.list(bucket))
    return Forgotten(
        repo_id=repo_id,
        partition=partition,
        requests=requests,
        state=state is not None,
        source_id=state.source_id if state else None,
        bucket=bucket,
        bucket_objects=objects,
        purged=purge and has_bucket,
    )
