"""`repovault verify` (the `restorable` check) passes on a fresh snapshot and fails, with its own
reason, on each corruption made directly on the S3 server with boto3: the quick pass (the
default: listings only) on what a listing shows, the deep pass (`--deep`) on all of it."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from repovault_pipeline.cli import main as cli
from repovault_pipeline.core.common.identity import parse_repo_id, parse_repo_url
from repovault_pipeline.core.common.settings import Settings
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
from tests.support.tcp_proxy import BreakableProxy


def run_verify(target: str, capsys: pytest.CaptureFixture, *extra: str) -> tuple[int, str, str]:
    code = cli(["verify", target, *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def failing(
    result: ArchiveResult,
    capsys: pytest.CaptureFixture,
    reason: str,
    passes: tuple[str, ...] = ("quick", "deep"),
) -> str:
    """In each of `passes`, the CLI exits 1 with one line naming `reason`; the core verdict
    agrees. Returns the last line."""
    err = ""
    for depth in passes:
        deep = depth == "deep"  # `repovault verify` runs the quick or the deep pass
        code, out, err = run_verify(result.repo_id, capsys, *(["--deep"] if deep else []))
        assert code == 1, (depth, out, err)
        assert err.count("\n") == 1, err
        assert f": {reason}: " in err, (depth, err)
        settings = Settings.from_env()
        verdict = verify(settings, open_store(settings), parse_repo_id(result.repo_id), depth=depth)
        assert (verdict.ok, verdict.reason, verdict.depth) == (False, reason, depth)
    return err


def test_a_fresh_snapshot_passes(archived, capsys: pytest.CaptureFixture) -> None:
    repo, result = archived
    code, out, err = run_verify(repo.url, capsys)
    assert (code, err) == (0, "")
    assert f"{result.repo_id} snapshot {result.snapshot_id} is stored as written (quick" in out
    assert f"{result.tree_files} of {result.tree_files} tree/ objects checked" in out
    code, out, err = run_verify(repo.url, capsys, "--deep")
    assert (code, err) == (0, "")
    assert f"snapshot {result.snapshot_id} restores (deep pass): 3 refs and HEAD" in out
    settings = Settings.from_env()
    for depth in ("quick", "run", "deep"):
        verdict = verify(settings, open_store(settings), parse_repo_id(result.repo_id), depth=depth)
        assert verdict.ok and verdict.refs == 3 and verdict.bundle_bytes == result.bundle_size
        assert verdict.tree_checked == result.tree_files == 1
        assert verdict.bundle_rebuilt is (depth == "deep")


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
    failing(result, capsys, "bundle_invalid", passes=("deep",))
    # The quick pass sees another object than the run wrote: its ETag is not the recorded one.
    failing(result, capsys, "bundle_tampered", passes=("quick",))


def test_manifest_refs_that_disagree_fail(archived, capsys: pytest.CaptureFixture) -> None:
    repo, result = archived
    main = repo.refs()["refs/heads/main"]
    edit_manifest(result, lambda m: m["refs"].update({"refs/heads/feature": main}))
    err = failing(result, capsys, "refs_disagree", passes=("deep",))
    assert "ref refs/heads/feature is" in err


def test_a_manifest_head_that_disagrees_fails(archived, capsys: pytest.CaptureFixture) -> None:
    repo, result = archived
    feature = repo.refs()["refs/heads/feature"]
    edit_manifest(result, lambda m: m.update(head_commit=feature))
    failing(result, capsys, "head_mismatch", passes=("deep",))


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
    assert f"snapshot {result.snapshot_id} is stored as written" in out
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
    code, out, err = run_verify(result.repo_id, capsys, "--deep")
    assert (code, err) == (0, "")
    assert (
        "git fsck finds no damage (legacy formatting the source carries: missingCommitter in 1)"
        in out
    )


def test_an_older_snapshot_and_unknown_ones(archived, capsys: pytest.CaptureFixture) -> None:
    _, result = archived
    code, out, _ = run_verify(result.repo_id, capsys, "--snapshot", result.snapshot_id)
    assert code == 0 and "is stored as written" in out
    code, _, err = run_verify(result.repo_id, capsys, "--snapshot", "20000101T000000Z-000000000000")
    assert code == 1 and ": manifest_missing: " in err
    code, _, err = run_verify(result.repo_id, capsys, "--snapshot", "../../latest.json")
    assert code == 1 and ": no_snapshot: " in err and "is not a snapshot id" in err
    code, _, err = run_verify("127.0.0.1/nobody/nothing", capsys)
    assert code == 1 and ": no_snapshot: " in err


def test_the_quick_pass_lists_tree_in_pages_not_a_request_per_object(
    vault_env: dict[str, str], make_repo
) -> None:
    """A tree of 1,203 files: the quick pass lists `tree/` in two pages (ListObjectsV2, 1,000
    keys each), downloads nothing and asks no HEAD, and still fails a deleted object."""
    repo = make_repo("large")
    repo.commit({f"d{n // 100}/f{n}.txt": f"{n}\n" for n in range(1203)})
    repo.push()
    settings = Settings.from_env()
    ref = parse_repo_url(repo.url, settings.allowed_schemes, settings.allowed_hosts)
    result = SnapshotWriter(settings, open_store(settings)).archive(ref)
    s3_port = int(vault_env["REPOVAULT_S3_ENDPOINT"].rsplit(":", 1)[1])
    proxy = BreakableProxy(s3_port)
    try:
        proxied = Settings.from_env().model_copy(update={"s3_endpoint": proxy.endpoint})
        verdict = verify(proxied, open_store(proxied), ref)
        assert verdict.ok, verdict.line()
        assert (verdict.tree_checked, verdict.tree_entries) == (1203, 1203)
        assert not verdict.bundle_rebuilt
        methods = Counter(method for method, _ in proxy.requests)
        tree_lists = [p for m, p in proxy.requests if m == "GET" and "prefix=tree%2F" in p]
        assert len(tree_lists) == 2, proxy.requests
        assert "HEAD" not in methods, methods
        assert sum(methods.values()) <= 10, proxy.requests  # json documents, lease, listings
        assert not [p for m, p in proxy.requests if m == "GET" and "repo.bundle" in p.split("?")[0]]
    finally:
        proxy.close()
    s3().delete_object(Bucket=result.bucket, Key="tree/d7/f777.txt")
    verdict = verify(settings, open_store(settings), ref)
    assert (verdict.ok, verdict.reason) == (False, "tree_missing_object")
    assert "tree/d7/f777.txt" in verdict.detail


def test_a_manifest_without_a_bundle_etag_gets_the_bundle_rebuilt(
    archived, capsys: pytest.CaptureFixture
) -> None:
    """A snapshot written before manifests recorded the bundle's ETag: the quick pass has
    nothing to compare the listing with, so it downloads, hashes and rebuilds the bundle."""
    _, result = archived
    edit_manifest(result, lambda m: m["bundle"].pop("etag"))
    settings = Settings.from_env()
    verdict = verify(settings, open_store(settings), parse_repo_id(result.repo_id))
    assert verdict.ok and verdict.bundle_rebuilt and verdict.depth == "quick"
    assert "restores (quick pass)" in verdict.line()
    bundle = bytearray(get(result, bundle_key(result)))
    bundle[len(bundle) // 2] ^= 0xFF
    put(result, bundle_key(result), bytes(bundle))
    failing(result, capsys, "bundle_tampered")


def test_verify_deep_from_another_folder(archived, tmp_path: Path) -> None:
    """`repovault verify --deep` as a user runs it: its own process, another working folder."""
    repo, result = archived
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def deep() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "repovault_pipeline.cli", "verify", "--deep", repo.url],
            cwd=elsewhere,
            capture_output=True,
            text=True,
            timeout=120,
        )

    done = deep()
    assert done.returncode == 0, done.stderr
    assert f"snapshot {result.snapshot_id} restores (deep pass): 3 refs and HEAD" in done.stdout
    bundle = bytearray(get(result, bundle_key(result)))
    bundle[len(bundle) // 2] ^= 0xFF
    put(result, bundle_key(result), bytes(bundle))
    done = deep()
    assert done.returncode == 1
    assert ": bundle_tampered: " in done.stderr and "sha256" in done.stderr
