"""`repovault`: the command line of docs/contract.md, "Command line".

Exit codes: 0 done, 1 the work failed (service down, nothing stored), 2 bad input. Every error is
one line on stderr saying what is wrong and what to do.
"""

from __future__ import annotations

import argparse
import json
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

from .core.errors import ArchiveError, SchemaMismatch
from .core.fleet import FleetStore
from .core.forges import Filters, InvalidSource, Source, parse_source
from .core.identity import InvalidRepoUrl, bucket_name, parse_repo_url
from .core.kafka import KafkaGateway
from .core.lineage import LineageStore, Request, now, open_lineage
from .core.metadata import restore_metadata
from .core.redact import mask_secrets
from .core.refresh import publish_changes, refresh
from .core.restore import resolve_target, restore
from .core.schema import upgrade
from .core.settings import KEEP_CHOICES, TRENDING_PERIODS, ConfigError, Settings
from .core.snapshot import archived_repositories
from .core.stats import compute_stats, human_size, stored_sizes
from .core.store import open_store
from .core.submit import submit, validate_urls
from .core.trending import InvalidTrendingOption, check_language, iter_rows, plan_trending_tick
from .core.verify import verify

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
# S3 error codes that mean "these credentials may not do this".
_S3_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden", "403"}


class BadInput(Exception):
    """The user gave something we cannot use: exit 2."""


def cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    """Upgrade the lineage database to the code's schema (or refuse a newer one), then create
    the missing topics; both safe to repeat."""
    lineage = LineageStore(settings.db_url)
    try:
        done = upgrade(lineage.engine)
    finally:
        lineage.dispose()
    print(f"lineage database at {_safe_url(settings.db_url)}: {done.line()}")
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
    keep = _keep(args)
    refs, refused = validate_urls(args.urls, settings)
    if refused:
        raise BadInput(f"{refused[0].url!r}: {refused[0].reason}")
    for _, request_id in submit(settings, lambda: open_lineage(settings.db_url), refs, "cli", keep):
        print(request_id)
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    lineage = open_lineage(settings.db_url)
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
    """Archived repositories; `size` is all they take in the vault (every bundle kept, tree/,
    LFS objects, wiki, forge metadata), the parts beside it."""
    store = open_store(settings)
    rows = [
        [
            m["repo_id"],
            m["bucket"],
            m["snapshot_id"],
            m["head_commit"][:12],
            human_size(sizes.total),
            str(m["tree"]["files"]),
            *(human_size(n) for n in (sizes.bundles, sizes.lfs, sizes.wiki, sizes.metadata)),
        ]
        for m in archived_repositories(store, settings.bucket_prefix)
        for sizes in [stored_sizes(store, m)]
    ]
    if not rows:
        print("no repositories archived yet", file=sys.stderr)
        return 0
    header = ["repo_id", "bucket", "latest_snapshot", "head", "size", "files"]
    _table([*header, "bundles", "lfs", "wiki", "metadata"], rows)
    return 0


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    ref = resolve_target(args.target, settings)
    if args.metadata:
        bucket = bucket_name(ref.repo_id, settings.bucket_prefix)
        meta = restore_metadata(
            open_store(settings), bucket, ref.repo_id, Path(args.dest), args.snapshot
        )
        counts = ", ".join(f"{n} {kind}" for kind, n in meta.records.items() if n)
        print(
            f"restored the metadata of {meta.repo_id} snapshot {meta.snapshot_id} into "
            f"{meta.dest}: {counts or 'no records'}; {meta.assets} release assets verified"
        )
        return 0
    done = restore(settings, open_store(settings), ref, Path(args.dest), args.snapshot, args.wiki)
    what = f"the wiki of {done.repo_id}" if args.wiki else done.repo_id
    lfs = ""
    if done.lfs_objects:
        placed = "checked out" if done.lfs_checked_out else "NOT checked out (no git-lfs)"
        lfs = f", {done.lfs_objects} LFS objects verified and {placed}"
    print(
        f"restored {what} snapshot {done.snapshot_id} into {done.dest}: "
        f"HEAD {done.head_commit}, {done.refs} refs verified{lfs}"
    )
    for warning in done.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    """The `restorable` check: exit 0 with what was proven, 1 with the reason in one line."""
    ref = resolve_target(args.target, settings)
    verdict = verify(settings, open_store(settings), ref, args.snapshot)
    if not verdict.ok:
        raise ArchiveError(verdict.line())
    print(verdict.line())
    return 0


def cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    """The `vault_stats` figures, as a table or (`--json`) one JSON document."""
    stats = compute_stats(settings, open_store(settings), open_lineage(settings.db_url))
    if args.json:
        print(json.dumps(stats.to_dict(), indent=1))
        return 0
    _table(["figure", "value"], [[k, f"{v:g}"] for k, v in stats.figures.items()])
    for title, header, rows in (
        ("failures in the last 24 h", ["reason", "failures"], stats.failures.items()),
        (
            "largest repositories",
            ["repo_id", "bundle"],
            [(r["repo_id"], human_size(r["bundle_bytes"])) for r in stats.largest],
        ),
        (
            "past their refresh interval",
            ["repo_id", "hours"],
            [(s["repo_id"], s["age_h"]) for s in stats.stale],
        ),
    ):
        cells = [[str(a), str(b)] for a, b in rows]
        if cells:
            print(f"\n{title}:")
            _table(header, cells)
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """The HTTP API until interrupted (`repovault_pipeline.api`)."""
    import uvicorn

    from .api import create_app

    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="info")
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


def _filters(args: argparse.Namespace) -> Filters:
    for pattern in [*args.include, *args.exclude]:
        if not pattern.strip() or "," in pattern:
            raise BadInput(f"name pattern {pattern!r}: give one non-empty glob without commas")
    return Filters(
        skip_forks=args.skip_forks,
        skip_archived=args.skip_archived,
        include=tuple(p.strip() for p in args.include),
        exclude=tuple(p.strip() for p in args.exclude),
    )


def _source(spec: str, settings: Settings, filters: Filters | None = None) -> Source:
    try:
        return parse_source(spec, settings, filters)
    except InvalidSource as exc:
        raise BadInput(str(exc)) from None


def _keep(args: argparse.Namespace) -> dict[str, bool]:
    """The --[no-]lfs, --[no-]wiki, --[no-]metadata choices given; the rest follow settings."""
    return {k: getattr(args, k) for k in KEEP_CHOICES if getattr(args, k) is not None}


def _keep_options(parser: argparse.ArgumentParser) -> None:
    kept = {"lfs": "Git LFS objects", "wiki": "the wiki", "metadata": "the forge's metadata"}
    for extra, what in kept.items():
        parser.add_argument(
            f"--{extra}",
            action=argparse.BooleanOptionalAction,
            help=f"keep {what} (default: REPOVAULT_KEEP_{extra.upper()})",
        )


def cmd_track_add(args: argparse.Namespace, settings: Settings) -> int:
    """Record the source; `sources_sensor` lists it on its next tick (it is due at once)."""
    source = _source(args.source, settings, _filters(args))
    FleetStore(open_lineage(settings.db_url).engine).add_source(source, now(), _keep(args))
    print(f"tracking {source.spec} ({source.source_id}); sources_sensor lists it on its next tick")
    return 0


def cmd_track_list(args: argparse.Namespace, settings: Settings) -> int:
    rows = FleetStore(open_lineage(settings.db_url).engine).sources()
    if not rows:
        print("no tracked sources; add one with `repovault track add github:org/NAME`")
        return 0
    _table(
        ["source", "filters", "status", "repos", "last_listing", "error"],
        [
            [
                row.source.spec,
                _describe(row.source.filters, row.keep),
                row.status,
                str(row.repos),
                _ts(row.last_listed_at),
                (row.error or "")[:120],
            ]
            for row in rows
        ],
    )
    return 0


def cmd_track_remove(args: argparse.Namespace, settings: Settings) -> int:
    """Stop listing the source; nothing is deleted from the vault."""
    source = _source(args.source, settings)
    if not FleetStore(open_lineage(settings.db_url).engine).remove_source(source.source_id):
        print(f"repovault track remove: {source.spec} is not tracked", file=sys.stderr)
        return EXIT_FAILED
    print(f"stopped tracking {source.spec}; its archived repositories stay in the vault")
    return 0


def cmd_refresh(args: argparse.Namespace, settings: Settings) -> int:
    """Check now (the given repositories, else every due one) and request runs for changes."""
    lineage = open_lineage(settings.db_url)
    fleet = FleetStore(lineage.engine)
    repo_ids = None
    if args.repos:
        repo_ids = []
        for target in args.repos:
            try:
                repo_ids.append(resolve_target(target, settings).repo_id)
            except InvalidRepoUrl as exc:
                raise BadInput(f"{mask_secrets(target)[:80]!r}: {exc}") from None
        known = {state.repo_id for state in fleet.get(repo_ids)}
        if unknown := [r for r in repo_ids if r not in known]:
            raise BadInput(
                f"{unknown[0]} is neither archived nor tracked; request it with `repovault submit`"
            )
    gateway = KafkaGateway(settings, client_id="repovault-refresh")
    try:
        gateway.producer()  # an unreachable broker fails here, before anything is recorded
        at = now()
        outcome = refresh(settings, fleet, at, repo_ids)
        published = publish_changes(settings, lineage, gateway, outcome.changed, at, fleet.keeps())
    finally:
        gateway.close()
    for change in outcome.changed:
        state = "requested" if change in published else "already requested"
        print(f"{change.repo_id}  changed  {state}  {change.request_id}")
    for repo_id in outcome.gone:
        print(f"{repo_id}  gone upstream (its snapshots are kept)")
    for repo_id, reason in outcome.failed:
        print(f"repovault refresh: {repo_id}: {reason}", file=sys.stderr)
    print(outcome.summary(), file=sys.stderr)
    return EXIT_FAILED if outcome.failed else 0


def _describe(filters: Filters, keep: dict[str, bool] | None = None) -> str:
    parts = ["no forks"] * filters.skip_forks + ["no archived"] * filters.skip_archived
    parts += [f"include {p}" for p in filters.include]
    parts += [f"exclude {p}" for p in filters.exclude]
    parts += [f"{k}={'yes' if v else 'no'}" for k, v in (keep or {}).items()]
    return ", ".join(parts) or "-"


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
    sub.add_parser(
        "init",
        help="upgrade the lineage database to this version's schema, create topics (idempotent)",
    ).set_defaults(func=cmd_init)
    submit = sub.add_parser("submit", help="request archives; prints one request_id per URL")
    submit.add_argument("urls", nargs="+", metavar="URL")
    _keep_options(submit)
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
        "--metadata",
        action="store_true",
        help="restore the forge metadata (issues, pull requests, releases) instead of the git "
        "history: JSON Lines, one Markdown file per thread, release assets",
    )
    rest.add_argument(
        "--wiki", action="store_true", help="restore the repository's wiki instead of its code"
    )
    rest.set_defaults(func=cmd_restore)
    check = sub.add_parser("verify", help="prove a snapshot restores (the `restorable` check)")
    check.add_argument("target", metavar="URL_OR_REPO_ID")
    check.add_argument("--snapshot", metavar="ID", help="a snapshot id (default: the latest)")
    check.set_defaults(func=cmd_verify)
    stats = sub.add_parser("stats", help="the vault_stats figures of the whole vault")
    stats.add_argument("--json", action="store_true", help="one JSON document")
    stats.set_defaults(func=cmd_stats)
    serve = sub.add_parser("serve", help="the HTTP API (/api/..., OpenAPI at /api/docs)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    serve.set_defaults(func=cmd_serve)
    trending = sub.add_parser(
        "trending", help="the GitHub trending list the daily schedule would request"
    )
    trending.add_argument(
        "--language", help="e.g. Python, C++ (default REPOVAULT_TRENDING_LANGUAGE, else all)"
    )
    trending.add_argument(
        "--since",
        choices=TRENDING_PERIODS,
        help="trending period (default REPOVAULT_TRENDING_SINCE, else daily)",
    )
    trending.add_argument("--limit", type=int, default=10, help="how many (default 10)")
    trending.set_defaults(func=cmd_trending)
    track = sub.add_parser(
        "track", help="tracked sources: GitHub organisations and users, GitLab groups"
    )
    track_sub = track.add_subparsers(dest="track_command", required=True)
    add = track_sub.add_parser(
        "add", help="track github:org/NAME, github:user/NAME or gitlab:group/PATH"
    )
    add.add_argument("source", metavar="SOURCE")
    add.add_argument("--skip-forks", action="store_true", help="do not archive forks")
    add.add_argument(
        "--skip-archived", action="store_true", help="do not archive archived repositories"
    )
    add.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="GLOB",
        help="only names matching (repeatable)",
    )
    add.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="never names matching (repeatable)",
    )
    _keep_options(add)
    add.set_defaults(func=cmd_track_add)
    track_sub.add_parser(
        "list", help="sources, repository counts, last listing, error"
    ).set_defaults(func=cmd_track_list)
    remove = track_sub.add_parser("remove", help="stop listing a source (deletes nothing)")
    remove.add_argument("source", metavar="SOURCE")
    remove.set_defaults(func=cmd_track_remove)
    refresh_cmd = sub.add_parser(
        "refresh", help="check now for upstream changes and request runs for changed repositories"
    )
    refresh_cmd.add_argument(
        "repos", nargs="*", metavar="REPO", help="URLs or repo_ids (default: every due one)"
    )
    refresh_cmd.set_defaults(func=cmd_refresh)
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
