"""Fixtures of the notification tests: a webhook receiver the test's environment notifies."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.webhook import Webhook


@pytest.fixture
def webhook(vault_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Webhook]:
    """A receiver on loopback, the one REPOVAULT_NOTIFY_URLS entry; transient failures are
    retried at once (REPOVAULT_RETRY_DELAY_S=0)."""
    hook = Webhook()
    for name, value in {
        "REPOVAULT_NOTIFY_URLS": hook.url,
        "REPOVAULT_RETRY_DELAY_S": "0",
    }.items():
        monkeypatch.setenv(name, value)
        vault_env[name] = value
    yield hook
    hook.stop()
