"""Forge metadata against a GitHub-shaped API on loopback and the S3 server: what is stored,
what a second run adds, what a rate limit in the middle leaves, what restore gives back."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from repovault_pipeline.core.common.errors import ArchiveError
from repovault_pipeline.core.common.identity import parse_repo_url
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.sources.forges import forge_of
from repovault_pipeline.core.sources.forges.client import RateLimited
from repovault_pipeline.core.sources.metadata.archive import MetadataArchiver, MetadataResult
from repovault_pipeline.core.sources.metadata.restore import restore_metadata
from repovault_pipeline.core.vault.crypt import NotDecryptable
from repovault_pipeline.core.vault.store import open_store
from tests.support.forge_metadata import FakeGitHub
from tests.support.vault_checks import s3

ASSET = b"\x7fELF release binary " * 500


@pytest.fixture
def forge(vault_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitHub]:
    fake = FakeGitHub("acme", "tool")
    monkeypatch.setenv("REPOVAULT_GITHUB_API", fake.api)
    for number in range(1, 5):
        issue = fake.add_issue(f"issue {number}")
        fake.add_comment(issue, f"a comment on {number}")
    pull = fake.add_issue("a pull request", pull=True)
    fake.add_review(pull, "APPROVED", "looks good")
    fake.add_release("v1.0", "tool-linux", ASSET)
    yield fake
    fake.close()


def run() -> MetadataResult:
    settings = Settings.from_env()
    ref = parse_repo_url("https://127.0.0.1/acme/tool.git", ("https",), ("127.0.0.1",))
    forge = forge_of(ref, settings)
    assert forge is not None and forge.name == "github"
    return MetadataArchiver(settings, open_store(settings)).archive(ref, forge)


def jsonl(bucket: str, snapshot_id: str, kind: str) -> list[dict]:
    key = f"metadata/snapshots/{snapshot_id}/{kind}.jsonl"
    body = s3().get_object(Bucket=bucket, Key=key)["Body"].read()
    return [json.loads(line) for line in body.splitlines()]


def keys(bucket: str) -> list[str]:
    pages = s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="metadata/")
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_first_run_keeps_every_kind_and_the_release_asset(forge: FakeGitHub) -> None:
    first = run()

    assert first.full and first.snapshot_id
    issues = jsonl(first.bucket, first.snapshot_id, "issues")
    assert sorted(i["title"] for i in issues) == [f"issue {n}" for n in range(1, 5)]
    assert [p["title"] for p in jsonl(first.bucket, first.snapshot_id, "pull_requests")] == [
        "a pull request"
    ]
    assert [r["body"] for r in jsonl(first.bucket, first.snapshot_id, "reviews")] == ["looks good"]
    assert len(jsonl(first.bucket, first.snapshot_id, "comments")) == 4
    sha = hashlib.sha256(ASSET).hexdigest()
    stored = s3().get_object(Bucket=first.bucket, Key=f"metadata/assets/{sha}")["Body"].read()
    assert stored == ASSET
    assert len(forge.requests_to("/issues")) >= 3  # three pages of two
    latest = json.loads(
        s3().get_object(Bucket=first.bucket, Key="metadata/latest.json")["Body"].read()
    )
    assert latest["snapshot_id"] == first.snapshot_id


def test_the_next_run_stores_exactly_what_changed(forge: FakeGitHub) -> None:
    first = run()
    downloads = len(forge.requests_to("/releases/assets/"))
    forge.edit_issue(2, title="issue 2, edited")
    forge.add_issue("issue 6", minutes_ago=0)

    second = run()

    assert second.snapshot_id and second.snapshot_id > str(first.snapshot_id)
    changed = jsonl(second.bucket, second.snapshot_id, "issues")
    assert sorted(i["title"] for i in changed) == ["issue 2, edited", "issue 6"]
    assert second.changed == {"issues": 2}
    assert not second.full
    since = forge.requests_to("/repos/acme/tool/issues")[-1]["query"]["since"]
    assert since  # asked only for what changed
    assert (
        len(forge.requests_to("/releases/assets/")) == downloads
    )  # the asset is not fetched again
    assert second.assets_uploaded == 0

    third = run()
    assert third.snapshot_id is None and third.changed == {}  # nothing new: no snapshot


def test_a_rate_limit_mid_run_commits_nothing_and_the_next_run_has_no_duplicates(
    forge: FakeGitHub,
) -> None:
    first = run()
    forge.edit_issue(3, title="issue 3, edited")
    forge.add_issue("issue 6", minutes_ago=0)
    forge.rate_limit_after = len(forge.log) + 2  # the issues pages, then the comments 403

    with pytest.raises(
        RateLimited, match=r"rate limit reached reading /repos/acme/tool/.*resets at"
    ):
        run()
    manifests = [k for k in keys(first.bucket) if k.endswith("manifest.json")]
    assert len(manifests) == 1  # nothing of the interrupted pass is committed

    forge.rate_limit_after = None
    again = run()
    assert sorted(i["title"] for i in jsonl(again.bucket, str(again.snapshot_id), "issues")) == [
        "issue 3, edited",
        "issue 6",
    ]


def test_restore_writes_readable_metadata_and_checks_assets(
    forge: FakeGitHub, tmp_path: Path
) -> None:
    first = run()
    forge.edit_issue(1, title="issue 1, edited")
    second = run()
    settings = Settings.from_env()
    store = open_store(settings)

    done = restore_metadata(store, second.bucket, second.repo_id, tmp_path / "meta")

    lines = (tmp_path / "meta" / "issues.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["title"] for line in lines) == [
        "issue 1, edited",
        "issue 2",
        "issue 3",
        "issue 4",
    ]
    assert done.records["pull_requests"] == 1 and done.records["reviews"] == 1
    assert (tmp_path / "meta" / "releases" / "v1.0" / "tool-linux").read_bytes() == ASSET
    page = (tmp_path / "meta" / "issues" / "1.md").read_text()
    assert "issue 1, edited" in page and "a comment on 1" in page

    older = restore_metadata(
        store, first.bucket, first.repo_id, tmp_path / "old", first.snapshot_id
    )
    assert older.snapshot_id == first.snapshot_id
    assert "issue 1\n" not in (tmp_path / "old" / "issues.jsonl").read_text()
    assert '"title": "issue 1"' in (tmp_path / "old" / "issues.jsonl").read_text()

    sha = hashlib.sha256(ASSET).hexdigest()
    s3().put_object(Bucket=first.bucket, Key=f"metadata/assets/{sha}", Body=b"tampered")
    with pytest.raises(ArchiveError, match=r"tool-linux of v1\.0 does not match its sha256"):
        restore_metadata(store, first.bucket, first.repo_id, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()  # a failed restore leaves nothing behind


def test_a_private_repository_needs_the_token_which_is_stored_nowhere(
    forge: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "ghp_" + "Q" * 36
    forge.token = token
    with pytest.raises(ArchiveError, match=r"404 .*set the forge token"):
        run()

    monkeypatch.setenv("GITHUB_TOKEN", token)
    result = run()

    assert result.snapshot_id
    assert all(r["authorization"] == f"Bearer {token}" for r in forge.log[-3:])
    for key in keys(result.bucket):
        assert token.encode() not in s3().get_object(Bucket=result.bucket, Key=key)["Body"].read()


def test_restore_metadata_from_the_command_line(
    forge: FakeGitHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from repovault_pipeline.cli import main as cli

    first = run()
    dest = tmp_path / "meta"

    assert cli(["restore", "https://127.0.0.1/acme/tool", str(dest), "--metadata"]) == 0
    out = capsys.readouterr().out
    assert f"snapshot {first.snapshot_id}" in out and "4 issues" in out
    assert "1 release assets verified" in out
    assert (dest / "pull_requests" / "5.md").read_text().startswith("# #5 a pull request")

    assert cli(["restore", "https://127.0.0.1/acme/tool", str(dest), "--metadata"]) == 1
    assert "is not empty" in capsys.readouterr().err


def test_a_gitlab_project_through_the_gitlab_api_with_its_token(
    vault_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = FakeGitHub("group/sub", "app", shape="gitlab")
    token = "glpat-" + "Z" * 20
    fake.token = token
    issue = fake.add_issue("broken build")
    fake.add_comment(issue, "seen it too")
    merge = fake.add_issue("fix the build", pull=True)
    fake.add_comment(merge, "approved")
    fake.add_release("v2", "app.zip", b"zip bytes")
    monkeypatch.setenv("REPOVAULT_GITLAB_API", fake.api)
    monkeypatch.setenv("GITLAB_TOKEN", token)
    try:
        settings = Settings.from_env()
        ref = parse_repo_url("https://127.0.0.1/group/sub/app.git", ("https",), ("127.0.0.1",))
        forge = forge_of(ref, settings)
        assert forge is not None and forge.name == "gitlab"
        result = MetadataArchiver(settings, open_store(settings)).archive(ref, forge)

        assert result.changed == {
            "issues": 1,
            "pull_requests": 1,
            "comments": 2,
            "labels": 1,
            "milestones": 1,
            "releases": 1,
        }
        assert {r["private_token"] for r in fake.log} == {token}
        assert all(r["authorization"] is None for r in fake.log)
        assert fake.requests_to("/api/v4/projects/group%2Fsub%2Fapp/merge_requests/2/notes")

        done = restore_metadata(open_store(settings), result.bucket, ref.repo_id, tmp_path / "m")
        assert done.assets == 1
        assert "approved" in (tmp_path / "m" / "pull_requests" / "2.md").read_text()
        assert "approved" not in (tmp_path / "m" / "issues" / "1.md").read_text()
        assert "seen it too" in (tmp_path / "m" / "issues" / "1.md").read_text()
    finally:
        fake.close()


def test_encrypted_metadata_stores_no_record_nor_asset_readable_and_restores(
    forge: FakeGitHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """REPOVAULT_ENCRYPT_RECIPIENTS: records and release assets stored encrypted with age;
    the identity restores them, none (or another key) is one line naming the setting."""
    identity = tmp_path / "identity.txt"
    subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
    public = subprocess.run(
        ["age-keygen", "-y", str(identity)], check=True, capture_output=True, text=True
    ).stdout.strip()
    monkeypatch.setenv("REPOVAULT_ENCRYPT_RECIPIENTS", public)
    first = run()

    for key in keys(first.bucket):
        body = s3().get_object(Bucket=first.bucket, Key=key)["Body"].read()
        assert b"a comment on" not in body and b"release binary" not in body, key
    assert any(k.endswith("/issues.jsonl.age") for k in keys(first.bucket))
    store = open_store(Settings.from_env())
    with pytest.raises(NotDecryptable, match="set REPOVAULT_DECRYPT_IDENTITY"):
        restore_metadata(store, first.bucket, first.repo_id, tmp_path / "none")
    done = restore_metadata(
        store, first.bucket, first.repo_id, tmp_path / "meta", identity=identity
    )
    assert done.assets == 1 and done.records["issues"] == 4
    assert (tmp_path / "meta" / "releases" / "v1.0" / "tool-linux").read_bytes() == ASSET


def archive_on(fake: FakeGitHub, forge_name: str, path: str = "acme/tool") -> MetadataResult:
    """One metadata run of `path` on 127.0.0.1, through the forge its host is configured for."""
    settings = Settings.from_env()
    ref = parse_repo_url(f"https://127.0.0.1/{path}.git", ("https",), ("127.0.0.1",))
    forge = forge_of(ref, settings)
    assert forge is not None and forge.name == forge_name
    return MetadataArchiver(settings, open_store(settings)).archive(ref, forge)


def test_a_gitea_repository_through_the_gitea_api_with_its_token(
    vault_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Issues, pull requests, their comments and reviews, labels, milestones and releases with
    their attachments (downloaded from the web host, the API's origin): GITEA_TOKEN on every
    request, the snapshot restored as GitHub's is."""
    fake = FakeGitHub("acme", "tool", shape="gitea")
    token = "9c1f" * 10
    fake.token = token
    issue = fake.add_issue("broken build")
    fake.add_comment(issue, "seen it too")
    pull = fake.add_issue("fix the build", pull=True)
    fake.add_comment(pull, "approved by me")
    fake.add_review(pull, "APPROVED", "ship it")
    fake.add_release("v2", "tool.zip", ASSET)
    monkeypatch.setenv("REPOVAULT_GITEA_API", fake.api)
    monkeypatch.setenv("GITEA_TOKEN", token)
    try:
        first = archive_on(fake, "gitea")
        assert first.changed == {
            "issues": 1,
            "pull_requests": 1,
            "comments": 2,
            "reviews": 1,
            "labels": 1,
            "milestones": 1,
            "releases": 1,
        }
        assert {r["authorization"] for r in fake.log} == {f"token {token}"}
        assert fake.requests_to("/acme/tool/releases/download/v2/")  # the attachment, once
        assert {r["query"].get("limit") for r in fake.requests_to("/api/v1/")} == {"50"}

        fake.edit_issue(1, title="broken build, edited")
        second = archive_on(fake, "gitea")
        assert second.changed == {"issues": 1}
        assert fake.requests_to("/api/v1/repos/acme/tool/issues")[-1]["query"]["since"]

        fake.rate_limit_after = len(fake.log)  # Codeberg's 429, with Retry-After
        with pytest.raises(RateLimited, match=r"gitea API rate limit reached .*resets at"):
            archive_on(fake, "gitea")
        fake.rate_limit_after = None

        done = restore_metadata(
            open_store(Settings.from_env()), second.bucket, second.repo_id, tmp_path / "m"
        )
        assert done.assets == 1 and done.records["reviews"] == 1
        assert (tmp_path / "m" / "releases" / "v2" / "tool.zip").read_bytes() == ASSET
        thread = (tmp_path / "m" / "pull_requests" / "2.md").read_text()
        assert "fix the build" in thread and "approved by me" in thread
        assert "seen it too" in (tmp_path / "m" / "issues" / "1.md").read_text()
        assert "approved by me" not in (tmp_path / "m" / "issues" / "1.md").read_text()
    finally:
        fake.close()


def test_a_bitbucket_repository_pull_requests_and_an_absent_issue_tracker(
    vault_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Pull requests of every state with their comments; no issue tracker (a 404) is noted in
    the manifest, not a failure; once the tracker is on, its issues come too. The app password
    goes as basic authentication with BITBUCKET_USERNAME, and only there."""
    fake = FakeGitHub("team", "app", shape="bitbucket")
    password = "ATBB" + "k3Zp" * 8
    fake.token = password
    pull = fake.add_issue("add a cache", pull=True)
    fake.add_comment(pull, "needs a test")
    for title in ("bump", "docs"):  # two pages of two
        fake.add_issue(title, pull=True)
    fake.issue_tracker = False
    monkeypatch.setenv("REPOVAULT_BITBUCKET_API", fake.api)
    monkeypatch.setenv("BITBUCKET_APP_PASSWORD", password)
    try:
        with pytest.raises(ArchiveError, match=r"answered 404 for /2.0/repositories/team/app/pu"):
            archive_on(fake, "bitbucket", "team/app")  # no user: no credentials, not visible

        monkeypatch.setenv("BITBUCKET_USERNAME", fake.username)
        first = archive_on(fake, "bitbucket", "team/app")
        assert first.changed == {"pull_requests": 3, "comments": 1}
        assert first.absent == ["no issue tracker"]
        manifest_key = f"metadata/snapshots/{first.snapshot_id}/manifest.json"
        manifest = json.loads(s3().get_object(Bucket=first.bucket, Key=manifest_key)["Body"].read())
        assert manifest["absent"] == ["no issue tracker"]
        listings = [r for r in fake.log[1:] if r["path"].endswith("/pullrequests")]
        assert [r["query"].get("page") for r in listings] == [None, "2"]  # the body's `next`
        assert {tuple(r["multi"]["state"]) for r in listings} == {
            ("OPEN", "MERGED", "DECLINED", "SUPERSEDED")
        }
        basic = base64.b64encode(f"{fake.username}:{password}".encode()).decode()
        assert {r["authorization"] for r in fake.log[1:]} == {f"Basic {basic}"}

        fake.issue_tracker = True
        issue = fake.add_issue("crash on start")
        fake.add_comment(issue, "stack trace attached")
        second = archive_on(fake, "bitbucket", "team/app")
        assert second.changed == {"issues": 1, "comments": 1} and second.absent == []

        restore_metadata(
            open_store(Settings.from_env()), second.bucket, second.repo_id, tmp_path / "m"
        )
        thread = (tmp_path / "m" / "pull_requests" / "1.md").read_text()
        assert "add a cache" in thread and "body of add a cache" in thread
        assert "needs a test" in thread and "stack trace" not in thread
        assert "stack trace attached" in (tmp_path / "m" / "issues" / "1.md").read_text()
    finally:
        fake.close()
