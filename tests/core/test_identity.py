"""Repository identity: what is accepted, what `repo_id` it gets, what is refused and why."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repovault_pipeline.core.common.identity import (
    InvalidRepoUrl,
    bucket_name,
    parse_repo_id,
    parse_repo_url,
    web_origin,
)
from repovault_pipeline.core.common.redact import mask_secrets

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


TOKEN = "ghp_" + "k3Y9" * 9  # token-shaped: what a leak would really look like
PASSWORD = "S3cretPassw0rd"


@pytest.mark.parametrize(
    ("raw", "secret"),
    [
        (f"https://user:{PASSWORD}@github.com/a/b", PASSWORD),
        (f"https://{TOKEN}@github.com/a/b", TOKEN),
        (f"https://x-access-token:{TOKEN}@github.com/a/b", TOKEN),
        (f"ssh://git:{PASSWORD}@github.com/a/b.git", PASSWORD),
        (f"user:{PASSWORD}@github.com:a/b.git", PASSWORD),
        (f"git:{PASSWORD}@github.com/a/b", PASSWORD),
    ],
)
def test_credentials_are_refused_naming_github_token_and_never_echoed(
    raw: str, secret: str
) -> None:
    with pytest.raises(InvalidRepoUrl) as excinfo:
        parse_repo_url(raw, *GITHUB)
    assert "carries credentials" in str(excinfo.value)
    assert "GITHUB_TOKEN" in str(excinfo.value)
    assert secret not in str(excinfo.value)


@pytest.mark.parametrize(
    ("raw", "secret"),
    [
        (f"https://github.com/a/b?private_token={PASSWORD}", PASSWORD),
        (f"https://github.com/a/b.git#access_token={TOKEN}", TOKEN),
        (f"-c http.extraheader=Authorization: token {TOKEN}", TOKEN),
        (f"{TOKEN}/b/c", TOKEN),
        (f"https://github.com/a/b%20{TOKEN}", TOKEN),
        (f"ftp://u:{PASSWORD}@github.com/a/b", PASSWORD),
    ],
)
def test_other_rejections_never_echo_a_secret(raw: str, secret: str) -> None:
    with pytest.raises(InvalidRepoUrl) as excinfo:
        parse_repo_url(raw, *GITHUB)
    assert secret not in str(excinfo.value)


@pytest.mark.parametrize(
    ("raw", "allowed", "accepted"),
    [
        ("http://127.0.0.1:8765/o/r.git", ("127.0.0.1:8765",), True),
        ("http://127.0.0.1:8766/o/r.git", ("127.0.0.1:8765",), False),
        ("http://127.0.0.1/o/r.git", ("127.0.0.1:8765",), False),
        ("http://127.0.0.1:8766/o/r.git", ("127.0.0.1",), True),
        ("http://127.0.0.1/o/r.git", ("127.0.0.1",), True),
        ("https://github.com/o/r", ("github.com:443",), True),  # the scheme's default port
        ("https://github.com:8443/o/r", ("github.com:443",), False),
        ("ssh://git@github.com/o/r.git", ("github.com:22",), True),
        ("git@github.com:o/r.git", ("github.com:443",), False),
        ("http://localhost:8765/o/r.git", ("127.0.0.1:8765",), False),
    ],
)
def test_allowed_hosts_entries_with_a_port_allow_only_that_port(
    raw: str, allowed: tuple[str, ...], accepted: bool
) -> None:
    schemes = ("http", "https", "ssh")
    if accepted:
        assert parse_repo_url(raw, schemes, allowed).url
        return
    with pytest.raises(InvalidRepoUrl, match="is not allowed") as excinfo:
        parse_repo_url(raw, schemes, allowed)
    assert f"REPOVAULT_ALLOWED_HOSTS={','.join(allowed)}" in str(excinfo.value)


def test_a_refused_port_is_named() -> None:
    with pytest.raises(InvalidRepoUrl) as excinfo:
        parse_repo_url("http://127.0.0.1:8766/o/r.git", ("http",), ("127.0.0.1:8765",))
    assert "host '127.0.0.1:8766' is not allowed" in str(excinfo.value)


@pytest.mark.parametrize(
    ("api", "origin"),
    [
        ("https://api.github.com", ("https", "github.com", None)),
        ("https://api.github.com/", ("https", "github.com", None)),
        ("https://ghe.example.com/api/v3", ("https", "ghe.example.com", None)),
        ("https://GHE.example.com:8443/api/v3", ("https", "ghe.example.com", 8443)),
        ("http://127.0.0.1:8765/api/v3", ("http", "127.0.0.1", 8765)),
        ("https://ghe.example.com:443/api/v3", ("https", "ghe.example.com", None)),
        ("https://ghe.example.com:port/api/v3", ("", "", None)),  # unusable: the token stays
        ("https://api.bitbucket.org/2.0", ("https", "bitbucket.org", None)),
        ("https://codeberg.org/api/v1", ("https", "codeberg.org", None)),
    ],
)
def test_the_token_host_follows_the_forge_api(api: str, origin: tuple) -> None:
    assert web_origin(api) == origin


def test_ssh_user_is_not_a_credential() -> None:
    assert parse_repo_url("ssh://git@github.com/a/b.git", *GITHUB).repo_id == "github.com/a/b"
    with pytest.raises(InvalidRepoUrl, match="credentials"):
        parse_repo_url("ssh://git:pw@github.com/a/b.git", *GITHUB)


# Expected names written by hand: prefix + slug of owner/name + "-" + the first 8 hex digits of
# sha256(repo_id), the digits taken from `printf %s REPO_ID | sha256sum`, not from the code.
LONG_GROUP = "/".join(["very-long-group-name"] * 6)


@pytest.mark.parametrize(
    ("repo_id", "prefix", "expected"),
    [
        ("github.com/octo/hello-world", "repo-", "repo-octo-hello-world-9c915621"),
        ("github.com/octo/hello_world", "repo-", "repo-octo-hello-world-57eb3812"),
        ("github.com/Octo/hello.world", "repo-", "repo-octo-hello-world-200275b0"),
        ("127.0.0.1:8080/a/b", "repo-", "repo-a-b-20882e77"),
        ("127.0.0.1:8080/a/b", "vault-", "vault-a-b-20882e77"),
        # 63 characters: the slug is cut to the 49 that fit, then the hash.
        (
            f"gitlab.example.com/{LONG_GROUP}/name",
            "repo-",
            "repo-very-long-group-name-very-long-group-name-very-lo-36eef544",
        ),
        ("github.com/--/__", "repo-", "repo-repo-f34053be"),  # nothing readable left
    ],
)
def test_bucket_names_are_the_documented_ones(repo_id: str, prefix: str, expected: str) -> None:
    assert bucket_name(repo_id, prefix) == expected


repo_ids = st.builds(
    lambda host, segments: "/".join([host, *segments]),
    st.sampled_from(["github.com", "127.0.0.1:8080", "gitlab.example.com"]),
    st.lists(st.text("abcxyz019-_.~", min_size=1, max_size=30), min_size=2, max_size=6),
)


@settings(max_examples=300, deadline=None, database=None)
@given(repo_ids, repo_ids, st.sampled_from(["repo-", "t1-2-", "a" * 30]))
def test_bucket_names_follow_the_s3_rules_and_differ_per_repository(
    first: str, second: str, prefix: str
) -> None:
    names = [bucket_name(first, prefix), bucket_name(second, prefix)]
    for name in names:
        assert 3 <= len(name) <= 63, name
        assert re.fullmatch(r"[a-z0-9][a-z0-9-]*[a-z0-9]", name), name
        assert name.startswith(prefix) and "--" not in name.removeprefix(prefix), name
    assert (names[0] == names[1]) == (first == second)


def test_repo_id_round_trips() -> None:
    ref = parse_repo_id("127.0.0.1:8080/owner/name")
    assert ref.repo_id == "127.0.0.1:8080/owner/name"
    assert ref.url == "https://127.0.0.1:8080/owner/name.git"


def test_mask_secrets() -> None:
    token = "ghp_0123456789abcdefghij"
    text = f"fatal: https://x-access-token:{token}@github.com/a/b failed"
    masked = mask_secrets(text)
    assert token not in masked and "x-access-token" not in masked and "github.com/a/b" in masked
    assert mask_secrets("Authorization: Basic dXNlcjpwYXNz") == "Authorization: Basic ***"
    assert mask_secrets("ssh://git@host/a.git") == "ssh://git@host/a.git"
    assert mask_secrets("my secret value", ("secret value",)) == "my ***"
