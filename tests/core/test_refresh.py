"""Refresh against the git server: a fleet of 50 served repositories, PostgreSQL `repo_state`,
`repovault refresh` publishing to the broker; a wiki edit and a forge stamp listed by the forge
API server (metadata) are changes too, and what an archive records makes them settle."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from repovault_pipeline.cli import main
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.lineage.requests import open_lineage
from repovault_pipeline.core.sources.discover import sources_tick
from repovault_pipeline.core.sources.fleet import FleetStore
from repovault_pipeline.core.sources.fleet_rows import UNREACHABLE_AFTER, RepoState
from repovault_pipeline.core.sources.refresh import Seen, refresh
from repovault_pipeline.core.vault.gitops import refs_digest
from repovault_pipeline.core.vault.outcome import ArchiveResult
from tests.support.archiving import archive
from tests.support.forge_api import forge_api
from tests.support.git_http_server import logged_requests
from tests.support.kafka import read_json
from tests.support.repos import ServedRepo
from tests.support.user_checks import console

FLEET = 50
T0 = datetime(2026, 1, 1, tzinfo=UTC)
NO_WIKI = refs_digest({})  # what an archive run records of a repository without a wiki


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
        fleet.record_snapshot(
            repo_id_of(repo), repo.url, refs_digest(repo.refs()), "s0", T0, wiki_digest=NO_WIKI
        )
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
        assert (change.seen.code, change.seen.wiki) == (refs_digest(repo.refs()), NO_WIKI)
        assert change.reason == "code refs"
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
    assert [line.split("  ")[:3] for line in out] == [
        [r, "changed: code refs", "requested"] for r in changed
    ]
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


def record_run(fleet: FleetStore, result: ArchiveResult, at: datetime) -> None:
    """What `record_lineage` records of an archive run."""
    fleet.record_snapshot(
        result.repo_id,
        result.repo_url,
        result.refs_digest or "",
        result.snapshot_id,
        at,
        wiki_digest=result.wiki_refs_digest,
    )


def test_a_wiki_edit_requests_a_run_through_repovault_refresh(
    make_repo: Callable[..., ServedRepo],
    fleet: FleetStore,
    tmp_path: Path,
    git_server_log: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = make_repo("handbook")
    repo.commit({"README.md": "code\n"})
    repo.push()
    wiki = make_repo("handbook.wiki", owner=repo.url.split("/")[-2])
    wiki.commit({"Home.md": "# Welcome\n"})
    wiki.push()
    record_run(fleet, archive(repo), T0)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def repovault_refresh() -> tuple[list[str], str]:
        done = console("repovault", "refresh", repo.repo_id, cwd=elsewhere)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines(), done.stderr

    out, err = repovault_refresh()
    assert out == [] and "checked 1: 0 changed, 1 unchanged" in err  # nothing changed: no run

    wiki.commit({"Home.md": "# Welcome back\n"}, "edit the wiki")
    wiki.push()
    [line], _ = repovault_refresh()
    assert line.startswith(f"{repo.repo_id}  changed: wiki  requested  ")
    [message] = read_json(os.environ["REPOVAULT_TOPIC_PENDING"])
    assert (message["repo_url"], message["source"]) == (repo.url, "refresh")

    # The run it requested records the wiki it archived: the edit is not a change any more.
    record_run(fleet, archive(repo), T0 + timedelta(hours=1))
    settled = refresh(Settings.from_env(), fleet, T0 + timedelta(days=2), [repo.repo_id])
    assert settled.unchanged == [repo.repo_id]

    # A wiki not kept is never asked for, and its edits are no change.
    monkeypatch.setenv("REPOVAULT_KEEP_WIKI", "false")
    wiki.commit({"Home.md": "# Not kept\n"}, "edit again")
    wiki.push()
    asked = len(logged_requests(git_server_log, "/" + wiki.url.split("/", 3)[3]))
    outcome = refresh(Settings.from_env(), fleet, T0 + timedelta(days=9), [repo.repo_id])
    assert outcome.unchanged == [repo.repo_id] and not outcome.changed
    assert len(logged_requests(git_server_log, "/" + wiki.url.split("/", 3)[3])) == asked


def test_a_newer_forge_stamp_requests_a_run_when_metadata_is_kept(
    make_repo: Callable[..., ServedRepo],
    fleet: FleetStore,
    git_base_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    owner = "forge" + os.urandom(3).hex()
    repo = make_repo("tool", owner=owner)
    repo.commit({"README.md": "tool\n"})
    repo.push()
    monkeypatch.setenv("REPOVAULT_KEEP_METADATA", "on")
    with forge_api(git_base_url) as api:
        api.add(owner, "tool")
        monkeypatch.setenv("REPOVAULT_GITHUB_API", api.url)
        assert main(["track", "add", f"github:org/{owner}"]) == 0
        settings = Settings.from_env()
        sources_tick(settings, fleet, T0)  # the listing records the forge's stamp
        [state] = fleet.get([repo.repo_id])
        assert state.forge_stamp == "2026-01-01T00:00:00Z 2026-01-01T00:00:00Z"
        # The first run: its archive, then its metadata snapshot (repo_metadata records the
        # stamp listed before it read the forge).
        record_run(fleet, archive(repo), T0)
        fleet.record_metadata(repo.repo_id, state.forge_stamp)
        assert not refresh(settings, fleet, T0 + timedelta(days=2)).changed

        api.touch(f"{owner}/tool", "2026-01-05T08:00:00Z")  # a new issue upstream
        sources_tick(settings, fleet, T0 + timedelta(days=4))
        done = console("repovault", "refresh", repo.repo_id, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.splitlines()
    assert line.startswith(f"{repo.repo_id}  changed: metadata  requested  ")
    [message] = read_json(os.environ["REPOVAULT_TOPIC_PENDING"])
    assert (message["repo_url"], message["source"]) == (repo.url, "refresh")

    # Metadata not kept: the stamp is not compared.
    monkeypatch.setenv("REPOVAULT_KEEP_METADATA", "off")
    outcome = refresh(Settings.from_env(), fleet, T0 + timedelta(days=9), [repo.repo_id])
    assert outcome.unchanged == [repo.repo_id]


@pytest.mark.parametrize(
    ("seen", "recorded", "changed"),
    [
        (Seen("c", "w", "m"), ("c", "w", "m"), ()),
        (Seen("c2", "w", "m"), ("c", "w", "m"), ("code refs",)),
        (Seen("c", "w2", "m2"), ("c", "w", "m"), ("wiki", "metadata")),
        (Seen("c", None, None), ("c", "w", "m"), ()),  # neither kept: not compared
        (Seen("c", "w", "m"), ("c", None, None), ("wiki", "metadata")),  # never recorded
    ],
)
def test_which_signals_changed(
    seen: Seen, recorded: tuple[str, str | None, str | None], changed: tuple[str, ...]
) -> None:
    code, wiki, stamp = recorded
    state = RepoState(
        "h/o/r", "https://h/o/r.git", None, T0, None, code, "active", 0, "s0", wiki, "listed", stamp
    )
    assert seen.differs(state) == changed
