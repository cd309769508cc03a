"""Listing tracked sources against a forge API server on loopback (GitHub, GitLab, Gitea and
Bitbucket Cloud shapes)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.sources.forges.listing import (
    Filters,
    InvalidSource,
    SourceLister,
    parse_source,
)
from tests.support.forge_api import ForgeApi, forge_api

GH_TOKEN = "ghp_forgetesttoken0000000000000000000000"
GL_TOKEN = "glpat-forgetesttoken000000"
NEW_TOKEN = "gitea-or-bitbucket-secret-0000"  # GITEA_TOKEN, or BITBUCKET_APP_PASSWORD
# Per forge: the spec's prefix, the API below the server, the credential variables, and the
# Authorization header they make.
NEW_FORGES = {
    "gitea": (
        "gitea:org",
        "REPOVAULT_GITEA_API",
        "/api/v1",
        {"GITEA_TOKEN": NEW_TOKEN},
        f"token {NEW_TOKEN}",
    ),
    "bitbucket": (
        "bitbucket:workspace",
        "REPOVAULT_BITBUCKET_API",
        "/2.0",
        {"BITBUCKET_USERNAME": "backup-bot", "BITBUCKET_APP_PASSWORD": NEW_TOKEN},
        "Basic " + base64.b64encode(f"backup-bot:{NEW_TOKEN}".encode()).decode(),
    ),
}


@pytest.fixture
def github(git_base_url: str) -> Iterator[ForgeApi]:
    with forge_api(git_base_url, token=GH_TOKEN) as api:
        for i in range(5):
            api.add("acme", f"tool{i}")
        api.add("acme", "secret", private=True)
        yield api


@pytest.fixture
def gitlab(git_base_url: str) -> Iterator[ForgeApi]:
    with forge_api(git_base_url, token=GL_TOKEN) as api:
        api.add("grp", "app")
        api.add("grp/sub", "lib")
        api.add("grp/sub/deep", "lib-fork", fork=True)
        api.add("grp/sub", "old", archived=True)
        api.add("grp", "hidden", private=True)
        yield api


@pytest.fixture(params=sorted(NEW_FORGES))
def new_forge(request: pytest.FixtureRequest, git_base_url: str) -> Iterator[tuple[str, ForgeApi]]:
    """A Gitea- or Bitbucket-shaped API (by the test's parameter) holding `acme`'s repositories."""
    with forge_api(git_base_url, token=NEW_TOKEN) as api:
        for i in range(5):
            api.add("acme", f"tool{i}")
        api.add("acme", "fork", fork=True)
        api.add("acme", "secret", private=True)
        yield request.param, api


def new_settings(forge: str, api: ForgeApi, signed_in: bool) -> Settings:
    _, variable, path, credentials, _ = NEW_FORGES[forge]
    env = {variable: api.url + path, "GITHUB_TOKEN": GH_TOKEN, "GITLAB_TOKEN": GL_TOKEN}
    return settings_for(api, **env, **(credentials if signed_in else {}))


def settings_for(github: ForgeApi, gitlab: ForgeApi | None = None, **env: str) -> Settings:
    base = {
        "REPOVAULT_GITHUB_API": github.url,
        "REPOVAULT_GITLAB_API": f"{gitlab.url}/api/v4" if gitlab else "",
        "REPOVAULT_ALLOWED_HOSTS": "127.0.0.1",
        "REPOVAULT_ALLOWED_SCHEMES": "http,https",
    }
    return Settings.from_env({**base, **env})


def client(settings: Settings) -> SourceLister:
    return SourceLister(settings, retries=1, backoff_s=0.01)


def names(listing) -> list[str]:
    return sorted(repo.full_name for _, repo in listing.repos)


def test_github_org_every_page_and_private_only_with_token(github: ForgeApi) -> None:
    anonymous = settings_for(github)
    listing = client(anonymous).list(parse_source("github:org/acme", anonymous))
    assert listing.complete and listing.error is None
    assert names(listing) == [f"acme/tool{i}" for i in range(5)]
    assert all("Authorization" not in h for _, h in github.requests)
    assert len(github.requests) == 3  # 5 public repositories, 2 a page

    github.requests.clear()
    authed = settings_for(github, GITHUB_TOKEN=GH_TOKEN)
    listing = client(authed).list(parse_source("github:org/acme", authed))
    assert listing.complete
    assert names(listing) == ["acme/secret"] + [f"acme/tool{i}" for i in range(5)]
    assert len(github.requests) == 3
    assert all(h.get("Authorization") == f"Bearer {GH_TOKEN}" for _, h in github.requests)
    ref, repo = next((ref, r) for ref, r in listing.repos if r.name == "secret")
    assert repo.private and ref.repo_id.endswith("/acme/secret")
    # The activity stamp refresh compares: `updated_at` and `pushed_at`.
    assert repo.stamp == "2026-01-01T00:00:00Z 2026-01-01T00:00:00Z"


def test_github_user_source(github: ForgeApi) -> None:
    github.add("alice", "dotfiles")
    settings = settings_for(github)
    listing = client(settings).list(parse_source("github:user/alice", settings))
    assert listing.complete and names(listing) == ["alice/dotfiles"]
    assert github.requests[-1][0].startswith("/users/alice/repos")


def test_gitlab_group_with_subgroups_filters_and_token_hosts(
    github: ForgeApi, gitlab: ForgeApi
) -> None:
    settings = settings_for(github, gitlab, GITHUB_TOKEN=GH_TOKEN, GITLAB_TOKEN=GL_TOKEN)
    source = parse_source("gitlab:group/grp", settings)
    listing = client(settings).list(source)
    assert listing.complete
    assert names(listing) == [
        "grp/app",
        "grp/hidden",
        "grp/sub/deep/lib-fork",
        "grp/sub/lib",
        "grp/sub/old",
    ]
    filtered = parse_source(
        "gitlab:group/grp",
        settings,
        Filters(skip_forks=True, skip_archived=True, include=("*l*", "app"), exclude=("hid*",)),
    )
    gitlab.touch("grp/app", "2026-02-03T04:05:06.789Z")
    listing = client(settings).list(filtered)
    assert listing.complete and names(listing) == ["grp/app", "grp/sub/lib"]
    assert [r.stamp for _, r in listing.repos] == [  # GitLab's `last_activity_at`
        "2026-02-03T04:05:06.789Z",
        "2026-01-01T00:00:00Z",
    ]
    assert listing.filtered == 3
    # Each token went to its own API host and nowhere else.
    assert gitlab.requests and all(h.get("PRIVATE-TOKEN") == GL_TOKEN for _, h in gitlab.requests)
    assert all(GH_TOKEN not in str(h) for _, h in gitlab.requests)
    client(settings).list(parse_source("github:org/acme", settings))
    assert github.requests and all(GL_TOKEN not in str(h) for _, h in github.requests)


def test_gitea_and_bitbucket_every_page_filters_and_private_only_with_credentials(
    new_forge: tuple[str, ForgeApi],
) -> None:
    forge, api = new_forge
    spec, _, path, _, authorization = NEW_FORGES[forge]
    anonymous = new_settings(forge, api, signed_in=False)
    listing = client(anonymous).list(parse_source(f"{spec}/acme", anonymous))
    assert listing.complete and listing.error is None
    assert names(listing) == ["acme/fork"] + [f"acme/tool{i}" for i in range(5)]
    assert len(api.requests) == 3  # 6 public repositories, 2 a page
    assert all(p.startswith(f"{path}/") for p, _ in api.requests)
    # No credential at all without them; GitHub's and GitLab's never here.
    assert all("Authorization" not in h and "PRIVATE-TOKEN" not in h for _, h in api.requests)
    # The forge's own page-size parameter (Gitea `limit`, Bitbucket `pagelen`).
    assert ("limit=50" if forge == "gitea" else "pagelen=50") in api.requests[0][0]

    api.requests.clear()
    signed_in = new_settings(forge, api, signed_in=True)
    api.touch("acme/secret", "2026-02-03T04:05:06Z")
    filtered = Filters(skip_forks=True, exclude=("tool[34]",))
    listing = client(signed_in).list(parse_source(f"{spec}/acme", signed_in, filtered))
    assert listing.complete
    assert names(listing) == ["acme/secret", "acme/tool0", "acme/tool1", "acme/tool2"]
    assert listing.filtered == 3
    assert {h.get("Authorization") for _, h in api.requests} == {authorization}
    ref, repo = next((ref, r) for ref, r in listing.repos if r.name == "secret")
    assert repo.private and repo.stamp == "2026-02-03T04:05:06Z"  # updated_at / updated_on
    # Bitbucket's clone link names the signed-in user; the clone URL RepoVault keeps does not.
    assert ref.url == f"{api.git_base_url}/acme/secret.git"
    assert ref.repo_id == api.git_base_url.removeprefix("http://") + "/acme/secret"


def test_gitea_and_bitbucket_next_page_on_another_host_is_refused(
    new_forge: tuple[str, ForgeApi],
) -> None:
    forge, api = new_forge
    api.foreign_next.add("acme")
    settings = new_settings(forge, api, signed_in=True)
    listing = client(settings).list(parse_source(f"{NEW_FORGES[forge][0]}/acme", settings))
    assert not listing.complete and names(listing) == ["acme/tool0", "acme/tool1"]
    assert "links its next page on another host; refused" in listing.error
    # The link went to `localhost` on the same server: nothing was asked there.
    assert len(api.requests) == 1
    assert all(h["Host"].startswith("127.0.0.1:") for _, h in api.requests)


def test_gitea_and_bitbucket_429_is_a_rate_limit(new_forge: tuple[str, ForgeApi]) -> None:
    forge, api = new_forge
    api.rate_limited.add("acme")
    settings = new_settings(forge, api, signed_in=False)
    listing = client(settings).list(parse_source(f"{NEW_FORGES[forge][0]}/acme", settings))
    assert not listing.complete and listing.repos == []
    # Retry-After: 120
    assert listing.retry_at is not None
    assert abs(listing.retry_at - datetime.now(UTC) - timedelta(seconds=120)) < timedelta(minutes=1)
    assert listing.error.startswith(f"rate limited until {listing.retry_at:%Y-%m-%d %H:%M:%SZ}")
    assert "(HTTP 429 at page 1)" in listing.error


def test_rate_limit_is_a_clear_reason_not_a_crash(github: ForgeApi) -> None:
    github.rate_limited.add("acme")
    settings = settings_for(github)
    listing = client(settings).list(parse_source("github:org/acme", settings))
    assert not listing.complete and listing.repos == []
    assert listing.retry_at is not None
    assert listing.error.startswith(f"rate limited until {listing.retry_at:%Y-%m-%d %H:%M:%SZ}")


def test_500_mid_listing_is_incomplete(github: ForgeApi) -> None:
    github.fail_page["acme"] = 2
    settings = settings_for(github)
    listing = client(settings).list(parse_source("github:org/acme", settings))
    assert not listing.complete
    assert "HTTP 500 at page 2" in listing.error and "incomplete" in listing.error
    assert names(listing) == ["acme/tool0", "acme/tool1"]
    page_two = [p for p, _ in github.requests if "page=2" in p]
    assert len(page_two) == 2  # retried once by the session, then reported


def test_unknown_source_is_reported(github: ForgeApi) -> None:
    settings = settings_for(github)
    listing = client(settings).list(parse_source("github:org/nobody", settings))
    assert not listing.complete and "does not exist" in listing.error


def test_clone_urls_pass_the_url_rules() -> None:
    with forge_api("http://elsewhere.example") as api:
        api.add("acme", "tool")
        settings = settings_for(api)
        listing = client(settings).list(parse_source("github:org/acme", settings))
    assert listing.complete and listing.repos == []
    assert listing.refused == [
        ("acme/tool", "host 'elsewhere.example' is not allowed (REPOVAULT_ALLOWED_HOSTS=127.0.0.1)")
    ]


@pytest.mark.parametrize(
    "spec",
    [
        "acme",
        "github:acme",
        "github:team/acme",
        "github:org/",
        "github:org/-bad",
        "gitlab:group/a/../b",
        "gitlab:group/a b",
        "gitea:acme",
        "gitea:org/",
        "gitea:team/acme",
        "gitea:org/a/b",
        "gitea:user/-x",
        "bitbucket:acme",
        "bitbucket:workspace/",
        "bitbucket:workspace/a/b",
    ],
)
def test_bad_source_specs(spec: str) -> None:
    with pytest.raises(InvalidSource) as refused:
        parse_source(spec, Settings.from_env({}))
    assert "\n" not in str(refused.value)


def test_source_ids() -> None:
    settings = Settings.from_env({})
    assert (
        parse_source("github:org/Dagster-IO", settings).source_id
        == "github-org:github.com/dagster-io"
    )
    assert parse_source("gitlab:group/a/b", settings).source_id == "gitlab-group:gitlab.com/a/b"
    # Codeberg unless REPOVAULT_GITEA_API names another Gitea or Forgejo server.
    assert parse_source("gitea:org/Forgejo", settings).source_id == "gitea-org:codeberg.org/forgejo"
    assert parse_source("gitea:user/Ann", settings).spec == "gitea:user/Ann"
    other = Settings.from_env({"REPOVAULT_GITEA_API": "https://git.example.com/api/v1"})
    assert parse_source("gitea:user/ann", other).source_id == "gitea-user:git.example.com/ann"
    bitbucket = parse_source("bitbucket:workspace/Team", settings)
    assert bitbucket.source_id == "bitbucket-ws:bitbucket.org/team"
    assert bitbucket.spec == "bitbucket:workspace/Team"
