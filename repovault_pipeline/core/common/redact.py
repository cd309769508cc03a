"""Masking of secrets in any text that may leave the process (logs, rows, messages, objects).

`mask_secrets` is the one function every outgoing text goes through. It masks:

1. the configured secrets wherever they occur, whatever their format: `GITHUB_TOKEN` (and the
   `Authorization: Basic` value git would send for it), the `REPOVAULT_SSH_KEY` path, and the
   caller's `extra_secrets`;
2. the value of every URL query or fragment parameter, `name=value` pair or JSON field whose name
   carries a credential (`token`, `private_token`, `access_token`, `password`, `secret`,
   `client_secret`, `key`, `api_key`, `sig`, `signature`, `X-Amz-Signature`, `X-Amz-Credential`,
   `code`, ...: see `_is_secret_name`);
3. URL userinfo in any scheme (`scheme://user:password@`, `scheme://token@`), up to the last `@`
   of the URL, so a password holding `@` or `/` is masked whole; `ssh://git@` (a user name
   without a password) is kept;
4. scp-like userinfo with a password (`user:password@host:path`);
5. GitHub, GitLab, RepoVault API (`rvt_`) and JWT token formats and age secret keys standing
   on their own, and HTTP authorization header values;
6. all of the above once more on every run of URL characters holding percent-escapes, decoded
   (`?private%5Ftoken=`, `%70assword=`, twice-encoded too): a server decodes before it reads, so
   the masker does as well. A run where that finds a credential is given back decoded and masked.

Text is masked before it is cut (`mask_and_cut`): a cut can split a credential into a part no
rule recognises (`https://alice:S3cret` without its `@host`).

Masking errs on the side of hiding too much: a URL with an `@` in its path loses the text before
it, never a secret. Its time is linear in the length of the text, whatever the text: it runs on
input from third parties.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Iterator
from urllib.parse import unquote

from repovault_pipeline.core.common.settings import configured_secrets

MASK = "***"

# Characters that end a URL in running text: whitespace, quotes, angle brackets, backticks.
_END = r"\s\"'<>`"
_URL_RUN = re.compile(rf"[^{_END}]+")
# Inside such a run, an scp-like `user:password@` starts at its beginning or after one of these.
_BOUNDARY = frozenset("([{,;=|")
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")
# 2. `name=` after `?`, `&`, `;`, `#`, or where a run or an scp-like token may start; the value
# runs to the next `&`, `#` or end of the URL. JSON `"name": "value"` (group 1: the backslashes of
# JSON text quoted inside a JSON string).
# A name starts where a run of name characters starts (never inside one: the scan stays linear
# on a long run such as `[[[[...`).
_NAME_CHARS = r"A-Za-z0-9_.\-\[\]"
_PARAM_NAME = re.compile(
    rf"(?:(?<=[?&;#])|(?<![^{_END}(\[{{,;=|]))(?<![{_NAME_CHARS}])([{_NAME_CHARS}]++)="
)
_PARAM_END = re.compile(rf"[&#{_END}]")
_JSON_FIELD = re.compile(r'(?<!\\)(\\*+)"([A-Za-z0-9_.\-]++)\1"(\s*+:\s*+)\1"(.*?)(?<!\\)\1"')
# 5. Token formats: GitHub (classic, fine-grained, app, OAuth), GitLab (glpat-, gldt-, ...),
# RepoVault's API tokens (rvt_), JWTs (a base64url JSON header, `eyJ`, and two more parts) and
# age secret keys (the identity of REPOVAULT_DECRYPT_IDENTITY, should one ever be quoted).
_TOKEN_FORMAT = re.compile(
    r"\b(?:gh[pousr]_[A-Za-z0-9]{16,}|github_pat_[A-Za-z0-9_]{20,}|gl[a-z]{1,6}-[A-Za-z0-9_\-]{20,}"
    r"|rvt_[A-Za-z0-9_\-]{20,}|eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"
    r"|AGE-SECRET-KEY-1[0-9A-Z]{20,})"
)
# HTTP authorization headers as git prints them with GIT_TRACE / GIT_CURL_VERBOSE.
_AUTH_HEADER = re.compile(r"(?i)(authorization:\s*\w+\s+)\S+")

# Parameter names that carry a credential: any name holding one of these words, names ending in a
# kind of key, and (inside URLs only, where they are unambiguous) a few short names.
_SECRET_WORDS = ("token", "secret", "passw", "signature", "credential", "authorization")
_KEY_NAME = re.compile(r"(?:^|api|access|secret|private|signing|auth|ssh|session|encryption)_?key$")
_URL_ONLY_NAMES = {"sig", "code", "auth", "pass", "pwd", "jwt", "session", "sessionid", "sas"}
_MAX_DECODINGS = 4  # `%252570assword` is three; a server decodes once or twice
# Characters a decoded run may hold that must not reach a one-line message: escaped again.
_UNPRINTABLE = re.compile(r"[\x00-\x20\x7f]")


def mask_secrets(text: str, extra_secrets: tuple[str | None, ...] = ()) -> str:
    """Return `text` with every credential masked (see the module docstring for the rules)."""
    if not text:
        return text
    for secret in sorted(set(_configured_secrets(extra_secrets)), key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _mask_rules(text)
    return _URL_RUN.sub(_mask_decoded, text) if "%" in text else text


def mask_and_cut(text: str, max_chars: int) -> str:
    """`text` masked, then cut to `max_chars`: never the other way round."""
    return mask_secrets(text)[:max_chars]


def credential_header(name: str) -> bool:
    """Whether an HTTP header called `name` carries a credential (`Authorization`,
    GitLab's `PRIVATE-TOKEN`, `Job-Token`, `X-Api-Key`, `Cookie`, ...): what a client must never
    send to another host."""
    return name.lower() in ("cookie", "proxy-authorization") or _is_secret_name(name, False)


def mask_log_records() -> None:
    """Mask every log record of this process when it is made (`logging`'s record factory): the
    logs are an exit like the others, whoever logs (RepoVault, Dagster, a library quoting a
    URL). Idempotent."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "masks_secrets", False):
        return

    def masked_record(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # arguments that do not fit: logging reports it
            return record
        record.msg, record.args = mask_secrets(message), None
        return record

    masked_record.masks_secrets = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(masked_record)


def _mask_rules(text: str) -> str:
    """Rules 2 to 5."""
    # Parameters first: a value holding `@` must not be cut in two by the userinfo rules.
    text = _mask_params(text)
    text = _JSON_FIELD.sub(_mask_json_field, text)
    text = _URL_RUN.sub(_mask_userinfo, text)
    text = _TOKEN_FORMAT.sub(MASK, text)
    return _AUTH_HEADER.sub(lambda m: m.group(1) + MASK, text)


def _mask_decoded(run: re.Match[str]) -> str:
    """Rule 6 on one run of URL characters, after rules 2-5 masked it as it is written."""
    token = run.group(0)
    if "%" not in token:
        return token
    decoded = token
    for _ in range(_MAX_DECODINGS):
        once = unquote(decoded, errors="backslashreplace")
        if once == decoded:
            break
        decoded = once
    masked = _mask_rules(decoded)
    if masked == decoded:  # nothing secret: the run keeps its spelling
        return token
    return _UNPRINTABLE.sub(lambda m: f"%{ord(m.group(0)):02X}", masked)


def _configured_secrets(extra: tuple[str | None, ...]) -> Iterator[str]:
    secrets = configured_secrets()
    token = secrets[0]  # GITHUB_TOKEN
    for value in (*secrets, *extra):
        if value and len(value) >= 4:
            yield value
    if token:
        yield base64.b64encode(f"x-access-token:{token}".encode()).decode()


def _is_secret_name(name: str, in_url: bool) -> bool:
    """Whether a parameter called `name` carries a credential (`X-Amz-Signature`, `api_key`...);
    `code`, `sig` and the like only count inside a URL, where nothing else uses them."""
    normal = name.lower().replace("-", "_")
    return (
        any(word in normal for word in _SECRET_WORDS)
        or bool(_KEY_NAME.search(normal))
        or (in_url and normal in _URL_ONLY_NAMES)
    )


def _mask_params(text: str) -> str:
    """Rule 2 for `name=value`. A harmless name's value is scanned on (`url=https://h/x?token=`
    holds a secret parameter of its own); a secret's value is masked and skipped."""
    parts, cursor = [], 0
    for match in _PARAM_NAME.finditer(text):
        start = match.start()
        in_url = start > 0 and text[start - 1] in "?&;#"
        if start < cursor or not _is_secret_name(match.group(1), in_url):
            continue
        end_match = _PARAM_END.search(text, match.end())
        end = end_match.start() if end_match else len(text)
        if end > match.end():
            parts += [text[cursor : match.end()], MASK]
            cursor = end
    return "".join(parts) + text[cursor:]


def _mask_json_field(match: re.Match[str]) -> str:
    quote, name, colon, value = match.groups()
    if value and _is_secret_name(name, False):
        value = MASK
    else:  # the value may be JSON text of its own (a message quoted in a message)
        value = _JSON_FIELD.sub(_mask_json_field, value)
    return f'{quote}"{name}{quote}"{colon}{quote}"{value}{quote}"'


def _mask_userinfo(run: re.Match[str]) -> str:
    """Rules 3 and 4 on one run of URL characters: everything from the first `scheme://` (or
    the start of an scp-like `user:password`) to the last `@` of the run."""
    token = run.group(0)
    last_at = token.rfind("@")
    if last_at <= 0:
        return token
    scheme = _first_scheme(token, last_at)
    if scheme is not None:
        first, end = scheme
        userinfo = token[end:last_at]
        if "ssh" in token[first:end].lower() and not any(c in userinfo for c in ":@/"):
            return token  # ssh://git@host names a user, not a secret
        return token[:end] + MASK + token[last_at:]
    start = _scp_credentials_start(token, last_at)
    return token if start is None else token[:start] + MASK + token[last_at:]


def _first_scheme(token: str, limit: int) -> tuple[int, int] | None:
    """(start, end) of the first `scheme://` (a letter-led run of scheme characters, then `://`)
    ending before `limit`."""
    at = token.find("://", 0, limit)
    while at != -1:
        first = at
        while first > 0 and token[first - 1] in _SCHEME_CHARS:
            first -= 1
        while first < at and not token[first].isalpha():
            first += 1
        if first < at:
            return first, at + 3
        at = token.find("://", at + 3, limit)
    return None


def _scp_credentials_start(token: str, last_at: int) -> int | None:
    """Where `user:password@` starts: the first token start (the run's beginning, or after a
    boundary character) from which the first of `@ / :` is a `:` not opening `://`."""
    next_special = [last_at] * (last_at + 1)  # index of the next `@`, `/` or `:`, right to left
    for i in range(last_at - 1, -1, -1):
        next_special[i] = i if token[i] in "@/:" else next_special[i + 1]
    for start in range(last_at):
        if start and token[start - 1] not in _BOUNDARY:
            continue
        colon = next_special[start]
        if colon < last_at and token[colon] == ":" and token[colon + 1 : colon + 3] != "//":
            return start
    return None
