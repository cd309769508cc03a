"""Parallel uploads into one bucket (`ParallelUploader`), bounded in bytes held and requests in
flight, with their progress as a log line `repovault submit --wait` reads back
(`UploadProgress`)."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from repovault_pipeline.core.common.errors import PreconditionFailed
from repovault_pipeline.core.vault.store import ObjectStore

log = logging.getLogger(__name__)


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
