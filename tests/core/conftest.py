"""A repository archived into S3, for the tests that restore, verify and corrupt it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from repovault_pipeline.core.identity import parse_repo_url
from repovault_pipeline.core.settings import Settings
from repovault_pipeline.core.snapshot import SnapshotWriter
from repovault_pipeline.core.store import open_store
from tests.support.repos import ServedRepo


@pytest.fixture
def archived(vault_env: dict[str, str], make_repo: Callable[..., ServedRepo]):
    repo = make_repo("restorable")
    repo.commit({"a.txt": "a\n"})
    repo.tag("v1", annotated=True)
    repo.branch("feature")
    repo.commit({"b.txt": "b\n"})
    repo.checkout("main")
    repo.push()
    settings = Settings.from_env()
    ref = parse_repo_url(repo.url, settings.allowed_schemes, settings.allowed_hosts)
    result = SnapshotWriter(settings, open_store(settings)).archive(ref)
    return repo, result
