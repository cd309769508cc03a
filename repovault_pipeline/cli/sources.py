"""`repovault track add|list|remove` and `repovault refresh`: the tracked sources and the
repositories RepoVault keeps checking upstream, the commands of `repo_sources` and `repo_state`."""

from __future__ import annotations

import argparse
import sys

from ..core.common.identity import InvalidRepoUrl, host_allowed
from ..core.common.redact import mask_secrets
from ..core.common.settings import KEEP_CHOICES, Settings
from ..core.intake.kafka import KafkaGateway
from ..core.lineage.requests import now
from ..core.sources.fleet import FleetStore
from ..core.sources.forges.listing import Filters, InvalidSource, Source, parse_source
from ..core.sources.refresh import publish_changes, refresh
from ..core.vault.restore import resolve_target
from .common import (
    EXIT_FAILED,
    BadInput,
    Subparsers,
    existing_lineage,
    keep_choices,
    keep_options,
    lineage_store,
)
from .output import clipped, table, ts, wrapped


def register(sub: Subparsers) -> None:
    track = sub.add_parser(
        "track",
        help="tracked sources: GitHub, Gitea organisations and users, GitLab groups, Bitbucket "
        "workspaces",
    )
    track_sub = track.add_subparsers(dest="track_command", required=True)
    add = track_sub.add_parser(
        "add",
        help="track github:org/NAME, github:user/NAME, gitlab:group/PATH, gitea:org/NAME, "
        "gitea:user/NAME or bitbucket:workspace/NAME",
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
    keep_options(add)
    add.add_argument(
        "--replace",
        action="store_true",
        help="a source already tracked: replace its filters and keep choices with these",
    )
    add.set_defaults(handler=cmd_track_add)
    track_list = track_sub.add_parser(
        "list", help="sources, repository counts, last listing, error"
    )
    track_list.add_argument("--verbose", action="store_true", help="whole errors, wrapped")
    track_list.set_defaults(handler=cmd_track_list)
    remove = track_sub.add_parser("remove", help="stop listing a source (deletes nothing)")
    remove.add_argument("source", metavar="SOURCE")
    remove.set_defaults(handler=cmd_track_remove)
    refresh_cmd = sub.add_parser(
        "refresh",
        help="check now for upstream changes (code refs, wiki, forge metadata) and request runs "
        "for changed repositories",
    )
    refresh_cmd.add_argument(
        "repos", nargs="*", metavar="REPO", help="URLs or repo_ids (default: every due one)"
    )
    refresh_cmd.set_defaults(handler=cmd_refresh)


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


def cmd_track_add(args: argparse.Namespace, settings: Settings) -> int:
    """Record the source; `sources_sensor` lists it on its next tick (it is due at once). A
    tracked source's filters and `keep` change only with `--replace`, and the change is said:
    a repeated `track add` must not silently undo an operator's earlier choices."""
    source = _source(args.source, settings, _filters(args))
    keep = keep_choices(args)
    fleet = FleetStore(lineage_store(settings).engine)
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
    host, _, port = source.host.partition(":")
    if not host_allowed(host, int(port) if port.isdigit() else 443, settings.allowed_hosts):
        allowed = ",".join(settings.allowed_hosts)
        print(
            f"note: {host} is not in REPOVAULT_ALLOWED_HOSTS={allowed}: its repositories are "
            "listed but refused until it is added",
            file=sys.stderr,
        )
    return 0


def cmd_track_list(args: argparse.Namespace, settings: Settings) -> int:
    rows = FleetStore(existing_lineage(settings).engine).sources()
    if not rows:
        print("no tracked sources; add one with `repovault track add github:org/NAME`")
        return 0
    table(
        ["source", "filters", "status", "repos", "last_listing", "error"],
        [
            [
                row.source.spec,
                _describe(row.source.filters, row.keep),
                row.status,
                str(row.repos),
                ts(row.last_listed_at),
                clipped(row.error) if not args.verbose else "",
            ]
            for row in rows
        ],
        [wrapped("  error: ", row.error) if args.verbose and row.error else [] for row in rows],
    )
    return 0


def cmd_track_remove(args: argparse.Namespace, settings: Settings) -> int:
    """Stop listing the source; nothing is deleted from the vault."""
    source = _source(args.source, settings)
    if not FleetStore(existing_lineage(settings).engine).remove_source(source.source_id):
        print(f"repovault track remove: {source.spec} is not tracked", file=sys.stderr)
        return EXIT_FAILED
    print(f"stopped tracking {source.spec}; its archived repositories stay in the vault")
    return 0


def cmd_refresh(args: argparse.Namespace, settings: Settings) -> int:
    """Check now (the given repositories, else every due one) and request runs for changes."""
    lineage = existing_lineage(settings)
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
