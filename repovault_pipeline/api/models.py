"""Every body the API takes and every answer it gives, as pydantic models: the OpenAPI document
(and so schemathesis) checks the answers against these. Answers forbid fields the model does not
name, so a field added in core/ without its model fails loudly instead of vanishing; routes
serialise with `exclude_unset`, so a field an answer never had stays absent (not `null`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..core.common.settings import KEEP_CHOICES


class RequestsBody(BaseModel):
    """`POST /api/requests`: `{"urls": [URL, ...], "keep": {...}, "force": false}`, 1 to 1,000
    URLs; `keep` is optional, as in `repovault submit --[no-]lfs --[no-]wiki --[no-]metadata`;
    `"force": true` writes a fresh full snapshot even if nothing changed (repairs a damaged
    one), as `repovault submit --force`."""

    urls: list[str]
    keep: dict[str, bool] | None = Field(
        None,
        description=f"what the runs keep beside the history, any of {', '.join(KEEP_CHOICES)} "
        "(true or false); what it leaves out follows REPOVAULT_KEEP_*",
        examples=[{"lfs": False, "wiki": True}],
    )
    force: bool = False


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Accepted(Answer):
    request_id: str
    repo_id: str
    repo_url: str


class RequestsAccepted(Answer):
    """202 of `POST /api/requests`: one request per URL, and `keep` when it was given."""

    requests: list[Accepted]
    keep: dict[str, bool] | None = None


class RequestRow(Answer):
    """A row of `repo_requests`, timestamps in ISO 8601."""

    request_id: str
    repo_url: str
    repo_id: str | None
    source: str
    status: str
    creation_timestamp: str
    inyector_timestamp: str | None
    worker_start_timestamp: str | None
    worker_finishing_timestamp: str | None
    run_id: str | None
    snapshot_id: str | None
    head_commit: str | None
    bytes_uploaded: int | None
    error: str | None
    reasons: dict[str, str] | None = None
    keep: dict[str, bool] | None = None
    force: bool = False


class RequestPage(Answer):
    requests: list[RequestRow]
    limit: int
    offset: int


class StoredBytes(Answer):
    bundles: int
    tree: int
    lfs: int
    wiki: int
    metadata: int
    total: int


class Repository(Answer):
    """An archived repository, its latest snapshot and what it takes in the vault."""

    repo_id: str
    bucket: str
    snapshot_id: str
    head_commit: str | None
    default_branch: str | None
    bundle_bytes: int
    tree_files: int
    tree_bytes: int
    stored_bytes: StoredBytes
    created_at: str
    warning: str | None  # latest.json damaged: this is the newest complete one


class Repositories(Answer):
    repositories: list[Repository]


class SnapshotInfo(Answer):
    """One complete snapshot; the fields its kind has (`core.catalog.SnapshotInfo`)."""

    snapshot_id: str
    created_at: str
    head_commit: str | None = None
    refs: int | None = None
    bundle_bytes: int | None = None
    tree_files: int | None = None
    records: dict[str, int] | None = None
    bytes: int | None = None
    full: bool | None = None


class Series(Answer):
    latest: str | None
    snapshots: list[SnapshotInfo]
    warning: str | None


class RepositorySnapshots(Series):
    """The code's series at the top level, the wiki's and the metadata's beside it."""

    repo_id: str
    bucket: str
    wiki: Series
    metadata: Series


class Verification(Answer):
    """A `restorable` check asked for over the API (`core.verifications.Verification`)."""

    verify_id: str
    repo_id: str
    snapshot_id: str | None
    status: str
    requested_by: str
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    run_id: str | None = None
    verdict: dict[str, Any] | None = None
    error: str | None = None


class VerifyAccepted(Verification):
    """202 of `POST .../verify`: the check, whether it is new, and where to read it."""

    new: bool
    url: str


class Stats(Answer):
    """The `vault_stats` figures (`core.stats.VaultStats`)."""

    at: str
    figures: dict[str, int | float]
    failures_24h: dict[str, int]
    largest: list[dict[str, Any]]
    past_refresh_interval: list[dict[str, Any]]


class Health(Answer):
    status: str
    problems: list[str] | None = None
