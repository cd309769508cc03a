"""`repovault submit` (and `--wait`) and `repovault status`: asking for archives and following
them, the commands that read and write `repo_requests`."""

from __future__ import annotations

import argparse
import sys
import time

from ..core.common.errors import ArchiveError
from ..core.common.identity import InvalidRepoUrl, parse_repo_url
from ..core.common.redact import mask_secrets
from ..core.common.settings import Settings
from ..core.intake.submit import submit, validate_urls
from ..core.lineage.requests import now
from ..core.lineage.rows import Request
from .common import (
    EXIT_FAILED,
    BadInput,
    Subparsers,
    existing_lineage,
    keep_choices,
    keep_options,
    lineage_store,
)
from .output import clipped, one_line, record, table, ts, wrapped

# What `submit --wait` promises with exit 0; any other final status (failed, rejected, ...) is 1.
SUCCESS_STATUSES = ("completed", "unchanged")
OPEN_STATUSES = ("pending", "in_progress")
WAIT_POLL_S = 1.0


def register(sub: Subparsers) -> None:
    submit_cmd = sub.add_parser("submit", help="request archives; prints one request_id per URL")
    submit_cmd.add_argument("urls", nargs="+", metavar="URL")
    keep_options(submit_cmd)
    submit_cmd.add_argument(
        "--force",
        action="store_true",
        help="write a fresh full snapshot even if nothing changed (repairs a damaged one)",
    )
    submit_cmd.add_argument(
        "--wait",
        action="store_true",
        help="follow each request to its end (progress on stderr); exit 0 only if every one "
        "completed or was unchanged",
    )
    submit_cmd.add_argument(
        "--timeout", type=float, metavar="S", help="with --wait: give up waiting after S seconds"
    )
    submit_cmd.set_defaults(handler=cmd_submit)
    status = sub.add_parser("status", help="requests and their timestamps")
    status.add_argument("target", nargs="?", help="a request id or a repository URL")
    status.add_argument("--limit", type=int, default=50, help="newest N requests (default 50)")
    status.add_argument(
        "--verbose", action="store_true", help="whole errors, wrapped (one request: always)"
    )
    status.set_defaults(handler=cmd_status)


def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    """Validate every URL first (nothing is published if one is bad), then record and publish
    each, waiting for the broker's acknowledgement."""
    keep = keep_choices(args)
    refs, refused = validate_urls(args.urls, settings)
    if refused:
        raise BadInput(f"{refused[0].url!r}: {refused[0].reason}")
    if args.timeout is not None and (not args.wait or args.timeout <= 0):
        raise BadInput(f"--timeout {args.timeout:g}: give a positive number of seconds with --wait")
    request_ids = []
    for _, request_id in submit(
        settings, lambda: lineage_store(settings), refs, "cli", keep, force=args.force
    ):
        print(request_id, flush=True)
        request_ids.append(request_id)
    return _follow(settings, request_ids, args.timeout) if args.wait else 0


def _follow(settings: Settings, request_ids: list[str], timeout: float | None) -> int:
    """Follow each request to its final status: a progress line on stderr whenever its phase
    changes, its outcome on stdout; exit 0 only when every one completed or was unchanged."""
    from ..runqueue import dagster_instance, phase

    lineage = lineage_store(settings)
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
        return f"{done}  {one_line(row.error)}"
    return f"{done}  snapshot {row.snapshot_id or '-'}  head {(row.head_commit or '-')[:12]}"


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    lineage = existing_lineage(settings)
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
        from ..runqueue import why_waiting  # Dagster loads only when there is a queue to read

        waiting = why_waiting(settings, rows, now())
    if target is not None and len(rows) == 1 and rows[0].request_id == target:
        request = rows[0]
        record(
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
            for line in wrapped(f"  {label}: ", text)
        ]
        for r in rows
    ]
    table(header, [_status_row(r, clip=not args.verbose) for r in rows], notes)
    return 0


def _status_row(r: Request, clip: bool = True) -> list[str]:
    return [
        r.request_id,
        r.repo_id or "-",
        r.source,
        r.status,
        ts(r.creation_timestamp),
        ts(r.inyector_timestamp),
        ts(r.worker_start_timestamp),
        ts(r.worker_finishing_timestamp),
        clipped(r.error) if clip else "",
    ]
