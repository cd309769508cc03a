"""The writer's lease against the S3 server and the local backend: one holder at a time,
renewed while it lives, taken over only after it expired, lost loudly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from repovault_pipeline.core.common.errors import TransientError
from repovault_pipeline.core.vault.lease import LEASE_KEY, Lease, inspect
from repovault_pipeline.core.vault.local_store import LocalStore
from repovault_pipeline.core.vault.s3 import S3Store
from repovault_pipeline.core.vault.store import ObjectStore
from tests.support.servers import REPO_ROOT
from tests.support.tcp_proxy import BreakableProxy
from tests.support.vault_checks import kill


@pytest.fixture(params=["s3", "local"])
def backend(request: pytest.FixtureRequest, vault_env: dict[str, str]) -> str:
    return request.param


@pytest.fixture
def store(backend: str, vault_env: dict[str, str]) -> ObjectStore:
    if backend == "s3":
        return S3Store(vault_env["REPOVAULT_S3_ENDPOINT"])
    return LocalStore(Path(vault_env["REPOVAULT_LOCAL_STORE"]))


@pytest.fixture
def bucket(store: ObjectStore, vault_env: dict[str, str]) -> str:
    name = f"{vault_env['REPOVAULT_BUCKET_PREFIX']}lease"
    store.ensure_bucket(name)
    return name


def lease_doc(store: ObjectStore, bucket: str) -> dict:
    return json.loads(store.get_bytes(bucket, LEASE_KEY))


def test_one_writer_at_a_time_until_released(store: ObjectStore, bucket: str) -> None:
    first = Lease.acquire(store, bucket, "snap-1", ttl_s=20, wait_s=0)
    doc = lease_doc(store, bucket)
    assert (doc["state"], doc["snapshot_id"], doc["owner"]) == ("held", "snap-1", first.owner)
    with pytest.raises(TransientError, match=r"another run is writing .* \(snapshot snap-1"):
        Lease.acquire(store, bucket, "snap-2", ttl_s=20, wait_s=1)
    first.confirm()
    first.release()
    assert lease_doc(store, bucket)["state"] == "free"

    second = Lease.acquire(store, bucket, "snap-2", ttl_s=20, wait_s=0)  # free: no waiting
    assert not second.repair
    assert lease_doc(store, bucket)["owner"] == second.owner != first.owner
    second.release(finished=False)
    view = inspect(store, bucket)
    assert view.state == "interrupted" and view.needs_repair
    third = Lease.acquire(store, bucket, "snap-3", ttl_s=20, wait_s=0)
    assert third.repair  # the run before failed half way: tree/ must be rewritten
    third.release()
    assert lease_doc(store, bucket)["state"] == "interrupted"  # no commit cleared the repair


def test_a_live_holder_keeps_it_and_a_dead_one_loses_it_after_expiry(
    backend: str, store: ObjectStore, bucket: str, vault_env: dict[str, str]
) -> None:
    env = dict(os.environ)
    if backend == "local":
        env.pop("REPOVAULT_S3_ENDPOINT")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from repovault_pipeline.core.vault.lease import Lease\n"
            "from repovault_pipeline.core.common.settings import Settings\n"
            "from repovault_pipeline.core.vault.store import open_store\n"
            f"Lease.acquire(open_store(Settings.from_env()), {bucket!r}, 'snap-dead', 3, 0)\n"
            "print('held', flush=True)\n"
            "time.sleep(600)\n",
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert holder.stdout.readline() == b"held\n"
        # Five renewals, a quarter TTL apart, span more than its TTL: only they keep it live.
        seen = {inspect(store, bucket).etag}
        deadline = time.monotonic() + 60
        while len(seen) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
            seen.add(inspect(store, bucket).etag)
        assert len(seen) == 6, f"the holder renewed {len(seen) - 1} times in 60 s"
        with pytest.raises(TransientError, match="snap-dead"):
            Lease.acquire(store, bucket, "snap-new", ttl_s=3, wait_s=0)
    finally:
        kill(holder)
    assert lease_doc(store, bucket)["state"] == "held"  # SIGKILL: never released

    taker = Lease.acquire(store, bucket, "snap-new", ttl_s=3, wait_s=60)
    assert taker.repair  # its holder died mid-write
    doc = lease_doc(store, bucket)
    assert (doc["snapshot_id"], doc["owner"]) == ("snap-new", taker.owner)
    taker.release()


def test_a_writer_whose_lease_was_taken_knows_it(store: ObjectStore, bucket: str) -> None:
    lease = Lease.acquire(store, bucket, "snap-slow", ttl_s=20, wait_s=0)
    # Another writer judged it expired (a long pause of this process) and wrote its own.
    intruder = json.dumps({"state": "held", "owner": "intruder", "ttl_s": 20}).encode()
    store.put_bytes(bucket, LEASE_KEY, intruder)

    with pytest.raises(TransientError, match=r"another run took over .* snap-slow"):
        lease.confirm()
    assert lease.lost
    with pytest.raises(TransientError):
        lease.check()
    lease.release()
    assert store.get_bytes(bucket, LEASE_KEY) == intruder  # never overwrites the new holder


def test_a_retry_of_the_same_run_takes_its_own_lease_back_at_once(
    vault_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A step's attempt that cannot reach the store cannot release its lease either; the
    run's retry must not wait a TTL for it, while any other run still does."""
    direct = S3Store(vault_env["REPOVAULT_S3_ENDPOINT"])
    bucket = f"{vault_env['REPOVAULT_BUCKET_PREFIX']}retry"
    direct.ensure_bucket(bucket)
    link = BreakableProxy(int(vault_env["REPOVAULT_S3_ENDPOINT"].rsplit(":", 1)[1]))
    try:
        attempt = Lease.acquire(S3Store(link.endpoint), bucket, "snap-1", 60, 0, run_id="run-a")
        link.break_after = 0  # the store is cut off from this attempt: its step fails
        attempt.release(finished=False)
    finally:
        link.close()
    assert "not released" in caplog.text
    held = inspect(direct, bucket)
    assert (held.state, held.run_id, held.live) == ("held", "run-a", True)

    with pytest.raises(TransientError, match="another run is writing"):
        Lease.acquire(direct, bucket, "snap-2", 60, 0, run_id="run-b")
    started = time.monotonic()
    retry = Lease.acquire(direct, bucket, "snap-1", 60, 0, run_id="run-a")
    assert time.monotonic() - started < 5
    assert retry.repair  # the attempt before may have left tree/ half written
    doc = lease_doc(direct, bucket)
    assert (doc["owner"], doc["run_id"]) == (retry.owner, "run-a")
    assert doc["previous"]["owner"] == attempt.owner and doc["previous"]["taken_over"]
    assert "took back the lease" in caplog.text
    retry.release(finished=False)


def test_a_holder_never_trusts_its_lease_longer_than_the_store_does(
    vault_env: dict[str, str],
) -> None:
    """The store counts the TTL from when it wrote a renewal; a holder that hears of the
    renewal late (its process frozen, its link stalled) must count from when it sent it, or
    it goes on writing while another run holds the bucket."""
    direct = S3Store(vault_env["REPOVAULT_S3_ENDPOINT"])
    bucket = f"{vault_env['REPOVAULT_BUCKET_PREFIX']}late-answer"
    direct.ensure_bucket(bucket)
    link = BreakableProxy(int(vault_env["REPOVAULT_S3_ENDPOINT"].rsplit(":", 1)[1]))
    renewal = f"PUT /{bucket}/{LEASE_KEY}".encode()
    try:
        holder = Lease.acquire(S3Store(link.endpoint), bucket, "snap-frozen", 2, 0)
        link.pause_except(renewal)  # the store takes the next renewal, its answer waits
        assert link.answered.wait(30), "the holder never renewed its lease"
        taker = Lease.acquire(direct, bucket, "snap-taker", 2, 60)  # once the store says expired
        link.pause_on = renewal  # the holder's next renewal does not reach the store (yet)
        link.resume()  # the late answer arrives: the holder goes on to its next renewal
        assert link.wait_paused(30), "the holder never renewed its lease again"
        with pytest.raises(TransientError, match="could not be renewed for 2 s"):
            holder.check()  # the renewal it heard of last was sent more than a TTL ago
        link.resume()
        holder.release()  # its renewal was refused: it knows it lost, writes nothing
    finally:
        link.close()
    assert holder.lost
    assert lease_doc(direct, bucket)["owner"] == taker.owner
    taker.release()
