"""Client-side encryption with age (REPOVAULT_ENCRYPT_RECIPIENTS): a real archive run into the
S3 server (moto) from the test git server, with keys made here by `age-keygen`. Nothing the
repository holds is stored readable, no `tree/` is written, the identity restores the very
repository, a missing or wrong identity is one line, and a bucket holding plaintext snapshots
from before keeps restoring them."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest

from repovault_pipeline.cli import main as cli
from repovault_pipeline.core.common.identity import parse_repo_url
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.vault.outcome import ArchiveResult
from repovault_pipeline.core.vault.store import open_store
from repovault_pipeline.core.vault.verify import verify
from tests.support.archiving import archive
from tests.support.repos import ServedRepo, git


def s3() -> boto3.client:
    return boto3.client("s3", endpoint_url=os.environ["REPOVAULT_S3_ENDPOINT"])


def stored(bucket: str) -> dict[str, bytes]:
    listed = s3().list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: s3().get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


def manifest(result: ArchiveResult) -> dict:
    return json.loads(stored(result.bucket)[f"snapshots/{result.snapshot_id}/manifest.json"])


def keypair(folder: Path, name: str) -> tuple[Path, str]:
    """A new age identity file and its public key."""
    identity = folder / f"{name}.txt"
    subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
    public = subprocess.run(
        ["age-keygen", "-y", str(identity)], check=True, capture_output=True, text=True
    )
    return identity, public.stdout.strip()


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    folder = tmp_path / "keys"
    folder.mkdir()
    return {name: keypair(folder, name) for name in ("vault", "other")}


@pytest.fixture
def secret_repo(make_repo: Callable[..., ServedRepo]) -> tuple[ServedRepo, bytes]:
    """Two branches, a tag, an LFS file (stored as is, unlike git's compressed objects); the
    marker is in a plain file and in the LFS file."""
    marker = f"launch code {uuid.uuid4().hex}".encode()
    repo = make_repo("sealed")
    repo.track_lfs("*.bin")
    repo.commit({"notes.txt": marker + b"\n", "model.bin": marker * 50}, "first")
    repo.tag("v1", annotated=True)
    repo.branch("feature")
    repo.commit({"more.txt": b"more\n"})
    repo.checkout("main")
    repo.push()
    return repo, marker


def restore(repo: ServedRepo, dest: Path, *extra: str) -> int:
    return cli(["restore", repo.url, str(dest), *extra])


def test_an_encrypted_archive_stores_no_plaintext_and_restores_with_the_identity(
    vault_env: dict[str, str],
    secret_repo: tuple[ServedRepo, bytes],
    keys: dict[str, tuple[Path, str]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    repo, marker = secret_repo
    identity, public = keys["vault"]
    monkeypatch.setenv("REPOVAULT_ENCRYPT_RECIPIENTS", f"{public},{keys['other'][1]}")
    result = archive(repo)
    assert result.status == "completed" and result.lfs_objects == 1

    objects = stored(result.bucket)
    assert not [k for k in objects if k.startswith("tree/")], "no tree/ when encrypted"
    for key, data in objects.items():
        assert marker not in data, key
    bundle_key = f"snapshots/{result.snapshot_id}/repo.bundle.age"
    bundle = objects[bundle_key]
    assert bundle.startswith(b"age-encryption.org/v1") and b"refs/heads/" not in bundle
    lfs_keys = [k for k in objects if k.startswith("lfs/")]
    assert len(lfs_keys) == 1 and lfs_keys[0].endswith(".age")
    recorded = manifest(result)
    assert recorded["encryption"]["recipients"] == [public, keys["other"][1]]
    assert recorded["bundle"]["key"] == bundle_key
    assert recorded["bundle"]["size"] == len(bundle)  # the stored ciphertext, checkable keyless
    assert recorded["tree"]["index"] is None

    monkeypatch.setenv("REPOVAULT_DECRYPT_IDENTITY", str(identity))
    dest = tmp_path / "restored"
    assert restore(repo, dest) == 0
    assert git(dest, "for-each-ref", "--format=%(refname) %(objectname)") == git(
        repo.bare, "for-each-ref", "--format=%(refname) %(objectname)"
    )
    assert (dest / "notes.txt").read_bytes() == marker + b"\n"
    assert (dest / "model.bin").read_bytes() == marker * 50

    verdict = verify(Settings.from_env(), open_store(Settings.from_env()), ref(repo))
    assert verdict.ok, verdict.line()
    assert "not checked: an encrypted snapshot writes none" in verdict.line()


def ref(repo: ServedRepo):
    settings = Settings.from_env()
    return parse_repo_url(repo.url, settings.allowed_schemes, settings.allowed_hosts)


def test_without_a_matching_identity_restore_and_verify_say_so_in_one_line(
    vault_env: dict[str, str],
    secret_repo: tuple[ServedRepo, bytes],
    keys: dict[str, tuple[Path, str]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    repo, _ = secret_repo
    monkeypatch.setenv("REPOVAULT_ENCRYPT_RECIPIENTS", keys["vault"][1])
    result = archive(repo)
    for identity in (None, str(keys["other"][0]), str(tmp_path / "nowhere.txt")):
        if identity is not None:
            monkeypatch.setenv("REPOVAULT_DECRYPT_IDENTITY", identity)
        capsys.readouterr()
        dest = tmp_path / "restored"
        assert restore(repo, dest) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert (
            f"snapshot {result.snapshot_id} of {result.repo_id} is encrypted to age recipients"
            in err
        )
        assert "set REPOVAULT_DECRYPT_IDENTITY to a matching identity file" in err
        assert "AGE-SECRET-KEY" not in err and not dest.exists()

        # The quick pass needs no key: the ciphertext is stored as the run wrote it.
        verdict = verify(Settings.from_env(), open_store(Settings.from_env()), ref(repo))
        assert verdict.ok and not verdict.bundle_rebuilt, verdict.line()
        # Deep, neither ok nor damaged: the restorable check warns, no fresh snapshot follows.
        deep = verify(Settings.from_env(), open_store(Settings.from_env()), ref(repo), depth="deep")
        verdict = deep
        assert (verdict.ok, verdict.unverified, verdict.reason) == (
            False,
            True,
            "not_decryptable",
        )
        assert "the stored bundle matches its manifest's size and sha256" in verdict.detail


def test_a_bucket_of_plaintext_snapshots_turns_encrypted_and_both_restore(
    vault_env: dict[str, str],
    secret_repo: tuple[ServedRepo, bytes],
    keys: dict[str, tuple[Path, str]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    repo, marker = secret_repo
    plain = archive(repo)
    assert any(k.startswith("tree/") for k in stored(plain.bucket))

    identity, public = keys["vault"]
    monkeypatch.setenv("REPOVAULT_ENCRYPT_RECIPIENTS", public)
    sealed = archive(repo)  # nothing changed upstream: written again, encrypted
    assert sealed.outcome == "completed" and sealed.snapshot_id != plain.snapshot_id
    assert sealed.fresh == "the latest snapshot is not encrypted to REPOVAULT_ENCRYPT_RECIPIENTS"
    objects = stored(sealed.bucket)
    assert not [k for k in objects if k.startswith("tree/")], "the plaintext tree/ is removed"

    assert restore(repo, tmp_path / "old", "--snapshot", plain.snapshot_id) == 0  # no key needed
    monkeypatch.setenv("REPOVAULT_DECRYPT_IDENTITY", str(identity))
    assert restore(repo, tmp_path / "new") == 0
    assert (tmp_path / "new" / "notes.txt").read_bytes() == marker + b"\n"
    assert (tmp_path / "old" / "notes.txt").read_bytes() == marker + b"\n"
