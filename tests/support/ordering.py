"""The order the suite runs in: its longest tests first, one per worker.

pytest-xdist's worksteal hands every worker a contiguous slice of the collection, then lets an
idle worker steal from the end of another's. A 50-second test collected late starts late and
keeps its worker busy after every other has finished: the suite's tail. Put at the front of
the slices, the long tests start at once, side by side, and the short ones fill in around them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import islice
from typing import TypeVar

T = TypeVar("T")

# Tests of 15-60 s on two cores (`--durations` of CI), longest first: a file, a test, or a
# parametrized test's name. A name that no longer matches only loses its place at the front.
LONG_TESTS = (
    "tests/core/test_snapshot_faults.py::test_two_writers_at_once_keep_the_bucket_consistent",
    "tests/paths/test_schedule_tick.py::test_the_daily_tick_requests_the_trending_top_ten",
    "tests/test_forget.py",
    "tests/test_orphaned_runs.py",
    "tests/test_submit_wait.py::test_submit_wait_ends_with_each_outcome_and_fails_when_one_failed",
    "tests/sensors/test_reconcile.py::test_a_request_lost_with_the_broker_is_republished_and_runs_once",
    "tests/benchmarks/test_bench_quick.py",
    "tests/paths/test_sensor_dry_run.py",
    "tests/test_cli.py::test_the_cli_finds_its_home_from_any_folder_and_creates_nothing_to_read",
    "tests/sensors/test_injector_daemon.py::test_a_daemon_crash_between_launch_and_cursor_starts_no_duplicate",
    "tests/sensors/test_fleet_sensors.py::test_track_refresh_and_gone_through_the_daemon",
    "tests/test_submit_wait.py::test_an_upload_reports_its_progress_which_submit_wait_shows",
    "tests/paths/test_run_tags.py",
    "tests/paths/test_backfill.py",
    "tests/core/test_snapshot_faults.py::test_a_killed_run_never_leaves_tree_wrong_and_the_next_run_sweeps",
    "tests/core/test_refresh.py::test_a_wiki_edit_requests_a_run_through_repovault_refresh",
    "tests/core/test_migrations.py::test_a_first_release_database_is_upgraded_with_every_row_kept",
)


def long_rank(nodeid: str) -> int | None:
    """The test's place in LONG_TESTS, None for the others."""
    for rank, name in enumerate(LONG_TESTS):
        if nodeid == name or nodeid.startswith((f"{name}::", f"{name}[")):
            return rank
    return None


def slice_sizes(count: int, workers: int) -> list[int]:
    """The sizes of the slices worksteal first hands `workers` idle workers (`check_schedule`
    of xdist's WorkStealingScheduling)."""
    sizes, left = [], count
    for n in range(workers):
        sizes.append(left // (workers - n))
        left -= sizes[-1]
    return sizes


def long_ones_first(items: Sequence[T], rank: Callable[[T], int | None], workers: int) -> list[T]:
    """`items` reordered so that each worker's slice starts with its share of the long ones
    (longest first, dealt round the workers); the others keep their order."""
    ranks = [rank(item) for item in items]
    long = [items[n] for _, n in sorted((r, n) for n, r in enumerate(ranks) if r is not None)]
    rest = iter([item for item, r in zip(items, ranks, strict=True) if r is None])
    ordered: list[T] = []
    for n, size in enumerate(slice_sizes(len(items), workers)):
        mine = long[n::workers]
        ordered += mine + list(islice(rest, max(size - len(mine), 0)))
    return ordered + list(rest)
