"""GITLAB_TOKEN: sent by git only to the web host of REPOVAULT_GITLAB_API (as GitLab's `oauth2`
user), never to GitHub's; a private GitLab repository is read with it and refused without. The
same for GITEA_TOKEN (REPOVAULT_GITEA_API's host) and Bitbucket's app password
(BITBUCKET_USERNAME, REPOVAULT_BITBUCKET_API's web host, bitbucket.org)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from repovault_pipeline.core.common.errors import RepoNotFound
from repovault_pipeline.core.common.identity import parse_repo_url
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.vault.gitops import GitClient
from tests.support.repos import ServedRepo
from tests.support.servers import git_http_server

GL_TOKEN = "glpat-" + "Zq7x" * 5
GH_TOKEN = "ghp_" + "Tk9s" * 9
GITEA_TOKEN = "4f1c" * 10
BB_USER, BB_PASSWORD = "backup-bot", "ATBB" + "x7Qe" * 8


def settings_for(gitlab_api: str, tmp_path: Path, **extra: str) -> Settings:
    return Settings.from_env(
        {
            "GITLAB_TOKEN": GL_TOKEN,
            "GITHUB_TOKEN": GH_TOKEN,
            "REPOVAULT_GITLAB_API": gitlab_api,
            "GITEA_TOKEN": GITEA_TOKEN,
            "BITBUCKET_USERNAME": BB_USER,
            "BITBUCKET_APP_PASSWORD": BB_PASSWORD,
            "REPOVAULT_ALLOWED_HOSTS": "github.com,gitlab.com,codeberg.org,bitbucket.org,127.0.0.1",
            "REPOVAULT_ALLOWED_SCHEMES": "http,https",
            "REPOVAULT_SSH_KNOWN_HOSTS": str(tmp_path / "known_hosts"),
            **extra,
        }
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://gitlab.com/g/sub/p.git", ("https://gitlab.com", "oauth2", GL_TOKEN)),
        ("https://github.com/o/r", ("https://github.com", "x-access-token", GH_TOKEN)),
        ("https://codeberg.org/o/r.git", ("https://codeberg.org", "oauth2", GITEA_TOKEN)),
        ("https://bitbucket.org/ws/r.git", ("https://bitbucket.org", BB_USER, BB_PASSWORD)),
        ("http://bitbucket.org/ws/r.git", None),
        ("https://gitlab.com:8443/g/p.git", None),
        ("http://gitlab.com/g/p.git", None),
        ("https://127.0.0.1/g/p.git", None),
    ],
)
def test_each_token_goes_to_its_own_web_host(
    tmp_path: Path, url: str, expected: tuple[str, str, str] | None
) -> None:
    settings = settings_for("https://gitlab.com/api/v4", tmp_path)
    ref = parse_repo_url(url, settings.allowed_schemes, settings.allowed_hosts)
    env = GitClient(settings).environment(ref)
    if expected is None:
        assert env["GIT_CONFIG_COUNT"] == "0"
        assert all(t not in str(env) for t in (GL_TOKEN, GH_TOKEN, GITEA_TOKEN, BB_PASSWORD))
        return
    origin, user, token = expected
    basic = base64.b64encode(f"{user}:{token}".encode()).decode()
    assert env["GIT_CONFIG_KEY_0"] == f"http.{origin}/.extraheader"
    assert env["GIT_CONFIG_VALUE_0"] == f"Authorization: Basic {basic}"


def test_an_atlassian_api_token_goes_to_git_as_bitbucket_s_token_user(tmp_path: Path) -> None:
    """BITBUCKET_USERNAME an email: an API token (app passwords ended on 9 June 2026); the API
    takes the email, git the fixed user `x-bitbucket-api-token-auth`."""
    settings = settings_for("", tmp_path, BITBUCKET_USERNAME="ops@example.com")
    ref = parse_repo_url(
        "https://bitbucket.org/ws/r.git", settings.allowed_schemes, ("bitbucket.org",)
    )
    basic = base64.b64encode(f"x-bitbucket-api-token-auth:{BB_PASSWORD}".encode()).decode()
    assert (
        GitClient(settings).environment(ref)["GIT_CONFIG_VALUE_0"]
        == f"Authorization: Basic {basic}"
    )


@pytest.mark.parametrize(
    ("api_variable", "api_path", "secret", "user"),
    [
        ("REPOVAULT_GITLAB_API", "/api/v4", "GITLAB_TOKEN", "oauth2"),
        ("REPOVAULT_GITEA_API", "/api/v1", "GITEA_TOKEN", "oauth2"),
        ("REPOVAULT_BITBUCKET_API", "/2.0", "BITBUCKET_APP_PASSWORD", BB_USER),
    ],
)
def test_a_private_repository_is_read_with_its_forge_credentials(
    tmp_path: Path, api_variable: str, api_path: str, secret: str, user: str
) -> None:
    value = {"GITLAB_TOKEN": GL_TOKEN, "GITEA_TOKEN": GITEA_TOKEN}.get(secret, BB_PASSWORD)
    root = tmp_path / "private"
    with git_http_server(root, tmp_path / "git.log", value, token_user=user) as base:
        repo = ServedRepo(root, tmp_path / "work", base, "group", "secret")
        head = repo.commit({"a.txt": "1\n"})
        repo.push()
        on_forge = {api_variable: f"{base}{api_path}", "GITHUB_TOKEN": ""}
        ref = parse_repo_url(repo.url, ("http",), ("127.0.0.1",))
        assert GitClient(settings_for("", tmp_path, **on_forge)).ls_remote(ref).refs == {
            "refs/heads/main": head
        }
        without = settings_for("", tmp_path, **on_forge, **{secret: ""})
        with pytest.raises(RepoNotFound) as refused:
            GitClient(without).ls_remote(ref)
        assert value not in str(refused.value)
