"""Incremental bundles (REPOVAULT_CHAIN_MAX, manifest `base`) against real servers: git over
smart HTTP, S3 (moto server). What a user checks: every snapshot of a chain restores to exactly
the refs the source had when it was taken, a link deleted or tampered with fails restore and
the check naming it, retention never deletes a base a kept snapshot needs, the chain is cut by
REPOVAULT_CHAIN_MAX, a run killed half way leaves every snapshot restorable, and ten snapshots
of ten small commits cost little more than one full bundle."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from repovault_pipeline.cli import main as cli
from repovault_pipeline.core.common.identity import parse_repo_url
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.vault.outcome import ArchiveResult
from repovault_pipeline.core.vault.prepare import discard
from repovault_pipeline.core.vault.snapshot import SnapshotWriter
from repovault_pipeline.core.vault.store import open_store
from repovault_pipeline.core.vault.verify import verify
from tests.core.test_encryption import keypair
from tests.core.test_restore import edit_manifest, put
from tests.core.test_snapshot_faults import (  # noqa: F401 (slow_s3: the fixture, used here too)
    files,
    kill_during_tree_upload,
    reader_of,
    slow_s3,
)
from tests.support.archiving import archive
from tests.support.repos import ServedRepo, git
from tests.support.tcp_proxy import BreakableProxy
from tests.support.vault_checks import read_json, s3


def manifest_of(result: ArchiveResult) -> dict:
    return read_json(result.bucket, f"snapshots/{result.snapshot_id}/manifest.json")


def bundle_key(result: ArchiveResult) -> str:
    return str(manifest_of(result)["bundle"]["key"])


def restored_refs(dest: Path) -> dict[str, str]:
    out = git(dest, "for-each-ref", "--format=%(objectname) %(refname)")
    return {name: sha for sha, name in (line.split(" ", 1) for line in out.splitlines())}


def restore(repo: ServedRepo, dest: Path, snapshot_id: str) -> int:
    return cli(["restore", repo.url, str(dest), "--snapshot", snapshot_id])


def check(repo: ServedRepo, snapshot_id: str | None = None):
    settings = Settings.from_env()
    ref = parse_repo_url(repo.url, settings.allowed_schemes, settings.allowed_hosts)
    return verify(settings, open_store(settings), ref, snapshot_id)


def test_every_snapshot_of_a_chain_restores_exactly_the_refs_it_was_taken_with(
    vault_env: dict[str, str], make_repo: Callable[..., ServedRepo], tmp_path: Path
) -> None:
    repo = make_repo("chained")
    repo.commit({"README.md": "# chained\n", "src/a.py": "a = 1\n"})
    repo.tag("v1", annotated=True)
    repo.branch("feature")
    repo.commit({"feature.txt": "feature\n"})
    repo.checkout("main")
    repo.push()
    taken = [(archive(repo), repo.refs())]

    steps: list[Callable[[], None]] = [
        lambda: repo.commit({"src/a.py": "a = 2\n"}),  # main moves on
        lambda: (repo.branch("topic"), repo.commit({"t.txt": "t\n"}), repo.checkout("main")),
        lambda: (git(repo.work, "branch", "-D", "feature"), repo.tag("v2", annotated=True)),
        # main rewritten: reset behind its tip and a new commit on top (a force-push)
        lambda: (git(repo.work, "reset", "-q", "--hard", "HEAD~1"), repo.commit({"b": "b\n"})),
        lambda: repo.tag("light-on-old", annotated=False),  # only a ref: nothing new to bundle
    ]
    for step in steps:
        step()
        repo.push()
        taken.append((archive(repo), repo.refs()))

    bases = [manifest_of(result).get("base") for result, _ in taken]
    ids = [result.snapshot_id for result, _ in taken]
    # Each builds on the one before; the last one carries no new object: git writes no empty
    # bundle, so it is full again.
    assert bases == [None, ids[0], ids[1], ids[2], ids[3], None]
    full = taken[0][0].bundle_size
    assert all(result.bundle_size < full for result, _ in taken[1:5])

    for n, (result, refs) in enumerate(taken):
        dest = tmp_path / f"restore-{n}"
        assert restore(repo, dest, result.snapshot_id) == 0
        assert restored_refs(dest) == refs  # exactly: no ref of a later or earlier snapshot
        assert git(dest, "rev-parse", "HEAD") == refs["refs/heads/main"]
        assert git(dest, "status", "--porcelain") == ""
        verdict = check(repo, result.snapshot_id)
        assert verdict.ok, verdict.line()


def test_a_deleted_or_tampered_link_fails_restore_and_the_check_naming_it(
    vault_env: dict[str, str],
    make_repo: Callable[..., ServedRepo],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    repo = make_repo("broken-chain")
    results = []
    for i in range(4):
        repo.commit({f"f{i}.txt": f"{i}\n" * 100})
        repo.push()
        results.append(archive(repo))
    first, link, _, last = results
    assert manifest_of(last)["base"] == results[2].snapshot_id
    bucket, key = link.bucket, bundle_key(link)
    original = s3().get_object(Bucket=bucket, Key=key)["Body"].read()
    # The last byte flipped: same size, another content (a fixed b"X" was the same byte in one
    # run of 256).
    tampered = original[:-1] + bytes([original[-1] ^ 0xFF])

    damages: list[tuple[Callable[[], object], str]] = [
        (lambda: s3().put_object(Bucket=bucket, Key=key, Body=tampered), "sha256"),
        (lambda: s3().delete_object(Bucket=bucket, Key=key), "cannot be read"),
    ]
    for n, (damage, said) in enumerate(damages):
        damage()
        capsys.readouterr()
        assert restore(repo, tmp_path / f"broken-{n}", last.snapshot_id) != 0
        err = capsys.readouterr().err
        assert f"snapshot {link.snapshot_id} (base of {results[2].snapshot_id})" in err
        assert said in err
        assert not (tmp_path / f"broken-{n}").exists()
        verdict = check(repo)
        assert (verdict.ok, verdict.reason) == (False, "chain_broken"), verdict.line()
        assert link.snapshot_id in verdict.detail
        # The snapshots before the damaged link still restore.
        assert restore(repo, tmp_path / f"first-{n}", first.snapshot_id) == 0

    s3().put_object(Bucket=bucket, Key=key, Body=original)
    assert check(repo).ok
    s3().delete_object(Bucket=bucket, Key=f"snapshots/{link.snapshot_id}/manifest.json")
    verdict = check(repo)
    assert verdict.reason == "chain_broken" and "has no manifest.json" in verdict.detail

    # The next run, although nothing changed upstream, sees the broken chain in one listing
    # and writes a fresh snapshot with a full bundle; that one restores.
    fresh = archive(repo)
    assert fresh.outcome == "completed" and fresh.fresh is not None
    assert link.snapshot_id in fresh.fresh
    assert "base" not in manifest_of(fresh)
    assert restore(repo, tmp_path / "fresh", fresh.snapshot_id) == 0
    assert restored_refs(tmp_path / "fresh") == repo.refs()


def test_a_link_whose_pack_lacks_an_object_fails_restore_naming_the_chain(
    vault_env: dict[str, str],
    make_repo: Callable[..., ServedRepo],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    """A link whose manifest vouches for its bundle (size, sha256) but whose pack lacks a blob:
    the links are taken without refs, so the whole chain's connectivity is checked after."""
    repo = make_repo("holed-chain")
    repo.commit({"a.txt": "a\n"})
    repo.push()
    first = archive(repo)
    repo.commit({"b.txt": "b\n", "c.txt": "c\n"})
    repo.push()
    link = archive(repo)
    repo.commit({"d.txt": "d\n"})
    repo.push()
    last = archive(repo)
    assert manifest_of(last)["base"] == link.snapshot_id
    base_tip, link_tip = first.head_commit, link.head_commit
    lost = git(repo.bare, "rev-parse", f"{link_tip}:c.txt")
    objects = git(repo.bare, "rev-list", "--objects", link_tip, f"^{base_tip}").splitlines()
    kept = "".join(f"{line.split()[0]}\n" for line in objects if not line.startswith(lost))
    pack = subprocess.run(
        ["git", "pack-objects", "--stdout"],
        cwd=repo.bare,
        input=kept.encode(),
        check=True,
        capture_output=True,
    ).stdout
    data = f"# v2 git bundle\n-{base_tip}\n{link_tip} refs/heads/main\n\n".encode() + pack
    put(link, bundle_key(link), data)
    edit_manifest(
        link,
        lambda m: m["bundle"].update(size=len(data), sha256=hashlib.sha256(data).hexdigest()),
    )
    capsys.readouterr()
    assert restore(repo, tmp_path / "holed", last.snapshot_id) != 0
    err = capsys.readouterr().err
    assert f"the chain of snapshot {last.snapshot_id} lacks objects its refs need" in err
    assert not (tmp_path / "holed").exists()
    assert restore(repo, tmp_path / "first", first.snapshot_id) == 0


def test_chain_max_writes_a_full_bundle_again(
    vault_env: dict[str, str],
    make_repo: Callable[..., ServedRepo],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("REPOVAULT_CHAIN_MAX", "2")
    repo = make_repo("cut")
    results = []
    for i in range(5):
        repo.commit({"n.txt": f"{i}\n"})
        repo.push()
        results.append(archive(repo))
    ids = [r.snapshot_id for r in results]
    assert [manifest_of(r).get("base") for r in results] == [None, ids[0], ids[1], None, ids[3]]

    monkeypatch.setenv("REPOVAULT_CHAIN_MAX", "0")  # 0: always full
    repo.commit({"n.txt": "full\n"})
    repo.push()
    assert "base" not in manifest_of(archive(repo))


def test_retention_never_deletes_a_base_a_kept_snapshot_needs(
    vault_env: dict[str, str],
    make_repo: Callable[..., ServedRepo],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("REPOVAULT_KEEP_SNAPSHOTS", "3")
    repo = make_repo("kept-bases")
    ids: list[str] = []
    stored: list[list[str]] = []
    bases: list[str | None] = []
    for i in range(6):
        repo.commit({"n.txt": f"{i}\n"})
        repo.push()
        result = archive(repo)
        ids.append(result.snapshot_id)
        bases.append(manifest_of(result).get("base"))
        stored.append(reader_of(repo).snapshot_ids()[0])
    s0, s1, s2, s3_, s4, s5 = ids
    # s3 is full: with s3 added, the chain's full bundle s0 would fall out of the 3 newest.
    assert bases == [None, s0, s1, None, s3_, s4]
    assert stored[3] == [s3_, s2, s1, s0]  # s1 and s2 kept, s0 is their base
    assert stored[4] == [s4, s3_, s2, s1, s0]  # s2 still kept: so are s1 and s0
    assert stored[5] == [s5, s4, s3_]  # no kept snapshot needs the old chain: gone at once
    for snap in stored[5]:
        verdict = check(repo, snap)
        assert verdict.ok, verdict.line()


def test_ten_snapshots_of_ten_small_commits_cost_little_more_than_one_full_bundle(
    vault_env: dict[str, str], make_repo: Callable[..., ServedRepo], tmp_path: Path
) -> None:
    rng = random.Random(22)
    repo = make_repo("thrifty")
    repo.commit(
        {f"src/m{i:03}.py": rng.randbytes(1500).hex() + "\n" for i in range(200)}, "initial"
    )
    repo.push()
    results = [archive(repo)]
    for i in range(9):
        repo.commit({f"src/m{i:03}.py": f"# change {i}\n" + rng.randbytes(1500).hex()})
        repo.push()
        results.append(archive(repo))

    sizes = [r.bundle_size for r in results]
    stored = [
        o["Size"]
        for page in s3().get_paginator("list_objects_v2").paginate(Bucket=results[0].bucket)
        for o in page.get("Contents", [])
        if o["Key"].endswith("/repo.bundle")
    ]
    assert len(stored) == 10 and sum(stored) == sum(sizes)
    assert sum(sizes) <= 1.2 * sizes[0], sizes  # ten full bundles would be ~10x
    dest = tmp_path / "tenth"
    assert restore(repo, dest, results[-1].snapshot_id) == 0
    assert restored_refs(dest) == repo.refs()


def test_an_encrypted_chain_restores_with_the_identity(
    vault_env: dict[str, str],
    make_repo: Callable[..., ServedRepo],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    identity, public = keypair(tmp_path, "vault")
    monkeypatch.setenv("REPOVAULT_ENCRYPT_RECIPIENTS", public)
    repo = make_repo("sealed-chain")
    taken = []
    for i in range(3):
        repo.commit({"secret.txt": f"secret {i}\n"})
        repo.push()
        taken.append((archive(repo), repo.refs()))
    manifests = [manifest_of(r) for r, _ in taken]
    assert [m.get("base") for m in manifests] == [None, *(r.snapshot_id for r, _ in taken[:2])]
    assert all(m["bundle"]["key"].endswith(".age") for m in manifests)

    monkeypatch.setenv("REPOVAULT_DECRYPT_IDENTITY", str(identity))
    for n, (result, refs) in enumerate(taken):
        dest = tmp_path / f"sealed-{n}"
        assert restore(repo, dest, result.snapshot_id) == 0
        assert restored_refs(dest) == refs
        assert (dest / "secret.txt").read_text() == f"secret {n}\n"
    assert check(repo).ok

    # Stored in plaintext from now on: the chain cannot continue, the next bundle is full.
    monkeypatch.delenv("REPOVAULT_ENCRYPT_RECIPIENTS")
    repo.commit({"secret.txt": "plain now\n"})
    repo.push()
    assert "base" not in manifest_of(archive(repo))


def test_a_run_killed_half_way_never_leaves_a_chain_that_cannot_be_restored(
    vault_env: dict[str, str],
    make_repo: Callable[..., ServedRepo],
    slow_s3: BreakableProxy,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("REPOVAULT_LEASE_TTL_S", "4")
    repo = make_repo("killed-chain")
    repo.commit(files("A", 120))
    repo.push()
    first = archive(repo)
    repo.commit({"one.txt": "1\n"})
    repo.push()
    second = archive(repo)
    assert manifest_of(second)["base"] == first.snapshot_id

    repo.commit(files("B", 120))  # every file rewritten: the killed run's upload takes a while
    repo.push()
    kill_during_tree_upload(repo, first.bucket, files("B", 120), slow_s3)
    reader = reader_of(repo)
    complete, incomplete = reader.snapshot_ids()
    assert complete == [second.snapshot_id, first.snapshot_id] and len(incomplete) == 1
    # The killed run's incremental bundle is stored, its manifest never written: no reader
    # sees it, and the chain readers do see restores.
    left = reader.store.list(first.bucket, f"snapshots/{incomplete[0]}/")
    assert any(info.key.endswith("/repo.bundle") for info in left)
    verdict = check(repo)
    assert verdict.ok and verdict.snapshot_id == second.snapshot_id, verdict.line()

    third = archive(repo)
    assert third.outcome == "completed"
    assert manifest_of(third)["base"] == second.snapshot_id
    assert reader.snapshot_ids() == ([third.snapshot_id, second.snapshot_id, first.snapshot_id], [])
    for result in (first, second, third):
        dest = tmp_path / result.snapshot_id
        assert restore(repo, dest, result.snapshot_id) == 0
    assert restored_refs(tmp_path / third.snapshot_id) == repo.refs()
    assert os.listdir(vault_env["REPOVAULT_WORK_DIR"]) == []


def test_a_base_gone_before_the_upload_gives_a_full_bundle(
    vault_env: dict[str, str], make_repo: Callable[..., ServedRepo], tmp_path: Path
) -> None:
    """The run bundled on the latest snapshot, then (before it took the lease) that snapshot
    went, as retention of a run that committed meanwhile may do: it bundles in full."""
    repo = make_repo("base-gone")
    repo.commit({"a.txt": "a\n"})
    repo.push()
    first = archive(repo)
    repo.commit({"b.txt": "b\n"})
    repo.push()
    settings = Settings.from_env()
    writer = SnapshotWriter(settings, open_store(settings))
    prepared = writer.prepare(
        parse_repo_url(repo.url, settings.allowed_schemes, settings.allowed_hosts)
    )
    assert prepared.base == first.snapshot_id
    s3().delete_object(Bucket=first.bucket, Key=f"snapshots/{first.snapshot_id}/manifest.json")
    try:
        second = writer.upload(prepared)
    finally:
        discard(prepared)
    assert "base" not in manifest_of(second)
    assert restore(repo, tmp_path / "second", second.snapshot_id) == 0
    assert restored_refs(tmp_path / "second") == repo.refs()
