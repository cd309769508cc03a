"""`sources_sensor` and `refresh_sensor` as the Dagster daemon runs them, against the forge API
server, the git server, S3 and PostgreSQL: first runs of tracked repositories, a changed
repository (its code, or only its wiki) requested once however many ticks see it, a deleted one
`gone` with its snapshots."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus, instance_for_test
from sqlalchemy import update

from repovault_pipeline.cli import main as cli
from repovault_pipeline.core.common.identity import bucket_name
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.intake.runs import request_tags
from repovault_pipeline.core.lineage.requests import now, open_lineage
from repovault_pipeline.core.lineage.tables import repo_sources, repo_state
from repovault_pipeline.core.sources.fleet import FleetStore
from repovault_pipeline.core.sources.refresh import Seen
from repovault_pipeline.core.vault.gitops import refs_digest
from repovault_pipeline.core.vault.reader import SnapshotReader
from repovault_pipeline.core.vault.store import open_store
from repovault_pipeline.definitions import defs
from repovault_pipeline.partitions import repositories
from tests.support.daemon import QUEUED, daemon_workspace, sensor_tick
from tests.support.forge_api import forge_api
from tests.support.forge_metadata import API_PATHS, FakeGitHub
from tests.support.repos import ServedRepo
from tests.support.ui import dry_run_sensor

SENSOR_INTERVAL_S = 60  # both sensors' minimum interval


def repo_id_of(repo: ServedRepo) -> str:
    return repo.url.removeprefix("http://").removesuffix(".git")


def archive(instance: DagsterInstance, repo: ServedRepo) -> None:
    """One archive run through the job, as the injector would start it."""
    repo_id = repo_id_of(repo)
    store = open_lineage(os.environ["REPOVAULT_DB_URL"])
    request_id = store.record_pending(repo.url, repo_id, "cli", created_at=now())
    instance.add_dynamic_partitions(repositories.name, [repo_id])
    result = defs.resolve_job_def("archive_repo_job").execute_in_process(
        partition_key=repo_id,
        instance=instance,
        tags=request_tags(request_id, repo.url, "cli", now()),
    )
    assert result.success


def test_track_refresh_and_gone_through_the_daemon(
    private_lineage: str,
    vault_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    make_repo: Callable[..., ServedRepo],
    git_base_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    owner = "acme" + os.urandom(3).hex()
    tracked = []
    for name in ("a", "b", "c", "d"):
        repo = make_repo(name, owner=owner)
        repo.commit({"README": name})
        repo.push()
        tracked.append(repo)
    changing, doomed, documented = make_repo("changing"), make_repo("doomed"), make_repo("doc")
    for repo in (changing, doomed, documented):
        repo.commit({"README": "archived\n"})
        repo.push()
    wiki = make_repo("doc.wiki", owner=documented.url.split("/")[-2])
    wiki.commit({"Home.md": "# Doc\n"})
    wiki.push()
    fleet = FleetStore(open_lineage(private_lineage).engine)

    with forge_api(git_base_url) as api:
        for repo in tracked:
            api.add(owner, repo.bare.name.removesuffix(".git"))
        api.add(owner, "skipped-fork", fork=True)
        monkeypatch.setenv("REPOVAULT_GITHUB_API", api.url)
        vault_env["REPOVAULT_GITHUB_API"] = api.url
        assert cli(["track", "add", f"github:org/{owner}", "--skip-forks"]) == 0

        with instance_for_test(overrides=QUEUED) as instance, daemon_workspace(instance) as daemon:
            # The archive path records what each snapshot holds into repo_state.
            for repo in (changing, doomed, documented):
                archive(instance, repo)
                [state] = fleet.get([repo_id_of(repo)])
                assert state.refs_digest == refs_digest(repo.refs())
                assert state.last_snapshot_id is not None
                # ... and its wiki's refs (those of none when it has no wiki).
                assert state.wiki_digest == refs_digest(wiki.refs() if repo is documented else {})
            changing.commit({"README": "changed upstream\n"})
            changing.push()
            wiki.commit({"Home.md": "# Doc, edited in the wiki only\n"})
            wiki.push()
            shutil.rmtree(doomed.bare)
            make_due(private_lineage, [repo_id_of(changing), repo_id_of(documented)])

            # "Test sensor" in the UI says what the ticks below do, and does none of it.
            checked_before = {s.repo_id: s.last_checked_at for s in fleet.due(now(), 100)}
            listed = dry_run_sensor(daemon, "sources_sensor", None)["skipReason"]
            new = ", ".join(sorted(repo_id_of(r) for r in tracked))
            assert listed == (
                f"dry run, nothing written: listed 1 sources (4 repositories); would record 4 "
                f"new repositories ({new}) and the listings, mark 0 gone, and request the first "
                "runs of 0 known repositories (none) and of the new ones (at most 200 a tick)"
            )
            checked = dry_run_sensor(daemon, "refresh_sensor", None)["skipReason"]
            changes = sorted(
                [f"{repo_id_of(changing)} (code refs)", f"{repo_id_of(documented)} (wiki)"]
            )
            assert checked == (
                "dry run, nothing written: checked 2: 2 changed, 0 unchanged, 0 failed, 0 gone; "
                f"would record the checks and request 2 runs ({', '.join(changes)})"
            )
            [source] = fleet.sources()
            assert (source.last_listed_at, source.repos) == (None, 0)
            assert {s.repo_id: s.last_checked_at for s in fleet.due(now(), 100)} == checked_before
            assert queued(instance) == []

            sensor_tick(daemon, "sources_sensor")
            sensor_tick(daemon, "refresh_sensor")
            first = {r.tags["dagster/run_key"]: r for r in queued(instance)}
            code = Seen(refs_digest(changing.refs()), refs_digest({})).digest
            edit = Seen(refs_digest(documented.refs()), refs_digest(wiki.refs())).digest
            assert sorted(first) == sorted(
                [f"track:{repo_id_of(r)}" for r in tracked]
                + [f"refresh:{repo_id_of(changing)}:{code[:12]}"]
                + [f"refresh:{repo_id_of(documented)}:{edit[:12]}"]
            )
            for run in first.values():
                assert run.tags["repovault/host"] == git_base_url.removeprefix("http://")
                assert run.tags["repovault/source"] in ("track", "refresh")
            assert set(instance.get_dynamic_partitions(repositories.name)) >= {
                repo_id_of(r) for r in tracked
            }
            [source] = fleet.sources()
            assert (source.repos, source.status, source.error) == (4, "active", None)

            # Upstream: one tracked repository deleted; the listing and the checks come due again.
            api.remove(f"{owner}/d")
            shutil.rmtree(tracked[3].bare)
            make_due(
                private_lineage,
                [repo_id_of(r) for r in (changing, doomed, documented)],
                sources=True,
            )
            sensor_tick(daemon, "sources_sensor", after_s=SENSOR_INTERVAL_S + 1)
            sensor_tick(daemon, "refresh_sensor", after_s=SENSOR_INTERVAL_S + 1)
            assert sorted(r.tags["dagster/run_key"] for r in queued(instance)) == sorted(first)

    states = {s.repo_id: s for s in fleet.get([repo_id_of(r) for r in (*tracked, doomed)])}
    assert states[repo_id_of(tracked[3])].upstream == "gone"
    assert states[repo_id_of(doomed)].upstream == "gone"
    assert {states[repo_id_of(r)].upstream for r in tracked[:3]} == {"active"}
    # Gone deletes nothing: the snapshot is there and restores.
    settings = Settings.from_env()
    reader = SnapshotReader(
        open_store(settings), bucket_name(repo_id_of(doomed), settings.bucket_prefix)
    )
    assert reader.latest() is not None
    assert cli(["restore", repo_id_of(doomed), str(tmp_path / "restored")]) == 0
    assert "restored" in capsys.readouterr().out


def queued(instance: DagsterInstance) -> list:
    runs = instance.get_runs()
    assert all(r.status == DagsterRunStatus.QUEUED for r in runs if "dagster/run_key" in r.tags)
    return [r for r in runs if "dagster/run_key" in r.tags]


def make_due(db_url: str, repo_ids: list[str], sources: bool = False) -> None:
    """Move the last check (and listing) a day and more into the past."""
    engine = open_lineage(db_url).engine
    long_ago = now() - timedelta(days=3)
    with engine.begin() as conn:
        conn.execute(
            update(repo_state)
            .where(repo_state.c.repo_id.in_(repo_ids))
            .values(last_checked_at=long_ago)
        )
        if sources:
            conn.execute(update(repo_sources).values(last_listed_at=long_ago))


@pytest.mark.parametrize("forge", ["gitea", "bitbucket"])
def test_a_tracked_gitea_or_bitbucket_source_is_archived_with_its_metadata(
    forge: str,
    private_lineage: str,
    vault_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    make_repo: Callable[..., ServedRepo],
    git_base_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    """`track add gitea:org/...` or `bitbucket:workspace/...`, then the way a GitHub source goes:
    the daemon's `sources_sensor` lists it with the forge's credentials (the repository is
    private), records the request and queues the first run; that run archives the code and the
    forge's metadata (read from a metadata API of the same forge's shape on the same host), and
    the snapshot restores."""
    owner = "team" + os.urandom(3).hex()
    repo = make_repo("tool", owner=owner)
    repo.commit({"README": "tracked on another forge\n"})
    repo.push()
    secret = "forge-secret-" + os.urandom(8).hex()
    metadata = FakeGitHub(owner, "tool", shape=forge)
    metadata.token = secret
    metadata.add_comment(metadata.add_issue("make it faster", pull=True), "measured: 2x")
    api_variable = {"gitea": "REPOVAULT_GITEA_API", "bitbucket": "REPOVAULT_BITBUCKET_API"}[forge]
    credentials = {"gitea": {"GITEA_TOKEN": secret}}.get(
        forge, {"BITBUCKET_USERNAME": metadata.username, "BITBUCKET_APP_PASSWORD": secret}
    )
    for key, value in credentials.items():
        monkeypatch.setenv(key, value)
        vault_env[key] = value
    spec = {"gitea": "gitea:org", "bitbucket": "bitbucket:workspace"}[forge]
    fleet = FleetStore(open_lineage(private_lineage).engine)
    try:
        with forge_api(git_base_url, token=secret) as api:
            api.add(owner, "tool", private=True)
            listing_api = api.url + API_PATHS[forge]
            monkeypatch.setenv(api_variable, listing_api)
            assert cli(["track", "add", f"{spec}/{owner}"]) == 0
            with (
                instance_for_test(overrides=QUEUED) as instance,
                daemon_workspace(instance) as daemon,
            ):
                sensor_tick(daemon, "sources_sensor")
                # Private: listed only because the forge's credentials went with the listing.
                [run] = queued(instance)
                assert run.tags["dagster/run_key"] == f"track:{repo_id_of(repo)}"

                # The run, as the queue launches it; the forge's metadata API on the same host.
                monkeypatch.setenv(api_variable, metadata.api)
                own = {k: v for k, v in run.tags.items() if not k.startswith("dagster/")}
                result = defs.resolve_job_def("archive_repo_job").execute_in_process(
                    partition_key=repo_id_of(repo), instance=instance, tags=own
                )
                assert result.success
                [meta] = result.asset_materializations_for_node("repo_metadata")
                changed = meta.metadata["changed_by_kind"].value
                assert {"pull_requests": 1, "comments": 1}.items() <= changed.items()
        [source] = fleet.sources()
        assert (source.repos, source.status) == (1, "active")
        row = open_lineage(private_lineage).get(run.tags["repovault/request_id"])
        assert row is not None and row.status == "completed"
        assert secret not in repr(row) and secret not in repr(run.tags)
        assert cli(["restore", repo_id_of(repo), str(tmp_path / "restored")]) == 0
        assert "restored" in capsys.readouterr().out
        assert (tmp_path / "restored" / "README").read_text() == "tracked on another forge\n"
    finally:
        metadata.close()
