"""Restore to a forge with `repovault restore --push URL` and `--create
github:ORG/NAME|gitlab:GROUP/NAME|gitea:ORG/NAME|bitbucket:WORKSPACE/NAME`: the repository a
restore pushes into, created through the forge's API with its credentials (GITHUB_TOKEN,
GITLAB_TOKEN, GITEA_TOKEN, BITBUCKET_APP_PASSWORD, each sent only to its forge's API).
Created private: a restored repository is shown to no one before its owners decide; they make
it public in the forge's settings."""

from __future__ import annotations

import re

import requests

from repovault_pipeline.core.common.errors import ArchiveError
from repovault_pipeline.core.common.identity import RepoRef
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.sources.forges import forge_named
from repovault_pipeline.core.sources.forges.client import ForgeClient, PageError, RateLimited
from repovault_pipeline.core.sources.forges.forge import ListedRepo
from repovault_pipeline.core.vault.push import (
    InvalidTarget,
    Pushed,
    PushTarget,
    push_snapshot,
    push_target,
)
from repovault_pipeline.core.vault.restore import find_snapshot
from repovault_pipeline.core.vault.store import ObjectStore

CREATABLE = ("github", "gitlab", "gitea", "bitbucket")
_SPEC = re.compile(
    r"^(?P<forge>[a-z]+):(?P<owner>[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*)/(?P<name>[A-Za-z0-9_.-]+)$"
)


def create_repository(
    spec: str, settings: Settings, client: ForgeClient | None = None
) -> ListedRepo:
    """Create the repository `spec` names (private, empty) and return it, with its clone URL.
    Bad input (`InvalidTarget`) is said before any request."""
    match = _SPEC.match(spec.strip())
    if not match or match["forge"] not in CREATABLE:
        raise InvalidTarget(
            f"--create {spec[:80]!r}: give github:ORG/NAME (or github:USER/NAME), "
            "gitlab:GROUP/NAME, gitea:ORG/NAME (or gitea:USER/NAME) or bitbucket:WORKSPACE/NAME"
        )
    forge = forge_named(match["forge"], settings)
    owner, name = match["owner"], match["name"]
    if forge.name != "gitlab" and "/" in owner:
        raise InvalidTarget(
            f"--create {spec}: only GitLab has groups; give {forge.name}:OWNER/NAME"
        )
    if not forge.token:
        raise InvalidTarget(
            f"--create {spec} needs {forge.token_env}: a token allowed to create repositories "
            f"in {owner} on {forge.api}"
        )
    try:
        return forge.create_repository(client or ForgeClient(), owner, name)
    except (PageError, RateLimited) as exc:
        raise ArchiveError(
            f"cannot create {spec}: {exc}; check that {forge.token_env} may create "
            f"repositories in {owner}"
        ) from None
    except requests.RequestException as exc:
        raise ArchiveError(
            f"cannot create {spec}: {forge.api} is unreachable ({type(exc).__name__})"
        ) from None


def restore_to_forge(
    settings: Settings,
    store: ObjectStore,
    ref: RepoRef,
    push: str | None = None,
    create: str | None = None,
    snapshot_id: str | None = None,
    wiki: bool = False,
    force: bool = False,
) -> tuple[Pushed, ListedRepo | None]:
    """`restore --push URL` and/or `--create SPEC`: the push URL checked and the snapshot found
    before a repository is created; then the push, to URL or else to the created repository's
    clone URL (its token goes there as it goes to any repository on the forge's web host)."""
    target = push_target(push, settings) if push else None
    find_snapshot(settings, store, ref, snapshot_id)
    created = None
    if create:
        created = create_repository(create, settings)
        target = target or _clone_target(created, settings)
    if target is None:
        raise InvalidTarget("give --push URL, --create github:ORG/NAME|gitlab:GROUP/NAME, or both")
    return push_snapshot(settings, store, ref, target, snapshot_id, wiki, force), created


def _clone_target(created: ListedRepo, settings: Settings) -> PushTarget:
    try:
        return push_target(created.clone_url, settings)
    except InvalidTarget as exc:
        raise InvalidTarget(f"created {created.full_name}, but {exc}") from None
