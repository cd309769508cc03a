"""Git LFS objects in the vault, against the test git server's LFS endpoint (batch API over HTTP)
and S3 (moto server): archived content-addressed under `lfs/<oid>`, uploaded once, listed per
snapshot, stored with their content in `tree/`, restored so that the checkout holds their
content with the server gone. Objects the server lost make the snapshot `partial`: verify fails
`lfs_missing`, restore names the files that stay pointers; without git-lfs, restore says how to
finish."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest

from repovault_pipeline.cli import main as cli
from repovault_pipeline.core.lineage.stats import human_size
from repovault_pipeline.core.vault.outcome import ArchiveResult
from tests.support.archiving import archive
from tests.support.git_http_server import logged_requests
from tests.support.repos import ServedRepo, git
from tests.support.servers import git_http_server


def s3() -> boto3.client:
    return boto3.client("s3", endpoint_url=os.environ["REPOVAULT_S3_ENDPOINT"])


def lfs_keys(bucket: str) -> dict[str, bytes]:
    listed = s3().list_objects_v2(Bucket=bucket, Prefix="lfs/").get("Contents", [])
    return {o["Key"]: s3().get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


def tree_file(bucket: str, path: str) -> bytes:
    return s3().get_object(Bucket=bucket, Key=f"tree/{path}")["Body"].read()


def manifest(result: ArchiveResult) -> dict:
    key = f"snapshots/{result.snapshot_id}/manifest.json"
    return json.loads(s3().get_object(Bucket=result.bucket, Key=key)["Body"].read())


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def lfs_repo(make_repo: Callable[..., ServedRepo]) -> tuple[ServedRepo, dict[str, bytes]]:
    """LFS files on main (one with an older version in history) and on a branch; returns
    the repository and the content of every LFS object it ever had."""
    repo = make_repo("lfs")
    repo.track_lfs("*.bin")
    old, model, data = os.urandom(3000), os.urandom(70_000), os.urandom(5000)
    repo.commit({"model.bin": old, "README.md": "weights\n"}, "first")
    repo.commit({"model.bin": model, "data/set.bin": data}, "second")
    repo.branch("feature")
    extra = os.urandom(1234)
    repo.commit({"extra.bin": extra}, "feature")
    repo.checkout("main")
    repo.push()
    return repo, {sha(c): c for c in (old, model, data, extra)}


def test_lfs_objects_are_archived_and_restore_offline(
    vault_env: dict[str, str], lfs_repo, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    repo, contents = lfs_repo
    result = archive(repo)
    assert result.lfs_objects == 4 and result.lfs_uploaded == 4 and result.lfs_missing == 0
    assert result.status == "completed" and result.reasons == {}  # a faithful copy
    stored = lfs_keys(result.bucket)
    assert stored == {f"lfs/{oid}": data for oid, data in contents.items()}
    doc = manifest(result)
    assert doc["lfs"]["objects"] == 4
    assert doc["lfs"]["bytes"] == sum(len(c) for c in contents.values())
    assert doc["lfs"]["missing"] == 0 and doc["lfs"]["missing_paths"] == []
    assert doc["keep"] == {"lfs": True, "wiki": True}
    index_key = f"snapshots/{result.snapshot_id}/lfs.json"
    assert doc["lfs"]["index"] == index_key
    index = json.loads(s3().get_object(Bucket=result.bucket, Key=index_key)["Body"].read())
    assert index == {
        "objects": {o: len(c) for o, c in contents.items()},
        "missing": {},
        "missing_paths": {},
    }
    # tree/ holds the files themselves where people browse, not the pointers git stores.
    for path in ("model.bin", "data/set.bin"):
        assert tree_file(result.bucket, path) == (repo.work / path).read_bytes()
    assert doc["tree"]["lfs_files"] == 2 and doc["tree"]["lfs_pointers"] == []
    assert doc["tree"]["bytes"] == sum(
        len((repo.work / p).read_bytes()) for p in ("model.bin", "data/set.bin", "README.md")
    ) + len((repo.work / ".gitattributes").read_bytes())
    # What the LFS objects take counts in the vault's sizes: `stats` and `list`.
    assert cli(["stats", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)["figures"]
    lfs_bytes = sum(len(c) for c in contents.values())
    assert figures["lfs_bytes"] == lfs_bytes and figures["wiki_bytes"] == 0
    assert figures["stored_bytes"] == result.bundle_size + doc["tree"]["bytes"] + lfs_bytes
    assert cli(["list"]) == 0
    [line] = [x for x in capsys.readouterr().out.splitlines() if result.repo_id in x]
    assert human_size(lfs_bytes) in line and human_size(figures["stored_bytes"]) in line

    shutil.rmtree(repo.lfs_store())  # the forge lost every object: the vault must suffice
    dest = tmp_path / "restored"
    assert cli(["restore", repo.url, str(dest)]) == 0, capsys.readouterr().err
    said = capsys.readouterr()
    assert "4 LFS objects verified and checked out" in said.out and said.err == ""
    assert (dest / "model.bin").read_bytes() == (repo.work / "model.bin").read_bytes()
    assert (dest / "data" / "set.bin").read_bytes() == (repo.work / "data" / "set.bin").read_bytes()
    assert git(dest, "status", "--porcelain") == ""
    for oid, data in contents.items():
        assert (dest / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid).read_bytes() == data
    # Another ref's LFS file checks out from the restored store, without the network.
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run(["git", "checkout", "-q", "feature"], cwd=dest, check=True, env=env)
    assert sha((dest / "extra.bin").read_bytes()) in contents
    assert git(dest, "lfs", "fsck").startswith("Git LFS fsck OK")


def test_an_lfs_object_already_stored_is_not_uploaded_again(
    vault_env: dict[str, str], lfs_repo
) -> None:
    repo, _ = lfs_repo
    first = archive(repo)
    before = {
        o["Key"]: o["LastModified"]
        for o in s3().list_objects_v2(Bucket=first.bucket, Prefix="lfs/")["Contents"]
    }
    new = os.urandom(2222)
    repo.commit({"more.bin": new}, "third")
    repo.push()
    second = archive(repo)
    assert second.lfs_objects == 5 and second.lfs_uploaded == 1
    after = {
        o["Key"]: o["LastModified"]
        for o in s3().list_objects_v2(Bucket=second.bucket, Prefix="lfs/")["Contents"]
    }
    assert set(after) == set(before) | {f"lfs/{sha(new)}"}
    assert all(after[key] == stamp for key, stamp in before.items())


def test_a_corrupt_lfs_object_is_refused_on_restore(
    vault_env: dict[str, str], lfs_repo, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    repo, contents = lfs_repo
    result = archive(repo)
    oid = next(iter(contents))
    s3().put_object(Bucket=result.bucket, Key=f"lfs/{oid}", Body=b"x" * len(contents[oid]))
    dest = tmp_path / "restored"
    assert cli(["restore", repo.url, str(dest)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and oid[:12] in err and "does not match its oid" in err, err
    assert not dest.exists()


def test_an_object_the_forge_lost_makes_a_partial_snapshot(
    vault_env: dict[str, str], lfs_repo, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The current model.bin is gone from the forge: the snapshot is `partial` (`lfs_missing`,
    with the count and the file), verify fails with that reason, restore warns naming it, and
    tree/ holds its pointer text, as the manifest says."""
    repo, _ = lfs_repo
    lost = sha((repo.work / "model.bin").read_bytes())
    (repo.lfs_store() / lost[:2] / lost[2:4] / lost).unlink()
    result = archive(repo)
    assert result.outcome == "completed" and result.status == "partial"
    assert result.lfs_objects == 3 and result.lfs_missing == 1
    assert result.reasons["lfs_missing"].startswith("1 LFS objects")
    assert "model.bin" in result.reasons["lfs_missing"]
    assert f"lfs/{lost}" not in lfs_keys(result.bucket)
    doc = manifest(result)
    assert doc["lfs"]["missing"] == 1 and doc["lfs"]["missing_paths"] == ["model.bin"]
    assert doc["tree"]["lfs_pointers"] == ["model.bin"]
    assert tree_file(result.bucket, "model.bin").startswith(b"version https://git-lfs")
    assert tree_file(result.bucket, "data/set.bin") == (repo.work / "data/set.bin").read_bytes()

    assert cli(["verify", repo.url]) == 1
    err = capsys.readouterr().err
    assert "lfs_missing" in err and "1 LFS objects" in err and "model.bin" in err, err

    dest = tmp_path / "restored"
    assert cli(["restore", repo.url, str(dest)]) == 0
    said = capsys.readouterr()
    assert "3 LFS objects verified and checked out" in said.out
    assert "partial" in said.err and "stay pointer files" in said.err and "model.bin" in said.err
    assert (dest / "model.bin").read_bytes().startswith(b"version https://git-lfs")
    assert (dest / "data" / "set.bin").read_bytes() == (repo.work / "data/set.bin").read_bytes()

    # A run that finds nothing new still answers for the snapshot it leaves the request on.
    again = archive(repo)
    assert again.outcome == "unchanged" and again.status == "partial"
    assert again.reasons == result.reasons


def test_restore_without_git_lfs_says_how_to_finish(
    vault_env: dict[str, str], lfs_repo, tmp_path: Path
) -> None:
    """`repovault restore` from another folder, with git on PATH but not git-lfs: the objects
    are restored and checked, the files are pointers, and the message says what to run; doing
    so gives the files."""
    repo, _ = lfs_repo
    archive(repo)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "git").symlink_to(shutil.which("git") or "git")
    dest, elsewhere = tmp_path / "restored", tmp_path / "elsewhere"
    elsewhere.mkdir()
    repovault = str(Path(sys.executable).with_name("repovault"))
    done = subprocess.run(
        [repovault, "restore", repo.url, str(dest)],
        cwd=elsewhere,
        env={**os.environ, "PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "4 LFS objects verified and NOT checked out (no git-lfs)" in done.stdout
    assert "git-lfs is not installed" in done.stderr
    assert "git lfs install --local && git lfs checkout" in done.stderr
    assert (dest / "model.bin").read_bytes().startswith(b"version https://git-lfs")

    # What the message says to do, with git-lfs installed, offline.
    shutil.rmtree(repo.lfs_store())
    git(dest, "lfs", "install", "--local")
    git(dest, "lfs", "checkout")
    assert (dest / "model.bin").read_bytes() == (repo.work / "model.bin").read_bytes()
    assert git(dest, "status", "--porcelain") == ""


def test_keep_lfs_off_stores_no_object(
    vault_env: dict[str, str], lfs_repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPOVAULT_KEEP_LFS", "false")
    repo, _ = lfs_repo
    result = archive(repo)
    assert lfs_keys(result.bucket) == {}
    doc = manifest(result)
    assert doc["lfs"] is None and doc["keep"]["lfs"] is False


def test_a_repository_without_lfs_asks_no_lfs_endpoint(
    vault_env: dict[str, str], make_repo: Callable[..., ServedRepo], git_server_log: Path
) -> None:
    repo = make_repo("plain")
    repo.commit({"a.bin": os.urandom(100)})
    repo.push()
    result = archive(repo)
    assert manifest(result)["lfs"] == {
        "objects": 0,
        "bytes": 0,
        "missing": 0,
        "missing_paths": [],
        "index": f"snapshots/{result.snapshot_id}/lfs.json",
    }
    owner = repo.url.split("/")[-2]
    assert not [r for r in logged_requests(git_server_log, f"/{owner}/") if "/info/lfs" in r.path]


def test_lfs_objects_of_a_private_repository_are_fetched_with_the_token(
    vault_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that requires GitHub's token for git and LFS alike stands in for github.com:
    the LFS requests carry the token (and only those to its host), the vault holds the objects."""
    token = "ghp_" + "L5fS" * 9
    basic = "Basic " + base64.b64encode(f"x-access-token:{token}".encode()).decode()
    root, log = tmp_path / "github", tmp_path / "github.log"
    with git_http_server(root, log, token) as github_url:
        monkeypatch.setenv("REPOVAULT_GITHUB_API", f"{github_url}/api/v3")
        monkeypatch.setenv("GITHUB_TOKEN", token)
        repo = ServedRepo(root, tmp_path / "copies", github_url, "octo", "private-lfs")
        repo.track_lfs("*.bin")
        git(repo.work, "config", "http.extraheader", f"Authorization: {basic}")
        content = os.urandom(5000)
        repo.commit({"secret.bin": content})
        repo.push()
        result = archive(repo)
        lfs_requests = [r for r in logged_requests(log) if "/info/lfs/" in r.path]
    assert result.lfs_objects == 1
    assert lfs_keys(result.bucket) == {f"lfs/{sha(content)}": content}
    assert lfs_requests and all(r.authorization == basic for r in lfs_requests)
    for key in ("manifest.json", "lfs.json"):
        raw = s3().get_object(Bucket=result.bucket, Key=f"snapshots/{result.snapshot_id}/{key}")
        assert token not in raw["Body"].read().decode()


def test_an_lfsconfig_in_the_repository_cannot_redirect_the_fetch(
    vault_env: dict[str, str], lfs_repo, tmp_path: Path
) -> None:
    """`.lfsconfig` may name any LFS server; RepoVault asks the remote's own endpoint only."""
    repo, contents = lfs_repo
    other_log = tmp_path / "other.log"
    with git_http_server(tmp_path / "other", other_log) as other_url:
        repo.commit({".lfsconfig": f"[lfs]\n\turl = {other_url}/elsewhere.git/info/lfs\n"})
        repo.push()
        result = archive(repo)
        assert logged_requests(other_log) == []
    assert result.lfs_objects == len(contents) and result.lfs_missing == 0


def test_verify_proves_the_lfs_objects_and_names_a_missing_or_tampered_one(
    vault_env: dict[str, str], lfs_repo, capsys: pytest.CaptureFixture
) -> None:
    repo, contents = lfs_repo
    result = archive(repo)
    assert cli(["verify", repo.url]) == 0
    assert "4 LFS objects stored; " not in (out := capsys.readouterr().out) and out.endswith(
        "4 LFS objects stored\n"
    )  # the quick pass lists them with their sizes, hashes none
    assert cli(["verify", "--deep", repo.url]) == 0
    assert "4 LFS objects stored, 4 hashed" in capsys.readouterr().out

    # Same size, other content: only hashing tells (lfs.json records oid and size, no ETag).
    oid, other = sorted(contents)[:2]
    s3().put_object(Bucket=result.bucket, Key=f"lfs/{oid}", Body=b"x" * len(contents[oid]))
    assert cli(["verify", "--deep", repo.url]) == 1
    err = capsys.readouterr().err
    assert "lfs_tampered" in err and oid[:12] in err, err

    s3().delete_object(Bucket=result.bucket, Key=f"lfs/{other}")
    for deep in ([], ["--deep"]):
        assert cli(["verify", *deep, repo.url]) == 1
        err = capsys.readouterr().err
        assert "lfs_missing_object" in err and other[:12] in err, err
