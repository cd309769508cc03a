"""The MinIO policy of docker-compose.yml, enforced by a real S3 server: RepoVault archives,
re-archives (retention, deleted files), lists and restores with nothing but that policy, and is
refused everything outside its buckets.

The S3 server is moto in server mode with IAM enforcement switched on (its `reset-auth` API),
started for this test alone: the policy is the one Compose resolves for minio-init, for the
bucket prefix of .env.example.

Listing a bucket, with or without a prefix, is authorized by `s3:ListBucket` on the bucket's
ARN: so AWS documents it, and so MinIO enforces it (cmd/bucket-listobjects-handlers.go,
ListObjectsV2Handler: `checkRequestAuthType(ctx, r, policy.ListBucketAction, bucket, "")`, the
prefix playing no part). moto 5.2.6 authorizes every S3 request by its API operation name
instead (`BaseResponse._get_action` returns the botocore operation, so a listing needs
`s3:ListObjectsV2`, an action no IAM policy can grant on AWS): it refuses the archiver's first
listing while MinIO accepts it. That is moto's bug, not the policy's; the lock keeps moto at
5.2.5 and setup.py excludes 5.2.6. `test_a_listing_is_authorized_by_list_bucket` names it if a
later moto repeats it.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError
from dagster import instance_for_test

from repovault_pipeline.cli import main as cli
from repovault_pipeline.core.common.identity import parse_repo_url
from repovault_pipeline.core.intake.runs import request_tags
from repovault_pipeline.core.lineage.requests import now, open_lineage
from repovault_pipeline.definitions import defs
from repovault_pipeline.partitions import repositories
from tests.support.compose import load_project, read_env_file
from tests.support.repos import ServedRepo, git
from tests.support.servers import s3_server

ROOT = Path(__file__).resolve().parents[2]
ENV_EXAMPLE = read_env_file(ROOT / ".env.example")


def compose_policy() -> dict:
    project = load_project([ROOT / "docker-compose.yml"], ENV_EXAMPLE, ROOT)
    return json.loads(project["services"]["minio-init"]["environment"]["REPOVAULT_S3_POLICY"])


def as_moto_checks_it(policy: dict) -> dict:
    """The same grants in the names moto checks, where it departs from AWS and MinIO: it
    authorizes HeadBucket as `s3:HeadBucket` (AWS, MinIO: `s3:ListBucket`) and DeleteObjects
    against the bucket's ARN (AWS, MinIO: each object's ARN). Nothing else is added."""
    statements = []
    for statement in policy["Statement"]:
        statement = {**statement, "Action": list(statement["Action"])}
        if "s3:ListBucket" in statement["Action"]:
            statement["Action"].append("s3:HeadBucket")
        if "s3:DeleteObject" in statement["Action"]:
            buckets = [r.removesuffix("/*") for r in statement["Resource"] if r.endswith("/*")]
            statements.append(
                {"Effect": "Allow", "Action": ["s3:DeleteObject"], "Resource": buckets}
            )
        statements.append(statement)
    return {**policy, "Statement": statements}


@pytest.fixture
def archiver_keys(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """(endpoint, access key, secret key) of a user holding only the compose policy, on an S3
    server that enforces it; a bucket of someone else's exists there."""
    with s3_server(tmp_path / "moto-iam.log") as endpoint:
        admin = {"endpoint_url": endpoint, "region_name": "us-east-1"}
        admin |= {"aws_access_key_id": "admin", "aws_secret_access_key": "admin"}
        boto3.client("s3", **admin).create_bucket(Bucket="payroll")
        boto3.client("s3", **admin).put_object(Bucket="payroll", Key="2026.csv", Body=b"x")
        iam = boto3.client("iam", **admin)
        user = ENV_EXAMPLE["REPOVAULT_S3_ACCESS_KEY"]
        iam.create_user(UserName=user)
        iam.put_user_policy(
            UserName=user,
            PolicyName="repovault-archiver",
            PolicyDocument=json.dumps(as_moto_checks_it(compose_policy())),
        )
        key = iam.create_access_key(UserName=user)["AccessKey"]
        # From here on every request must be signed by a user whose policy allows it.
        requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
        yield endpoint, key["AccessKeyId"], key["SecretAccessKey"]


def archive(url: str) -> bool:
    ref = parse_repo_url(url, ("http",), ("127.0.0.1",))
    lineage = open_lineage(os.environ["REPOVAULT_DB_URL"])
    request_id = lineage.record_pending(url, ref.repo_id, "cli")
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(repositories.name, [ref.repo_id])
        result = defs.resolve_job_def("archive_repo_job").execute_in_process(
            partition_key=ref.repo_id,
            instance=instance,
            tags=request_tags(request_id, url, "cli", now()),
            raise_on_error=False,
        )
    row = lineage.get(request_id)
    assert row is not None
    return result.success and row.status == "completed"


def archiver_client(endpoint: str, access_key: str, secret_key: str):
    """boto3 as the archiver: its own keys, no retries (a refusal is seen at once)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}),
    )


def denied(call: Callable[[], object]) -> bool:
    try:
        call()
    except ClientError as exc:
        return exc.response["Error"]["Code"] in ("AccessDenied", "403")
    return False


def test_a_listing_is_authorized_by_list_bucket(archiver_keys: tuple[str, str, str]) -> None:
    """What MinIO checks for ListObjects(V2) with and without a prefix: s3:ListBucket on the
    bucket, which the compose policy grants on the archiver's buckets."""
    s3 = archiver_client(*archiver_keys)
    bucket = f"{ENV_EXAMPLE['REPOVAULT_BUCKET_PREFIX']}listing-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="lfs/0123", Body=b"x")
    for listing in ({}, {"Prefix": "lfs/"}, {"Prefix": "snapshots/", "Delimiter": "/"}):
        try:
            s3.list_objects_v2(Bucket=bucket, **listing)
        except ClientError as exc:
            raise AssertionError(
                f"the S3 server refuses ListObjectsV2 {listing} that s3:ListBucket allows on "
                "MinIO and AWS; moto 5.2.6 authorizes by operation name (s3:ListObjectsV2): "
                "keep moto at 5.2.5 (see this module)"
            ) from exc
    assert denied(lambda: s3.list_objects_v2(Bucket="payroll", Prefix="2026"))


def test_the_archiver_policy_is_enough_to_archive_list_and_restore_and_no_more(
    vault_env: dict[str, str],
    archiver_keys: tuple[str, str, str],
    make_repo: Callable[..., ServedRepo],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    endpoint, access_key, secret_key = archiver_keys
    prefix = ENV_EXAMPLE["REPOVAULT_BUCKET_PREFIX"]
    for name, value in {
        "REPOVAULT_S3_ENDPOINT": endpoint,
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret_key,
        "REPOVAULT_BUCKET_PREFIX": prefix,
        "REPOVAULT_KEEP_SNAPSHOTS": "1",
    }.items():
        monkeypatch.setenv(name, value)
    repo = make_repo("guarded")
    repo.commit({"README.md": "v1\n", "old.txt": "goes away\n"})
    repo.push()
    assert archive(repo.url)
    # Second snapshot: a file deleted, a large one added; the first snapshot falls to retention.
    head = repo.commit({"old.txt": None, "big.bin": bytes(range(256)) * 5000})
    repo.push()
    assert archive(repo.url)

    assert cli(["list"]) == 0
    listed = capsys.readouterr().out
    repo_id = repo.url.removeprefix("http://").removesuffix(".git")
    assert repo_id in listed and f" {prefix}" in listed
    assert cli(["restore", repo.url, str(tmp_path / "restored")]) == 0
    assert git(tmp_path / "restored", "rev-parse", "HEAD") == head

    s3 = archiver_client(endpoint, access_key, secret_key)
    (ours,) = [b["Name"] for b in s3.list_buckets()["Buckets"] if b["Name"].startswith(prefix)]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=ours)["Contents"]]
    assert "tree/big.bin" in keys and "tree/old.txt" not in keys
    assert len({k.split("/")[1] for k in keys if k.startswith("snapshots/")}) == 1
    # Outside its buckets, and on its buckets themselves, the archiver may do nothing else.
    assert denied(lambda: s3.get_object(Bucket="payroll", Key="2026.csv"))
    assert denied(lambda: s3.put_object(Bucket="payroll", Key="x", Body=b"x"))
    assert denied(lambda: s3.list_objects_v2(Bucket="payroll"))
    assert denied(lambda: s3.create_bucket(Bucket="not-repovault"))
    assert denied(lambda: s3.delete_bucket(Bucket=ours))
    # A RepoVault pointed at other buckets is told so in one line.
    monkeypatch.setenv("REPOVAULT_BUCKET_PREFIX", "payroll-")
    assert cli(["restore", repo.url, str(tmp_path / "elsewhere")]) == 1
    err = capsys.readouterr().err
    assert "refused RepoVault's credentials (AccessDenied)" in err and err.count("\n") == 1
