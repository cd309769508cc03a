"""`repovault`: the command line of docs/contract.md, "Command line".

Exit codes: 0 done, 1 the work failed (service down, nothing stored), 2 bad input. Every error is
one line on stderr saying what is wrong and what to do.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import textwrap
import time
import unicodedata
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as S3ConnectionError
from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError, SQLAlchemyError

from ..core.catalog import SnapshotInfo, repo_snapshots
from ..core.errors import ArchiveError, SchemaMismatch
from ..core.fleet import FleetStore
from ..core.forges import Filters, InvalidSource, Source, parse_source
from ..core.forget import UnknownRepository, forget
from ..core.identity import InvalidRepoUrl, bucket_name, parse_repo_url
from ..core.kafka import KafkaGateway
from ..core.lineage import LineageStore, Request, now, open_lineage
from ..core.metadata import restore_metadata
from ..core.redact import mask_secrets
from ..core.refresh import publish_changes, refresh
from ..core.restore import resolve_target, restore
from ..core.schema import upgrade
from ..core.settings import KEEP_CHOICES, TRENDING_PERIODS, ConfigError, Settings
from ..core.snapshot import Listed, list_vault
from ..core.stats import compute_stats, human_size, stored_sizes
from ..core.store import S3_ATTEMPTS, ObjectStore, open_store
from ..core.submit import submit, validate_urls
from ..core.tokens import SCOPES, TokenStore
from ..core.trending import InvalidTrendingOption, check_language, iter_rows, plan_trending_tick
from ..core.verify import verify

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
# S3 error codes that mean "these credentials may not do this".
_S3_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden", "403"}


class BadInput(Exception):
    """The user gave something we cannot use: exit 2."""


def _lineage(settings: Settings) -> LineageStore:
    """The lineage database, its connections bounded by REPOVAULT_DB_TIMEOUT_S."""
    return open_lineage(settings.db_url, settings.db_timeout_s)


def cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    """Upgrade the lineage database to the code's schema (or refuse a newer one), then create
    the missing topics; both safe to repeat."""
    lineage = LineageStore(settings.db_url, settings.db_timeout_s)
    try:
        done = upgrade(lineage.engine)
    finally:
        lineage.dispose()
    print(f"RepoVault home (REPOVAULT_HOME): {settings.home}")
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
    if args.timeout is not None and (not args.wait or args.timeout <= 0):
        raise BadInput(f"--timeout {args.timeout:g}: give a positive number of seconds with --wait")
    request_ids = []
    for _, request_id in submit(
        settings, lambda: _lineage(settings), refs, "cli", keep, force=args.force
    ):
        print(request_id, flush=True)
        request_ids.append(request_id)
    return _follow(settings, request_ids, args.timeout) if args.wait else 0


# What `submit --wait` promises with exit 0; any other final status (failed, rejected, ...) is 1.
SUCCESS_STATUSES = ("completed", "unchanged")
OPEN_STATUSES = ("pending", "in_progress")
WAIT_POLL_S = 1.0


def _follow(settings: Settings, request_ids: list[str], timeout: float | None) -> int:
    """Follow each request to its final status: a progress line on stderr whenever its phase
    changes, its outcome on stdout; exit 0 only when every one completed or was unchanged."""
    from ..runqueue import dagster_instance, phase

    lineage = _lineage(settings)
    deadline = None if timeout is None else time.monotonic() + timeout
    steps: dict[str, str] = {}
    open_ids, failed = list(request_ids), False
    with dagster_instance(settings) as instance:
        while True:
            for request_id in list(open_ids):
                row = lineage.get(request_id)
                if row is None:  # a request just recorded is always there: say so, never hang
                    raise ArchiveError(f"request {request_id} vanished from the lineage database")
                if row.status not in OPEN_STATUSES:
                    print(_outcome(row), flush=True)
                    failed |= row.status not in SUCCESS_STATUSES
                    open_ids.remove(request_id)
                elif (now_at := phase(instance, row, now())).step != steps.get(request_id):
                    print(f"{request_id}  {row.repo_id}  {now_at.line()}", file=sys.stderr)
                    steps[request_id] = now_at.step
            if not open_ids:
                return EXIT_FAILED if failed else 0
            if deadline is not None and time.monotonic() > deadline:
                print(
                    f"repovault submit: {len(open_ids)} request(s) still open after --timeout "
                    f"{timeout:g} s (they go on): follow with `repovault status {open_ids[0]}`",
                    file=sys.stderr,
                )
                return EXIT_FAILED
            time.sleep(WAIT_POLL_S)


def _outcome(row: Request) -> str:
    """A final request in one line: status, then the snapshot or the whole error."""
    done = f"{row.request_id}  {row.repo_id}  {row.status}"
    if row.error:
        return f"{done}  {_one_line(row.error)}"
    return f"{done}  snapshot {row.snapshot_id or '-'}  head {(row.head_commit or '-')[:12]}"


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    lineage = _existing_lineage(settings)
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
    header = [
        "request_id",
        "repo_id",
        "source",
        "status",
        "created",
        "injected",
        "started",
        "finished",
        "error",
    ]
    waiting: dict[str, str] = {}
    if any(r.status == "pending" for r in rows):
        from .runqueue import why_waiting  # Dagster loads only when there is a queue to read

        waiting = why_waiting(settings, rows, now())
    if target is not None and len(rows) == 1 and rows[0].request_id == target:
        request = rows[0]
        _record(
            [*header[:-1], "waiting", "error"],
            [*_status_row(request)[:-1], waiting.get(request.request_id, ""), request.error or ""],
        )
        return 0
    notes = [
        [
            line
            for label, text in (
                ("waiting", waiting.get(r.request_id, "")),
                ("error", (r.error or "") if args.verbose else ""),
            )
            if text
            for line in _wrapped(f"  {label}: ", text)
        ]
        for r in rows
    ]
    _table(header, [_status_row(r, clip=not args.verbose) for r in rows], notes)
    return 0


def _status_row(r: Request, clip: bool = True) -> list[str]:
    return [
        r.request_id,
        r.repo_id or "-",
        r.source,
        r.status,
        _ts(r.creation_timestamp),
        _ts(r.inyector_timestamp),
        _ts(r.worker_start_timestamp),
        _ts(r.worker_finishing_timestamp),
        _clipped(r.error) if clip else "",
    ]


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    """One row per archived repository; `size` is all it takes in the vault (every bundle
    kept, tree/, LFS objects, wiki, forge metadata), the parts beside it. A damaged
    `latest.json` is a warning on stderr, and the row shows the newest complete snapshot (what
    `restore` uses)."""
    store = open_store(settings)
    listed = list(list_vault(store, settings.bucket_prefix))
    rows = [_list_row(store, item) for item in listed]
    if not rows:
        where = settings.s3_endpoint or f"{settings.local_store} (REPOVAULT_HOME {settings.home})"
        print(f"no repositories archived yet in {where}", file=sys.stderr)
        return 0
    header = ["repo_id", "bucket", "latest_snapshot", "head", "size", "files"]
    _table([*header, "bundles", "lfs", "wiki", "metadata"], rows)
    for item in listed:
        if item.damage:
            print(
                f"warning: {item.repo_id or item.bucket}: {_one_line(item.damage)}; "
                + (
                    "restore uses it, and the next run repairs the pointer"
                    if item.manifest
                    else "nothing can be restored; the next run writes a snapshot"
                ),
                file=sys.stderr,
            )
    return 0


def _list_row(store: ObjectStore, item: Listed) -> list[str]:
    """`list`'s row of one bucket: its snapshot and sizes, dashes when no snapshot is complete."""
    m = item.manifest
    if m is None:
        return [item.repo_id or "-", item.bucket, *["-"] * 8]
    sizes = stored_sizes(store, {**m, "bucket": item.bucket})
    return [
        item.repo_id or "-",
        item.bucket,
        m["snapshot_id"],
        m["head_commit"][:12],
        human_size(sizes.total),
        str(m["tree"]["files"]),
        *(human_size(n) for n in (sizes.bundles, sizes.lfs, sizes.wiki, sizes.metadata)),
    ]


def cmd_snapshots(args: argparse.Namespace, settings: Settings) -> int:
    """Every stored snapshot of one repository, code, wiki and forge metadata, newest first:
    the ids `restore --snapshot` takes (with `--wiki` or `--metadata` for those kinds)."""
    ref = resolve_target(args.target, settings)
    found = repo_snapshots(open_store(settings), ref.repo_id, settings.bucket_prefix)
    if found.empty:
        print(
            f"repovault snapshots: no snapshot of {ref.repo_id} is stored (bucket "
            f"{found.bucket}); request one with `repovault submit`",
            file=sys.stderr,
        )
        return EXIT_FAILED
    rows = [
        [
            kind,
            snap.snapshot_id,
            _ts(datetime.fromisoformat(snap.created_at)),
            (snap.head_commit or "-")[:12],
            human_size(snap.size),
            "yes" if snap.snapshot_id == series.latest else "-",
            _contents(snap),
        ]
        for kind, series in found.series().items()
        for snap in series.snapshots
    ]
    _table(["kind", "snapshot_id", "created", "head", "size", "latest", "contents"], rows)
    for kind, series in found.series().items():
        if series.warning:
            print(f"warning: {kind}: {series.warning}", file=sys.stderr)
    print(
        f"restore one: repovault restore {ref.repo_id} DEST --snapshot ID "
        "(with --wiki or --metadata for those kinds)",
        file=sys.stderr,
    )
    return 0


def _contents(snap: SnapshotInfo) -> str:
    if snap.records is not None:
        changed = ", ".join(f"{n} {kind}" for kind, n in snap.records.items() if n)
        return f"{changed or 'no changed records'}{' (full read)' if snap.full else ''}"
    files = f", {snap.tree_files} files" if snap.tree_files is not None else ""
    return f"{snap.refs} refs{files}"


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    ref = resolve_target(args.target, settings)
    if args.metadata:
        bucket = bucket_name(ref.repo_id, settings.bucket_prefix)
        meta = restore_metadata(
            open_store(settings),
            bucket,
            ref.repo_id,
            Path(args.dest),
            args.snapshot,
            settings.decrypt_identity,
        )
        counts = ", ".join(f"{n} {kind}" for kind, n in meta.records.items() if n)
        print(
            f"restored the metadata of {meta.repo_id} snapshot {meta.snapshot_id} into "
            f"{meta.dest}: {counts or 'no records'}; {meta.assets} release assets verified"
        )
        if meta.note:
            print(f"warning: {meta.note}", file=sys.stderr)
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


def cmd_forget(args: argparse.Namespace, settings: Settings) -> int:
    """Drop a repository's partition, requests and refresh state; its bucket stays unless
    `--purge`. An unknown repository is refused and nothing changes."""
    ref = resolve_target(args.target, settings)
    if not settings.dagster_home.is_dir():
        raise BadInput(
            f"no Dagster instance at {settings.dagster_home}: set DAGSTER_HOME (or "
            "REPOVAULT_HOME) to the instance's folder; forget drops the repository's partition "
            "there"
        )
    try:
        done = forget(
            settings,
            open_store(settings),
            _lineage(settings),
            ref.repo_id,
            lambda repo_id: _drop_partition(settings.dagster_home, repo_id),
            purge=args.purge,
        )
    except UnknownRepository as exc:
        raise BadInput(str(exc)) from None
    for line in done.lines():
        print(line)
    return 0


def _drop_partition(dagster_home: Path, repo_id: str) -> bool:
    """Delete the `repositories` partition `repo_id` from the instance at `dagster_home`; False
    when there is none. Dagster is imported here only: the other commands start without it."""
    from dagster import DagsterInstance

    from ..partitions import REPOSITORIES

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        if not instance.has_dynamic_partition(REPOSITORIES, repo_id):
            return False
        instance.delete_dynamic_partition(REPOSITORIES, repo_id)
        return True


def cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    """The `vault_stats` figures, as a table or (`--json`) one JSON document."""
    stats = compute_stats(settings, open_store(settings), _existing_lineage(settings))
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
    from uvicorn.config import LOGGING_CONFIG

    from ..api import create_app

    # Every log record is masked when it is made (core.redact), its arguments merged into the
    # message: the access log's formatter, which takes the arguments apart, gets the plain one.
    config = {**LOGGING_CONFIG, "formatters": {**LOGGING_CONFIG["formatters"]}}
    config["formatters"]["access"] = config["formatters"]["default"]
    uvicorn.run(
        create_app(settings), host=args.host, port=args.port, log_level="info", log_config=config
    )
    return 0


def cmd_token_create(args: argparse.Namespace, settings: Settings) -> int:
    """A new API token: printed once on stdout, kept only as its SHA-256."""
    try:
        row, token = TokenStore(_lineage(settings).engine).create(args.scope, args.name)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    print(token)
    print(
        f"token {row.token_id} ({row.scope}{f', {row.name}' if row.name else ''}) created; "
        "it is shown only now: keep it where your scripts read secrets",
        file=sys.stderr,
    )
    return 0


def cmd_token_list(args: argparse.Namespace, settings: Settings) -> int:
    """The API tokens, never their secrets."""
    rows = TokenStore(_existing_lineage(settings).engine).list()
    if not rows:
        print("no API tokens; make one with `repovault token create --scope read`")
        return 0
    _table(
        ["id", "name", "scope", "created", "last_used", "revoked"],
        [
            [
                t.token_id,
                t.name or "-",
                t.scope,
                _ts(t.created_at),
                _ts(t.last_used_at),
                _ts(t.revoked_at),
            ]
            for t in rows
        ],
    )
    return 0


def cmd_token_revoke(args: argparse.Namespace, settings: Settings) -> int:
    """Revoke a token: the API refuses it from the next call on."""
    token = TokenStore(_existing_lineage(settings).engine).revoke(args.token_id)
    if token is None:
        raise BadInput(f"no token {args.token_id[:40]!r}; `repovault token list` shows the ids")
    print(f"token {token.token_id} revoked at {_ts(token.revoked_at)}")
    return 0


def cmd_trending(args: argparse.Namespace, settings: Settings) -> int:
    """The list the trending schedule would request now; requests and records nothing. Listing
    is not cloning: entries REPOVAULT_ALLOWED_* would refuse are listed too, marked, with why."""
    if args.limit < 1:
        raise BadInput(f"--limit {args.limit}: give at least 1")
    try:
        check_language(args.language)
    except InvalidTrendingOption as exc:
        raise BadInput(str(exc)) from None
    plan = plan_trending_tick(
        settings, limit=args.limit, language=args.language, since=args.since, preview=True
    )
    if plan.listing is None:
        print(f"repovault trending: {plan.skip_reason}", file=sys.stderr)
        return EXIT_FAILED
    listing = plan.listing
    period = {"daily": "today", "weekly": "this week", "monthly": "this month"}[listing.since]
    # The first --limit entries, and any further ones the schedule takes in place of refused ones.
    shown = max([args.limit, *(run.rank for run in plan.runs)])
    rows: list[list[str]] = []
    refused: dict[str, list[str]] = {}  # reason -> the ranks it refuses
    for rank, repo, reason in iter_rows(plan):
        if rank > shown:
            break
        if reason is not None:
            refused.setdefault(reason, []).append(f"#{rank}")
        description = repo.description or ""
        rows.append(
            [
                str(rank),
                repo.full_name,
                _thousands(repo.stars),
                _thousands(repo.stars_in_period),
                repo.language or "-",
                "no" if reason else "yes",
                description if len(description) <= 60 else description[:59] + "…",
            ]
        )
    header = ["rank", "repository", "stars", f"stars {period}", "language", "archivable"]
    _table([*header, "description"], rows)
    for reason, ranks in refused.items():
        print(f"{', '.join(ranks)} would not be archived: {reason}", file=sys.stderr)
    if plan.skip_reason:
        print(f"nothing would be requested: {plan.skip_reason}", file=sys.stderr)
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
    """Record the source; `sources_sensor` lists it on its next tick (it is due at once). A
    tracked source's filters and `keep` change only with `--replace`, and the change is said:
    a repeated `track add` must not silently undo an operator's earlier choices."""
    source = _source(args.source, settings, _filters(args))
    keep = _keep(args)
    fleet = FleetStore(_lineage(settings).engine)
    wanted = _choices(source.filters, keep)
    known = fleet.source(source.source_id)
    tracked = known if known is not None and known.status != "removed" else None
    said = wanted
    if tracked is not None:
        before = _choices(tracked.source.filters, tracked.keep)
        if (tracked.source.filters, tracked.keep or {}) == (source.filters, keep):
            print(f"{source.spec} is already tracked with {wanted}; nothing changed")
            return 0
        if not args.replace:
            raise BadInput(
                f"{source.spec} is already tracked with {before}; to track it with {wanted} "
                "instead, repeat the command with --replace"
            )
        said = f"{wanted} (was: {before})"
    fleet.add_source(source, now(), keep)
    again = " again" if known is not None and tracked is None else ""
    print(
        f"tracking {source.spec}{again} ({source.source_id}) with {said}; sources_sensor "
        "lists it on its next tick"
    )
    return 0


def cmd_track_list(args: argparse.Namespace, settings: Settings) -> int:
    rows = FleetStore(_existing_lineage(settings).engine).sources()
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
                _clipped(row.error) if not args.verbose else "",
            ]
            for row in rows
        ],
        [_wrapped("  error: ", row.error) if args.verbose and row.error else [] for row in rows],
    )
    return 0


def cmd_track_remove(args: argparse.Namespace, settings: Settings) -> int:
    """Stop listing the source; nothing is deleted from the vault."""
    source = _source(args.source, settings)
    if not FleetStore(_existing_lineage(settings).engine).remove_source(source.source_id):
        print(f"repovault track remove: {source.spec} is not tracked", file=sys.stderr)
        return EXIT_FAILED
    print(f"stopped tracking {source.spec}; its archived repositories stay in the vault")
    return 0


def cmd_refresh(args: argparse.Namespace, settings: Settings) -> int:
    """Check now (the given repositories, else every due one) and request runs for changes."""
    lineage = _existing_lineage(settings)
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
        print(f"{change.repo_id}  changed: {change.reason}  {state}  {change.request_id}")
    for repo_id in outcome.gone:
        print(f"{repo_id}  gone upstream (its snapshots are kept)")
    for repo_id, reason in outcome.failed:
        print(f"repovault refresh: {repo_id}: {reason}", file=sys.stderr)
    print(outcome.summary(), file=sys.stderr)
    return EXIT_FAILED if outcome.failed else 0


def _choices(filters: Filters, keep: dict[str, bool] | None) -> str:
    """A source's filters and `keep` for a sentence, `keep` in the order of the options."""
    described = _describe(filters, {k: (keep or {})[k] for k in KEEP_CHOICES if k in (keep or {})})
    return "no filters" if described == "-" else described


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
    submit.add_argument(
        "--force",
        action="store_true",
        help="write a fresh full snapshot even if nothing changed (repairs a damaged one)",
    )
    submit.add_argument(
        "--wait",
        action="store_true",
        help="follow each request to its end (progress on stderr); exit 0 only if every one "
        "completed or was unchanged",
    )
    submit.add_argument(
        "--timeout", type=float, metavar="S", help="with --wait: give up waiting after S seconds"
    )
    submit.set_defaults(func=cmd_submit)
    status = sub.add_parser("status", help="requests and their timestamps")
    status.add_argument("target", nargs="?", help="a request id or a repository URL")
    status.add_argument("--limit", type=int, default=50, help="newest N requests (default 50)")
    status.add_argument(
        "--verbose", action="store_true", help="whole errors, wrapped (one request: always)"
    )
    status.set_defaults(func=cmd_status)
    sub.add_parser("list", help="archived repositories").set_defaults(func=cmd_list)
    snaps = sub.add_parser(
        "snapshots",
        help="a repository's stored code, wiki and metadata snapshots: ids, dates, heads, sizes",
    )
    snaps.add_argument("target", metavar="URL_OR_REPO_ID")
    snaps.set_defaults(func=cmd_snapshots)
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
    forget_cmd = sub.add_parser(
        "forget",
        help="drop a repository's partition, requests and state (keeps its snapshots)",
    )
    forget_cmd.add_argument("target", metavar="URL_OR_REPO_ID")
    forget_cmd.add_argument(
        "--purge", action="store_true", help="delete its bucket and every snapshot in it too"
    )
    forget_cmd.set_defaults(func=cmd_forget)
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
    add.add_argument(
        "--replace",
        action="store_true",
        help="a source already tracked: replace its filters and keep choices with these",
    )
    add.set_defaults(func=cmd_track_add)
    track_list = track_sub.add_parser(
        "list", help="sources, repository counts, last listing, error"
    )
    track_list.add_argument("--verbose", action="store_true", help="whole errors, wrapped")
    track_list.set_defaults(func=cmd_track_list)
    remove = track_sub.add_parser("remove", help="stop listing a source (deletes nothing)")
    remove.add_argument("source", metavar="SOURCE")
    remove.set_defaults(func=cmd_track_remove)
    refresh_cmd = sub.add_parser(
        "refresh",
        help="check now for upstream changes (code refs, wiki, forge metadata) and request runs "
        "for changed repositories",
    )
    refresh_cmd.add_argument(
        "repos", nargs="*", metavar="REPO", help="URLs or repo_ids (default: every due one)"
    )
    refresh_cmd.set_defaults(func=cmd_refresh)
    token = sub.add_parser("token", help="the HTTP API's tokens: create, list, revoke")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="a new token, printed once")
    create.add_argument(
        "--scope",
        required=True,
        choices=SCOPES,
        help="read: GET routes and /metrics; submit: also POST /api/requests; admin: also "
        "POST .../verify",
    )
    create.add_argument("--name", help="who or what uses it (shown by `token list`)")
    create.set_defaults(func=cmd_token_create)
    token_sub.add_parser(
        "list", help="tokens, their scope and use; never the secrets"
    ).set_defaults(func=cmd_token_list)
    revoke = token_sub.add_parser("revoke", help="refuse a token from now on")
    revoke.add_argument("token_id", metavar="ID")
    revoke.set_defaults(func=cmd_token_revoke)
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


def _existing_lineage(settings: Settings) -> LineageStore:
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
    return _lineage(settings)


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


def _table(
    header: list[str], rows: list[list[str]], notes: Sequence[list[str]] | None = None
) -> None:
    """Aligned columns, one line per row whatever the cells hold; a row's `notes`, lines made
    by `_wrapped`, printed under it."""
    cells = [[_one_line(str(c)) for c in row] for row in [header, *rows]]
    widths = [max(len(c) for c in col) for col in zip(*cells, strict=False)]
    for i, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())
        for line in notes[i - 1] if notes and i else []:
            print(line)


def _record(labels: list[str], values: list[str]) -> None:
    """One record, a `label  value` line per field with a value; long values wrapped."""
    width = max(len(label) for label in labels)
    for label, value in zip(labels, values, strict=True):
        for line in _wrapped(f"{label.ljust(width)}  ", value) if value else []:
            print(line)


def _clipped(text: str | None, width: int = 100) -> str:
    """`text` on one line, cut to `width` characters with an ellipsis when longer (`status
    --verbose` and `status REQUEST_ID` show it whole)."""
    line = _one_line(text or "")
    return line if len(line) <= width else line[: width - 1] + "…"


def _wrapped(prefix: str, text: str) -> list[str]:
    """`text` whole, wrapped to the terminal after `prefix`, continuation lines indented under
    it: each of its own lines kept, any other control or format character escaped."""
    width = max(shutil.get_terminal_size((100, 24)).columns, len(prefix) + 20)
    indent = " " * len(prefix)
    lines: list[str] = []
    for part in text.splitlines() or [""]:
        lines += textwrap.wrap(
            _one_line(part),
            width,
            initial_indent=indent if lines else prefix,
            subsequent_indent=indent,
            break_on_hyphens=False,
            drop_whitespace=False,
        ) or [prefix if not lines else indent]
    return [line.rstrip() for line in lines]
