"""Wikis (`<repo>.wiki.git`) archived into the repository's bucket under `wiki/`, against the
test git server and S3 (moto server): snapshots with the same commit rules, restored by
`repovault restore --wiki`; a repository without a wiki is not an error."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest

from repovault_pipeline.cli import main as cli
from tests.support.archiving import archive
from tests.support.git_http_server import logged_requests
from tests.support.repos import ServedRepo, git


def s3() -> boto3.client:
    return boto3.client("s3", endpoint_url=os.environ["REPOVAULT_S3_ENDPOINT"])


def keys(bucket: str, prefix: str = "") -> set[str]:
    pages = s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def read_json(bucket: str, key: str) -> dict:
    return json.loads(s3().get_object(Bucket=bucket, Key=key)["Body"].read())


@pytest.fixture
def with_wiki(make_repo: Callable[..., ServedRepo]) -> tuple[ServedRepo, ServedRepo]:
    repo = make_repo("handbook")
    repo.commit({"README.md": "code\n"})
    repo.push()
    owner = repo.url.split("/")[-2]
    wiki = make_repo("handbook.wiki", owner=owner)
    wiki.commit({"Home.md": "# Welcome\n", "Setup.md": "pip install\n"}, "wiki pages")
    wiki.push()
    return repo, wiki


def test_a_wiki_is_archived_and_restores(
    vault_env: dict[str, str], with_wiki, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    repo, wiki = with_wiki
    result = archive(repo)
    assert result.outcome == "completed" and result.wiki_outcome == "completed"
    sid = result.wiki_snapshot_id
    assert keys(result.bucket, "wiki/") == {
        f"wiki/snapshots/{sid}/repo.bundle",
        f"wiki/snapshots/{sid}/manifest.json",
        "wiki/latest.json",
    }
    manifest = read_json(result.bucket, f"wiki/snapshots/{sid}/manifest.json")
    assert manifest["refs"] == wiki.refs()
    assert manifest["repo_id"] == result.repo_id and manifest["repo_url"] == wiki.url
    assert read_json(result.bucket, "wiki/latest.json")["snapshot_id"] == sid
    # The repository's own snapshot is untouched by the wiki's.
    assert read_json(result.bucket, "latest.json")["snapshot_id"] == result.snapshot_id

    dest = tmp_path / "wiki"
    assert cli(["restore", "--wiki", repo.url, str(dest)]) == 0, capsys.readouterr().err
    assert "the wiki of" in capsys.readouterr().out
    assert (dest / "Home.md").read_text() == "# Welcome\n"
    assert git(dest, "rev-parse", "HEAD") == wiki.refs()["refs/heads/main"]
    code = tmp_path / "code"
    assert cli(["restore", repo.url, str(code)]) == 0
    assert (code / "README.md").read_text() == "code\n" and not (code / "Home.md").exists()


def test_a_wiki_edit_alone_makes_a_wiki_snapshot(vault_env: dict[str, str], with_wiki) -> None:
    repo, wiki = with_wiki
    first = archive(repo)
    wiki.commit({"Home.md": "# Welcome back\n"}, "edit")
    wiki.push()
    second = archive(repo)
    assert second.outcome == "unchanged" and second.snapshot_id == first.snapshot_id
    assert second.wiki_outcome == "completed"
    assert second.wiki_snapshot_id > first.wiki_snapshot_id
    manifest = read_json(second.bucket, f"wiki/snapshots/{second.wiki_snapshot_id}/manifest.json")
    assert manifest["refs"] == wiki.refs()
    before = keys(second.bucket)
    third = archive(repo)
    assert (third.outcome, third.wiki_outcome) == ("unchanged", "unchanged")
    assert third.bytes_uploaded == 0 and keys(third.bucket) == before


def test_wiki_retention_keeps_the_repository_lfs_objects(
    vault_env: dict[str, str], make_repo: Callable[..., ServedRepo], monkeypatch
) -> None:
    monkeypatch.setenv("REPOVAULT_KEEP_SNAPSHOTS", "1")
    repo = make_repo("weights")
    repo.track_lfs("*.bin")
    repo.commit({"w.bin": os.urandom(4000)})
    repo.push()
    wiki = make_repo("weights.wiki", owner=repo.url.split("/")[-2])
    wiki.commit({"Home.md": "1\n"})
    wiki.push()
    first = archive(repo)
    lfs_objects = keys(first.bucket, "lfs/")
    assert len(lfs_objects) == 1
    for n in (2, 3):
        wiki.commit({"Home.md": f"{n}\n"})
        wiki.push()
        result = archive(repo)
        assert result.wiki_outcome == "completed"
    wiki_snapshots = {k.split("/")[2] for k in keys(first.bucket, "wiki/snapshots/")}
    assert wiki_snapshots == {result.wiki_snapshot_id}
    assert keys(first.bucket, "lfs/") == lfs_objects


def test_a_repository_without_a_wiki_is_archived(
    vault_env: dict[str, str], make_repo: Callable[..., ServedRepo], tmp_path: Path, capsys
) -> None:
    repo = make_repo("nowiki")
    repo.commit({"a.txt": "a\n"})
    repo.push()
    result = archive(repo)
    assert result.outcome == "completed" and result.wiki_outcome == "absent"
    assert keys(result.bucket, "wiki/") == set()
    assert cli(["restore", "--wiki", repo.url, str(tmp_path / "w")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no wiki snapshot" in err, err


def test_keep_wiki_off_never_asks_for_the_wiki(
    vault_env: dict[str, str], with_wiki, monkeypatch, git_server_log: Path
) -> None:
    monkeypatch.setenv("REPOVAULT_KEEP_WIKI", "false")
    repo, wiki = with_wiki
    result = archive(repo)
    assert result.wiki_outcome is None and keys(result.bucket, "wiki/") == set()
    assert not logged_requests(git_server_log, "/" + wiki.url.split("/", 3)[3])


def test_a_wiki_that_cannot_be_cloned_leaves_the_code_kept_and_the_run_partial(
    vault_env: dict[str, str], with_wiki
) -> None:
    """The forge lists the wiki's refs but cannot serve its history (an object is gone): the
    code snapshot is written all the same, and the run says `partial` (`wiki_failed`)."""
    repo, wiki = with_wiki
    head = wiki.refs()["refs/heads/main"]
    loose = wiki.bare / "objects" / head[:2] / head[2:]
    assert loose.is_file()
    loose.unlink()
    result = archive(repo)
    assert result.outcome == "completed" and result.status == "partial"
    assert result.wiki_outcome == "failed" and list(result.reasons) == ["wiki_failed"]
    assert keys(result.bucket, "wiki/") == set()
    assert read_json(result.bucket, "latest.json")["snapshot_id"] == result.snapshot_id
