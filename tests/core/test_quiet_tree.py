"""A run pays for what changed: when the bucket is quiet (its lease released by a finished
writer that took over from nobody), the previous `tree.json` says what `tree/` holds, so a
re-archive after one changed file, and an unchanged run, list no `tree/` (counted through a
proxy in front of the S3 server). A bucket whose last writer took over from a stalled one is
listed as before (tests/core/test_snapshot_faults.py); a hand edit of a quiet one is found by
the drill and `repovault verify` (tests/assets/test_repair.py). The run's own `restorable` check
(the run pass) lists no `tree/` either: it HEADs what the snapshot changed."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pytest

from repovault_pipeline.core.common.errors import TransientError
from repovault_pipeline.core.common.identity import parse_repo_url
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.vault.outcome import ArchiveResult
from repovault_pipeline.core.vault.snapshot import SnapshotWriter
from repovault_pipeline.core.vault.store import open_store
from repovault_pipeline.core.vault.verify import QUICK, RUN, Verdict, verify
from tests.core.test_restore import s3
from tests.support.archiving import archive
from tests.support.repos import ServedRepo
from tests.support.tcp_proxy import BreakableProxy
from tests.support.vault_checks import assert_tree_is_head, read_json

T = TypeVar("T")


def counted(s3_endpoint: str, work: Callable[[Settings], T]) -> tuple[T, list[str]]:
    """`work` done through a proxy in front of the S3 server; the requests' `METHOD path`, as
    the server saw them."""
    proxy = BreakableProxy(int(s3_endpoint.rsplit(":", 1)[1]))
    try:
        settings = Settings.from_env().model_copy(update={"s3_endpoint": proxy.endpoint})
        done = work(settings)
        return done, [f"{method} {path}" for method, path in proxy.requests]
    finally:
        proxy.close()


def archive_counted(repo: ServedRepo, s3_endpoint: str) -> tuple[ArchiveResult, list[str]]:
    def run(settings: Settings) -> ArchiveResult:
        ref = parse_repo_url(repo.url, settings.allowed_schemes, settings.allowed_hosts)
        return SnapshotWriter(settings, open_store(settings)).archive(ref)

    return counted(s3_endpoint, run)


def verify_counted(repo: ServedRepo, s3_endpoint: str, depth: str) -> tuple[Verdict, list[str]]:
    def check(settings: Settings) -> Verdict:
        ref = parse_repo_url(repo.url, settings.allowed_schemes, settings.allowed_hosts)
        return verify(settings, open_store(settings), ref, depth=depth)

    return counted(s3_endpoint, check)


def tree_lists(requests: list[str]) -> list[str]:
    return [r for r in requests if r.startswith("GET ") and "prefix=tree%2F" in r]


def tree_puts(requests: list[str]) -> list[str]:
    return [r for r in requests if r.startswith("PUT ") and "/tree/" in r]


def test_a_quiet_bucket_is_written_without_listing_tree(
    vault_env: dict[str, str], make_repo
) -> None:
    repo = make_repo("quiet")
    repo.commit({f"d{n // 100}/f{n}.txt": f"{n}\n" for n in range(300)})
    repo.push()
    endpoint = vault_env["REPOVAULT_S3_ENDPOINT"]
    first, requests = archive_counted(repo, endpoint)
    assert first.outcome == "completed" and len(tree_puts(requests)) == 300
    assert len(tree_lists(requests)) == 1  # a first snapshot has no tree.json: listed

    repo.commit({"d2/f277.txt": "changed\n", "new.txt": "new\n", "d0/f1.txt": None})
    repo.push()
    second, requests = archive_counted(repo, endpoint)
    assert second.outcome == "completed" and second.files_uploaded == 2, second
    assert second.files_deleted == 1
    assert tree_lists(requests) == [], requests
    assert len(tree_puts(requests)) == 2, tree_puts(requests)
    assert assert_tree_is_head(second.bucket, repo.bare)["snapshot_id"] == second.snapshot_id

    third, requests = archive_counted(repo, endpoint)
    assert third.outcome == "unchanged" and tree_lists(requests) == [], requests
    assert len(requests) <= 12, requests  # lease, latest.json, manifest, chain listings


def test_the_run_pass_checks_what_the_run_wrote_without_listing_tree(
    vault_env: dict[str, str], make_repo
) -> None:
    """The `restorable` check of an archive run HEADs the `tree/` objects the snapshot changed
    and lists no `tree/`; what it did not write is the drill's and `repovault verify`'s."""
    repo = make_repo("run-pass")
    repo.commit({f"d{n // 100}/f{n}.txt": f"{n}\n" for n in range(300)})
    repo.push()
    endpoint = vault_env["REPOVAULT_S3_ENDPOINT"]
    first = archive(repo)
    verdict, requests = verify_counted(repo, endpoint, RUN)
    assert verdict.ok and verdict.depth == RUN, verdict.line()
    assert (verdict.tree_checked, verdict.tree_entries) == (32, 300)  # all written: a sample
    assert tree_lists(requests) == [], requests

    repo.commit({"d2/f277.txt": "changed\n", "new.txt": "new\n"})
    repo.push()
    second = archive(repo)
    assert second.files_uploaded == 2 and second.snapshot_id != first.snapshot_id
    verdict, requests = verify_counted(repo, endpoint, RUN)
    assert verdict.ok and verdict.tree_checked == 2, verdict.line()
    assert "2 of the 2 tree/ objects this snapshot changed checked" in verdict.line()
    heads = sorted(r.split("/", 2)[2] for r in requests if r.startswith("HEAD ") and "/tree/" in r)
    assert heads == ["tree/d2/f277.txt", "tree/new.txt"], requests
    assert tree_lists(requests) == [], requests

    # A hand edit of what the run did not write: the quick pass (and the drill) find it.
    s3().delete_object(Bucket=second.bucket, Key="tree/d1/f150.txt")
    assert verify_counted(repo, endpoint, RUN)[0].ok
    quick, requests = verify_counted(repo, endpoint, QUICK)
    assert (quick.ok, quick.reason) == (False, "tree_missing_object"), quick.line()
    assert "tree/d1/f150.txt" in quick.detail and len(tree_lists(requests)) == 1
    # What the run wrote, replaced by hand: the run pass fails it.
    s3().put_object(Bucket=second.bucket, Key="tree/new.txt", Body=b"not what was archived\n")
    run_pass, _ = verify_counted(repo, endpoint, RUN)
    assert (run_pass.ok, run_pass.reason) == (False, "tree_mismatch"), run_pass.line()
    assert "tree/new.txt" in run_pass.detail


def test_a_hand_deleted_file_that_changes_fails_the_run_transiently_and_the_retry_repairs(
    vault_env: dict[str, str], make_repo
) -> None:
    """The write of a changed file is conditional on the etag `tree.json` recorded; S3 answers
    404 for an object deleted by hand: the condition lost, nothing is committed, and the retry
    (the lease now `interrupted`) lists `tree/` and writes it whole."""
    repo = make_repo("handmade")
    repo.commit({"a.txt": "a\n", "b.txt": "b\n"})
    repo.push()
    first = archive(repo)
    s3().delete_object(Bucket=first.bucket, Key="tree/a.txt")
    repo.commit({"a.txt": "changed\n"})
    repo.push()
    with pytest.raises(TransientError, match="an object of tree/ changed"):
        archive(repo)
    assert read_json(first.bucket, "latest.json")["snapshot_id"] == first.snapshot_id
    retried = archive(repo)
    assert retried.outcome == "completed", retried
    assert assert_tree_is_head(first.bucket, repo.bare)["snapshot_id"] == retried.snapshot_id
