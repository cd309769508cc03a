"""Secret masking: generated URLs of every shape that carries a credential, in the contexts text
leaves the process in (error lines, JSON, git's messages), must come out without the secret.

Each generated case builds the text around a placeholder, so the property can insist that the
secret appears nowhere in the output while the rest of the text may contain anything.
"""

from __future__ import annotations

import json
import logging
import string

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from repovault_pipeline.core.common.identity import InvalidRepoUrl, parse_repo_url
from repovault_pipeline.core.common.redact import MASK, mask_and_cut, mask_secrets
from repovault_pipeline.core.intake.dead_letters import dead_letter

HERE = "QQSECRETQQ"  # placeholder for the secret while the text is built

# What a careless user may type as a password: URL punctuation included, `@`, `/`, `:`, `?`, `#`
# too. Not whitespace or quotes (they end a URL in running text), nor `*` (the mask itself).
USERINFO_CHARS = string.ascii_letters + string.digits + "-._~!$&()+,;=:%@/?#[]"
# A query value ends at `&` and `#`; everything else may be in it.
QUERY_CHARS = string.ascii_letters + string.digits + "-._~!$()+,;=:%@/?[]"
SECRET_PARAMS = [
    "private_token",
    "access_token",
    "token",
    "password",
    "passwd",
    "secret",
    "client_secret",
    "key",
    "api_key",
    "apiKey",
    "sig",
    "signature",
    "X-Amz-Signature",
    "X-Amz-Credential",
    "X-Amz-Security-Token",
    "X-Goog-Signature",
    "refresh_token",
    "id_token",
    "code",
]


def secret_text(alphabet: str) -> st.SearchStrategy[str]:
    """A password-like secret: 8-40 characters with a digit, an upper and a lower case letter
    (so that it cannot coincide with the words and numbers of the text around it)."""
    return st.text(alphabet, min_size=8, max_size=40).filter(
        lambda s: (
            any(c.isdigit() for c in s)
            and any(c.isupper() for c in s)
            and any(c.islower() for c in s)
        )
    )


secrets_in = {
    "userinfo": secret_text(USERINFO_CHARS),
    "query": secret_text(QUERY_CHARS),
    "word": secret_text(string.ascii_letters + string.digits + "-_."),
}
schemes = st.sampled_from(["https", "http", "ssh", "git+ssh", "ftp", "s3", "postgresql+psycopg2"])
hosts = st.sampled_from(["github.com", "127.0.0.1", "gitlab.example.com", "h"])
ports = st.sampled_from(["", ":22", ":8765", ":443"])
paths = st.sampled_from(["/owner/name.git", "/a/b", "", "/group/sub/name", "/"])
users = st.text(string.ascii_letters + string.digits + "_.-", min_size=0, max_size=12)


@st.composite
def url_with_userinfo(draw: st.DrawFn) -> tuple[str, str]:
    """`scheme://user:SECRET@host/path` or `scheme://SECRET@host/path` (a token as user)."""
    secret = draw(secrets_in["userinfo"])
    scheme = draw(schemes)
    # ssh://user@ names a user, not a secret: over ssh the secret is always a password.
    with_user = draw(st.booleans()) or "ssh" in scheme
    userinfo = f"{draw(users)}:{HERE}" if with_user else HERE
    template = f"{scheme}://{userinfo}@{draw(hosts)}{draw(ports)}{draw(paths)}"
    return template, secret


@st.composite
def scp_like(draw: st.DrawFn) -> tuple[str, str]:
    """`user:SECRET@host:path` (scp-like) and `user:SECRET@host/path` (no scheme)."""
    secret = draw(secrets_in["userinfo"])
    separator = draw(st.sampled_from([":", "/"]))
    template = f"{draw(users)}:{HERE}@{draw(hosts)}{separator}{draw(paths).lstrip('/') or 'a/b'}"
    return template, secret


@st.composite
def url_with_secret_parameter(draw: st.DrawFn) -> tuple[str, str]:
    """A URL whose query or fragment carries a credential among other parameters."""
    secret = draw(secrets_in["query"])
    name = draw(st.sampled_from(SECRET_PARAMS))
    name = draw(st.sampled_from([name, name.upper(), name.lower()]))
    before = draw(st.lists(st.sampled_from(["ref=main", "x=1", "page=2", "a="]), max_size=2))
    after = draw(st.lists(st.sampled_from(["ref=main", "x=1", "state=abc"]), max_size=2))
    query = "&".join([*before, f"{name}={HERE}", *after])
    lead = draw(st.sampled_from(["?", "#"]))
    url = f"{draw(schemes)}://{draw(hosts)}{draw(ports)}{draw(paths)}{lead}{query}"
    return url, secret


@st.composite
def named_value(draw: st.DrawFn) -> tuple[str, str]:
    """Credentials outside URLs: `NAME=value`, JSON fields, token formats, auth headers."""
    word = draw(secrets_in["word"])
    kind = draw(st.sampled_from(["env", "json", "github", "github_pat", "gitlab", "header"]))
    if kind == "env":
        name = draw(st.sampled_from(["GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "password", "Token"]))
        return f"{name}={HERE}", word
    if kind == "json":
        name = draw(st.sampled_from(["token", "password", "client_secret", "api_key"]))
        return json.dumps({"repo_url": "x", name: HERE}), word
    if kind == "header":
        scheme = draw(st.sampled_from(["Basic", "Bearer", "token"]))
        return f"> Authorization: {scheme} {HERE}", word
    alnum = draw(st.text(string.ascii_letters + string.digits, min_size=36, max_size=40))
    prefix = {"github": "ghp_", "github_pat": "github_pat_", "gitlab": "glpat-"}[kind]
    return HERE, prefix + alnum


def contexts(text: str) -> list[str]:
    """Where a URL shows up in what RepoVault writes."""
    return [
        text,
        f"'{text}'",
        f'"{text}"',
        repr(text),
        json.dumps({"repo_url": text, "source": "kafka"}),
        json.dumps(json.dumps({"original": text})),
        f"fatal: unable to access '{text}/': The requested URL returned error: 403",
        f"cloning {text} failed\nretrying {text}",
        f"<{text}>",
        f"({text}), next",
        f"url={text}",
    ]


def assert_masked(template: str, secret: str) -> None:
    for context in contexts(template):
        assume(secret not in context.replace(HERE, ""))
    for context in contexts(template):
        text = context.replace(HERE, secret)
        masked = mask_secrets(text)
        assert secret not in masked, (text, masked)
        assert MASK in masked


# No example database: nothing written into the checkout, every run draws afresh.
SETTINGS = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.filter_too_much],
)


@SETTINGS
@given(url_with_userinfo())
@example(("https://user:" + HERE + "@127.0.0.1/pallets/flask.git", "p@ss/w0rd:x"))
def test_userinfo_in_any_scheme_is_masked(case: tuple[str, str]) -> None:
    assert_masked(*case)


@SETTINGS
@given(scp_like())
@example(("user:" + HERE + "@127.0.0.1:pallets/flask.git", "S3cretPassw0rd"))
def test_scp_like_credentials_are_masked(case: tuple[str, str]) -> None:
    assert_masked(*case)


@SETTINGS
@given(url_with_secret_parameter())
@example(("https://127.0.0.1/pallets/flask.git?private_token=" + HERE, "S3cretT0kenValue"))
def test_query_and_fragment_credentials_are_masked(case: tuple[str, str]) -> None:
    assert_masked(*case)


@SETTINGS
@given(named_value())
def test_named_credentials_and_token_formats_are_masked(case: tuple[str, str]) -> None:
    assert_masked(*case)


@SETTINGS
@given(st.one_of(url_with_userinfo(), scp_like(), url_with_secret_parameter()))
def test_rejections_and_dead_letters_never_echo_the_secret(case: tuple[str, str]) -> None:
    """What a refused URL produces: the one-line reason and the `rechazados` record."""
    template, secret = case
    assume(secret not in template.replace(HERE, ""))
    url = template.replace(HERE, secret)
    for candidate in (url, json.dumps({"repo_url": url})):
        try:
            ref = parse_repo_url(candidate, ("https", "http", "ssh"), ("127.0.0.1", "github.com"))
        except InvalidRepoUrl as exc:
            reason = str(exc)
        else:  # accepted: then the secret is not part of what would be cloned
            pytest.fail(f"{candidate!r} was accepted as {ref}")
        assert secret not in reason
        letter = dead_letter(reason, candidate.encode(), "pendientes", 0, 7, "rid").decode()
        assert secret not in letter


@SETTINGS
@given(st.text(string.printable, min_size=8, max_size=40).filter(lambda s: s.strip() == s))
def test_the_configured_token_and_key_path_are_masked_whatever_they_look_like(
    value: str,
) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GITHUB_TOKEN", value)
        mp.setenv("REPOVAULT_SSH_KEY", "/run/secrets/" + value[::-1])
        text = f"fatal: auth with {value} and key /run/secrets/{value[::-1]} failed"
        masked = mask_secrets(text)
    assert value not in masked and value[::-1] not in masked


# Hand-checked outputs: what stays readable, so an operator can still tell what failed.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://u:p4ss@github.com/a/b", "https://***@github.com/a/b"),
        ("https://ghp_abc@github.com/a/b", "https://***@github.com/a/b"),
        ("ssh://git@github.com/a/b.git", "ssh://git@github.com/a/b.git"),
        ("git@github.com:a/b.git", "git@github.com:a/b.git"),
        ("ssh://git:pw@host/a.git", "ssh://***@host/a.git"),
        ("user:S3cretPassw0rd@127.0.0.1:pallets/flask.git", "***@127.0.0.1:pallets/flask.git"),
        (
            "https://127.0.0.1/pallets/flask.git?private_token=S3cret&ref=main",
            "https://127.0.0.1/pallets/flask.git?private_token=***&ref=main",
        ),
        (
            "https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA%2F2026&X-Amz-Signature=ab12&x=1",
            "https://b.s3.amazonaws.com/k?X-Amz-Credential=***&X-Amz-Signature=***&x=1",
        ),
        ("https://h/cb#access_token=abc&state=1", "https://h/cb#access_token=***&state=1"),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic ***"),
        ('{"repo_url": "x", "token": "abc"}', '{"repo_url": "x", "token": "***"}'),
        ("exit code=128, partition_key=a/b", "exit code=128, partition_key=a/b"),
        ("host '127.0.0.1' is not allowed", "host '127.0.0.1' is not allowed"),
    ],
)
def test_masking_keeps_what_is_not_a_secret(text: str, expected: str) -> None:
    assert mask_secrets(text) == expected


@pytest.mark.parametrize(
    "filler",
    ["a=", "a,b:c", "https://h/p?x=1&", ",", "=a:b", '"a": "', "a.a.", "://", "token="],
)
def test_long_hostile_text_is_masked_whole(filler: str) -> None:
    """Third parties choose what reaches the masking: 50,000 repetitions of shapes that make
    naive patterns recurse or backtrack still come back, with the secret masked. (The rules are
    linear in the text; this test asserts the outcome, not a time.)"""
    secret = "Zx9Secret0Value"
    text = filler * (50_000 // len(filler)) + f" https://u:{secret}@h/x"
    masked = mask_secrets(text)
    assert secret not in masked and masked.endswith("https://***@h/x")


def percent_encoded(draw: st.DrawFn, name: str) -> str:
    """`name` with some of its characters percent-encoded, once or twice."""
    out = []
    for char in name:
        times = draw(st.sampled_from([0, 0, 1, 2]))
        for _ in range(times):
            char = "".join(f"%{b:02X}" for b in char.encode())
        out.append(char)
    return "".join(out)


@st.composite
def url_with_encoded_secret_parameter(draw: st.DrawFn) -> tuple[str, str]:
    """`?private%5Ftoken=SECRET`, `;%70assword=SECRET`: a server decodes the name and reads
    the credential; the masker must too."""
    secret = draw(secrets_in["word"])
    name = percent_encoded(draw, draw(st.sampled_from(SECRET_PARAMS)))
    lead = draw(st.sampled_from(["?", "#", ";", "?x=1&"]))
    return f"https://{draw(hosts)}{draw(paths)}{lead}{name}={HERE}", secret


@settings(SETTINGS, max_examples=100)
@given(url_with_encoded_secret_parameter())
@example(("https://127.0.0.1/o/r.git?private%5Ftoken=" + HERE, "S3cretPassw0rd"))
@example(("https://127.0.0.1/o/r.git?%70assword=" + HERE, "S3cretPassw0rd"))
@example(("git@127.0.0.1:o/demo.git;private%255Ftoken=" + HERE, "S3cretPassw0rd"))
def test_percent_encoded_parameter_names_are_masked(case: tuple[str, str]) -> None:
    assert_masked(*case)


@settings(SETTINGS, max_examples=50)
@given(st.one_of(url_with_userinfo(), scp_like(), url_with_secret_parameter()))
@example(("https://alice:" + HERE + "@127.0.0.1/o/r.git", "S3cretPassw0rdXYZ"))
def test_a_cut_never_leaves_a_piece_of_the_secret(case: tuple[str, str]) -> None:
    """Masked first, then cut: wherever the cut falls, the text never ends with the start of
    the secret (as `https://alice:S3cretPassw0rdXYZ` without its `@host` did)."""
    template, secret = case
    text = f"{'x' * 20} {template.replace(HERE, secret)} and more"
    assume(secret[:4] not in mask_secrets(text))
    for limit in range(len(text) + 1):
        cut = mask_and_cut(text, limit)
        assert not any(cut.endswith(secret[:k]) for k in range(4, len(secret) + 1)), cut


def test_a_log_record_is_masked_whoever_logs_it() -> None:
    """Logs are an exit: a record made by any logger (here one RepoVault does not own) of a
    process that imported RepoVault comes out masked, arguments included."""
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(self.format(record))

    logger = logging.getLogger("some.library")
    handler = Keep()
    logger.addHandler(handler)
    try:
        logger.warning("GET %s failed", "https://h/o/r.git?private%5Ftoken=S3cretPassw0rd")
    finally:
        logger.removeHandler(handler)
    assert seen == ["GET https://h/o/r.git?private_token=*** failed"]


def test_an_age_secret_key_is_masked_wherever_it_stands() -> None:
    key = "AGE-SECRET-KEY-1E7FS9RSR4E7G0VPE8DHKQY0QX8Z6HWT3MJGMP6RZ6VN4STA4KN6QY3V3P4"
    assert key not in mask_secrets(f"age: identity {key} rejected")
