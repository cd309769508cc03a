"""`repovault restore` refuses what does not match the manifest, names what is wrong in one
line, and leaves the destination as it was. The stored objects are tampered with directly
through boto3, as a broken disk, a truncated copy or a hostile operator would."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest

from repovault_pipeline.cli import main as cli
from repovault_pipeline.core.vault.outcome import ArchiveResult
from tests.support.repos import ServedRepo, git


def s3() -> boto3.client:
    return boto3.client("s3", endpoint_url=os.environ["REPOVAULT_S3_ENDPOINT"])


def manifest_key(result: ArchiveResult) -> str:
    return f"snapshots/{result.snapshot_id}/manifest.json"


def bundle_key(result: ArchiveResult) -> str:
    return f"snapshots/{result.snapshot_id}/repo.bundle"


def get(result: ArchiveResult, key: str) -> bytes:
    return s3().get_object(Bucket=result.bucket, Key=key)["Body"].read()


def put(result: ArchiveResult, key: str, data: bytes) -> None:
    s3().put_object(Bucket=result.bucket, Key=key, Body=data)


def edit_manifest(result: ArchiveResult, change: Callable[[dict], None]) -> None:
    manifest = json.loads(get(result, manifest_key(result)))
    change(manifest)
    put(result, manifest_key(result), json.dumps(manifest).encode())


def refuse(
    repo: ServedRepo, dest: Path, capsys: pytest.CaptureFixture, existing: bool = False
) -> str:
    """Restore must fail with exit 1 and one line, leaving `dest` absent (or empty)."""
    if existing:
        dest.mkdir()
    assert cli(["restore", repo.url, str(dest)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert (list(dest.iterdir()) == []) if existing else not dest.exists()
    return err


def test_a_bundle_that_fails_its_sha256_is_refused(
    archived, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    repo, result = archived
    bundle = bytearray(get(result, bundle_key(result)))
    bundle[len(bundle) // 2] ^= 0xFF  # same size, one byte flipped
    put(result, bundle_key(result), bytes(bundle))
    err = refuse(repo, tmp_path / "new", capsys)
    assert f"{bundle_key(result)} of snapshot {result.snapshot_id} fails its sha256 check" in err
    err = refuse(repo, tmp_path / "empty", capsys, existing=True)
    assert "sha256" in err


def test_a_truncated_bundle_is_refused_by_its_size(
    archived, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    repo, result = archived
    whole = get(result, bundle_key(result))
    put(result, bundle_key(result), whole[:-100])
    err = refuse(repo, tmp_path / "new", capsys)
    assert (
        f"{bundle_key(result)} of snapshot {result.snapshot_id} is {len(whole) - 100} bytes "
        f"but its manifest says {len(whole)}"
    ) in err


def test_something_that_is_not_a_bundle_is_named(
    archived, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    repo, result = archived
    garbage = b"this is not a git bundle\n" * 10
    put(result, bundle_key(result), garbage)

    def consistent(manifest: dict) -> None:  # sizes and digests that match the garbage
        manifest["bundle"].update(size=len(garbage), sha256=hashlib.sha256(garbage).hexdigest())

    edit_manifest(result, consistent)
    err = refuse(repo, tmp_path / "new", capsys)
    assert f"{bundle_key(result)} of snapshot {result.snapshot_id} is not a valid git bundle" in err


def test_a_missing_bundle_is_named(archived, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    repo, result = archived
    s3().delete_object(Bucket=result.bucket, Key=bundle_key(result))
    err = refuse(repo, tmp_path / "new", capsys)
    assert f"{bundle_key(result)} of snapshot {result.snapshot_id} cannot be read" in err


def test_refs_that_do_not_match_the_manifest_are_named(
    archived, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    repo, result = archived
    refs = repo.refs()
    main, feature = refs["refs/heads/main"], refs["refs/heads/feature"]
    edit_manifest(result, lambda m: m["refs"].update({"refs/heads/feature": main}))
    err = refuse(repo, tmp_path / "one", capsys)
    assert (
        f"ref refs/heads/feature is {feature[:12]} in the restored bundle but {main[:12]} in "
        f"the manifest of snapshot {result.snapshot_id}"
    ) in err

    edit_manifest(result, lambda m: m["refs"].update({"refs/heads/feature": feature}))
    edit_manifest(result, lambda m: m["refs"].update({"refs/tags/ghost": main}))
    err = refuse(repo, tmp_path / "two", capsys)
    assert f"ref refs/tags/ghost is missing in the restored bundle but {main[:12]}" in err

    edit_manifest(result, lambda m: m["refs"].pop("refs/tags/ghost"))
    edit_manifest(result, lambda m: m.update(head_commit=feature))
    err = refuse(repo, tmp_path / "three", capsys)
    assert f"HEAD of the restored clone is {main[:12]} but snapshot" in err

    edit_manifest(result, lambda m: m.update(head_commit=main))
    assert cli(["restore", repo.url, str(tmp_path / "four")]) == 0  # untampered again
    assert git(tmp_path / "four", "rev-parse", "HEAD") == main
