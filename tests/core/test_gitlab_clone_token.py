"""GITLAB_TOKEN: sent by git only to the web host of REPOVAULT_GITLAB_API (as GitLab's `oauth2`
user), never to GitHub's; a private GitLab repository is read with it and refused without."""

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


def settings_for(gitlab_api: str, tmp_path: Path, **extra: str) -> Settings:
    return Settings.from_env(
        {
            "GITLAB_TOKEN": GL_TOKEN,
            "GITHUB_TOKEN": GH_TOKEN,
            "REPOVAULT_GITLAB_API": gitlab_api,
            "REPOVAULT_ALLOWED_HOSTS": "github.com,gitlab.com,127.0.0.1",
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
        assert GL_TOKEN not in str(env) and GH_TOKEN not in str(env)
        return
    origin, user, token = expected
    basic = base64.b64encode(f"{user}:{token}".encode()).decode()
    assert env["GIT_CONFIG_KEY_0"] == f"http.{origin}/.extraheader"
    assert env["GIT_CONFIG_VALUE_0"] == f"Authorization: Basic {basic}"


def test_a_private_gitlab_repository_is_read_with_the_token(tmp_path: Path) -> None:
    root = tmp_path / "private"
    with git_http_server(root, tmp_path / "git.log", GL_TOKEN, token_user="oauth2") as base:
        repo = ServedRepo(root, tmp_path / "work", base, "group", "secret")
        head = repo.commit({"a.txt": "1\n"})
        repo.push()
        api = f"{base}/api/v4"
        ref = parse_repo_url(repo.url, ("http",), ("127.0.0.1",))
        assert GitClient(settings_for(api, tmp_path, GITHUB_TOKEN="")).ls_remote(ref).refs == {
            "refs/heads/main": head
        }
        without = settings_for(api, tmp_path, GITLAB_TOKEN="", GITHUB_TOKEN="")
        with pytest.raises(RepoNotFound) as refused:
            GitClient(without).ls_remote(ref)
        assert GL_TOKEN not in str(refused.value)
