"""Requests from people and systems (`repovault submit`, `POST /api/requests`): every URL is
validated before anything happens, then each gets a `pending` row and a `pendientes` message."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from repovault_pipeline.core.common.identity import InvalidRepoUrl, RepoRef, parse_repo_url
from repovault_pipeline.core.common.redact import mask_and_cut, mask_secrets
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.intake.kafka import KafkaGateway
from repovault_pipeline.core.intake.lifecycle import NewRequest, RequestLifecycle
from repovault_pipeline.core.lineage.requests import LineageStore


@dataclass(frozen=True)
class Refused:
    """One URL that cannot be requested: its position, the URL masked and cut short, why."""

    index: int
    url: str
    reason: str


def validate_urls(urls: Sequence[str], settings: Settings) -> tuple[list[RepoRef], list[Refused]]:
    refs, refused = [], []
    for index, url in enumerate(urls):
        try:
            refs.append(parse_repo_url(url, settings.allowed_schemes, settings.allowed_hosts))
        except InvalidRepoUrl as exc:
            refused.append(Refused(index, mask_and_cut(url, 80), mask_secrets(str(exc))))
    return refs, refused


def submit(
    settings: Settings,
    open_lineage: Callable[[], LineageStore],
    refs: Sequence[RepoRef],
    source: str,
    keep: dict[str, bool] | None = None,
    force: bool = False,
) -> Iterator[tuple[RepoRef, str]]:
    """Record and publish each request (with what it asks to `keep` beside the history, when it
    chooses, and `force` for a fresh snapshot even if nothing changed), waiting for the
    broker's acknowledgement; yields (ref, request_id) as each is queued. An unreachable
    broker fails before the database is opened or any row written; one lost half way closes
    its request as `failed` (not queued) and raises."""
    gateway = KafkaGateway(settings, client_id=f"repovault-{source}")
    try:
        gateway.producer()
        requests = RequestLifecycle(open_lineage(), gateway, settings.topics)
        for ref in refs:
            asked = NewRequest(ref.url, ref.repo_id, source, keep=keep, force=force)
            yield ref, requests.queue(asked)
    finally:
        gateway.close()
