"""The forge layer's one HTTP client: which headers go where (no server needed), and which forge
object a repository's host picks."""

from __future__ import annotations

import pytest

from repovault_pipeline.core.common.identity import parse_repo_url
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.sources.forges import forge_of
from repovault_pipeline.core.sources.forges.client import ForgeClient
from repovault_pipeline.core.sources.forges.github import GitHub
from repovault_pipeline.core.sources.forges.gitlab import GitLab

GITHUB = GitHub("https://api.github.com/", "ghp_token")
GITLAB = GitLab("https://gitlab.example/api/v4", "glpat-token")


@pytest.mark.parametrize(
    ("forge", "url", "sent"),
    [
        (GITHUB, "https://api.github.com/orgs/acme/repos", True),
        (GITHUB, "https://objects.githubusercontent.com/asset", False),
        (GITHUB, "http://api.github.com/orgs/acme/repos", False),  # https downgraded
        (GITHUB, "https://api.github.com:8443/x", False),  # another port
        (GITLAB, "https://gitlab.example/api/v4/groups/g/projects", True),
        (GITLAB, "https://api.github.com/orgs/acme/repos", False),
    ],
)
def test_a_token_goes_only_to_its_own_api_origin(forge, url: str, sent: bool) -> None:
    headers = ForgeClient().headers(forge, url, None)
    assert ("ghp_token" in str(headers) or "glpat-token" in str(headers)) is sent


def test_api_headers_unless_the_caller_asks_for_a_type() -> None:
    client = ForgeClient()
    assert client.headers(GITHUB, "https://example.org/", None) == GITHUB.api_headers()
    assert client.headers(GITHUB, "https://api.github.com/x", "application/octet-stream") == {
        "Accept": "application/octet-stream",
        "Authorization": "Bearer ghp_token",
    }
    assert client.headers(None, "https://github.com/trending", "text/html") == {
        "Accept": "text/html"
    }


def test_the_forge_of_a_repository_is_the_one_of_its_host() -> None:
    settings = Settings.from_env({"REPOVAULT_GITLAB_API": "https://gitlab.example/api/v4"})
    hosts = ("github.com", "gitlab.example", "elsewhere.example")

    def forge_name(url: str) -> str | None:
        forge = forge_of(parse_repo_url(url, ("https",), hosts), settings)
        return forge.name if forge else None

    assert forge_name("https://github.com/acme/tool") == "github"
    assert forge_name("https://gitlab.example/group/sub/app") == "gitlab"
    assert forge_name("https://elsewhere.example/acme/tool") is None
