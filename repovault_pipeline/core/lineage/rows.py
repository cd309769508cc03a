"""The `repo_requests` rows: a request as the injector read it (`Injected`) and as the store
reads it back (`Request`), and the rows the store writes, where every text that could hold a
secret is masked and cut, and made storable (PostgreSQL keeps no NUL in text)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from repovault_pipeline.core.common.redact import mask_and_cut
from repovault_pipeline.core.lineage.tables import SOURCE_LABEL, repo_requests

MAX_ERROR = 2000
MAX_URL = 2000
# What PostgreSQL cannot keep in a text column: NUL, and lone surrogates (not UTF-8).
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


@dataclass(frozen=True)
class Injected:
    """A request as the injector read it (or rejected it)."""

    request_id: str
    repo_url: str
    repo_id: str | None
    source: str
    created_at: datetime
    injected_at: datetime
    error: str | None = None
    keep: dict[str, bool] | None = None  # the request's own choice of extras
    force: bool = False


@dataclass(frozen=True)
class Request:
    request_id: str
    repo_url: str
    repo_id: str | None
    source: str
    status: str
    creation_timestamp: datetime
    inyector_timestamp: datetime | None
    worker_start_timestamp: datetime | None
    worker_finishing_timestamp: datetime | None
    run_id: str | None
    snapshot_id: str | None
    head_commit: str | None
    bytes_uploaded: int | None
    error: str | None
    reasons: dict[str, str] | None = None  # of a `partial` request: name -> detail
    keep: dict[str, bool] | None = None  # its own choice of extras; None: the defaults
    force: bool = False  # a fresh full snapshot even if nothing changed

    @classmethod
    def from_row(cls, mapping: Mapping[Any, Any]) -> Request:
        reasons, keep = mapping["reasons"], mapping["keep"]
        return cls(
            **{
                **mapping,
                "reasons": json.loads(reasons) if reasons else None,
                "keep": json.loads(keep) if keep else None,
                "force": bool(mapping["force"]),
            }
        )


def injected_row(request: Injected, status: str, **extra: Any) -> dict[str, Any]:
    """The row of a request the injector read (`record_injected`, `record_rejected`)."""
    return request_row(
        request.request_id,
        request.repo_url,
        request.repo_id,
        request.source,
        status,
        request.created_at,
        inyector_timestamp=request.injected_at,
        **extra,
    )


def request_row(
    request_id: str,
    repo_url: str,
    repo_id: str | None,
    source: str,
    status: str,
    created_at: datetime,
    **extra: Any,
) -> dict[str, Any]:
    """A full row: every statement of a batch must bind the same columns."""
    row: dict[str, Any] = {c.name: None for c in repo_requests.columns}
    row.update(
        request_id=request_id,
        repo_url=storable(mask_and_cut(repo_url, MAX_URL)),
        repo_id=repo_id,
        source=checked_source(source),
        status=status,
        creation_timestamp=created_at,
        **extra,
    )
    return row


def asked_columns(keep: dict[str, bool] | None, force: bool) -> dict[str, Any]:
    """The `keep` and `force` columns of a request (NULL for what it leaves to the defaults)."""
    return {"keep": json.dumps(keep, sort_keys=True) if keep else None, "force": force or None}


def checked_source(source: str) -> str:
    if not SOURCE_LABEL.match(source):
        raise ValueError(f"request source {storable(source)[:40]!r} is not a source label")
    return source


def error_text(error: str | None) -> str | None:
    return storable(mask_and_cut(error, MAX_ERROR)) if error else None


def storable(text: str) -> str:
    """`text` as PostgreSQL can keep it: NUL and lone surrogates written as escapes (`\\x00`,
    `\\ud800`), so a third party's bytes never make a row impossible to write."""
    if not _UNSTORABLE.search(text):
        return text
    return _UNSTORABLE.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), text)


def refusal(exc: BaseException) -> str:
    """Why the database refused a row, in one line without the SQL or the row's values."""
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [""])[0]
    return f"{type(orig).__name__}: {first}"[:300]


def reasons_json(reasons: Mapping[str, str] | None) -> str | None:
    if not reasons:
        return None
    return json.dumps(
        {k: storable(mask_and_cut(v, MAX_ERROR)) for k, v in reasons.items()}, sort_keys=True
    )
