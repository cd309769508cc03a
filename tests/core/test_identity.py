"""Repository identity: what is accepted, what `repo_id` it gets, what is refused and why."""

import re

import pytest

from repovault_pipeline.core.identity import (
    InvalidRepoUrl,
    bucket_name,
    parse_repo_id,
    parse_repo_url,
)
from repovault_pipeline.core.redact import mask_secrets

GITHUB = (("https", "ssh"), ("github.com",))


@pytest.mark.parametrize(
    "raw",
    [
        "https://github.com/Octo/Hello-World",
        "https://github.com/octo/hello-world.git",
        "https://github.com/octo/hello-world/",
        "https://GitHub.com/octo/hello-world.git/",
        "ssh://git@github.com/octo/hello-world.git",
        "git@github.com:octo/hello-world.git",
        "octo/hello-world",
        "  octo/Hello-World  ",
    ],
)
def test_spellings_of_one_repository_share_one_repo_id(raw: str) -> None:
    assert parse_repo_url(raw, *GITHUB).repo_id == "github.com/octo/hello-world"


def test_clone_urls_are_canonical() -> None:
    assert parse_repo_url("octo/hello", *GITHUB).url == "https://github.com/octo/hello"
    assert (
        parse_repo_url("git@github.com:octo/hello.git", *GITHUB).url
        == "ssh://git@github.com/octo/hello.git"
    )
    ref = parse_repo_url("http://127.0.0.1:8080/a/b.git", ("http",), ("127.0.0.1",))
    assert (ref.repo_id, ref.url) == ("127.0.0.1:8080/a/b", "http://127.0.0.1:8080/a/b.git")


def test_default_port_is_not_part_of_the_id() -> None:
    assert parse_repo_url("https://github.com:443/a/b", *GITHUB).repo_id == "github.com/a/b"


def test_nested_groups_where_the_host_allows_them() -> None:
    ref = parse_repo_url(
        "https://gitlab.example.com/group/sub/name.git", ("https",), ("gitlab.example.com",)
    )
    assert ref.repo_id == "gitlab.example.com/group/sub/name"
    assert (ref.owner, ref.name) == ("group/sub", "name")
    with pytest.raises(InvalidRepoUrl, match="owner/name"):
        parse_repo_url("https://github.com/group/sub/name", *GITHUB)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("file:///etc", "local paths"),
        ("/srv/git/repo.git", "local paths"),
        ("../other", "local paths"),
        ("~/repo", "local paths"),
        ("ext::sh -c id", "transport helpers"),
        ("ext::sh", "transport helpers"),
        ("fd::3", "transport helpers"),
        ("--upload-pack=x", "starts with '-'"),
        ("-oProxyCommand=x", "starts with '-'"),
        ("http://github.com/a/b", "scheme 'http' is not allowed"),
        ("ftp://github.com/a/b", "scheme 'ftp' is not allowed"),
        ("https://gitlab.com/a/b", "host 'gitlab.com' is not allowed"),
        ("https://github.com/a/b?x=1", "query strings"),
        ("https://github.com/a/b#frag", "fragments"),
        ("https://github.com/a/../b", "'..'"),
        ("https://github.com/a/b/../../c", "'..'"),
        ("https://github.com/a%2Fb/c", "percent-encoded"),
        ("https://github.com/a/b\nc", "control characters"),
        ("https://github.com/a/b\x00", "control characters"),
        ("https://github.com/onlyowner", "does not name a repository"),
        ("x" * 10_000, "at most 512"),
        ("not a url", "whitespace"),
    ],
)
def test_rejections_give_one_clear_line(raw: str, reason: str) -> None:
    with pytest.raises(InvalidRepoUrl) as excinfo:
        parse_repo_url(raw, *GITHUB)
    message = str(excinfo.value)
    assert reason in message
    assert "\n" not in message and len(message) < 300


@pytest.mark.parametrize(
    "raw",
    [
        "https://user:tok@github.com/a/b",
        "https://ghp_abcdefghijklmnopqrstuvwx@github.com/a/b",
        "https://tok@github.com/a/b",
    ],
)
def test_credentials_are_refused_naming_github_token_and_never_echoed(raw: str) -> None:
    with pytest.raises(InvalidRepoUrl) as excinfo:
        parse_repo_url(raw, *GITHUB)
    assert "GITHUB_TOKEN" in str(excinfo.value)
    assert "tok" not in str(excinfo.value).replace("GITHUB_TOKEN", "")


def test_ssh_user_is_not_a_credential() -> None:
    assert parse_repo_url("ssh://git@github.com/a/b.git", *GITHUB).repo_id == "github.com/a/b"
    with pytest.raises(InvalidRepoUrl, match="credentials"):
        parse_repo_url("ssh://git:pw@github.com/a/b.git", *GITHUB)


def test_bucket_names_are_valid_deterministic_and_distinct() -> None:
    ids = [
        "github.com/octo/hello-world",
        "github.com/octo/hello_world",
        "github.com/Octo/hello.world",
        "gitlab.example.com/" + "/".join(["very-long-group-name"] * 6) + "/name",
        "127.0.0.1:8080/a/b",
    ]
    names = [bucket_name(i) for i in ids]
    assert len(set(names)) == len(names)
    for name in names:
        assert re.fullmatch(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", name), name
        assert name.startswith("repo-") and "--" not in name[:-9]
    assert (
        bucket_name(ids[0])
        == bucket_name(ids[0])
        == "repo-octo-hello-world-" + bucket_name(ids[0])[-8:]
    )


def test_repo_id_round_trips() -> None:
    ref = parse_repo_id("127.0.0.1:8080/owner/name")
    assert ref.repo_id == "127.0.0.1:8080/owner/name"
    assert ref.url == "https://127.0.0.1:8080/owner/name.git"


def test_mask_secrets() -> None:
    text = "fatal: https://x-access-token:ghp_0123456789abcdefghij@github.com/a/b failed"
    masked = mask_secrets(text)
    assert "ghp_" not in masked and "x-access-token" not in masked and "github.com/a/b" in masked
    assert mask_secrets("Authorization: Basic dXNlcjpwYXNz") == "Authorization: Basic ***"
    assert mask_secrets("ssh://git@host/a.git") == "ssh://git@host/a.git"
    assert mask_secrets("my secret value", ("secret value",)) == "my ***"
