"""Masking of secrets in any text that may leave the process (logs, rows, messages, objects)."""

from __future__ import annotations

import os
import re

MASK = "***"

# userinfo of any URL-looking text: scheme://user:password@  or  scheme://token@
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]*@")
# GitHub token formats (classic, fine-grained, app, OAuth) even when they appear on their own.
_GITHUB_TOKEN = re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{16,}|github_pat_[A-Za-z0-9_]{20,})\b")
# HTTP authorization headers as git prints them with GIT_TRACE / GIT_CURL_VERBOSE.
_AUTH_HEADER = re.compile(r"(?i)(authorization:\s*\w+\s+)\S+")


def mask_secrets(text: str, extra_secrets: tuple[str | None, ...] = ()) -> str:
    """Return `text` with credentials masked: URL userinfo, GitHub tokens, auth headers.

    `GITHUB_TOKEN` from the environment and any `extra_secrets` are masked wherever they occur,
    whatever their format.
    """
    if not text:
        return text
    for secret in (os.environ.get("GITHUB_TOKEN"), *extra_secrets):
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    text = _URL_USERINFO.sub(lambda m: _keep_ssh_user(m), text)
    text = _GITHUB_TOKEN.sub(MASK, text)
    return _AUTH_HEADER.sub(lambda m: m.group(1) + MASK, text)


def _keep_ssh_user(match: re.Match[str]) -> str:
    """`ssh://git@host` names a user, not a secret; every other userinfo is masked."""
    scheme = match.group(1)
    userinfo = match.group(0)[len(scheme) : -1]
    if scheme.lower() == "ssh://" and ":" not in userinfo:
        return match.group(0)
    return f"{scheme}{MASK}@"
