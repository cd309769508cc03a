"""`repovault verify` (the `restorable` check) passes on a fresh snapshot and fails, with its own
reason, on each corruption made directly on the S3 server with boto3."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from repovault_pipeline.cli import main as cli
from repovault_pipeline.core.common.identity import parse_repo_id, parse_repo_url
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.vault import verify as verify_module
from repovault_pipeline.core.vault.outcome import ArchiveResult
from repovault_pipeline.core.vault.snapshot import SnapshotWriter
from repovault_pipeline.core.vault.store import open_store
from repovault_pipeline.core.vault.verify import verify
from tests.core.test_restore import (
    bundle_key,
    edit_manifest,
    get,
    put,
    s3,
)


def run_verify(target: str, capsys: pytest.CaptureFixture, *extra: str) -> tuple[int, str, str]:
    code = cli(["verify", target, *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def failing(result: ArchiveResult, capsys: pytest.CaptureFixture, reason: str) -> str:
    """The CLI exits 1 with one line naming `reason`; the core verdict agrees."""
    code, out, err = run_verify(result.repo_id, capsys)
    assert code == 1, (out, err)
    assert err.count("\n") == 1, err
    assert f": {reason}: " in err, err
    settings = Settings.from_env()
    verdict = verify(settings, open_store(settings), parse_repo_id(result.repo_id))
    assert (verdict.ok, verdict.reason) == (False, reason)
    return err


def test_a_fresh_snapshot_passes(archived, capsys: pytest.CaptureFixture) -> None:
    repo, result = archived
    code, out, err = run_verify(repo.url, capsys)
    assert (code, err) == (0, "")
    assert f"{result.repo_id} snapshot {result.snapshot_id} restores: 3 refs and HEAD" in out
    assert f"{result.tree_files} of {result.tree_files} tree/ objects checked" in out
    settings = Settings.from_env()
    verdict = verify(settings, open_store(settings), parse_repo_id(result.repo_id))
    assert verdict.ok and verdict.refs == 3 and verdict.bundle_bytes == result.bundle_size
    assert verdict.tree_checked == result.tree_files == 1 and not verdict.tree_sampled


def test_a_tampered_bundle_fails(archived, capsys: pytest.CaptureFixture) -> None:
    _, result = archived
    bundle = bytearray(get(result, bundle_key(result)))
    bundle[len(bundle) // 2] ^= 0xFF
    put(result, bundle_key(result), bytes(bundle))
    assert "fails its sha256 check" in failing(result, capsys, "bundle_tampered")


def test_a_truncated_bundle_fails_by_size(archived, capsys: pytest.CaptureFixture) -> None:
    _, result = archived
    put(result, bundle_key(result), get(result, bundle_key(result))[:-10])
    failing(result, capsys, "bundle_size_mismatch")


def test_a_missing_bundle_fails(archived, capsys: pytest.CaptureFixture) -> None:
    _, result = archived
    s3().delete_object(Bucket=result.bucket, Key=bundle_key(result))
    failing(result, capsys, "bundle_unreadable")


def test_garbage_with_a_matching_digest_fails_as_invalid(
    archived, capsys: pytest.CaptureFixture
) -> None:
    _, result = archived
    garbage = b"not a bundle\n" * 5
    put(result, bundle_key(result), garbage)
    edit_manifest(
        result,
        lambda m: m["bundle"].update(size=len(garbage), sha256=hashlib.sha256(garbage).hexdigest()),
    )
    failing(result, capsys, "bundle_invalid")


def test_manifest_refs_that_disagree_fail(archived, capsys: pytest.CaptureFixture) -> None:
    repo, result = archived
    main = repo.refs()["refs/heads/main"]
    edit_manifest(result, lambda m: m["refs"].update({"refs/heads/feature": main}))
    assert "ref refs/heads/feature is" in failing(result, capsys, "refs_disagree")


def test_a_manifest_head_that_disagrees_fails(archived, capsys: pytest.CaptureFixture) -> None:
    repo, result = archived
    feature = repo.refs()["refs/heads/feature"]
    edit_manifest(result, lambda m: m.update(head_commit=feature))
    failing(result, capsys, "head_mismatch")


def test_a_deleted_tree_object_fails(archived, capsys: pytest.CaptureFixture) -> None:
    _, result = archived
    s3().delete_object(Bucket=result.bucket, Key="tree/a.txt")
    assert "'tree/a.txt'" in failing(result, capsys, "tree_missing_object")


def test_a_replaced_or_extra_tree_object_fails(archived, capsys: pytest.CaptureFixture) -> None:
    _, result = archived
    put(result, "tree/a.txt", b"b\n")  # same size, other content: the ETag differs
    assert "ETag" in failing(result, capsys, "tree_mismatch")
    put(result, "tree/a.txt", b"a\n")  # the original content again: the snapshot is whole
    code, out, err = run_verify(result.repo_id, capsys)
    assert (code, err) == (0, ""), out
    assert f"snapshot {result.snapshot_id} restores" in out
    put(result, "tree/intruder.txt", b"x")
    assert "tree/intruder.txt" in failing(result, capsys, "tree_mismatch")


def test_a_pointer_to_a_missing_manifest_fails(archived, capsys: pytest.CaptureFixture) -> None:
    _, result = archived
    put(result, "latest.json", json.dumps({"snapshot_id": "20990101T000000Z-abc"}).encode())
    failing(result, capsys, "manifest_missing")


def test_an_object_in_a_legacy_format_passes_and_is_named(
    archived, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A bundle whose digest, size and refs the manifest vouches for, holding a commit with no
    committer: git fsck calls it an error, but it is how the source wrote it and it restores
    (tests/core/test_legacy_objects.py has the others, and the damage fsck fails on)."""
    repo, result = archived
    work = tmp_path / "bad"
    subprocess.run(["git", "clone", "-q", "--bare", repo.url, str(work)], check=True)

    def git(*args: str, stdin: bytes | None = None) -> str:
        done = subprocess.run(
            ["git", "-C", str(work), *args], input=stdin, capture_output=True, check=True
        )
        return done.stdout.decode().strip()

    tree = git("rev-parse", "refs/heads/main^{tree}")
    body = f"tree {tree}\nauthor A <a@b> 1 +0000\n\nno committer\n".encode()
    bad = git("hash-object", "-t", "commit", "--literally", "-w", "--stdin", stdin=body)
    git("update-ref", "refs/heads/broken", bad)
    bundle = tmp_path / "repo.bundle"
    git("bundle", "create", str(bundle), "--all")
    data = bundle.read_bytes()
    put(result, bundle_key(result), data)

    def vouch(manifest: dict) -> None:
        manifest["bundle"].update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
        manifest["refs"]["refs/heads/broken"] = bad

    edit_manifest(result, vouch)
    code, out, err = run_verify(result.repo_id, capsys)
    assert (code, err) == (0, "")
    assert (
        "git fsck finds no damage (legacy formatting the source carries: missingCommitter in 1)"
        in out
    )


def test_an_older_snapshot_and_unknown_ones(archived, capsys: pytest.CaptureFixture) -> None:
    _, result = archived
    code, out, _ = run_verify(result.repo_id, capsys, "--snapshot", result.snapshot_id)
    assert code == 0 and "restores" in out
    code, _, err = run_verify(result.repo_id, capsys, "--snapshot", "20000101T000000Z-000000000000")
    assert code == 1 and ": manifest_missing: " in err
    code, _, err = run_verify(result.repo_id, capsys, "--snapshot", "../../latest.json")
    assert code == 1 and ": no_snapshot: " in err and "is not a snapshot id" in err
    code, _, err = run_verify("127.0.0.1/nobody/nothing", capsys)
    assert code == 1 and ": no_snapshot: " in err


def test_a_large_tree_is_checked_by_a_deterministic_sample(
    vault_env: dict[str, str], make_repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past TREE_CHECK_LIMIT entries (lowered here to 3 of 8), a fixed sample is looked up key
    by key: the same keys every time, and a deleted sampled object still fails."""
    repo = make_repo("large")
    repo.commit({f"f{n}.txt": f"{n}\n" for n in range(8)})
    repo.push()
    settings = Settings.from_env()
    ref = parse_repo_url(repo.url, settings.allowed_schemes, settings.allowed_hosts)
    result = SnapshotWriter(settings, open_store(settings)).archive(ref)
    monkeypatch.setattr(verify_module, "TREE_CHECK_LIMIT", 3)
    first = verify(settings, open_store(settings), ref)
    assert first.ok and first.tree_sampled and (first.tree_checked, first.tree_entries) == (3, 8)
    sample = sorted(
        [f"tree/f{n}.txt" for n in range(8)],
        key=lambda key: verify_module._rank(result.snapshot_id, key),
    )[:3]
    put(result, "tree/intruder.txt", b"x")  # not looked for when sampling
    assert verify(settings, open_store(settings), ref).ok
    s3().delete_object(Bucket=result.bucket, Key=sample[-1])
    verdict = verify(settings, open_store(settings), ref)
    assert (verdict.ok, verdict.reason) == (False, "tree_missing_object")
    assert sample[-1] in verdict.detail
