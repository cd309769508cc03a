"""The forge layer: GitHub, GitLab, Gitea (Forgejo, Codeberg) and Bitbucket Cloud behind one
protocol (`forge.Forge`), one HTTP client (`client.ForgeClient`), and the listing of tracked
sources (`listing`). Callers pick a forge object here and never branch on a forge's name."""

from __future__ import annotations

from repovault_pipeline.core.common.identity import RepoRef, web_origin
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.sources.forges.bitbucket import Bitbucket
from repovault_pipeline.core.sources.forges.forge import Forge
from repovault_pipeline.core.sources.forges.gitea import Gitea
from repovault_pipeline.core.sources.forges.github import GitHub
from repovault_pipeline.core.sources.forges.gitlab import GitLab

FORGES: tuple[type[GitHub | GitLab | Bitbucket], ...] = (GitHub, GitLab, Gitea, Bitbucket)


def forge_named(name: str, settings: Settings) -> Forge:
    """The configured forge called `name` (a source kind's prefix: "github", "gitlab",
    "gitea", "bitbucket")."""
    kind = next((forge for forge in FORGES if forge.name == name), GitHub)
    return kind.from_settings(settings)


def forge_of(ref: RepoRef, settings: Settings) -> Forge | None:
    """The forge API that knows `ref`: the first whose web host is the repository's host."""
    for kind in FORGES:
        forge = kind.from_settings(settings)
        if ref.host == web_origin(forge.api)[1]:
            return forge
    return None
