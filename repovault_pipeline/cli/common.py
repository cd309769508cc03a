"""What the command modules share: exit codes, the bad-input error, the lineage database as
commands open it, and the keep options `submit` and `track add` both take."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TypeAlias

from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import ArgumentError

from ..core.common.errors import ArchiveError
from ..core.common.redact import mask_secrets
from ..core.common.settings import KEEP_CHOICES, Settings
from ..core.lineage.requests import LineageStore, open_lineage

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2

# What a command module's `register` is given, and what each subcommand runs.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Handler = Callable[[argparse.Namespace, Settings], int]


class BadInput(Exception):
    """The user gave something we cannot use: exit 2."""


def lineage_store(settings: Settings) -> LineageStore:
    """The lineage database, its connections bounded by REPOVAULT_DB_TIMEOUT_S."""
    return open_lineage(settings.db_url, settings.db_timeout_s)


def existing_lineage(settings: Settings) -> LineageStore:
    """The lineage database for a command that only reads: a SQLite file that does not exist is
    a wrong REPOVAULT_HOME or a vault never initialised, said as such and never created."""
    url = make_url(settings.db_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        path = Path(url.database).absolute()
        if not path.exists():
            raise ArchiveError(
                f"no lineage database at {path} (REPOVAULT_HOME {settings.home}); run "
                "`repovault init` (or `make run`), or set REPOVAULT_HOME or REPOVAULT_DB_URL"
            )
    return lineage_store(settings)


def safe_url(url: str) -> str:
    """A database URL as it may be printed: password hidden, even when the URL is malformed."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return mask_secrets(url)


def keep_choices(args: argparse.Namespace) -> dict[str, bool]:
    """The --[no-]lfs, --[no-]wiki, --[no-]metadata choices given; the rest follow settings."""
    return {k: getattr(args, k) for k in KEEP_CHOICES if getattr(args, k) is not None}


def keep_options(parser: argparse.ArgumentParser) -> None:
    kept = {"lfs": "Git LFS objects", "wiki": "the wiki", "metadata": "the forge's metadata"}
    for extra, what in kept.items():
        parser.add_argument(
            f"--{extra}",
            action=argparse.BooleanOptionalAction,
            help=f"keep {what} (default: REPOVAULT_KEEP_{extra.upper()})",
        )
