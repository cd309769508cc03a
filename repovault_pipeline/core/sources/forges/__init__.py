"""The forge layer: GitHub and GitLab behind one protocol (`forge.Forge`), one HTTP client
(`client.ForgeClient`), and the listing of tracked sources (`listing`). Callers pick a forge
object here and never branch on a forge's name."""

from __future__ import annotations

from urllib.parse import urlsplit

from repovault_pipeline.core.common.identity import RepoRef, github_web_origin
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.sources.forges.forge import Forge
from repovault_pipeline.core.sources.forges.github import GitHub
from repovault_pipeline.core.sources.forges.gitlab import GitLab


def forge_named(name: str, settings: Settings) -> Forge:
    """The configured forge called `name` ("github", "gitlab": a source kind's prefix)."""
    return GitLab.from_settings(settings) if name == GitLab.name else GitHub.from_settings(settings)


def forge_of(ref: RepoRef, settings: Settings) -> Forge | None:
    """The forge API that knows `ref`: the one whose web host is the repository's host."""
    _, github_host, _ = github_web_origin(settings.github_api)
    if ref.host == github_host:
        return GitHub.from_settings(settings)
    if ref.host == (urlsplit(settings.gitlab_api).hostname or "").lower():
        return GitLab.from_settings(settings)
    return None
