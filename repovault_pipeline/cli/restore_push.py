"""`repovault restore --push URL [--create FORGE:OWNER/NAME] [--snapshot ID] [--wiki] [--force]`:
a snapshot pushed back to a forge (`core.vault.push`)."""

from __future__ import annotations

import argparse
import sys

from ..core.common.settings import Settings
from ..core.sources.forges.create import restore_to_forge
from ..core.vault.restore import resolve_target
from ..core.vault.store import open_store
from .common import BadInput


def push_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--push",
        metavar="URL",
        help="push the snapshot's branches, tags and LFS objects to URL (an empty repository) "
        "instead of restoring into DEST; https://USER:TOKEN@host/... credentials are never "
        "printed",
    )
    parser.add_argument(
        "--create",
        metavar="FORGE:OWNER/NAME",
        help="create github:ORG/NAME, gitlab:GROUP/NAME, gitea:ORG/NAME or "
        "bitbucket:WORKSPACE/NAME (private) through the forge's API with its token, then push "
        "to it (to --push URL, when given)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="with --push: overwrite a target that is not empty (its other branches and tags "
        "are deleted), or the repository the snapshot was taken from",
    )


def cmd_push(args: argparse.Namespace, settings: Settings) -> int:
    """Push, then say what was pushed; refusals (not empty, same repository) are one line."""
    if args.metadata:
        raise BadInput(
            "--metadata cannot be pushed: issues, pull requests, releases and release files "
            "are restored as files with `repovault restore --metadata URL_OR_REPO_ID DEST`"
        )
    if args.dest is not None:
        raise BadInput(f"give DEST or --push/--create, not both (DEST was {args.dest!r})")
    ref = resolve_target(args.target, settings)
    pushed, created = restore_to_forge(
        settings,
        open_store(settings),
        ref,
        push=args.push,
        create=args.create,
        snapshot_id=args.snapshot,
        wiki=args.wiki,
        force=args.force,
    )
    if created is not None:
        print(f"created {created.full_name} ({'private' if created.private else 'public'})")
    for line in pushed.lines():
        print(line)
    for warning in pushed.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    return 0
