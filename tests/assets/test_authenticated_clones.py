"""The authenticated paths, for real: an `ssh://` repository served by OpenSSH and cloned with
`REPOVAULT_SSH_KEY`, and a private HTTP repository that needs `GITHUB_TOKEN`, each archived by
`archive_repo_job` and restored, then broken (wrong key, missing key, wrong token, missing
repository). Afterwards the key path and the token are searched for in everything RepoVault and
Dagster wrote: logs, captured output, the Dagster instance (events, runs, every file under it),
lineage rows, the four topics, and every object of every bucket (keys, metadata, content)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from dagster import DagsterInstance, ExecuteInProcessResult, instance_for_test
from dagster._serdes import serialize_value

from repovault_pipeline.cli import main as cli
from repovault_pipeline.core.common.identity import parse_repo_url
from repovault_pipeline.core.intake.runs import request_tags
from repovault_pipeline.core.lineage.requests import now, open_lineage
from repovault_pipeline.definitions import defs
from repovault_pipeline.partitions import repositories
from tests.conftest import missing_service
from tests.support import sshd
from tests.support.git_http_server import logged_requests
from tests.support.kafka import read_all
from tests.support.repos import ServedRepo, git
from tests.support.servers import git_http_server

TOKEN = "ghp_" + "R7vK2pQx" * 4 + "M3nB"
WRONG_TOKEN = "ghp_" + "W0ngT0kn" * 4 + "Z9yX"


@pytest.fixture
def instance(vault_env: dict[str, str]) -> Iterator[DagsterInstance]:
    with instance_for_test() as inst:
        yield inst


def archive(instance: DagsterInstance, url: str) -> tuple[ExecuteInProcessResult, str]:
    """One `archive_repo_job` run for `url`, as the injector would start it."""
    repo_id = parse_repo_url(url, ("http", "https", "ssh"), ("127.0.0.1",)).repo_id
    instance.add_dynamic_partitions(repositories.name, [repo_id])
    lineage = open_lineage(os.environ["REPOVAULT_DB_URL"])
    request_id = lineage.record_pending(url, repo_id, "cli")
    result = defs.resolve_job_def("archive_repo_job").execute_in_process(
        partition_key=repo_id,
        instance=instance,
        tags=request_tags(request_id, url, "cli", now()),
        raise_on_error=False,
    )
    return result, request_id


def restore_head(url: str, dest: Path) -> str:
    assert cli(["restore", url, str(dest)]) == 0
    return git(dest, "rev-parse", "HEAD")


def failed_with(request_id: str) -> str:
    row = open_lineage(os.environ["REPOVAULT_DB_URL"]).get(request_id)
    assert row is not None and row.status == "failed", row
    return row.error or ""


def written_everywhere(instance: DagsterInstance, run_ids: list[str], env: dict[str, str]) -> str:
    """All the text RepoVault and Dagster wrote for these runs, as one string to search."""
    parts: list[str] = []
    for run_id in run_ids:
        parts.append(serialize_value(instance.get_run_by_id(run_id)))
        parts += [serialize_value(event) for event in instance.all_logs(run_id)]
    for path in Path(instance.root_directory).rglob("*"):
        if path.is_file():
            parts.append(path.read_bytes().decode("utf-8", "replace"))
    lineage = open_lineage(env["REPOVAULT_DB_URL"])
    parts += [repr(row) for row in lineage.find(limit=100_000)]
    for topic in ("PENDING", "IN_PROGRESS", "COMPLETED", "REJECTED"):
        for record in read_all(env[f"REPOVAULT_TOPIC_{topic}"], quiet_s=0.3):
            parts.append((record.key or b"").decode("utf-8", "replace"))
            parts.append((record.value or b"").decode("utf-8", "replace"))
    s3 = boto3.client("s3", endpoint_url=env["REPOVAULT_S3_ENDPOINT"])
    buckets = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    ours = [b for b in buckets if b.startswith(env["REPOVAULT_BUCKET_PREFIX"])]
    assert ours, "nothing was archived: the scan would prove nothing"
    for bucket in ours:
        parts.append(bucket)
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                obj = s3.get_object(Bucket=bucket, Key=item["Key"])
                parts += [item["Key"], json.dumps(obj["Metadata"])]
                parts.append(obj["Body"].read().decode("utf-8", "replace"))
    return "\n".join(parts)


def assert_nowhere(secrets: list[str], written: str, captured: str) -> None:
    for secret in secrets:
        assert secret not in written, f"{secret!r} was written"
        assert secret not in captured, f"{secret!r} was logged"


# --- ssh ----------------------------------------------------------------------------------------


@pytest.fixture
def ssh_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vault_env: dict[str, str]) -> Path:
    if reason := sshd.available():
        missing_service(reason)
    # A space and a `%` in the path: ssh would split the one and expand the other.
    known_hosts = tmp_path / "state 100%" / "known hosts"
    monkeypatch.setenv("REPOVAULT_SSH_KNOWN_HOSTS", str(known_hosts))
    return known_hosts


def test_ssh_clone_with_a_key_archives_restores_and_leaks_no_key_path(
    instance: DagsterInstance,
    vault_env: dict[str, str],
    ssh_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture,
) -> None:
    keys = tmp_path / f"deploy keys %d-{uuid.uuid4().hex[:8]}"
    keys.mkdir()
    key = sshd.make_key(keys / "vault_deploy_key")
    stranger = sshd.make_key(keys / "stranger_key")
    absent = keys / "no_such_key"
    garbage = keys / "garbage_key"  # ssh names the file: Load key "PATH": error in libcrypto
    garbage.write_text("not a key\n")
    garbage.chmod(0o600)
    too_open = keys / "too_open_key"  # ssh names the file: Permissions 0644 for 'PATH'
    too_open.write_bytes(key.read_bytes())
    too_open.chmod(0o644)
    user_known_hosts = Path.home() / ".ssh" / "known_hosts"
    before = user_known_hosts.read_bytes() if user_known_hosts.exists() else None
    served = tmp_path / "ssh-served"

    with sshd.ssh_git_server(served, tmp_path / "sshd", authorized_key=key) as server:
        repo = ServedRepo(served, tmp_path / "copies", server.base_url, "octo", "private")
        head = repo.commit({"README.md": "over ssh\n", "src/a.py": "a = 1\n"})
        repo.tag("v1")
        repo.push()
        monkeypatch.setenv("REPOVAULT_SSH_KEY", str(key))

        done, _ = archive(instance, repo.url)
        assert done.success
        assert "git-upload-pack '/octo/private.git'" in server.commands()
        assert restore_head(repo.url, tmp_path / "restored") == head
        assert git(tmp_path / "restored", "tag") == "v1"
        # ssh remembered the server in REPOVAULT_SSH_KNOWN_HOSTS, not in ~/.ssh.
        assert ssh_env.read_text().split() == [
            f"[127.0.0.1]:{server.port}",
            *server.host_public_key.split(),
        ]

        missing, missing_request = archive(instance, f"{server.base_url}/octo/missing.git")
        monkeypatch.setenv("REPOVAULT_SSH_KEY", str(stranger))
        refused, refused_request = archive(instance, repo.url)
        broken = []
        for bad_key in (absent, garbage, too_open):
            monkeypatch.setenv("REPOVAULT_SSH_KEY", str(bad_key))
            broken.append(archive(instance, repo.url))

    failures = [(missing, missing_request), (refused, refused_request), *broken]
    for result, request_id in failures:
        assert not result.success
        assert "repository not found or not readable" in failed_with(request_id)
    after = user_known_hosts.read_bytes() if user_known_hosts.exists() else None
    assert after == before, "ssh wrote into the user's ~/.ssh/known_hosts"

    runs = [done.run_id, *(result.run_id for result, _ in failures)]
    captured = caplog.text + "".join(capfd.readouterr())
    paths = [str(path) for path in (key, stranger, absent, garbage, too_open)]
    written = written_everywhere(instance, runs, vault_env)
    assert head in written and missing_request in written  # the scan reads what was written
    assert_nowhere(paths, written, captured)


# --- GITHUB_TOKEN -------------------------------------------------------------------------------


def basic(token: str) -> str:
    return "Basic " + base64.b64encode(f"x-access-token:{token}".encode()).decode()


def test_github_token_goes_only_to_the_github_host_and_leaks_nowhere(
    instance: DagsterInstance,
    vault_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture,
) -> None:
    """A local server that requires the token stands in for github.com (REPOVAULT_GITHUB_API
    points at it); a second allowed server, another port on the same host, records what it
    gets."""
    private_root, other_root = tmp_path / "github", tmp_path / "other"
    github_log, other_log = tmp_path / "github.log", tmp_path / "other.log"
    with (
        git_http_server(private_root, github_log, TOKEN) as github_url,
        git_http_server(other_root, other_log) as other_url,
    ):
        monkeypatch.setenv("REPOVAULT_GITHUB_API", f"{github_url}/api/v3")
        monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
        # The stand-in serves git only, no GitHub API: forge metadata is another test's subject.
        monkeypatch.setenv("REPOVAULT_KEEP_METADATA", "off")
        private = ServedRepo(private_root, tmp_path / "copies", github_url, "octo", "private")
        head = private.commit({"secret-sauce.txt": "recipe\n"})
        private.push()
        public = ServedRepo(other_root, tmp_path / "copies", other_url, "octo", "public")
        public.commit({"README.md": "public\n"})
        public.push()

        # Without the token the stand-in refuses: the repository really is private.
        anonymous = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
        assert subprocess.run(
            ["git", "ls-remote", private.url], capture_output=True, env=anonymous
        ).returncode
        anonymous_requests = len(logged_requests(github_log))

        done, _ = archive(instance, private.url)
        assert done.success
        assert restore_head(private.url, tmp_path / "restored") == head
        public_done, _ = archive(instance, public.url)
        assert public_done.success

        missing, missing_request = archive(instance, f"{github_url}/octo/missing.git")
        monkeypatch.setenv("GITHUB_TOKEN", WRONG_TOKEN)
        refused, refused_request = archive(instance, private.url)

    github_saw, other_saw = (
        logged_requests(github_log)[anonymous_requests:],
        logged_requests(other_log),
    )
    assert github_saw and other_saw
    with_token = [r for r in github_saw if r.authorization == basic(TOKEN)]
    assert len(with_token) >= 3 and {r.path for r in with_token} >= {
        "/octo/private.git/info/refs",
        "/octo/private.git/git-upload-pack",
    }
    assert {r.authorization for r in github_saw} == {basic(TOKEN), basic(WRONG_TOKEN)}
    assert {r.authorization for r in other_saw} == {None}, "the token went to another port"

    assert not missing.success and not refused.success
    for request_id in (missing_request, refused_request):
        assert "repository not found or not readable" in failed_with(request_id)
    runs = [done.run_id, public_done.run_id, missing.run_id, refused.run_id]
    captured = caplog.text + "".join(capfd.readouterr())
    secrets = [TOKEN, WRONG_TOKEN, basic(TOKEN).split()[1], basic(WRONG_TOKEN).split()[1]]
    written = written_everywhere(instance, runs, vault_env)
    assert head in written and refused_request in written  # the scan reads what was written
    assert_nowhere(secrets, written, captured)
