"""`repovault`: the command line of docs/contract.md, "Command line".

Exit codes: 0 done, 1 the work failed (service down, nothing stored), 2 bad input. Every error is
one line on stderr saying what is wrong and what to do: that translation lives here, once, and
each command module only registers its subcommands beside their handlers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as S3ConnectionError
from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError, SQLAlchemyError

from ..core.common.errors import ArchiveError, SchemaMismatch
from ..core.common.identity import InvalidRepoUrl
from ..core.common.redact import mask_secrets
from ..core.common.settings import ConfigError, Settings
from ..core.vault.s3 import S3_ATTEMPTS
from . import admin, requests, serve, sources, tokens, trending, vault
from .common import EXIT_BAD_INPUT, EXIT_FAILED, BadInput, Handler, safe_url
from .output import one_line

# The command groups, in the order `repovault --help` lists their commands.
COMMAND_GROUPS = (admin, requests, vault, serve, trending, sources, tokens)
# S3 error codes that mean "these credentials may not do this".
_S3_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden", "403"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="repovault", description="RepoVault: git repositories archived into S3/MinIO."
    )
    parser.add_argument(
        "--traceback", action="store_true", help="on failure, show the stack (for bug reports)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every failure is one line on stderr (`--traceback` shows the stack)."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    settings: Settings | None = None
    try:
        settings = Settings.from_env()
        return handler(args, settings)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.traceback:
            raise
        code, message = explain(exc, settings)
        print(
            f"repovault {args.command}: {one_line(mask_secrets(message), escape=False)}",
            file=sys.stderr,
        )
        return code


def explain(exc: Exception, settings: Settings | None) -> tuple[int, str]:
    """Exit code and one line for a failure: what is wrong (a service unreachable, its URL with
    the password hidden) and what to do."""
    if isinstance(exc, (BadInput, InvalidRepoUrl, ConfigError)):
        return EXIT_BAD_INPUT, str(exc)
    db_url = safe_url(settings.db_url) if settings else "REPOVAULT_DB_URL"
    if isinstance(exc, ArgumentError):
        return EXIT_BAD_INPUT, (
            f"REPOVAULT_DB_URL={db_url} is not a database URL RepoVault can use ({exc}); set it "
            "to a PostgreSQL URL, postgresql+psycopg2://..."
        )
    if _is_connection_error(exc):
        waited = (
            f"; no answer within REPOVAULT_DB_TIMEOUT_S={settings.db_timeout_s}s"
            if settings and "timeout" in _first_line(exc).lower()
            else ""
        )
        return EXIT_FAILED, (
            f"cannot reach the lineage database at {db_url} ({_first_line(exc)}{waited}); check "
            "that PostgreSQL is running and reachable, or set REPOVAULT_DB_URL"
        )
    if isinstance(exc, SQLAlchemyError):
        return EXIT_FAILED, (
            f"the lineage database at {db_url} failed: {_first_line(exc)}; check the database "
            "and REPOVAULT_DB_URL, then retry"
        )
    if isinstance(exc, ArchiveError) and (s3 := _explain_s3(exc.__cause__, settings)):
        return EXIT_FAILED, s3
    if isinstance(exc, ArchiveError | SchemaMismatch):
        return EXIT_FAILED, str(exc)
    return EXIT_FAILED, (
        f"unexpected {type(exc).__name__}: {_first_line(exc)} (run `repovault --traceback "
        f"...` to see where, and report it)"
    )


def _explain_s3(cause: BaseException | None, settings: Settings | None) -> str | None:
    """The object store unreachable, or refusing RepoVault's credentials: say which and how."""
    endpoint = settings.s3_endpoint if settings else None
    if isinstance(cause, (S3ConnectionError, HTTPClientError)):
        waited = (
            f"; no answer within REPOVAULT_S3_TIMEOUT_S={settings.s3_timeout_s}s, "
            f"{S3_ATTEMPTS} attempts"
            if settings and isinstance(cause, (ReadTimeoutError, ConnectTimeoutError))
            else ""
        )
        return (
            f"cannot reach the object store at {endpoint} ({type(cause).__name__}{waited}); "
            "check that S3/MinIO is running and reachable, or set REPOVAULT_S3_ENDPOINT"
        )
    if isinstance(cause, NoCredentialsError | PartialCredentialsError):
        return (
            f"no usable S3 credentials for the object store at {endpoint} "
            f"({type(cause).__name__}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    code = cause.response.get("Error", {}).get("Code") if isinstance(cause, ClientError) else None
    if code in _S3_DENIED:
        return (
            f"the object store at {endpoint} refused RepoVault's credentials "
            f"({code}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "to a user whose policy allows the REPOVAULT_BUCKET_PREFIX buckets"
        )
    return None


def _is_connection_error(exc: Exception) -> bool:
    """The database could not be talked to: refused, closed, timed out, shut down (no SQLSTATE,
    or SQLSTATE class 08 "connection exception" / 57P "operator intervention")."""
    if not isinstance(exc, (OperationalError, InterfaceError)):
        return False
    code = getattr(exc.orig, "pgcode", None) or ""
    return exc.connection_invalidated or not code or code.startswith(("08", "57P"))


def _first_line(exc: BaseException) -> str:
    """The driver's message without SQLAlchemy's SQL echo and background link."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__
