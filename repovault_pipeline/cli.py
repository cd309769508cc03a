"""`repovault`: the command line of SPEC "Command line".

Exit codes: 0 done, 1 the work failed (service down, nothing stored), 2 bad input. Every error is
one line on stderr saying what is wrong and what to do.
"""

from __future__ import annotations

import argparse
import re
import sys
import unicodedata
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from botocore.exceptions import (
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as S3ConnectionError
from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError, SQLAlchemyError

from .core.errors import ArchiveError
from .core.identity import InvalidRepoUrl, parse_repo_url
from .core.kafka import BrokerUnavailable, KafkaGateway
from .core.lineage import LineageStore, Request, now
from .core.messages import request_message
from .core.redact import mask_secrets
from .core.restore import resolve_target, restore
from .core.settings import ConfigError, Settings
from .core.snapshot import archived_repositories
from .core.store import open_store
from .core.trending import InvalidTrendingOption, check_language, iter_rows, plan_trending_tick

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
# S3 error codes that mean "these credentials may not do this".
_S3_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden", "403"}


class BadInput(Exception):
    """The user gave something we cannot use: exit 2."""


def _lineage(settings: Settings) -> LineageStore:
    store = LineageStore(settings.db_url)
    store.create_tables()
    return store


def cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    _lineage(settings)
    print(f"lineage table repo_requests ready at {_safe_url(settings.db_url)}")
    gateway = KafkaGateway(settings)
    created = gateway.ensure_topics()
    topics = settings.topics
    print(
        f"topics {', '.join(topics.all())} ready at {settings.kafka_bootstrap} "
        f"({topics.partitions} partitions, replication {topics.replication_factor}; "
        f"created: {', '.join(created) or 'none'})"
    )
    return 0


def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    """Validate every URL first (nothing is published if one is bad), then record and publish
    each, waiting for the broker's acknowledgement."""
    keep = {k: v for k, v in (("lfs", args.lfs), ("wiki", args.wiki)) if v is not None}
    refs = []
    for url in args.urls:
        try:
            refs.append(parse_repo_url(url, settings.allowed_schemes, settings.allowed_hosts))
        except InvalidRepoUrl as exc:
            raise BadInput(f"{mask_secrets(url)[:80]!r}: {exc}") from None
    gateway = KafkaGateway(settings, client_id="repovault-submit")
    try:
        gateway.producer()  # an unreachable broker fails here, before any row is written
        lineage = _lineage(settings)
        for ref in refs:
            requested_at = now()
            request_id = lineage.record_pending(
                ref.url, ref.repo_id, "cli", created_at=requested_at
            )
            message = request_message(request_id, ref.url, "cli", requested_at, keep)
            try:
                gateway.publish(settings.topics.pending, [(ref.repo_id, message)])
            except BrokerUnavailable as exc:
                lineage.record_finished(request_id, "failed", error=f"not queued: {exc}")
                raise
            print(request_id)
    finally:
        gateway.close()
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    lineage = _lineage(settings)
    target = args.target
    if target is None:
        rows = lineage.find(limit=args.limit)
    elif request := lineage.get(target):
        rows = [request]
    else:
        try:
            ref = parse_repo_url(target, settings.allowed_schemes, settings.allowed_hosts)
        except InvalidRepoUrl as exc:
            raise BadInput(
                f"{mask_secrets(target)[:80]!r} is neither a request id nor a valid URL: {exc}"
            ) from None
        rows = lineage.find(repo_id=ref.repo_id, limit=args.limit)
    if not rows:
        print(
            "no requests found" if target is None else f"no requests for {target}", file=sys.stderr
        )
        return EXIT_FAILED if target else 0
    _table(
        [
            "request_id",
            "repo_id",
            "source",
            "status",
            "created",
            "injected",
            "started",
            "finished",
            "error",
        ],
        [_status_row(r) for r in rows],
    )
    return 0


def _status_row(r: Request) -> list[str]:
    return [
        r.request_id,
        r.repo_id or "-",
        r.source,
        r.status,
        _ts(r.creation_timestamp),
        _ts(r.inyector_timestamp),
        _ts(r.worker_start_timestamp),
        _ts(r.worker_finishing_timestamp),
        _one_line(r.error or "")[:100],
    ]


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    rows = [
        [
            m["repo_id"],
            m["bucket"],
            m["snapshot_id"],
            m["head_commit"][:12],
            _size(m["bundle"]["size"]),
            str(m["tree"]["files"]),
        ]
        for m in archived_repositories(open_store(settings), settings.bucket_prefix)
    ]
    if not rows:
        print("no repositories archived yet", file=sys.stderr)
        return 0
    _table(["repo_id", "bucket", "latest_snapshot", "head", "size", "files"], rows)
    return 0


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    ref = resolve_target(args.target, settings)
    done = restore(settings, open_store(settings), ref, Path(args.dest), args.snapshot, args.wiki)
    what = f"the wiki of {done.repo_id}" if args.wiki else done.repo_id
    print(
        f"restored {what} snapshot {done.snapshot_id} into {done.dest}: "
        f"HEAD {done.head_commit}, {done.refs} refs verified"
        + (f", {done.lfs_objects} LFS objects verified" if done.lfs_objects else "")
    )
    if done.note:
        print(f"warning: {done.note}", file=sys.stderr)
    return 0


def cmd_trending(args: argparse.Namespace, settings: Settings) -> int:
    """The list the trending schedule would request now; requests and records nothing."""
    if args.limit < 1:
        raise BadInput(f"--limit {args.limit}: give at least 1")
    try:
        check_language(args.language)
    except InvalidTrendingOption as exc:
        raise BadInput(str(exc)) from None
    plan = plan_trending_tick(settings, limit=args.limit, language=args.language, since=args.since)
    if plan.listing is None or not plan.runs:
        print(f"repovault trending: {plan.skip_reason}", file=sys.stderr)
        return EXIT_FAILED
    listing = plan.listing
    period = {"daily": "today", "weekly": "this week", "monthly": "this month"}[listing.since]
    rows = []
    for rank, repo, reason in iter_rows(plan):
        if reason is not None:
            print(f"#{rank} {repo.full_name} would not be requested: {reason}", file=sys.stderr)
            continue
        description = repo.description or ""
        rows.append(
            [
                str(rank),
                repo.full_name,
                _thousands(repo.stars),
                _thousands(repo.stars_in_period),
                repo.language or "-",
                description if len(description) <= 60 else description[:59] + "…",
            ]
        )
    _table(["rank", "repository", "stars", f"stars {period}", "language", "description"], rows)
    for position in listing.unreadable:
        print(f"trending card #{position} has no readable repository link", file=sys.stderr)
    if listing.fallback_reason:
        print(
            f"trending page unusable ({listing.fallback_reason}); listed the most-starred "
            f"repositories of the last 7 days from {listing.url}",
            file=sys.stderr,
        )
    return 0


def _thousands(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="repovault", description="RepoVault: git repositories archived into S3/MinIO."
    )
    parser.add_argument(
        "--traceback", action="store_true", help="on failure, show the stack (for bug reports)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("init", help="create topics and tables (idempotent)").set_defaults(func=cmd_init)
    submit = sub.add_parser("submit", help="request archives; prints one request_id per URL")
    submit.add_argument("urls", nargs="+", metavar="URL")
    for extra, what in (("lfs", "Git LFS objects"), ("wiki", "the wiki")):
        submit.add_argument(
            f"--{extra}",
            action=argparse.BooleanOptionalAction,
            help=f"keep {what} (default: REPOVAULT_KEEP_{extra.upper()})",
        )
    submit.set_defaults(func=cmd_submit)
    status = sub.add_parser("status", help="requests and their timestamps")
    status.add_argument("target", nargs="?", help="a request id or a repository URL")
    status.add_argument("--limit", type=int, default=50, help="newest N requests (default 50)")
    status.set_defaults(func=cmd_status)
    sub.add_parser("list", help="archived repositories").set_defaults(func=cmd_list)
    rest = sub.add_parser("restore", help="rebuild a working clone from a stored bundle")
    rest.add_argument("target", metavar="URL_OR_REPO_ID")
    rest.add_argument("dest", metavar="DEST", help="new or empty folder")
    rest.add_argument("--snapshot", metavar="ID", help="a snapshot id (default: the latest)")
    rest.add_argument(
        "--wiki", action="store_true", help="restore the repository's wiki instead of its code"
    )
    rest.set_defaults(func=cmd_restore)
    trending = sub.add_parser(
        "trending", help="the GitHub trending list the daily schedule would request"
    )
    trending.add_argument(
        "--language", help="e.g. Python, C++ (default REPOVAULT_TRENDING_LANGUAGE, else all)"
    )
    trending.add_argument(
        "--since",
        choices=("daily", "weekly", "monthly"),
        help="trending period (default REPOVAULT_TRENDING_SINCE, else daily)",
    )
    trending.add_argument("--limit", type=int, default=10, help="how many (default 10)")
    trending.set_defaults(func=cmd_trending)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every failure is one line on stderr (`--traceback` shows the stack)."""
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace, Settings], int] = args.func
    settings: Settings | None = None
    try:
        settings = Settings.from_env()
        return func(args, settings)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.traceback:
            raise
        code, message = explain(exc, settings)
        print(
            f"repovault {args.command}: {_one_line(mask_secrets(message), escape=False)}",
            file=sys.stderr,
        )
        return code


def explain(exc: Exception, settings: Settings | None) -> tuple[int, str]:
    """Exit code and one line for a failure: what is wrong (a service unreachable, its URL with
    the password hidden) and what to do."""
    if isinstance(exc, (BadInput, InvalidRepoUrl, ConfigError)):
        return EXIT_BAD_INPUT, str(exc)
    db_url = _safe_url(settings.db_url) if settings else "REPOVAULT_DB_URL"
    if isinstance(exc, ArgumentError):
        return EXIT_BAD_INPUT, (
            f"REPOVAULT_DB_URL={db_url} is not a database URL RepoVault can use ({exc}); set it "
            "to a PostgreSQL URL, postgresql+psycopg2://..."
        )
    if _is_connection_error(exc):
        return EXIT_FAILED, (
            f"cannot reach the lineage database at {db_url} ({_first_line(exc)}); check that "
            "PostgreSQL is running and reachable, or set REPOVAULT_DB_URL"
        )
    if isinstance(exc, SQLAlchemyError):
        return EXIT_FAILED, (
            f"the lineage database at {db_url} failed: {_first_line(exc)}; check the database "
            "and REPOVAULT_DB_URL, then retry"
        )
    if isinstance(exc, ArchiveError) and (s3 := _explain_s3(exc.__cause__, settings)):
        return EXIT_FAILED, s3
    if isinstance(exc, ArchiveError):
        return EXIT_FAILED, str(exc)
    return EXIT_FAILED, (
        f"unexpected {type(exc).__name__}: {_first_line(exc)} (run `repovault --traceback "
        f"...` to see where, and report it)"
    )


def _explain_s3(cause: BaseException | None, settings: Settings | None) -> str | None:
    """The object store unreachable, or refusing RepoVault's credentials: say which and how."""
    endpoint = settings.s3_endpoint if settings else None
    if isinstance(cause, (S3ConnectionError, HTTPClientError)):
        return (
            f"cannot reach the object store at {endpoint} ({type(cause).__name__}); check that "
            "S3/MinIO is running and reachable, or set REPOVAULT_S3_ENDPOINT"
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


def _ts(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z" if value else "-"


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _safe_url(url: str) -> str:
    """A database URL as it may be printed: password hidden, even when the URL is malformed."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return mask_secrets(url)


def _one_line(text: str, escape: bool = True) -> str:
    """`text` on one line: line breaks and other control or format characters (bidi overrides
    included) written as escapes (`\\n`, `\\x1b`, `\\u202e`), or with `escape=False` line breaks
    folded into spaces."""
    if not escape:
        text = re.sub(r"\s*[\r\n\u2028\u2029]+\s*", " ", text)
    return "".join(
        c.encode("unicode_escape").decode("ascii")
        if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")
        else c
        for c in text
    )


def _table(header: list[str], rows: list[list[str]]) -> None:
    """Aligned columns, one line per row whatever the cells hold."""
    cells = [[_one_line(str(c)) for c in row] for row in [header, *rows]]
    widths = [max(len(c) for c in col) for col in zip(*cells, strict=False)]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())


if __name__ == "__main__":
    sys.exit(main())
