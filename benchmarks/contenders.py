"""The contenders, each run in a fresh process: `python -m benchmarks.contenders NAME URL WORK`
(or `restore URL DEST`: the incremental section's timed restore).

Every contender leaves the same result in its bucket: a bundle of all refs and HEAD's files
under `tree/`. A fresh process per measurement makes its peak RSS its own: the process prints
one JSON line with the timed seconds and its own peak RSS (`RUSAGE_SELF`); the orchestrator
samples the git processes beside it (see `memory`).

The clock starts after the imports (the same for every contender and paid once by a long-lived
service) and covers everything from "here is a URL" to "it is in the bucket", including client
creation and removing the local clone. For the Dagster contender the instance and the partition
exist already, as they do in a deployment where the sensor registered the partition.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import boto3
from botocore.config import Config

from repovault_pipeline.core.common.identity import bucket_name, parse_repo_url
from repovault_pipeline.core.common.settings import Settings

from .memory import mb

BUNDLE_KEY = "repo.bundle"
TREE = "tree/"
CONTENDERS = {
    "a": "raw tools (clone --mirror, bundle, git archive, boto3 pool)",
    "b": "per-file (git clone, one put_object per file, sequential)",
    "c": "RepoVault core archive",
    "d": "RepoVault through Dagster (archive_repo_job in process)",
    "e": "RepoVault again, repository unchanged",
    "f": "RepoVault after one commit changing one file",
    "g": "as f, with the kept mirror (REPOVAULT_MIRROR_DIR)",
}


@dataclass
class Measurement:
    """What one contender run reports back to the orchestrator."""

    contender: str
    seconds: float
    rss_mb: float
    git_s: float  # clone, bundle and (RepoVault) ls-remote, verify: everything before uploading
    outcome: str
    files_uploaded: int
    bytes_uploaded: int
    check_s: float = 0.0  # (d) the `restorable` check's own duration inside the run


class Stopwatch:
    """Accumulates the timed part of a run: contenders time only what a deployment would pay."""

    def __init__(self) -> None:
        self.seconds = 0.0

    @contextmanager
    def timed(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start


@dataclass
class Uploaded:
    outcome: str = "completed"
    files: int = 0
    bytes: int = 0
    upload_s: float = 0.0
    check_s: float = 0.0


def _s3(workers: int):  # boto3 client classes are generated at run time: no annotation
    return boto3.session.Session().client(
        "s3",
        endpoint_url=os.environ["REPOVAULT_S3_ENDPOINT"],
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        config=Config(max_pool_connections=workers + 4, s3={"addressing_style": "path"}),
    )


def _git(*args: str) -> None:
    subprocess.run(["git", *args], check=True, stdout=subprocess.DEVNULL)


def _bucket(url: str) -> str:
    """The contender's bucket: named like RepoVault's, under the contender's own prefix."""
    settings = Settings.from_env()
    ref = parse_repo_url(url, settings.allowed_schemes, settings.allowed_hosts)
    return bucket_name(ref.repo_id, settings.bucket_prefix)


class _BoundedPool:
    """A thread pool that blocks the submitter past `limit` pending uploads, so the raw-tools
    contender does not read the whole tree into memory ahead of the uploads."""

    def __init__(self, workers: int, limit: int) -> None:
        self.pool = ThreadPoolExecutor(max_workers=workers)
        self.slots = threading.BoundedSemaphore(limit)
        self.futures: list[Future[object]] = []

    def submit(self, fn: Callable[..., object], *args: object, **kwargs: object) -> None:
        self.slots.acquire()
        future = self.pool.submit(fn, *args, **kwargs)
        future.add_done_callback(lambda _: self.slots.release())
        self.futures.append(future)

    def join(self) -> None:
        self.pool.shutdown(wait=True)
        for future in self.futures:
            future.result()


def raw_tools(url: str, work: Path, clock: Stopwatch) -> Uploaded:
    """(a) What a script with git and boto3 does: mirror, bundle, `git archive` streamed into a
    thread pool of put_object calls, the bundle uploaded alongside."""
    workers = Settings.from_env().upload_workers
    done = Uploaded()
    with clock.timed():
        s3, bucket = _s3(workers), _bucket(url)
        s3.create_bucket(Bucket=bucket)
        mirror, bundle = work / "repo.git", work / BUNDLE_KEY
        _git("clone", "--mirror", "--quiet", "--", url, str(mirror))
        _git("-C", str(mirror), "bundle", "create", "--quiet", str(bundle), "--all")
        upload_started = time.perf_counter()
        pool = _BoundedPool(workers, limit=4 * workers)
        pool.submit(s3.upload_file, str(bundle), bucket, BUNDLE_KEY)
        done.bytes += bundle.stat().st_size
        archive = subprocess.Popen(
            ["git", "-C", str(mirror), "archive", "--format=tar", "HEAD"], stdout=subprocess.PIPE
        )
        with tarfile.open(fileobj=archive.stdout, mode="r|") as tar:
            for member in tar:
                if member.issym():
                    data = member.linkname.encode()
                elif member.isfile():
                    data = tar.extractfile(member).read()  # type: ignore[union-attr]
                else:
                    continue
                pool.submit(s3.put_object, Bucket=bucket, Key=TREE + member.name, Body=data)
                done.files += 1
                done.bytes += len(data)
        if archive.wait() != 0:
            raise RuntimeError("git archive failed")
        pool.join()
        shutil.rmtree(work, ignore_errors=True)
        done.upload_s = time.perf_counter() - upload_started
    return done


def per_file(url: str, work: Path, clock: Stopwatch) -> Uploaded:
    """(b) The approach RepoVault replaces: a working clone, then one upload per file, one after
    another (put_object, the cheapest boto3 call per file), plus the bundle."""
    done = Uploaded()
    with clock.timed():
        s3, bucket = _s3(1), _bucket(url)
        s3.create_bucket(Bucket=bucket)
        checkout, bundle = work / "repo", work / BUNDLE_KEY
        _git("clone", "--quiet", "--", url, str(checkout))
        _git("-C", str(checkout), "bundle", "create", "--quiet", str(bundle), "--all")
        upload_started = time.perf_counter()
        s3.upload_file(str(bundle), bucket, BUNDLE_KEY)
        done.bytes += bundle.stat().st_size
        for root, dirs, files in os.walk(checkout):
            dirs[:] = [d for d in dirs if d != ".git"]
            links = [d for d in dirs if os.path.islink(os.path.join(root, d))]
            for name in [*files, *links]:
                path = os.path.join(root, name)
                if os.path.islink(path):
                    body = os.readlink(path).encode()
                else:
                    with open(path, "rb") as f:
                        body = f.read()
                key = TREE + os.path.relpath(path, checkout).replace(os.sep, "/")
                s3.put_object(Bucket=bucket, Key=key, Body=body)
                done.files += 1
                done.bytes += len(body)
        shutil.rmtree(work, ignore_errors=True)
        done.upload_s = time.perf_counter() - upload_started
    return done


def repovault(url: str, work: Path, clock: Stopwatch) -> Uploaded:
    """(c, e, f, g) `SnapshotWriter.archive`: the core archive function, nothing around it."""
    from repovault_pipeline.core.vault.snapshot import SnapshotWriter
    from repovault_pipeline.core.vault.store import open_store

    with clock.timed():
        settings = Settings.from_env()
        ref = parse_repo_url(url, settings.allowed_schemes, settings.allowed_hosts)
        result = SnapshotWriter(settings, open_store(settings)).archive(ref)
    return Uploaded(result.outcome, result.files_uploaded, result.bytes_uploaded, result.upload_s)


def dagster_job(url: str, work: Path, clock: Stopwatch) -> Uploaded:
    """(d) `archive_repo_job` executed in process on a SQLite Dagster instance, with lineage
    (SQLite) and status events (the local broker) as the ops do them in production."""
    from dagster import instance_for_test

    from repovault_pipeline.core.intake.runs import request_tags
    from repovault_pipeline.core.lineage.requests import now, open_lineage
    from repovault_pipeline.definitions import defs
    from repovault_pipeline.partitions import repositories

    settings = Settings.from_env()
    ref = parse_repo_url(url, settings.allowed_schemes, settings.allowed_hosts)
    job = defs.resolve_job_def("archive_repo_job")
    # Beside REPOVAULT_WORK_DIR, not in it: every run removes the folders there that no living
    # run holds (an instance folder kept from an earlier round would be swept mid-run).
    home = tempfile.TemporaryDirectory(dir=work.parent, prefix=f"{work.name}-dagster-")
    with home, instance_for_test(temp_dir=home.name) as instance:
        instance.add_dynamic_partitions(repositories.name, [ref.repo_id])
        requested = now()
        request_id = open_lineage(settings.db_url).record_pending(
            ref.url, ref.repo_id, "cli", created_at=requested
        )
        with clock.timed():
            run = job.execute_in_process(
                partition_key=ref.repo_id,
                instance=instance,
                tags=request_tags(request_id, ref.url, "cli", requested),
            )
        [materialization] = run.asset_materializations_for_node("repo_archive")
        meta = {k: v.value for k, v in materialization.metadata.items()}
        [check] = run.get_asset_check_evaluations()
        if not check.passed:
            raise RuntimeError(f"restorable failed in d: {check.description}")
    return Uploaded(
        str(meta["outcome"]),
        int(meta["files_uploaded"]),
        int(meta["bytes_uploaded"]),
        float(meta["upload_s"]),
        float(check.metadata["duration_s"].value),  # type: ignore[arg-type]
    )


RUNNERS: dict[str, Callable[[str, Path, Stopwatch], Uploaded]] = {
    "a": raw_tools,
    "b": per_file,
    "c": repovault,
    "d": dagster_job,
    "e": repovault,
    "f": repovault,
    "g": repovault,
}


def measure(name: str, url: str, work: Path) -> Measurement:
    work.mkdir(parents=True, exist_ok=True)
    clock = Stopwatch()
    done = RUNNERS[name](url, work, clock)
    return Measurement(
        contender=name,
        seconds=round(clock.seconds, 3),
        rss_mb=mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024),  # ru_maxrss: KiB
        git_s=round(clock.seconds - done.upload_s, 3),
        outcome=done.outcome,
        files_uploaded=done.files,
        bytes_uploaded=done.bytes,
        check_s=done.check_s,
    )


def restore(url: str, dest: Path) -> dict[str, object]:
    """`restore` of the repository's latest snapshot into `dest`, timed like a contender (after
    the imports, client creation included); the restore itself checks refs against the
    manifest, and the clone is removed after the clock stops."""
    from repovault_pipeline.core.vault.restore import restore as restore_snapshot
    from repovault_pipeline.core.vault.store import open_store

    clock = Stopwatch()
    with clock.timed():
        settings = Settings.from_env()
        ref = parse_repo_url(url, settings.allowed_schemes, settings.allowed_hosts)
        done = restore_snapshot(settings, open_store(settings), ref, dest)
    shutil.rmtree(dest, ignore_errors=True)
    return {
        "seconds": round(clock.seconds, 3),
        "rss_mb": mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024),
        "snapshot_id": done.snapshot_id,
        "head_commit": done.head_commit,
        "refs": done.refs,
    }


def main(argv: list[str]) -> int:
    """`NAME URL WORK` measures a contender; `restore URL DEST` times a restore."""
    name, url, work = argv
    if name == "restore":
        print(json.dumps(restore(url, Path(work))), flush=True)
        return 0
    print(json.dumps(asdict(measure(name, url, Path(work)))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
