"""`repovault trending`: the list the trending schedule would request now, a preview that
requests and records nothing."""

from __future__ import annotations

import argparse
import sys

from ..core.common.settings import TRENDING_PERIODS, Settings
from ..core.sources.trending.page import InvalidTrendingOption, check_language
from ..core.sources.trending.tick import iter_rows, plan_trending_tick
from .common import EXIT_FAILED, BadInput, Subparsers
from .output import table, thousands


def register(sub: Subparsers) -> None:
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
    trending.set_defaults(handler=cmd_trending)


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
                thousands(repo.stars),
                thousands(repo.stars_in_period),
                repo.language or "-",
                "no" if reason else "yes",
                description if len(description) <= 60 else description[:59] + "…",
            ]
        )
    header = ["rank", "repository", "stars", f"stars {period}", "language", "archivable"]
    table([*header, "description"], rows)
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
