"""The parallel uploader against the S3 server: what waits in memory stays bounded, and every
object arrives."""

from __future__ import annotations

import os

from repovault_pipeline.core.settings import Settings
from repovault_pipeline.core.store import ParallelUploader, open_store


def test_uploads_wait_for_room_and_every_object_arrives(vault_env: dict[str, str]) -> None:
    settings = Settings.from_env()
    store = open_store(settings)
    bucket = f"{settings.bucket_prefix}uploader"
    store.ensure_bucket(bucket)
    uploader = ParallelUploader(
        store, bucket, workers=2, max_inflight_bytes=64 * 1024, max_inflight_uploads=4
    )
    payloads = {f"k/{i:03}": os.urandom(5_000 + i) for i in range(60)}
    most_pending = 0
    for key, data in payloads.items():
        uploader.put_bytes(key, data)
        most_pending = max(most_pending, len(uploader.pending))

    assert uploader.wait() == sum(len(data) for data in payloads.values())
    assert most_pending <= 4 and not uploader.pending
    stored = {info.key: info.size for info in store.list(bucket, "k/")}
    assert stored == {key: len(data) for key, data in payloads.items()}
