"""The environment every git command runs with: where GITHUB_TOKEN may go, and how ssh is told
which key and known_hosts file to use (the real clones are in tests/assets/
test_authenticated_clones.py; these are the rules, host by host)."""

from __future__ import annotations

import base64
import shlex
from pathlib import Path

import pytest

from repovault_pipeline.core.common.identity import parse_repo_url
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.vault.gitops import GitClient

TOKEN = "ghp_" + "Tk9s" * 9
HEADER = "Authorization: Basic " + base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()


def env_for(url: str, api: str, tmp_path: Path) -> dict[str, str]:
    settings = Settings.from_env(
        {
            "GITHUB_TOKEN": TOKEN,
            "REPOVAULT_GITHUB_API": api,
            "REPOVAULT_ALLOWED_SCHEMES": "http,https,ssh",
            "REPOVAULT_SSH_KNOWN_HOSTS": str(tmp_path / "known_hosts"),
        }
    )
    ref = parse_repo_url(url, settings.allowed_schemes, ("github.com", "127.0.0.1", "ghe.corp"))
    return GitClient(settings).environment(ref)


@pytest.mark.parametrize(
    ("api", "url", "header_key"),
    [
        (
            "https://api.github.com",
            "https://github.com/o/r",
            "http.https://github.com/.extraheader",
        ),
        ("https://api.github.com", "octo/hello", "http.https://github.com/.extraheader"),
        ("https://api.github.com", "http://github.com/o/r", None),  # not over plain http
        ("https://api.github.com", "https://github.com:8443/o/r", None),
        ("https://api.github.com", "ssh://git@github.com/o/r.git", None),
        ("https://api.github.com", "https://127.0.0.1/o/r", None),
        ("https://ghe.corp/api/v3", "https://ghe.corp/o/r", "http.https://ghe.corp/.extraheader"),
        ("https://ghe.corp/api/v3", "https://github.com/o/r", None),
        (
            "http://127.0.0.1:8765/api/v3",
            "http://127.0.0.1:8765/o/r.git",
            "http.http://127.0.0.1:8765/.extraheader",
        ),
        ("http://127.0.0.1:8765/api/v3", "http://127.0.0.1:8766/o/r.git", None),
        ("http://127.0.0.1:8765/api/v3", "http://127.0.0.1/o/r.git", None),
        ("http://127.0.0.1:8765/api/v3", "https://github.com/o/r", None),
    ],
)
def test_the_token_header_goes_only_to_the_web_host_of_the_github_api(
    tmp_path: Path, api: str, url: str, header_key: str | None
) -> None:
    env = env_for(url, api, tmp_path)
    if header_key is None:
        assert env["GIT_CONFIG_COUNT"] == "0"
        assert TOKEN not in str(env) and HEADER not in str(env)
    else:
        assert (env["GIT_CONFIG_COUNT"], env["GIT_CONFIG_KEY_0"]) == ("2", header_key)
        assert env["GIT_CONFIG_VALUE_0"] == HEADER
        # the header would follow a redirect to any host: none is followed
        assert (env["GIT_CONFIG_KEY_1"], env["GIT_CONFIG_VALUE_1"]) == (
            "http.followRedirects",
            "false",
        )


def test_ssh_reads_no_user_config_and_keeps_host_keys_where_configured(tmp_path: Path) -> None:
    known_hosts = tmp_path / "state 100%" / "known hosts"
    key = tmp_path / "deploy key"
    settings = Settings.from_env(
        {"REPOVAULT_SSH_KEY": str(key), "REPOVAULT_SSH_KNOWN_HOSTS": str(known_hosts)}
    )
    command = shlex.split(GitClient(settings).environment()["GIT_SSH_COMMAND"])
    assert command[:3] == ["ssh", "-F", "/dev/null"]
    options = [command[i + 1] for i, arg in enumerate(command) if arg == "-o"]
    assert "BatchMode=yes" in options and "StrictHostKeyChecking=accept-new" in options
    # ssh expands `%` tokens and splits on spaces: both are escaped.
    assert f'UserKnownHostsFile="{tmp_path}/state 100%%/known hosts"' in options
    assert f'IdentityFile="{tmp_path}/deploy key"' in options and "IdentitiesOnly=yes" in options
    assert known_hosts.parent.is_dir()


def test_a_relative_known_hosts_path_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """git runs ssh from other folders (a clone's), so a relative path would move."""
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({"REPOVAULT_SSH_KNOWN_HOSTS": ".repovault/ssh_known_hosts"})
    command = GitClient(settings).environment()["GIT_SSH_COMMAND"]
    assert f"UserKnownHostsFile={tmp_path}/.repovault/ssh_known_hosts" in command
    assert "IdentityFile" not in command
