"""Reading a repository's forge metadata: every listing its forge offers (`Forge.feeds`), page
by page through the forge layer, keeping only the records whose digest differs from the index.

A run asks the forge only for what changed since the previous snapshot (GitHub's and Gitea's
`since`, GitLab's `updated_after`, with an overlap; a listing that cannot ask is read whole)
and keeps only records whose digest differs from the index, so a re-read after an interrupted
run stores no duplicate. What the forge refused is worded here for a metadata run: nothing of
the pass is committed, the next run continues. A listing the forge has not for this repository
(`Feed.absent`: Bitbucket's issues without an issue tracker) is noted, not a failure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from repovault_pipeline.core.common.errors import ArchiveError, TransientError
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.sources.forges.client import (
    ForgeClient,
    ForgeRefused,
    PageError,
    RateLimited,
    Unreachable,
    UnreadablePage,
    check,
)
from repovault_pipeline.core.sources.forges.forge import Forge
from repovault_pipeline.core.sources.metadata.layout import RECORD_KINDS, Index, digest

OVERLAP = timedelta(minutes=5)  # forge clocks and eventual consistency: re-read a little
Record = dict[str, Any]


class FeedAbsent(Exception):
    """The forge has no such listing for this repository (a 404 where `Feed.absent` says what
    that means, e.g. Bitbucket's "no issue tracker"): noted, not a failure."""


class MetadataClient:
    """Paged GETs and downloads against one forge's API, with what the forge refused raised as
    a metadata run reports it: `RateLimited` with the reset time, `ArchiveError` for a refused
    token or a missing repository, `TransientError` for what the next run may not meet."""

    def __init__(self, forge: Forge, settings: Settings) -> None:
        self.forge = forge
        self.client = ForgeClient(
            timeout=min(settings.git_timeout_s, 60),
            retries=3,
            backoff_s=0.5,
            user_agent="repovault-metadata",
        )

    @property
    def requests(self) -> int:
        return self.client.requests

    def pages(
        self, path_or_url: str, params: dict[str, str], absent: str | None = None
    ) -> Iterator[Record]:
        """Every record of a listing (`path_or_url` below the forge's API, or a whole URL);
        `FeedAbsent` when its first page is a 404 and `absent` says what that means."""
        url = path_or_url if "://" in path_or_url else self.forge.api + path_or_url
        read = 0
        try:
            for records in self.client.pages(self.forge, url, params, accept="application/json"):
                read += 1
                yield from records
        except (RateLimited, PageError) as exc:
            if absent and read == 0 and isinstance(exc, ForgeRefused) and exc.status == 404:
                raise FeedAbsent(absent) from None
            raise self._worded(exc, url) from None

    def download(self, url: str, dest: Path) -> tuple[str, int]:
        """Stream a release asset to `dest`; return its sha256 and size."""
        try:
            response = self.client.get(
                self.forge, url, stream=True, accept="application/octet-stream"
            )
        except requests.RequestException as exc:
            raise self._worded(Unreachable(exc, url), url) from None
        sha, size = hashlib.sha256(), 0
        with response:
            try:
                check(response, url)
            except (RateLimited, PageError) as exc:
                raise self._worded(exc, url) from None
            with dest.open("wb") as out:
                for chunk in response.iter_content(256 * 1024):
                    sha.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
        return sha.hexdigest(), size

    def _worded(self, exc: RateLimited | PageError, url: str) -> ArchiveError:
        name, path = self.forge.name, urlsplit(url).path
        if isinstance(exc, RateLimited):
            when = f"{exc.retry_at:%Y-%m-%dT%H:%M:%SZ}" if exc.retry_at else "an unknown time"
            return RateLimited(
                f"{name} API rate limit reached reading {path}; it resets at {when}. "
                "Nothing of this pass was committed; the next run continues from the last "
                "metadata snapshot (set a token to raise the limit)",
                exc.retry_at,
                exc.status,
            )
        if isinstance(exc, Unreachable):
            return TransientError(f"{name} API unreachable: {exc.reason}")
        if isinstance(exc, ForgeRefused) and exc.status in (401, 403, 404):
            hint = (
                "the token is refused"
                if exc.status == 401
                else "no such repository, or it is private: set the forge token"
            )
            return ArchiveError(f"{name} API answered {exc.status} for {path}: {hint}")
        if isinstance(exc, ForgeRefused):
            return TransientError(f"{name} API answered {exc.status} for {path}")
        if isinstance(exc, UnreadablePage):
            return ArchiveError(f"{name} API gave no list for {path}")
        return ArchiveError(f"{name} API: {exc} reading {path}")


@dataclass
class Changes:
    """What one read found: the records new or changed since the index (which it updates), and
    the ids of every record seen (a full read's deletions are what it did not see)."""

    changed: dict[str, list[Record]] = field(
        default_factory=lambda: {kind: [] for kind in RECORD_KINDS}  # ASSETS is not a kind
    )
    seen: dict[str, set[str]] = field(default_factory=dict)
    absent: list[str] = field(default_factory=list)  # what the forge has not, e.g. an issue tracker

    def keep(self, index: Index, kind: str, record: Record) -> bool:
        """Note `record` as seen; keep it (True) when its digest differs from the index."""
        key, value = str(record["id"]), digest(record)
        self.seen.setdefault(kind, set()).add(key)
        if index[kind].get(key) == value:
            return False
        index[kind][key] = value
        self.changed[kind].append(record)
        return True


def read_changes(
    reader: MetadataClient,
    project: str,
    index: Index,
    since: datetime | None,
    with_assets: Callable[[Record], Record],
) -> Changes:
    """Every feed of the forge (records updated after `since`, when a feed can ask for that),
    and the children of each changed record; a release passes `with_assets` first."""
    forge, changes = reader.forge, Changes()
    for feed in forge.feeds(project):
        params = dict(feed.params)
        if since is not None and feed.since_param:
            params[feed.since_param] = since.strftime("%Y-%m-%dT%H:%M:%SZ")
        try:
            for record in reader.pages(feed.path, params, feed.absent):
                kind = forge.kind_of(feed, record)
                if kind == "releases":
                    record = with_assets(record)
                if changes.keep(index, kind, record):
                    for child_kind, path in forge.children(project, kind, record):
                        for child in reader.pages(path, {}):
                            changes.keep(index, child_kind, child)
        except FeedAbsent as exc:
            changes.absent.append(str(exc))
    return changes
