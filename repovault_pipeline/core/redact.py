"""Masking of secrets in any text that may leave the process (logs, rows, messages, objects).

`mask_secrets` is the one function every outgoing text goes through. It masks:

1. the configured secrets wherever they occur, whatever their format: `GITHUB_TOKEN` (and the
   `Authorization: Basic` value git would send for it), the `REPOVAULT_SSH_KEY` path, and the
   caller's `extra_secrets`;
2. URL userinfo in any scheme (`scheme://user:password@`, `scheme://token@`), up to the last `@`
   of the URL, so a password holding `@` or `/` is masked whole; `ssh://git@` (a user name
   without a password) is kept;
3. scp-like userinfo with a password (`user:password@host:path`);
4. the value of every URL query or fragment parameter, `name=value` pair or JSON field whose name
   carries a credential (`token`, `private_token`, `access_token`, `password`, `secret`,
   `client_secret`, `key`, `api_key`, `sig`, `signature`, `X-Amz-Signature`, `X-Amz-Credential`,
   `code`, ...: see `_is_secret_name`);
5. GitHub and GitLab token formats standing on their own, and HTTP authorization header values.

Masking errs on the side of hiding too much: a URL with an `@` in its path loses the text
before it, never a secret.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterator

MASK = "***"

# Characters that end a URL in running text: whitespace, quotes, angle brackets, backticks.
_END = r"\s\"'<>`"
# A token starts at the beginning of the text or after one of these.
_START = rf"(?<![^{_END}(\[{{,;=|])"

# 2. userinfo of any URL: everything between `scheme://` and the last `@` of the URL.
_URL_USERINFO = re.compile(rf"(?i)\b([a-z][a-z0-9+.-]*://)([^{_END}]*)@")
# 3. scp-like `user:password@host...`; `(?!//)` leaves `scheme://` to rule 2.
_SCP_USERINFO = re.compile(rf"{_START}([^{_END}@/:]*:(?!//)[^{_END}]*)@")
# 4. `name=value` after `?`, `&`, `;`, `#` or at a token start; JSON `"name": "value"`.
_PARAM = re.compile(rf"(?:(?<=[?&;#])|{_START})([A-Za-z0-9_.\-\[\]]+)=([^&#{_END}]*)")
# (group 1: the backslashes of JSON text that is itself inside a JSON string)
_JSON_FIELD = re.compile(r'(\\*)"([A-Za-z0-9_.\-]+)\1"(\s*:\s*)\1"(.*?)(?<!\\)\1"')
# 5. Token formats: GitHub (classic, fine-grained, app, OAuth), GitLab (glpat-, gldt-, ...).
_TOKEN_FORMAT = re.compile(
    r"\b(?:gh[pousr]_[A-Za-z0-9]{16,}|github_pat_[A-Za-z0-9_]{20,}|gl[a-z]{1,6}-[A-Za-z0-9_\-]{20,})"
)
# HTTP authorization headers as git prints them with GIT_TRACE / GIT_CURL_VERBOSE.
_AUTH_HEADER = re.compile(r"(?i)(authorization:\s*\w+\s+)\S+")

# Parameter names that carry a credential: any name holding one of these words, names ending in a
# kind of key, and (inside URLs only, where they are unambiguous) a few short names.
_SECRET_WORDS = ("token", "secret", "passw", "signature", "credential", "authorization")
_KEY_NAME = re.compile(r"(?:^|api|access|secret|private|signing|auth|ssh|session|encryption)_?key$")
_URL_ONLY_NAMES = {"sig", "code", "auth", "pass", "pwd", "jwt", "session", "sessionid", "sas"}
# Environment variables whose values are secrets wherever they appear.
_SECRET_ENV = ("GITHUB_TOKEN", "REPOVAULT_SSH_KEY")


def mask_secrets(text: str, extra_secrets: tuple[str | None, ...] = ()) -> str:
    """Return `text` with every credential masked (see the module docstring for the rules)."""
    if not text:
        return text
    for secret in sorted(set(_configured_secrets(extra_secrets)), key=len, reverse=True):
        text = text.replace(secret, MASK)
    # Parameters first: a value holding `@` must not be cut in two by the userinfo rules.
    text = _PARAM.sub(_mask_param, text)
    text = _JSON_FIELD.sub(_mask_json_field, text)
    text = _URL_USERINFO.sub(_mask_url_userinfo, text)
    text = _SCP_USERINFO.sub(MASK + "@", text)
    text = _TOKEN_FORMAT.sub(MASK, text)
    return _AUTH_HEADER.sub(lambda m: m.group(1) + MASK, text)


def _configured_secrets(extra: tuple[str | None, ...]) -> Iterator[str]:
    for value in (*(os.environ.get(name, "").strip() for name in _SECRET_ENV), *extra):
        if value and len(value) >= 4:
            yield value
    token = os.environ.get("GITHUB_TOKEN", "").strip()
    if token:
        yield base64.b64encode(f"x-access-token:{token}".encode()).decode()


def _mask_url_userinfo(match: re.Match[str]) -> str:
    """`ssh://git@host` names a user, not a secret; every other userinfo is masked."""
    scheme, userinfo = match.group(1), match.group(2)
    if "ssh" in scheme.lower() and not re.search(r"[:@/]", userinfo):
        return match.group(0)
    return f"{scheme}{MASK}@"


def _is_secret_name(name: str, in_url: bool) -> bool:
    """Whether a parameter called `name` carries a credential (`X-Amz-Signature`, `api_key`...);
    `code`, `sig` and the like only count inside a URL, where nothing else uses them."""
    normal = name.lower().replace("-", "_")
    return (
        any(word in normal for word in _SECRET_WORDS)
        or bool(_KEY_NAME.search(normal))
        or (in_url and normal in _URL_ONLY_NAMES)
    )


def _mask_param(match: re.Match[str]) -> str:
    name, value = match.group(1), match.group(2)
    in_url = match.start() > 0 and match.string[match.start() - 1] in "?&;#"
    if value and _is_secret_name(name, in_url):
        return f"{name}={MASK}"
    # `url=https://h/x?token=...`: a harmless name may hold a URL with parameters of its own.
    return f"{name}={_PARAM.sub(_mask_param, value)}"


def _mask_json_field(match: re.Match[str]) -> str:
    quote, name, colon, value = match.groups()
    if value and _is_secret_name(name, False):
        value = MASK
    else:  # the value may be JSON text of its own (a message quoted in a message)
        value = _JSON_FIELD.sub(_mask_json_field, value)
    return f'{quote}"{name}{quote}"{colon}{quote}"{value}{quote}"'
