"""Kafka messages (docs/contract.md, "Kafka messages") as pydantic models: the request on
`pendientes` (`RequestMessage`) and the status event on `en_proceso` / `completados`
(`StatusEvent`); the operator events on `rechazados` are in `dead_letters`. docs/schemas/
holds their JSON Schemas (`python -m repovault_pipeline.schemas`).

Each model is the one definition of its message: the functions below build one and encode it
(`Message.encode`), and readers validate with it. Unknown fields are ignored on read, so a
message from a newer writer still reads."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    StrictStr,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import ErrorDetails

from repovault_pipeline.core.common.identity import RepoRef, parse_repo_url
from repovault_pipeline.core.common.redact import mask_and_cut, mask_secrets
from repovault_pipeline.core.common.settings import KEEP_CHOICES, Settings, keep_choices
from repovault_pipeline.core.lineage.requests import reasons_line
from repovault_pipeline.core.lineage.tables import SOURCE_LABEL

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_REQUEST_ID_REASON = "request_id must be 1-64 letters, digits or ._:-"
_MESSAGE_NAMESPACE = uuid.UUID("0b3c9a52-7f0e-4c8e-8d7e-3f0a6a1c2b77")
_JSON_TYPES = {list: "array", int: "number", float: "number", bool: "boolean", type(None): "null"}
_BARE_OR_JSON = "send JSON with repo_url, or a bare URL string"

# A timestamp as every message writes it: `datetime.isoformat()` (`+00:00`, not `Z`).
IsoTime = Annotated[
    datetime,
    PlainSerializer(datetime.isoformat, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class RejectedMessage(ValueError):
    """A message that cannot become a run; `str()` is the reason sent to `rechazados`."""


class Message(BaseModel):
    """What every message shares: fields it does not name are ignored on read, and `encode`
    writes the value published (`json.dumps` of its fields, in the order the model names them;
    text stays as it is, so a lone surrogate becomes a `\\u` escape and never an error)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    def encode(self) -> bytes:
        return json.dumps(self.model_dump(mode="json")).encode()


# --- `pendientes` -----------------------------------------------------------------------------


def _request_id_or_fallback(raw: object, info: ValidationInfo) -> object:
    """No request_id (or an empty one): the one derived from the record (`message_request_id`)."""
    return raw or (info.context or {}).get("fallback_request_id")


def _usable_request_id(raw: str) -> str:
    if not _REQUEST_ID.match(raw):
        raise ValueError(_REQUEST_ID_REASON)
    return raw


def _label(raw: str) -> str:
    if not SOURCE_LABEL.match(raw):
        raise ValueError(_source_reason(raw))
    return raw


def _timestamp(raw: object) -> datetime | None:
    """An ISO 8601 text as a UTC time (naive: taken as UTC); a datetime (a writer's) as given."""
    if raw is None or isinstance(raw, datetime):
        return raw
    try:
        stamp = datetime.fromisoformat(str(raw))
        return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)
    except (ValueError, OverflowError):  # not a timestamp, or one UTC cannot hold (year 1-)
        raise ValueError("requested_at is not an ISO 8601 timestamp") from None


def _source_reason(raw: object) -> str:
    return (
        f"source {mask_and_cut(str(raw), 20)!r} is not a label: give 1-16 letters, digits or ._- "
        "(e.g. kafka, crm)"
    )


class RequestMessage(Message):
    """A `pendientes` value: archive `repo_url`. Instead of this object, a bare URL string is a
    request too. `request_id` absent, the one derived from the record (the same on every
    replay); `source` absent, `kafka`; `keep` (which extras the run keeps, any subset, what it
    leaves out follows the settings) and `force` (a fresh full snapshot even when the refs did
    not move) are written only when given."""

    request_id: Annotated[
        StrictStr, BeforeValidator(_request_id_or_fallback), AfterValidator(_usable_request_id)
    ] = Field(None, validate_default=True, json_schema_extra={"pattern": _REQUEST_ID.pattern})
    repo_url: StrictStr
    source: Annotated[
        StrictStr, BeforeValidator(lambda raw: raw or "kafka"), AfterValidator(_label)
    ] = Field(
        "kafka",  # SOURCE_LABEL, in the syntax of JSON Schema
        json_schema_extra={"pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,15}$"},
    )
    requested_at: Annotated[IsoTime | None, BeforeValidator(_timestamp)] = None
    keep: Annotated[
        dict[str, bool],
        BeforeValidator(keep_choices),
        WithJsonSchema(
            {
                "type": "object",
                "properties": {name: {"type": "boolean"} for name in KEEP_CHOICES},
                "additionalProperties": False,
            }
        ),
    ] = Field(default_factory=dict, exclude_if=lambda keep: not keep)
    force: StrictBool = Field(False, exclude_if=lambda force: not force)


class PendingRequest(RequestMessage):
    """A request read from `pendientes`, validated against the settings: ready to become a run.
    `ref` is the repository its `repo_url` names (`parse_repo_url`)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    ref: RepoRef = Field(None, exclude=True, validate_default=True)

    @field_validator("ref", mode="plain")
    @classmethod
    def _locate(cls, _: object, info: ValidationInfo) -> RepoRef | None:
        """The URL's verdict, when it is a string at all (else `repo_url`'s error says why)."""
        url, settings = info.data.get("repo_url"), (info.context or {})["settings"]
        if url is None:
            return None
        return parse_repo_url(url, settings.allowed_schemes, settings.allowed_hosts)


# When a message has several faults, the reason given is the first of these that fails.
_CHECKS = ("repo_url", "request_id", "source", "ref", "keep", "force", "requested_at")
# The reason of a field whose value has the wrong JSON type (or is missing), from that value.
_TYPE_REASONS = {
    "repo_url": lambda _: "JSON request has no repo_url string",
    "request_id": lambda _: _REQUEST_ID_REASON,
    "source": _source_reason,
    "force": lambda raw: f"force must be true or false, not {json.dumps(raw)[:20]}",
}


def _reason(errors: list[ErrorDetails]) -> str:
    """The one line a rejected request is told: the first failed check of `_CHECKS`."""
    first = min(errors, key=lambda e: _CHECKS.index(str(e["loc"][0])))
    if first["type"] == "value_error":  # a check of ours: its message is the reason
        return str(first["ctx"]["error"])
    return _TYPE_REASONS[str(first["loc"][0])](first["input"])


def message_request_id(topic: str, partition: int, offset: int, timestamp: int) -> str:
    """A request id for a message that brings none: stable, so a replay finds the same row. The
    record's timestamp is part of it because offsets restart at 0 when a log is reset (a broker
    restarted empty, a recreated topic): a new message at an old offset is a new request."""
    return str(uuid.uuid5(_MESSAGE_NAMESPACE, f"{topic}:{partition}:{offset}:{timestamp}"))


def request_message(
    request_id: str,
    repo_url: str,
    source: str,
    requested_at: datetime,
    keep: dict[str, bool] | None = None,
    force: bool = False,
) -> bytes:
    """The `pendientes` value of a request RepoVault makes itself (submit, refresh, ...)."""
    return RequestMessage(
        request_id=request_id,
        repo_url=repo_url,
        source=source,
        requested_at=requested_at,
        keep=keep or {},
        force=force,
    ).encode()


def parse_request(
    value: bytes | None, fallback_request_id: str, settings: Settings
) -> PendingRequest:
    """A `pendientes` value (the contract's JSON, or a bare URL string) as a validated request."""
    fields = _request_fields(value)
    try:
        return PendingRequest.model_validate(
            fields, context={"fallback_request_id": fallback_request_id, "settings": settings}
        )
    except ValidationError as exc:
        raise RejectedMessage(_reason(exc.errors())) from None


def _request_fields(value: bytes | None) -> dict[str, Any]:
    """The JSON object of a value, or `{"repo_url": ...}` of a bare URL string."""
    if not value or not value.strip():
        raise RejectedMessage(f"empty message: {_BARE_OR_JSON}")
    try:
        text = value.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise RejectedMessage("message is not UTF-8 text: send JSON or a bare URL string") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        if text.startswith(("{", "[", '"')):
            raise RejectedMessage(f"malformed JSON ({exc.msg} at char {exc.pos})") from None
        doc = text  # a bare URL
    if isinstance(doc, dict):
        return doc
    if not isinstance(doc, str):
        raise RejectedMessage(
            f"JSON {_JSON_TYPES.get(type(doc), 'value')} is not a request: send an object "
            "with repo_url, or a bare URL string"
        )
    if not doc:
        raise RejectedMessage(f"empty message: {_BARE_OR_JSON}")
    return {"repo_url": doc}


def claimed_request_id(value: bytes | None) -> str | None:
    """The request_id a rejected message carried, if it is usable as one."""
    try:
        doc = json.loads(value or b"")
    except (ValueError, RecursionError):  # not JSON (UnicodeDecodeError is a ValueError)
        return None
    rid = doc.get("request_id") if isinstance(doc, dict) else None
    return rid if isinstance(rid, str) and _REQUEST_ID.match(rid) else None


# --- `en_proceso`, `completados` --------------------------------------------------------------


class StatusEvent(Message):
    """An `en_proceso` / `completados` value. `reasons` (name -> detail) say why a `partial`
    request is partial; a request can have a second `completados` event when a part that runs
    after the first one fails (docs/contract.md): the last one is the truth."""

    request_id: str
    repo_id: str
    run_id: str | None
    status: str
    at: IsoTime
    snapshot_id: str | None = None
    head_commit: str | None = None
    error: str | None = None
    reasons: dict[str, str] = Field(default_factory=dict)


def status_event(
    request_id: str,
    repo_id: str,
    run_id: str | None,
    status: str,
    *,
    snapshot_id: str | None = None,
    head_commit: str | None = None,
    error: str | None = None,
    reasons: dict[str, str] | None = None,
    at: datetime | None = None,
) -> bytes:
    """The value of a `StatusEvent`, secrets masked, `at` now unless given. Like the row's, the
    event's `error` of a partial request is its reasons in one line."""
    error = error or (reasons_line(reasons) if reasons else None)
    return StatusEvent(
        request_id=request_id,
        repo_id=repo_id,
        run_id=run_id,
        status=status,
        at=at or datetime.now(UTC),
        snapshot_id=snapshot_id,
        head_commit=head_commit,
        error=mask_secrets(error) if error else None,
        reasons={k: mask_secrets(v) for k, v in (reasons or {}).items()},
    ).encode()
