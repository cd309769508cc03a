"""Sending a notification to every REPOVAULT_NOTIFY_URLS entry through Apprise.

An Apprise URL holds its service's secrets (a Slack token, a mail password), so a URL is only
ever named by its position and scheme (`#2 slack`), and whatever Apprise says of a failure is
masked, the URLs themselves included, before anyone reads it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import apprise

from repovault_pipeline.core.common.redact import mask_secrets
from repovault_pipeline.core.notify.events import Notification

# Apprise's own log lines quote its requests; they reach our log only through `LogCapture`,
# masked, never through the root logger.
logging.getLogger("apprise").propagate = False


def target_name(index: int, url: str) -> str:
    """How a URL is named in logs and errors: its position and scheme, nothing of its host,
    path or query (for Slack, Telegram, ntfy... those are the token)."""
    scheme = url.split("://", 1)[0] if "://" in url else "?"
    return f"#{index + 1} {mask_secrets(scheme)[:20]}"


@dataclass(frozen=True)
class Delivery:
    """Where a notification went: the targets that took it, and why the others did not."""

    sent: list[str]
    failed: list[str]  # "#2 json: <masked reason>"


def send(urls: tuple[str, ...], notification: Notification) -> Delivery:
    """Send to each URL on its own (one that fails does not keep it from the others)."""
    sent, failed = [], []
    for index, url in enumerate(urls):
        name = target_name(index, url)
        with apprise.LogCapture(level=apprise.logging.WARNING) as captured:
            target = apprise.Apprise()
            ok = target.add(url) and target.notify(title=notification.title, body=notification.body)
        if ok:
            sent.append(name)
            continue
        said = " ".join(line.strip() for line in captured.getvalue().splitlines() if line.strip())
        why = said or ("not an Apprise URL Apprise understands" if not target else "not sent")
        failed.append(f"{name}: {mask_secrets(why, urls)[:300]}")
    return Delivery(sent, failed)
