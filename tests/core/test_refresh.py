"""Refresh against the git server: a fleet of 50 served repositories, PostgreSQL `repo_state`,
`repovault refresh` publishing to the broker."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from repovault_pipeline.cli import main
from repovault_pipeline.core.fleet import UNREACHABLE_AFTER, FleetStore
from repovault_pipeline.core.gitops import refs_digest
from repovault_pipeline.core.lineage import open_lineage
from repovault_pipeline.core.refresh import refresh
from repovault_pipeline.core.settings import Settings
from tests.support.kafka import read_json
from tests.support.repos import ServedRepo

FLEET = 50
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def repo_id_of(repo: ServedRepo) -> str:
    return repo.url.removeprefix("http://").removesuffix(".git")


@pytest.fixture
def fleet(private_lineage: str) -> FleetStore:
    return FleetStore(open_lineage(private_lineage).engine)


@pytest.fixture
def served(make_repo: Callable[..., ServedRepo], fleet: FleetStore) -> list[ServedRepo]:
    """50 served repositories, each recorded as archived at T0 with its current refs."""
    repos = []
    for i in range(FLEET):
        repo = make_repo(f"r{i:02d}", owner="fleet" + os.urandom(3).hex())
        repo.commit({"README.md": f"repo {i}\n"})
        repo.push()
        fleet.record_snapshot(repo_id_of(repo), repo.url, refs_digest(repo.refs()), "s0", T0)
        repos.append(repo)
    return repos


def test_three_changes_among_fifty_request_three_runs(
    served: list[ServedRepo], fleet: FleetStore, capsys: pytest.CaptureFixture
) -> None:
    settings = Settings.from_env()
    t1 = T0 + timedelta(hours=settings.refresh_interval_h, minutes=1)
    first = refresh(settings, fleet, t1)
    assert (first.checked, len(first.unchanged), first.changed) == (FLEET, FLEET, [])
    # Nothing is due again before the interval has passed.
    assert refresh(settings, fleet, t1 + timedelta(hours=1)).checked == 0

    for repo in (served[3], served[17], served[42]):
        repo.commit({"CHANGES": "new\n"})
        repo.push()
    served[17].tag("v1")
    served[17].push()
    t2 = t1 + timedelta(hours=settings.refresh_interval_h, minutes=1)
    second = refresh(settings, fleet, t2)
    changed = sorted(repo_id_of(served[i]) for i in (3, 17, 42))
    assert [c.repo_id for c in second.changed] == changed
    assert len(second.unchanged) == FLEET - 3 and not second.failed and not second.gone
    for change in second.changed:
        repo = next(r for r in served if repo_id_of(r) == change.repo_id)
        assert change.digest == refs_digest(repo.refs())
        assert change.run_key == f"refresh:{change.repo_id}:{change.digest[:12]}"

    states = {s.repo_id: s for s in fleet.get([repo_id_of(r) for r in served])}
    assert all(s.last_checked_at == t2 for s in states.values())
    for repo_id, state in states.items():
        # What the latest snapshot holds is only ever written by the archive.
        assert state.refs_digest == refs_digest(
            next(r for r in served if repo_id_of(r) == repo_id).refs()
        ) or (repo_id in changed)
        assert state.last_snapshot_id == "s0" and state.upstream == "active"
        assert state.last_changed_at == (t2 if repo_id in changed else None)

    # `repovault refresh` requests the three through `pendientes`, once.
    topic = os.environ["REPOVAULT_TOPIC_PENDING"]
    assert main(["refresh", *changed]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in out] == [[r, "changed", "requested"] for r in changed]
    messages = read_json(topic)
    assert sorted(m["repo_url"] for m in messages) == sorted(served[i].url for i in (3, 17, 42))
    assert {m["source"] for m in messages} == {"refresh"}
    assert main(["refresh", *changed]) == 0
    assert "already requested" in capsys.readouterr().out
    assert len(read_json(topic)) == 3  # the same change is never requested twice


def test_deleted_upstream_is_gone_and_failing_becomes_unreachable(
    make_repo: Callable[..., ServedRepo], fleet: FleetStore
) -> None:
    settings = Settings.from_env()
    repo = make_repo("doomed")
    repo.commit({"a": "1\n"})
    repo.push()
    fleet.record_snapshot(repo_id_of(repo), repo.url, refs_digest(repo.refs()), "s0", T0)
    dead = "http://127.0.0.1:9/nobody/dead.git"  # nothing listens on port 9
    fleet.record_snapshot("127.0.0.1:9/nobody/dead", dead, "0" * 64, "s0", T0)
    shutil.rmtree(repo.bare)

    at = T0 + timedelta(days=2)
    outcome = refresh(settings, fleet, at)
    assert outcome.gone == [repo_id_of(repo)]
    assert [r for r, _ in outcome.failed] == ["127.0.0.1:9/nobody/dead"]
    [gone] = fleet.get([repo_id_of(repo)])
    assert gone.upstream == "gone" and gone.last_snapshot_id == "s0"
    for tick in range(2, UNREACHABLE_AFTER + 1):
        [state] = fleet.get(["127.0.0.1:9/nobody/dead"])
        assert state.upstream == "active" and state.consecutive_failures == tick - 1
        at += timedelta(days=2)
        refresh(settings, fleet, at)
    [state] = fleet.get(["127.0.0.1:9/nobody/dead"])
    assert state.upstream == "unreachable" and state.consecutive_failures == UNREACHABLE_AFTER


def test_refresh_cli_refuses_unknown_repositories(
    fleet: FleetStore, capsys: pytest.CaptureFixture
) -> None:
    assert main(["refresh", "http://127.0.0.1/none/such"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "repovault refresh: 127.0.0.1/none/such is neither archived nor tracked; request it "
        "with `repovault submit`"
    )
