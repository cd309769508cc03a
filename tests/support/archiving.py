"""The archive of a served repository by the code under test, as the CLI would run it: one
place for the tests that archive without Dagster."""

from __future__ import annotations

from repovault_pipeline.core.common.identity import parse_repo_url
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.vault.outcome import ArchiveResult
from repovault_pipeline.core.vault.snapshot import SnapshotWriter
from repovault_pipeline.core.vault.store import open_store
from tests.support.repos import ServedRepo


def archive(repo: ServedRepo) -> ArchiveResult:
    """Archive `repo` with the settings of the test's environment."""
    return archive_url(repo.url)


def archive_url(url: str) -> ArchiveResult:
    """Archive `url` (a served repository, through a proxy say) with the test's settings."""
    settings = Settings.from_env()
    ref = parse_repo_url(url, settings.allowed_schemes, settings.allowed_hosts)
    return SnapshotWriter(settings, open_store(settings)).archive(ref)
