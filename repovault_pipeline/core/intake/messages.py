"""Kafka message formats (docs/contract.md, "Kafka messages"): requests on `pendientes`,
status events on `en_proceso` / `completados`, dead letters on `rechazados`."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from repovault_pipeline.core.common.identity import InvalidRepoUrl, RepoRef, parse_repo_url
from repovault_pipeline.core.common.redact import mask_and_cut, mask_secrets
from repovault_pipeline.core.common.settings import Settings, keep_choices
from repovault_pipeline.core.intake.kafka import PositionReset
from repovault_pipeline.core.lineage.requests import reasons_line
from repovault_pipeline.core.lineage.tables import SOURCE_LABEL

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_MESSAGE_NAMESPACE = uuid.UUID("0b3c9a52-7f0e-4c8e-8d7e-3f0a6a1c2b77")
MAX_ORIGINAL = 4096  # bytes of a rejected message kept in its dead letter, after masking
MAX_KEY = 256  # characters of its key
_JSON_TYPES = {list: "array", int: "number", float: "number", bool: "boolean", type(None): "null"}


class RejectedMessage(ValueError):
    """A message that cannot become a run; `str()` is the reason sent to `rechazados`."""


@dataclass(frozen=True)
class PendingRequest:
    """A request read from `pendientes`, validated: ready to become a run."""

    request_id: str
    ref: RepoRef
    source: str
    requested_at: datetime | None
    keep: dict[str, bool] = field(default_factory=dict)  # the request's choices (`keep_choices`)
    force: bool = False  # a fresh full snapshot even when the refs did not move


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
    doc: dict[str, object] = {
        "request_id": request_id,
        "repo_url": repo_url,
        "source": source,
        "requested_at": requested_at.isoformat(),
    }
    if keep:
        doc["keep"] = keep
    if force:
        doc["force"] = True
    return json.dumps(doc).encode()


def parse_request(
    value: bytes | None, fallback_request_id: str, settings: Settings
) -> PendingRequest:
    """A `pendientes` value (the contract's JSON, or a bare URL string) as a validated request."""
    if not value or not value.strip():
        raise RejectedMessage("empty message: send JSON with repo_url, or a bare URL string")
    try:
        text = value.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise RejectedMessage("message is not UTF-8 text: send JSON or a bare URL string") from None
    fields: dict | None = None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        if text.startswith(("{", "[", '"')):
            raise RejectedMessage(f"malformed JSON ({exc.msg} at char {exc.pos})") from None
        doc = text  # a bare URL
    if isinstance(doc, str):
        text = doc
    elif isinstance(doc, dict):
        fields = doc
    else:
        raise RejectedMessage(
            f"JSON {_JSON_TYPES.get(type(doc), 'value')} is not a request: send an object "
            "with repo_url, or a bare URL string"
        )
    if fields is not None:
        url = fields.get("repo_url")
        if not isinstance(url, str):
            raise RejectedMessage("JSON request has no repo_url string")
    elif not text:
        raise RejectedMessage("empty message: send JSON with repo_url, or a bare URL string")
    else:
        url, fields = text, {}
    request_id = fields.get("request_id") or fallback_request_id
    if not isinstance(request_id, str) or not _REQUEST_ID.match(request_id):
        raise RejectedMessage("request_id must be 1-64 letters, digits or ._:-")
    source = fields.get("source") or "kafka"
    if not isinstance(source, str) or not SOURCE_LABEL.match(source):
        raise RejectedMessage(
            f"source {mask_and_cut(str(source), 20)!r} is not a label: give 1-16 letters, "
            "digits or ._- (e.g. kafka, crm)"
        )
    try:
        ref = parse_repo_url(url, settings.allowed_schemes, settings.allowed_hosts)
    except InvalidRepoUrl as exc:
        raise RejectedMessage(str(exc)) from None
    try:
        keep = keep_choices(fields.get("keep"))
    except ValueError as exc:
        raise RejectedMessage(str(exc)) from None
    force = fields.get("force", False)
    if not isinstance(force, bool):
        raise RejectedMessage(f"force must be true or false, not {json.dumps(force)[:20]}")
    return PendingRequest(
        request_id, ref, source, _timestamp(fields.get("requested_at")), keep, force
    )


def _timestamp(raw: object) -> datetime | None:
    if raw is None:
        return None
    try:
        stamp = datetime.fromisoformat(str(raw))
        return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)
    except (ValueError, OverflowError):  # not a timestamp, or one UTC cannot hold (year 1-)
        raise RejectedMessage("requested_at is not an ISO 8601 timestamp") from None


def claimed_request_id(value: bytes | None) -> str | None:
    """The request_id a rejected message carried, if it is usable as one."""
    try:
        doc = json.loads(value or b"")
    except (ValueError, RecursionError):  # not JSON (UnicodeDecodeError is a ValueError)
        return None
    rid = doc.get("request_id") if isinstance(doc, dict) else None
    return rid if isinstance(rid, str) and _REQUEST_ID.match(rid) else None


def dead_letter_key(topic: str, partition: int, offset: int) -> str:
    """The `rechazados` key of the dead letter of one record: where the record is."""
    return f"{topic}:{partition}:{offset}"


def dead_letter(
    reason: str,
    value: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    request_id: str,
    key: bytes | None = None,
) -> bytes:
    """The `rechazados` value: why, where from, and the original bytes (and key) with secrets
    masked, then cut to MAX_ORIGINAL bytes (masked first, so no cut leaves half a secret)."""
    original = mask_secrets((value or b"").decode("utf-8", errors="backslashreplace"))
    kept = original.encode("utf-8", "backslashreplace")[:MAX_ORIGINAL].decode("utf-8", "ignore")
    shown_key = key.decode("utf-8", "backslashreplace") if key is not None else None
    return json.dumps(
        {
            "kind": "dead_letter",
            "reason": mask_secrets(reason),
            "request_id": request_id,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "key": mask_and_cut(shown_key, MAX_KEY) if shown_key is not None else None,
            "original": kept,
            "truncated": len(kept) < len(original),
            "rejected_at": datetime.now(UTC).isoformat(),
        }
    ).encode()


def dead_letter_identity(value: bytes) -> str | None:
    """What makes a `rechazados` record the announcement of one event (the same dead letter,
    the same position reset), or None for a value that is neither: how a retried tick finds
    what an earlier attempt already published."""
    try:
        doc = json.loads(value)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    if doc.get("kind") not in ("dead_letter", "position_reset"):
        return None
    return json.dumps([doc.get(f) for f in ("kind", "topic", "partition", "offset", "request_id")])


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
    """An `en_proceso` / `completados` value. `reasons` (name -> detail) say why a `partial`
    request is partial; a request can have a second `completados` event when a part that runs
    after the first one fails (docs/contract.md): the last one is the truth. Like the row's,
    the event's `error` of a partial request is its reasons in one line."""
    error = error or (reasons_line(reasons) if reasons else None)
    return json.dumps(
        {
            "request_id": request_id,
            "repo_id": repo_id,
            "run_id": run_id,
            "status": status,
            "at": (at or datetime.now(UTC)).isoformat(),
            "snapshot_id": snapshot_id,
            "head_commit": head_commit,
            "error": mask_secrets(error) if error else None,
            "reasons": {k: mask_secrets(v) for k, v in (reasons or {}).items()},
        }
    ).encode()


def position_reset_event(reset: PositionReset) -> bytes:
    """The `rechazados` value announcing that the injector found a stored position outside its
    partition's log and resumed elsewhere: an operator event in the style of a dead letter
    (`kind` tells them apart), so nothing is ever skipped in silence."""
    return json.dumps(
        {
            "kind": "position_reset",
            "reason": reset.reason,
            "request_id": None,
            "topic": reset.topic,
            "partition": reset.partition,
            "offset": reset.offset,
            "cause": reset.cause,
            "log_start": reset.log_start,
            "log_end": reset.log_end,
            "resumed_at": reset.resumed_at,
            "rejected_at": datetime.now(UTC).isoformat(),
        }
    ).encode()
