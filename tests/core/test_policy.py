"""The retention policy over snapshot ids (core/vault/policy.py): what it keeps and why."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from repovault_pipeline.core.vault.policy import PERIODS, Policy

RULES = ("daily", "weekly", "monthly")


def sid(when: str, head: str = "0123456789ab") -> str:
    """The id RepoVault writes for a snapshot taken at `when` (`yyyy-mm-dd HH:MM`, UTC)."""
    return f"{datetime.strptime(when, '%Y-%m-%d %H:%M'):%Y%m%dT%H%M%SZ}-{head}"


snapshot_ids = st.lists(
    st.builds(
        lambda t, head: f"{t:%Y%m%dT%H%M%SZ}-{head:012x}",
        st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2027, 12, 31)),
        st.integers(0, 2**48 - 1),
    ),
    min_size=1,
    max_size=60,
    unique=True,
)
counts = st.integers(0, 8)
policies = st.builds(Policy, st.integers(1, 8), counts, counts, counts)
examples = settings(max_examples=300, deadline=None, database=None)


def period(rule: str, snapshot_id: str) -> str:
    return PERIODS[rule](datetime.strptime(snapshot_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC))


def test_the_example_of_docs_storage() -> None:
    """docs/storage.md's example: REPOVAULT_KEEP_SNAPSHOTS=2, _DAILY=3, _WEEKLY=2, _MONTHLY=3."""
    ids = [
        sid("2026-12-06 09:00"),  # Sunday, ISO week 49
        sid("2026-12-06 03:00"),
        sid("2026-12-05 22:00"),
        sid("2026-12-05 08:00"),
        sid("2026-12-01 12:00"),  # Tuesday, week 49
        sid("2026-11-29 12:00"),  # Sunday, week 48
        sid("2026-11-20 12:00"),
        sid("2026-10-31 23:59"),
        sid("2026-10-02 00:00"),
        sid("2026-08-15 12:00"),
    ]
    assert Policy(2, daily=3, weekly=2, monthly=3).reasons(ids) == {
        sid("2026-12-06 09:00"): ["last", "daily 2026-12-06", "weekly 2026-W49", "monthly 2026-12"],
        sid("2026-12-06 03:00"): ["last"],
        sid("2026-12-05 22:00"): ["daily 2026-12-05"],
        sid("2026-12-01 12:00"): ["daily 2026-12-01"],
        sid("2026-11-29 12:00"): ["weekly 2026-W48", "monthly 2026-11"],
        sid("2026-10-31 23:59"): ["monthly 2026-10"],
    }


def test_zero_age_rules_keep_the_newest_by_count_as_before() -> None:
    ids = [sid(f"2026-12-0{d} 10:00") for d in range(1, 8)]
    assert Policy(3).kept(ids) == set(sorted(ids)[-3:])
    assert Policy(10).kept(ids) == set(ids)


def test_ids_not_written_by_repovault_count_for_last_only() -> None:
    ids = [sid("2026-12-06 10:00"), "manual-copy", sid("2026-11-01 10:00")]
    # "manual-copy" sorts after the stamps, so it is the newest by id, as reader lists it.
    assert Policy(1, daily=5, monthly=5).reasons(ids) == {
        "manual-copy": ["last"],
        sid("2026-12-06 10:00"): ["daily 2026-12-06", "monthly 2026-12"],
        sid("2026-11-01 10:00"): ["daily 2026-11-01", "monthly 2026-11"],
    }


def test_a_week_spans_a_year_boundary_as_iso_counts_it() -> None:
    ids = [sid("2027-01-02 10:00"), sid("2026-12-28 10:00"), sid("2026-12-27 10:00")]
    assert Policy(1, weekly=2).reasons(ids) == {
        sid("2027-01-02 10:00"): ["last", "weekly 2026-W53"],
        sid("2026-12-27 10:00"): ["weekly 2026-W52"],
    }


@examples
@given(snapshot_ids, policies)
def test_the_newest_is_always_kept_and_only_given_ids(ids: list[str], policy: Policy) -> None:
    kept = policy.kept(ids)
    assert max(ids) in kept
    assert kept <= set(ids)


@examples
@given(snapshot_ids, policies, st.sampled_from(("last", *RULES)))
def test_a_smaller_count_never_keeps_more(ids: list[str], policy: Policy, rule: str) -> None:
    fewer = {**vars(policy), rule: max(getattr(policy, rule) - 1, 0)}
    assert Policy(**fewer).kept(ids) <= policy.kept(ids)


@examples
@given(snapshot_ids, policies, st.sampled_from(RULES))
def test_each_rule_keeps_the_newest_of_its_newest_periods(
    ids: list[str], policy: Policy, rule: str
) -> None:
    reasons = policy.reasons(ids)
    chosen = {
        r.split(" ", 1)[1]: s for s, why in reasons.items() for r in why if r.startswith(rule)
    }
    picks = [s for s, why in reasons.items() for r in why if r.startswith(rule)]
    assert len(picks) == len(chosen)  # at most one snapshot per period
    newest_of: dict[str, str] = {}
    for snapshot_id in ids:
        key = period(rule, snapshot_id)
        newest_of[key] = max(newest_of.get(key, snapshot_id), snapshot_id)
    newest_periods = sorted(newest_of, reverse=True)[: getattr(policy, rule)]
    assert chosen == {key: newest_of[key] for key in newest_periods}


@examples
@given(snapshot_ids, policies)
def test_the_last_rule_keeps_the_newest_ids(ids: list[str], policy: Policy) -> None:
    reasons = policy.reasons(ids)
    assert {s for s, why in reasons.items() if "last" in why} == set(
        sorted(ids, reverse=True)[: policy.last]
    )
    assert all(why for why in reasons.values())
