"""Repairing a snapshot without Dagster: an archive whose refs did not move writes a fresh
snapshot when one listing shows the latest one's bundle missing or cut short (else it stays
`unchanged`), or when asked to (`force`); `force` travels in messages and run tags as a
boolean; a snapshot that does not restore advises what exists (another snapshot, a forced run)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from repovault_pipeline.core.common.errors import ArchiveError
from repovault_pipeline.core.common.identity import parse_repo_url
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.intake.messages import RejectedMessage, parse_request, request_message
from repovault_pipeline.core.intake.runs import TAG_FORCE, request_of_run, request_tags
from repovault_pipeline.core.lineage.requests import now
from repovault_pipeline.core.vault.snapshot import SnapshotWriter
from repovault_pipeline.core.vault.store import open_store
from repovault_pipeline.core.vault.verify import verify
from tests.core.test_restore import bundle_key, get, put, s3
from tests.support.archiving import archive
from tests.support.repos import ServedRepo


def test_a_missing_or_cut_bundle_is_rewritten_by_the_next_run(
    vault_env: dict[str, str], make_repo: Callable[..., ServedRepo]
) -> None:
    repo = make_repo("mended")
    repo.commit({"a.txt": "a\n"})
    repo.push()
    first = archive(repo)
    assert archive(repo).outcome == "unchanged"  # whole: nothing to do

    put(first, bundle_key(first), get(first, bundle_key(first))[:-10])
    second = archive(repo)
    assert (second.outcome, second.head_commit) == ("completed", first.head_commit)
    assert second.fresh == (
        f"its bundle is {first.bundle_size - 10} bytes but its manifest says {first.bundle_size}"
    )

    s3().delete_object(Bucket=second.bucket, Key=bundle_key(second))
    third = archive(repo)
    assert third.outcome == "completed"
    assert third.fresh == f"its bundle {bundle_key(second)} is missing"
    settings = Settings.from_env()
    ref = parse_repo_url(repo.url, settings.allowed_schemes, settings.allowed_hosts)
    assert verify(settings, open_store(settings), ref).ok

    writer = SnapshotWriter(settings, open_store(settings))
    forced = writer.upload(writer.prepare(ref, force=True))
    assert (forced.outcome, forced.fresh) == ("completed", "forced by the request")
    assert forced.snapshot_id != third.snapshot_id


def test_a_restore_that_fails_advises_what_exists(
    vault_env: dict[str, str], make_repo: Callable[..., ServedRepo]
) -> None:
    repo = make_repo("advised")
    repo.commit({"a.txt": "a\n"})
    repo.push()
    first = archive(repo)
    settings = Settings.from_env()
    ref = parse_repo_url(repo.url, settings.allowed_schemes, settings.allowed_hosts)
    writer = SnapshotWriter(settings, open_store(settings))
    second = writer.upload(writer.prepare(ref, force=True))
    put(second, bundle_key(second), b"x")
    verdict = verify(settings, open_store(settings), ref)
    assert verdict.reason == "bundle_size_mismatch"
    assert verdict.detail.endswith(
        f"restore another snapshot (--snapshot {first.snapshot_id} is the newest other), or "
        f"`repovault submit --force {repo.url}` writes a fresh snapshot"
    )


def test_force_is_a_boolean_in_messages_and_run_tags() -> None:
    settings = Settings.from_env({"REPOVAULT_ALLOWED_HOSTS": "github.com"})
    url = "https://github.com/o/r"
    forced = parse_request(request_message("rid", url, "cli", now(), force=True), "x", settings)
    assert forced.force and not parse_request(url.encode(), "x", settings).force
    assert "force" not in json.loads(request_message("rid", url, "cli", now()))
    with pytest.raises(RejectedMessage, match='force must be true or false, not "yes"'):
        parse_request(json.dumps({"repo_url": url, "force": "yes"}).encode(), "x", settings)

    tags = request_tags("rid", url, "cli", now(), force=True)
    assert tags[TAG_FORCE] == "true" and request_of_run(tags, "run").forced()
    assert TAG_FORCE not in request_tags("rid", url, "cli", now())
    assert not request_of_run({}, "run").forced()
    assert request_of_run({TAG_FORCE: " True "}, "run").forced()  # typed in the launchpad
    with pytest.raises(ArchiveError, match="repovault/force='yes' is unusable"):
        request_of_run({TAG_FORCE: "yes"}, "run").forced()
