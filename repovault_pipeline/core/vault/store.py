"""Object storage behind one interface: S3/MinIO through boto3, or a local folder per bucket.

`REPOVAULT_S3_ENDPOINT` set selects S3; unset, the local backend under `REPOVAULT_LOCAL_STORE`
keeps the same bucket and key layout on disk, so everything above this module is backend-blind.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import shutil
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)

from repovault_pipeline.core.common.errors import ArchiveError, PreconditionFailed, TransientError
from repovault_pipeline.core.common.settings import S3_TIMEOUT_S, Settings

log = logging.getLogger(__name__)

# boto3 clients are built at run time and carry no static type.
S3Client = Any

MULTIPART_THRESHOLD = 64 * 1024 * 1024
MULTIPART_CHUNK = 16 * 1024 * 1024
S3_ATTEMPTS = 3  # botocore's standard retries: a request is tried this often in all
S3_CONNECT_TIMEOUT_S = 10
_TRANSIENT_CODES = {
    "SlowDown",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
    "Throttling",
    "ThrottlingException",
    "503",
    "500",
}
# A conditional write that lost: 412, or 409 when S3 saw two conditional writes at once.
_PRECONDITION_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "412"}
# Client-side errors that no retry fixes: a malformed request, missing credentials.
_PERMANENT_CLIENT_ERRORS = (ParamValidationError, NoCredentialsError, PartialCredentialsError)


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


@dataclass(frozen=True)
class ServerSideEncryption:
    """REPOVAULT_S3_SSE (`AES256` or `aws:kms`) and REPOVAULT_S3_SSE_KMS_KEY_ID: asked of every
    write, and checked in the server's answer (a server that ignores the request stores the
    object in the clear and says nothing, unless its answer is read)."""

    mode: str
    kms_key_id: str | None = None

    def request(self) -> dict[str, str]:
        """The parameters of a PutObject, CreateMultipartUpload or CopyObject."""
        asked = {"ServerSideEncryption": self.mode}
        if self.kms_key_id:
            asked["SSEKMSKeyId"] = self.kms_key_id
        return asked

    def refusal(self, answer: dict) -> str | None:
        """Why the server's answer (of a write or a HEAD) shows the object is not encrypted as
        asked; None when it is."""
        got = answer.get("ServerSideEncryption")
        if got != self.mode:
            return f"it answered {'encryption ' + got if got else 'no encryption'}"
        key = answer.get("SSEKMSKeyId")
        if self.kms_key_id and key and not key.endswith(self.kms_key_id):
            return f"it used KMS key {key}"
        return None

    def setting(self) -> str:
        key = f" (key {self.kms_key_id})" if self.kms_key_id else ""
        return f"REPOVAULT_S3_SSE={self.mode}{key}"


_SSE_ADVICE = (
    "enable server-side encryption on the server (MinIO: MINIO_KMS_SECRET_KEY or KES; AWS: a "
    "KMS key this writer may use) or unset REPOVAULT_S3_SSE"
)


class SseRefused(ArchiveError):
    """The server did not encrypt an object as REPOVAULT_S3_SSE asks: nothing more is written."""


def s3_client_config(max_connections: int = 20, read_timeout: float = S3_TIMEOUT_S) -> Config:
    """What RepoVault needs of a boto3 S3 client: a connection per upload worker, path-style
    addressing (MinIO), bounded timeouts and botocore's standard retries.

    `read_timeout` (REPOVAULT_S3_TIMEOUT_S) bounds each socket read or send, not a transfer: a
    multi-GB bundle streams in 16 MB parts for as long as bytes keep moving, while a server that
    accepts connections and never answers ends the request after 3 attempts of that long."""
    return Config(
        max_pool_connections=max_connections,
        retries={"max_attempts": S3_ATTEMPTS, "mode": "standard"},
        s3={"addressing_style": "path"},
        connect_timeout=min(S3_CONNECT_TIMEOUT_S, read_timeout),
        read_timeout=read_timeout,
    )


@contextmanager
def _s3_errors(action: str) -> Iterator[None]:
    """boto3 errors as RepoVault errors: connection trouble, timeouts, throttling and 5xx are
    worth a retry (TransientError); refusals (403, 404 NoSuchBucket, 400) are not."""
    try:
        yield
    except ClientError as exc:
        raise _classify_client_error(action, exc) from exc
    except S3UploadFailedError as exc:
        # boto3's managed upload wraps the ClientError it got; classify that one.
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, ClientError):
            raise _classify_client_error(action, cause) from exc
        raise TransientError(f"S3 {action} failed: {exc}") from exc
    except _PERMANENT_CLIENT_ERRORS as exc:
        raise ArchiveError(f"S3 {action} failed: {type(exc).__name__}: {exc}") from exc
    except (BotoCoreError, ConnectionError, OSError) as exc:
        raise TransientError(f"S3 {action} failed: {type(exc).__name__}: {exc}") from exc


def _classify_client_error(action: str, exc: ClientError) -> ArchiveError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    message = f"S3 {action} failed: {code} {error.get('Message', '')}".strip()
    if code in _PRECONDITION_CODES or status == 412:
        return PreconditionFailed(message)
    if code in _TRANSIENT_CODES or status >= 500 or status == 429:
        return TransientError(message)
    return ArchiveError(message)


def _etag(raw: str) -> str:
    return raw.strip('"')


def _conditions(if_match: str | None, if_none_match: bool) -> dict[str, str]:
    """The headers of a conditional PUT: If-Match an etag, or If-None-Match: * (no object)."""
    conditions: dict[str, str] = {}
    if if_match is not None:
        conditions["IfMatch"] = f'"{if_match}"'
    if if_none_match:
        conditions["IfNoneMatch"] = "*"
    return conditions


class S3Store(ObjectStore):
    """S3 or MinIO through a boto3 client: the caller's (`client`), else one of our own whose
    credentials come from boto3's standard chain (AWS_* variables, profiles, instance roles)."""

    def __init__(
        self,
        endpoint: str,
        max_connections: int = 20,
        read_timeout: float = S3_TIMEOUT_S,
        region: str = "us-east-1",
        client: S3Client | None = None,
        sse: ServerSideEncryption | None = None,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.region = region
        self.sse = sse
        self._sse_checked: set[str] = set()  # buckets whose server encrypted a write as asked
        self._sse_refused: SseRefused | None = None
        self.client = client or boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            config=s3_client_config(max_connections, read_timeout),
        )
        self.transfer = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD,
            multipart_chunksize=MULTIPART_CHUNK,
            max_concurrency=4,
        )

    def ensure_bucket(self, bucket: str) -> None:
        with _s3_errors(f"create bucket {bucket}"):
            try:
                self.client.head_bucket(Bucket=bucket)
                return
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in (
                    "404",
                    "NoSuchBucket",
                    "NotFound",
                ):
                    raise
            kwargs: dict[str, object] = {"Bucket": bucket}
            if self.region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
            try:
                self.client.create_bucket(**kwargs)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                    raise

    def list_buckets(self, prefix: str) -> list[str]:
        with _s3_errors("list buckets"):
            names = [b["Name"] for b in self.client.list_buckets().get("Buckets", [])]
        return sorted(n for n in names if n.startswith(prefix))

    def put_bytes(
        self,
        bucket,
        key,
        data,
        metadata=None,
        content_type="application/octet-stream",
        if_match=None,
        if_none_match=False,
    ):
        with self._sse_errors(), _s3_errors(f"upload {key}"):
            response = self.client.put_object(
                Bucket=bucket,
                Key=key,
                Body=data,
                Metadata=metadata or {},
                ContentType=content_type,
                **_conditions(if_match, if_none_match),
                **self._encryption(),
            )
        self._check_sse(bucket, key, response)
        return _etag(response["ETag"])

    def put_file(
        self,
        bucket,
        key,
        path,
        metadata=None,
        content_type="application/octet-stream",
        if_match=None,
        if_none_match=False,
    ):
        if (if_match or if_none_match) and path.stat().st_size < MULTIPART_THRESHOLD:
            with path.open("rb") as body:  # one conditional PUT, streamed from the file
                return self.put_bytes(
                    bucket, key, body, metadata, content_type, if_match, if_none_match
                )
        with self._sse_errors(), _s3_errors(f"upload {key}"):
            self.client.upload_file(
                str(path),
                bucket,
                key,
                Config=self.transfer,
                # Passed to PutObject or CreateMultipartUpload, whichever the size calls for.
                ExtraArgs={
                    "Metadata": metadata or {},
                    "ContentType": content_type,
                    **self._encryption(),
                },
            )
            # The managed transfer does not return the ETag (a multipart one is not an MD5).
            head = self.client.head_object(Bucket=bucket, Key=key)
        self._check_sse(bucket, key, head)
        return _etag(head["ETag"])

    def _encryption(self) -> dict[str, str]:
        """The SSE parameters of a write; raises the refusal once a write was not encrypted."""
        if self._sse_refused is not None:
            raise self._sse_refused
        return self.sse.request() if self.sse else {}

    def _check_sse(self, bucket: str, key: str, answer: dict) -> None:
        """The first write to each bucket proves the server honours REPOVAULT_S3_SSE (its
        answer names the encryption it applied); when it does not, the object just written is
        deleted again and every later write of this store is refused unsent."""
        if self.sse is None or bucket in self._sse_checked:
            return
        why = self.sse.refusal(answer)
        if why is None:
            self._sse_checked.add(bucket)
            return
        self._sse_refused = SseRefused(
            f"the S3 server at {self.endpoint} did not encrypt {key} in {bucket} although "
            f"{self.sse.setting()} asks it to ({why}); {_SSE_ADVICE}; nothing further is written"
        )
        with suppress(ArchiveError), _s3_errors(f"delete {key}"):
            self.client.delete_object(Bucket=bucket, Key=key)
        raise self._sse_refused

    @contextmanager
    def _sse_errors(self) -> Iterator[None]:
        """A write refused for its SSE parameters (MinIO without a KMS answers 501
        NotImplemented, AWS an unknown key KMS.NotFoundException) is no transient fault: one
        line naming the setting, never retried."""
        try:
            yield
        except ArchiveError as exc:
            text = str(exc).lower()
            if self.sse is not None and any(w in text for w in ("kms", "encrypt", "notimpl")):
                raise SseRefused(
                    f"the S3 server at {self.endpoint} refused a write with {self.sse.setting()}"
                    f" ({exc}); {_SSE_ADVICE}"
                ) from None
            raise

    def get_bytes(self, bucket, key):
        found = self.read(bucket, key)
        return found.data if found else None

    def read(self, bucket, key):
        with _s3_errors(f"read {key}"):
            try:
                response = self.client.get_object(Bucket=bucket, Key=key)
                data = response["Body"].read()
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in (
                    "NoSuchKey",
                    "NoSuchBucket",
                    "404",
                ):
                    return None
                raise
        modified = response["LastModified"].timestamp()
        date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        try:
            now = parsedate_to_datetime(date).timestamp()  # the server's clock, like `modified`
        except (TypeError, ValueError):
            now = time.time()
        return Versioned(data, _etag(response["ETag"]), modified, max(0.0, now - modified))

    def download(self, bucket, key, dest):
        with _s3_errors(f"download {key}"):
            self.client.download_file(bucket, key, str(dest), Config=self.transfer)

    def list(self, bucket, prefix=""):
        with _s3_errors(f"list {bucket}/{prefix}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix
            )
            try:
                for page in pages:
                    for item in page.get("Contents", []):
                        yield ObjectInfo(
                            item["Key"],
                            item["Size"],
                            _etag(item.get("ETag", "")),
                            item["LastModified"].timestamp(),
                        )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "NoSuchBucket":
                    raise

    def delete(self, bucket, keys):
        batch = list(keys)
        for start in range(0, len(batch), 1000):
            chunk = [{"Key": k} for k in batch[start : start + 1000]]
            with _s3_errors(f"delete from {bucket}"):
                response = self.client.delete_objects(
                    Bucket=bucket, Delete={"Objects": chunk, "Quiet": True}
                )
            if response.get("Errors"):
                first = response["Errors"][0]
                raise ArchiveError(f"S3 delete of {first.get('Key')} failed: {first.get('Code')}")

    def location(self, bucket):
        return f"{self.endpoint}/{bucket}"


class LocalStore(ObjectStore):
    """Buckets as folders: writes land in a temporary file and are renamed into place.

    An object's etag is a version tag (modification time in nanoseconds, inode, size) that every
    write changes, since each write is a new file stamped with the current time; conditional
    writes hold an exclusive lock on the bucket's lock file while they compare and rename.
    """

    _INCOMING = ".incoming"
    _LOCKS = ".locks"

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def _path(self, bucket: str, key: str = "") -> Path:
        parts = key.split("/") if key else []
        if bucket.startswith(".") or "/" in bucket or any(p in ("", ".", "..") for p in parts):
            raise ArchiveError(
                f"refusing object key {key!r} in bucket {bucket!r}: not a plain path"
            )
        return self.root.joinpath(bucket, *parts)

    def ensure_bucket(self, bucket):
        self._path(bucket).mkdir(parents=True, exist_ok=True)

    def list_buckets(self, prefix):
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and p.name.startswith(prefix)
        )

    @contextmanager
    def _atomic(
        self, bucket: str, key: str, if_match: str | None = None, if_none_match: bool = False
    ) -> Iterator[Path]:
        target = self._path(bucket, key)
        incoming = self.root / self._INCOMING
        incoming.mkdir(parents=True, exist_ok=True)
        tmp = incoming / uuid.uuid4().hex
        try:
            yield tmp
            os.utime(tmp, ns=(time.time_ns(), time.time_ns()))  # a fresh version tag
            target.parent.mkdir(parents=True, exist_ok=True)
            if if_match is None and not if_none_match:
                os.replace(tmp, target)
                return
            with self._bucket_lock(bucket):
                current = _version(target)
                if (if_none_match and current is not None) or (
                    if_match is not None and current != if_match
                ):
                    raise PreconditionFailed(
                        f"conditional write of {key} in {bucket} failed: the object changed"
                    )
                os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    @contextmanager
    def _bucket_lock(self, bucket: str) -> Iterator[None]:
        locks = self.root / self._LOCKS
        locks.mkdir(parents=True, exist_ok=True)
        with (locks / bucket).open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def put_bytes(
        self,
        bucket,
        key,
        data,
        metadata=None,
        content_type="application/octet-stream",
        if_match=None,
        if_none_match=False,
    ):
        with self._atomic(bucket, key, if_match, if_none_match) as tmp:
            tmp.write_bytes(data)
            _set_xattrs(tmp, metadata)
        return _version(self._path(bucket, key)) or ""

    def put_file(
        self,
        bucket,
        key,
        path,
        metadata=None,
        content_type="application/octet-stream",
        if_match=None,
        if_none_match=False,
    ):
        with self._atomic(bucket, key, if_match, if_none_match) as tmp:
            shutil.copyfile(path, tmp)
            _set_xattrs(tmp, metadata)
        return _version(self._path(bucket, key)) or ""

    def get_bytes(self, bucket, key):
        found = self.read(bucket, key)
        return found.data if found else None

    def read(self, bucket, key):
        try:
            with self._path(bucket, key).open("rb") as handle:
                stat = os.fstat(handle.fileno())
                data = handle.read()
        except (FileNotFoundError, NotADirectoryError):
            return None
        age = max(0.0, time.time() - stat.st_mtime)
        return Versioned(data, _stat_version(stat), stat.st_mtime, age)

    def download(self, bucket, key, dest):
        try:
            shutil.copyfile(self._path(bucket, key), dest)
        except FileNotFoundError:
            raise ArchiveError(f"no object {key} in {bucket}") from None

    def list(self, bucket, prefix=""):
        base = self._path(bucket)
        if not base.is_dir():
            return
        for dirpath, dirnames, files in os.walk(base):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, base)
            for name in sorted(files):
                key = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
                if key.startswith(prefix):
                    try:
                        stat = os.lstat(os.path.join(dirpath, name))
                    except FileNotFoundError:  # deleted while we walk
                        continue
                    yield ObjectInfo(key, stat.st_size, _stat_version(stat), stat.st_mtime)

    def delete(self, bucket, keys):
        base = self._path(bucket)
        for key in keys:
            path = self._path(bucket, key)
            path.unlink(missing_ok=True)
            parent = path.parent
            while parent != base and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent

    def location(self, bucket):
        return str(self._path(bucket))


def _stat_version(stat: os.stat_result) -> str:
    return f"{stat.st_mtime_ns:x}-{stat.st_ino:x}-{stat.st_size:x}"


def _version(path: Path) -> str | None:
    try:
        return _stat_version(os.stat(path))
    except (FileNotFoundError, NotADirectoryError):
        return None


def _set_xattrs(path: Path, metadata: dict[str, str] | None) -> None:
    """Object metadata as user xattrs where the filesystem has them; informational only."""
    for name, value in (metadata or {}).items():
        try:
            os.setxattr(path, f"user.{name}", value.encode())
        except (AttributeError, OSError):
            return


class _InFlight:
    """Blocks submitters while too many uploads, or too many of their bytes, wait for an upload
    thread: what waits in memory is bounded whatever the size or file count of the tree."""

    def __init__(self, max_bytes: int, max_items: int) -> None:
        self.max_bytes = max_bytes
        self.max_items = max_items
        self.bytes = 0
        self.items = 0
        self.cond = threading.Condition()

    def acquire(self, size: int) -> int:
        size = min(size, self.max_bytes)
        with self.cond:
            self.cond.wait_for(
                lambda: self.items < self.max_items and self.bytes + size <= self.max_bytes
            )
            self.bytes += size
            self.items += 1
        return size

    def release(self, size: int) -> None:
        with self.cond:
            self.bytes -= size
            self.items -= 1
            self.cond.notify_all()


SIZE_UNITS = ("B", "KB", "MB", "GB")
_SIZE = r"(\d+(?:\.\d)?) ([KMG]?B)"
_PROGRESS = re.compile(rf"uploaded (\d+)/(\d+) files, {_SIZE}/{_SIZE}")


def human_size(n: float) -> str:
    """Bytes for people: 512 B, 1.5 KB, 2.0 GB."""
    for unit in SIZE_UNITS:
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _bytes(number: str, unit: str) -> int:
    """The bytes a `human_size` says, to its precision."""
    return round(float(number) * 1024 ** SIZE_UNITS.index(unit))


@dataclass(frozen=True)
class UploadProgress:
    """How far a snapshot's upload is: objects and bytes stored of those it stores in all. Its
    `line` goes to the run's log, where `repovault submit --wait` reads it back (`parse`)."""

    files: int
    files_total: int
    bytes: int
    bytes_total: int

    def counts(self) -> str:
        """`120/480 files, 35.0 MB/140.0 MB`."""
        return (
            f"{self.files}/{self.files_total} files, "
            f"{human_size(self.bytes)}/{human_size(self.bytes_total)}"
        )

    def line(self) -> str:
        return f"uploaded {self.counts()}"

    @classmethod
    def parse(cls, text: str) -> UploadProgress | None:
        """The progress a `line` says (bytes to its precision), or None for any other text."""
        found = _PROGRESS.fullmatch(text)
        if found is None:
            return None
        files, total, done, done_unit, size, size_unit = found.groups()
        return cls(int(files), int(total), _bytes(done, done_unit), _bytes(size, size_unit))


class ParallelUploader:
    """Uploads from a thread pool with bounded uploads and bytes in flight, so memory does not
    grow with repository size; the first failure stops further submissions and is raised by
    `wait`. Every `every_s` seconds at most, a finished upload reports to `progress` how far
    the uploads are against what `expect` announced."""

    def __init__(
        self,
        store: ObjectStore,
        bucket: str,
        workers: int = 16,
        max_inflight_bytes: int = 16 * 1024 * 1024,
        max_inflight_uploads: int = 256,
        logger: logging.Logger | None = None,
        progress: Callable[[UploadProgress], None] | None = None,
        every_s: float = 2.0,
        guard: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.bucket = bucket
        # Called by the upload thread right before each request: raises to stop the upload
        # (a writer that lost its lease sends nothing more, not even what was queued).
        self.guard = guard or (lambda: None)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="upload")
        self.inflight = _InFlight(max_inflight_bytes, max(max_inflight_uploads, workers))
        # Only unfinished uploads are kept: memory stays flat however many files a tree has.
        self.pending: set[Future[None]] = set()
        self.failure: BaseException | None = None  # the first upload that failed
        self.etags: dict[str, str] = {}  # key -> etag of what this uploader stored
        self.files = 0
        self.bytes = 0
        self.submitted = 0
        self.log = logger or log
        self.progress = progress
        self.every_s = every_s
        self.files_total = 0
        self.bytes_total = 0
        self._lock = threading.Lock()
        self._last_report = time.monotonic()

    def expect(self, files: int, size: int) -> None:
        """Announce `files` uploads of `size` bytes in all: what progress is measured against."""
        self.files_total += files
        self.bytes_total += size

    def put_bytes(self, key: str, data: bytes, **kwargs: object) -> None:
        """Queue `data` for upload; its bytes count against the in-flight budget."""
        self._raise_first_failure()

        def send() -> None:
            self.guard()
            etag = self.store.put_bytes(self.bucket, key, data, **kwargs)  # type: ignore[arg-type]
            self._count(key, etag, len(data))

        self._submit(send, len(data))

    def put_file(self, key: str, path: Path, remove_after: bool = False, **kwargs: object) -> None:
        """Queue a file for a streamed (multipart when large) upload."""
        self._raise_first_failure()
        size = path.stat().st_size

        def send() -> None:
            try:
                self.guard()
                etag = self.store.put_file(self.bucket, key, path, **kwargs)  # type: ignore[arg-type]
            finally:
                if remove_after:
                    path.unlink(missing_ok=True)
            self._count(key, etag, size)

        self._submit(send, 0)  # streamed from disk: takes a slot, not memory

    def _submit(self, send: Callable[[], None], in_memory: int) -> None:
        held = self.inflight.acquire(in_memory)
        self.submitted += 1
        future = self.pool.submit(send)
        with self._lock:
            self.pending.add(future)
        future.add_done_callback(lambda done: self._finished(done, held))

    def _finished(self, future: Future[None], held: int) -> None:
        with self._lock:
            self.pending.discard(future)
        self.inflight.release(held)  # also for a cancelled upload, so no submitter waits forever
        failure = None if future.cancelled() else future.exception()
        if isinstance(failure, PreconditionFailed):  # each one: it says which object was kept
            self.log.error("the store refused a conditional write: %s", failure)
        if failure is not None and self.failure is None:
            self.failure = failure

    def _count(self, key: str, etag: str, size: int) -> None:
        with self._lock:
            self.etags[key] = etag
            self.files += 1
            self.bytes += size
            due = self.progress is not None and time.monotonic() - self._last_report >= self.every_s
            if due:
                self._last_report = time.monotonic()
                done = UploadProgress(
                    self.files,
                    max(self.files, self.files_total),
                    self.bytes,
                    max(self.bytes, self.bytes_total),
                )
        if due and self.progress is not None:
            self.progress(done)

    def _raise_first_failure(self) -> None:
        """Stop early: once one upload failed, the snapshot cannot complete."""
        if self.failure is not None:
            self.close()
            raise self.failure

    def wait(self) -> int:
        """Wait for every upload; raise the first failure; return the bytes uploaded."""
        while self.failure is None:
            with self._lock:
                pending = list(self.pending)
            if not pending:
                break
            done, _ = wait(pending, return_when=FIRST_EXCEPTION)
            # A future's done-callback may still be running here: look at the futures themselves.
            failed = [f.exception() for f in done if not f.cancelled() and f.exception()]
            self.failure = self.failure or (failed[0] if failed else None)
        self._raise_first_failure()
        self.close()
        return self.bytes

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
