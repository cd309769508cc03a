"""Server-side encryption (REPOVAULT_S3_SSE): every write asks for it, the server's answer
proves it, and a server that cannot honour it is refused in one line with nothing left behind.
moto honours and echoes SSE; a server that ignores it is moto behind a proxy that drops the
SSE headers (`tests.support.sse_proxy`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
from boto3.s3.transfer import TransferConfig

from repovault_pipeline.core.common.errors import TransientError
from repovault_pipeline.core.common.settings import ConfigError, Settings
from repovault_pipeline.core.vault.s3 import S3Store, ServerSideEncryption, SseRefused
from tests.support.archiving import archive
from tests.support.repos import ServedRepo
from tests.support.s3_errors import FailingS3
from tests.support.sse_proxy import SseDroppingProxy

KMS = ServerSideEncryption("aws:kms", "repovault-test-key")


@pytest.fixture
def ignoring_sse(vault_env: dict[str, str]) -> Iterator[SseDroppingProxy]:
    proxy = SseDroppingProxy(vault_env["REPOVAULT_S3_ENDPOINT"])
    yield proxy
    proxy.close()


def s3(endpoint: str) -> boto3.client:
    return boto3.client("s3", endpoint_url=endpoint)


def test_every_object_of_an_archive_is_encrypted_as_asked(
    vault_env: dict[str, str], make_repo: Callable[..., ServedRepo], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPOVAULT_S3_SSE", "aws:kms")
    monkeypatch.setenv("REPOVAULT_S3_SSE_KMS_KEY_ID", KMS.kms_key_id or "")
    repo = make_repo("sse")
    repo.commit({"a.txt": "a\n", "docs/b.md": "b\n"})
    repo.push()
    result = archive(repo)
    client = s3(vault_env["REPOVAULT_S3_ENDPOINT"])
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=result.bucket)["Contents"]]
    assert {"latest.json", "tree/a.txt", f"snapshots/{result.snapshot_id}/repo.bundle"} <= set(keys)
    for key in keys:
        head = client.head_object(Bucket=result.bucket, Key=key)
        assert (head.get("ServerSideEncryption"), head.get("SSEKMSKeyId")) == (
            "aws:kms",
            KMS.kms_key_id,
        ), key


def test_a_multipart_upload_asks_for_encryption_too(
    vault_env: dict[str, str], tmp_path: Path
) -> None:
    store = S3Store(vault_env["REPOVAULT_S3_ENDPOINT"], sse=ServerSideEncryption("AES256"))
    store.transfer = TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20)
    bucket = f"{vault_env['REPOVAULT_BUCKET_PREFIX']}multipart"
    store.ensure_bucket(bucket)
    big = tmp_path / "big"
    big.write_bytes(os.urandom(6 << 20))
    etag = store.put_file(bucket, "big", big)
    assert etag.endswith("-2")  # two parts: CreateMultipartUpload carried the SSE parameters
    head = s3(vault_env["REPOVAULT_S3_ENDPOINT"]).head_object(Bucket=bucket, Key="big")
    assert head["ServerSideEncryption"] == "AES256"


def test_a_server_that_ignores_sse_is_refused_and_nothing_stays(
    vault_env: dict[str, str],
    make_repo: Callable[..., ServedRepo],
    monkeypatch: pytest.MonkeyPatch,
    ignoring_sse: SseDroppingProxy,
) -> None:
    monkeypatch.setenv("REPOVAULT_S3_ENDPOINT", ignoring_sse.endpoint)
    monkeypatch.setenv("REPOVAULT_S3_SSE", "AES256")
    repo = make_repo("ignored")
    repo.commit({"secret.txt": "plain words\n"})
    repo.push()
    with pytest.raises(SseRefused) as refused:
        archive(repo)
    line = str(refused.value)
    assert "\n" not in line
    assert "REPOVAULT_S3_SSE=AES256" in line and "no encryption" in line
    assert "unset REPOVAULT_S3_SSE" in line
    assert ignoring_sse.dropped == 1  # the first write showed it; none followed
    client = s3(vault_env["REPOVAULT_S3_ENDPOINT"])
    buckets = [b["Name"] for b in client.list_buckets()["Buckets"]]
    ours = [b for b in buckets if b.startswith(vault_env["REPOVAULT_BUCKET_PREFIX"])]
    assert ours, "the bucket was created"
    assert all(client.list_objects_v2(Bucket=b).get("KeyCount") == 0 for b in ours)


def test_a_server_that_rejects_sse_requests_is_not_retried(vault_env: dict[str, str]) -> None:
    """MinIO without a KMS answers an aws:kms write with 501 NotImplemented: a setting the
    server cannot honour, not a passing fault."""
    server = FailingS3(501, "NotImplemented")
    try:
        store = S3Store(server.endpoint, sse=KMS)
        with pytest.raises(SseRefused) as refused:
            store.put_bytes("bucket", "key", b"data")
    finally:
        server.close()
    assert not isinstance(refused.value, TransientError)
    assert "REPOVAULT_S3_SSE=aws:kms (key repovault-test-key)" in str(refused.value)


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"REPOVAULT_S3_SSE": "aes"}, "REPOVAULT_S3_SSE='aes' is not one of AES256, aws:kms"),
        ({"REPOVAULT_S3_SSE_KMS_KEY_ID": "k"}, "REPOVAULT_S3_SSE is not aws:kms"),
        ({"REPOVAULT_S3_SSE": "aws:kms", "REPOVAULT_S3_ENDPOINT": ""}, "needs an S3 store"),
    ],
)
def test_sse_settings_that_cannot_be_honoured_are_refused(env: dict[str, str], said: str) -> None:
    with pytest.raises(ConfigError, match=said):
        Settings.from_env({"REPOVAULT_S3_ENDPOINT": "http://s3", **env})
