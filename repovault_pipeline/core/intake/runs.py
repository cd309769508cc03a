"""How a request travels with its run: the run tags, the URL a run clones, and what the
run recorded of its outcome (`RunHistory`, read back by reconcile).

Kept free of Dagster so the sensor, the schedule, the CLI and the ops agree on one reading.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol
from urllib.parse import urlsplit

from repovault_pipeline.core.common.errors import ArchiveError
from repovault_pipeline.core.common.identity import InvalidRepoUrl, RepoRef, parse_repo_url
from repovault_pipeline.core.common.settings import Keep, Settings, keep_choices
from repovault_pipeline.core.vault.outcome import ArchiveResult

TAG_REPO_URL = "repovault/repo_url"
TAG_REQUEST_ID = "repovault/request_id"
TAG_SOURCE = "repovault/source"
TAG_REQUESTED_AT = "repovault/requested_at"
# The git host of the run: the instance's run queue limits runs per host with it
# (tag_concurrency_limits in dagster.yaml, like REPOVAULT_HOST_CONCURRENCY for refresh checks).
TAG_HOST = "repovault/host"

TAG_KEEP = "repovault/keep"
# `true`: write a fresh full snapshot even when the remote's refs equal the latest snapshot's
# (`repovault submit --force`, `"force": true`; set it in the launchpad to repair a snapshot).
TAG_FORCE = "repovault/force"
# A run of the `restorable` check asked for over the API (core.verifications): the check's id,
# and the snapshot it checks when not the latest.
TAG_VERIFY_ID = "repovault/verify_id"
TAG_VERIFY_SNAPSHOT = "repovault/verify_snapshot"
DAGSTER_BACKFILL_TAG = "dagster/backfill"
# Set by Dagster on a failed run its run retries will re-execute (instance `run_retries`).
TAG_WILL_RETRY = "dagster/will_retry"
DAGSTER_PARTITION_TAG = "dagster/partition"
# Run monitoring fails a run past this many seconds (Dagster's MAX_RUNTIME_SECONDS_TAG).
TAG_MAX_RUNTIME = "dagster/max_runtime"
_RUN_REQUEST_NAMESPACE = uuid.UUID("5b0f3c3e-6c1b-4b8e-9a53-3f7d1f0d2a11")


@dataclass(frozen=True)
class RunRequestInfo:
    """The request behind a run: from its tags, or made up for a run started in the UI."""

    request_id: str
    source: str
    repo_url: str | None
    requested_at: datetime | None
    keep_tag: str | None = None  # the request's `keep`, as JSON
    force_tag: str | None = None

    def keep_for(self, settings: Settings) -> Keep:
        """What this run keeps: the settings' defaults with the request's choices. The tag can
        be edited in the UI, so it is checked like a request's `keep`."""
        if self.keep_tag is None:
            return settings.keep
        try:
            return settings.keep.choose(keep_choices(json.loads(self.keep_tag)))
        except ValueError as exc:  # JSONDecodeError is a ValueError
            raise ArchiveError(
                f"run tag {TAG_KEEP}={self.keep_tag[:40]!r} is unusable: {exc}"
            ) from None

    def forced(self) -> bool:
        """The request asks for a fresh snapshot. The tag can be typed in the launchpad, so
        anything but `true` or `false` is refused, not read as either."""
        tag = self.force_tag or "false"
        if tag.strip().lower() not in ("true", "false"):
            raise ArchiveError(f"run tag {TAG_FORCE}={tag[:40]!r} is unusable: give true or false")
        return tag.strip().lower() == "true"


def request_tags(
    request_id: str,
    repo_url: str,
    source: str,
    requested_at: datetime,
    keep: dict[str, bool] | None = None,
    force: bool = False,
) -> dict[str, str]:
    tags = {
        TAG_REQUEST_ID: request_id,
        TAG_REPO_URL: repo_url,
        TAG_SOURCE: source,
        TAG_REQUESTED_AT: requested_at.isoformat(),
        TAG_HOST: url_host(repo_url),
    }
    if keep:
        tags[TAG_KEEP] = json.dumps(keep, sort_keys=True)
    if force:
        tags[TAG_FORCE] = "true"
    return tags


def url_host(repo_url: str) -> str:
    """`host[:port]` of a validated clone URL (scp-like `git@host:path` too)."""
    if "://" in repo_url:
        return urlsplit(repo_url).netloc.rsplit("@", 1)[-1].lower()
    return repo_url.rsplit("@", 1)[-1].split(":", 1)[0].lower()


def repo_id_host(repo_id: str) -> str:
    """`host[:port]` of a `repo_id`: the same value `url_host` gives for every URL that names
    it (a run's URL must name its partition), so a run's host is known from its partition."""
    return repo_id.split("/", 1)[0].lower()


def missing_run_tags(tags: Mapping[str, str], settings: Settings) -> dict[str, str]:
    """The tags every run of the archive graph carries and this one lacks: its maximum runtime
    (REPOVAULT_RUN_TIMEOUT_S) and its git host (from the partition), so run monitoring and the
    run queue's per-host limit apply however the run was launched (UI, backfill, CLI)."""
    missing: dict[str, str] = {}
    if TAG_MAX_RUNTIME not in tags:
        missing[TAG_MAX_RUNTIME] = str(settings.run_timeout_s)
    partition = tags.get(DAGSTER_PARTITION_TAG)
    if TAG_HOST not in tags and partition:
        missing[TAG_HOST] = repo_id_host(partition)
    return missing


def request_of_run(tags: Mapping[str, str], run_id: str) -> RunRequestInfo:
    """Read the request from run tags; a run without them gets a request id derived from its
    run id, so every step of the run (and its failure hook) updates the same row."""
    requested_at = tags.get(TAG_REQUESTED_AT)
    if TAG_REQUEST_ID in tags:
        source = tags.get(TAG_SOURCE, "ui")
        request_id = tags[TAG_REQUEST_ID]
    else:
        source = "backfill" if DAGSTER_BACKFILL_TAG in tags else "ui"
        request_id = str(uuid.uuid5(_RUN_REQUEST_NAMESPACE, run_id))
    return RunRequestInfo(
        request_id=request_id,
        source=source,
        repo_url=tags.get(TAG_REPO_URL),
        requested_at=datetime.fromisoformat(requested_at) if requested_at else None,
        keep_tag=tags.get(TAG_KEEP),
        force_tag=tags.get(TAG_FORCE),
    )


def default_clone_url(repo_id: str) -> str:
    return f"https://{repo_id}.git"


def default_url_hint(repo_id: str) -> str:
    """Said with every failure of a run that cloned the default URL: a partition added in the UI
    has no URL of its own, and this is how an operator gives it one."""
    return (
        f"no URL is known for {repo_id}, so {default_clone_url(repo_id)} was cloned; launch the "
        f"partition with run tag {TAG_REPO_URL}=<clone URL> (launchpad: Edit tags), or request it "
        "with `repovault submit <clone URL>`"
    )


def resolve_clone_ref(repo_id: str, url: str | None, settings: Settings) -> RepoRef:
    """The URL a run clones: its request's, else the last one recorded (`url`), else
    https://<repo_id>.git. It is validated again here (a tag can be edited in the UI) and must
    name the run's partition.
    """
    url = url or default_clone_url(repo_id)
    ref = parse_repo_url(url, settings.allowed_schemes, settings.allowed_hosts)
    if ref.repo_id != repo_id:
        raise InvalidRepoUrl(f"the URL names repository {ref.repo_id}, not partition {repo_id}")
    return ref


def outcome_metadata(result: ArchiveResult) -> dict[str, str | int]:
    """What `upload_snapshot` records in its output metadata for reconcile to read back."""
    return {
        "outcome": result.outcome,
        "snapshot_id": result.snapshot_id or "",
        "head_commit": result.head_commit,
        "bytes_uploaded": result.bytes_uploaded,
        "reasons": json.dumps(result.reasons, sort_keys=True),
    }


@dataclass(frozen=True)
class RecordedOutcome:
    """The outcome a run's `upload_snapshot` step recorded."""

    outcome: str
    snapshot_id: str | None
    head_commit: str | None
    bytes_uploaded: int | None
    reasons: dict[str, str] = field(default_factory=dict)  # parts missing: the run is partial

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, object]) -> RecordedOutcome | None:
        outcome = metadata.get("outcome")
        if outcome not in ("completed", "unchanged"):
            return None
        size = metadata.get("bytes_uploaded")
        reasons = json.loads(str(metadata.get("reasons") or "{}"))
        return cls(
            str(outcome),
            str(metadata.get("snapshot_id") or "") or None,
            str(metadata.get("head_commit") or "") or None,
            int(size) if isinstance(size, int | float) else None,
            reasons if isinstance(reasons, dict) else {},
        )


class RunHistory(Protocol):
    """What reconcile needs to know of the orchestrator's runs."""

    def status(self, run_id: str) -> str | None:
        """The run's status (`SUCCESS`, `FAILURE`, `CANCELED`, `STARTED`...); None: no such run."""

    def recorded_outcome(self, run_id: str) -> RecordedOutcome | None:
        """What the run's `upload_snapshot` step recorded, if it got that far."""

    def failure_reason(self, run_id: str) -> str | None:
        """Why the run failed, from its failure events."""

    def runs_of_request(self, request_id: str) -> list[str]:
        """The ids of the runs tagged with this request id."""

    def fail(self, run_id: str, reason: str) -> None:
        """Mark a run whose worker is gone failed, with `reason`."""
