"""Every body the API takes and every answer it gives, as pydantic models: the OpenAPI document
(and so schemathesis) checks the answers against these. Answers forbid fields the model does not
name, so a field added in core/ without its model fails loudly instead of vanishing; routes
serialise with `exclude_unset`, so a field an answer never had stays absent (not `null`).
An answer that carries a core record takes its fields from the record (`fields_of`)."""

from __future__ import annotations

import dataclasses
import typing
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

from ..core.common.settings import KEEP_CHOICES
from ..core.lineage import stats, verifications
from ..core.lineage.rows import Request
from ..core.vault import catalog, push


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


def fields_of(record: type) -> dict[str, Any]:
    """The fields of a core dataclass as the annotations of the answer that carries it (in a
    class body: `__annotations__ = fields_of(Record)`): the same names, types and defaults,
    each datetime written as ISO 8601 text. The answer then validates the record itself
    (`model_validate(record, from_attributes=True)`)."""
    hints = typing.get_type_hints(record)
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(record):
        kind = _AS_TEXT.get(hints[field.name], hints[field.name])
        if field.default is not dataclasses.MISSING:
            kind = Annotated[kind, Field(default=field.default)]
        elif field.default_factory is not dataclasses.MISSING:
            kind = Annotated[kind, Field(default_factory=field.default_factory)]
        fields[field.name] = kind
    return fields


# A datetime in an answer: written (and documented) as its `isoformat()` text.
IsoText = Annotated[
    datetime,
    PlainSerializer(datetime.isoformat, return_type=str),
    WithJsonSchema({"type": "string"}),
]
_AS_TEXT: dict[Any, Any] = {datetime: IsoText, datetime | None: IsoText | None}


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

    __annotations__ = fields_of(Request)


class RequestPage(Answer):
    requests: list[RequestRow]
    limit: int
    offset: int


class StoredBytes(Answer):
    __annotations__ = {**fields_of(stats.StoredSizes), "total": int}


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

    __annotations__ = fields_of(catalog.SnapshotInfo)


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

    __annotations__ = fields_of(verifications.Verification)


class VerifyAccepted(Verification):
    """202 of `POST .../verify`: the check, whether it is new, and where to read it."""

    new: bool
    url: str


class RestoreBody(BaseModel):
    """`POST /api/repositories/{repo_id}/restore`: push a snapshot to a forge, as `repovault
    restore --push URL [--create ...] [--snapshot ID] [--wiki] [--force]`."""

    model_config = ConfigDict(extra="forbid")

    push_url: str | None = Field(
        None,
        description="an empty repository to push to (https://USER:TOKEN@host/... credentials "
        "are used, never echoed); with `create` alone, the created repository's clone URL",
    )
    create: str | None = Field(
        None,
        description="create this repository (private) through the forge's API first: "
        "github:ORG/NAME, gitlab:GROUP/NAME, gitea:ORG/NAME or bitbucket:WORKSPACE/NAME",
        examples=["github:acme/restored"],
    )
    snapshot: str | None = Field(None, description="a snapshot id; default: the latest")
    wiki: bool = Field(False, description="also push the latest wiki snapshot to URL's wiki")
    force: bool = Field(
        False,
        description="overwrite a target that is not empty (its other branches and tags are "
        "deleted), or the repository the snapshot was taken from",
    )


class PushedPart(Answer):
    """The code or the wiki pushed (`core.push.PushedPart`); `url` carries no credentials."""

    __annotations__ = fields_of(push.PushedPart)


class RestorePushed(Answer):
    """200 of `POST .../restore`: what was pushed, where, and what to know."""

    repo_id: str
    code: PushedPart
    wiki: PushedPart | None = None
    created: str | None = None  # the repository `create` made (forge's full name)
    warnings: list[str]


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
