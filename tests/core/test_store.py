"""The object stores against real servers: the parallel uploader's bounds, conditional writes
(S3 and local backend alike), etags in listings, and how S3 failures are classified."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from repovault_pipeline.core.common.errors import ArchiveError, PreconditionFailed, TransientError
from repovault_pipeline.core.vault.local_store import LocalStore
from repovault_pipeline.core.vault.s3 import S3Store
from repovault_pipeline.core.vault.store import ObjectStore
from repovault_pipeline.core.vault.upload import ParallelUploader, UploadProgress
from tests.support.s3_errors import FailingS3
from tests.support.tcp_proxy import BreakableProxy


@pytest.fixture(params=["s3", "local"])
def store(request: pytest.FixtureRequest, vault_env: dict[str, str]) -> ObjectStore:
    if request.param == "s3":
        return S3Store(vault_env["REPOVAULT_S3_ENDPOINT"])
    return LocalStore(Path(vault_env["REPOVAULT_LOCAL_STORE"]))


@pytest.fixture
def bucket(store: ObjectStore, vault_env: dict[str, str]) -> str:
    name = f"{vault_env['REPOVAULT_BUCKET_PREFIX']}store"
    store.ensure_bucket(name)
    return name


@pytest.fixture
def slow_s3(vault_env: dict[str, str]) -> Iterator[BreakableProxy]:
    """The S3 server behind a slow link: uploads pile up behind the upload threads."""
    proxy = BreakableProxy(int(vault_env["REPOVAULT_S3_ENDPOINT"].rsplit(":", 1)[1]))
    proxy.chunk, proxy.delay_s = 8192, 0.01
    yield proxy
    proxy.close()


def test_uploads_wait_for_room_and_every_object_arrives(
    vault_env: dict[str, str], slow_s3: BreakableProxy
) -> None:
    store = S3Store(slow_s3.endpoint)
    bucket = f"{vault_env['REPOVAULT_BUCKET_PREFIX']}uploader"
    store.ensure_bucket(bucket)
    budget = 64 * 1024
    uploader = ParallelUploader(
        store, bucket, workers=2, max_inflight_bytes=budget, max_inflight_uploads=8
    )
    payloads = {f"k/{i:03}": os.urandom(20_000 + i) for i in range(40)}
    queued, most_pending, most_bytes = 0, 0, 0
    for key, data in payloads.items():
        uploader.put_bytes(key, data)
        queued += len(data)
        most_pending = max(most_pending, len(uploader.pending))
        # Bytes handed over minus bytes the store acknowledged: at most what is held in memory.
        most_bytes = max(most_bytes, queued - uploader.bytes)

    assert uploader.wait() == sum(len(data) for data in payloads.values())
    assert most_pending <= 8 and not uploader.pending
    assert budget / 2 < most_bytes <= budget  # the byte budget was reached, never passed
    listed = {info.key: info for info in store.list(bucket, "k/")}
    assert {key: info.size for key, info in listed.items()} == {
        key: len(data) for key, data in payloads.items()
    }
    assert {key: info.etag for key, info in listed.items()} == uploader.etags
    assert all(
        uploader.etags[key] == hashlib.md5(data).hexdigest() for key, data in payloads.items()
    )


def test_upload_progress_is_throttled_and_reads_back(vault_env: dict[str, str]) -> None:
    """A report per `every_s` at most: none at all within an hour, one per object at 0; the
    line a report logs reads back as the same progress (what `submit --wait` shows)."""
    store = LocalStore(Path(vault_env["REPOVAULT_LOCAL_STORE"]))
    bucket = f"{vault_env['REPOVAULT_BUCKET_PREFIX']}progress"
    store.ensure_bucket(bucket)
    heard: dict[float, list[UploadProgress]] = {3600: [], 0: []}
    for every_s, reports in heard.items():
        uploader = ParallelUploader(
            store, bucket, workers=1, progress=reports.append, every_s=every_s
        )
        uploader.expect(4, 4 * 1500)
        for n in range(4):
            uploader.put_bytes(f"p/{n}", b"x" * 1500)
        uploader.wait()
    assert heard[3600] == []
    assert [(p.files, p.files_total, p.bytes, p.bytes_total) for p in heard[0]] == [
        (n, 4, n * 1500, 6000) for n in range(1, 5)
    ]
    assert heard[0][1].line() == "uploaded 2/4 files, 2.9 KB/5.9 KB"
    big = UploadProgress(120, 480, 35 * 1024**2, 140 * 1024**2)
    assert big.line() == "uploaded 120/480 files, 35.0 MB/140.0 MB"
    assert UploadProgress.parse(big.line()) == big
    assert UploadProgress.parse("uploaded the bundle") is None


def test_conditional_writes_and_versions(store: ObjectStore, bucket: str) -> None:
    first = store.put_bytes(bucket, "lease.json", b"one", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.put_bytes(bucket, "lease.json", b"two", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.put_bytes(bucket, "lease.json", b"two", if_match="not-the-etag")
    assert store.get_bytes(bucket, "lease.json") == b"one"

    second = store.put_bytes(bucket, "lease.json", b"two", if_match=first)
    assert second != first
    with pytest.raises(PreconditionFailed):  # the etag read before the last write is stale
        store.put_bytes(bucket, "lease.json", b"three", if_match=first)
    found = store.read(bucket, "lease.json")
    assert (found.data, found.etag) == (b"two", second)
    assert 0 <= found.age_s < 600
    [listed] = [i for i in store.list(bucket) if i.key == "lease.json"]
    assert listed.etag == second and listed.size == 3
    assert abs(listed.modified - found.modified) < 1.0
    # The same content written again is a new version on the local backend and the same
    # digest on S3: either way the etag the listing shows is the one the write returned.
    again = store.put_bytes(bucket, "lease.json", b"two")
    assert [i.etag for i in store.list(bucket) if i.key == "lease.json"] == [again]
    assert store.read(bucket, "absent.json") is None


def test_put_file_returns_the_listed_etag(store: ObjectStore, bucket: str, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    etag = store.put_file(bucket, "tree/big.bin", big)
    [listed] = list(store.list(bucket, "tree/"))
    assert listed.etag == etag and listed.size == big.stat().st_size
    dest = tmp_path / "back.bin"
    store.download(bucket, "tree/big.bin", dest)
    assert dest.read_bytes() == big.read_bytes()


# -- how S3 failures are classified: worth a retry (transient) or not (permanent) -------------


def test_refusals_of_the_s3_server_are_permanent(vault_env: dict[str, str], tmp_path: Path) -> None:
    store = S3Store(vault_env["REPOVAULT_S3_ENDPOINT"])
    missing = f"{vault_env['REPOVAULT_BUCKET_PREFIX']}never-created"
    with pytest.raises(ArchiveError, match="NoSuchBucket") as put:
        store.put_bytes(missing, "k", b"data")
    assert not isinstance(put.value, TransientError)
    small = tmp_path / "f"
    small.write_bytes(b"x" * 100)
    with pytest.raises(ArchiveError, match="NoSuchBucket") as managed:
        store.put_file(missing, "k", small)  # boto3's managed upload wraps the error
    assert not isinstance(managed.value, TransientError)
    with pytest.raises(ArchiveError, match="InvalidBucketName") as bad_name:
        store.ensure_bucket("ab")
    assert not isinstance(bad_name.value, TransientError)


@pytest.mark.parametrize(
    ("status", "code", "transient"),
    [
        (500, "InternalError", True),
        (503, "SlowDown", True),
        (503, "ServiceUnavailable", True),
        (403, "AccessDenied", False),
        (400, "InvalidArgument", False),
    ],
)
def test_server_answers_are_classified(
    vault_env: dict[str, str], status: int, code: str, transient: bool
) -> None:
    server = FailingS3(status, code)
    try:
        store = S3Store(server.endpoint)
        with pytest.raises(ArchiveError, match=code) as caught:
            store.put_bytes("repo-bucket", "k", b"data")
        assert isinstance(caught.value, TransientError) is transient
        assert server.requests >= 1
    finally:
        server.close()


def test_a_server_that_never_answers_is_a_transient_timeout(vault_env: dict[str, str]) -> None:
    server = FailingS3(None)
    try:
        store = S3Store(server.endpoint, read_timeout=1)
        with pytest.raises(TransientError, match="ReadTimeoutError"):
            store.put_bytes("repo-bucket", "k", b"data")
        assert server.requests >= 1
    finally:
        server.close()


def test_a_connection_cut_mid_request_is_transient(vault_env: dict[str, str]) -> None:
    port = int(vault_env["REPOVAULT_S3_ENDPOINT"].rsplit(":", 1)[1])
    proxy = BreakableProxy(port, break_after=1_000)
    try:
        store = S3Store(proxy.endpoint)
        with pytest.raises(TransientError, match="S3 upload k failed"):
            store.put_bytes(f"{vault_env['REPOVAULT_BUCKET_PREFIX']}cut", "k", os.urandom(50_000))
        assert proxy.broken
    finally:
        proxy.close()
