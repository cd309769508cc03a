"""Runs that die, and runs that race: archives in processes of their own, SIGKILLed during the
upload or started two at a time on one repository. After each, what an operator would check:
`latest.json`, that every listed snapshot restores, that `tree/` is exactly HEAD, that the next
run sweeps what the dead one left."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from repovault_pipeline.cli import main as cli
from repovault_pipeline.core.common.errors import TransientError
from repovault_pipeline.core.common.identity import bucket_name, parse_repo_url
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.vault.chain import chain_needs
from repovault_pipeline.core.vault.reader import SnapshotReader
from repovault_pipeline.core.vault.store import open_store
from tests.support.archiving import archive
from tests.support.git_http_server import logged_requests
from tests.support.repos import ServedRepo, git
from tests.support.tcp_proxy import BreakableProxy
from tests.support.vault_checks import assert_tree_is_head, kill, read_json, s3, start_archive


def reader_of(repo: ServedRepo) -> SnapshotReader:
    settings = Settings.from_env()
    ref = parse_repo_url(repo.url, settings.allowed_schemes, settings.allowed_hosts)
    return SnapshotReader(open_store(settings), bucket_name(ref.repo_id, settings.bucket_prefix))


def files(tag: str, count: int) -> dict[str, str]:
    """`count` files of 2,000 bytes each; every tag gives the same names and sizes."""
    return {f"files/f{i:03}.txt": f"{tag}{i:03}".ljust(2000, tag.lower()) for i in range(count)}


def md5s(contents: dict[str, str]) -> dict[str, str]:
    """tree/ key -> the ETag S3 gives that content (its MD5)."""
    return {"tree/" + p: hashlib.md5(text.encode()).hexdigest() for p, text in contents.items()}


def tree_etags(bucket: str) -> dict[str, str]:
    pages = s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="tree/")
    return {o["Key"]: o["ETag"].strip('"') for p in pages for o in p.get("Contents", [])}


@pytest.fixture
def slow_s3(vault_env: dict[str, str]) -> Iterator[BreakableProxy]:
    """The S3 server behind a slow link, for the run under test only: its upload takes long
    enough to be interrupted. The test itself talks to S3 directly."""
    proxy = BreakableProxy(int(vault_env["REPOVAULT_S3_ENDPOINT"].rsplit(":", 1)[1]))
    proxy.chunk, proxy.delay_s = 4096, 0.01
    yield proxy
    proxy.close()


def kill_during_tree_upload(
    repo: ServedRepo, bucket: str, expected: dict[str, str], slow_s3: BreakableProxy
) -> None:
    """Start an archive of `repo` in a process of its own and SIGKILL it once its bundle is
    stored and at least 10 `tree/` objects hold `expected` content."""
    wanted = md5s(expected)
    proc = start_archive(
        repo.url, {"REPOVAULT_S3_ENDPOINT": slow_s3.endpoint, "REPOVAULT_UPLOAD_WORKERS": "2"}
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended before it was killed: {proc.communicate()}"
        written = [k for k, etag in tree_etags(bucket).items() if wanted.get(k) == etag]
        if len(written) >= 10 and reader_of(repo).snapshot_ids()[1]:
            kill(proc)
            return
        time.sleep(0.1)
    kill(proc)
    pytest.fail("the killed run never got to upload tree/ objects")


def count_fetches(log: Path, path: str) -> int:
    """How many times the git server was asked for objects of `path`: a clone has started."""
    return len([r for r in logged_requests(log, path) if r.command == "fetch"])


def test_a_killed_run_never_leaves_tree_wrong_and_the_next_run_sweeps(
    vault_env: dict[str, str],
    make_repo: Callable[..., ServedRepo],
    slow_s3: BreakableProxy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REPOVAULT_LEASE_TTL_S", "4")
    repo = make_repo("killed")
    repo.commit(files("A", 120))
    repo.push()
    first = archive(repo)
    latest_before = s3().get_object(Bucket=first.bucket, Key="latest.json")["Body"].read()

    repo.commit(files("B", 120))  # every file rewritten, same names, same sizes
    repo.push()
    kill_during_tree_upload(repo, first.bucket, files("B", 120), slow_s3)

    # What the SIGKILL left: readers still see the first snapshot, whole.
    reader = reader_of(repo)
    assert s3().get_object(Bucket=first.bucket, Key="latest.json")["Body"].read() == latest_before
    complete, incomplete = reader.snapshot_ids()
    assert complete == [first.snapshot_id] and len(incomplete) == 1
    assert cli(["restore", repo.url, str(tmp_path / "previous")]) == 0
    assert git(tmp_path / "previous", "rev-parse", "HEAD") == first.head_commit
    assert (tmp_path / "previous/files/f000.txt").read_text() == files("A", 1)["files/f000.txt"]
    a_md5, b_md5 = md5s(files("A", 120)), md5s(files("B", 120))
    mixed = tree_etags(first.bucket)  # tree/ mixes both HEADs until the next run completes
    assert set(mixed) == set(a_md5)
    assert all(etag in (a_md5[key], b_md5[key]) for key, etag in mixed.items())
    assert len([key for key, etag in mixed.items() if etag == b_md5[key]]) >= 10
    work = Path(vault_env["REPOVAULT_WORK_DIR"])
    orphans = list(work.iterdir())
    assert len(orphans) == 1 and (orphans[0] / "repo.git").is_dir()
    assert read_json(first.bucket, "lease.json")["state"] == "held"  # never released

    repo.commit(files("A", 120))  # a new commit whose tree equals the first one's
    repo.push()
    rerun = archive(repo)

    assert rerun.outcome == "completed"
    manifest = assert_tree_is_head(first.bucket, repo.bare)  # every object is HEAD's blob
    assert manifest["snapshot_id"] == rerun.snapshot_id
    assert reader.snapshot_ids() == ([rerun.snapshot_id, first.snapshot_id], [])
    assert list(work.iterdir()) == []  # the killed run's clone is gone
    assert read_json(first.bucket, "lease.json")["state"] == "free"


def test_a_killed_run_is_repaired_even_when_the_remote_went_back(
    vault_env: dict[str, str],
    make_repo: Callable[..., ServedRepo],
    slow_s3: BreakableProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REPOVAULT_LEASE_TTL_S", "4")
    repo = make_repo("reverted")
    a = repo.commit(files("A", 60))
    repo.push()
    first = archive(repo)
    repo.commit(files("B", 60))
    repo.push()
    kill_during_tree_upload(repo, first.bucket, files("B", 60), slow_s3)

    git(repo.work, "reset", "-q", "--hard", a)
    repo.push()  # the remote is exactly what the first snapshot holds again
    assert (
        repo.refs()
        == read_json(first.bucket, f"snapshots/{first.snapshot_id}/manifest.json")["refs"]
    )
    repair = archive(repo)
    # Not `unchanged`: the dead run may have left tree/ holding B's files.
    assert repair.outcome == "completed" and repair.head_commit == a
    assert_tree_is_head(first.bucket, repo.bare)
    assert reader_of(repo).snapshot_ids()[1] == []
    assert read_json(first.bucket, "lease.json")["state"] == "free"
    assert archive(repo).outcome == "unchanged"  # repaired: the next run has nothing to do


def test_a_writer_that_loses_its_lease_commits_nothing(
    vault_env: dict[str, str],
    make_repo: Callable[..., ServedRepo],
    slow_s3: BreakableProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = make_repo("usurped")
    repo.commit(files("A", 20))
    repo.push()
    first = archive(repo)
    repo.commit(files("B", 40))
    repo.push()

    direct = s3()  # the test's own client, not through the link it freezes
    monkeypatch.setenv("REPOVAULT_S3_ENDPOINT", slow_s3.endpoint)
    monkeypatch.setenv("REPOVAULT_LEASE_TTL_S", "4")
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(archive, repo)
        deadline = time.monotonic() + 120
        while len(tree_etags(first.bucket)) < 25 and time.monotonic() < deadline:
            time.sleep(0.05)
        # Another writer decided this one was dead (a long pause) and took the bucket while it
        # was frozen mid-upload: the freeze makes the takeover land before the end of the
        # upload however fast the machine is.
        slow_s3.pause()
        intruder = json.dumps({"state": "held", "owner": "intruder", "ttl_s": 600}).encode()
        direct.put_object(Bucket=first.bucket, Key="lease.json", Body=intruder)
        slow_s3.resume()
        with pytest.raises(TransientError, match="another run took over"):
            running.result(timeout=300)

    assert read_json(first.bucket, "latest.json")["snapshot_id"] == first.snapshot_id
    assert reader_of(repo).snapshot_ids()[0] == [first.snapshot_id]  # no new manifest
    assert s3().get_object(Bucket=first.bucket, Key="lease.json")["Body"].read() == intruder


def freeze_during_tree_upload(
    repo: ServedRepo, bucket: str, slow_s3: BreakableProxy
) -> subprocess.Popen:
    """Writer A: an archive of `repo` in a process of its own, frozen (its S3 link paused, the
    process SIGSTOPped) once at least 10 `tree/` objects hold its HEAD's content, with uploads
    in flight and more queued, and a renewal of its lease that the store took but whose answer A
    has not got (its worst moment). Returns it stopped; its lease expires while it stays so."""
    wanted = md5s(files("B", 60))
    writer = start_archive(
        repo.url,
        {
            "REPOVAULT_S3_ENDPOINT": slow_s3.endpoint,
            "REPOVAULT_UPLOAD_WORKERS": "4",
            # short, so that B takes over soon; not shorter: renewals through the slow link
            # take up to ~2 s on a loaded machine, and A must hold its lease until it freezes
            "REPOVAULT_LEASE_TTL_S": "4",
        },
    )
    deadline = time.monotonic() + 120
    while len([k for k, e in tree_etags(bucket).items() if wanted.get(k) == e]) < 10:
        assert writer.poll() is None, writer.communicate()
        assert time.monotonic() < deadline, "writer A never got to upload tree/ objects"
        time.sleep(0.05)
    # Its in-flight requests wait in the link, but for its next lease renewal: the store
    # takes it, its answer waits too...
    slow_s3.pause_except(f"PUT /{bucket}/lease.json".encode())
    assert slow_s3.answered.wait(60), "writer A never renewed its lease"
    os.killpg(writer.pid, signal.SIGSTOP)  # ...and the writer itself stops
    return writer


def resume(writer: subprocess.Popen, slow_s3: BreakableProxy) -> str:
    """Let frozen writer A go on; returns its log once it ended (it must fail: lease lost)."""
    os.killpg(writer.pid, signal.SIGCONT)
    slow_s3.resume()
    out, err = writer.communicate(timeout=120)
    assert writer.returncode == 1, (out, err)
    return err.decode()


@pytest.mark.parametrize("head", ["reverted", "rewritten"])
def test_a_writer_that_lost_its_lease_leaves_tree_as_the_new_writer_committed(
    head: str,
    vault_env: dict[str, str],
    make_repo: Callable[..., ServedRepo],
    slow_s3: BreakableProxy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Writer A frozen past its lease's TTL mid-upload; writer B takes the bucket and commits
    (its HEAD back at the first snapshot's files, which it leaves in place; or new content in
    every file, which it rewrites); A goes on. What A had in flight must not stay in `tree/`:
    refused by the conditional writes where B rewrote the object, else found and repaired by
    the next run although the refs did not change."""
    # The writers of this process (the first archive, B, the reruns) renew on a fast link, but
    # a loaded machine can starve them for seconds: their TTL is generous; A's is short.
    monkeypatch.setenv("REPOVAULT_LEASE_TTL_S", "20")
    repo = make_repo(f"fenced-{head}")
    repo.commit(files("A", 60))
    repo.push()
    first = archive(repo)
    repo.commit(files("B", 60))
    repo.push()
    writer = freeze_during_tree_upload(repo, first.bucket, slow_s3)
    try:
        repo.commit(files("A" if head == "reverted" else "C", 60))
        repo.push()
        taken = archive(repo)  # writer B: waits for A's lease to expire, takes it, commits
        assert taken.outcome == "completed"
        committed = assert_tree_is_head(first.bucket, repo.bare)
    finally:
        log = resume(writer, slow_s3)
    assert "another run took over" in log or "could not be renewed" in log, log
    lease = read_json(first.bucket, "lease.json")
    assert lease["state"] == "free" and lease["previous"]["taken_over"], lease

    index = read_json(first.bucket, f"snapshots/{committed['snapshot_id']}/tree.json")["files"]
    late = {k for k, e in tree_etags(first.bucket).items() if index[k[len("tree/") :]]["etag"] != e}
    # Only requests A had in flight when it froze (4 upload workers), nothing it had queued.
    assert len(late) <= 4, sorted(late)
    if head == "rewritten":  # B rewrote every object: what A had in flight was refused
        assert "refused" in log, log
        assert late == set()
    rerun = archive(repo)  # the refs are unchanged: still, tree/ is checked against tree.json
    assert (rerun.outcome == "completed") == bool(late), rerun
    if late:
        assert rerun.fresh.startswith("tree/ differs from snapshot"), rerun.fresh
    assert assert_tree_is_head(first.bucket, repo.bare)["snapshot_id"] == rerun.snapshot_id
    assert archive(repo).outcome == "unchanged"
    assert cli(["verify", repo.url]) == 0
    reader = reader_of(repo)
    for snap in reader.snapshot_ids()[0]:
        dest = tmp_path / f"restore-{snap}"
        assert cli(["restore", repo.url, str(dest), "--snapshot", snap]) == 0
        assert git(dest, "rev-parse", "HEAD") == reader.manifest(snap).head_commit


def wait_until_held(bucket: str, run: subprocess.Popen) -> None:
    """Until `run` (still running) holds the bucket's lease."""
    client = s3()
    while run.poll() is None:
        with contextlib.suppress(client.exceptions.NoSuchKey):
            lease = client.get_object(Bucket=bucket, Key="lease.json")["Body"].read()
            if json.loads(lease)["state"] == "held":
                return
        time.sleep(0.05)


def read_log_until(run: subprocess.Popen, text: bytes, timeout_s: float) -> bytes:
    """The run's log (stderr) up to `text`, or what came of it within `timeout_s`; the rest
    stays for `communicate`."""
    assert run.stderr is not None
    fd, seen = run.stderr.fileno(), b""
    deadline = time.monotonic() + timeout_s
    while text not in seen and (left := deadline - time.monotonic()) > 0:
        if not select.select([fd], [], [], left)[0] or not (chunk := os.read(fd, 65536)):
            break
        seen += chunk
    return seen


def test_two_writers_at_once_keep_the_bucket_consistent(
    vault_env: dict[str, str],
    make_repo: Callable[..., ServedRepo],
    git_server_log: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ten pairs of archives of one repository, each pair started together after new pushes,
    one of the two or both on a slow link, so that they interleave differently."""
    monkeypatch.setenv("REPOVAULT_KEEP_SNAPSHOTS", "3")
    monkeypatch.setenv("REPOVAULT_LEASE_TTL_S", "20")
    proxy = BreakableProxy(int(vault_env["REPOVAULT_S3_ENDPOINT"].rsplit(":", 1)[1]))
    proxy.delay_s = 0.05
    slow = {"REPOVAULT_S3_ENDPOINT": proxy.endpoint}
    repo = make_repo("contended")
    repo.commit({"static.txt": "s\n", "n.txt": "start\n"})
    repo.push()
    path = "/" + repo.url.split("/", 3)[3]
    reader = reader_of(repo)
    restored: set[str] = set()
    waits = 0
    try:
        for pair in range(10):
            repo.commit({"n.txt": f"{pair} first\n", f"pairs/{pair}.txt": f"{pair}\n"})
            repo.push()
            fetches = count_fetches(git_server_log, path)
            one = start_archive(repo.url, slow if pair % 3 in (0, 1) else {})
            while count_fetches(git_server_log, path) == fetches:
                assert one.poll() is None, one.communicate()
                time.sleep(0.05)
            repo.commit({"n.txt": f"{pair} second\n"})  # the first run cloned the push before
            repo.push()
            # One pair in three meets for sure, however slow the machine: the first run (slow
            # link) is frozen under its lease until the second (direct) says it waits for it.
            meet = pair % 3 == 1
            if meet:
                wait_until_held(reader.bucket, one)
                proxy.pause()
            two = start_archive(repo.url, slow if pair % 3 in (0, 2) else {})
            early = read_log_until(two, b"waiting for the lease", timeout_s=12) if meet else b""
            proxy.resume()
            outputs = [proc.communicate(timeout=300) for proc in (one, two)]
            outputs[1] = (outputs[1][0], early + outputs[1][1])
            assert [one.returncode, two.returncode] == [0, 0], outputs
            waits += sum(b"waiting for the lease" in err for _, err in outputs)

            complete, incomplete = reader.snapshot_ids()
            assert incomplete == []
            assert read_json(reader.bucket, "latest.json")["snapshot_id"] == complete[0]
            # The 3 newest, and older ones only as bases of their bundle chains.
            assert set(complete[3:]) <= chain_needs(reader, complete[:3])
            manifest = assert_tree_is_head(reader.bucket, repo.bare)
            assert manifest["head_commit"] in {json.loads(o)["head_commit"] for o, _ in outputs}
            for snap in complete:
                if snap in restored:  # restored before: still whole
                    key = f"snapshots/{snap}/repo.bundle"
                    size = s3().head_object(Bucket=reader.bucket, Key=key)["ContentLength"]
                    assert size == reader.manifest(snap).bundle.size
                    continue
                dest = tmp_path / f"restore-{snap}"
                assert cli(["restore", repo.url, str(dest), "--snapshot", snap]) == 0
                assert git(dest, "rev-parse", "HEAD") == reader.manifest(snap).head_commit
                restored.add(snap)
    finally:
        proxy.close()
    assert waits >= 1  # the runs did meet at the lease
    assert len(restored) >= 10


@pytest.fixture(autouse=True)
def _no_stray_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    leftover = [t for t in threading.enumerate() if t not in before and t.name.startswith("lease")]
    assert leftover == [], "a lease kept renewing after its run ended"
