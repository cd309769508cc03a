"""Object storage behind one interface (`ObjectStore`): S3/MinIO through boto3 (s3.py), or a
local folder per bucket (local_store.py).

`REPOVAULT_S3_ENDPOINT` set selects S3; unset, the local backend under `REPOVAULT_LOCAL_STORE`
keeps the same bucket and key layout on disk, so everything above this module is backend-blind.
Parallel uploads to either are upload.py's.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repovault_pipeline.core.common.settings import Settings

# boto3 clients are built at run time and carry no static type.
S3Client = Any


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One object of a listing. `etag` identifies the stored content (S3: the ETag, without
    quotes; local backend: a version tag that changes on every write); `modified` is the
    store's own clock (epoch seconds)."""

    key: str
    size: int
    etag: str = ""
    modified: float = 0.0


@dataclass(frozen=True)
class Versioned:
    """An object read with what a conditional write needs: its etag, and its age by the
    store's own clock (so writers on hosts with skewed clocks agree on expiry)."""

    data: bytes
    etag: str
    modified: float
    age_s: float


class ObjectStore(ABC):
    """The operations RepoVault needs from a bucket store; errors are Archive/TransientError."""

    @abstractmethod
    def ensure_bucket(self, bucket: str) -> None: ...

    @abstractmethod
    def list_buckets(self, prefix: str) -> list[str]: ...

    @abstractmethod
    def put_bytes(
        self,
        bucket: str,
        key: str,
        data: bytes,
        metadata: dict[str, str] | None = None,
        content_type: str = "application/octet-stream",
        if_match: str | None = None,
        if_none_match: bool = False,
    ) -> str:
        """Store `data`; return the stored object's etag. `if_match` (an etag) or
        `if_none_match` make the write conditional: PreconditionFailed when it does not hold."""

    @abstractmethod
    def put_file(
        self,
        bucket: str,
        key: str,
        path: Path,
        metadata: dict[str, str] | None = None,
        content_type: str = "application/octet-stream",
        if_match: str | None = None,
        if_none_match: bool = False,
    ) -> str:
        """Stream a file into the store (multipart when large); return the object's etag.
        Conditions as for `put_bytes`; S3's managed multipart upload takes none, so a file of
        MULTIPART_THRESHOLD or more is written unconditionally."""

    @abstractmethod
    def get_bytes(self, bucket: str, key: str) -> bytes | None:
        """The object's content, or None when there is no such bucket or key."""

    @abstractmethod
    def read(self, bucket: str, key: str) -> Versioned | None:
        """The object with its etag and age, or None when there is no such bucket or key."""

    @abstractmethod
    def stat(self, bucket: str, key: str) -> ObjectInfo | None:
        """One object's size and etag as a listing gives them (one request, whatever the
        bucket holds), or None when there is no such bucket or key."""

    @abstractmethod
    def download(self, bucket: str, key: str, dest: Path) -> None: ...

    @abstractmethod
    def list(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]: ...

    @abstractmethod
    def delete(self, bucket: str, keys: Iterable[str]) -> None: ...

    def empty_bucket(self, bucket: str) -> int:
        """Delete every object of the bucket; returns how many went. The empty bucket stays:
        the archiver's S3 policy grants no s3:DeleteBucket (a deleted bucket's name could be
        taken by someone else), and `list` skips a bucket that holds no snapshot."""
        keys = [info.key for info in self.list(bucket)]
        self.delete(bucket, keys)
        return len(keys)

    @abstractmethod
    def location(self, bucket: str) -> str:
        """Where an operator finds the bucket (URL or folder), for materialization metadata."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def open_store(settings: Settings, s3_client: S3Client | None = None) -> ObjectStore:
    """The store `settings` select: S3 at REPOVAULT_S3_ENDPOINT (through `s3_client` when the
    caller built one, e.g. Dagster's S3Resource), else the local backend."""
    # The backends import this module: imported here, once the settings chose one.
    from repovault_pipeline.core.vault.local_store import LocalStore
    from repovault_pipeline.core.vault.s3 import S3Store, ServerSideEncryption

    if settings.s3_endpoint:
        return S3Store(
            settings.s3_endpoint,
            max_connections=settings.upload_workers + 4,
            read_timeout=settings.s3_timeout_s,
            region=settings.s3_region,
            client=s3_client,
            sse=ServerSideEncryption(settings.s3_sse, settings.s3_sse_kms_key_id)
            if settings.s3_sse
            else None,
        )
    return LocalStore(settings.local_store)
