"""The local backend of `ObjectStore`: one folder per bucket under REPOVAULT_LOCAL_STORE, the
same key layout as S3, writes made atomic by a rename and conditional under a bucket lock."""

from __future__ import annotations

import fcntl
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from repovault_pipeline.core.common.errors import ArchiveError, PreconditionFailed
from repovault_pipeline.core.vault.store import ObjectInfo, ObjectStore, Versioned


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

    def stat(self, bucket, key):
        try:
            stat = os.lstat(self._path(bucket, key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return ObjectInfo(key, stat.st_size, _stat_version(stat), stat.st_mtime)

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
