"""The archive core against real servers: git over smart HTTP, S3 (moto server), PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path

import boto3
import pytest

from repovault_pipeline.cli import main as cli
from repovault_pipeline.core.common.errors import (
    GitTimeout,
    RepoNotFound,
    RepoTooLarge,
    TransientError,
)
from repovault_pipeline.core.common.identity import parse_repo_url
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.vault.lease import inspect, interrupt
from repovault_pipeline.core.vault.reader import SnapshotReader
from repovault_pipeline.core.vault.snapshot import SnapshotWriter
from repovault_pipeline.core.vault.store import open_store
from tests.support.git_http_server import logged_requests
from tests.support.repos import ServedRepo, git
from tests.support.tcp_proxy import BreakableProxy
from tests.support.vault_checks import assert_tree_is_head, encoded_key

BINARY = bytes(range(256)) * 64


def s3() -> boto3.client:
    return boto3.client("s3", endpoint_url=os.environ["REPOVAULT_S3_ENDPOINT"])


def writer() -> SnapshotWriter:
    settings = Settings.from_env()
    return SnapshotWriter(settings, open_store(settings))


def archive(repo: ServedRepo):
    settings = Settings.from_env()
    return writer().archive(
        parse_repo_url(repo.url, settings.allowed_schemes, settings.allowed_hosts)
    )


def objects(bucket: str) -> dict[str, str]:
    """key -> ETag of every object in `bucket`."""
    pages = s3().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", [])}


def body(bucket: str, key: str) -> bytes:
    return s3().get_object(Bucket=bucket, Key=key)["Body"].read()


@pytest.fixture
def rich_repo(make_repo: Callable[..., ServedRepo]) -> ServedRepo:
    """Several branches, lightweight and annotated tags, a binary file, a symlink to /etc/passwd."""
    repo = make_repo("rich")
    repo.commit({"README.md": "# rich\n", "data/blob.bin": BINARY, "src/app.py": "print('hi')\n"})
    repo.symlink("passwd-link", "/etc/passwd")
    repo.commit(message="add link")
    repo.tag("v1.0", annotated=True)
    repo.branch("feature")
    repo.commit({"feature.txt": "feature work\n"})
    repo.tag("feature-lightweight")
    repo.checkout("main")
    repo.branch("release", checkout=False)
    repo.push()
    return repo


@pytest.fixture
def proxy(vault_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[BreakableProxy]:
    """Routes this test's S3 traffic through a proxy that records (and can break) requests.
    A run cut off from S3 cannot release its lease either: the next run waits for it to expire,
    so the lease lives 5 s here."""
    port = int(vault_env["REPOVAULT_S3_ENDPOINT"].rsplit(":", 1)[1])
    proxy = BreakableProxy(port)
    monkeypatch.setenv("REPOVAULT_S3_ENDPOINT", proxy.endpoint)
    monkeypatch.setenv("REPOVAULT_LEASE_TTL_S", "5")
    yield proxy
    proxy.close()


def test_archive_and_restore_keep_every_ref_and_never_follow_symlinks(
    vault_env: dict[str, str], rich_repo: ServedRepo, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    result = archive(rich_repo)
    assert result.outcome == "completed"
    assert result.head_commit == rich_repo.refs()["refs/heads/main"]

    keys = objects(result.bucket)
    snap = f"snapshots/{result.snapshot_id}/"
    assert {snap + "repo.bundle", snap + "manifest.json", "latest.json"} <= set(keys)
    assert {k for k in keys if k.startswith("tree/")} == {
        "tree/README.md",
        "tree/data/blob.bin",
        "tree/src/app.py",
        "tree/passwd-link",
    }
    assert body(result.bucket, "tree/data/blob.bin") == BINARY
    link = s3().get_object(Bucket=result.bucket, Key="tree/passwd-link")
    assert link["Body"].read() == b"/etc/passwd"  # the link text, not the file's content
    assert link["Metadata"]["repovault-type"] == "symlink"

    manifest = json.loads(body(result.bucket, snap + "manifest.json"))
    assert manifest["refs"] == rich_repo.refs()
    assert set(manifest["refs"]) == {
        "refs/heads/main",
        "refs/heads/feature",
        "refs/heads/release",
        "refs/tags/v1.0",
        "refs/tags/feature-lightweight",
    }
    assert manifest["default_branch"] == "main"
    assert manifest["bundle"]["size"] == len(body(result.bucket, snap + "repo.bundle"))
    assert manifest["tree"]["files"] == 4
    assert json.loads(body(result.bucket, "latest.json"))["snapshot_id"] == result.snapshot_id

    dest = tmp_path / "restored"
    assert cli(["restore", rich_repo.url, str(dest)]) == 0
    assert result.head_commit in capsys.readouterr().out
    restored_refs = dict(
        reversed(line.split(" ", 1))
        for line in git(
            dest, "for-each-ref", "--format=%(objectname) %(refname)", "refs/heads", "refs/tags"
        ).splitlines()
    )
    assert restored_refs == rich_repo.refs()
    assert git(dest, "rev-parse", "HEAD") == result.head_commit
    assert (dest / "data/blob.bin").read_bytes() == BINARY
    assert os.readlink(dest / "passwd-link") == "/etc/passwd"
    assert git(dest, "status", "--porcelain") == ""

    index = json.loads(body(result.bucket, manifest["tree"]["index"]))
    assert index["head_commit"] == result.head_commit
    assert index["files"]["data/blob.bin"] == {
        "mode": "100644",
        "sha": git(dest, "rev-parse", "HEAD:data/blob.bin"),
        "size": len(BINARY),
        "etag": hashlib.md5(BINARY).hexdigest(),  # S3's ETag of a single-part upload
    }
    assert index["files"]["data/blob.bin"]["etag"] == keys["tree/data/blob.bin"].strip('"')
    assert index["files"]["passwd-link"]["mode"] == "120000"
    assert set(index["files"]) == {k.removeprefix("tree/") for k in keys if k.startswith("tree/")}


def test_restore_by_repo_id_and_bad_destination(
    vault_env: dict[str, str], rich_repo: ServedRepo, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    result = archive(rich_repo)
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    assert cli(["restore", result.repo_id, str(occupied)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in occupied.iterdir()] == ["keep.txt"]
    assert (
        cli(
            [
                "restore",
                result.repo_id,
                str(tmp_path / "by-id"),
                "--snapshot",
                "20000101T000000Z-000000000000",
            ]
        )
        == 1
    )
    assert "no snapshot 20000101T000000Z-000000000000" in capsys.readouterr().err
    assert not (tmp_path / "by-id").exists()
    assert cli(["restore", result.repo_id, str(tmp_path / "by-id")]) == 0


def test_unchanged_repository_is_neither_cloned_nor_uploaded(
    proxy: BreakableProxy, rich_repo: ServedRepo, vault_env: dict[str, str], git_server_log: Path
) -> None:
    repo_path = "/" + rich_repo.url.split("/", 3)[3]
    first = archive(rich_repo)
    before = objects(first.bucket)
    fetch = ("POST", f"{repo_path}/git-upload-pack", "fetch")
    assert fetch in [r[:3] for r in logged_requests(git_server_log, repo_path)]  # cloned
    seen = len(logged_requests(git_server_log, repo_path))
    proxy.requests.clear()

    second = archive(rich_repo)

    assert second.outcome == "unchanged"
    assert second.snapshot_id == first.snapshot_id
    assert second.bytes_uploaded == 0
    assert [m for m, _ in proxy.requests if m in ("PUT", "POST", "DELETE")] == []
    assert objects(first.bucket) == before
    # The git server was asked for the refs (`ls-remote`) and for no object.
    asked = logged_requests(git_server_log, repo_path)[seen:]
    assert ("POST", f"{repo_path}/git-upload-pack", "ls-refs") in [a[:3] for a in asked]
    assert [a for a in asked if a.command == "fetch"] == []


def test_a_change_uploads_only_what_changed_and_keeps_the_old_snapshot(
    proxy: BreakableProxy, make_repo: Callable[..., ServedRepo], tmp_path: Path
) -> None:
    repo = make_repo("incremental")
    repo.commit({f"docs/page{i}.md": f"page {i}\n" for i in range(20)} | {"keep.bin": BINARY})
    repo.push()
    first = archive(repo)
    assert len(proxy.puts(first.bucket, "tree/")) == 21

    proxy.requests.clear()
    repo.commit({"docs/page3.md": "page 3, edited\n", "docs/page7.md": None})
    repo.push()
    second = archive(repo)

    assert second.outcome == "completed" and second.snapshot_id != first.snapshot_id
    assert proxy.puts(first.bucket, "tree/") == ["tree/docs/page3.md"]
    assert (second.files_uploaded, second.files_deleted) == (1, 1)
    keys = objects(first.bucket)
    assert "tree/docs/page7.md" not in keys
    assert body(first.bucket, "tree/docs/page3.md") == b"page 3, edited\n"
    reader = SnapshotReader(open_store(Settings.from_env()), first.bucket)
    assert reader.snapshot_ids()[0] == [second.snapshot_id, first.snapshot_id]

    old = tmp_path / "old"
    assert cli(["restore", repo.url, str(old), "--snapshot", first.snapshot_id]) == 0
    assert (old / "docs/page7.md").read_text() == "page 7\n"
    assert git(old, "rev-parse", "HEAD") == first.head_commit


def test_upload_broken_half_way_leaves_latest_on_the_previous_snapshot(
    proxy: BreakableProxy, make_repo: Callable[..., ServedRepo], capsys: pytest.CaptureFixture
) -> None:
    repo = make_repo("fragile")
    repo.commit({"a.txt": "v1\n"})
    repo.push()
    first = archive(repo)

    repo.commit({f"big/{i}.bin": os.urandom(256 * 1024) for i in range(12)})
    repo.push()
    proxy.break_after = proxy.forwarded + 1_000_000
    with pytest.raises(TransientError, match="S3"):
        archive(repo)
    assert proxy.broken

    proxy.heal()
    reader = SnapshotReader(open_store(Settings.from_env()), first.bucket)
    assert json.loads(body(first.bucket, "latest.json"))["snapshot_id"] == first.snapshot_id
    assert json.loads(body(first.bucket, "lease.json"))["state"] == "held"  # S3 was gone
    assert reader.latest().head_commit == first.head_commit
    assert cli(["list"]) == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if first.repo_id in line]
    assert len(listed) == 1 and first.snapshot_id in listed[0]

    rerun = archive(repo)
    assert rerun.outcome == "completed"
    assert reader.latest().head_commit == repo.refs()["refs/heads/main"]
    complete, incomplete = reader.snapshot_ids()
    assert complete == [rerun.snapshot_id, first.snapshot_id] and incomplete == []


def test_a_first_archive_that_dies_is_not_listed(
    proxy: BreakableProxy, make_repo: Callable[..., ServedRepo], capsys: pytest.CaptureFixture
) -> None:
    repo = make_repo("stillborn")
    repo.commit({f"{i}.bin": os.urandom(256 * 1024) for i in range(8)})
    repo.push()
    proxy.break_after = proxy.forwarded + 600_000
    with pytest.raises(TransientError):
        archive(repo)
    proxy.heal()
    assert cli(["list"]) == 0
    assert "stillborn" not in capsys.readouterr().out


def test_retention_keeps_the_newest_snapshots(
    vault_env: dict[str, str], make_repo: Callable[..., ServedRepo], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPOVAULT_KEEP_SNAPSHOTS", "2")
    repo = make_repo("kept")
    results = []
    for i in range(4):
        repo.commit({"counter.txt": f"{i}\n"})
        repo.push()
        results.append(archive(repo))
    reader = SnapshotReader(open_store(Settings.from_env()), results[0].bucket)
    complete, incomplete = reader.snapshot_ids()
    assert complete == [results[3].snapshot_id, results[2].snapshot_id]
    assert incomplete == []
    assert not [k for k in objects(results[0].bucket) if results[0].snapshot_id in k]
    # The first snapshot stayed one run longer than the count: the second one's bundle built
    # on it. Both went once no kept snapshot needed them.
    assert reader.manifest(results[1].snapshot_id) is None
    assert [r.snapshots_deleted for r in results] == [0, 0, 0, 2]


def test_too_large_and_missing_repositories_fail_with_the_reason(
    vault_env: dict[str, str], make_repo: Callable[..., ServedRepo], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo("huge")
    repo.commit({f"{i}.bin": os.urandom(1024 * 1024) for i in range(3)})
    repo.push()
    monkeypatch.setenv("REPOVAULT_MAX_REPO_MB", "1")
    with pytest.raises(RepoTooLarge, match="REPOVAULT_MAX_REPO_MB=1"):
        archive(repo)
    assert not any(Path(vault_env["REPOVAULT_WORK_DIR"]).iterdir())

    missing = make_repo("ghost")
    missing.url = missing.url.replace("ghost", "does-not-exist")
    with pytest.raises(RepoNotFound, match="not found"):
        archive(missing)


def test_local_backend_keeps_the_same_layout(
    vault_env: dict[str, str],
    rich_repo: ServedRepo,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.delenv("REPOVAULT_S3_ENDPOINT")
    result = archive(rich_repo)
    root = Path(vault_env["REPOVAULT_LOCAL_STORE"]) / result.bucket
    assert (root / "snapshots" / result.snapshot_id / "manifest.json").is_file()
    assert (root / "tree/passwd-link").read_bytes() == b"/etc/passwd"
    assert not (root / "tree/passwd-link").is_symlink()
    assert archive(rich_repo).outcome == "unchanged"
    assert cli(["restore", rich_repo.url, str(tmp_path / "local-restore")]) == 0
    assert git(tmp_path / "local-restore", "rev-parse", "HEAD") == result.head_commit


def test_a_new_default_branch_alone_makes_a_new_snapshot(
    vault_env: dict[str, str], rich_repo: ServedRepo
) -> None:
    first = archive(rich_repo)
    git(rich_repo.bare, "symbolic-ref", "HEAD", "refs/heads/feature")
    second = archive(rich_repo)
    assert second.outcome == "completed" and second.default_branch == "feature"
    assert second.head_commit == rich_repo.refs()["refs/heads/feature"] != first.head_commit
    assert "tree/feature.txt" in objects(second.bucket)


def until_a_later_second(bucket: str, key: str) -> None:
    """Wait until the S3 server's clock (its `Date` header) is past the second `key` was
    last written in."""
    written = int(s3().head_object(Bucket=bucket, Key=key)["LastModified"].timestamp())
    for _ in range(100):
        head = s3().head_object(Bucket=bucket, Key=key)
        now = parsedate_to_datetime(head["ResponseMetadata"]["HTTPHeaders"]["date"]).timestamp()
        if now >= written + 1:
            return
        time.sleep(0.05)
    raise AssertionError(f"the S3 server's clock did not pass {written}")


def archive_url(url: str):
    settings = Settings.from_env()
    return writer().archive(parse_repo_url(url, settings.allowed_schemes, settings.allowed_hosts))


def tree_keys(bucket: str) -> set[str]:
    return {k for k in objects(bucket) if k.startswith("tree/")}


def test_files_over_a_megabyte_are_streamed_and_restored_byte_identical(
    proxy: BreakableProxy, make_repo: Callable[..., ServedRepo], tmp_path: Path
) -> None:
    big, edge = os.urandom(3 * 1024 * 1024 + 123), os.urandom(1024 * 1024 + 1)
    repo = make_repo("large-files")
    repo.commit({"assets/big.bin": big, "assets/edge.bin": edge, "small.txt": "s\n"})
    repo.push()
    result = archive(repo)

    assert sorted(proxy.puts(result.bucket, "tree/")) == [
        "tree/assets/big.bin",
        "tree/assets/edge.bin",
        "tree/small.txt",
    ]
    assert body(result.bucket, "tree/assets/big.bin") == big
    assert body(result.bucket, "tree/assets/edge.bin") == edge
    index = json.loads(body(result.bucket, f"snapshots/{result.snapshot_id}/tree.json"))
    assert index["files"]["assets/big.bin"]["etag"] == hashlib.md5(big).hexdigest()
    assert cli(["restore", repo.url, str(tmp_path / "back")]) == 0
    assert (tmp_path / "back/assets/big.bin").read_bytes() == big
    assert (tmp_path / "back/assets/edge.bin").read_bytes() == edge
    assert not list(Path(os.environ["REPOVAULT_WORK_DIR"]).iterdir())  # spooled blobs gone too


LONG_NAME = b"n" * 300 + b".txt"  # longer than a file name may be (255 bytes)
ODD_FILES = {
    b"ok.txt": b"plain\n",
    b"new\nline.txt": b"a newline in the name\n",
    b"caf\xe9.txt": b"a name that is not UTF-8\n",
    b"back\\slash.txt": b"a backslash\n",
    b"deep/" + LONG_NAME: b"a name too long for file systems\n",
    b"..": b"a file named dot dot\n",
    b".git/config": b"[core]\n\thooksPath = /tmp/hostile\n",
    b".repovault/encoded/0000": b"a path that looks like an encoded key\n",
}
NOT_CHECKED_OUT = {b"..", b".git/config", b"deep/" + LONG_NAME}


def test_odd_paths_are_archived_under_encoded_keys_and_restore_without_them(
    vault_env: dict[str, str],
    make_repo: Callable[..., ServedRepo],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    repo = make_repo("odd")
    head = repo.commit_tree(ODD_FILES)
    git(repo.bare, "symbolic-ref", "HEAD", "refs/heads/main")
    result = archive(repo)
    assert (result.outcome, result.head_commit, result.tree_files) == ("completed", head, 8)

    expected = {"tree/ok.txt": b"plain\n"} | {
        encoded_key(path): content for path, content in ODD_FILES.items() if path != b"ok.txt"
    }
    assert tree_keys(result.bucket) == set(expected)
    for key, content in expected.items():
        assert body(result.bucket, key) == content
    index = json.loads(body(result.bucket, f"snapshots/{result.snapshot_id}/tree.json"))
    for name, entry in index["files"].items():
        path = name.encode("utf-8", "surrogateescape")
        if path == b"ok.txt":
            assert "key" not in entry
        else:  # the exact bytes of every encoded path are recoverable
            assert entry["key"] == encoded_key(path)
            assert base64.b64decode(entry["path_b64"]) == path
    assert {base64.b64decode(e.get("path_b64", "b2sudHh0")) for e in index["files"].values()} == (
        set(ODD_FILES)
    )
    assert_tree_is_head(result.bucket, repo.bare)

    dest = tmp_path / "restored"
    assert cli(["restore", repo.url, str(dest)]) == 0
    out, err = capsys.readouterr()
    assert head in out
    assert err.count("\n") == 1 and err.startswith("warning: every ref is restored; 3 of")
    assert git(dest, "rev-parse", "HEAD") == head
    for path, content in ODD_FILES.items():
        if path not in NOT_CHECKED_OUT:
            assert (dest / os.fsdecode(path)).read_bytes() == content
    assert b"hostile" not in (dest / ".git/config").read_bytes()
    assert not (tmp_path / "restored/../..").is_file()
    status = subprocess.run(
        ["git", "status", "--porcelain", "-z"], cwd=dest, capture_output=True, check=True
    ).stdout
    assert {entry[3:] for entry in status.split(b"\0") if entry} == NOT_CHECKED_OUT


def test_odd_paths_on_the_local_backend(
    vault_env: dict[str, str], make_repo: Callable[..., ServedRepo], monkeypatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("REPOVAULT_S3_ENDPOINT")
    repo = make_repo("odd-local")
    repo.commit_tree(ODD_FILES)
    git(repo.bare, "symbolic-ref", "HEAD", "refs/heads/main")
    result = archive(repo)
    root = Path(vault_env["REPOVAULT_LOCAL_STORE"]) / result.bucket
    stored = {
        str(p.relative_to(root)): p.read_bytes() for p in (root / "tree").rglob("*") if p.is_file()
    }
    assert stored == {"tree/ok.txt": b"plain\n"} | {
        encoded_key(path): content for path, content in ODD_FILES.items() if path != b"ok.txt"
    }
    assert cli(["restore", repo.url, str(tmp_path / "back")]) == 0
    assert (tmp_path / "back/new\nline.txt").read_bytes() == ODD_FILES[b"new\nline.txt"]


def test_a_repository_with_tags_and_no_branch(
    vault_env: dict[str, str],
    make_repo: Callable[..., ServedRepo],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = make_repo("tags-only")
    monkeypatch.setenv("GIT_COMMITTER_DATE", "2021-06-01T00:00:00Z")
    repo.commit({"a.txt": "v2\n", "b.txt": "added in v2\n"})
    repo.tag("v2", annotated=True)
    monkeypatch.setenv("GIT_COMMITTER_DATE", "2020-01-01T00:00:00Z")
    repo.commit({"a.txt": "v1-fix\n"})  # newer in history, but the older tag
    repo.tag("v1.1")
    repo.push()
    git(repo.bare, "update-ref", "-d", "refs/heads/main")  # HEAD names no branch any more
    v2 = git(repo.bare, "rev-parse", "v2^{commit}")

    result = archive(repo)
    assert result.outcome == "completed"
    manifest = assert_tree_is_head(result.bucket, repo.bare)
    assert (manifest["head_commit"], manifest["head_ref"]) == (v2, "refs/tags/v2")
    assert manifest["default_branch"] is None
    assert manifest["refs"] == repo.refs() and set(repo.refs()) == {
        "refs/tags/v2",
        "refs/tags/v1.1",
    }
    assert body(result.bucket, "tree/a.txt") == b"v2\n"

    dest = tmp_path / "restored"
    assert cli(["restore", repo.url, str(dest)]) == 0
    assert git(dest, "rev-parse", "HEAD") == v2
    assert git(dest, "status", "--porcelain") == ""
    assert (dest / "b.txt").read_text() == "added in v2\n"
    assert archive(repo).outcome == "unchanged"


def test_a_detached_head_is_archived_as_its_commit(
    vault_env: dict[str, str], make_repo: Callable[..., ServedRepo], tmp_path: Path
) -> None:
    repo = make_repo("detached")
    old = repo.commit({"f.txt": "old\n"})
    repo.commit({"f.txt": "new\n"})
    repo.push()
    git(repo.bare, "update-ref", "--no-deref", "HEAD", old)
    result = archive(repo)
    manifest = assert_tree_is_head(result.bucket, repo.bare)
    assert (manifest["head_commit"], manifest["head_ref"]) == (old, "HEAD")
    assert manifest["default_branch"] is None
    assert cli(["restore", repo.url, str(tmp_path / "back")]) == 0
    assert (tmp_path / "back/f.txt").read_text() == "old\n"


def test_a_file_that_becomes_a_folder_is_deleted_before_the_folder_is_written(
    proxy: BreakableProxy, make_repo: Callable[..., ServedRepo]
) -> None:
    repo = make_repo("file-to-folder")
    repo.commit({"docs": "I am a file\n"})
    repo.push()
    first = archive(repo)
    repo.write({"docs": None})
    repo.commit({"docs/index.md": "now a folder\n"})
    repo.push()
    proxy.requests.clear()
    archive(repo)
    assert tree_keys(first.bucket) == {"tree/docs/index.md"}
    # MinIO refuses `docs/index.md` while an object `docs` exists: the delete must go first.
    order = [(m, p.split("?")[-1] if m == "POST" else p) for m, p in proxy.requests]
    delete = order.index(("POST", "delete"))
    assert delete < order.index(("PUT", f"/{first.bucket}/tree/docs/index.md"))


def test_an_object_rewritten_after_the_last_snapshot_is_rewritten(
    proxy: BreakableProxy, make_repo: Callable[..., ServedRepo]
) -> None:
    repo = make_repo("tampered")
    repo.commit({"run.sh": "echo hi\n", "data.txt": "content A\n", "keep.txt": "k\n"})
    repo.push()
    first = archive(repo)
    # What follows happens in a later second (S3's times have one-second resolution) than the
    # snapshot's tree.json was written, by the S3 server's clock.
    until_a_later_second(first.bucket, f"snapshots/{first.snapshot_id}/tree.json")
    # What a run that died mid-upload leaves: other metadata on the same content, and other
    # content of the same size. Neither changes the object's size.
    meta = {"git-mode": "100755", "git-blob": "0" * 40}
    s3().put_object(Bucket=first.bucket, Key="tree/run.sh", Body=b"echo hi\n", Metadata=meta)
    s3().put_object(Bucket=first.bucket, Key="tree/data.txt", Body=b"content B\n", Metadata=meta)
    # ... and its lease, as `reconcile_sensor` marks it (a quiet bucket's run would trust
    # tree.json: tests/core/test_quiet_tree.py).
    store = open_store(Settings.from_env())
    view = inspect(store, first.bucket)
    assert view is not None
    interrupt(store, first.bucket, view, "its worker died")
    repo.commit({"other.txt": "a change\n"})
    repo.push()
    proxy.requests.clear()
    archive(repo)
    assert sorted(proxy.puts(first.bucket, "tree/")) == [
        "tree/data.txt",
        "tree/other.txt",
        "tree/run.sh",
    ]
    assert_tree_is_head(first.bucket, repo.bare)


def test_a_tree_index_without_etags_means_upload_again(
    proxy: BreakableProxy, make_repo: Callable[..., ServedRepo]
) -> None:
    repo = make_repo("old-index")
    repo.commit({f"f{i}.txt": f"{i}\n" for i in range(5)})
    repo.push()
    first = archive(repo)
    key = f"snapshots/{first.snapshot_id}/tree.json"
    index = json.loads(body(first.bucket, key))
    for entry in index["files"].values():
        del entry["etag"]  # as RepoVault wrote it before it recorded etags
    s3().put_object(Bucket=first.bucket, Key=key, Body=json.dumps(index).encode())
    repo.commit({"f0.txt": "changed\n"})
    repo.push()
    proxy.requests.clear()
    archive(repo)
    assert len(proxy.puts(first.bucket, "tree/")) == 5
    assert_tree_is_head(first.bucket, repo.bare)


@pytest.fixture
def slow_git(git_base_url: str) -> Iterator[BreakableProxy]:
    """The git server behind a slow link: a clone trickles in."""
    proxy = BreakableProxy(int(git_base_url.rsplit(":", 1)[1]))
    proxy.chunk, proxy.delay_s = 4096, 0.02
    yield proxy
    proxy.close()


def archive_slowly(url: str) -> None:
    """`archive_url` through the slow link. A `git ls-remote` the link cut short is tried
    again (the server may close while the proxy still trickles its answer; its reset drops the
    rest, as CI saw once): these tests are about the clone after it."""
    for attempt in range(3):
        try:
            archive_url(url)
            return
        except TransientError as exc:
            if attempt == 2 or not str(exc).startswith("git ls-remote"):
                raise


def test_a_clone_slower_than_the_git_timeout_is_killed_mid_way(
    vault_env: dict[str, str],
    make_repo: Callable[..., ServedRepo],
    slow_git: BreakableProxy,
    git_base_url: str,
    git_server_log: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = make_repo("slow")
    repo.commit({"blob.bin": os.urandom(3 * 1024 * 1024)})
    repo.push()
    monkeypatch.setenv("REPOVAULT_GIT_TIMEOUT_S", "3")
    with pytest.raises(GitTimeout, match="git clone ran past REPOVAULT_GIT_TIMEOUT_S=3s"):
        archive_slowly(repo.url.replace(git_base_url, slow_git.endpoint))
    path = "/" + repo.url.split("/", 3)[3]
    asked = [r[:3] for r in logged_requests(git_server_log, path)]
    assert ("POST", f"{path}/git-upload-pack", "fetch") in asked
    assert list(Path(vault_env["REPOVAULT_WORK_DIR"]).iterdir()) == []


def test_a_clone_passing_the_size_cap_is_killed_mid_way(
    vault_env: dict[str, str],
    make_repo: Callable[..., ServedRepo],
    slow_git: BreakableProxy,
    git_base_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = make_repo("growing")
    repo.commit({"blob.bin": os.urandom(6 * 1024 * 1024)})
    repo.push()
    slow_git.chunk = 32768
    monkeypatch.setenv("REPOVAULT_MAX_REPO_MB", "1")
    with pytest.raises(RepoTooLarge, match=r"REPOVAULT_MAX_REPO_MB=1 \(\d+ MB received so far\)"):
        archive_slowly(repo.url.replace(git_base_url, slow_git.endpoint))
    assert list(Path(vault_env["REPOVAULT_WORK_DIR"]).iterdir()) == []
