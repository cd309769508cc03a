"""Which snapshots retention keeps by their ids alone (grandfather-father-son): the newest
`last`, and the newest of each of the `daily` newest days, `weekly` newest ISO weeks and
`monthly` newest months that hold a snapshot, as `restic forget --keep-last/-daily/-weekly/
-monthly` counts them. A snapshot id starts with its UTC time (layout.new_snapshot_id), so the
policy is a pure function over ids; the pins of a force-push need the clone and stay in
retention.py."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.vault.layout import taken_at

# Each rule names the period a snapshot falls in, as its reason shows it.
PERIODS: dict[str, Callable[[datetime], str]] = {
    "daily": lambda t: f"{t:%Y-%m-%d}",
    "weekly": lambda t: "{}-W{:02d}".format(*t.isocalendar()[:2]),
    "monthly": lambda t: f"{t:%Y-%m}",
}


@dataclass(frozen=True)
class Policy:
    """REPOVAULT_KEEP_SNAPSHOTS, _DAILY, _WEEKLY and _MONTHLY (0: that rule keeps none).

    Rules are independent (a snapshot kept as one of the `last` still counts as its day's):
    each period counts only if a snapshot was taken in it, counted back from the newest
    snapshot, so a repository that changes rarely keeps its history as far back as it goes
    (retention runs only when a snapshot is written: the newest is "now")."""

    last: int
    daily: int = 0
    weekly: int = 0
    monthly: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            settings.keep_snapshots,
            settings.keep_daily,
            settings.keep_weekly,
            settings.keep_monthly,
        )

    def reasons(self, snapshot_ids: Iterable[str]) -> dict[str, list[str]]:
        """The kept ids, each with why (`last`, `daily 2026-12-05`, `weekly 2026-W49`,
        `monthly 2026-12`), in rule order. Ids that are not a RepoVault UTC stamp count for
        `last` only."""
        newest_first = sorted(set(snapshot_ids), reverse=True)
        kept: dict[str, list[str]] = {s: ["last"] for s in newest_first[: self.last]}
        dated = [(s, t) for s in newest_first if (t := taken_at(s)) is not None]
        for rule, count in (
            ("daily", self.daily),
            ("weekly", self.weekly),
            ("monthly", self.monthly),
        ):
            period_of = PERIODS[rule]
            seen: set[str] = set()
            for snapshot_id, taken in dated:
                if len(seen) == count:
                    break
                period = period_of(taken)
                if period not in seen:  # newest first: the first seen is the period's newest
                    seen.add(period)
                    kept.setdefault(snapshot_id, []).append(f"{rule} {period}")
        return kept

    def kept(self, snapshot_ids: Iterable[str]) -> set[str]:
        return set(self.reasons(snapshot_ids))
