"""The field types of `Settings` (core/common/settings.py): how a variable's text becomes a
value, and the one-line refusal when it cannot.

A check raises `UnusableValue` with the words that follow the variable's name
(`=0 is below 1; ...`); `Settings.from_env` puts the name in front and raises a ConfigError.
Values given as Python objects (`Settings(max_repo_mb=5)`) pass the text steps untouched.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator
from pydantic_core import PydanticUseDefault
from pydantic_settings import NoDecode

_BUCKET_PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,29}$")
_AGE_RECIPIENT_STARTS = ("age1", "ssh-ed25519 ", "ssh-rsa ")


class UnusableValue(ValueError):
    """A variable's value RepoVault cannot use; `str()` is what follows the variable's name."""


def _text(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


def _entries(value: object) -> object:
    """A comma list's entries, stripped; blank entries dropped."""
    if not isinstance(value, str):
        return value
    return tuple(part.strip() for part in value.split(",") if part.strip())


def at_least(minimum: int) -> BeforeValidator:
    """A whole number of at least `minimum`."""

    def check(value: object) -> object:
        if isinstance(value, str):
            raw = value.strip()
            try:
                value = int(raw)
            except ValueError:
                raise UnusableValue(
                    f"={raw!r} is not an integer; set it to a whole number"
                ) from None
        if isinstance(value, int) and value < minimum:
            raise UnusableValue(f"={value} is below {minimum}; set it to at least {minimum}")
        return value

    return BeforeValidator(check)


def one_of(choices: tuple[str, ...]) -> BeforeValidator:
    """One of `choices`, given in any case (lowered)."""

    def check(value: object) -> object:
        value = value.strip().lower() if isinstance(value, str) else value
        if value not in choices:
            raise UnusableValue(f"={value!r} is not one of {', '.join(choices)}")
        return value

    return BeforeValidator(check)


def spelled_as(choices: tuple[str, ...]) -> BeforeValidator:
    """One of `choices`, given in any case, in the spelling of `choices`."""
    names = {choice.lower(): choice for choice in choices}

    def check(value: object) -> object:
        if not isinstance(value, str):
            return value
        if value.strip().lower() not in names:
            raise UnusableValue(f"={value.strip()!r} is not one of {', '.join(choices)}")
        return names[value.strip().lower()]

    return BeforeValidator(check)


def _flag(value: object) -> object:
    if not isinstance(value, str):
        return value
    raw = value.strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise UnusableValue(f"={raw!r} is not a yes/no value; set it to true or false")


def _lowered_list(value: object) -> object:
    return _entries(value.lower()) if isinstance(value, str) else value


def _list_or_default(value: object) -> object:
    """A comma list as given; no entry at all is the default."""
    value = _entries(value)
    if not value:
        raise PydanticUseDefault()
    return value


def _recipients(value: object) -> object:
    """Age public keys as given (not lowered: an ssh key is case-sensitive)."""
    value = _entries(value)
    for recipient in value if isinstance(value, tuple) else ():
        if not recipient.startswith(_AGE_RECIPIENT_STARTS):
            raise UnusableValue(
                f" has {recipient[:24]!r}, which is not an age public key (age1..., or an "
                "ssh-ed25519/ssh-rsa public key); `age-keygen -y IDENTITY_FILE` prints the one "
                "of an identity"
            )
    return value


# An Apprise URL may hold commas itself (`mailto://...?to=a@x.org,b@x.org`): a list of them is
# cut only where a comma is followed by the next URL's `scheme://`.
_NEXT_URL = re.compile(r",\s*(?=[A-Za-z][A-Za-z0-9+.-]*://)")


def _urls(value: object) -> object:
    """Comma-separated URLs, each kept whole (see _NEXT_URL); blank entries dropped."""
    if not isinstance(value, str):
        return value
    return tuple(u.strip().rstrip(",").strip() for u in _NEXT_URL.split(value) if u.strip(", "))


def names_of(choices: tuple[str, ...]) -> BeforeValidator:
    """A comma list of names, each one of `choices` (any case); no entry at all is the
    default. An unknown name is refused with the valid ones."""

    def check(value: object) -> object:
        value = _lowered_list(value)
        if not value:
            raise PydanticUseDefault()
        for name in value if isinstance(value, tuple) else ():
            if name not in choices:
                raise UnusableValue(
                    f" has {name[:40]!r}, which is not one of {', '.join(choices)}; "
                    "list some of those, comma-separated"
                )
        return value

    return BeforeValidator(check)


def _bucket_prefix(prefix: str) -> str:
    if not _BUCKET_PREFIX_RE.match(prefix):
        raise UnusableValue(
            f"={prefix!r} cannot start an S3 bucket name; use up to 30 lowercase letters, "
            "digits or hyphens, starting with a letter or digit"
        )
    return prefix


def _base_url(value: object) -> object:
    """A base URL without its trailing slashes; nothing left is unset."""
    return (value.strip().rstrip("/") or None) if isinstance(value, str) else value


Text = Annotated[str, BeforeValidator(_text)]
OptionalText = Annotated[str | None, BeforeValidator(_text)]
TextPath = Annotated[Path, BeforeValidator(_text)]
UserPath = Annotated[Path, BeforeValidator(_text), AfterValidator(Path.expanduser)]
AtLeast0 = Annotated[int, at_least(0)]
AtLeast1 = Annotated[int, at_least(1)]
AtLeast2 = Annotated[int, at_least(2)]
Flag = Annotated[bool, BeforeValidator(_flag)]
BaseUrl = Annotated[str | None, BeforeValidator(_base_url)]
BucketPrefix = Annotated[str, BeforeValidator(_text), AfterValidator(_bucket_prefix)]
LoweredList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_lowered_list)]
ListOrDefault = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_list_or_default)]
Urls = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_urls)]
Recipients = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_recipients)]
