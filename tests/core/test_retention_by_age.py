"""Retention by age against real servers (git over smart HTTP, S3 = moto server): snapshots
whose ids span days, weeks and months, then one more archive run applies REPOVAULT_KEEP_DAILY/
_WEEKLY/_MONTHLY beside REPOVAULT_KEEP_SNAPSHOTS, to the code and to its wiki alike."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from repovault_pipeline.cli import main as cli
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.vault import layout
from repovault_pipeline.core.vault.layout import WIKI
from repovault_pipeline.core.vault.reader import SnapshotReader
from repovault_pipeline.core.vault.store import open_store
from tests.core.test_archive import archive
from tests.support.repos import ServedRepo, git

# docs/storage.md's example (tests/core/test_policy.py has it over ids alone), oldest first.
TAKEN = [
    "2026-08-15 12:00",
    "2026-10-02 00:00",
    "2026-10-31 23:59",
    "2026-11-20 12:00",
    "2026-11-29 12:00",
    "2026-12-01 12:00",
    "2026-12-05 08:00",
    "2026-12-05 22:00",
    "2026-12-06 03:00",
]
LAST_RUN = "2026-12-06 09:00"
# REPOVAULT_KEEP_SNAPSHOTS=2, _DAILY=3, _WEEKLY=2, _MONTHLY=3 keep these of TAKEN + LAST_RUN.
KEPT = {"2026-10-31 23:59", "2026-11-29 12:00", "2026-12-01 12:00", "2026-12-05 22:00"}
KEPT |= {"2026-12-06 03:00", LAST_RUN}


class WriterClock:
    """The clock `new_snapshot_id` reads, set to the time a test's snapshot is taken."""

    at = datetime(2000, 1, 1, tzinfo=UTC)

    @classmethod
    def set(cls, when: str) -> None:
        cls.at = datetime.strptime(when, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


class _ClockDatetime(datetime):
    @classmethod
    def now(cls, tz=None):  # type: ignore[no-untyped-def, override]
        return WriterClock.at


def stamped(when: str) -> str:
    """The stamp an id taken at `when` starts with."""
    return datetime.strptime(when, "%Y-%m-%d %H:%M").strftime("%Y%m%dT%H%M%SZ")


def restored_refs(dest: Path) -> dict[str, str]:
    lines = git(dest, "for-each-ref", "--format=%(refname) %(objectname)").splitlines()
    return {ref: sha for ref, sha in (line.split(" ") for line in lines)}


def test_daily_weekly_and_monthly_snapshots_are_kept_and_restore(
    vault_env: dict[str, str],
    make_repo: Callable[..., ServedRepo],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.setattr(layout, "datetime", _ClockDatetime)
    repo = make_repo("seasons")
    wiki = make_repo("seasons.wiki", owner=repo.url.split("/")[-2])
    monkeypatch.setenv("REPOVAULT_KEEP_SNAPSHOTS", "100")  # the history, kept whole
    # Full bundles: the policy alone decides (chains keep their bases, tests/core/test_chains.py).
    monkeypatch.setenv("REPOVAULT_CHAIN_MAX", "0")
    results = {}
    for n, when in enumerate([*TAKEN, LAST_RUN]):
        if when == LAST_RUN:  # the run that applies retention by age
            monkeypatch.setenv("REPOVAULT_KEEP_SNAPSHOTS", "2")
            monkeypatch.setenv("REPOVAULT_KEEP_DAILY", "3")
            monkeypatch.setenv("REPOVAULT_KEEP_WEEKLY", "2")
            monkeypatch.setenv("REPOVAULT_KEEP_MONTHLY", "3")
        repo.commit({"season.txt": f"{when}\n"}, message=when)
        repo.tag(f"v{n}")
        repo.push()
        wiki.commit({"Home.md": f"{when}\n"}, message=when)
        wiki.push()
        WriterClock.set(when)
        result = archive(repo)
        assert (result.outcome, result.wiki_outcome) == ("completed", "completed")
        assert result.snapshot_id.startswith(stamped(when))
        results[when] = result
    assert results[LAST_RUN].snapshots_deleted == len(TAKEN) + 1 - len(KEPT)

    store = open_store(Settings.from_env())
    bucket = results[LAST_RUN].bucket
    for reader, id_of in (
        (SnapshotReader(store, bucket), lambda r: r.snapshot_id),
        (SnapshotReader(store, bucket, WIKI), lambda r: r.wiki_snapshot_id),
    ):
        complete, incomplete = reader.snapshot_ids()
        assert set(complete) == {id_of(results[when]) for when in KEPT}
        assert incomplete == []
        gone = {id_of(results[when]) for when in TAKEN if when not in KEPT}
        listed = {i.key for i in store.list(bucket, reader.layout.snapshots)}
        assert not {key for key in listed if key.split("/")[-2] in gone}

    # `repovault snapshots` says why each is kept.
    capsys.readouterr()
    assert cli(["snapshots", repo.url]) == 0
    rows = {row.split()[1]: row for row in capsys.readouterr().out.splitlines()[1:]}
    october = rows[results["2026-10-31 23:59"].snapshot_id]
    assert october.endswith("  monthly 2026-10")
    newest = rows[results[LAST_RUN].wiki_snapshot_id]
    assert newest.startswith("wiki") and newest.endswith(
        "  last, daily 2026-12-06, weekly 2026-W49, monthly 2026-12"
    )

    for when in sorted(KEPT):
        result = results[when]
        code, pages = tmp_path / f"code-{when}", tmp_path / f"wiki-{when}"
        args = [repo.url, str(code), "--snapshot", result.snapshot_id]
        assert cli(["restore", *args]) == 0, capsys.readouterr().err
        manifest = SnapshotReader(store, bucket).manifest(result.snapshot_id)
        assert manifest is not None
        assert restored_refs(code) == manifest.refs
        assert (code / "season.txt").read_text() == f"{when}\n"
        args = ["--wiki", repo.url, str(pages), "--snapshot", result.wiki_snapshot_id]
        assert cli(["restore", *args]) == 0, capsys.readouterr().err
        wiki_manifest = SnapshotReader(store, bucket, WIKI).manifest(result.wiki_snapshot_id)
        assert wiki_manifest is not None
        assert restored_refs(pages) == wiki_manifest.refs
        assert (pages / "Home.md").read_text() == f"{when}\n"
