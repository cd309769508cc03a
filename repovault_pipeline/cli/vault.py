"""What is in the vault and getting it back: `list`, `snapshots`, `restore`, `verify`, and the
operator's `forget` and `stats`; the commands that read the object store."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

from ..core.common.errors import ArchiveError
from ..core.common.identity import bucket_name
from ..core.common.settings import Settings
from ..core.lineage.stats import compute_stats, human_size, stored_sizes
from ..core.sources.forget import UnknownRepository, forget
from ..core.sources.metadata.restore import restore_metadata
from ..core.vault.catalog import SnapshotInfo, repo_snapshots
from ..core.vault.policy import Policy
from ..core.vault.reader import Listed, list_vault
from ..core.vault.restore import resolve_target, restore
from ..core.vault.store import ObjectStore, open_store
from ..core.vault.verify import DEEP, QUICK, verify
from .common import EXIT_FAILED, BadInput, Subparsers, existing_lineage, lineage_store
from .output import one_line, table, ts
from .restore_push import cmd_push, push_options


def register(sub: Subparsers) -> None:
    sub.add_parser("list", help="archived repositories").set_defaults(handler=cmd_list)
    snaps = sub.add_parser(
        "snapshots",
        help="a repository's stored code, wiki and metadata snapshots: ids, dates, heads, sizes",
    )
    snaps.add_argument("target", metavar="URL_OR_REPO_ID")
    snaps.set_defaults(handler=cmd_snapshots)
    rest = sub.add_parser(
        "restore",
        help="rebuild a working clone from a stored bundle, or push a snapshot to a forge",
    )
    rest.add_argument("target", metavar="URL_OR_REPO_ID")
    rest.add_argument(
        "dest", metavar="DEST", nargs="?", help="new or empty folder (not with --push/--create)"
    )
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
    push_options(rest)
    rest.set_defaults(handler=cmd_restore)
    check = sub.add_parser(
        "verify",
        help="check a snapshot is stored as written (the `restorable` check's quick pass: "
        "listings, nothing downloaded); --deep proves it restores",
    )
    check.add_argument("target", metavar="URL_OR_REPO_ID")
    check.add_argument("--snapshot", metavar="ID", help="a snapshot id (default: the latest)")
    check.add_argument(
        "--deep",
        action="store_true",
        help="the deep pass: download the bundle, check its sha256, rebuild the repository, "
        "`git fsck --full`, every ref and HEAD, a sample of LFS objects hashed",
    )
    check.set_defaults(handler=cmd_verify)
    forget_cmd = sub.add_parser(
        "forget",
        help="drop a repository's partition, requests and state (keeps its snapshots)",
    )
    forget_cmd.add_argument("target", metavar="URL_OR_REPO_ID")
    forget_cmd.add_argument(
        "--purge", action="store_true", help="delete its bucket and every snapshot in it too"
    )
    forget_cmd.set_defaults(handler=cmd_forget)
    stats = sub.add_parser("stats", help="the vault_stats figures of the whole vault")
    stats.add_argument("--json", action="store_true", help="one JSON document")
    stats.set_defaults(handler=cmd_stats)


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
    table([*header, "bundles", "lfs", "wiki", "metadata"], rows)
    for item in listed:
        if item.damage:
            print(
                f"warning: {item.repo_id or item.bucket}: {one_line(item.damage)}; "
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
    sizes = stored_sizes(store, item.bucket, m)
    return [
        item.repo_id or "-",
        item.bucket,
        m.snapshot_id,
        m.head_commit[:12],
        human_size(sizes.total),
        str(m.tree.files if m.tree else 0),
        *(human_size(n) for n in (sizes.bundles, sizes.lfs, sizes.wiki, sizes.metadata)),
    ]


def cmd_snapshots(args: argparse.Namespace, settings: Settings) -> int:
    """Every stored snapshot of one repository, code, wiki and forge metadata, newest first:
    the ids `restore --snapshot` takes (with `--wiki` or `--metadata` for those kinds)."""
    ref = resolve_target(args.target, settings)
    policy = Policy.from_settings(settings)
    found = repo_snapshots(open_store(settings), ref.repo_id, settings.bucket_prefix, policy)
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
            ts(datetime.fromisoformat(snap.created_at)),
            (snap.head_commit or "-")[:12],
            human_size(snap.size),
            "yes" if snap.snapshot_id == series.latest else "-",
            _contents(snap),
            snap.base or "-",
            _kept(snap),
        ]
        for kind, series in found.series().items()
        for snap in series.snapshots
    ]
    table(
        ["kind", "snapshot_id", "created", "head", "size", "latest", "contents", "base", "kept"],
        rows,
    )
    if any(snap.kept == () for series in found.series().values() for snap in series.snapshots):
        print(
            "kept -: outside the retention policy (REPOVAULT_KEEP_SNAPSHOTS, _DAILY, _WEEKLY, "
            "_MONTHLY): a pin (the only snapshot holding commits rewritten or deleted upstream), "
            "or deleted by the next run that writes a snapshot",
            file=sys.stderr,
        )
    for kind, series in found.series().items():
        if series.warning:
            print(f"warning: {kind}: {series.warning}", file=sys.stderr)
    print(
        f"restore one: repovault restore {ref.repo_id} DEST --snapshot ID "
        "(with --wiki or --metadata for those kinds)",
        file=sys.stderr,
    )
    return 0


def _kept(snap: SnapshotInfo) -> str:
    """Why retention keeps a code or wiki snapshot; metadata snapshots are all kept."""
    if snap.kept is None:
        return "always"
    return ", ".join(snap.kept) or "-"


def _contents(snap: SnapshotInfo) -> str:
    if snap.records is not None:
        changed = ", ".join(f"{n} {kind}" for kind, n in snap.records.items() if n)
        return f"{changed or 'no changed records'}{' (full read)' if snap.full else ''}"
    files = f", {snap.tree_files} files" if snap.tree_files is not None else ""
    return f"{snap.refs} refs{files}"


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    if args.push or args.create:
        return cmd_push(args, settings)
    if args.dest is None:
        raise BadInput("give DEST, a new or empty folder (or --push URL to restore to a forge)")
    if args.force:
        raise BadInput("--force is for --push: a restore into DEST needs a new or empty folder")
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
    """The `restorable` check (quick pass, or with `--deep` the deep one): exit 0 with what was
    proven, 1 with the reason in one line."""
    ref = resolve_target(args.target, settings)
    depth = DEEP if args.deep else QUICK
    verdict = verify(settings, open_store(settings), ref, args.snapshot, depth=depth)
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
            lineage_store(settings),
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
    stats = compute_stats(settings, open_store(settings), existing_lineage(settings))
    if args.json:
        print(json.dumps(stats.to_dict(), indent=1))
        return 0
    table(["figure", "value"], [[k, f"{v:g}"] for k, v in stats.figures.items()])
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
            table(header, cells)
    return 0
